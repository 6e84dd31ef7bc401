"""`asvit compare_families --runs=A,B,... --out=docs/families.md [--labels=a,b,...]`: scaling
runs side by side at the paper's three sizes.

A, B are `asvit grow` output directories or their grow.jsonl files (finished or not). Per
run and size, the member nearest --sizes parameters (default 29M,52M,88M: the paper preset's
--budgets) and its MACs against the paper's Small (5.3 G) and Base (8.9 G) and the authors'
Large as counted (22.36 G); how many are within 15 %; which run comes closest. Writes --out
(Markdown, also printed) and the .json and .png (MACs against parameters) of the same name
beside it.
"""
from __future__ import annotations

import shlex

from absl import flags

from asvit_tf.errors import UserInputError
from asvit_tf.search import amounts
from asvit_tf.search import family_compare

FLAGS = flags.FLAGS


def define_flags():
  """Defines the flags of this command (the dispatcher calls it before parsing)."""
  flags.DEFINE_list('runs', [], 'Scaling runs to compare (comma-separated): `asvit grow` '
                    'output directories or grow.jsonl files.')
  flags.DEFINE_list('labels', [], 'A name per run, in the order of --runs (default: the '
                    'directory or file name).')
  flags.DEFINE_string('out', '', 'The Markdown report (a .md path); its .json and .png are '
                      'written beside it.')
  flags.DEFINE_list('sizes', ['29M', '52M', '88M'], 'The parameter counts of Small, Base '
                    'and Large at which each run\'s nearest member is taken.')


COMMAND_FLAGS = ('runs', 'labels', 'out', 'sizes')


def command_line() -> str:
  """This command as given (its flags that were set, in the order they are defined), quoted
  for a shell: labels often hold spaces."""
  given = [shlex.quote(FLAGS[name].serialize()) for name in COMMAND_FLAGS if FLAGS[name].present]
  return ' '.join(['asvit compare_families'] + given)


def main(argv):
  if len(argv) > 1:
    raise UserInputError(f'compare_families takes flags only, got {" ".join(argv[1:])}')
  if not FLAGS.runs:
    raise UserInputError('--runs is required: `asvit grow` output directories or their '
                         'grow.jsonl files, comma-separated')
  if not FLAGS.out:
    raise UserInputError('--out is required: the Markdown report, e.g. docs/families.md')
  sizes = [amounts.parse_amount(text, '--sizes') for text in FLAGS.sizes]
  runs = family_compare.load_runs(FLAGS.runs, FLAGS.labels)
  report = family_compare.compare(runs, sizes)
  print(family_compare.write(report, runs, FLAGS.out, command_line()), end='')
