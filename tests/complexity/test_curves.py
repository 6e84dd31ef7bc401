"""Length distortion, curvature and curvature-weighted length against brute force and
closed forms (issue 3, correctness a, b, d, e)."""
import dataclasses
import math
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from asvit_tf import complexity
from asvit_tf.complexity import attention
from asvit_tf.complexity import curves
from asvit_tf.complexity import dual
from asvit_tf.complexity import network
from asvit_tf.complexity import reference
from asvit_tf.models import asvit
from tests.complexity.conftest import TINY
from tests.complexity.conftest import linear_factory


NARROW = '4,2,2|2,1,2|2,1,2|2,1,2|8,4'    # F = 32 features: 32 reference passes


def _rel(a, b):
  return abs(a - b) / max(abs(b), 1e-300)


@pytest.mark.slow
def test_tiny_asvit_matches_per_coordinate_reference(float64):
  """(a) One forward-mode pass (and forward-over-forward) equals one reverse pass per
  output coordinate (and nested tapes), in float64, to 1e-4 relative."""
  size, n, seed = 32, 5, 3
  fast = complexity.curve_metrics(NARROW, image_size=size, num_points=n, repeats=1, seed=seed)
  shape = (size, size, 3)
  net = network.Network(network.model_factory(NARROW), False, shape)
  assert net.dtype == tf.float64
  net.reinitialise(seed, 0)    # the same weights and curve as repeat 0 above
  u0, u1 = curves.input_curve(shape, seed, 0)
  slow = reference.curve_metrics(lambda x: net.model.features(x, training=True),
                                 tf.constant(u0), tf.constant(u1),
                                 tf.constant(curves.angles(n)))
  for metric in complexity.CURVE_METRICS:
    assert not fast[metric].bad
    assert _rel(fast[metric].mean, slow[metric]) < 1e-4, (metric, fast[metric], slow[metric])


def _linear_closed_form(w, shape, seed, n):
  """L^E, κ, L^E_κ of h(θ) = W(u0 cos θ + u1 sin θ): an ellipse."""
  u0, u1 = curves.input_curve(shape, seed, 0)
  p, q = u0.ravel() @ w, u1.ravel() @ w
  theta = curves.angles(n)
  v = -np.sin(theta)[:, None] * p + np.cos(theta)[:, None] * q
  speed = np.linalg.norm(v, axis=1)
  gram = max((p @ p) * (q @ q) - (p @ q) ** 2, 0.0)   # constant along an ellipse
  return {'length': speed.sum(), 'curvature': np.sum(math.sqrt(gram) / speed**3),
          'curvature_length': np.sum(math.sqrt(gram) / speed**2)}


def test_linear_map_closed_forms(float64):
  """(b) f(x) = Wx maps the input circle to an ellipse: L^E = Σ‖W x'(θ_k)‖ and
  κ_k = √Gram(Wu0, Wu1) / ‖v_k‖³. (κ is 0 only when the image is straight, next test.)"""
  shape, n, seed = (4, 4, 3), 10, 1
  w = np.random.default_rng(0).normal(size=(48, 7))
  got = complexity.curve_metrics(linear_factory(w), image_size=4, num_points=n, repeats=1,
                                 seed=seed)
  want = _linear_closed_form(w, shape, seed, n)
  for metric in complexity.CURVE_METRICS:
    assert _rel(got[metric].mean, want[metric]) < 1e-9, metric


def test_rank_one_linear_map_is_straight(float64):
  """(b) A rank-1 W maps the circle onto a segment: κ = L^E_κ = 0 up to rounding."""
  rng = np.random.default_rng(1)
  w = np.outer(rng.normal(size=48), rng.normal(size=5))
  got = complexity.curve_metrics(linear_factory(w), image_size=4, num_points=10, repeats=1)
  assert got['length'].mean > 0
  # Relative to the scale of κ of a curve of this size (1 / radius ~ 1 / length).
  assert got['curvature'].mean * got['length'].mean < 1e-12
  assert got['curvature_length'].mean < 1e-12


def test_float32_linear_map_close_to_closed_form():
  w = np.random.default_rng(2).normal(size=(48, 7)).astype('float32')
  got = complexity.curve_metrics(linear_factory(w), image_size=4, num_points=10, repeats=1)
  want = _linear_closed_form(w.astype(np.float64), (4, 4, 3), 0, 10)
  for metric in complexity.CURVE_METRICS:
    assert _rel(got[metric].mean, want[metric]) < 1e-4, metric


