"""Correlation of each measure with each accuracy column: JSON, a markdown table, plots.

The measures and the sign the As-ViT paper expects of their τ with accuracy: L^E (+),
κ (−), L^E_κ (none reported), κ_Θ (−), the As-ViT combined rank as a score (+: minus the
sum of the L^E rank, descending, and the κ_Θ rank, ascending, as the search and the scaling
rank candidates), #params and MACs (the size baselines). With more than one repeat, the
section "Repeats: 1 vs all" sets τ from the mean over the repeats beside τ from repeat 0
alone (what a one-repeat run measures) and the range of τ over the single repeats. Nothing
here is timed, so the outputs of a resumed run equal those of an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from asvit_tf.correlate import stats

TITLES = {'length': 'L^E', 'curvature': 'κ', 'curvature_length': 'L^E_κ', 'ntk': 'κ_Θ',
          'combined': 'As-ViT rank (L^E + κ_Θ)', 'params': '#params', 'macs': 'MACs'}
EXPECTED_SIGN = {'length': '+', 'curvature': '−', 'curvature_length': '', 'ntk': '−',
                 'combined': '+', 'params': '+', 'macs': '+'}
ORDER = ('length', 'curvature', 'curvature_length', 'ntk', 'combined', 'params', 'macs')
# The measures with per-repeat values (the sizes have none), for "Repeats: 1 vs all".
REPEATED = ('length', 'curvature', 'curvature_length', 'ntk', 'combined')
REPEATS_KEY = 'repeats_1_vs_all'
# What repeat 0 of an R-repeat run is (docs/proxies.md, "The tool"; test_repeats.py).
REPEAT_0_IS = ('Repeat 0 is what a `--repeats=1` run with the same settings measures: the same '
               'weights, input curve and NTK images (seeded by seed and repeat), equal to the '
               'bit in our checks.')


def _float(v) -> float:
  if v is None:
    return float('nan')
  return float(v)  # also "inf"/"nan" strings


def measure_columns(records: Sequence[Dict[str, object]], metrics: Sequence[str]
                    ) -> Dict[str, List[float]]:
  """{measure: values in row order} for the measured metrics, the combined rank (when both
  L^E and κ_Θ are there) and the sizes."""
  cols = {m: [_float(r.get(m)) for r in records] for m in metrics}
  if 'length' in cols and 'ntk' in cols:
    cols['combined'] = stats.combined_score(cols['length'], cols['ntk'])
  for m in ('params', 'macs'):
    cols[m] = [_float(r.get(m)) for r in records]
  return {m: cols[m] for m in ORDER if m in cols}


def correlations(columns: Dict[str, List[float]], accuracy: Dict[str, List[float]],
                 n_boot: int = 1000, seed: int = 0, num_groups: int = 4
                 ) -> Dict[str, Dict[str, Dict[str, object]]]:
  """{accuracy column: {measure: Correlation dict + 'tau_within_size_groups'}}; the size
  groups are the `num_groups` quantile bins of #params."""
  out = {}
  for acc_name, acc in accuracy.items():
    out[acc_name] = {}
    for m, values in columns.items():
      c = stats.correlate(values, acc, n_boot, seed).to_dict()
      c['tau_within_size_groups'] = stats.tau_within_groups(
          values, acc, columns['params'], num_groups).to_dict()
      out[acc_name][m] = c
  return out


def repeat_columns(records: Sequence[Dict[str, object]], metrics: Sequence[str],
                   repeats: int) -> List[Dict[str, List[float]]]:
  """Per repeat r < `repeats`: {measure: repeat r's values in row order}, for the metrics
  every record holds `repeats` per-repeat values of (OUT/measures.jsonl's `values`; a
  measure a table gives has none) and the combined rank of repeat r's L^E and κ_Θ."""
  per_repeat = {}
  for m in metrics:
    values = [(r.get('values') or {}).get(m) for r in records]
    if all(isinstance(v, list) and len(v) == repeats for v in values):
      per_repeat[m] = values
  out = []
  for i in range(repeats):
    cols = {m: [_float(v[i]) for v in values] for m, values in per_repeat.items()}
    if 'length' in cols and 'ntk' in cols:
      cols['combined'] = stats.combined_score(cols['length'], cols['ntk'])
    out.append({m: cols[m] for m in REPEATED if m in cols})
  return out


