"""Seed search with REINFORCE (docs/design.md §8), resumable after a kill.

Each step samples the 12 decisions, builds the topology at C=32 and depths 1,1,1,1,
measures it, turns the metrics into a relative-change reward, subtracts a bias-corrected EMA
baseline (updated with this reward first) and takes one Adam step on −log_prob·advantage.
The result is the argmax of every decision.

Batched (`samples_per_step` K > 1): a step samples K topologies, has them measured side by
side, gives each its reward (the K enter the reward history and the baseline in sample
order), and takes one Adam step on the mean of −log_prob_k·(reward_k − baseline), the
baseline being the EMA after all K rewards. K = 1 is the paper's algorithm, as before.

Determinism: the policy's initial logits come from `seed`; step t samples with an RNG made
from (seed, t), so a run resumed from its saved state draws exactly what the uninterrupted
run would have drawn. A topology is measured with a seed derived from (seed, its decisions):
its metrics are a function of the topology within a run (common random numbers), so a
topology sampled again reuses its measurement instead of paying for it twice; the reward
still follows the design (the history gets the value again).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Callable, Dict, List, Optional

from absl import logging

from asvit_tf import arch as arch_lib
from asvit_tf import seeding
from asvit_tf import validation
from asvit_tf.errors import UserInputError
from asvit_tf.models import memory
from asvit_tf.models import size
from asvit_tf.search import measure as measure_lib
from asvit_tf.search import parallel
from asvit_tf.search import plots
from asvit_tf.search import policy as policy_lib
from asvit_tf.search import reward as reward_lib
from asvit_tf.search import run as run_lib
from asvit_tf.search import state as state_lib

KIND = 'search'
LOG_FILE = 'search.jsonl'
PLOT_FILE = 'search.png'
SEED_FILE = arch_lib.SEED_FILE
RESULT_FILE = 'result.json'
TB_DIR = run_lib.TB_DIR


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Everything that determines a search's result (a resume must match it)."""
  steps: int = 500
  image_size: int = 224
  repeats: int = 5
  reward: str = 'length_ntk'
  seed: int = 0
  lr: float = 0.08
  momentum: float = 0.9
  window: int = reward_lib.WINDOW
  width: int = arch_lib.DEFAULT_WIDTH
  data: str = ''
  data_dir: str = ''
  batch_size: int = 16
  # Added later: a saved run without them matches at the default.
  share_embedding: bool = False  # the measures draw the patch-embedding conv once per topology
  samples_per_step: int = 1  # topologies sampled per policy update (1: the paper's)

  def validate(self):
    reward_lib.reward_metrics(self.reward)
    for name in ('steps', 'image_size', 'repeats', 'window', 'width', 'batch_size',
                 'samples_per_step'):
      validation.integer(f'`{name}`', getattr(self, name))
    # The costliest topology the policy can sample: every sample must fit.
    memory.check_buildable(largest_in_search_space(self.width), self.image_size,
                               name='`image_size`')
    if not self.lr > 0 or not 0 <= self.momentum < 1:
      raise UserInputError(f'need lr > 0 and 0 <= momentum < 1, got {self.lr}, {self.momentum}')
    return self


def largest_in_search_space(width: int) -> arch_lib.Topology:
  """The search-space topology with the most parameters and the largest tensors at `width`:
  the largest kernels, expansions and heads, the fewest splits."""
  return arch_lib.extreme_topology(width, largest=True)


PRESETS: Dict[str, Dict] = {
    # The paper's search.
    'paper': dict(steps=500, image_size=224, repeats=5),
    # A few-minute search on a CPU, for the README's main job and smoke tests.
    'quick': dict(steps=10, image_size=32, repeats=1),
}


@dataclasses.dataclass
class SearchResult:
  topology: arch_lib.Topology  # argmax of every decision, at C=32 and depths 1,1,1,1
  records: List[Dict]
  output_dir: str

  @property
  def seed_string(self) -> str:
    return self.topology.seed_string


