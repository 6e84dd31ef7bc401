"""Training-free scaling ("grow", docs/design.md §9), resumable after a kill.

From the seed at proxy width h=8 (real width C=4h) and depths 1,1,1,1, each step builds the
candidates "+1 block in one stage and width h' = round(h·(1+r)), r ∈ {5,10,15,20} %" (a width
equal to the previous ratio's is skipped), drops those whose real-width model has more than
`max_params` parameters (or, if set, more than `max_macs` MACs at 224×224), measures L^E and
κ_Θ on the proxy-width candidates, and accepts the candidate with the smallest sum of dense
ranks. It stops at the first accepted model with at least `target_params` parameters (with
`budgets`: at the first one at or above the last budget instead), or when no candidate is
left (or, if set, after `max_steps` steps: the quick preset's bound on its run time).

Candidate kinds (`candidate_kinds`, default ('depth',): the authors' rule): with 'mlp', every
width also gets the candidates "MLP expansion E_i + 1 in stage i" (depths unchanged) for each
stage whose E_i is below `MAX_EXPANSION`, ranked with the others by the same rule. The cap is
the search space's largest expansion (6): a grown model stays a topology whose every choice the
seed search could have made, so the metrics rank networks of the kind they were validated on;
compute-optimal ViTs grow the MLP fastest (SoViT, NeurIPS 2023) yet their MLP ratio stays
below 4 up to SoViT-400m (4304 / 1152 = 3.74), so 6 does not bind that rule early.

Budgets (`budget_metric` 'params' or 'macs', ascending `budgets`) name the members of the
family a user wants: each budget is marked on the accepted model nearest to it (smallest
absolute difference, the earlier one on a tie) in the record's 'budget' list, family.md and
scaling.png. Parameters and MACs grow at every step, so a budget's member is final once the
series has reached it; a budget the run ends below is marked on the last model.

Choices the design leaves to us (documented here, kept deterministic):
- Rounding is half-up in exact arithmetic: h' = floor(h·(100+p)/100 + 1/2).
- Candidates are enumerated width-major (ratios 5→20 %), stages 1→4 inside: the order of
  Algorithm 2's C × D and the last resort of the tie-break. MLP candidates (an option) follow
  a width's depth candidates, stages 1→4; in the authors' order (`tie_break='authors'`),
  they follow all depth candidates.
- All candidates of a step are measured with the same seed (derived from (seed, step)),
  i.e. the same input curves and noise batches: common random numbers for a fair comparison.
- A bad candidate (non-finite κ_Θ) ranks last in κ_Θ; a non-finite L^E ranks last in L^E.
- Tie-break of equal rank sums (`tie_break='ours'`, the default): the metric whose relative
  range (max − min) / mean|·| over this step's candidates is larger decides, preferring its
  better value (higher L^E, lower κ_Θ); then the other metric; then enumeration order.
  `tie_break='authors'` does what the authors' code does (`select`): the metric with the
  larger (max − min) / max decides (κ_Θ on equal ranges), between the first two tied
  candidates in their enumeration order (stage-major), taking the smaller value even for
  L^E (where the larger is better).
"""
from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from fractions import Fraction
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging

from asvit_tf import arch as arch_lib
from asvit_tf import seeding
from asvit_tf import validation
from asvit_tf.errors import UserInputError
from asvit_tf.models import memory
from asvit_tf.models import size
from asvit_tf.search import amounts
from asvit_tf.search import family
from asvit_tf.search import measure as measure_lib
from asvit_tf.search import plots
from asvit_tf.search import run as run_lib
from asvit_tf.search import state as state_lib

KIND = 'grow'
LOG_FILE = 'grow.jsonl'
TABLE_FILE = 'family.md'
PLOT_FILE = 'scaling.png'
RESULT_FILE = 'family.txt'
RATIOS_PERCENT = (5, 10, 15, 20)
WIDTH_FACTOR = 4  # real width C = 4 · proxy width h
COST_IMAGE_SIZE = 224  # MACs (records, max_macs, MAC budgets) are counted at this size
BUDGET_METRICS = ('params', 'macs')
TIE_BREAKS = ('ours', 'authors')
CANDIDATE_KINDS = ('depth', 'mlp')  # +1 block in a stage; MLP expansion + 1 in a stage
# The cap of the 'mlp' kind: the search space's largest expansion (module docstring).
MAX_EXPANSION = max(dict(arch_lib.SEARCH_SPACE)['E1'])