def test_wrappers_equal_curve_metrics():
  w = np.random.default_rng(5).normal(size=(48, 6)).astype('float32')
  kwargs = dict(image_size=4, num_points=5, repeats=2, seed=9)
  both = complexity.curve_metrics(linear_factory(w), **kwargs)
  assert complexity.length_distortion(linear_factory(w), **kwargs) == dataclasses.replace(
      both['length'], seconds=mock.ANY)
  assert complexity.curvature(linear_factory(w), **kwargs).values == both['curvature'].values
  assert (complexity.curvature_weighted_length(linear_factory(w), **kwargs).values
          == both['curvature_length'].values)


def test_same_seed_same_numbers_and_independent_repeats():
  """(d) Determinism by seed; each repeat has its own weights and curve."""
  a = complexity.length_distortion(TINY, image_size=32, num_points=4, repeats=2, seed=7)
  b = complexity.length_distortion(TINY, image_size=32, num_points=4, repeats=2, seed=7)
  c = complexity.length_distortion(TINY, image_size=32, num_points=4, repeats=1, seed=8)
  assert a.values == b.values and a.mean == b.mean
  assert len(a.values) == 2 and a.values[0] != a.values[1]
  assert c.values[0] not in a.values
  assert not a.bad and a.mean > 0 and a.mean == pytest.approx(np.mean(a.values))


def test_graph_mode_equals_eager():
  w = np.random.default_rng(3).normal(size=(48, 6)).astype('float32')
  eager = complexity.curve_metrics(linear_factory(w), image_size=4, num_points=5, repeats=2)
  graph = complexity.curve_metrics(linear_factory(w), image_size=4, num_points=5, repeats=2,
                                   mode='graph')
  for metric in complexity.CURVE_METRICS:
    np.testing.assert_allclose(eager[metric].values, graph[metric].values, rtol=1e-5)


@pytest.mark.parametrize('bad', [np.inf, np.nan])
def test_non_finite_weight_is_bad_not_an_error(bad):
  """(e) A network with an inf (or nan) weight is reported bad; nothing is raised."""
  w = np.ones((48, 3), 'float32')
  w[5, 1] = bad
  results = complexity.curve_metrics(linear_factory(w), image_size=4, num_points=4, repeats=2)
  for metric in complexity.CURVE_METRICS:
    r = results[metric]
    assert r.bad and not math.isfinite(r.mean) and len(r.values) == 2


def test_zero_velocity_has_zero_length_and_a_bad_curvature():
  """A constant network: the curve does not move, so L^E is 0 (a valid value, not bad),
  while the curvature (velocity in the denominator) is undefined, so bad."""
  results = complexity.curve_metrics(linear_factory(np.zeros((48, 3), 'float32')),
                                     image_size=4, num_points=4, repeats=1)
  assert results['length'].mean == 0 and not results['length'].bad
  assert results['curvature'].bad and results['curvature_length'].bad


def test_metrics_from_products_formulas():
  """κ and L^E_κ from the per-point products, by hand for a unit circle (κ = 1 per point)."""
  out = curves.metrics_from_products({'vv': np.ones(4), 'aa': np.ones(4), 'va': np.zeros(4)})
  assert out == curves.metrics_from_products(
      {'vv': np.ones(4), 'aa': np.ones(4), 'va': np.zeros(4), 'aperp': np.ones(4)})
  assert out == {'length': 4.0, 'curvature': 4.0, 'curvature_length': 4.0}
  # Doubling the speed (radius 2): κ halves, L^E_κ (turning per unit θ) stays.
  out = curves.metrics_from_products({'vv': 4 * np.ones(4), 'aa': 4 * np.ones(4),
                                      'va': np.zeros(4)})
  assert out == {'length': 8.0, 'curvature': 2.0, 'curvature_length': 4.0}


@pytest.mark.slow
def test_the_point_at_2pi_is_the_point_at_0(float64):
  """The network sees n - 1 points; the sums still count θ = 2π (the point θ = 0 again), as
  they would with all n points through the network."""
  size, n, seed = 32, 6, 2
  got = complexity.curve_metrics(TINY, image_size=size, num_points=n, repeats=1, seed=seed)
  shape = (size, size, 3)
  net = network.Network(network.model_factory(TINY), False, shape)
  net.reinitialise(seed, 0)
  u0, u1 = curves.input_curve(shape, seed, 0)
  features = lambda x: net.model.features(x, training=True)
  _, v, a = curves.derivatives(features, tf.constant(u0), tf.constant(u1),
                               tf.constant(curves.angles(n)))
  every = curves.point_products(v, a)
  np.testing.assert_allclose(every['vv'][-1], every['vv'][0], rtol=1e-12)
  want = curves.metrics_from_products({k: t.numpy() for k, t in every.items()})
  for metric in complexity.CURVE_METRICS:
    assert _rel(got[metric].mean, want[metric]) < 1e-12, metric
  assert list(curves.distinct_angles(curves.angles(n))) == list(curves.angles(n)[:-1])
  assert list(curves.with_period_end(np.arange(5.0), n)) == [0, 1, 2, 3, 4, 0]
  assert list(curves.distinct_angles(curves.angles(1))) == [0.0]


