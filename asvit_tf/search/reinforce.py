"""Seed search with REINFORCE (docs/design.md §8), resumable after a kill.

Each step samples the 12 decisions, builds the topology at C=32 and depths 1,1,1,1,
measures it, turns the metrics into a relative-change reward, subtracts a bias-corrected EMA
baseline (updated with this reward first) and takes one Adam step on −log_prob·advantage.
The result is the argmax of every decision.

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
from asvit_tf import validation
from asvit_tf.errors import UserInputError
from asvit_tf.models import size
from asvit_tf.search import plots
from asvit_tf.search import policy as policy_lib
from asvit_tf.search import reward as reward_lib
from asvit_tf.search import state as state_lib
from asvit_tf.search.measure import MeasureFn, measure_from_config

KIND = 'search'
LOG_FILE = 'search.jsonl'
PLOT_FILE = 'search.png'
SEED_FILE = 'seed.txt'
RESULT_FILE = 'result.json'
TB_DIR = 'tensorboard'

# Tags of the RNG streams derived from (seed, step, tag).
_SAMPLE, _MEASURE = 1, 2


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

  def validate(self):
    reward_lib.reward_metrics(self.reward)
    for name in ('steps', 'image_size', 'repeats', 'window', 'width', 'batch_size'):
      validation.integer(f'--{name}', getattr(self, name))
    # The costliest topology the policy can sample: every sample must fit.
    validation.check_buildable(largest_in_search_space(self.width), self.image_size,
                               name='--image_size')
    if not self.lr > 0 or not 0 <= self.momentum < 1:
      raise UserInputError(f'need lr > 0 and 0 <= momentum < 1, got {self.lr}, {self.momentum}')
    return self


def largest_in_search_space(width: int) -> arch_lib.Topology:
  """The search-space topology with the most parameters and the largest tensors at `width`:
  the largest kernels, expansions and heads, the fewest splits."""
  space = dict(arch_lib.SEARCH_SPACE)
  return arch_lib.Topology(
      kernels=tuple(max(space[f'K{i}']) for i in range(1, 5)),
      splits=(min(space['S1']), min(space['S2']), min(space['S3']), arch_lib.FIXED_SPLIT_4),
      expansions=tuple(max(space[f'E{i}']) for i in range(1, 5)), heads=max(space['H']),
      width=width)


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


def _fresh_state(config: SearchConfig) -> Dict:
  policy = policy_lib.Policy(config.seed)
  return {'kind': KIND, 'config': dataclasses.asdict(config), 'step': 0, 'done': False,
          'logits': policy.state(), 'adam': policy_lib.Adam(lr=config.lr).state(),
          'tracker': reward_lib.RewardTracker(config.reward, config.window).state(),
          'baseline': reward_lib.EMABaseline(config.momentum).state(), 'records': []}


def _finite_or_none(x):
  return x if x is None or math.isfinite(x) else None


_METRIC_KEYS = ('length', 'ntk', 'params', 'macs', 'bad', 'length_values', 'ntk_values')


def _clean_metrics(metrics: Dict, topo: arch_lib.Topology) -> Dict:
  """The metrics as they are logged (non-finite -> None, 'bad' set), the form the cache
  holds so that a resumed run sees exactly what the uninterrupted one saw."""
  out = {k: metrics.get(k) for k in _METRIC_KEYS}
  for k in ('length', 'ntk'):
    out[k] = _finite_or_none(out[k])
  if out['params'] is None:
    out['params'] = size.estimate_params(topo)
  out['bad'] = bool(out['bad'])
  return out


class _TensorBoard:
  """tf.summary scalars, opened lazily (TensorFlow is imported only when used)."""

  def __init__(self, logdir: Optional[str]):
    self.logdir, self.writer = logdir, None

  def write(self, record: Dict, keys):
    if not self.logdir:
      return
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if self.writer is None:
      self.writer = tf.summary.create_file_writer(self.logdir)
    with self.writer.as_default(step=record['step']):
      for key in keys:
        v = record.get(key)
        if v is not None and math.isfinite(v):
          tf.summary.scalar(key, v)
    self.writer.flush()


def _progress(total: int, initial: int, enabled: bool, desc: str):
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True)


def run_search(config: SearchConfig, output_dir: str, measure: Optional[MeasureFn] = None,
               progress: bool = True, tensorboard: bool = True, plot_every: int = 10,
               on_step: Optional[Callable[[Dict], None]] = None,
               workers: int = 1) -> SearchResult:
  """Runs (or resumes, or just reports a finished) search in `output_dir`.

  Args:
    config: the search's configuration; a saved run with another one is refused.
    measure: (topology, seed) -> metrics; default `make_measure` with the reward's metrics
      on Gaussian noise or `config.data`.
    plot_every: redraw the PNG every so many steps (and at the end).
    on_step: called with each new record after its state is saved (tests use it to stop).
    workers: processes for the default measure: a topology's L^E and κ_Θ are measured side
      by side, each process with as many threads as cores (the result does not depend on
      it, but for floating-point rounding).

  Returns the argmax topology and all step records.
  """
  config.validate()
  output_dir, state = state_lib.open_run(output_dir, KIND, config)
  if state is None:
    state = _fresh_state(config)
  owned = measure is None and not state['done']
  if owned:
    # A step's L^E and κ_Θ run side by side and rarely take the same time: with every core's
    # thread in each worker, the one still running then uses the whole CPU (measured faster
    # per step than one thread each: docs/benchmarks.md).
    from asvit_tf.search import parallel  # pylint: disable=g-import-not-at-top
    measure = measure_from_config(reward_lib.reward_metrics(config.reward), config, workers,
                                  threads=parallel.default_workers())

  policy = policy_lib.Policy(config.seed)
  policy.load_state(state['logits'])
  adam = policy_lib.Adam.from_state(state['adam'])
  tracker = reward_lib.RewardTracker.from_state(state['tracker'])
  baseline = reward_lib.EMABaseline(**state['baseline'])
  records = state['records']
  cache = {r['topology']: {k: r[k] for k in _METRIC_KEYS} for r in records}
  log_path = os.path.join(output_dir, LOG_FILE)
  plot_path = os.path.join(output_dir, PLOT_FILE)
  board = _TensorBoard(os.path.join(output_dir, TB_DIR) if tensorboard else None)
  scalars = ('reward', 'baseline', 'advantage', 'entropy', 'log_prob', 'length', 'ntk',
             'params', 'macs')
  # The JSONL may be one step behind the state if a kill fell between the two writes.
  state_lib.write_jsonl(log_path, records)
  if records and state['step'] < config.steps:
    logging.info('resuming the search in %s at step %d/%d', output_dir, state['step'],
                 config.steps)

  bar = _progress(config.steps, state['step'], progress and not state['done'], 'search')
  if records:
    bar.set_postfix_str(records[-1]['derived'])
  try:
    for step in range(state['step'], config.steps):
      start = time.time()
      actions = policy.sample(state_lib.step_rng(config.seed, step, _SAMPLE))
      topo = arch_lib.Topology.from_decisions(actions, width=config.width)
      key = topo.seed_string
      cached = key in cache
      if not cached:
        cache[key] = _clean_metrics(
            measure(topo, state_lib.derive_seed(config.seed, _MEASURE, *actions)), topo)
      metrics = cache[key]
      bad = metrics['bad']
      reward, used = tracker.add(metrics, bad=bad)
      base = baseline.update(reward)
      advantage = reward - base
      log_prob, entropy = policy.log_prob(actions), policy.entropy()
      policy.reinforce_step(adam, actions, advantage)
      derived = arch_lib.Topology.from_decisions(policy.argmax(), width=config.width)
      record = {'step': step, 'topology': topo.seed_string, 'derived': derived.seed_string,
                'actions': actions, **metrics, 'cached': cached,
                'reward_inputs': used, 'reward': reward, 'baseline': base,
                'advantage': advantage, 'log_prob': log_prob, 'entropy': entropy,
                'seconds': round(time.time() - start, 3)}
      records.append(record)
      state.update(step=step + 1, logits=policy.state(), adam=adam.state(),
                   tracker=tracker.state(), baseline=baseline.state())
      state_lib.save_state(output_dir, state)
      state_lib.write_jsonl(log_path, records)
      board.write(record, scalars)
      if plot_every and (step + 1) % plot_every == 0:
        plots.plot_search(records, plot_path, f'search {output_dir}')
      bar.update(1)
      bar.set_postfix_str(derived.seed_string)
      if on_step is not None:
        on_step(record)
  finally:
    bar.close()
    if owned and hasattr(measure, 'close'):
      measure.close()

  result = arch_lib.Topology.from_decisions(policy.argmax(), width=config.width)
  if not state['done']:
    plots.plot_search(records, plot_path, f'search {output_dir}: {result.seed_string}')
    summary = {'seed': result.seed_string, 'topology': str(result),
               'steps': config.steps, 'config': dataclasses.asdict(config),
               'probabilities': [p.round(6).tolist() for p in policy.probabilities()],
               'entropy': policy.entropy()}
    state_lib.atomic_write(os.path.join(output_dir, RESULT_FILE),
                           json.dumps(summary, indent=1) + '\n')
    state_lib.atomic_write(os.path.join(output_dir, SEED_FILE), result.seed_string + '\n')
    state['done'] = True
    state_lib.save_state(output_dir, state)
    logging.info('search done: %s', result.seed_string)
  return SearchResult(result, records, output_dir)


def read_seed(path: str) -> str:
  """The seed string of a search output dir or of a seed.txt file."""
  if os.path.isdir(path):
    path = os.path.join(path, SEED_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist (has the search finished?)')
  with open(path) as f:
    text = f.read().strip()
  if not text:
    raise UserInputError(f'{path} is empty')
  return text
