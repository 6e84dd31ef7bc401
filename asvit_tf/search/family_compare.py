"""Scaling runs side by side at the paper's three sizes (`asvit compare_families`).

Each run's series (a grow.jsonl, or an `asvit grow` output directory) is read, and for each
size the member nearest its parameter count is put beside the reference's MACs: the paper's
As-ViT Small (29.0 M parameters, 5.3 G FLOPs) and Base (52.6 M, 8.9 G), and the authors' As-ViT
Large as its topology counts (`asvit_large`: 87.58 M, 22.36 G MACs at 224×224; the paper gives
22.6 G for it). The member nearest a size is `family.closest` to the size's parameter count
(by default 29, 52 and 88 M: the paper-preset `--budgets`, so a run's budget marks are these
members); a run whose largest member is under a size has not reached it.

The report: per run and size the member (step, topology, depths, C, params, MACs) and its MACs
against the reference's in per cent; per run how many of its members are within the goal's
15 % and the mean |Δ|; and a plot of MACs against parameters for every run with the references.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

from asvit_tf import arch as arch_lib
from asvit_tf.errors import UserInputError
from asvit_tf.models import size
from asvit_tf.search import compare as compare_lib
from asvit_tf.search import family
from asvit_tf.search import state as state_lib

GOAL = 0.15   # issue 16: the family within 15 % of the paper's MACs
SIZES = (29e6, 52e6, 88e6)


@dataclasses.dataclass(frozen=True)
class Reference:
  name: str
  params: float
  macs: float
  source: str


def references() -> Tuple[Reference, ...]:
  """Small and Base as the paper gives them, Large as the authors' topology counts."""
  large = arch_lib.as_topology('asvit_large')
  small_params, small_macs = family.PAPER_SIZES['asvit_small']
  base_params, base_macs = family.PAPER_SIZES['asvit_base']
  return (Reference('Small', small_params, small_macs, 'paper'),
          Reference('Base', base_params, base_macs, 'paper'),
          Reference('Large', float(size.estimate_params(large)),
                    float(size.count_macs(large, 224)), 'authors\' asvit_large, counted'))


@dataclasses.dataclass
class Run:
  label: str
  path: str
  records: List[Dict]


def load_run(path: str, label: str = '') -> Run:
  """A grow.jsonl or an `asvit grow` output directory; one line if it is neither."""
  try:
    records = family.read_records(path)
  except FileNotFoundError:
    raise UserInputError(f'`runs` {path} is neither a grow.jsonl nor a directory with '
                         'one') from None
  except ValueError as e:
    raise UserInputError(f'`runs` {path} is not a grow.jsonl ({e})') from None
  if not records:
    raise UserInputError(f'`runs` {path} has no scaling steps yet')
  missing = [k for k in ('step', 'arch', 'params', 'macs', 'depths', 'width')
             if any(k not in r for r in records)]
  if missing:
    raise UserInputError(f'`runs` {path} is not a grow.jsonl (its records lack '
                         f'{", ".join(missing)})')
  return Run(label or default_label(path), path, records)


def load_runs(paths: Sequence[str], labels: Sequence[str] = ()) -> List[Run]:
  """`load_run` of each path, named by `labels` (one per path) or by their file names."""
  if labels and len(labels) != len(paths):
    raise UserInputError(f'`labels` must name each of the {len(paths)} runs, got '
                         f'{len(labels)}')
  return [load_run(path, label) for path, label in zip(paths, labels or [''] * len(paths))]


def default_label(path: str) -> str:
  """runs/family_seed1 → family_seed1; docs/family_seed1_grow.jsonl → family_seed1."""
  name = os.path.basename(os.path.normpath(path))
  for suffix in ('.jsonl', '_grow'):
    name = name[:-len(suffix)] if name.endswith(suffix) else name
  return name or path


def nearest(records: Sequence[Dict], params: float) -> Optional[Dict]:
  """The member nearest `params` parameters (the smaller step on a tie); None if every
  member is smaller (the run has not reached the size)."""
  if max(r['params'] for r in records) < params:
    return None
  return family.closest(records, params)


def delta(value: float, reference: float) -> float:
  return value / reference - 1.0


def compare(runs: Sequence[Run], sizes: Sequence[float] = SIZES) -> Dict:
  """Per run, per reference: the member nearest the size and its MACs' Δ, and a summary."""
  refs = references()
  if len(sizes) != len(refs):
    raise UserInputError(f'`sizes` must give {len(refs)} parameter counts (Small, Base, '
                         f'Large), got {len(sizes)}')
  rows = []
  for run in runs:
    members = []
    for ref, params in zip(refs, sizes):
      r = nearest(run.records, params)
      members.append(None if r is None else {
          'step': r['step'], 'arch': r['arch'], 'depths': list(r['depths']),
          'width': r['width'], 'params': r['params'], 'macs': r['macs'],
          'delta': delta(r['macs'], ref.macs)})
    reached = [m for m in members if m is not None]
    rows.append({'label': run.label, 'path': run.path, 'steps': len(run.records),
                 'largest': max(r['params'] for r in run.records), 'members': members,
                 'within': sum(abs(m['delta']) <= GOAL for m in reached),
                 'reached': len(reached),
                 'mean_abs_delta': (sum(abs(m['delta']) for m in reached) / len(reached)
                                    if reached else None)})
  return {'references': [dataclasses.asdict(r) for r in refs], 'sizes': list(sizes),
          'goal': GOAL, 'runs': rows}