@dataclasses.dataclass(frozen=True)
class GrowConfig:
  """Everything that determines a scaling run's result (a resume must match it)."""
  arch: str = arch_lib.SEED  # the seed form of the starting topology
  target_params: int = 80_000_000
  max_params: int = 110_000_000
  image_size: int = 224
  repeats: int = 5
  seed: int = 0
  start_width: int = 8  # proxy width h of the start
  max_steps: int = 0  # stop after so many scaling steps (0: only target / no candidate)
  num_classes: int = 1000  # for the parameter counts
  data: str = ''
  data_dir: str = ''
  batch_size: int = 16
  # Options added later: a saved run without them matches at these defaults.
  max_macs: int = 0  # drop candidates above so many MACs at 224×224 (0: no MAC ceiling)
  budget_metric: str = ''  # 'params' or 'macs' with `budgets`
  budgets: Tuple[int, ...] = ()  # ascending; the run ends at the first model >= the last
  tie_break: str = 'ours'  # or 'authors' (see the module docstring)
  share_embedding: bool = False  # the measures draw the patch-embedding conv once per topology
  candidate_kinds: Tuple[str, ...] = ('depth',)  # CANDIDATE_KINDS to propose; ('depth', 'mlp')

  def validate(self):
    for name in ('target_params', 'max_params', 'image_size', 'repeats', 'start_width',
                 'num_classes', 'batch_size'):
      validation.integer(f'`{name}`', getattr(self, name))
    validation.integer('`max_steps`', self.max_steps, minimum=0)
    validation.integer('`max_macs`', self.max_macs, minimum=0)
    if self.tie_break not in TIE_BREAKS:
      raise UserInputError(f'`tie_break` must be one of {", ".join(TIE_BREAKS)}, got '
                           f'{self.tie_break!r}')
    self._validate_budgets()
    check_candidate_kinds(self.candidate_kinds)
    memory.check_buildable(self.arch, self.image_size, self.num_classes,
                           name='`image_size`')
    if self.max_params * memory.FLOAT_BYTES > memory.MEMORY_CEILING:
      raise UserInputError(f'`max_params` {self.max_params:g} is beyond what any single '
                           'accelerator holds (asvit_tf.models.memory.MEMORY_CEILING)')
    if not self.budgets and self.target_params > self.max_params:
      raise UserInputError(f'`target_params` ({self.target_params}) must not exceed '
                           f'`max_params` ({self.max_params})')
    return self

  def _validate_budgets(self):
    if not self.budgets and not self.budget_metric:
      return
    if self.budget_metric not in BUDGET_METRICS:
      raise UserInputError(f'`budget_metric` (the kind of the budgets) must be one of '
                           f'{", ".join(BUDGET_METRICS)}, got {self.budget_metric!r}')
    if not self.budgets:
      raise UserInputError(f'`budgets` is empty with `budget_metric` {self.budget_metric!r}: '
                           'give at least one budget')
    for b in self.budgets:
      validation.integer('`budgets`', b)
    if list(self.budgets) != sorted(set(self.budgets)):
      raise UserInputError(f'`budgets` must be strictly ascending, got {list(self.budgets)}')
    ceiling = self.max_params if self.budget_metric == 'params' else self.max_macs
    if ceiling and self.budgets[-1] > ceiling:
      field = '`max_params`' if self.budget_metric == 'params' else '`max_macs`'
      last = amounts.format_budget(self.budget_metric, self.budgets[-1])
      raise UserInputError(f'the last budget {last} exceeds {field} ({ceiling}): no model of '
                           'the run could reach it')

  @property
  def end_rule(self) -> str:
    """What ends the run when it reaches it (for the stop reason and the documents)."""
    if self.budgets:
      return f'the last budget, {amounts.format_budget(self.budget_metric, self.budgets[-1])}'
    return f'target_params {self.target_params}'


