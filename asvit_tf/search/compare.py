"""Seed searches compared at an equal number of measurements (issue 21, docs/design.md §8a).

REINFORCE's reward is a relative change against its own history and evolution's fitness a
rank sum over its own archive: neither number means anything outside its run. What does is
the measurement: at one `seed` and one measuring setting a topology is measured identically
by every strategy (common random numbers, §8a), so the runs' measurements can be pooled.

For each run (a directory of `asvit search`, either strategy) this reads its distinct
measured topologies in the order they were measured (REINFORCE: the sample records in step
order, a re-sampled topology counted once, i.e. those with `cached` false; evolution: the
children of each generation, those reused from the archive left out), cuts each run to its
first M (equal cost), pools the cut runs into their union and ranks the union by As-ViT's
rank combination (`evolution.rank`: dense rank of L^E descending + dense rank of κ_Θ
ascending, a bad network's κ_Θ last; ties by L^E's rank, then the earlier measurement). Per
run it reports the best topology found within M and its union rank, how many of the union's
top 10 and top 1 % it found, the topology it returned (`seed.txt`) and its union rank, and
the best union rank found so far after each measurement (the curve of `PLOT`).

`train_results` optionally trains each run's result under `asvit correlate --train`'s budget
(`correlate.train.train_all`, resumable) for held-out accuracy.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from asvit_tf import arch as arch_lib
from asvit_tf.errors import UserInputError
from asvit_tf.models import size
from asvit_tf.search import evolution
from asvit_tf.search import family
from asvit_tf.search import plots
from asvit_tf.search import reinforce
from asvit_tf.search import state as state_lib

RANKED_BY = 'length_ntk'  # the metrics of the union ranking (`reward.REWARDS`)
# The settings a measurement depends on: runs compared must agree on all of them.
MEASURE_FIELDS = ('seed', 'image_size', 'repeats', 'width', 'data', 'data_dir', 'batch_size',
                  'share_embedding')
TOP = 10  # "how many of the union's top 10 did a run find"
TOP_FRACTION = 0.01  # ... and of its top 1 % (at least one topology)
MACS_IMAGE = evolution.SIZE_IMAGE  # MACs at 224×224, 1000 classes, as evolution's ceilings
CHECKPOINTS = (1, 2, 5, 10, 20, 50, 100, 200, 300, 500)  # rows of the curve's table
METRICS = ('length', 'ntk', 'params', 'macs', 'bad')


@dataclasses.dataclass
class SearchRun:
  """One search directory: its configuration and its distinct measured topologies."""
  path: str  # as given
  strategy: str  # 'reinforce' or 'evolution'
  config: Dict
  measured: List[Dict]  # {'topology': seed string, **METRICS}, in the order measured
  result: Optional[str]  # the seed string of seed.txt; None while the run is unfinished
  done: bool

  @property
  def seed(self) -> int:
    return self.config.get('seed', 0)


def _count(topology: str, width: int) -> Tuple[int, int]:
  """(params, MACs at 224×224) of a seed topology as the searches measure it."""
  topo = arch_lib.Topology.parse(topology).replace(width=width)
  return size.estimate_params(topo), size.count_macs(topo, MACS_IMAGE)


def measured_in_order(records: Sequence[Dict], strategy: str, width: int) -> List[Dict]:
  """The distinct topologies of a run's records in the order they were measured, each with
  L^E, κ_Θ, bad and its params and MACs (counted at `width`, MACs at 224×224: REINFORCE's
  records have no MACs). A topology's first appearance is its measurement: what a run meets
  again (REINFORCE's `cached` samples, evolution's reused parents) is not counted again."""
  rows = ([c for r in records for c in r.get('children', [])]
          if strategy == evolution.STRATEGY else records)
  out, seen = [], set()
  for row in rows:
    topology = row['topology']
    if topology in seen:
      continue
    seen.add(topology)
    params, macs = _count(topology, width)
    out.append({'topology': topology, 'length': row.get('length'), 'ntk': row.get('ntk'),
                'params': params, 'macs': macs, 'bad': bool(row.get('bad'))})
  return out


def _read_result(path: str) -> Optional[str]:
  """The seed a finished run wrote (its seed.txt, as every command reads it), else None."""
  if not os.path.isfile(os.path.join(path, arch_lib.SEED_FILE)):
    return None
  return arch_lib.resolve(path, '`runs`').seed_string


def load_run(path: str) -> SearchRun:
  """The search run in directory `path` (finished or not); one line if it is not one."""
  if not os.path.isdir(path):
    raise UserInputError(f'`runs` {path} is not a directory (give output directories of '
                         '`asvit search`)')
  state = state_lib.read_state(path, reinforce.KIND)
  if state is None:
    raise UserInputError(f'`runs` {path} is not a search run: it has no '
                         f'{state_lib.state_file(reinforce.KIND)} (an `asvit search '
                         '--output_dir` has)')
  config = dict(state.get('config', {}))
  strategy = config.get('strategy', 'reinforce')
  reward = config.get('fitness' if strategy == evolution.STRATEGY else 'reward', RANKED_BY)
  if reward != RANKED_BY:
    raise UserInputError(f'`runs` {path} searched by reward {reward!r}, so it did not measure '
                         f'both L^E and κ_Θ; the comparison ranks by both ({RANKED_BY!r})')
  measured = measured_in_order(state.get('records', []), strategy,
                               config.get('width', arch_lib.DEFAULT_WIDTH))
  if not measured:
    raise UserInputError(f'`runs` {path} has measured nothing yet')
  return SearchRun(os.path.normpath(path), strategy, config, measured, _read_result(path),
                   bool(state.get('done')))


def _measuring(config: Dict) -> Dict:
  """The measuring settings of a saved config (a setting added later at its default)."""
  defaults = dataclasses.asdict(reinforce.SearchConfig())
  return {k: config.get(k, defaults[k]) for k in MEASURE_FIELDS}


def check_comparable(runs: Sequence[SearchRun]):
  """One line unless there are two or more distinct runs that measure alike."""
  if len(runs) < 2:
    raise UserInputError(f'`runs` needs at least two search directories, got {len(runs)}')
  real = [os.path.realpath(r.path) for r in runs]
  for run, path in zip(runs, real):
    if real.count(path) > 1:
      raise UserInputError(f'`runs` names {run.path} twice')
  first = _measuring(runs[0].config)
  for run in runs[1:]:
    other = _measuring(run.config)
    diffs = [f'{k}={first[k]!r} there, {other[k]!r} here' for k in MEASURE_FIELDS
             if first[k] != other[k]]
    if diffs:
      raise UserInputError(f'`runs` {run.path} measures unlike {runs[0].path} '
                           f'({"; ".join(diffs)}): compared runs need one seed and one '
                           'measuring setting, so that a topology both measured is measured '
                           'identically')


def equal_cost(runs: Sequence[SearchRun], measurements: Optional[int] = None) -> int:
  """M: `measurements`, or the fewest any run has; one line if a run has fewer than M."""
  fewest = min(len(r.measured) for r in runs)
  if measurements is None:
    return fewest
  if measurements < 1:
    raise UserInputError(f'`measurements` must be >= 1, got {measurements}')
  for run in runs:
    if len(run.measured) < measurements:
      raise UserInputError(f'`measurements` {measurements} exceeds the {len(run.measured)} '
                           f'distinct topologies {run.path} measured (at most {fewest} for '
                           'these runs)')
  return measurements


def labels(runs: Sequence[SearchRun]) -> List[str]:
  """A name per run: its strategy, with its directory if another run has that strategy."""
  strategies = [r.strategy for r in runs]
  return [r.strategy if strategies.count(r.strategy) == 1 else f'{r.strategy} ({r.path})'
          for r in runs]


def _relative(a: Optional[float], b: Optional[float]) -> float:
  if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
    return 0.0 if (a is None) == (b is None) else math.inf
  return abs(a - b) / max(abs(a), abs(b), 1e-300)


def pool(cuts: Sequence[Sequence[Dict]]) -> Tuple[List[Dict], float]:
  """(the union of the cut runs, each topology once with its metrics and its 'found'
  positions per run (1-based measurement, None if that run did not meet it within M),
  ordered by the earliest measurement, then the run; the largest relative difference of L^E
  or κ_Θ between two runs' measurements of one topology: 0 under common random numbers,
  float rounding across processes)."""
  union: Dict[str, Dict] = {}
  mismatch = 0.0
  for position in range(max(len(c) for c in cuts)):
    for j, cut in enumerate(cuts):
      if position >= len(cut):
        continue
      row = cut[position]
      entry = union.setdefault(row['topology'], {**row, 'found': [None] * len(cuts)})
      entry['found'][j] = position + 1
      for metric in ('length', 'ntk'):
        mismatch = max(mismatch, _relative(entry[metric], row[metric]))
  return list(union.values()), mismatch


def rank_union(union: Sequence[Dict]) -> List[int]:
  """Each union topology's rank, 1 the best: As-ViT's rank combination (`evolution.rank`)."""
  return [r['place'] + 1 for r in evolution.rank(union, RANKED_BY)]


def top_count(n: int) -> int:
  """How many topologies make the top 1 % of a union of `n` (at least one)."""
  return max(1, math.ceil(TOP_FRACTION * n))


def best_so_far(ranks: Sequence[int]) -> List[int]:
  """After each measurement, the best (smallest) union rank a run has found."""
  return list(itertools.accumulate(ranks, min))


def _entry(row: Dict, rank: Optional[int]) -> Dict:
  return {'topology': row['topology'], 'rank': rank, **{m: row[m] for m in METRICS}}


def summarize(run: SearchRun, cut: Sequence[Dict], rank_of: Dict[str, int],
              by_topology: Dict[str, Dict], n_union: int) -> Dict:
  """A run's part of the comparison (see the module's docstring)."""
  ranks = [rank_of[row['topology']] for row in cut]
  curve = best_so_far(ranks)
  found_at = ranks.index(curve[-1])
  top = top_count(n_union)
  order = [row['topology'] for row in run.measured]
  result = None
  if run.result is not None:
    # Never measured (a REINFORCE argmax may not be): its size is still counted.
    row = by_topology.get(run.result) or dict(zip(('params', 'macs'), _count(
        run.result, run.config.get('width', arch_lib.DEFAULT_WIDTH))))
    result = {'topology': run.result, 'rank': rank_of.get(run.result),
              'measured_at': order.index(run.result) + 1 if run.result in order else None,
              **{m: row.get(m) for m in METRICS}}
  return {'path': run.path, 'strategy': run.strategy, 'seed': run.seed, 'done': run.done,
          'measured': len(run.measured),
          'best': {**_entry(cut[found_at], curve[-1]), 'found_at': found_at + 1},
          f'top{TOP}': sum(r <= TOP for r in ranks), 'top_fraction': sum(r <= top for r in ranks),
          'result': result, 'curve': curve}


def compare(runs: Sequence[SearchRun], measurements: Optional[int] = None) -> Dict:
  """The comparison of `runs` (loaded by `load_run`) at M = `measurements` each (default:
  the fewest any run measured): {'measurements': M, 'settings', 'labels', 'union' (every
  topology with its metrics, rank and found positions, best first), 'top_fraction_size',
  'mismatch', 'runs' (one `summarize` dict each)}."""
  check_comparable(runs)
  m = equal_cost(runs, measurements)
  cuts = [r.measured[:m] for r in runs]
  union, mismatch = pool(cuts)
  ranks = rank_union(union)
  rank_of = {e['topology']: r for e, r in zip(union, ranks)}
  by_topology = {e['topology']: e for e in union}
  for run in runs:  # a result measured after M (or by a run only) still has its metrics
    for row in run.measured:
      by_topology.setdefault(row['topology'], row)
  ranked = sorted(({**_entry(e, r), 'found': e['found']} for e, r in zip(union, ranks)),
                  key=lambda e: e['rank'])
  return {'measurements': m, 'settings': _measuring(runs[0].config), 'labels': labels(runs),
          'ranked_by': RANKED_BY, 'union': ranked, 'top_fraction_size': top_count(len(union)),
          'mismatch': mismatch,
          'runs': [summarize(r, c, rank_of, by_topology, len(union))
                   for r, c in zip(runs, cuts)]}


def train_results(report: Dict, budget, seeds: Sequence[int], train_dir: str,
                  progress: bool = True, train_network: Optional[Callable] = None) -> Dict:
  """Trains each run's result (seed.txt; a run without one is skipped) under `budget` (a
  `correlate.train.TrainSettings`) once per training seed in `seeds`, in
  `train_dir`/seed<S> (resumable: `train.train_all`), and adds to each run's 'result'
  'accuracy' (one per seed) and 'mean_accuracy'; adds 'training' (the budget) to `report`.
  `train_network` replaces `train.train_network` (tests)."""
  from asvit_tf.correlate import train  # pylint: disable=g-import-not-at-top
  from asvit_tf.search import lock  # pylint: disable=g-import-not-at-top
  results = [r['result'] for r in report['runs'] if r['result'] is not None]
  if not results:
    raise UserInputError('`train`: no run has a result (seed.txt) yet; train after they end')
  topologies = list({t: arch_lib.Topology.parse(t)
                     for t in (r['topology'] for r in results)}.values())
  os.makedirs(train_dir, exist_ok=True)
  accuracy: Dict[str, List[float]] = {t.seed_string: [] for t in topologies}
  with lock.RunLock(train_dir):
    for seed in seeds:
      settings = dataclasses.replace(budget, seed=seed)
      trained = train.train_all(topologies, settings, os.path.join(train_dir, f'seed{seed}'),
                                progress, train=train_network or train.train_network)
      for key, record in trained.items():
        accuracy[key].append(record['accuracy'])
  for result in results:
    result['accuracy'] = accuracy[result['topology']]
    result['mean_accuracy'] = sum(result['accuracy']) / len(result['accuracy'])
  report['training'] = {**budget.to_dict(), 'seeds': list(seeds), 'dir': train_dir}
  return report


# ---- the report -------------------------------------------------------------------------
def _metric_cells(entry: Dict) -> List[str]:
  ntk = 'bad' if entry.get('bad') else family.fmt(entry.get('ntk'), '.4g')
  return [family.fmt(entry.get('length'), '.4g'), ntk, family.fmt(entry.get('params'), ','),
          family.fmt(entry.get('macs'), ',')]


def _runs_lines(report: Dict) -> List[str]:
  header = ('run', 'directory', 'seed', 'distinct measured', 'finished', 'result (seed.txt)')
  rows = [(label, r['path'], r['seed'], r['measured'], 'yes' if r['done'] else 'no',
           r['result']['topology'] if r['result'] else '– (not finished)')
          for label, r in zip(report['labels'], report['runs'])]
  s = report['settings']
  return [family.markdown_table(header, rows), '',
          f'Measured alike: seed {s["seed"]}, C={s["width"]}, depths 1,1,1,1, '
          f'{s["image_size"]}×{s["image_size"]}, {s["repeats"]} repeat{"s" * (s["repeats"] != 1)}, '
          f'κ_Θ batch '
          f'{s["batch_size"]} of {s["data"] or "Gaussian noise"}'
          f'{", shared embedding" if s["share_embedding"] else ""}: a topology two runs met '
          'has one measurement (common random numbers; largest relative difference between '
          f'two runs\' L^E or κ_Θ of one topology: {report["mismatch"]:.2g}).']


def _best_lines(report: Dict) -> List[str]:
  m, n, k = report['measurements'], len(report['union']), report['top_fraction_size']
  header = ('run', f'best within {m}', 'union rank', 'found at', 'L^E', 'κ_Θ', 'params',
            'MACs', f'of the top {TOP}', f'of the top 1 % ({k})')
  rows = [(label, r['best']['topology'], r['best']['rank'], r['best']['found_at'],
           *_metric_cells(r['best']), r[f'top{TOP}'], r['top_fraction'])
          for label, r in zip(report['labels'], report['runs'])]
  return [f'## The best each found within its first {m} measurements', '',
          f'The union of the runs\' first {m} distinct measurements holds {n} topologies, '
          'ranked by As-ViT\'s rank combination (dense rank of L^E, descending, + dense rank '
          'of κ_Θ, ascending; a bad network\'s κ_Θ last; ties: the rank of L^E, then the '
          'earlier measurement); rank 1 is the best. Params and MACs: C as measured, 1000 '
          'classes, MACs at 224×224.', '', family.markdown_table(header, rows)]


def _result_lines(report: Dict) -> List[str]:
  trained = 'training' in report
  header = ('run', 'result (seed.txt)', 'union rank', 'measured by the run at', 'L^E', 'κ_Θ',
            'params', 'MACs') + (('held-out accuracy',) if trained else ())
  rows = []
  for label, r in zip(report['labels'], report['runs']):
    res = r['result']
    if res is None:
      rows.append((label, '– (not finished)') + ('',) * (len(header) - 2))
      continue
    accuracy = (', '.join(f'{a:.3f}' for a in res['accuracy']),) if trained else ()
    rows.append((label, res['topology'], family.fmt(res['rank'], 'd'),
                 family.fmt(res['measured_at'], 'd'), *_metric_cells(res), *accuracy))
  lines = ['## What each run returned', '',
           'The union rank is "–" for a result outside the union (never measured, as a '
           'REINFORCE argmax may be, or measured after the cut); L^E and κ_Θ are "–" for a '
           'result no run measured.', '',
           family.markdown_table(header, rows)]
  if trained:
    t = report['training']
    lines += ['', f'Held-out top-1 accuracy on the MNIST-5k digits under `asvit correlate '
              f'--train`\'s budget: C={t["train_width"]}, depths 1,1,1,1, merge {t["merge"]}, '
              f'{t["train_steps"]} steps of {t["train_batch_size"]} at '
              f'{t["train_image_size"]} px, AdamW peak {t["train_learning_rate"]:g} '
              f'({t["train_warmup_steps"]} warm-up steps, cosine to 0), one value per '
              f'training seed {", ".join(map(str, t["seeds"]))}.']
  return lines


def _curve_lines(report: Dict, plot_file: str) -> List[str]:
  m = report['measurements']
  marks = [c for c in CHECKPOINTS if c < m] + [m]
  header = ('measurements',) + tuple(report['labels'])
  rows = [(c, *(r['curve'][c - 1] for r in report['runs'])) for c in marks]
  return ['## Best union rank reached vs measurements', '',
          'The best (smallest) union rank a run had found after so many distinct '
          'measurements: the "best reward reached" at equal cost.', '',
          f'![best rank so far]({plot_file})', '', family.markdown_table(header, rows)]


def markdown(report: Dict, command: str, plot_file: str) -> str:
  """The report as Markdown (`command` is quoted at the top)."""
  lines = [f'# Seed searches compared at {report["measurements"]} measurements each', '',
           f'Made by `{command}`.', '', *_runs_lines(report), '', *_best_lines(report), '',
           *_result_lines(report), '', *_curve_lines(report, plot_file)]
  return '\n'.join(lines) + '\n'


def output_paths(out: str) -> Tuple[str, str, str]:
  """(Markdown, JSON, PNG) paths of `out` (a .md file; the others beside it)."""
  if not out.endswith('.md'):
    raise UserInputError(f'`out` must name a .md file (the JSON and the PNG go beside it), '
                         f'got {out!r}')
  stem = out[:-len('.md')]
  return out, stem + '.json', stem + '.png'


def write(report: Dict, out: str, command: str) -> str:
  """Writes `out` (Markdown), its .json and .png beside it; returns the Markdown."""
  md_path, json_path, png_path = output_paths(out)
  directory = os.path.dirname(os.path.abspath(md_path))
  os.makedirs(directory, exist_ok=True)
  report = {**report, 'command': command}
  plots.plot_best_so_far(dict(zip(report['labels'], (r['curve'] for r in report['runs']))),
                         len(report['union']), png_path,
                         f'best union rank vs measurements (seed {report["settings"]["seed"]})')
  text = markdown(report, command, os.path.basename(png_path))
  state_lib.atomic_write(json_path, state_lib.dumps(report) + '\n')
  state_lib.atomic_write(md_path, text)
  return text
