"""`asvit grow --arch SEED --output_dir DIR [--preset paper|quick] ...`: training-free scaling.

SEED is a seed topology (`8,2,3|4,1,2|4,1,4|4,1,6|32`), a variant name, `@path/seed.txt`, or
the output dir of `asvit search` (its seed.txt); the depths and width of a scaled string or a
variant are not used, which a warning says (the scaling starts at depths 1,1,1,1 and proxy
width 8). Writes to DIR after every step: grow.jsonl, family.md (the series table) and
scaling.png; at the end family.txt (one topology a line). Rerunning the same command resumes
a killed run; a finished run is reported (and its outputs rewritten); a run into a DIR in use
by another exits at once. Explicit flags override the preset (paper: 224×224, 5 repeats, up
to 80 M parameters; quick: 32×32, 1 repeat, 3 steps). A search and its grow may share DIR.
--max_macs adds a MAC ceiling to --max_params; --budgets=params:29M,52M,88M (or macs:...) names
the family's sizes: the run ends at the last budget (instead of --target_params), and the
outputs mark the model nearest each budget. --tie_break=authors breaks equal rank sums as the
authors' code does; --share_embedding draws the patch-embedding conv as their code does.
--candidate_kinds=depth,mlp adds the candidates "MLP expansion E_i + 1 in stage i" (up to the
search space's 6) to the authors' "+1 block in stage i" (docs/design.md §9).
How long: the paper preset about an hour on a 2-core CPU (measured times:
docs/benchmarks.md, "Search and grow speed"). The numbers follow `asvit_tf.validation`.
"""
from __future__ import annotations

from absl import flags

from asvit_tf.cli import run_flags as cli_flags
from asvit_tf.errors import UserInputError
from asvit_tf.search import amounts
from asvit_tf.search import grow

ARCH_ARGUMENT = '--arch'


def define_flags():
  """Defines the flags of this command (the dispatcher calls it before parsing)."""
  flags.DEFINE_string('arch', '', 'Seed topology, variant name, @seed.txt or a search dir.')
  flags.DEFINE_enum('preset', 'paper', sorted(grow.PRESETS), 'Defaults of --image_size, '
                    '--repeats, --target_params, --max_params and --max_steps.')
  flags.DEFINE_float('target_params', None, 'Stop at the first model with at least this many '
                     'parameters (paper and quick 80e6).')
  flags.DEFINE_float('max_params', None, 'Drop candidates above this many parameters '
                     '(paper and quick 110e6).')
  flags.DEFINE_string('max_macs', '', 'Drop candidates above this many MACs of the real-width '
                      'model at 224×224 whatever --image_size (as the records count them), '
                      'e.g. 25G or 25e9; default no MAC ceiling.')
  flags.DEFINE_string('budgets', '', 'The family\'s budgets, params:29M,52M,88M or '
                      'macs:5.3G,8.9G,22.6G (MACs at 224×224; K/M/G suffixes; sorted if given '
                      'out of order): the run ends at the first model at or above the last '
                      'budget instead of at --target_params (give one of the two), and '
                      'family.md, grow.jsonl (\'budget\') and scaling.png mark the model '
                      'nearest each budget.')
  flags.DEFINE_enum('tie_break', 'ours', list(grow.TIE_BREAKS), 'Equal rank sums: ours '
                    '(the metric with the larger relative range decides, preferring its '
                    'better value; docs/design.md §9) or the authors\' code\'s (the smaller '
                    'value of the wider metric, even for L^E, between the first two tied).')
  flags.DEFINE_string('candidate_kinds', 'depth', 'Comma-separated kinds of candidates: depth '
                      '(+1 block in a stage, the authors\' only kind) and mlp (MLP expansion '
                      f'E_i + 1 in stage i, depths unchanged, up to E = {grow.MAX_EXPANSION}); '
                      'e.g. depth,mlp.')
  flags.DEFINE_integer('max_steps', None, 'Stop after so many scaling steps (paper 0 = no '
                       'limit, quick 3).')
  cli_flags.define_common_flags('Seed of the measurements.')


FLAGS = flags.FLAGS


def config_from_flags() -> grow.GrowConfig:
  values = cli_flags.preset_values(grow.PRESETS, ('image_size', 'repeats', 'max_steps',
                                                  'target_params', 'max_params'))
  metric, budgets = grow.parse_budgets(FLAGS.budgets)
  if budgets and FLAGS.target_params is not None:
    raise UserInputError('--target_params and --budgets both say where the run ends: give '
                         'one (with --budgets, the run ends at the last budget)')
  max_macs = amounts.parse_amount(FLAGS.max_macs, '--max_macs') if FLAGS.max_macs.strip() else 0
  kinds = grow.parse_candidate_kinds(FLAGS.candidate_kinds)
  return grow.GrowConfig(arch=cli_flags.resolve_arch(FLAGS.arch), **cli_flags.common_config(),
                         max_macs=max_macs, budget_metric=metric, budgets=budgets,
                         tie_break=FLAGS.tie_break, candidate_kinds=kinds, **values).validate()


def main(argv):
  cli_flags.check_argv('grow', argv)
  config = config_from_flags()
  evaluator = cli_flags.evaluator(('length', 'ntk'), config)  # what run_grow measures
  try:
    result = grow.run_grow(config, FLAGS.output_dir, progress=FLAGS.progress,
                           workers=cli_flags.workers(), evaluator=evaluator)
  finally:
    if evaluator is not None:
      evaluator.close()
  for r in result.records:
    marks = ''.join(f'  ≈ {amounts.format_budget(config.budget_metric, b)}'
                    for b in r.get('budget') or [])
    print(f'step {r["step"]:>2}  {r["arch"]:<44} {r["params"] / 1e6:8.2f} M  '
          f'{r["macs"] / 1e9:7.2f} G MACs{marks}')
  print(f'stopped: {result.stop_reason}   ({result.output_dir}/family.md)')
