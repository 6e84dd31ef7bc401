"""Re-ranking chosen steps of a grow run under another setting: does a cheaper setting rank
the candidates as the recorded one did? (issue 16, docs/scaling_study.md)

A grow record holds, per step, every candidate it measured and their L^E and κ_Θ. This module
takes such a run and a list of its steps and, for exactly those steps' candidates (the same
topologies at the same proxy width), either

- re-selects from the recorded metrics under another `tie_break` (no measuring), or
- re-measures them with another κ_Θ batch (`data`, e.g. 'photos'), `repeats`, `seed`,
  `share_embedding` or measuring resolution `image_size` (or, with `remeasure`, the recorded
  setting) and re-selects,

then compares per step the recorded choice with the re-ranked one, and the two rankings by
Kendall-τ (τ-b): of the rank sums, of L^E and of κ_Θ (each as dense ranks, a non-finite value
last, as `grow.select` ranks them).

Each step's candidates are measured with the seed the grow derives from (seed, step), so the
recorded setting reproduces the recorded metrics (to float rounding). Only L^E and κ_Θ are
re-measured: a candidate's parameters and MACs stay the records' (its real width at 224×224,
as the grow and the family count them), whatever `image_size`. The comparison is per
step along the recorded path: a changed choice would have changed every later step's
candidates, which this does not follow.

The output directory (one run at a time, `lock.RunLock`) holds `measures.jsonl`, one line per
measured candidate appended with fsync (a rerun skips what is there, so a killed run resumes),
`rescore_state.json` (the measuring settings: a rerun with others is refused) and the report:
`rescore.json`, `rescore.md` and `rescore.png`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

from tqdm.auto import tqdm

from asvit_tf import arch as arch_lib
from asvit_tf import seeding
from asvit_tf import validation
from asvit_tf.correlate import stats
from asvit_tf.errors import UserInputError
from asvit_tf.models import memory
from asvit_tf.search import family
from asvit_tf.search import grow
from asvit_tf.search import lock as lock_lib
from asvit_tf.search import measure as measure_lib
from asvit_tf.search import plots
from asvit_tf.search import run as run_lib
from asvit_tf.search import state as state_lib

KIND = 'rescore'
MEASURES_FILE = 'measures.jsonl'
REPORT_JSON = 'rescore.json'
REPORT_MD = 'rescore.md'
PLOT_FILE = 'rescore.png'
GROW_STATE = state_lib.state_file('grow')  # the grow's own saved state
# The grow settings a measurement depends on (the rest only steer the grow's path).
MEASURE_FIELDS = ('image_size', 'repeats', 'seed', 'data', 'data_dir', 'batch_size',
                  'share_embedding')
TAUS = ('rank_sum', 'length', 'ntk')  # the rankings compared per step


@dataclasses.dataclass(frozen=True)
class Changes:
  """What differs from the grow's recorded setting (None: as recorded)."""
  data: Optional[str] = None  # the κ_Θ batch: '' Gaussian noise, 'photos', a folder, TFDS
  data_dir: Optional[str] = None
  image_size: Optional[int] = None  # the side L^E and κ_Θ are measured at
  repeats: Optional[int] = None
  seed: Optional[int] = None
  share_embedding: Optional[bool] = None
  tie_break: Optional[str] = None
  remeasure: bool = False  # measure even when no measuring setting changes

  def measuring(self) -> Dict:
    """The changed settings a measurement depends on."""
    return {k: v for k, v in dataclasses.asdict(self).items()
            if v is not None and k in MEASURE_FIELDS}


@dataclasses.dataclass
class GrowRun:
  """A grow run's records and, if its grow_state.json is there, its configuration."""
  path: str
  records: List[Dict]
  config: Optional[grow.GrowConfig]