def parse_budgets(text: str) -> Tuple[str, Tuple[int, ...]]:
  """'params:29M,52M,88M' or 'macs:5.3G,8.9G,22.6G' → (metric, ascending budgets).

  Budgets given out of order are sorted; a budget given twice, an unknown kind, a value that
  is not a positive number (K/M/G suffixes allowed) raise a one-line UserInputError. An
  empty `text` gives ('', ()): no budgets.
  """
  if not text.strip():
    return '', ()
  metric, colon, values = text.partition(':')
  metric = metric.strip().lower()
  if not colon or metric not in BUDGET_METRICS:
    raise UserInputError(f'`budgets` {text.strip()!r}: must be KIND:B1,B2,... with KIND one of '
                         f'{", ".join(BUDGET_METRICS)} (e.g. params:29M,52M,88M)')
  items = [v for v in values.split(',')]
  if not any(v.strip() for v in items):
    raise UserInputError(f'`budgets` {text.strip()!r}: needs at least one budget')
  budgets = [amounts.parse_amount(v, '`budgets`') for v in items]
  twice = sorted({b for b in budgets if budgets.count(b) > 1})
  if twice:
    raise UserInputError(f'`budgets` {text.strip()!r}: gives '
                         f'{amounts.format_amount(twice[0])} twice')
  return metric, tuple(sorted(budgets))


def check_candidate_kinds(kinds: Sequence[str], name: str = '`candidate_kinds`'):
  """Raises a one-line UserInputError unless `kinds` are distinct `CANDIDATE_KINDS`, at least
  one."""
  kinds = list(kinds)
  unknown = [k for k in kinds if k not in CANDIDATE_KINDS]
  if not kinds or unknown or len(set(kinds)) != len(kinds):
    raise UserInputError(f'{name} must be distinct kinds from {", ".join(CANDIDATE_KINDS)} (at '
                         f'least one), got {",".join(kinds)!r}')


def parse_candidate_kinds(text: str, name: str = '`candidate_kinds`') -> Tuple[str, ...]:
  """'depth,mlp' → ('depth', 'mlp'), in `CANDIDATE_KINDS` order whatever the order given;
  an unknown or repeated kind, or none, raises a one-line UserInputError naming `name`."""
  kinds = [k.strip().lower() for k in text.split(',') if k.strip()]
  check_candidate_kinds(kinds, name)
  return tuple(k for k in CANDIDATE_KINDS if k in kinds)


def budget_marks(values: Sequence[float], budgets: Sequence[float],
                 final: bool) -> Dict[int, List[float]]:
  """{index into `values`: the budgets whose nearest member it is}.

  `values` are the series' parameters (or MACs), increasing. A budget is placed once some
  value reaches it (its nearest member cannot change any more) or, with `final`, on the
  nearest of all (the last one for a budget the series ended below). Nearest: the smallest
  absolute difference, the earlier member on a tie.
  """
  marks: Dict[int, List[float]] = {}
  if not values:
    return marks
  for b in budgets:
    if not final and max(values) < b:
      continue
    i = min(range(len(values)), key=lambda j: (abs(values[j] - b), j))
    marks.setdefault(i, []).append(b)
  return marks


PRESETS: Dict[str, Dict] = {
    'paper': dict(image_size=224, repeats=5, target_params=80_000_000,
                  max_params=110_000_000, max_steps=0),
    # The first 3 steps at 32×32, 1 repeat: on a CPU each candidate costs seconds of graph
    # tracing, whatever the image size, and a whole run is 15-30 steps of up to 16.
    'quick': dict(image_size=32, repeats=1, target_params=80_000_000,
                  max_params=110_000_000, max_steps=3),
}


def scale_width(h: int, percent: int) -> int:
  """round(h · (1 + percent/100)), half-up, in exact arithmetic."""
  return math.floor(Fraction(h * (100 + percent), 100) + Fraction(1, 2))


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One scaling choice at proxy width `width`: +1 block in `stage` (0-based; kind 'depth'),
  or the MLP expansion of `stage` + 1 (kind 'mlp'; `depths` unchanged)."""
  stage: int
  percent: int
  width: int  # proxy width h'
  depths: Tuple[int, int, int, int]
  kind: str = 'depth'
  expansions: Optional[Tuple[int, int, int, int]] = None  # the grown ones; None: the base's

  def _changes(self) -> Dict:
    if self.expansions is None:
      return {'depths': self.depths}
    return {'depths': self.depths, 'expansions': self.expansions}

  def proxy(self, base: arch_lib.Topology) -> arch_lib.Topology:
    """The candidate at proxy width; `base` is the seed with the current model's expansions."""
    return base.replace(width=self.width, **self._changes())

  def real(self, base: arch_lib.Topology) -> arch_lib.Topology:
    return base.replace(width=WIDTH_FACTOR * self.width, **self._changes())

  @property
  def key(self) -> str:
    key = f'{self.width}:{",".join(map(str, self.depths))}'
    if self.kind == 'mlp':
      key += ':E' + ','.join(map(str, self.expansions))
    return key


