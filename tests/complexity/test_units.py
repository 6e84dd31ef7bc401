"""κ_Θ and L^E by traced units kept across networks (method='units', issue 19; L^E's default):
the values of the other paths, one trace per kind of unit, and the networks refused."""
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from asvit_tf import complexity
from asvit_tf.complexity import dual
from asvit_tf.complexity import network
from asvit_tf.complexity import ntk
from asvit_tf.complexity import units
from asvit_tf.errors import UserInputError
from asvit_tf.models import asvit
from asvit_tf.models import pit
from asvit_tf.models import pit_size

# Padded windows and odd merges at 40 px; two equal blocks in stages 1 and 3.
DEEP = '5,4,2,2|3,2,3,1|2,2,2,2|4,1,2,1|16,8'
SHALLOW = '5,4,2|3,2,3|2,2,2|4,1,2|16,8'        # DEEP's units, one of each


@pytest.fixture(autouse=True)
def empty_cache():
  units.clear_cache()
  yield
  units.clear_cache()


@pytest.mark.slow
@pytest.mark.parametrize('arch,include_scales', [(DEEP, True), (SHALLOW, False)])
def test_units_give_the_tapped_pass_values(float64, arch, include_scales):
  kwargs = dict(image_size=40, repeats=2, seed=3, batch_size=5, include_scales=include_scales)
  got = complexity.ntk_condition_number(arch, method='units', **kwargs).values
  want = complexity.ntk_condition_number(arch, method='taps', mode='graph', **kwargs).values
  np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.slow
def test_theta_equals_the_per_image_gradients_kernel(float64):
  net = network.Network(network.model_factory(DEEP), True, (40, 40, 3))
  net.reinitialise(0, 0)
  images = tf.constant(np.random.default_rng(0).normal(size=(4, 40, 40, 3)))
  weights = net.kernels(include_scales=True)
  taps = ntk.TappedGradients(net.model, net.layers)
  try:
    want = ntk.kernel_matrix(taps(weights, images)).numpy()
  finally:
    taps.untap()
  np.testing.assert_allclose(units.kernel_matrix(net.model, images).numpy(), want,
                             rtol=1e-10)


@pytest.mark.slow
def test_one_trace_per_kind_of_unit_kept_across_networks():
  kwargs = dict(image_size=40, repeats=1, seed=0, batch_size=3)
  registered = set(network._gradient_registry())
  complexity.ntk_condition_number(SHALLOW, method='units', **kwargs)
  assert len(units._CACHE) == 8   # embedding, 3 merges, 4 blocks
  # the attention's gradient functions registered while tracing are let go once used
  assert set(network._gradient_registry()) == registered
  traces = {key: unit.forward for key, unit in units._CACHE.items()}
  complexity.ntk_condition_number(DEEP, method='units', **kwargs)
  # DEEP has SHALLOW's units and a second block of the same kind in stages 1 and 3: one
  # template per kind serves both places, so nothing new is traced
  assert len(units._CACHE) == 8
  assert all(units._CACHE[key].forward is f for key, f in traces.items())
  # the same topology again, other draws: nothing new, and other values
  a = complexity.ntk_condition_number(DEEP, method='units', **kwargs).values
  b = complexity.ntk_condition_number(DEEP, method='units', **{**kwargs, 'seed': 1}).values
  assert len(units._CACHE) == 8 and a != b


@pytest.mark.slow
def test_a_full_cache_drops_the_least_recently_used(monkeypatch):
  monkeypatch.setattr(units, 'MAX_UNITS', 3)
  kwargs = dict(image_size=40, repeats=1, seed=0, batch_size=3, method='units')
  got = complexity.ntk_condition_number(SHALLOW, **kwargs).values
  assert len(units._CACHE) == 3
  units.clear_cache()
  monkeypatch.setattr(units, 'MAX_UNITS', 256)
  assert complexity.ntk_condition_number(SHALLOW, **kwargs).values == got


def test_a_given_model_keeps_its_weights():
  model = asvit.AsViT(SHALLOW, num_classes=1, use_layer_norm=True)
  model(np.zeros((1, 40, 40, 3), 'float32'))
  before = [w.numpy().copy() for w in model.weights]
  images = np.random.default_rng(1).normal(size=(3, 40, 40, 3)).astype('float32')
  got = complexity.ntk_condition_number(model, images=images, repeats=1, method='units')
  want = complexity.ntk_condition_number(model, images=images, repeats=1, method='taps')
  np.testing.assert_allclose(got.values, want.values, rtol=1e-5)
  assert all(np.array_equal(w.numpy(), b) for w, b in zip(model.weights, before))