def closest_run(report: Dict) -> Optional[Dict]:
  """The run with every size reached and the smallest mean |Δ| (None if none reached all)."""
  full = [r for r in report['runs'] if r['reached'] == len(report['sizes'])]
  return min(full, key=lambda r: r['mean_abs_delta']) if full else None


def _percent(x: float) -> str:
  """0.31 → '+31 %', -0.14 → '−14 %', 0.004 → '+0.4 %'."""
  text = f'{x * 100:+.1f}' if abs(x) < 0.01 else f'{x * 100:+.0f}'
  return text.replace('-', '−') + ' %'


def markdown(report: Dict, command: str, plot_file: str) -> str:
  refs = [Reference(**r) for r in report['references']]
  sizes = report['sizes']
  header = ['run'] + [f'{ref.name} (≈{s / 1e6:g} M; {ref.macs / 1e9:.2f} G)'
                      for ref, s in zip(refs, sizes)] + ['within 15 %', 'mean |Δ|']
  rows = []
  for run in report['runs']:
    cells = [f'{run["label"]}']
    for m in run['members']:
      cells.append('not reached' if m is None else
                   f'step {m["step"]}: {m["params"] / 1e6:.2f} M, {m["macs"] / 1e9:.2f} G, '
                   f'**{_percent(m["delta"])}**')
    cells.append((f'{run["within"]} of {run["reached"]}' if run['reached'] else '–') +
                 ('' if run['reached'] == len(sizes) else
                  f' (largest {run["largest"] / 1e6:.2f} M)'))
    cells.append('' if run['mean_abs_delta'] is None else f'{run["mean_abs_delta"] * 100:.0f} %')
    rows.append(cells)
  detail = []
  for run in report['runs']:
    for ref, m in zip(refs, run['members']):
      if m is not None:
        detail.append((run['label'], ref.name, m['step'], f'`{m["arch"]}`',
                       ','.join(map(str, m['depths'])), m['width'],
                       f'{m["params"] / 1e6:.2f} M', _percent(delta(m['params'], ref.params)),
                       f'{m["macs"] / 1e9:.2f} G', _percent(m['delta'])))
  best = closest_run(report)
  lines = ['# Scaling runs at the paper\'s three sizes', '',
           f'Made by `{command}`.', '',
           'Per run, the member nearest each size in parameters, its MACs at 224×224 and '
           'their difference from the reference: ' +
           '; '.join(f'{ref.name} {ref.params / 1e6:.2f} M, {ref.macs / 1e9:.2f} G '
                     f'({ref.source})' for ref in refs) +
           f'. The goal (issue 16) is every size within {report["goal"] * 100:.0f} %.', '',
           family.markdown_table(header, rows), '']
  if best is not None:
    lines += [f'Closest to the references: **{best["label"]}** (mean |Δ| '
              f'{best["mean_abs_delta"] * 100:.0f} %, {best["within"]} of '
              f'{len(sizes)} within {report["goal"] * 100:.0f} %).', '']
  if plot_file:
    lines += [f'![MACs against parameters]({plot_file})', '']
  lines += ['## The members', '',
            family.markdown_table(('run', 'size', 'step', 'topology', 'depths', 'C', 'params',
                                   'Δ params', 'MACs', 'Δ MACs'), detail), '']
  return '\n'.join(lines)


def plot(report: Dict, runs: Sequence[Run], path: str):
  """MACs against parameters per step of each run; the references with the goal's band;
  the members nearest the sizes ringed."""
  from asvit_tf.search import plots  # pylint: disable=g-import-not-at-top
  plots.plot_families([(run.label, run.records) for run in runs],
                      [(r['name'], r['params'], r['macs']) for r in report['references']],
                      [[m for m in row['members'] if m] for row in report['runs']],
                      path, band=report['goal'])


def write(report: Dict, runs: Sequence[Run], out: str, command: str) -> str:
  """Writes the report, its JSON and its plot; returns the Markdown."""
  md_path, json_path, png_path = compare_lib.output_paths(out)
  os.makedirs(os.path.dirname(os.path.abspath(md_path)), exist_ok=True)
  plot(report, runs, png_path)
  text = markdown(report, command, os.path.basename(png_path))
  state_lib.atomic_write(json_path, state_lib.dumps({**report, 'command': command}) + '\n')
  state_lib.atomic_write(md_path, text)
  return text