def repeats_1_vs_all(correlated: Dict[str, Dict[str, Dict[str, object]]],
                     single: List[Dict[str, List[float]]], accuracy: Dict[str, List[float]],
                     n_boot: int = 1000, seed: int = 0) -> Dict[str, Dict[str, object]]:
  """{accuracy column: {measure: {'all', 'repeat_0', 'single_repeats', 'single_min',
  'single_max'}}}: Kendall-τ and its bootstrap interval from the mean over all repeats
  (taken from `correlated`, the output of `correlations`) and from repeat 0 alone (the
  same bootstrap draws), and τ of each single repeat (`single`, from `repeat_columns`)."""
  out = {}
  for acc_name, acc in accuracy.items():
    out[acc_name] = {}
    for m in single[0]:
      mean = correlated[acc_name][m]
      taus = [stats.kendall_tau(cols[m], acc) for cols in single]
      finite = [t for t in taus if math.isfinite(t)]
      out[acc_name][m] = {
          'all': {'kendall_tau': mean['kendall_tau'], 'kendall_tau_ci': mean['kendall_tau_ci']},
          'repeat_0': {'kendall_tau': taus[0], 'kendall_tau_ci': list(
              stats.bootstrap_interval(single[0][m], acc, 'kendall_tau', n_boot, seed))},
          'single_repeats': taus,
          'single_min': min(finite) if finite else float('nan'),
          'single_max': max(finite) if finite else float('nan')}
  return out


def _num(x: float, digits: int = 3) -> str:
  return f'{x:+.{digits}f}' if math.isfinite(x) else 'n/a'


def markdown(result: Dict[str, object]) -> str:
  """One table per accuracy column: τ and ρ with their 95 % intervals, τ within size groups."""
  s = result['settings']
  lines = [f'# Measures at initialisation against trained accuracy ({result["space"]})', '',
           f'{result["n"]} networks from `{result["table"]}`; {s["repeats"]} repeat(s), '
           f'{s["image_size"]} px, seed {s["seed"]}, NTK batch '
           f'{s["ntk_data"] or "Gaussian noise"} ({s["batch_size"]} images); '
           f'bootstrap {result["n_boot"]} resamples (seed {result["bootstrap_seed"]}), '
           f'size groups: {result["num_groups"]} quantile bins of #params.', '']
  for acc_name, by_measure in result['correlations'].items():
    lines += [f'## {acc_name}', '',
              '| measure | expected sign | Kendall-τ [95 % CI] | Spearman-ρ [95 % CI] '
              '| τ within size groups |',
              '|---|---|---|---|---|']
    for m, c in by_measure.items():
      lo, hi = c['kendall_tau_ci']
      rlo, rhi = c['spearman_rho_ci']
      lines.append(f'| {TITLES[m]} | {EXPECTED_SIGN[m]} | {_num(c["kendall_tau"])} '
                   f'[{_num(lo)}, {_num(hi)}] | {_num(c["spearman_rho"])} '
                   f'[{_num(rlo)}, {_num(rhi)}] | '
                   f'{_num(c["tau_within_size_groups"]["weighted_tau"])} |')
    lines.append('')
  lines += repeats_markdown(result)
  bad = [r['key'] for r in result['networks'] if r.get('ntk_bad')]
  if bad:
    lines += [f'Bad networks (non-finite κ_Θ, ranked last): {", ".join(bad)}', '']
  return '\n'.join(lines)


