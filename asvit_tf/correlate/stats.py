"""Rank correlations between a measure and trained accuracy, with bootstrap intervals.

Pure numpy/scipy. Every statistic works on ranks, so infinite values (a bad network's κ_Θ)
take part as the largest values; pairs with a NaN on either side are dropped.

- Kendall-τ is τ-b (ties corrected): Σ_{i<j} sign(x_i−x_j)·sign(y_i−y_j) over
  √(pairs untied in x · pairs untied in y), as `scipy.stats.kendalltau` computes it.
- Spearman-ρ is Pearson's correlation of the average ranks (`scipy.stats.spearmanr`).
- The bootstrap resamples the (x, y) pairs with replacement, `n_boot` times from
  `np.random.default_rng(seed)` (draws `integers(0, n, (n_boot, n))`), and takes the
  percentile interval; resamples where the statistic is undefined (all ties) are left out.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as sp_stats


def _pairs(x: Sequence[float], y: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape or x.ndim != 1:
    raise ValueError(f'x and y must be 1-D of one length, got shapes {x.shape} and {y.shape}')
  keep = ~(np.isnan(x) | np.isnan(y))
  return x[keep], y[keep]


def _ranks(x: np.ndarray) -> np.ndarray:
  return sp_stats.rankdata(x, axis=-1)  # average ranks; handles ±inf


def _kendall_batch(rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
  """τ-b of each row of [m, n] rank arrays: [m] (NaN where x or y is constant)."""
  sx = np.sign(rx[:, :, None] - rx[:, None, :])
  sy = np.sign(ry[:, :, None] - ry[:, None, :])
  concordance = np.einsum('mij,mij->m', sx, sy)
  untied_x = np.einsum('mij,mij->m', sx, sx)
  untied_y = np.einsum('mij,mij->m', sy, sy)
  with np.errstate(invalid='ignore', divide='ignore'):
    return concordance / np.sqrt(untied_x * untied_y)


def _spearman_batch(rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
  """ρ of each row of [m, n] rank arrays: [m] (NaN where x or y is constant)."""
  dx = rx - rx.mean(axis=1, keepdims=True)
  dy = ry - ry.mean(axis=1, keepdims=True)
  with np.errstate(invalid='ignore', divide='ignore'):
    return (dx * dy).sum(1) / np.sqrt((dx * dx).sum(1) * (dy * dy).sum(1))


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
  """Kendall's τ-b of x and y (NaN if fewer than 2 pairs or either side is constant)."""
  x, y = _pairs(x, y)
  if len(x) < 2:
    return float('nan')
  return float(_kendall_batch(_ranks(x)[None], _ranks(y)[None])[0])


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
  """Spearman's ρ of x and y (NaN if fewer than 2 pairs or either side is constant)."""
  x, y = _pairs(x, y)
  if len(x) < 2:
    return float('nan')
  return float(_spearman_batch(_ranks(x)[None], _ranks(y)[None])[0])


STATISTICS: Dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    'kendall_tau': _kendall_batch, 'spearman_rho': _spearman_batch}


def bootstrap_interval(x: Sequence[float], y: Sequence[float], statistic: str = 'kendall_tau',
                       n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                       chunk: int = 200) -> Tuple[float, float]:
  """Percentile bootstrap interval (low, high) of `statistic` ('kendall_tau' or
  'spearman_rho') over resampled pairs; (nan, nan) with fewer than 2 pairs."""
  if statistic not in STATISTICS:
    raise ValueError(f'statistic must be one of {sorted(STATISTICS)}, got {statistic!r}')
  if n_boot < 1 or not 0 < level < 1:
    raise ValueError(f'n_boot must be >= 1 and level in (0, 1), got {n_boot}, {level}')
  x, y = _pairs(x, y)
  n = len(x)
  if n < 2:
    return float('nan'), float('nan')
  index = np.random.default_rng(seed).integers(0, n, (n_boot, n))
  values = []
  for start in range(0, n_boot, chunk):  # bounds the [chunk, n, n] sign arrays of τ
    i = index[start:start + chunk]
    values.append(STATISTICS[statistic](_ranks(x[i]), _ranks(y[i])))
  values = np.concatenate(values)
  values = values[np.isfinite(values)]
  if not len(values):
    return float('nan'), float('nan')
  alpha = (1 - level) / 2
  low, high = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
  return float(low), float(high)


