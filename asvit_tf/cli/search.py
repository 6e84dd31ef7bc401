"""`asvit search --output_dir DIR [--preset paper|quick] [--strategy reinforce|evolution]`:
training-free seed search, REINFORCE (the default, the paper's) or evolutionary.

Writes to DIR: search.jsonl (one record per step), tensorboard/ (scalars), search.png
(reward, entropy, L^E and κ_Θ per step), result.json and seed.txt (the derived seed
topology). Rerunning the same command resumes a killed run; a finished run is reported (and
its outputs rewritten); a run into a DIR in use by another exits at once. Explicit flags
override the preset (paper: 500 steps, 224×224, 5 repeats; quick: 10 steps, 32×32, 1
repeat). How long: the paper preset about an hour on a 2-core CPU, the quick one minutes
(measured times: docs/benchmarks.md, "Search and grow speed").

`--strategy=evolution` (docs/design.md §8a): a population over the 12 decisions, mutation and
crossover, fitness = rank sum of the --reward metrics among all measured topologies, optional
--max_params / --max_macs ceilings; the same outputs. Presets: paper 24 a generation, 360
measurements, 224×224, 5 repeats; quick 6, 24, 32×32, 1 repeat.
The numbers follow `asvit_tf.validation`: --image_size >= 4 (the stride), and the largest
topology of the search space must fit an accelerator's memory at that size.
"""
from __future__ import annotations

from absl import flags

from asvit_tf.cli import run_flags as cli_flags
from asvit_tf import validation
from asvit_tf.errors import UserInputError
from asvit_tf.search import evolution
from asvit_tf.search import reinforce
from asvit_tf.search import reward as reward_lib


def define_flags():
  """Defines the flags of this command (the dispatcher calls it before parsing)."""
  flags.DEFINE_enum('preset', 'paper', sorted(reinforce.PRESETS), 'Defaults of --steps '
                    '(evolution: --population, --measurements), --image_size and --repeats: '
                    'the paper\'s, or a few minutes on a CPU.')
  flags.DEFINE_enum('strategy', 'reinforce', ['reinforce', 'evolution'],
                    'REINFORCE (the paper\'s search) or an evolutionary search.')
  flags.DEFINE_integer('steps', None, 'REINFORCE steps (paper 500, quick 10).')
  flags.DEFINE_integer('samples_per_step', None, 'REINFORCE: topologies sampled and measured '
                       'side by side per policy update (default 1: the paper\'s algorithm; '
                       'docs/design.md §8).')
  flags.DEFINE_enum('reward', 'length_ntk', list(reward_lib.REWARDS),
                    'Relative-change reward: L^E and κ_Θ (the paper), one of them, or params / '
                    'MACs as cheap baseline proxies. Evolution: the metrics whose rank sum '
                    'among the measured topologies is the fitness.')
  flags.DEFINE_integer('population', None, 'Evolution: topologies a generation (paper 24, '
                       'quick 6).')
  flags.DEFINE_integer('measurements', None, 'Evolution: distinct topologies measured in all '
                       '(paper 360, quick 24).')
  flags.DEFINE_float('mutation_rate', None, 'Evolution: probability that a decision of a '
                     f'child mutates (default {evolution.EvolutionConfig.mutation_rate}).')
  flags.DEFINE_float('crossover_rate', None, 'Evolution: probability that a child is the '
                     'uniform crossover of two parents (default '
                     f'{evolution.EvolutionConfig.crossover_rate}).')
  flags.DEFINE_integer('tournament', None, 'Evolution: members a tournament draws (default '
                       f'{evolution.EvolutionConfig.tournament}).')
  flags.DEFINE_float('max_params', None, 'Evolution: ceiling on the params of a measured '
                       'topology (at --width, 1000 classes); none by default.')
  flags.DEFINE_float('max_macs', None, 'Evolution: ceiling on its MACs at 224x224; none by '
                       'default.')
  cli_flags.define_common_flags('Seed of the policy, the samples and the measurements.')


FLAGS = flags.FLAGS


_EVOLUTION_ONLY = ('population', 'measurements', 'mutation_rate', 'crossover_rate',
                   'tournament', 'max_params', 'max_macs')


def config_from_flags():
  """The SearchConfig (REINFORCE) or EvolutionConfig of the flags; a flag of the other
  strategy is refused."""
  if FLAGS.strategy == 'reinforce':
    given = [f'--{n}' for n in _EVOLUTION_ONLY if FLAGS[n].value is not None]
    if given:
      raise UserInputError(f'{", ".join(given)}: only with --strategy=evolution (the '
                           'default strategy is reinforce)')
    values = cli_flags.preset_values(reinforce.PRESETS, ('steps', 'image_size', 'repeats'))
    if FLAGS.samples_per_step is not None:
      values['samples_per_step'] = FLAGS.samples_per_step
    return reinforce.SearchConfig(reward=FLAGS.reward, **cli_flags.common_config(),
                                  **values).validate()
  for name in ('steps', 'samples_per_step'):
    if FLAGS[name].value is not None:
      raise UserInputError(f'--{name} applies to --strategy=reinforce only; the evolution\'s '
                           'budget is --measurements')
  values = cli_flags.preset_values(evolution.PRESETS, ('population', 'measurements',
                                                        'image_size', 'repeats'))
  for name in _EVOLUTION_ONLY[2:]:
    if FLAGS[name].value is not None:
      values[name] = FLAGS[name].value
  for name in ('max_params', 'max_macs'):  # 5e8 is taken, 5.5 refused
    if name in values:
      values[name] = validation.integer(f'--{name}', values[name], 0)
  return evolution.EvolutionConfig(fitness=FLAGS.reward, **cli_flags.common_config(),
                                   **values).validate()


def main(argv):
  cli_flags.check_argv('search', argv)
  config = config_from_flags()
  is_evolution = isinstance(config, evolution.EvolutionConfig)
  metrics = reward_lib.reward_metrics(config.fitness if is_evolution else config.reward)
  evaluator = cli_flags.evaluator(metrics, config)
  try:
    if is_evolution:
      result = evolution.run_evolution(config, FLAGS.output_dir, progress=FLAGS.progress,
                                       workers=cli_flags.workers(), evaluator=evaluator)
      measured = result.records[-1]['measured'] if result.records else 0
      print(f'seed topology: {result.seed_string}   ({len(result.records)} generations, '
            f'{measured} measured, {result.output_dir}/seed.txt)')
      return
    result = reinforce.run_search(config, FLAGS.output_dir, progress=FLAGS.progress,
                                  workers=cli_flags.workers(), evaluator=evaluator)
  finally:
    if evaluator is not None:
      evaluator.close()
  print(f'seed topology: {result.seed_string}   '
        f'({len(result.records)} steps, {result.output_dir}/seed.txt)')