def load_grow(path: str, settings: str = '') -> GrowRun:
  """The grow run in `path` (its directory, or its grow.jsonl with grow_state.json beside it;
  without that file the recorded setting is unknown and only the tie-break can be changed).

  `settings`: for records without their grow_state.json (a grow.jsonl kept apart from its run,
  as the docs keep them), a JSON file of the setting they were grown with: a grow_state.json,
  or its 'config' alone."""
  records = family.read_records(path)
  if not any(r.get('candidates') for r in records):
    raise UserInputError(f'`grow_dir` {path} holds no grow step with candidates (a grow record '
                         'of step >= 1 lists them)')
  directory = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
  state = state_lib.read_state(directory, 'grow')
  if state is not None and settings:
    raise UserInputError(f'`grow_settings`: {path} has its own {GROW_STATE}; leave '
                         '`grow_settings` out')
  if state is None and not settings:
    return GrowRun(path, records, None)
  saved = _read_settings(settings) if settings else state.get('config', {})
  fields = {f.name for f in dataclasses.fields(grow.GrowConfig)}
  values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in fields}
  return GrowRun(path, records, grow.GrowConfig(**values))


def _read_settings(path: str) -> Dict:
  """The grow config in a grow_state.json or a bare config; one line if it is neither."""
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise UserInputError(f'`grow_settings` {path}: cannot read it ({e})') from None
  if isinstance(saved, dict) and isinstance(saved.get('config'), dict):
    saved = saved['config']
  if not isinstance(saved, dict) or 'arch' not in saved:
    raise UserInputError(f'`grow_settings` {path}: not a grow setting (a grow_state.json, or '
                         'its "config" with at least "arch")')
  return saved


def parse_steps(text: str) -> List[int]:
  """'3,5,8' or '1-4,7' → ascending distinct step numbers; a one-line error otherwise."""
  steps = set()
  for part in (p.strip() for p in text.split(',')):
    first, dash, last = part.partition('-')
    try:
      lo, hi = int(first), int(last if dash else first)
    except ValueError:
      raise UserInputError(f'`steps` {text.strip()!r}: must be step numbers or ranges, '
                           'e.g. 1,2,5 or 1-4') from None
    if lo > hi:
      raise UserInputError(f'`steps` {text.strip()!r}: range {part} runs backwards')
    steps.update(range(lo, hi + 1))
  return sorted(steps)


def check_steps(run: GrowRun, steps: Sequence[int]) -> List[Dict]:
  """The records of `steps` (each a step of the run with candidates), in the given order."""
  if not steps:
    raise UserInputError('`steps` is empty: give the grow steps to re-rank, e.g. 1,2,5')
  by_step = {r['step']: r for r in run.records if r.get('candidates')}
  missing = [s for s in steps if s not in by_step]
  if missing:
    have = sorted(by_step)
    raise UserInputError(f'`steps` {missing[0]}: {run.path} holds steps {have[0]}..{have[-1]} '
                         'with candidates (step 0, the start, has none)')
  return [by_step[s] for s in steps]


def new_config(run: GrowRun, changes: Changes) -> Tuple[Optional[grow.GrowConfig], bool]:
  """(the setting of the re-ranking, whether it needs measuring).

  The setting is the recorded one with `changes` applied (None if the recorded one is
  unknown and nothing is measured)."""
  if changes.tie_break is not None and changes.tie_break not in grow.TIE_BREAKS:
    raise UserInputError(f'`tie_break` must be one of {", ".join(grow.TIE_BREAKS)}, got '
                         f'{changes.tie_break!r}')
  measuring = changes.measuring()
  if run.config is None:
    if measuring or changes.remeasure:
      raise UserInputError(f'`grow_dir` {run.path}: no {GROW_STATE} beside the records, so the '
                           'recorded setting is unknown; re-measuring needs it, or '
                           '`grow_settings` (only `tie_break` can be changed without)')
    return None, False
  updates = dict(measuring)
  if changes.tie_break is not None:
    updates['tie_break'] = changes.tie_break
  if 'repeats' in measuring:
    validation.integer('`repeats`', measuring['repeats'])
  if 'seed' in measuring:
    validation.integer('`seed`', measuring['seed'], minimum=0)
  if 'image_size' in measuring:
    validation.integer('`image_size`', measuring['image_size'])
    memory.check_buildable(run.config.arch, measuring['image_size'], run.config.num_classes,
                           name='`image_size`')
  config = dataclasses.replace(run.config, **updates)
  differs = any(getattr(config, k) != getattr(run.config, k) for k in MEASURE_FIELDS)
  return config, differs or changes.remeasure


