import math

import pytest

from asvit_tf.search import reward as reward_lib


def test_relative_change_uses_the_last_20_values_and_eps():
  assert reward_lib.relative_change([5.0]) == 0.0
  assert reward_lib.relative_change([1.0, 3.0]) == pytest.approx(2 / (2 + 1e-6))
  values = [100.0] + [float(i % 2) for i in range(20)] + [0.5]
  # the 100 fell out of the window: range is 1 (0..1), change 0.5 - 1 = -0.5
  assert reward_lib.relative_change(values) == pytest.approx(-0.5 / (1 + 1e-6))
  assert reward_lib.relative_change([2.0, 2.0]) == 0.0  # range 0: eps keeps it finite


def test_length_ntk_reward_on_a_hand_made_history():
  tracker = reward_lib.RewardTracker('length_ntk')
  r0, _ = tracker.add({'length': 1.0, 'ntk': 10.0})
  assert r0 == 0.0
  r1, _ = tracker.add({'length': 2.0, 'ntk': 6.0})
  # ΔL = 1/1, Δκ = -4/4: reward = 1 - (-1) = 2
  assert r1 == pytest.approx(1 / (1 + 1e-6) + 4 / (4 + 1e-6))
  r2, used = tracker.add({'length': 1.5, 'ntk': 8.0})
  assert used == {'length': 1.5, 'ntk': 8.0}
  assert r2 == pytest.approx(-0.5 / (1 + 1e-6) - 2 / (4 + 1e-6))


def test_a_bad_network_gets_the_worst_ntk_seen():
  tracker = reward_lib.RewardTracker('length_ntk')
  tracker.add({'length': 1.0, 'ntk': 10.0})
  tracker.add({'length': 1.0, 'ntk': 30.0})
  tracker.add({'length': 1.0, 'ntk': 20.0})
  r, used = tracker.add({'length': 1.0, 'ntk': math.inf}, bad=True)
  assert used['ntk'] == 30.0
  assert r == pytest.approx(-(30.0 - 20.0) / (20.0 + 1e-6))
  # flagged bad with a finite value: still the worst
  _, used = tracker.add({'length': 1.0, 'ntk': 1.0}, bad=True)
  assert used['ntk'] == 30.0
  # a NaN L^E gets the worst (smallest) L^E seen
  tracker2 = reward_lib.RewardTracker('length')
  tracker2.add({'length': 3.0})
  tracker2.add({'length': 2.0})
  _, used = tracker2.add({'length': math.nan})
  assert used['length'] == 2.0


def test_a_bad_first_network_contributes_nothing():
  tracker = reward_lib.RewardTracker('ntk')
  r0, used = tracker.add({'ntk': None}, bad=True)
  assert r0 == 0.0 and math.isnan(used['ntk'])
  r1, _ = tracker.add({'ntk': 5.0})
  assert r1 == 0.0
  r2, _ = tracker.add({'ntk': 4.0})
  assert r2 == pytest.approx(1 / (1 + 1e-6))


def test_proxy_rewards_and_unknown_reward():
  tracker = reward_lib.RewardTracker('params')
  tracker.add({'params': 100})
  r, _ = tracker.add({'params': 300})
  assert r == pytest.approx(200 / (200 + 1e-6))
  assert reward_lib.reward_metrics('macs') == ('macs',)
  with pytest.raises(ValueError, match='`reward` must be one of'):
    reward_lib.reward_metrics('accuracy')


def test_ema_baseline_is_bias_corrected_and_includes_the_current_reward():
  b = reward_lib.EMABaseline(0.9)
  assert b.update(2.0) == pytest.approx(2.0)  # bias correction: the first value itself
  expected = (0.9 * 0.1 * 2.0 + 0.1 * 4.0) / (1 - 0.81)
  assert b.update(4.0) == pytest.approx(expected)
  restored = reward_lib.EMABaseline(**b.state())
  assert restored.update(1.0) == pytest.approx(b.update(1.0))