def candidates(h: int, depths: Sequence[int], ratios: Sequence[int] = RATIOS_PERCENT,
               kinds: Sequence[str] = ('depth',),
               expansions: Optional[Sequence[int]] = None) -> List[Candidate]:
  """The scaling choices of one step, width-major; a width equal to the previous ratio's
  is skipped. Per width: with 'depth' in `kinds`, +1 block in stage 1..4; then, with 'mlp',
  E_i + 1 in stage i (of the current `expansions`) for each stage whose E_i is below
  `MAX_EXPANSION`."""
  if 'mlp' in kinds and expansions is None:
    raise ValueError('candidates of the mlp kind need the current expansions')
  out, previous = [], None
  for percent in ratios:
    width = scale_width(h, percent)
    if width == previous:
      continue
    previous = width
    if 'depth' in kinds:
      for stage in range(arch_lib.NUM_STAGES):
        new_depths = list(depths)
        new_depths[stage] += 1
        out.append(Candidate(stage, percent, width, tuple(new_depths)))
    if 'mlp' in kinds:
      out.extend(_mlp_candidates(percent, width, depths, expansions))
  return out


def _mlp_candidates(percent, width, depths, expansions) -> List[Candidate]:
  out = []
  for stage in range(arch_lib.NUM_STAGES):
    if expansions[stage] >= MAX_EXPANSION:
      continue
    grown = list(expansions)
    grown[stage] += 1
    out.append(Candidate(stage, percent, width, tuple(depths), 'mlp', tuple(grown)))
  return out


def filter_by_params(cands: Sequence[Candidate], seed: arch_lib.Topology, max_params: int,
                     num_classes: int = 1000) -> Tuple[List[Candidate], List[Candidate]]:
  """(kept, dropped): dropped are those whose real-width model exceeds `max_params`."""
  kept, dropped = [], []
  for c in cands:
    n = size.estimate_params(c.real(seed), num_classes=num_classes)
    (kept if n <= max_params else dropped).append(c)
  return kept, dropped


def filter_by_macs(cands: Sequence[Candidate], seed: arch_lib.Topology, max_macs: int,
                   num_classes: int = 1000,
                   image_size: int = COST_IMAGE_SIZE) -> Tuple[List[Candidate], List[Candidate]]:
  """(kept, dropped): dropped are those whose real-width model has more than `max_macs`
  MACs at `image_size` (`size.count_macs`); `max_macs` 0 keeps all."""
  if not max_macs:
    return list(cands), []
  kept, dropped = [], []
  for c in cands:
    n = size.count_macs(c.real(seed), image_size, num_classes)
    (kept if n <= max_macs else dropped).append(c)
  return kept, dropped


def dense_ranks(values: Sequence[Optional[float]], higher_is_better: bool) -> List[int]:
  """Dense ranks from 1 (best); equal values share a rank; non-finite values rank last."""
  def key(v):
    if v is None or not math.isfinite(v):
      return math.inf
    return -v if higher_is_better else v
  keys = [key(v) for v in values]
  order = {k: i + 1 for i, k in enumerate(sorted(set(keys)))}
  return [order[k] for k in keys]


def relative_range(values: Sequence[Optional[float]]) -> float:
  """(max − min) / mean(|v|) over the finite values (0 with fewer than two)."""
  v = [x for x in values if x is not None and math.isfinite(x)]
  if len(v) < 2:
    return 0.0
  scale = sum(abs(x) for x in v) / len(v)
  return (max(v) - min(v)) / scale if scale > 0 else 0.0


@dataclasses.dataclass
class Selection:
  index: int
  rank_length: List[int]
  rank_ntk: List[int]
  rank_sum: List[int]
  tied: List[int]
  tie_break: str  # '' without a tie, else the metric that decided ('length'/'ntk'/'order')