@dataclasses.dataclass(frozen=True)
class Correlation:
  """τ and ρ of one measure against one accuracy column, each with its interval."""
  n: int
  kendall_tau: float
  kendall_tau_ci: Tuple[float, float]
  spearman_rho: float
  spearman_rho_ci: Tuple[float, float]

  def to_dict(self) -> Dict[str, object]:
    return {'n': self.n, 'kendall_tau': self.kendall_tau,
            'kendall_tau_ci': list(self.kendall_tau_ci), 'spearman_rho': self.spearman_rho,
            'spearman_rho_ci': list(self.spearman_rho_ci)}


def correlate(x: Sequence[float], y: Sequence[float], n_boot: int = 1000, seed: int = 0,
              level: float = 0.95) -> Correlation:
  """τ and ρ of (x, y) with seeded bootstrap intervals (one draw of indices for both)."""
  xs, ys = _pairs(x, y)
  return Correlation(len(xs), kendall_tau(xs, ys),
                     bootstrap_interval(xs, ys, 'kendall_tau', n_boot, seed, level),
                     spearman_rho(xs, ys),
                     bootstrap_interval(xs, ys, 'spearman_rho', n_boot, seed, level))


def dense_ranks(values: Sequence[Optional[float]], higher_is_better: bool) -> List[int]:
  """Dense ranks from 1 (best); equal values share a rank; None and non-finite values rank
  last (as `search/grow.py` ranks candidates: a bad network is the worst)."""
  def key(v):
    if v is None or not np.isfinite(v):
      return (1, 0.0)
    return (0, -float(v) if higher_is_better else float(v))
  order = sorted({key(v) for v in values})
  rank = {k: i + 1 for i, k in enumerate(order)}
  return [rank[key(v)] for v in values]


def combined_score(lengths: Sequence[Optional[float]],
                   ntks: Sequence[Optional[float]]) -> List[float]:
  """The As-ViT combined rank as a score, higher = predicted better: −(rank of L^E,
  descending + rank of κ_Θ, ascending), the rank sum the scaling minimises."""
  if len(lengths) != len(ntks):
    raise ValueError(f'{len(lengths)} lengths but {len(ntks)} NTK values')
  rl, rk = dense_ranks(lengths, True), dense_ranks(ntks, False)
  return [-float(a + b) for a, b in zip(rl, rk)]


@dataclasses.dataclass(frozen=True)
class GroupTau:
  """τ within groups of similar size: per group (low, high, n, τ), and the mean of the
  groups' τ weighted by their number of pairs."""
  groups: Tuple[Tuple[float, float, int, float], ...]
  weighted_tau: float

  def to_dict(self) -> Dict[str, object]:
    return {'groups': [{'low': lo, 'high': hi, 'n': n, 'kendall_tau': t}
                       for lo, hi, n, t in self.groups], 'weighted_tau': self.weighted_tau}


def tau_within_groups(x: Sequence[float], y: Sequence[float], size: Sequence[float],
                      num_groups: int = 4) -> GroupTau:
  """Kendall-τ of (x, y) inside each quantile bin of `size` (e.g. #params).

  Bins are the `num_groups` quantiles of `size`; a value on an edge goes to the lower bin
  (the first bin includes its low edge). Groups with < 2 networks get τ NaN and no weight.
  """
  if num_groups < 1:
    raise ValueError(f'num_groups must be >= 1, got {num_groups}')
  x, y, size = (np.asarray(a, np.float64) for a in (x, y, size))
  if not x.shape == y.shape == size.shape:
    raise ValueError(f'x, y and size must have one length, got {x.shape}, {y.shape}, '
                     f'{size.shape}')
  edges = np.quantile(size, np.linspace(0, 1, num_groups + 1))
  groups, total, weight = [], 0.0, 0.0
  for g in range(num_groups):
    low, high = edges[g], edges[g + 1]
    inside = (size <= high) & ((size > low) if g else (size >= low))
    tau = kendall_tau(x[inside], y[inside])
    n = int(inside.sum())
    groups.append((float(low), float(high), n, tau))
    if np.isfinite(tau):
      pairs = n * (n - 1) / 2
      total, weight = total + pairs * tau, weight + pairs
  return GroupTau(tuple(groups), total / weight if weight else float('nan'))


def percentile(value: float, population: Sequence[float]) -> float:
  """Where `value` falls among `population`, in percent: 100·(#below + ½·#equal) / size, so
  a value above all scores 100, below all 0, the median 50 (NaN for an empty population)."""
  population = np.asarray(population, np.float64)
  if not len(population):
    return float('nan')
  below = np.sum(population < value)
  equal = np.sum(population == value)
  return float(100.0 * (below + 0.5 * equal) / len(population))