def repeats_markdown(result: Dict[str, object]) -> List[str]:
  """The "Repeats: 1 vs all" section's markdown lines (none without that section)."""
  section = result.get(REPEATS_KEY)
  if not section:
    return []
  r = result['settings']['repeats']
  lines = ['## Repeats: 1 vs all', '',
           f'Kendall-τ [95 % CI] from the mean over the {r} repeats (as above), from repeat 0 '
           f'alone, and the lowest and highest τ of a single repeat (each of 0..{r - 1} '
           f'alone). {REPEAT_0_IS}', '']
  for acc_name, by_measure in section.items():
    lines += [f'### {acc_name}', '',
              f'| measure | τ, mean of {r} [95 % CI] | τ, repeat 0 [95 % CI] '
              f'| τ of one repeat, min – max |', '|---|---|---|---|']
    for m, c in by_measure.items():
      every, first = c['all'], c['repeat_0']
      lines.append(f'| {TITLES[m]} | {_num(every["kendall_tau"])} '
                   f'[{_num(every["kendall_tau_ci"][0])}, {_num(every["kendall_tau_ci"][1])}] '
                   f'| {_num(first["kendall_tau"])} [{_num(first["kendall_tau_ci"][0])}, '
                   f'{_num(first["kendall_tau_ci"][1])}] | {_num(c["single_min"])} – '
                   f'{_num(c["single_max"])} |')
    lines.append('')
  return lines


def plot(columns: Dict[str, List[float]], accuracy: List[float], acc_name: str, path: str,
         title: str = ''):
  """One panel per measure, the measure on x (log scale when positive and spanning more
  than two decades) and the accuracy on y."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  names = list(columns)
  cols = min(4, len(names))
  rows = math.ceil(len(names) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
  y = np.asarray(accuracy, np.float64)
  for ax, m in zip(axes.flat, names):
    x = np.asarray(columns[m], np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    ax.scatter(x[ok], y[ok], s=10, alpha=0.7)
    pos = x[ok]
    if len(pos) and pos.min() > 0 and pos.max() / pos.min() > 100:
      ax.set_xscale('log')
    ax.set_xlabel(TITLES[m])
    ax.set_ylabel(acc_name)
    tau = stats.kendall_tau(x, y)
    ax.set_title(f'τ = {_num(tau, 2)}', fontsize=9)
  for ax in list(axes.flat)[len(names):]:
    ax.axis('off')
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(out_dir: str, space: str, table: str, settings: Dict[str, object],
          records: List[Dict[str, object]], accuracy: Dict[str, List[float]],
          n_boot: int = 1000, seed: int = 0, num_groups: int = 4,
          extra: Optional[Dict[str, object]] = None, notes: Sequence[str] = ()
          ) -> Dict[str, object]:
  """Writes OUT/correlation.json, OUT/correlation.md and OUT/scatter_<column>.png; `extra`
  joins the JSON's top level, `notes` (markdown lines) end the markdown."""
  columns = measure_columns(records, settings['metrics'])
  networks = [{k: v for k, v in r.items() if k != 'seconds'} for r in records]
  for i, net in enumerate(networks):
    net['accuracy'] = {a: accuracy[a][i] for a in accuracy}
  correlated = correlations(columns, accuracy, n_boot, seed, num_groups)
  result = {'space': space, 'table': table, 'n': len(records), 'settings': settings,
            'n_boot': n_boot, 'bootstrap_seed': seed, 'num_groups': num_groups,
            'correlations': correlated, 'networks': networks, **(extra or {})}
  if settings['repeats'] > 1:
    single = repeat_columns(records, settings['metrics'], settings['repeats'])
    if single[0]:
      result[REPEATS_KEY] = repeats_1_vs_all(correlated, single, accuracy, n_boot, seed)
  with open(os.path.join(out_dir, 'correlation.json'), 'w', encoding='utf-8') as f:
    json.dump(_strict(result), f, indent=1)
    f.write('\n')
  with open(os.path.join(out_dir, 'correlation.md'), 'w', encoding='utf-8') as f:
    f.write('\n'.join([markdown(result), *notes]) + '\n')
  for acc_name, acc in accuracy.items():
    plot(columns, acc, acc_name, os.path.join(out_dir, f'scatter_{acc_name}.png'),
         f'{space}: {len(records)} networks, {settings["repeats"]} repeat(s)')
  return result


def _strict(x):
  """`x` with non-finite floats as the strings "inf", "-inf", "nan" (JSON has none)."""
  if isinstance(x, dict):
    return {k: _strict(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_strict(v) for v in x]
  if isinstance(x, (float, np.floating)):
    return float(x) if math.isfinite(x) else str(float(x))
  if isinstance(x, np.integer):
    return int(x)
  return x