class ReinforceStrategy:
  """`samples_per_step` REINFORCE samples per step (a `run.Strategy`): propose those whose
  metrics are not known from an earlier step; conclude with their rewards, the baseline and
  one Adam step."""
  kind, log_file, unit = KIND, LOG_FILE, 'step'
  scalars = ('reward', 'baseline', 'advantage', 'entropy', 'log_prob', 'length', 'ntk',
             'params', 'macs')

  def __init__(self, config: SearchConfig):
    self.config = config
    self.policy = policy_lib.Policy(config.seed)
    self.state: Dict = {}
    self.cache: Dict[str, measure_lib.Measurement] = {}
    self._step: Optional[Dict] = None  # the samples of the current step

  def fresh_state(self) -> Dict:
    config = self.config
    return {'kind': KIND, 'config': dataclasses.asdict(config), 'step': 0, 'done': False,
            'logits': policy_lib.Policy(config.seed).state(),
            'adam': policy_lib.Adam(lr=config.lr).state(),
            'tracker': reward_lib.RewardTracker(config.reward, config.window).state(),
            'baseline': reward_lib.EMABaseline(config.momentum).state(), 'records': []}

  def restore(self, state: Dict):
    self.state = state
    self.policy.load_state(state['logits'])
    self.adam = policy_lib.Adam.from_state(state['adam'])
    self.tracker = reward_lib.RewardTracker.from_state(state['tracker'])
    self.baseline = reward_lib.EMABaseline(**state['baseline'])
    # A topology's metrics are a function of it within a run: sampled again, it is reused;
    # so are those of an unfinished step (saved as they arrived).
    self.cache = {r['topology']: measure_lib.Measurement.from_dict(r)
                  for r in state['records']}
    for key, values in state.get('pending', {}).items():
      self.cache[key] = measure_lib.Measurement.from_dict(values)
    if state['records'] and not self.finished():
      logging.info('resuming the search at step %d/%d', state['step'], self.config.steps)

  def finished(self) -> bool:
    return self.state['step'] >= self.config.steps

  def total(self) -> int:
    return self.config.steps

  def derived(self) -> arch_lib.Topology:
    """The argmax of every decision, at the search's width and depths 1,1,1,1."""
    return arch_lib.Topology.from_decisions(self.policy.argmax(), width=self.config.width)

  def status(self) -> str:
    return self.derived().seed_string

  def propose(self) -> run_lib.Proposal:
    step, seed = self.state['step'], self.config.seed
    rng = seeding.rng(seed, step, seeding.SAMPLE)
    samples = [self.policy.sample(rng) for _ in range(self.config.samples_per_step)]
    topologies = [arch_lib.Topology.from_decisions(a, width=self.config.width)
                  for a in samples]
    # Cached: measured in an earlier step (not earlier in this one, before a resume).
    pending = self.state.get('pending', {})
    self._step = {'start': time.time(), 'samples': samples, 'topologies': topologies,
                  'cached': [t.seed_string in self.cache and t.seed_string not in pending
                             for t in topologies],
                  'by_key': {t.seed_string: t for t in topologies}}
    keys, items = [], []
    for actions, topo in zip(samples, topologies):
      key = topo.seed_string
      if key not in self.cache and key not in keys:  # twice in a step: measured once
        keys.append(key)
        items.append((topo, seeding.seed(seed, seeding.MEASURE, *actions)))
    return run_lib.Proposal(keys, items)

  def take(self, key: str, measurement: measure_lib.Measurement):
    """Kept as it is logged (non-finite -> None, params counted if not measured), so a
    resumed run sees exactly what the uninterrupted one saw."""
    m = measurement.cleaned()
    if m.params is None:
      m = dataclasses.replace(m, params=size.estimate_params(self._step['by_key'][key]))
    self.cache[key] = m
    if self.config.samples_per_step > 1:  # saved with the state: a resumed step keeps it
      self.state.setdefault('pending', {})[key] = m.as_dict()

  def conclude(self) -> Dict:
    """The step's record (K = 1), or the mean of its K sample records' scalars; each
    sample's record is appended to state['records']."""
    step, samples = self.state['step'], self._step['samples']
    topologies, batched = self._step['topologies'], self.config.samples_per_step > 1
    rewards, used = [], []
    for topo in topologies:
      metrics = self.cache[topo.seed_string]
      reward, inputs = self.tracker.add(metrics.as_dict(), bad=metrics.bad)
      rewards.append(reward)
      used.append(inputs)
    for reward in rewards:
      base = self.baseline.update(reward)
    advantages = [reward - base for reward in rewards]
    log_probs = [self.policy.log_prob(actions) for actions in samples]
    entropy = self.policy.entropy()
    self.policy.reinforce_batch_step(self.adam, samples, advantages)
    derived, seconds = self.derived().seed_string, round(time.time() - self._step['start'], 3)
    records = []
    for k, (actions, topo) in enumerate(zip(samples, topologies)):
      cached = self._step['cached'][k] or topo in topologies[:k]
      records.append({'step': step, **({'sample': k} if batched else {}),
                      'topology': topo.seed_string, 'derived': derived, 'actions': actions,
                      **self.cache[topo.seed_string].as_dict(), 'cached': cached,
                      'reward_inputs': used[k], 'reward': rewards[k], 'baseline': base,
                      'advantage': advantages[k], 'log_prob': log_probs[k],
                      'entropy': entropy, 'seconds': seconds})
    self.state['records'].extend(records)
    self.state.pop('pending', None)
    self.state.update(step=step + 1, logits=self.policy.state(),
                      adam=self.adam.state(), tracker=self.tracker.state(),
                      baseline=self.baseline.state())
    if not batched:
      return records[0]
    return {'step': step, **{key: _mean(r.get(key) for r in records) for key in self.scalars}}

  def write_outputs(self, output_dir: str, final: bool):
    """search.png; at the end also result.json and seed.txt."""
    path = os.path.join(output_dir, PLOT_FILE)
    if not final:
      plots.plot_search(self.state['records'], path, f'search {output_dir}')
      return
    result, config = self.derived(), self.config
    plots.plot_search(self.state['records'], path, f'search {output_dir}: {result.seed_string}')
    summary = {'seed': result.seed_string, 'topology': str(result), 'steps': config.steps,
               'config': dataclasses.asdict(config),
               'probabilities': [p.round(6).tolist() for p in self.policy.probabilities()],
               'entropy': self.policy.entropy()}
    state_lib.atomic_write(os.path.join(output_dir, RESULT_FILE),
                           json.dumps(summary, indent=1) + '\n')
    state_lib.atomic_write(os.path.join(output_dir, SEED_FILE), result.seed_string + '\n')