def authors_range(values: Sequence[Optional[float]]) -> float:
  """(max − min) / max over the finite values, as the authors' code measures a metric's
  range (0 with fewer than two, or a max <= 0)."""
  v = [x for x in values if x is not None and math.isfinite(x)]
  if len(v) < 2 or max(v) <= 0:
    return 0.0
  return (max(v) - min(v)) / max(v)


def select(lengths: Sequence[Optional[float]], ntks: Sequence[Optional[float]],
           tie_break: str = 'ours', order: Optional[Sequence] = None) -> Selection:
  """The candidate with the smallest rank sum (L^E descending, κ_Θ ascending), tie-broken
  as `tie_break` says (see the module docstring).

  `order`: per candidate, a sort key giving the authors' enumeration order (stage-major),
  used by `tie_break='authors'` to find their first two tied candidates (default: the
  given order).
  """
  if not lengths or len(lengths) != len(ntks):
    raise ValueError('select needs the same non-zero number of L^E and κ_Θ values')
  if tie_break not in TIE_BREAKS:
    raise ValueError(f'tie_break must be one of {TIE_BREAKS}, got {tie_break!r}')
  rl, rk = dense_ranks(lengths, True), dense_ranks(ntks, False)
  sums = [a + b for a, b in zip(rl, rk)]
  best = min(sums)
  tied = [i for i, s in enumerate(sums) if s == best]
  if len(tied) == 1:
    return Selection(tied[0], rl, rk, sums, tied, '')
  if tie_break == 'authors':
    return _authors_tie_break(lengths, ntks, rl, rk, sums, tied, order)
  by_metric = {'length': rl, 'ntk': rk}
  first = 'length' if relative_range(lengths) >= relative_range(ntks) else 'ntk'
  remaining = tied
  for metric in (first, 'ntk' if first == 'length' else 'length'):
    top = min(by_metric[metric][i] for i in remaining)
    narrowed = [i for i in remaining if by_metric[metric][i] == top]
    if len(narrowed) == 1:
      return Selection(narrowed[0], rl, rk, sums, tied, metric)
    remaining = narrowed
  return Selection(remaining[0], rl, rk, sums, tied, 'order')


def _authors_tie_break(lengths, ntks, rl, rk, sums, tied, order) -> Selection:
  """The authors' code: the metric with the larger (max − min) / max over all candidates
  (κ_Θ, their first reward type, on equal ranges); of the first two tied candidates in
  their enumeration order, the one with the SMALLER value of that metric (np.argmin: the
  first on equal values), even for L^E. A missing (non-finite) value never wins here."""
  keys = list(order) if order is not None else list(range(len(sums)))
  first_two = sorted(tied, key=lambda i: (keys[i], i))[:2]
  values = {'ntk': ntks, 'length': lengths}
  metric = 'ntk' if authors_range(ntks) >= authors_range(lengths) else 'length'

  def value(i):
    v = values[metric][i]
    return v if v is not None and math.isfinite(v) else math.inf
  a, b = first_two
  if value(a) == value(b):
    return Selection(a, rl, rk, sums, tied, 'order')
  return Selection(a if value(a) < value(b) else b, rl, rk, sums, tied, metric)


def authors_order(cands: Sequence[Candidate]) -> List[Tuple[int, int, int]]:
  """Per candidate, its sort key in the authors' enumeration order (`select`'s `order`):
  stage-major over their (depth) candidates, then the MLP candidates, stage-major too."""
  return [(CANDIDATE_KINDS.index(c.kind), c.stage, c.width) for c in cands]


@dataclasses.dataclass
class GrowResult:
  records: List[Dict]
  stop_reason: str
  output_dir: str

  @property
  def topologies(self) -> List[str]:
    return [r['arch'] for r in self.records]


