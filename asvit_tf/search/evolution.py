"""Evolutionary seed search (docs/design.md §8a), resumable after a kill.

A population over the 12 decisions of `arch.SEARCH_SPACE` (ViT-ResNAS's search, on As-ViT's
training-free measures instead of a super-network's accuracy):

- generation 0: `population` topologies drawn uniformly from the search space;
- generation g >= 1: `population` children, each by tournament selection of a parent (with
  probability `crossover_rate` two, uniform crossover) and then mutation (each decision with
  probability `mutation_rate` to another of its choices, uniformly);
- a child already measured (in an earlier generation or earlier in this one), or over the
  `max_params` / `max_macs` ceiling, is drawn again (up to `MAX_DRAWS` times); if none fits,
  the child is its first parent (measured before, so its measurement is reused);
- fitness: the sum of the dense ranks of the `fitness` metrics (`reward.REWARDS`: L^E
  descending and κ_Θ ascending for 'length_ntk') among every topology measured so far (the
  archive); ties by the ranks of the first metric, then the earlier measurement. The
  population of the next generation is the best `population` of the archive.
- the run ends once `measurements` distinct topologies are measured (the last generation
  is cut to the budget), or when a generation finds nothing new to measure.

Determinism: every draw of generation g comes from an RNG made from (seed, g), and depends
only on the state saved at the end of generation g-1, so a run resumed mid-generation
proposes the same children and measures only those it lacks. A topology is measured with
the seed REINFORCE gives it, derived from (seed, its decisions): common random numbers, so
the two strategies at one `seed` measure a topology they both visit identically.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np

from asvit_tf import arch as arch_lib
from asvit_tf import seeding
from asvit_tf import validation
from asvit_tf.errors import UserInputError
from asvit_tf.models import memory
from asvit_tf.models import size
from asvit_tf.search import grow as grow_lib
from asvit_tf.search import measure as measure_lib
from asvit_tf.search import plots
from asvit_tf.search import reinforce
from asvit_tf.search import reward as reward_lib
from asvit_tf.search import run as run_lib
from asvit_tf.search import state as state_lib

KIND = reinforce.KIND  # one search per directory, whichever the strategy
LOG_FILE = reinforce.LOG_FILE
PLOT_FILE = reinforce.PLOT_FILE
SEED_FILE = reinforce.SEED_FILE
RESULT_FILE = reinforce.RESULT_FILE
STRATEGY = 'evolution'
MAX_DRAWS = 100  # draws of one child before it falls back to its parent
SIZE_IMAGE = 224  # MACs of the ceiling are counted at 224×224, 1000 classes

SIZES = tuple(len(choices) for _, choices in arch_lib.SEARCH_SPACE)
Decisions = Tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class EvolutionConfig:
  """Everything that determines an evolutionary search's result (a resume must match it)."""
  strategy: str = STRATEGY
  population: int = 24
  measurements: int = 360  # budget of distinct measured topologies
  mutation_rate: float = 0.1
  crossover_rate: float = 0.5
  tournament: int = 3
  fitness: str = 'length_ntk'  # a reward name: the metrics whose rank sum is the fitness
  max_params: int = 0  # ceiling on the measured topology's params (0: none)
  max_macs: int = 0  # ceiling on its MACs at 224×224 (0: none)
  image_size: int = 224
  repeats: int = 5
  seed: int = 0
  width: int = arch_lib.DEFAULT_WIDTH
  data: str = ''
  data_dir: str = ''
  batch_size: int = 16
  # Added later: a saved run without it matches at the default.
  share_embedding: bool = False  # the measures draw the patch-embedding conv once per topology

  def validate(self):
    if self.strategy != STRATEGY:
      raise UserInputError(f'strategy must be {STRATEGY!r}, got {self.strategy!r}')
    reward_lib.reward_metrics(self.fitness, 'fitness')
    for name in ('image_size', 'repeats', 'width', 'batch_size', 'measurements'):
      validation.integer(f'`{name}`', getattr(self, name))
    validation.integer('`population`', self.population, 2)
    validation.integer('`tournament`', self.tournament, 1)
    if self.tournament > self.population:
      raise UserInputError(f'`tournament` ({self.tournament}) must not exceed `population` '
                           f'({self.population})')
    if self.measurements < self.population:
      raise UserInputError(f'`measurements` ({self.measurements}) must be at least '
                           f'`population` ({self.population}): generation 0 measures them')
    for name in ('mutation_rate', 'crossover_rate'):
      value = getattr(self, name)
      if not 0 <= value <= 1:
        raise UserInputError(f'`{name}` must be in [0, 1], got {value}')
    for name in ('max_params', 'max_macs'):
      validation.integer(f'`{name}`', getattr(self, name), 0)
    memory.check_buildable(reinforce.largest_in_search_space(self.width), self.image_size,
                               name='`image_size`')
    small = smallest_in_search_space(self.width)
    for name, value in zip(('max_params', 'max_macs'), self.sizes(small)):
      ceiling = getattr(self, name)
      if ceiling and value > ceiling:
        raise UserInputError(f'`{name}` {ceiling} admits no topology of the search space at '
                             f'C={self.width}: the smallest, {small.seed_string}, has {value}')
    return self

  def sizes(self, topology: arch_lib.Topology) -> Tuple[int, int]:
    """(params, MACs at 224×224) of a topology as it is measured (1000 classes)."""
    return size.estimate_params(topology), size.count_macs(topology, SIZE_IMAGE)

  def fits(self, topology: arch_lib.Topology) -> bool:
    params, macs = self.sizes(topology)
    return ((not self.max_params or params <= self.max_params)
            and (not self.max_macs or macs <= self.max_macs))


