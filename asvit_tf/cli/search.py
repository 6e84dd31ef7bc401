"""`asvit search --output_dir DIR [--preset paper|quick] [--steps ...]`: REINFORCE seed search.

Writes to DIR: search.jsonl (one record per step), tensorboard/ (scalars), search.png
(reward, entropy, L^E and κ_Θ per step), result.json and seed.txt (the derived seed
topology). Rerunning the same command resumes a killed run; a finished run is reported (and
its outputs rewritten); a run into a DIR in use by another exits at once. Explicit flags
override the preset (paper: 500 steps, 224×224, 5 repeats; quick: 10 steps, 32×32, 1
repeat). How long: one uninterrupted paper-preset search took 59 min on a 2-core CPU
(its `asvit grow` 57 min more; README, docs/benchmarks.md); the quick preset a few minutes.
The numbers follow `asvit_tf.validation`: --image_size >= 4 (the stride), and the largest
topology of the search space must fit an accelerator's memory at that size.
"""
from __future__ import annotations

from absl import flags

from asvit_tf.cli import run_flags as cli_flags
from asvit_tf.search import reinforce
from asvit_tf.search import reward as reward_lib


def define_flags():
  """Defines the flags of this command (the dispatcher calls it before parsing)."""
  flags.DEFINE_enum('preset', 'paper', sorted(reinforce.PRESETS), 'Defaults of --steps, '
                    '--image_size and --repeats: the paper\'s, or a few minutes on a CPU.')
  flags.DEFINE_integer('steps', None, 'REINFORCE steps (paper 500, quick 10).')
  flags.DEFINE_enum('reward', 'length_ntk', list(reward_lib.REWARDS),
                    'Relative-change reward: L^E and κ_Θ (the paper), one of them, or params / '
                    'MACs as cheap baseline proxies.')
  cli_flags.define_common_flags('Seed of the policy, the samples and the measurements.')
  flags.adopt_module_key_flags(cli_flags)  # --help of this command lists the shared flags


FLAGS = flags.FLAGS


def config_from_flags() -> reinforce.SearchConfig:
  values = cli_flags.preset_values(reinforce.PRESETS, ('steps', 'image_size', 'repeats'))
  return reinforce.SearchConfig(reward=FLAGS.reward, **cli_flags.common_config(),
                                **values).validate()


def main(argv):
  cli_flags.check_argv('search', argv)
  result = reinforce.run_search(config_from_flags(), FLAGS.output_dir,
                                progress=FLAGS.progress, workers=cli_flags.workers())
  print(f'seed topology: {result.seed_string}   '
        f'({len(result.records)} steps, {result.output_dir}/seed.txt)')