def _mean(values) -> Optional[float]:
  """The mean of the finite numbers among `values` (None if there is none)."""
  finite = [float(v) for v in values if v is not None and math.isfinite(v)]
  return sum(finite) / len(finite) if finite else None


def run_search(config: SearchConfig, output_dir: str,
               measure: Optional[measure_lib.MeasureFn] = None,
               progress: bool = True, tensorboard: bool = True, plot_every: int = 10,
               on_step: Optional[Callable[[Dict], None]] = None, workers: int = 1,
               evaluator: Optional[measure_lib.Evaluator] = None) -> SearchResult:
  """Runs (or resumes, or reports a finished) search in `output_dir` (see `run.drive`).

  Args:
    config: the search's configuration; a saved run with another one is refused.
    measure: (topology, seed) -> Measurement, run in this process; default: the reward's
      metrics of `make_measure` on Gaussian noise or `config.data`.
    plot_every: redraw the PNG every so many steps (and at the end).
    on_step: called with each new record after its state is saved (tests use it to stop).
    workers: processes for the default measure: a topology's L^E and κ_Θ are measured side
      by side, κ_Θ's last repeat apart (`measure.planned_jobs`), each process with its
      share of the cores' threads (all of them with one repeat); the result does not depend
      on either, but for floating-point rounding.
    evaluator: measures instead of `measure` (the caller closes it).

  Returns the argmax topology and all step records.
  """
  config.validate()
  metrics = reward_lib.reward_metrics(config.reward)

  def make_evaluator() -> measure_lib.Evaluator:
    if evaluator is not None:
      return evaluator
    if measure is not None:
      return measure_lib.SerialEvaluator(measure)
    # A step's L^E and κ_Θ rarely take the same time. With repeats, κ_Θ's last one is a
    # job of its own, which the worker done with L^E takes (`measure.planned_jobs`), and
    # each worker has its share of the cores' threads: measured 19 % faster per step than
    # both whole with every core's thread in each worker (docs/benchmarks.md). With one
    # repeat nothing splits: every core's thread in each, so the one still running uses
    # the whole CPU.
    threads = None if config.repeats > 1 else parallel.default_workers()
    return run_lib.default_evaluator(metrics, config, workers, threads=threads)

  strategy = ReinforceStrategy(config)
  output_dir, state = run_lib.drive(
      strategy, config, output_dir, make_evaluator, owned=evaluator is None,
      progress=progress, tensorboard=tensorboard, plot_every=plot_every,
      hooks=run_lib.Hooks(on_step=on_step))
  return SearchResult(strategy.derived(), state['records'], output_dir)