def draw_noise(draws: Sequence[Optional[Sequence[float]]]) -> Optional[Dict]:
  """How far a step's draws resolve its candidates by one metric, from each candidate's
  per-draw values: the median over candidates of the standard error of its mean (the draws'
  sample s.d. / √n), the s.d. of the candidates' means, and their ratio. A ratio near 0: new
  draws keep the ranking; near or above 1: the ranking is mostly the draws'. None without
  two candidates of at least two finite draws each, or if the means are all equal."""
  finite = [[v for v in d if v is not None and math.isfinite(v)] for d in draws if d]
  finite = [d for d in finite if len(d) >= 2]
  if len(finite) < 2:
    return None
  se = statistics.median(statistics.stdev(d) / math.sqrt(len(d)) for d in finite)
  spread = statistics.stdev(statistics.fmean(d) for d in finite)
  if spread == 0:
    return None
  return {'se': se, 'spread': spread, 'ratio': se / spread}


def step_noise(results: Sequence[Dict]) -> Optional[Dict]:
  """A step's `draw_noise` per metric ('length', 'ntk') from its candidates' per-draw values
  ('length_values', 'ntk_values'); None when neither metric has one (one repeat, or
  measurements that carry no draws)."""
  noise = {m: draw_noise([r.get(f'{m}_values') for r in results]) for m in ('length', 'ntk')}
  return noise if any(noise.values()) else None


def _model_record(step, proxy: arch_lib.Topology, metrics: Dict, config) -> Dict:
  """The record of an accepted model (`proxy`: at proxy width)."""
  h, real = proxy.width, proxy.replace(width=WIDTH_FACTOR * proxy.width)
  record = {'step': step, 'arch': str(real), 'proxy_arch': str(proxy),
            'proxy_width': h, 'width': real.width, 'depths': list(real.depths),
            'params': size.estimate_params(real, num_classes=config.num_classes),
            'macs': size.count_macs(real, COST_IMAGE_SIZE, config.num_classes),
            'length': metrics['length'], 'ntk': metrics['ntk'], 'bad': metrics['bad']}
  if _records_kinds(config):
    record['expansions'] = list(real.expansions)
  return record


def _records_kinds(config) -> bool:
  """Whether the records name each choice's kind: only with other than the default kinds, so
  that a default run writes the records it always wrote."""
  return tuple(config.candidate_kinds) != GrowConfig.candidate_kinds


def _kind_fields(c: Candidate, base: arch_lib.Topology) -> Dict:
  """'kind', and for an MLP candidate 'expansion': [E_i before, after]."""
  if c.kind != 'mlp':
    return {'kind': c.kind}
  return {'kind': c.kind, 'expansion': [base.expansions[c.stage], c.expansions[c.stage]]}


def _candidate_records(base, kept, results, sel: Selection, kinds: bool) -> List[Dict]:
  out = []
  for i, (c, r) in enumerate(zip(kept, results)):
    record = {'arch': str(c.real(base)), 'stage': c.stage + 1, 'percent': c.percent,
              'length': r['length'], 'ntk': r['ntk'], 'bad': r['bad'],
              'rank_length': sel.rank_length[i], 'rank_ntk': sel.rank_ntk[i],
              'rank_sum': sel.rank_sum[i]}
    for name in ('length_values', 'ntk_values'):
      if r.get(name) is not None:
        record[name] = r[name]
    out.append({**record, **_kind_fields(c, base)} if kinds else record)
  return out


def family_table(records: Sequence[Dict]) -> str:
  """Markdown table of the scaling series."""
  return family.series_table(records)