PADDED = '5,4,2|3,2,3|2,2,2|4,1,2|16,8'   # at 40 px: 10×10 tokens in 3×3 windows, odd merges


@pytest.mark.parametrize('arch, size, traced', [(TINY, 32, False), (PADDED, 40, False),
                                                (PADDED, 40, True)])
@pytest.mark.slow
def test_velocity_by_hand_equals_the_accumulator(float64, monkeypatch, arch, size, traced):
  """`dual` pushes the tangent through the layers by hand: the same h and v = dh/dθ as
  ForwardAccumulator, with padded windows and odd patch mergings too; traced with the
  attention maps one at a time (`attention`, budget 1 byte) too."""
  shape, n = (size, size, 3), 5
  net = network.Network(network.model_factory(arch), False, shape)
  net.reinitialise(4, 0)
  assert dual.supports(net.model)
  u0, u1 = (tf.constant(u) for u in curves.input_curve(shape, 4, 0))
  theta = tf.constant(curves.angles(n))
  features = lambda x: net.model.features(x, training=True)
  h, v, _ = curves.derivatives(features, u0, u1, theta, second_order=False)
  by_hand = lambda x, t: dual.features_and_velocity(net.model, x, t)
  if traced:
    monkeypatch.setattr(attention, 'GROUP_BYTES', 1)
    by_hand = tf.function(by_hand)
  h2, v2 = by_hand(curves.curve_points(u0, u1, theta), curves.curve_tangents(u0, u1, theta))
  np.testing.assert_allclose(h2.numpy(), h.numpy(), rtol=1e-12, atol=0)
  np.testing.assert_allclose(v2.numpy(), v.numpy(), rtol=1e-9, atol=1e-12 * np.abs(v).max())


@pytest.mark.slow
def test_length_by_hand_equals_length_with_curvature():
  """L^E alone (by hand) is the L^E of the accumulator pass that curvature takes."""
  alone = complexity.length_distortion(PADDED, image_size=40, num_points=10, repeats=2, seed=5)
  both = complexity.curve_metrics(PADDED, image_size=40, num_points=10, repeats=2, seed=5,
                                  metrics=('length', 'curvature'))
  np.testing.assert_allclose(alone.values, both['length'].values, rtol=1e-5)


def test_velocity_by_hand_only_for_the_curve_network():
  def built(**kwargs):
    return network.Network(lambda ln: asvit.AsViT(TINY, num_classes=1, **kwargs), False,
                           (32, 32, 3)).model
  assert dual.supports(built(use_layer_norm=False))
  assert not dual.supports(built(use_layer_norm=True))
  assert not dual.supports(built(use_layer_norm=False, drop_path_rate=0.1))
  assert not dual.supports(linear_factory(np.ones((48, 2), 'float32'))(False))
  with pytest.raises(ValueError, match='without LayerNorm'):
    dual.features_and_velocity(built(use_layer_norm=True), tf.zeros([1, 32, 32, 3]),
                               tf.zeros([1, 32, 32, 3]))


def test_input_curve_is_orthonormal():
  u0, u1 = curves.input_curve((8, 8, 3), seed=4, repeat=1)
  assert u0.shape == (8, 8, 3)
  np.testing.assert_allclose([np.sum(u0 * u0), np.sum(u1 * u1), np.sum(u0 * u1)], [1, 1, 0],
                             atol=1e-12)
  np.testing.assert_allclose(curves.angles(10)[[0, -1]], [0, 2 * np.pi])


@pytest.mark.parametrize('kwargs, message', [
    ({'metrics': ('length', 'speed')}, 'unknown curve metric'),
    ({'repeats': 0}, 'repeats'),
    ({'num_points': 0}, 'num_points'),
    ({'mode': 'fast'}, 'mode'),
])
def test_user_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    complexity.curve_metrics(TINY, image_size=32, **kwargs)