def test_other_networks_are_refused():
  with pytest.raises(UserInputError, match='As-ViT networks without drop path or remat'):
    complexity.ntk_condition_number(asvit.AsViT(SHALLOW, remat=True), image_size=40,
                                    repeats=1, method='units')
  factory = pit.pit_factory(pit_size.PitArch(4, 2, (1, 1, 1), (1, 2, 2)), 48)
  with pytest.raises(UserInputError, match='As-ViT networks'):
    complexity.ntk_condition_number(factory, image_size=48, repeats=1, method='units')


# L^E: the tangent pushed through unit by unit (`units.features_and_velocity`).
RESIDUAL_FIXED = dict(merge='residual', window_policy='fixed', window_reference_size=40)


@pytest.mark.slow
@pytest.mark.parametrize('arch', [DEEP, SHALLOW])
def test_length_by_units_gives_the_whole_network_values(float64, arch):
  kwargs = dict(image_size=40, num_points=6, repeats=2, seed=3)
  got = complexity.length_distortion(arch, method='units', **kwargs).values
  for mode in ('eager', 'graph'):
    want = complexity.length_distortion(arch, method='network', mode=mode, **kwargs).values
    np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=mode)
  # 'auto': eagerly where eager pays (this small batch; no unit traced), else the units
  units.clear_cache()
  eager = complexity.length_distortion(arch, method='network', mode='eager', **kwargs).values
  assert complexity.length_distortion(arch, **kwargs).values == eager
  assert not units._CACHE
  with mock.patch.object(network, 'EAGER_REPEATS', 0):
    assert complexity.length_distortion(arch, **kwargs).values == got
  assert units._CACHE


@pytest.mark.parametrize('options', [{}, RESIDUAL_FIXED])
def test_velocity_by_units_equals_the_whole_network_pass(float64, options):
  model = asvit.AsViT(DEEP, num_classes=1, use_layer_norm=False, **options)
  model(np.zeros((1, 40, 40, 3)))
  rng = np.random.default_rng(4)
  x, t = (tf.constant(rng.normal(size=(3, 40, 40, 3))) for _ in range(2))
  h, v = units.features_and_velocity(model, x, t)
  want_h, want_v = dual.features_and_velocity(model, x, t)

  def close(got, want):
    # Float64 rounding, relative to the vector's scale: the weights are drawn unseeded, and
    # a feature near zero once differed by 1e-18 (8.8e-12 of itself) in CI.
    want = want.numpy()
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
  close(h, want_h)
  close(v, want_v)
  close(h, model.features(x, training=True))


def test_length_traces_one_unit_per_kind_kept_across_networks():
  kwargs = dict(image_size=40, num_points=4, repeats=1, seed=0, method='units')
  complexity.length_distortion(SHALLOW, **kwargs)
  assert len(units._CACHE) == 8   # embedding, 3 merges, 4 blocks
  traces = {key: unit.forward for key, unit in units._CACHE.items()}
  # DEEP's second blocks in stages 1 and 3 are of kinds met: the same traces serve them
  deep = complexity.length_distortion(DEEP, **kwargs).values
  assert len(units._CACHE) == 8
  assert all(units._CACHE[key].forward is f for key, f in traces.items())
  assert deep != complexity.length_distortion(SHALLOW, **kwargs).values
  # and the values are those of a fresh process's traces
  units.clear_cache()
  assert complexity.length_distortion(DEEP, **kwargs).values == deep


def test_length_of_a_given_model_by_units_keeps_its_weights():
  model = asvit.AsViT(SHALLOW, num_classes=1, use_layer_norm=False)
  model(np.zeros((1, 40, 40, 3), 'float32'))
  before = [w.numpy().copy() for w in model.weights]
  got = complexity.length_distortion(model, image_size=40, num_points=5, repeats=1,
                                     method='units')
  want = complexity.length_distortion(model, image_size=40, num_points=5, repeats=1,
                                      method='network', mode='graph')
  np.testing.assert_allclose(got.values, want.values, rtol=1e-5)
  assert all(np.array_equal(w.numpy(), b) for w, b in zip(model.weights, before))


def test_length_by_units_refuses_what_it_cannot_measure():
  with pytest.raises(UserInputError, match='L\\^E alone on an As-ViT'):
    complexity.curve_metrics(SHALLOW, image_size=40, repeats=1, method='units')
  factory = pit.pit_factory(pit_size.PitArch(4, 2, (1, 1, 1), (1, 2, 2)), 48)
  with pytest.raises(UserInputError, match='L\\^E alone on an As-ViT'):
    complexity.length_distortion(factory, image_size=48, repeats=1, method='units')
  with pytest.raises(UserInputError, match='method must be one of'):
    complexity.length_distortion(SHALLOW, image_size=40, repeats=1, method='taps')