class GrowStrategy(run_lib.OpenEndedStrategy):
  """The scaling (a `run.Strategy`): step 0 measures the start, each further step proposes
  the candidates under `max_params` and accepts the one `select` picks.

  The state keeps the measurements of the current step under 'pending' (by `Candidate.key`;
  'start' at step 0) until the step is concluded, so a resumed step measures only the rest.
  """
  kind, log_file, unit, scalars = KIND, LOG_FILE, 'measurement', ()

  def __init__(self, config: GrowConfig):
    self.config = config
    self.seed = arch_lib.as_topology(config.arch)
    self.state: Dict = {}
    self._step: Optional[Dict] = None  # the candidates of the current step

  def fresh_state(self) -> Dict:
    return {'kind': KIND, 'config': dataclasses.asdict(self.config), 'step': 0,
            'done': False, 'stop_reason': '', 'width': self.config.start_width,
            'depths': [1, 1, 1, 1], 'pending': {}, 'records': []}

  def status(self) -> str:
    if not self.state['records']:
      return ''
    r = self.state['records'][-1]
    return f'step {r["step"]}: {r["arch"]}  {r["params"] / 1e6:.2f} M params'

  def _base(self) -> arch_lib.Topology:
    """The seed with the current model's MLP expansions (which 'mlp' steps grow)."""
    records = self.state['records']
    if not records:
      return self.seed
    return self.seed.replace(expansions=arch_lib.Topology.parse(records[-1]['arch']).expansions)

  def _candidates(self, base: arch_lib.Topology) -> List[Candidate]:
    h, depths = self.state['width'], self.state['depths']
    return candidates(h, depths, kinds=self.config.candidate_kinds,
                      expansions=base.expansions)

  def propose(self) -> Optional[run_lib.Proposal]:
    step, h, depths = self.state['step'], self.state['width'], self.state['depths']
    seed, pending = seeding.seed(self.config.seed, step), self.state['pending']
    self._step = {'start': time.time()}
    if step == 0:
      start = self.seed.replace(depths=tuple(depths), width=h)
      keys = [] if 'start' in pending else ['start']
      return run_lib.Proposal(keys, [(start, seed)] * len(keys), 1 - len(keys),
                              f'start {self.seed.replace(width=WIDTH_FACTOR * h)}')
    config, base = self.config, self._base()
    kept, dropped = filter_by_params(self._candidates(base), base, config.max_params,
                                     config.num_classes)
    kept, over_macs = filter_by_macs(kept, base, config.max_macs, config.num_classes)
    dropped = dropped + over_macs
    if not kept:
      ceilings = f'max_params {config.max_params}'
      if config.max_macs:
        ceilings += f' and max_macs {config.max_macs}'
      reason = f'no candidate under {ceilings} ({len(dropped)} dropped)'
      if not dropped:
        reason = f'no candidate left (every MLP expansion at {MAX_EXPANSION})'
      self.state.update(done=True, stop_reason=reason)
      self._mark_budgets()
      return None
    self._step.update(kept=kept, dropped=dropped)
    todo = [c for c in kept if c.key not in pending]
    return run_lib.Proposal([c.key for c in todo], [(c.proxy(base), seed) for c in todo],
                            len(kept) - len(todo),
                            f'step {step}: {len(todo)} of {len(kept)} candidates')

  def take(self, key: str, measurement: measure_lib.Measurement):
    m = measurement.cleaned()
    self.state['pending'][key] = {'length': m.length, 'ntk': m.ntk, 'bad': m.bad,
                                  'length_values': m.length_values,
                                  'ntk_values': m.ntk_values}

  def _accept(self) -> Dict:
    """The record of the current step's accepted model."""
    step, h, depths = self.state['step'], self.state['width'], self.state['depths']
    pending, config, base = self.state['pending'], self.config, self._base()
    if step == 0:
      start = base.replace(depths=tuple(depths), width=h)
      record = _model_record(0, start, pending['start'], config)
      record.update(choice=None, candidates=[])
      return record
    kept, kinds = self._step['kept'], _records_kinds(config)
    results = [pending[c.key] for c in kept]
    sel = select([r['length'] for r in results], [r['ntk'] for r in results],
                 config.tie_break, order=authors_order(kept))
    chosen = kept[sel.index]
    record = _model_record(step, chosen.proxy(base), results[sel.index], config)
    choice = {'stage': chosen.stage + 1, 'percent': chosen.percent,
              'rank_sum': sel.rank_sum[sel.index], 'tied': len(sel.tied),
              'tie_break': sel.tie_break}
    record.update(choice={**choice, **_kind_fields(chosen, base)} if kinds else choice,
                  candidates=_candidate_records(base, kept, results, sel, kinds),
                  dropped=len(self._step['dropped']))
    noise = step_noise(results)
    if noise:
      record['noise'] = noise
    return record

  def conclude(self) -> Dict:
    record = self._accept()
    record['seconds'] = round(time.time() - self._step['start'], 3)
    step, config = record['step'], self.config
    self.state['records'].append(record)
    self.state.update(step=step + 1, width=record['proxy_width'], depths=record['depths'],
                      pending={})
    if config.budgets:
      reached = record[config.budget_metric] >= config.budgets[-1]
    else:
      reached = record['params'] >= config.target_params
    if reached:
      self.state.update(done=True, stop_reason=f'reached {config.end_rule}')
    elif config.max_steps and step >= config.max_steps:
      self.state.update(done=True, stop_reason=f'reached max_steps {config.max_steps}')
    self._mark_budgets()
    logging.info('grow step %d: %s (%.2f M params)', step, record['arch'],
                 record['params'] / 1e6)
    return record

  def _mark_budgets(self):
    """Each record's 'budget': the budgets whose nearest member it is (`budget_marks`; a
    budget the series has not reached yet is placed when the run ends)."""
    config, records = self.config, self.state['records']
    if not config.budgets:
      return
    marks = budget_marks([r[config.budget_metric] for r in records], config.budgets,
                         final=self.state['done'])
    for i, r in enumerate(records):
      r['budget'] = marks.get(i, [])

  def write_outputs(self, output_dir: str, final: bool):
    """family.md and scaling.png; at the end family.txt (one topology a line)."""
    config, records = self.config, self.state['records']
    title = (f'Proxy-width metrics at {config.image_size}x{config.image_size}, '
             f'{config.repeats} repeats, seed {config.seed}; params and MACs of the real '
             f'width at {COST_IMAGE_SIZE}x{COST_IMAGE_SIZE}, {config.num_classes} classes.')
    if _records_kinds(config):
      title += (f' Candidate kinds: {", ".join(config.candidate_kinds)} (an MLP candidate '
                f'raises one stage\'s expansion E by 1, up to {MAX_EXPANSION}).')
    if any(r.get('noise') for r in records):
      title += (' Noise: per metric, the median standard error of a candidate\'s mean over '
                'the repeats / the s.d. of the candidates\' means; near or above 1, the '
                'draws decided that ranking more than the candidates did.')
    if final:
      title += f'\n\nStopped: {self.state["stop_reason"]}.'
    text = f'# Scaling series of {config.arch}\n\n{title}\n\n'
    if config.budgets:
      marks = {r['step']: ', '.join('≈ ' + amounts.format_budget(config.budget_metric, b)
                                     for b in r['budget'])
               for r in records if r.get('budget')}
      text += family.series_table(records, marks) + '\n\n## Budgets\n\n'
      text += family.budget_table(records, config.budget_metric, config.budgets) + '\n'
    else:
      text += family_table(records) + '\n'
    state_lib.atomic_write(os.path.join(output_dir, TABLE_FILE), text)
    if records:
      plots.plot_scaling(records, os.path.join(output_dir, PLOT_FILE), config.target_params,
                         f'grow {config.arch}', budget_metric=config.budget_metric,
                         budgets=config.budgets)
    if final:
      state_lib.atomic_write(os.path.join(output_dir, RESULT_FILE),
                             ''.join(r['arch'] + '\n' for r in records))


