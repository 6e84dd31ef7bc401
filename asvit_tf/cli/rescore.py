"""`asvit rescore --grow_dir=DIR --steps=1-4 --output_dir=OUT [changes]`: does another setting
rank a grow's candidates as the recorded one did?

Takes the grow run in DIR (its grow.jsonl and grow_state.json, or a grow.jsonl kept apart
with --grow_settings naming its setting) and, for exactly the candidates of the given steps
(same topologies, proxy widths, per-step seeds), re-selects them under the changed setting:
--tie_break alone re-selects from the recorded metrics (no measuring); --ntk_data, --repeats,
--seed, --share_embedding or --image_size (or --remeasure, with the recorded setting)
re-measures them first. --image_size changes only the
side L^E and κ_Θ are measured at: parameters and MACs stay the records' (at 224×224). Every
flag left out keeps the recorded value. Per step it reports the recorded choice against the
re-ranked one and the Kendall-τ of the two rankings (rank sums, L^E, κ_Θ) and, when it
measured, how far each metric's draws resolve the candidates (noise: s.e. of a mean / s.d.
of the means): OUT/rescore.md (also printed), rescore.json and rescore.png. Measurements go
to OUT/measures.jsonl, one line per candidate: the same command again resumes a killed run;
other measuring settings into the same OUT are refused.
The comparison follows the recorded path: it does not grow further from a changed choice.
"""
from __future__ import annotations

from absl import flags

from asvit_tf.cli import run_flags as cli_flags
from asvit_tf.errors import UserInputError
from asvit_tf.search import grow
from asvit_tf.search import rescore

FLAGS = flags.FLAGS


def define_flags():
  """Defines the flags of this command (the dispatcher calls it before parsing)."""
  flags.DEFINE_string('grow_dir', '', 'Output dir of `asvit grow` (grow.jsonl and '
                      'grow_state.json; a bare grow.jsonl allows only --tie_break, '
                      'unless --grow_settings gives its setting).')
  flags.DEFINE_string('grow_settings', '', 'For a grow.jsonl kept without its run directory '
                      '(as docs/family_grow.jsonl): a JSON file of the setting it was grown '
                      'with (a grow_state.json, or its "config"), e.g. '
                      'docs/family_grow_settings.json.')
  flags.DEFINE_string('steps', '', 'Grow steps to re-rank: numbers and ranges, e.g. 1,2,5 or '
                      '1-4.')
  flags.DEFINE_string('output_dir', '', 'Where the measurements and the report go (and a '
                      'killed run resumes from).')
  flags.DEFINE_enum('tie_break', None, list(grow.TIE_BREAKS), 'Equal rank sums broken ours or '
                    'the authors\' way (default: as recorded).')
  flags.DEFINE_string('ntk_data', None, "Images for κ_Θ: '' Gaussian noise, 'photos', a folder "
                      'or a TFDS name (default: as recorded).')
  flags.DEFINE_string('data_dir', None, 'TFDS data directory (default: as recorded).')
  flags.DEFINE_integer('image_size', None, 'Input side L^E and κ_Θ are measured at, e.g. 64 '
                       'for a cheaper stand-in of 224; parameters and MACs stay the records\' '
                       '(default: as recorded).')
  flags.DEFINE_integer('repeats', None, 'Initialisations each metric averages (default: as '
                       'recorded).')
  flags.DEFINE_integer('seed', None, 'Seed of the measurements (default: as recorded).')
  flags.DEFINE_bool('share_embedding', None, 'Draw the patch-embedding conv once per topology, '
                    'as the authors\' code does (default: as recorded).')
  flags.DEFINE_bool('remeasure', False, 'Measure even if no measuring setting changes (checks '
                    'that the recorded setting reproduces the records).')
  flags.DEFINE_bool('progress', True, 'Show a progress bar.')
  cli_flags.define_workers_flag('the re-measured candidates')
  cli_flags.define_backend_flags()


def changes_from_flags() -> rescore.Changes:
  return rescore.Changes(data=FLAGS.ntk_data, data_dir=FLAGS.data_dir,
                         image_size=FLAGS.image_size, repeats=FLAGS.repeats,
                         seed=FLAGS.seed, share_embedding=FLAGS.share_embedding,
                         tie_break=FLAGS.tie_break, remeasure=FLAGS.remeasure)


def main(argv):
  if len(argv) > 1:
    raise UserInputError(f'rescore takes no positional arguments, got {" ".join(argv[1:])}')
  for name in ('grow_dir', 'steps', 'output_dir'):
    if not FLAGS[name].value.strip():
      raise UserInputError(f'--{name} is required')
  changes = changes_from_flags()
  run = rescore.load_grow(FLAGS.grow_dir, FLAGS.grow_settings)
  config, measuring = rescore.new_config(run, changes)
  evaluator = cli_flags.evaluator(('length', 'ntk'), config) if measuring else None
  try:
    report = rescore.run_rescore(FLAGS.grow_dir, rescore.parse_steps(FLAGS.steps),
                                 FLAGS.output_dir, changes, evaluator=evaluator,
                                 workers=cli_flags.workers(), progress=FLAGS.progress,
                                 grow_settings=FLAGS.grow_settings)
  finally:
    if evaluator is not None:
      evaluator.close()
  print(rescore.markdown(report))