def smallest_in_search_space(width: int) -> arch_lib.Topology:
  """The smallest kernels, expansions and heads, the most splits: the fewest params and MACs."""
  return arch_lib.extreme_topology(width, largest=False)


PRESETS: Dict[str, Dict] = {
    # About the measurements of the paper's REINFORCE search (~360 distinct topologies).
    'paper': dict(population=24, measurements=360, image_size=224, repeats=5),
    # A few minutes on a CPU: generation 0 and three of children.
    'quick': dict(population=6, measurements=24, image_size=32, repeats=1),
}


# ---- the operators --------------------------------------------------------------------
def random_decisions(rng: np.random.Generator) -> Decisions:
  """One topology drawn uniformly from the search space."""
  return tuple(int(rng.integers(n)) for n in SIZES)


def mutate(decisions: Sequence[int], rate: float, rng: np.random.Generator) -> Decisions:
  """Each decision with probability `rate` replaced by another of its choices, uniformly."""
  out = []
  for d, n in zip(decisions, SIZES):
    if rng.random() < rate:
      d = (d + 1 + int(rng.integers(n - 1))) % n  # any choice but d
    out.append(int(d))
  return tuple(out)


def crossover(a: Sequence[int], b: Sequence[int], rng: np.random.Generator) -> Decisions:
  """Uniform crossover: each decision from `a` or `b` with probability 1/2."""
  take_a = rng.random(len(SIZES)) < 0.5
  return tuple(int(x if t else y) for x, y, t in zip(a, b, take_a))


def tournament(population: Sequence[Decisions], order: Dict[Decisions, int], k: int,
               rng: np.random.Generator) -> Decisions:
  """The fittest of `k` distinct members drawn uniformly (`order`: 0 is the fittest)."""
  picks = rng.choice(len(population), size=k, replace=False)
  return min((population[int(i)] for i in picks), key=lambda d: order[d])


# ---- fitness ----------------------------------------------------------------------------
def _value(entry: Dict, metric: str) -> Optional[float]:
  v = entry.get(metric)
  if metric == 'ntk' and entry.get('bad'):
    return None  # a bad network's κ_Θ ranks last (as REINFORCE gives it the worst)
  return v if v is not None and math.isfinite(v) else None