def run_grow(config: GrowConfig, output_dir: str,
             measure: Optional[measure_lib.MeasureFn] = None, progress: bool = True,
             on_measure: Optional[Callable[[measure_lib.Measurement], None]] = None,
             workers: int = 1,
             evaluator: Optional[measure_lib.Evaluator] = None) -> GrowResult:
  """Runs (or resumes, or reports a finished) scaling run in `output_dir` (`run.drive`).

  Args:
    config: the run's configuration; a saved run with another one is refused.
    measure: (topology, seed) -> Measurement with 'length', 'ntk' and 'bad', run in this
      process; default: `make_measure`.
    on_measure: called after each saved candidate measurement (tests use it to stop).
    workers: processes that measure a step's candidates side by side (default measure only;
      the result does not depend on it, but for floating-point rounding).
    evaluator: measures instead of `measure` (the caller closes it).

  Returns the series of accepted models (step 0 is the start) and why it stopped.
  """
  config.validate()

  def make_evaluator() -> measure_lib.Evaluator:
    if evaluator is not None:
      return evaluator
    if measure is not None:
      return measure_lib.SerialEvaluator(measure)
    return run_lib.default_evaluator(('length', 'ntk'), config, workers)

  strategy = GrowStrategy(config)
  output_dir, state = run_lib.drive(
      strategy, config, output_dir, make_evaluator, owned=evaluator is None,
      progress=progress, tensorboard=False, plot_every=1,
      hooks=run_lib.Hooks(on_measure=on_measure))
  return GrowResult(state['records'], state['stop_reason'], output_dir)
