import math

import pytest

from asvit_tf import arch as arch_lib
from asvit_tf.models import size
from asvit_tf.search import grow

SEED = arch_lib.Topology.parse(arch_lib.SEED)


def test_scale_width_rounds_half_up_exactly():
  assert [grow.scale_width(8, p) for p in (5, 10, 15, 20)] == [8, 9, 9, 10]
  assert grow.scale_width(10, 5) == 11  # 10.5 -> 11 (Python's round() would give 10)
  assert grow.scale_width(30, 5) == 32  # 31.5 -> 32
  assert grow.scale_width(45, 20) == 54


def test_candidates_skip_duplicate_widths_and_add_one_block():
  cands = grow.candidates(8, (1, 1, 1, 1))
  assert len(cands) == 12  # widths 8, 9, 10 (the second 9 is skipped) x 4 stages
  assert [c.width for c in cands[::4]] == [8, 9, 10]
  assert [c.percent for c in cands[::4]] == [5, 10, 20]
  assert [c.depths for c in cands[:4]] == [(2, 1, 1, 1), (1, 2, 1, 1), (1, 1, 2, 1),
                                           (1, 1, 1, 2)]
  assert len(grow.candidates(40, (1, 2, 3, 1))) == 16  # 42, 44, 46, 48: all distinct
  c = cands[5]
  assert str(c.proxy(SEED)) == '8,2,3,1|4,1,2,2|4,1,4,1|4,1,6,1|32,9'
  assert str(c.real(SEED)) == '8,2,3,1|4,1,2,2|4,1,4,1|4,1,6,1|32,36'


def test_filter_by_params_uses_the_real_width():
  cands = grow.candidates(8, (1, 1, 1, 1))
  real = [size.estimate_params(c.real(SEED)) for c in cands]
  limit = sorted(real)[5]
  kept, dropped = grow.filter_by_params(cands, SEED, limit)
  assert len(kept) == 6 and len(dropped) == 6
  assert all(size.estimate_params(c.real(SEED)) <= limit for c in kept)
  assert grow.filter_by_params(cands, SEED, 1000)[0] == []


def test_dense_ranks_share_ties_and_put_non_finite_last():
  assert grow.dense_ranks([3.0, 1.0, 3.0, 2.0], higher_is_better=True) == [1, 3, 1, 2]
  assert grow.dense_ranks([3.0, 1.0, 3.0, 2.0], higher_is_better=False) == [3, 1, 3, 2]
  assert grow.dense_ranks([math.inf, 1.0, None, 2.0], higher_is_better=False) == [3, 1, 3, 2]
  assert grow.dense_ranks([math.nan, 1.0], higher_is_better=True) == [2, 1]


def test_select_takes_the_smallest_rank_sum():
  sel = grow.select([1.0, 3.0, 2.0], [5.0, 2.0, 1.0])
  # L ranks 3,1,2; κ ranks 3,2,1; sums 6,3,3 -> tie of 1 and 2
  assert sel.rank_sum == [6, 3, 3] and sel.tied == [1, 2]
  sel = grow.select([1.0, 3.0, 2.0], [5.0, 1.0, 2.0])
  assert sel.index == 1 and sel.tie_break == ''


def test_tie_break_by_the_metric_with_the_larger_relative_range():
  # L^E spread is large (relative range 1.0), κ_Θ tiny: L^E decides, preferring the
  # HIGHER value (the authors' code took the minimum here).
  lengths, ntks = [1.0, 3.0, 2.0], [10.0, 10.2, 10.1]
  sel = grow.select(lengths, ntks)
  assert sel.tied == [0, 1, 2] and sel.tie_break == 'length' and sel.index == 1
  # κ_Θ spread large, L^E tiny: κ_Θ decides, preferring the LOWER value.
  lengths, ntks = [1.0, 1.02, 1.01], [5.0, 2.0, 1.0]
  sel = grow.select(lengths, ntks)
  assert sel.tied == [1, 2] and sel.tie_break == 'ntk' and sel.index == 2
  assert grow.relative_range([1.0, 3.0]) == pytest.approx(1.0)
  # equal everywhere: enumeration order
  sel = grow.select([1.0, 1.0], [2.0, 2.0])
  assert sel.index == 0 and sel.tie_break == 'order'


def test_bad_candidates_rank_last():
  sel = grow.select([5.0, 1.0], [math.nan, 3.0])
  assert sel.rank_ntk == [2, 1] and sel.rank_sum == [3, 3]

