import math

import numpy as np
import pytest

from asvit_tf import arch as arch_lib
from asvit_tf.search import policy as policy_lib


def test_init_is_small_seeded_and_shaped_like_the_search_space():
  p = policy_lib.Policy(seed=3)
  assert p.sizes == [len(c) for _, c in arch_lib.SEARCH_SPACE]
  assert all(np.abs(l).max() < 1e-2 for l in p.logits)
  assert all(np.array_equal(a, b) for a, b in zip(p.logits, policy_lib.Policy(seed=3).logits))
  assert not np.array_equal(p.logits[0], policy_lib.Policy(seed=4).logits[0])


def test_log_prob_and_entropy():
  p = policy_lib.Policy(sizes=[2, 3])
  p.load_state([[0.0, math.log(3.0)], [0.0, 0.0, 0.0]])  # probabilities (1/4, 3/4), uniform
  assert p.log_prob([1, 2]) == pytest.approx(math.log(0.75) + math.log(1 / 3))
  expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) + math.log(3)
  assert p.entropy() == pytest.approx(expected)
  assert p.argmax() == [1, 0]


def test_sampling_follows_the_probabilities_independently():
  p = policy_lib.Policy(sizes=[2, 3])
  p.load_state([[0.0, math.log(3.0)], [math.log(2.0), 0.0, 0.0]])
  rng = np.random.default_rng(0)
  samples = np.array([p.sample(rng) for _ in range(4000)])
  assert np.mean(samples[:, 0] == 1) == pytest.approx(0.75, abs=0.03)
  assert np.mean(samples[:, 1] == 0) == pytest.approx(0.5, abs=0.03)
  # independence: the joint frequency is the product of the marginals
  joint = np.mean((samples[:, 0] == 1) & (samples[:, 1] == 0))
  assert joint == pytest.approx(0.375, abs=0.03)


def test_log_prob_gradient_matches_finite_differences():
  p = policy_lib.Policy(seed=1, sizes=[3, 4])
  p.load_state([[0.3, -0.2, 0.1], [0.0, 1.0, -1.0, 0.5]])
  actions = [2, 1]
  grads = p.log_prob_grad(actions)
  for d in range(2):
    for j in range(len(p.logits[d])):
      saved = p.logits[d][j]
      p.logits[d][j] = saved + 1e-6
      up = p.log_prob(actions)
      p.logits[d][j] = saved - 1e-6
      down = p.log_prob(actions)
      p.logits[d][j] = saved
      assert grads[d][j] == pytest.approx((up - down) / 2e-6, abs=1e-6)


def test_a_positive_advantage_moves_probability_toward_the_action():
  p = policy_lib.Policy(seed=0)
  adam = policy_lib.Adam(lr=0.08)
  actions = [len(c) - 1 for _, c in arch_lib.SEARCH_SPACE]
  before = [q[a] for q, a in zip(p.probabilities(), actions)]
  p.reinforce_step(adam, actions, advantage=1.0)
  after = [q[a] for q, a in zip(p.probabilities(), actions)]
  assert all(b > a for a, b in zip(before, after))
  q = policy_lib.Policy(seed=0)  # a negative advantage moves away
  before = [x[0] for x in q.probabilities()]
  q.reinforce_step(policy_lib.Adam(lr=0.08), [0] * 12, advantage=-1.0)
  assert all(x[0] < b for x, b in zip(q.probabilities(), before))


def test_reinforce_learns_the_rewarded_choice():
  p = policy_lib.Policy(seed=0, sizes=[5])
  adam = policy_lib.Adam(lr=0.08)
  rng = np.random.default_rng(0)
  for _ in range(150):
    a = p.sample(rng)
    p.reinforce_step(adam, a, advantage=1.0 if a[0] == 3 else -0.25)
  assert p.argmax() == [3]
  assert p.probabilities()[0][3] > 0.9


def test_adam_first_step_is_lr_times_sign():
  params = [np.zeros(3)]
  adam = policy_lib.Adam(lr=0.08)
  adam.step(params, [np.array([2.0, -0.5, 0.0])])
  np.testing.assert_allclose(params[0], [-0.08, 0.08, 0.0], atol=1e-9)
  restored = policy_lib.Adam.from_state(adam.state())
  assert restored.t == 1 and np.array_equal(restored.m[0], adam.m[0])
