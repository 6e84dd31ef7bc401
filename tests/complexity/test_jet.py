"""Curvature by the hand-written second-order jet (`complexity.jet`): the (h, v, a) of
forward-over-forward autodiff, on As-ViTs and PiTs, and the public curve metrics of the old
path."""
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from asvit_tf import complexity
from asvit_tf import models
from asvit_tf.complexity import attention
from asvit_tf.complexity import curves
from asvit_tf.complexity import jet
from asvit_tf.complexity import network
from asvit_tf.layers import blocks
from asvit_tf.models import pit
from asvit_tf.models import pit_size
from tests.complexity.conftest import linear_factory

C16 = '4,2,2|2,1,2|2,1,2|2,1,2|16,16'     # C=16 at 32 px: grids 8, 4, 2, 1
SEED = '8,2,3|4,1,2|4,1,4|4,1,6|32'       # C=32 at 64 px: 16×16 tokens in 8×8 windows
ODD = '5,4,2|3,2,3|2,2,2|4,1,2|16,16'     # at 40 px: 10×10 tokens in 3×3 windows, odd merges
TINY_PIT = pit_size.PitArch(8, 2, (1, 1, 1), (1, 2, 2))
# Two blocks in stage 2, MLP ratio 3, 4 heads in stage 3; at 48 px: grids 5, 3, 2.
SMALL_PIT = pit_size.PitArch(8, 3, (1, 2, 1), (1, 2, 4))


def _asvit(arch, merge='plain'):
  return lambda ln: models.AsViT(arch, num_classes=1, use_layer_norm=ln, merge=merge,
                                 name='measured')


def _pit(arch, size, num_tokens=1):
  return lambda ln: pit.PiT(arch, size, 10, use_layer_norm=ln, num_tokens=num_tokens,
                            name='measured_pit')


def _forward_over_forward_and_jet(factory, size, traced=False):
  shape = (size, size, 3)
  net = network.Network(factory, False, shape)
  net.reinitialise(4, 0)
  assert jet.supports(net.model)
  u0, u1 = (tf.constant(u) for u in curves.input_curve(shape, 4, 0))
  theta = tf.constant(curves.distinct_angles(curves.angles(6)))
  want = curves.derivatives(lambda x: net.model.features(x, training=True), u0, u1, theta)
  x = curves.curve_points(u0, u1, theta)
  run = tf.function(jet.features_jet) if traced else jet.features_jet
  return want, run(net.model, x, curves.curve_tangents(u0, u1, theta), -x)


def _assert_jets_equal(got, want, rtol):
  for name, g, w in zip('hva', got, want):
    g, w = g.numpy(), w.numpy()
    assert np.all(np.isfinite(w)) and np.abs(w).max() > 0, name
    np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * np.abs(w).max(), err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize('factory, size, traced', [
    (_asvit(C16), 32, False),
    (_asvit(SEED), 64, False),
    (_asvit(ODD, 'residual'), 40, False),
    (_asvit(ODD), 40, True),
])
def test_asvit_jet_equals_forward_over_forward(float64, monkeypatch, factory, size, traced):
  """In float64, h, v = dh/dθ and a = d²h/dθ² by hand equal autodiff's to 1e-10, with
  padded windows, odd merges and the residual merge's shortcut too; traced with the
  attention maps one at a time (budget 1 byte)."""
  if traced:
    monkeypatch.setattr(attention, 'GROUP_BYTES', 1)
  want, got = _forward_over_forward_and_jet(factory, size, traced)
  _assert_jets_equal(got, want, 1e-10)


@pytest.mark.slow
@pytest.mark.parametrize('factory, size, traced', [
    (_pit(TINY_PIT, 32), 32, False),
    (_pit(SMALL_PIT, 48), 48, False),
    (_pit(SMALL_PIT, 48), 48, True),
    (_pit(TINY_PIT, 32, num_tokens=2), 32, False),   # the distillation token rides along
])
def test_pit_jet_equals_forward_over_forward(float64, monkeypatch, factory, size, traced):
  """The same for PiT: its position embedding and class token are constants, its pooling
  (depthwise conv on the map, Dense on the token) is linear."""
  if traced:
    monkeypatch.setattr(attention, 'GROUP_BYTES', 1)
  want, got = _forward_over_forward_and_jet(factory, size, traced)
  _assert_jets_equal(got, want, 1e-10)


def _inputs(shape, count, seed=0):
  rng = np.random.default_rng(seed)
  return [tf.constant(rng.normal(size=shape)) for _ in range(count)]


def _while_ops(fn, *args):
  graph = tf.function(fn).get_concrete_function(*args).graph
  return sum(op.type in ('While', 'StatelessWhile') for op in graph.get_operations())


