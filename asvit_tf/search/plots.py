"""PNG plots of a search (reward, entropy, both metrics per step) and of a scaling path.

matplotlib with the Agg backend (no display); every PNG is written atomically.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence, Tuple

from asvit_tf.search import state as state_lib


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _series(records, key):
  xs, ys = [], []
  for r in records:
    v = r.get(key)
    if v is not None and math.isfinite(v):
      xs.append(r['step'])
      ys.append(v)
  return xs, ys


def _save(fig, path):
  plt = _pyplot()
  with state_lib.atomic_path(path) as tmp:
    fig.savefig(tmp, format='png', dpi=100)
  plt.close(fig)


def plot_search(records: Sequence[Mapping], path: str, title: str = ''):
  """Reward and baseline, policy entropy, L^E and κ_Θ over the search steps."""
  plt = _pyplot()
  fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
  panels = [(axes[0, 0], (('reward', 'reward'), ('baseline', 'baseline')), 'reward', False),
            (axes[0, 1], (('entropy', 'entropy (nats)'),), 'policy entropy', False),
            (axes[1, 0], (('length', 'L^E'),), 'length distortion L^E', False),
            (axes[1, 1], (('ntk', 'κ_Θ'),), 'NTK condition number κ_Θ', True)]
  for ax, keys, name, log in panels:
    for key, label in keys:
      xs, ys = _series(records, key)
      if xs:
        ax.plot(xs, ys, '.-' if len(xs) < 60 else '-', label=label, lw=1, ms=3)
    ys = _series(records, 'ntk')[1]
    if log and ys and min(ys) > 0 and max(ys) / min(ys) > 20:  # κ_Θ can span decades
      ax.set_yscale('log')
    if not ax.get_lines():
      ax.text(0.5, 0.5, 'not measured', ha='center', va='center', transform=ax.transAxes)
    ax.set_title(name)
    ax.grid(alpha=0.3)
    if len(keys) > 1:
      ax.legend()
  for ax in axes[1]:
    ax.set_xlabel('step')
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  _save(fig, path)


def _is_mlp(record: Mapping) -> bool:
  return (record.get('choice') or {}).get('kind') == 'mlp'


def _step_label(record: Mapping) -> str:
  """The step number; for an MLP step also which expansion grew ('5 E3↑')."""
  if _is_mlp(record):
    return f'{record["step"]} E{record["choice"]["stage"]}↑'
  return str(record['step'])


def _mark_mlp_steps(ax, records, widths, depths):
  """Squares on the steps that grew an MLP expansion (they keep the depth, so the path runs
  flat there); nothing in a run without such steps."""
  points = [(w, d) for r, w, d in zip(records, widths, depths) if _is_mlp(r)]
  if points:
    ax.plot(*zip(*points), 's', ms=8, mfc='none', mec='tab:green', mew=1.5,
            label='MLP expansion + 1')
    ax.legend(fontsize=8)


def plot_scaling(records: Sequence[Mapping], path: str, target_params: float = 0.0,
                 title: str = '', budget_metric: str = '', budgets: Sequence[float] = ()):
  """Scaling path: total depth vs. width C, and parameters per step (MACs per step with MAC
  budgets). With `budgets`, the budgets are drawn instead of the target, and the members
  the records mark nearest to them (their 'budget' lists) are ringed and labelled."""
  plt = _pyplot()
  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.5))
  widths = [r['width'] for r in records]
  depths = [sum(r['depths']) for r in records]
  ax0.plot(widths, depths, 'o-', ms=4)
  for r, w, d in zip(records, widths, depths):
    ax0.annotate(_step_label(r), (w, d), textcoords='offset points', xytext=(3, 3),
                 fontsize=7)
  _mark_mlp_steps(ax0, records, widths, depths)
  ax0.set_xlabel('width C (stage 1)')
  ax0.set_ylabel('total depth (blocks)')
  ax0.set_title('scaling path')
  ax0.grid(alpha=0.3)
  steps = [r['step'] for r in records]
  macs = budget_metric == 'macs'
  unit, scale = ('MACs (G)', 1e9) if macs else ('parameters (M)', 1e6)
  ax1.plot(steps, [r['macs' if macs else 'params'] / scale for r in records], 'o-', ms=4)
  if budgets:
    for b in budgets:
      ax1.axhline(b / scale, color='gray', ls=':', lw=1)
    marked = [(r, w, d) for r, w, d in zip(records, widths, depths) if r.get('budget')]
    for r, w, d in marked:
      label = ', '.join(f'{b / scale:g}' for b in r['budget'])
      y = r['macs' if macs else 'params'] / scale
      ax1.plot([r['step']], [y], 'o', ms=10, mfc='none', mec='tab:red', mew=1.5)
      ax1.annotate(f'≈{label}', (r['step'], y), textcoords='offset points', xytext=(-8, 8),
                   fontsize=8, color='tab:red', ha='right')
      ax0.plot([w], [d], 'o', ms=10, mfc='none', mec='tab:red', mew=1.5)
      ax0.annotate(f'≈{label} {"G" if macs else "M"}', (w, d), textcoords='offset points',
                   xytext=(-8, 8), fontsize=8, color='tab:red', ha='right')
    if marked:
      ax1.plot([], [], 'o', ms=10, mfc='none', mec='tab:red', mew=1.5,
               label='nearest each budget')
      ax1.legend()
  elif target_params:
    ax1.axhline(target_params / 1e6, color='gray', ls='--', lw=1, label='target')
    ax1.legend()
  ax1.set_xlabel('step')
  ax1.set_ylabel(unit)
  ax1.set_title(f'{unit.split(" (")[0]} per step' + (' and budgets' if budgets else ''))
  ax1.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  _save(fig, path)


def plot_evolution(records: Sequence[Mapping], path: str, title: str = ''):
  """An evolutionary search per generation: every child's L^E and κ_Θ with the population's
  best and mean, the population's diversity, and the distinct topologies measured."""
  plt = _pyplot()
  fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
  for ax, key, name, log in ((axes[0, 0], 'length', 'length distortion L^E', False),
                             (axes[0, 1], 'ntk', 'NTK condition number κ_Θ', True)):
    xs = [r['step'] for r in records for c in r['children']
          if c[key] is not None and math.isfinite(c[key])]
    ys = [c[key] for r in records for c in r['children']
          if c[key] is not None and math.isfinite(c[key])]
    if xs:
      ax.plot(xs, ys, '.', color='gray', ms=3, alpha=0.5, label='children')
    for series, label in ((f'best_{key}', 'fittest'), (f'mean_{key}', 'population mean')):
      sx, sy = _series(records, series)
      if sx:
        ax.plot(sx, sy, '.-', lw=1, ms=3, label=label)
    if log and ys and min(ys) > 0 and max(ys) / min(ys) > 20:
      ax.set_yscale('log')
    if not ax.get_lines():
      ax.text(0.5, 0.5, 'not measured', ha='center', va='center', transform=ax.transAxes)
    else:
      ax.legend()
    ax.set_title(name)
    ax.grid(alpha=0.3)
  for ax, key, name in ((axes[1, 0], 'diversity', 'population diversity (nats per decision)'),
                        (axes[1, 1], 'measured', 'distinct topologies measured')):
    sx, sy = _series(records, key)
    ax.plot(sx, sy, '.-', lw=1, ms=3)
    ax.set_title(name)
    ax.grid(alpha=0.3)
    ax.set_xlabel('generation')
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  _save(fig, path)