def measuring_settings(config: grow.GrowConfig) -> Dict:
  return {k: getattr(config, k) for k in MEASURE_FIELDS}


def proxy_topology(candidate: Dict) -> arch_lib.Topology:
  """A candidate record's topology at the proxy width the grow measured it at."""
  real = arch_lib.Topology.parse(candidate['arch'])
  return real.replace(width=real.width // grow.WIDTH_FACTOR)


def _items(records: Sequence[Dict], seed: int) -> List[Tuple[int, str, measure_lib.Item]]:
  """(step, real arch, (proxy topology, the step's seed)) of every candidate of `records`."""
  return [(r['step'], c['arch'], (proxy_topology(c), seeding.seed(seed, r['step'])))
          for r in records for c in r['candidates']]


def _line(step: int, arch: str, item: measure_lib.Item, m: measure_lib.Measurement) -> Dict:
  m = m.cleaned()
  return {'step': step, 'arch': arch, 'proxy_arch': str(item[0]), 'seed': item[1],
          'length': m.length, 'ntk': m.ntk, 'bad': m.bad, 'length_values': m.length_values,
          'ntk_values': m.ntk_values}


def measure_candidates(records: Sequence[Dict], config: grow.GrowConfig, output_dir: str,
                       evaluator: measure_lib.Evaluator, progress: bool = True) -> Dict:
  """{(step, arch): measures.jsonl line} of every candidate of `records`, measuring (and
  appending) only those the file does not hold yet."""
  path = os.path.join(output_dir, MEASURES_FILE)
  done = {(x['step'], x['arch'], x['seed']): x for x in state_lib.read_jsonl(path)}
  items = _items(records, config.seed)
  todo = [it for it in items if (it[0], it[1], it[2][1]) not in done]
  with tqdm(total=len(items), initial=len(items) - len(todo), desc=KIND, unit='measurement',
            disable=not progress or not todo, dynamic_ncols=True) as bar:
    if todo:
      for i, m in evaluator.measure([it[2] for it in todo]):
        step, arch, item = todo[i]
        line = _line(step, arch, item, m)
        state_lib.append_jsonl(path, line)
        done[(step, arch, item[1])] = line
        bar.update(1)
  return {(step, arch): done[(step, arch, item[1])] for step, arch, item in items}


def candidate_order(record: Dict) -> List[Tuple[int, int, int]]:
  """The authors' enumeration order of a step's candidates (`grow.authors_order`)."""
  cands = []
  for c in record['candidates']:
    proxy = proxy_topology(c)
    kind = c.get('kind', 'depth')
    cands.append(grow.Candidate(c['stage'] - 1, c['percent'], proxy.width, proxy.depths, kind,
                                proxy.expansions if kind == 'mlp' else None))
  return grow.authors_order(cands)


def _tau(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
  t = stats.kendall_tau(a, b)
  return None if math.isnan(t) else round(t, 6)


def rerank_step(record: Dict, lengths: Sequence[Optional[float]],
                ntks: Sequence[Optional[float]], tie_break: str,
                recorded_tie_break: Optional[str] = None,
                draws: Optional[Dict[str, Sequence]] = None) -> Dict:
  """One step's comparison: the recorded choice and ranking against those of `lengths` and
  `ntks` (per candidate, in the record's order) selected with `tie_break`.

  The recorded ranking is re-selected from the recorded metrics (with `recorded_tie_break`,
  or `tie_break` if unknown); its choice is the one the record accepted. `draws`, when the
  candidates were measured: {'length': [per-draw values per candidate], 'ntk': [...]}, for
  the step's `noise` (`grow.draw_noise` of each metric).
  """
  cands = record['candidates']
  order = candidate_order(record)
  old_l, old_k = [c['length'] for c in cands], [c['ntk'] for c in cands]
  old = grow.select(old_l, old_k, recorded_tie_break or tie_break, order=order)
  new = grow.select(list(lengths), list(ntks), tie_break, order=order)
  chosen = [i for i, c in enumerate(cands) if c['arch'] == record['arch']]
  recorded = chosen[0] if chosen else old.index
  taus = {'rank_sum': _tau(old.rank_sum, new.rank_sum),
          'length': _tau(grow.dense_ranks(old_l, True), grow.dense_ranks(lengths, True)),
          'ntk': _tau(grow.dense_ranks(old_k, False), grow.dense_ranks(ntks, False))}
  rows = [{'arch': c['arch'], 'choice': family.choice_text(c),
           'recorded': {'length': c['length'], 'ntk': c['ntk'], 'rank_sum': old.rank_sum[i]},
           'new': {'length': lengths[i], 'ntk': ntks[i], 'rank_length': new.rank_length[i],
                   'rank_ntk': new.rank_ntk[i], 'rank_sum': new.rank_sum[i]}}
          for i, c in enumerate(cands)]
  return {'step': record['step'], 'candidates': len(cands),
          'recorded_choice': rows[recorded]['choice'], 'recorded_arch': cands[recorded]['arch'],
          'new_choice': rows[new.index]['choice'], 'new_arch': cands[new.index]['arch'],
          'same': new.index == recorded, 'new_tied': len(new.tied),
          'new_tie_break': new.tie_break, 'tau': taus,
          'recorded_choice_new_rank_sum': new.rank_sum[recorded],
          'new_best_rank_sum': min(new.rank_sum), 'rows': rows,
          'noise': {k: grow.draw_noise(v) for k, v in draws.items()} if draws else None}


def _fmt_tau(t: Optional[float]) -> str:
  return '–' if t is None else f'{t:+.2f}'


def _fmt_noise(noise: Optional[Dict]) -> str:
  return '–' if not noise else f'{noise["ratio"]:.2f}'


def markdown(report: Dict) -> str:
  """The per-step table of a report, with a line on the settings above it (and, for measured
  candidates, the draws' noise per metric below it)."""
  header = ('step', 'cand.', 'recorded choice', 're-ranked choice', 'same', 'τ rank sum',
            'τ L^E', 'τ κ_Θ', 'rank sum of the recorded choice (best)')
  noisy = any(s.get('noise') for s in report['steps'])
  if noisy:
    header += ('noise L^E', 'noise κ_Θ')
  rows = []
  for s in report['steps']:
    new = s['new_choice']
    if s['new_tie_break']:
      new += f' (tie of {s["new_tied"]} → {s["new_tie_break"]})'
    rows.append((s['step'], s['candidates'], s['recorded_choice'], new,
                 'yes' if s['same'] else '**no**', *(_fmt_tau(s['tau'][k]) for k in TAUS),
                 f'{s["recorded_choice_new_rank_sum"]} ({s["new_best_rank_sum"]})')
                + ((_fmt_noise(s['noise'] and s['noise']['length']),
                    _fmt_noise(s['noise'] and s['noise']['ntk'])) if noisy else ()))
  same = sum(s['same'] for s in report['steps'])
  lines = [f'Re-ranked: {report["what"]}.',
           f'Same choice at {same} of {len(report["steps"])} steps.', '',
           family.markdown_table(header, rows)]
  if noisy:
    lines += ['', 'Noise: per metric, the median standard error of a candidate\'s mean over its '
              'draws divided by the standard deviation of the candidates\' means (near 0: new '
              'draws keep the ranking; near or above 1: the ranking is mostly the draws\').']
  return '\n'.join(lines)


def plot(report: Dict, path: str):
  """Kendall-τ per step of the three rankings; a cross marks a step whose choice changed."""
  steps = report['steps']
  taus = {label: [s['tau'][key] for s in steps]
          for key, label in zip(TAUS, ('rank sum', 'L^E', 'κ_Θ'))}
  plots.plot_rank_agreement([s['step'] for s in steps], taus,
                            [s['step'] for s in steps if not s['same']], path, report['what'])


def _describe(run: GrowRun, config: Optional[grow.GrowConfig], changes: Changes,
              measured: bool) -> str:
  """One line on what was re-ranked how, for the report's title."""
  parts = []
  if changes.tie_break is not None:
    was = run.config.tie_break if run.config else 'unknown'
    parts.append(f'tie_break {was} → {changes.tie_break}')
  for k in MEASURE_FIELDS:
    if config is not None and getattr(config, k) != getattr(run.config, k):
      parts.append(f'{k} {getattr(run.config, k)!r} → {getattr(config, k)!r}')
  how = ('re-measured' if measured else 'from the recorded metrics (no measuring)')
  return f'{", ".join(parts) or "the recorded setting"}, {how}'


def run_rescore(grow_path: str, steps: Sequence[int], output_dir: str,
                changes: Changes = Changes(),
                evaluator: Optional[measure_lib.Evaluator] = None,
                measure: Optional[measure_lib.MeasureFn] = None, workers: int = 1,
                progress: bool = True, grow_settings: str = '') -> Dict:
  """Re-ranks `steps` of the grow run in `grow_path` under `changes`; writes and returns the
  report (dict: 'what', 'settings', 'steps': one `rerank_step` each).

  Measures only if a measuring setting changes (or `changes.remeasure`): with `evaluator`,
  else `measure` in this process, else the search's default evaluator of the new setting
  with `workers` processes (closed at the end). `grow_settings`: as `load_grow`'s.
  """
  run = load_grow(grow_path, grow_settings)
  records = check_steps(run, steps)
  config, measuring = new_config(run, changes)
  output_dir = state_lib.prepare_output_dir(output_dir)
  with lock_lib.RunLock(output_dir):
    metrics = {}
    if measuring:
      metrics = _measure(records, config, output_dir, evaluator, measure, workers, progress)
    report = _report(run, records, config, changes, metrics)
    _write(report, output_dir)
  return report


def _measure(records, config, output_dir, evaluator, measure, workers, progress) -> Dict:
  state_lib.load_state(output_dir, KIND, measuring_settings(config))
  state_lib.save_state(output_dir, {'kind': KIND, 'config': measuring_settings(config)})
  owned = evaluator is None
  if owned:
    evaluator = (measure_lib.SerialEvaluator(measure) if measure is not None else
                 run_lib.default_evaluator(('length', 'ntk'), config, workers))
  try:
    return measure_candidates(records, config, output_dir, evaluator, progress)
  finally:
    if owned:
      evaluator.close()


def _report(run: GrowRun, records, config, changes: Changes, metrics: Dict) -> Dict:
  recorded_tie = run.config.tie_break if run.config else None
  tie_break = changes.tie_break or recorded_tie or grow.GrowConfig.tie_break
  steps = []
  for r in records:
    got = [metrics.get((r['step'], c['arch']), c) for c in r['candidates']]
    draws = ({k: [g.get(f'{k}_values') for g in got] for k in ('length', 'ntk')}
             if metrics else None)
    steps.append(rerank_step(r, [g['length'] for g in got], [g['ntk'] for g in got],
                             tie_break, recorded_tie, draws))
  settings = {'recorded': measuring_settings(run.config) if run.config else None,
              'recorded_tie_break': recorded_tie, 'tie_break': tie_break,
              'new': measuring_settings(config) if config else None,
              'measured': bool(metrics)}
  return {'grow': run.path, 'what': _describe(run, config, changes, bool(metrics)),
          'settings': settings, 'steps': steps}


def _write(report: Dict, output_dir: str):
  state_lib.atomic_write(os.path.join(output_dir, REPORT_JSON),
                         json.dumps(report, indent=1, allow_nan=True) + '\n')
  text = f'# Re-ranked steps of {report["grow"]}\n\n{markdown(report)}\n'
  state_lib.atomic_write(os.path.join(output_dir, REPORT_MD), text)
  plot(report, os.path.join(output_dir, PLOT_FILE))