def rank(entries: Sequence[Dict], fitness: str) -> List[Dict]:
  """Each entry's fitness within `entries` (the archive, in order of measurement):
  {'fitness': sum of the dense ranks of the fitness metrics (lower is better), 'ranks':
  per metric, 'place': 0 for the fittest}. Ties: the first metric's rank, then the order."""
  metrics = reward_lib.REWARDS[fitness]
  ranks = {m: grow_lib.dense_ranks([_value(e, m) for e in entries], sign > 0)
           for m, sign in metrics}
  first = metrics[0][0]
  out = [{'fitness': sum(ranks[m][i] for m, _ in metrics),
          'ranks': {m: ranks[m][i] for m, _ in metrics}} for i in range(len(entries))]
  order = sorted(range(len(entries)), key=lambda i: (out[i]['fitness'], ranks[first][i], i))
  for place, i in enumerate(order):
    out[i]['place'] = place
  return out


def _key(decisions: Sequence[int]) -> str:
  return ','.join(map(str, decisions))


# A search's result whatever its strategy; here `topology` is the fittest measured, at
# C=width and depths 1,1,1,1.
EvolutionResult = reinforce.SearchResult


class EvolutionStrategy(run_lib.OpenEndedStrategy):
  """A population per step (a `run.Strategy`). The state keeps the archive ('measured':
  decisions key -> metrics, in order of generation and draw), the population (decision
  keys, fittest first) and the current generation's measurements under 'pending'."""
  kind, log_file, unit = KIND, LOG_FILE, 'measurement'
  scalars = ('best_length', 'best_ntk', 'best_fitness', 'mean_length', 'mean_ntk',
             'measured', 'diversity')

  def __init__(self, config: EvolutionConfig):
    self.config = config
    self.state: Dict = {}
    self._step: Optional[Dict] = None

  def fresh_state(self) -> Dict:
    return {'kind': KIND, 'config': dataclasses.asdict(self.config), 'step': 0,
            'done': False, 'stop_reason': '', 'measured': {}, 'population': [],
            'pending': {}, 'records': []}

  def topology(self, decisions: Sequence[int]) -> arch_lib.Topology:
    return arch_lib.Topology.from_decisions(decisions, width=self.config.width)

  def best(self) -> Optional[arch_lib.Topology]:
    population = self.state['population']
    return self.topology(map(int, population[0].split(','))) if population else None

  def status(self) -> str:
    best = self.best()
    if best is None:
      return ''
    return f'{best.seed_string}  ({len(self.state["measured"])} measured)'

  # ---- a generation's children -------------------------------------------------------
  def _children(self) -> List[Dict]:
    """The current generation's topologies, drawn from (seed, step) and the saved state."""
    config, step = self.config, self.state['step']
    rng = seeding.rng(config.seed, step, seeding.EVOLVE)
    measured = self.state['measured']
    budget = config.measurements - len(measured)
    population = [tuple(map(int, k.split(','))) for k in self.state['population']]
    order = {d: i for i, d in enumerate(population)}
    drawn, children = set(), []
    for _ in range(min(config.population, budget)):
      child, parents, draws = None, [], 0
      while child is None and draws < MAX_DRAWS:
        draws += 1
        if step == 0:
          candidate, parents = random_decisions(rng), []
        else:
          k = min(config.tournament, len(population))  # fewer if generation 0 fell back
          parents = [tournament(population, order, k, rng)]
          if rng.random() < config.crossover_rate:
            parents.append(tournament(population, order, k, rng))
            candidate = crossover(parents[0], parents[1], rng)
          else:
            candidate = parents[0]
          candidate = mutate(candidate, config.mutation_rate, rng)
        key = _key(candidate)
        if key not in measured and key not in drawn and config.fits(self.topology(candidate)):
          child = candidate
      if child is None:  # nothing new under the ceilings within reach: reuse
        child = parents[0] if parents else tuple(
            smallest_in_search_space(config.width).decisions())
      drawn.add(_key(child))
      children.append({'decisions': child, 'parents': [_key(p) for p in parents],
                       'draws': draws})
    return children

  def propose(self) -> Optional[run_lib.Proposal]:
    children = self._children()
    self._step = {'start': time.time(), 'children': children}
    measured, pending = self.state['measured'], self.state['pending']
    todo, keys, seen = [], [], set()
    for c in children:
      key = _key(c['decisions'])
      if key in measured or key in pending or key in seen:
        continue
      seen.add(key)
      keys.append(key)
      todo.append((self.topology(c['decisions']),
                   seeding.seed(self.config.seed, seeding.MEASURE, *c['decisions'])))
    new = len({_key(c['decisions']) for c in children} - set(measured))
    return run_lib.Proposal(keys, todo, new - len(todo),
                            f'generation {self.state["step"]}: {len(todo)} of {new} to measure')

  def take(self, key: str, measurement: measure_lib.Measurement):
    """Kept as logged (non-finite -> None); params and MACs counted when not measured."""
    m = measurement.cleaned()
    params, macs = self.config.sizes(self.topology(map(int, key.split(','))))
    self.state['pending'][key] = {
        'length': m.length, 'ntk': m.ntk, 'bad': m.bad,
        'params': m.params if m.params is not None else params,
        'macs': m.macs if m.macs is not None else macs,
        'length_values': m.length_values, 'ntk_values': m.ntk_values}

  def conclude(self) -> Dict:
    config, step = self.config, self.state['step']
    measured, pending = self.state['measured'], self.state['pending']
    children = self._step['children']
    new_keys = []
    for c in children:  # the archive grows in draw order, whatever the order of arrival
      key = _key(c['decisions'])
      if key in pending and key not in measured:
        measured[key] = {**pending[key], 'generation': step}
        new_keys.append(key)
    keys = list(measured)
    fit = rank([measured[k] for k in keys], config.fitness)
    by_place = sorted(range(len(keys)), key=lambda i: fit[i]['place'])
    population = [keys[i] for i in by_place[:config.population]]
    place = {keys[i]: fit[i] for i in range(len(keys))}
    best_key = population[0]
    best = measured[best_key]
    members = [measured[k] for k in population]
    decisions = np.array([list(map(int, k.split(','))) for k in population])
    child_records = []
    for c in children:
      key = _key(c['decisions'])
      entry = measured[key]
      child_records.append({
          'topology': self.topology(c['decisions']).seed_string, 'decisions': list(
              c['decisions']), 'parents': [self.topology(map(int, p.split(','))).seed_string
                                           for p in c['parents']],
          'draws': c['draws'], 'cached': key not in new_keys,
          **{m: entry[m] for m in ('length', 'ntk', 'params', 'macs', 'bad')},
          'fitness': place[key]['fitness'], 'survived': key in population})
    record = {
        'step': step, 'best': self.topology(map(int, best_key.split(','))).seed_string,
        'best_length': best['length'], 'best_ntk': best['ntk'],
        'best_fitness': place[best_key]['fitness'],
        'mean_length': _mean([m['length'] for m in members]),
        'mean_ntk': _mean([m['ntk'] for m in members]),
        'measured': len(measured), 'new': len(new_keys), 'diversity': _diversity(decisions),
        'population': [self.topology(map(int, k.split(','))).seed_string for k in population],
        'children': child_records, 'seconds': round(time.time() - self._step['start'], 3)}
    self.state['records'].append(record)
    self.state.update(step=step + 1, population=population, pending={})
    if len(measured) >= config.measurements:
      self.state.update(done=True, stop_reason=f'measured {len(measured)} topologies '
                        f'(measurements {config.measurements})')
    elif not new_keys:
      self.state.update(done=True, stop_reason=f'generation {step} found nothing new to '
                        'measure under the ceilings')
    logging.info('evolution generation %d: best %s (%d measured)', step, record['best'],
                 len(measured))
    return record

  def write_outputs(self, output_dir: str, final: bool):
    """search.png; at the end also result.json and seed.txt (the fittest measured)."""
    records, config = self.state['records'], self.config
    path = os.path.join(output_dir, PLOT_FILE)
    best = self.best()
    title = f'evolution {output_dir}' + (f': {best.seed_string}' if final and best else '')
    if records:
      plots.plot_evolution(records, path, title)
    if not final or best is None:
      return
    measured = self.state['measured']
    summary = {'seed': best.seed_string, 'topology': str(best), 'strategy': STRATEGY,
               'generations': len(records), 'measured': len(measured),
               'stop_reason': self.state['stop_reason'], 'config': dataclasses.asdict(config),
               'population': [
                   {'topology': self.topology(map(int, k.split(','))).seed_string,
                    **{m: measured[k][m] for m in ('length', 'ntk', 'params', 'macs', 'bad',
                                                   'generation')}}
                   for k in self.state['population']]}
    state_lib.atomic_write(os.path.join(output_dir, RESULT_FILE),
                           state_lib.dumps(summary).replace('}, {', '},\n {') + '\n')
    state_lib.atomic_write(os.path.join(output_dir, SEED_FILE), best.seed_string + '\n')


