"""The complexity measures on a residual-merge As-ViT (issue 21): the by-hand velocity (L^E)
and the tapped NTK gradients cover the merges' shortcuts and equal the generic paths."""
import numpy as np
import pytest
import tensorflow as tf

from asvit_tf import complexity
from asvit_tf import models
from asvit_tf.complexity import curves
from asvit_tf.complexity import dual
from asvit_tf.complexity import network
from asvit_tf.complexity import ntk

ODD = '5,4,2|3,2,3|2,2,2|4,1,2|16,8'   # at 40 px: grids 10, 5, 3, 2 (odd merges)


def _factory(arch):
  return lambda ln: models.AsViT(arch, num_classes=1, use_layer_norm=ln, merge='residual',
                                 name='measured')


@pytest.mark.slow
def test_velocity_by_hand_equals_the_accumulator_with_shortcuts(float64):
  """`dual` pushes the tangent through the residual merges (linear, no bias) too."""
  shape = (40, 40, 3)
  net = network.Network(_factory(ODD), False, shape)
  net.reinitialise(4, 0)
  assert dual.supports(net.model)
  u0, u1 = (tf.constant(u) for u in curves.input_curve(shape, 4, 0))
  theta = tf.constant(curves.angles(5))
  features = lambda x: net.model.features(x, training=True)
  h, v, _ = curves.derivatives(features, u0, u1, theta, second_order=False)
  h2, v2 = dual.features_and_velocity(net.model, curves.curve_points(u0, u1, theta),
                                      curves.curve_tangents(u0, u1, theta))
  np.testing.assert_allclose(h2.numpy(), h.numpy(), rtol=1e-12, atol=0)
  np.testing.assert_allclose(v2.numpy(), v.numpy(), rtol=1e-9, atol=1e-12 * np.abs(v).max())
  alone = complexity.length_distortion(_factory(ODD), image_size=40, repeats=2, seed=5)
  both = complexity.curve_metrics(_factory(ODD), image_size=40, repeats=2, seed=5,
                                  metrics=('length', 'curvature'))
  np.testing.assert_allclose(alone.values, both['length'].values, rtol=1e-5)


@pytest.mark.slow
def test_tapped_ntk_equals_vmap_with_shortcuts(float64):
  """The shortcut's Dense is tapped like any other: its per-image gradients, and κ_Θ, equal
  the generic per-image (vmap) path's."""
  net = network.Network(_factory(ODD), True, (40, 40, 3))
  net.reinitialise(2, 0)
  weights = net.kernels()
  assert any('shortcut' in w.name for w in weights)
  taps = ntk.TappedGradients(net.model)
  try:
    assert taps.covers(weights)
    images = tf.constant(np.random.default_rng(3).normal(size=(3, 40, 40, 3)))
    features = lambda x: net.model.features(x, training=True)
    vmap = ntk.per_image_gradients(features, weights, images)
    tapped = ntk.tapped_per_image_gradients(taps, weights, images)
    for a, b in zip(vmap, tapped):
      np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-9, atol=1e-13)
  finally:
    taps.untap()
  kwargs = dict(image_size=40, repeats=2, seed=4, batch_size=5, chunk_size=2)
  by_taps = complexity.ntk_condition_number(_factory(ODD), method='taps', **kwargs)
  by_vmap = complexity.ntk_condition_number(_factory(ODD), method='vmap', **kwargs)
  np.testing.assert_allclose(by_taps.values, by_vmap.values, rtol=1e-4)
