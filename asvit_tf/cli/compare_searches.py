"""`asvit compare_searches --runs=DIR_A,DIR_B --out=docs/strategies.md [--measurements=M]
[--train]`: two (or more) seed searches compared at an equal number of measurements.

DIR_A, DIR_B are output directories of `asvit search` (REINFORCE or --strategy=evolution,
finished or still running) at one --seed and one measuring setting (image size, repeats,
width, κ_Θ batch), so that a topology both measured has one measurement (common random
numbers, docs/design.md §8a); others are refused. Each run is cut to its first M distinct
measured topologies (default: as many as the run with the fewest has), the union of the cut
runs is ranked by As-ViT's rank combination (L^E descending + κ_Θ ascending, dense ranks),
and per run the report gives the best topology it found within M and its union rank, how many
of the union's top 10 and top 1 % it found, the topology it returned (seed.txt) and its union
rank, and the best union rank reached after each measurement (a table and a PNG).

--train also trains each run's result under `asvit correlate --train`'s budget (the same
--train_* flags) once per --train_seeds seed and reports its held-out accuracy; the training
is resumable in --train_dir (default: beside --out).

Writes --out (Markdown, also printed), and the .json and .png of the same name beside it.
"""
from __future__ import annotations

from absl import flags

from asvit_tf.cli import correlate as correlate_cli
from asvit_tf.errors import UserInputError
from asvit_tf.search import compare

FLAGS = flags.FLAGS


def define_flags():
  """Defines the flags of this command (the dispatcher calls it before parsing)."""
  flags.DEFINE_list('runs', [], 'Output directories of `asvit search` to compare (two or '
                    'more, comma-separated), at one --seed and measuring setting.')
  flags.DEFINE_string('out', '', 'The Markdown report (a .md path); its .json and .png are '
                      'written beside it.')
  flags.DEFINE_integer('measurements', None, 'Distinct measured topologies each run is cut '
                       'to (default: as many as the run with the fewest has).')
  flags.DEFINE_bool('train', False, 'Train each run\'s result (seed.txt) under `asvit '
                    'correlate --train`\'s budget (--train_* flags) and report its held-out '
                    'accuracy.')
  flags.DEFINE_list('train_seeds', ['0'], 'With --train: training seeds (weights and batch '
                    'order), one training each.')
  flags.DEFINE_string('train_dir', '', 'With --train: where the trainings go and resume from '
                      '(default: beside --out, named after it with _trained).')
  flags.DEFINE_bool('progress', True, 'Show a progress bar while training.')
  correlate_cli.define_budget_flags()


COMMAND_FLAGS = ('runs', 'out', 'measurements', 'train', 'train_seeds', 'train_dir',
                 'residual_merge', *correlate_cli.TRAIN_FLAGS)
TRAIN_ONLY = ('train_seeds', 'train_dir', 'residual_merge', *correlate_cli.TRAIN_FLAGS)


def command_line() -> str:
  """This command as given: its flags that were set, in the order they are defined."""
  given = [FLAGS[name].serialize() for name in COMMAND_FLAGS if FLAGS[name].present]
  return ' '.join(['asvit compare_searches'] + given)


def train_seeds():
  """The integers of --train_seeds; one line if one is not or if one is given twice."""
  seeds = []
  for text in FLAGS.train_seeds:
    try:
      seeds.append(int(text))
    except ValueError:
      raise UserInputError(f'`train_seeds` must be integers, got {text!r}') from None
  if not seeds or len(set(seeds)) != len(seeds):
    raise UserInputError(f'`train_seeds` must be distinct integers, got '
                         f'{",".join(FLAGS.train_seeds) or "none"}')
  return seeds


def main(argv):
  if len(argv) > 1:
    raise UserInputError(f'compare_searches takes flags only, got {" ".join(argv[1:])}')
  if not FLAGS.runs:
    raise UserInputError('--runs is required: two or more `asvit search` output directories')
  if not FLAGS.out:
    raise UserInputError('--out is required: the Markdown report, e.g. docs/strategies.md')
  md_path = compare.output_paths(FLAGS.out)[0]
  given = [f'--{name}' for name in TRAIN_ONLY if FLAGS[name].present]
  if given and not FLAGS.train:
    raise UserInputError(f'{", ".join(given)} only apply with --train')
  runs = [compare.load_run(path) for path in FLAGS.runs]
  report = compare.compare(runs, FLAGS.measurements)
  if FLAGS.train:
    train_dir = FLAGS.train_dir or md_path[:-len('.md')] + '_trained'
    report = compare.train_results(report, correlate_cli.budget_from_flags(0), train_seeds(),
                                   train_dir, progress=FLAGS.progress)
  print(compare.write(report, md_path, command_line()), end='')
