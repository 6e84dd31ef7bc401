"""Rank statistics of `asvit_tf.correlate.stats` against SciPy on fixed data."""
import numpy as np
import pytest
from scipy import stats as sp_stats

from asvit_tf.correlate import stats


def _data(n=40, ties=False, seed=3):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=n)
  y = 0.5 * x + rng.normal(size=n)
  if ties:
    x, y = np.round(x, 0), np.round(y * 2, 0)
  return x, y


@pytest.mark.parametrize('ties', [False, True])
def test_kendall_and_spearman_equal_scipy(ties):
  x, y = _data(ties=ties)
  assert stats.kendall_tau(x, y) == pytest.approx(sp_stats.kendalltau(x, y)[0], abs=1e-12)
  assert stats.spearman_rho(x, y) == pytest.approx(sp_stats.spearmanr(x, y)[0], abs=1e-12)


def test_infinite_values_rank_last_and_nan_pairs_are_dropped():
  x = np.array([1.0, 2.0, np.inf, 4.0, np.nan, 3.0])
  y = np.array([1.0, 3.0, 9.0, 5.0, 0.0, 4.0])
  finite_x = np.array([1.0, 2.0, 1e9, 4.0, 3.0])  # inf is simply the largest
  finite_y = np.array([1.0, 3.0, 9.0, 5.0, 4.0])
  assert stats.kendall_tau(x, y) == pytest.approx(sp_stats.kendalltau(finite_x, finite_y)[0])
  assert stats.spearman_rho(x, y) == pytest.approx(sp_stats.spearmanr(finite_x, finite_y)[0])
  assert stats.kendall_tau([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) != stats.kendall_tau(
      [1.0, 2.0, 3.0], [1.0, 2.0, 3.0])  # constant x: undefined (NaN), not 1


@pytest.mark.parametrize('statistic,scipy_fn', [
    ('kendall_tau', lambda a, b: sp_stats.kendalltau(a, b)[0]),
    ('spearman_rho', lambda a, b: sp_stats.spearmanr(a, b)[0])])
def test_bootstrap_interval_equals_scipy_percentile_bootstrap(statistic, scipy_fn):
  x, y = _data(n=30, ties=True)
  ours = stats.bootstrap_interval(x, y, statistic, n_boot=300, seed=7)
  theirs = sp_stats.bootstrap((x, y), scipy_fn, n_resamples=300, paired=True,
                              vectorized=False, method='percentile', confidence_level=0.95,
                              rng=np.random.default_rng(7)).confidence_interval
  assert ours == pytest.approx((theirs.low, theirs.high), abs=1e-12)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
  x, y = _data(n=60)
  a = stats.correlate(x, y, n_boot=400, seed=1)
  assert a == stats.correlate(x, y, n_boot=400, seed=1)
  assert a.kendall_tau_ci != stats.correlate(x, y, n_boot=400, seed=2).kendall_tau_ci
  assert a.kendall_tau_ci[0] < a.kendall_tau < a.kendall_tau_ci[1]
  assert a.spearman_rho_ci[0] < a.spearman_rho < a.spearman_rho_ci[1]


def test_dense_ranks_and_combined_score():
  assert stats.dense_ranks([3.0, 1.0, 3.0, float('inf'), None], True) == [1, 2, 1, 3, 3]
  # non-finite and missing values rank last either way (a bad network is the worst)
  assert stats.dense_ranks([3.0, 1.0, 3.0, float('inf'), None], False) == [2, 1, 2, 3, 3]
  # L^E higher is better, κ_Θ lower is better; the score is minus the rank sum.
  lengths = [10.0, 20.0, 30.0]
  ntks = [5.0, 100.0, 50.0]
  # L^E ranks 3, 2, 1; κ_Θ ranks 1, 3, 2 -> sums 4, 5, 3.
  assert stats.combined_score(lengths, ntks) == [-4.0, -5.0, -3.0]


def test_tau_within_groups_on_hand_made_data():
  # Two size groups; inside each, x orders y perfectly (τ=1), across groups size decides.
  size = [1, 2, 3, 4, 10, 11, 12, 13]
  y = [1, 2, 3, 4, 10, 11, 12, 13]
  x = [4, 3, 2, 1, 8, 7, 6, 5]  # reversed inside each group: τ = -1 within
  result = stats.tau_within_groups(x, y, size, num_groups=2)
  assert [g[2] for g in result.groups] == [4, 4]
  assert [g[3] for g in result.groups] == [-1.0, -1.0]
  assert result.weighted_tau == -1.0
  assert stats.kendall_tau(x, y) > 0  # overall τ is positive: size alone carries it
