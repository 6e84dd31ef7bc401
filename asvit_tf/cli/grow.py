"""`asvit grow --arch SEED --output_dir DIR [--preset paper|quick] ...`: training-free scaling.

SEED is a seed topology (`8,2,3|4,1,2|4,1,4|4,1,6|32`), a variant name, `@path/seed.txt`, or
the output dir of `asvit search` (its seed.txt); the depths and width of a scaled string or a
variant are not used, which a warning says (the scaling starts at depths 1,1,1,1 and proxy
width 8). Writes to DIR after every step: grow.jsonl, family.md (the series table) and
scaling.png; at the end family.txt (one topology a line). Rerunning the same command resumes
a killed run; a finished run is reported (and its outputs rewritten); a run into a DIR in use
by another exits at once. Explicit flags override the preset (paper: 224×224, 5 repeats, up
to 80 M parameters; quick: 32×32, 1 repeat, 3 steps). A search and its grow may share DIR.
How long: one uninterrupted paper-preset grow of the searched seed took 57 min on a 2-core
CPU (README, docs/benchmarks.md). The numbers follow `asvit_tf.validation`.
"""
from __future__ import annotations

from absl import flags

from asvit_tf.cli import run_flags as cli_flags
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
  flags.DEFINE_integer('max_steps', None, 'Stop after so many scaling steps (paper 0 = no '
                       'limit, quick 3).')
  cli_flags.define_common_flags('Seed of the measurements.')
  flags.adopt_module_key_flags(cli_flags)  # --help of this command lists the shared flags


FLAGS = flags.FLAGS


def config_from_flags() -> grow.GrowConfig:
  values = cli_flags.preset_values(grow.PRESETS, ('image_size', 'repeats', 'max_steps',
                                                  'target_params', 'max_params'))
  return grow.GrowConfig(arch=cli_flags.resolve_arch(FLAGS.arch), **cli_flags.common_config(),
                         **values).validate()


def main(argv):
  cli_flags.check_argv('grow', argv)
  result = grow.run_grow(config_from_flags(), FLAGS.output_dir, progress=FLAGS.progress,
                         workers=cli_flags.workers())
  for r in result.records:
    print(f'step {r["step"]:>2}  {r["arch"]:<44} {r["params"] / 1e6:8.2f} M  '
          f'{r["macs"] / 1e9:7.2f} G MACs')
  print(f'stopped: {result.stop_reason}   ({result.output_dir}/family.md)')