@pytest.mark.parametrize('budget', [None, 7 * 7 * 8])
def test_attention_jet_equals_forward_over_forward(monkeypatch, budget):
  """(o, ȯ, ö) of softmax(q kᵀ)·v along q + θq̇ + θ²q̈/2 (and k, v alike), eagerly and
  traced group by group (budget: one 7×7 float64 map per group)."""
  if budget is not None:
    monkeypatch.setattr(attention, 'GROUP_BYTES', budget)
  tensors = _inputs([3, 2, 7, 5], 9, seed=2)
  theta, one = tf.constant(0.0, tf.float64), tf.constant(1.0, tf.float64)
  with tf.autodiff.ForwardAccumulator(theta, one) as outer:
    with tf.autodiff.ForwardAccumulator(theta, one) as inner:
      moved = [x + theta * dx + 0.5 * theta * theta * ddx
               for x, dx, ddx in zip(tensors[:3], tensors[3:6], tensors[6:])]
      out = blocks.attention(*moved)
    velocity = inner.jvp(out)
  want = (out, velocity, outer.jvp(velocity))
  for got in (attention.attention_with_jet(*tensors),
              tf.function(attention.attention_with_jet)(*tensors)):
    for g, w in zip(got, want):
      np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-12, atol=1e-14)
  assert _while_ops(attention.attention_with_jet, *tensors) == (1 if budget else 0)


def _old_path():
  """The curve metrics with the jet switched off: forward-over-forward accumulators."""
  return mock.patch.object(jet, 'supports', lambda model: False)


@pytest.mark.slow
@pytest.mark.parametrize('build, size', [(_asvit(ODD, 'residual'), 40),
                                         (pit.pit_factory(TINY_PIT, image_size=32), 32)])
def test_curve_metrics_by_jet_equal_the_old_path(build, size):
  """The public κ, L^E_κ and L^E in float32, eagerly and traced: the jet's equal the
  accumulators' within float32 rounding, and the accumulators are not used."""
  kwargs = dict(image_size=size, num_points=4, repeats=2, seed=3)
  with _old_path():   # eager: a traced forward-over-forward takes the suite's time
    old = complexity.curve_metrics(build, mode='eager', **kwargs)
  for mode in ('eager', 'graph'):
    with mock.patch.object(curves, 'derivatives', side_effect=AssertionError('autodiff')):
      new = complexity.curve_metrics(build, mode=mode, **kwargs)
    for metric in complexity.CURVE_METRICS:
      assert np.all(np.isfinite(new[metric].values)), (mode, metric)
      np.testing.assert_allclose(new[metric].values, old[metric].values, rtol=1e-5,
                                 err_msg=f'{mode} {metric}')


@pytest.mark.slow
def test_xla_and_auto_give_the_jet_values():
  kwargs = dict(image_size=32, num_points=6, repeats=1, seed=1,
                metrics=('curvature', 'curvature_length'))
  graph = complexity.curve_metrics(C16, mode='graph', **kwargs)
  for mode in ('xla', 'auto'):
    got = complexity.curve_metrics(C16, mode=mode, **kwargs)
    for metric in kwargs['metrics']:
      np.testing.assert_allclose(got[metric].values, graph[metric].values, rtol=1e-5,
                                 err_msg=f'{mode} {metric}')


def test_jet_only_for_the_curve_networks():
  def built(factory, size=32):
    return network.Network(factory, False, (size, size, 3)).model
  assert jet.supports(built(lambda ln: models.AsViT(C16, num_classes=1, use_layer_norm=False)))
  assert not jet.supports(built(lambda ln: models.AsViT(C16, num_classes=1)))
  assert not jet.supports(built(lambda ln: models.AsViT(C16, num_classes=1, use_layer_norm=False,
                                                        drop_path_rate=0.1)))
  assert jet.supports(built(lambda ln: pit.PiT(TINY_PIT, 32, use_layer_norm=False)))
  with_norm = built(lambda ln: pit.PiT(TINY_PIT, 32))
  assert not jet.supports(with_norm)
  assert not jet.supports(built(lambda ln: pit.PiT(TINY_PIT, 32, use_layer_norm=False,
                                                   drop_path_rate=0.1)))
  linear = linear_factory(np.ones((3072, 2), 'float32'))(False)
  assert not jet.supports(linear)
  images = tf.zeros([1, 32, 32, 3])
  for model in (with_norm, linear):
    with pytest.raises(ValueError, match='needs an AsViT or a PiT without LayerNorm'):
      jet.features_jet(model, images, images, images)


@pytest.mark.slow
def test_a_pit_with_layer_norms_falls_back_to_forward_over_forward():
  """A given model the jet does not take (LayerNorms kept) is measured by the accumulators."""
  model = pit.PiT(TINY_PIT, 32, use_layer_norm=True)
  model(tf.zeros([1, 32, 32, 3]))
  with mock.patch.object(jet, 'features_jet', side_effect=AssertionError('jet')):
    got = complexity.curvature(model, image_size=32, num_points=4, repeats=1, mode='eager')
  assert np.all(np.isfinite(got.values))