def plot_rank_agreement(steps: Sequence[int], taus: Mapping[str, Sequence[Optional[float]]],
                        changed: Sequence[int], path: str, title: str = ''):
  """Kendall-τ per grow step of each ranking in `taus` (label: one τ per step, None where
  undefined), a red cross at each step in `changed` (its choice changed)."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(8, 3.5))
  for label, values in taus.items():
    ax.plot(steps, [math.nan if v is None else v for v in values], 'o-', label=label)
  ax.plot(list(changed), [-1.1] * len(changed), 'rx', ms=9, label='choice changed')
  ax.set(xlabel='grow step', ylabel='Kendall-τ (recorded vs re-ranked)', ylim=(-1.2, 1.05),
         xticks=list(steps), xlim=(min(steps) - 0.5, max(steps) + 0.5))
  if title:
    ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1))
  fig.tight_layout()
  _save(fig, path)


def plot_best_so_far(curves: Mapping[str, Sequence[int]], union_size: int, path: str,
                     title: str = ''):
  """Per run (label: its best union rank after each measurement), the best rank found so far
  against the measurements spent; rank 1 (the union's best) at the top."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(8, 4.5))
  for label, curve in curves.items():
    ax.step(range(1, len(curve) + 1), curve, where='post', lw=1.5, label=label)
  ax.set_yscale('log')
  ax.set_ylim(max(union_size, 2) * 1.1, 0.9)  # inverted: better is up
  ax.set_yticks([t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if t <= union_size]
                + [union_size])
  ax.set_yticklabels([], minor=True)
  ax.yaxis.set_major_formatter('{x:.0f}')
  ax.set(xlabel='distinct topologies measured', ylabel=f'best rank found (of {union_size})')
  ax.grid(alpha=0.3, which='both')
  ax.legend(fontsize=8)
  if title:
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  _save(fig, path)


def plot_families(runs: Sequence[Tuple[str, Sequence[Mapping]]],
                  references: Sequence[Tuple[str, float, float]],
                  members: Sequence[Sequence[Mapping]], path: str, band: float = 0.15):
  """MACs (G) against parameters (M) along each run's steps (label, records); each
  reference (name, params, MACs) as a star with a bar of ±`band` of its MACs; per run the
  `members` (records' params and MACs) nearest the references ringed in its colour."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(8, 5.5))
  for (label, records), chosen in zip(runs, members):
    line, = ax.plot([r['params'] / 1e6 for r in records], [r['macs'] / 1e9 for r in records],
                    'o-', ms=3, lw=1.2, label=label)
    # In the run's colour, given: a plot without one would take the next colour of the
    # cycle, and every other run would share a colour with another from the sixth on.
    ax.plot([m['params'] / 1e6 for m in chosen], [m['macs'] / 1e9 for m in chosen], 'o',
            ms=10, mfc='none', color=line.get_color(), mew=1.5)
  for i, (name, params, macs) in enumerate(references):
    ax.errorbar([params / 1e6], [macs / 1e9], yerr=[[band * macs / 1e9], [band * macs / 1e9]],
                fmt='*', color='black', ms=12, capsize=5,
                label=f'paper / authors (±{band * 100:.0f} % MACs)' if i == 0 else None)
    ax.annotate(name, (params / 1e6, macs / 1e9), textcoords='offset points', xytext=(8, -12),
                fontsize=9)
  ax.set(xlabel='parameters (M)', ylabel='MACs at 224×224 (G)',
         title='scaling runs against the paper\'s sizes (ringed: the member nearest each)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc='upper left')
  fig.tight_layout()
  _save(fig, path)