def _mean(values) -> Optional[float]:
  v = [x for x in values if x is not None and math.isfinite(x)]
  return float(np.mean(v)) if v else None


def _diversity(decisions: np.ndarray) -> float:
  """Mean over the 12 decisions of the entropy (nats) of the population's choices."""
  total = 0.0
  for j, n in enumerate(SIZES):
    p = np.bincount(decisions[:, j], minlength=n) / len(decisions)
    p = p[p > 0]
    total += float(-(p * np.log(p)).sum())
  return total / len(SIZES)


def _refuse_other_strategy(output_dir: str):
  path = os.path.join(output_dir, state_lib.state_file(KIND))
  try:
    with open(path) as f:
      saved = json.load(f).get('config', {})
  except (OSError, ValueError, AttributeError):
    return  # no state, or a damaged one: `run.drive` says so
  if isinstance(saved, dict) and saved.get('strategy', 'reinforce') != STRATEGY:
    raise UserInputError(f'{output_dir} holds a {saved.get("strategy", "reinforce")} search; '
                         f'an {STRATEGY} search needs another `output_dir`')


def run_evolution(config: EvolutionConfig, output_dir: str,
                  measure: Optional[measure_lib.MeasureFn] = None, progress: bool = True,
                  tensorboard: bool = True, plot_every: int = 1,
                  on_measure: Optional[Callable[[measure_lib.Measurement], None]] = None,
                  workers: int = 1,
                  evaluator: Optional[measure_lib.Evaluator] = None) -> EvolutionResult:
  """Runs (or resumes, or reports a finished) evolutionary search in `output_dir`.

  Args as `reinforce.run_search`; `on_measure` is called after each saved measurement
  (tests use it to stop). With `workers` > 1 a generation's topologies are measured side by
  side, a topology's L^E and κ_Θ apart.
  """
  config.validate()
  metrics = reward_lib.reward_metrics(config.fitness)
  _refuse_other_strategy(state_lib.prepare_output_dir(output_dir))

  def make_evaluator() -> measure_lib.Evaluator:
    if evaluator is not None:
      return evaluator
    if measure is not None:
      return measure_lib.SerialEvaluator(measure)
    return run_lib.default_evaluator(metrics, config, workers)

  strategy = EvolutionStrategy(config)
  output_dir, state = run_lib.drive(
      strategy, config, output_dir, make_evaluator, owned=evaluator is None,
      progress=progress, tensorboard=tensorboard, plot_every=plot_every,
      hooks=run_lib.Hooks(on_measure=on_measure))
  return EvolutionResult(strategy.best(), state['records'], output_dir)
