"""κ_Θ of a ViT-Bench-101 PiT from tapped gradients (one batched pass): each image's gradient
of every weight (Dense kernels, LayerNorm γ, the conv embedding, the poolings' grouped convs)
as autodiff gives it, and the public measure equal to the vmap path's."""
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from asvit_tf import complexity
from asvit_tf.complexity import network
from asvit_tf.complexity import ntk
from asvit_tf.models import pit
from asvit_tf.models import pit_size
from tests.complexity.conftest import TINY
from tests.complexity.conftest import assert_per_image_gradients_close

SIZE = 48   # a 5×5 embedding grid, pooled to 3×3 and 2×2: the padding reaches odd edges
# Poolings that widen each input channel to 2 and 1 outputs; one that widens to 3 and 2.
PITS = [pit_size.PitArch(4, 2, (1, 1, 1), (1, 2, 2)), pit_size.PitArch(4, 3, (1, 2, 1), (1, 3, 6))]


def _network(arch, seed):
  """A drawn PiT whose rank-1 variables (γ, β, biases, position embedding, class token) are
  N(0, 1): at γ = 1, β = 0 a γ gradient with a missing factor would go unseen."""
  net = network.Network(pit.pit_factory(arch, SIZE), True, (SIZE, SIZE, 3))
  net.reinitialise(seed, 0)
  rng = np.random.default_rng(seed)
  for v in net.variables:
    if v.shape.rank == 1:
      v.assign(rng.normal(size=v.shape.as_list()))
  return net


@pytest.mark.slow
@pytest.mark.parametrize('arch', PITS, ids=str)
def test_tapped_gradients_of_a_pit_match_autodiff(float64, arch):
  """Every weight's per-image gradient from the taps equals autodiff's (a vectorised pass
  per image) to 1e-10, whole and in uneven traced chunks, with the LayerNorm scales and
  without; so does Θ; the model leaves untapped."""
  net = _network(arch, 7)
  images = tf.constant(ntk.noise_images(5, (SIZE, SIZE, 3), 7, 0))
  weights = net.kernels(include_scales=True)
  assert sum(w.shape.rank == 1 for w in weights) == 2 * sum(arch.depth)          # γ
  assert sum(w.shape[:2] == (3, 3) for w in weights) == len(arch.depth) - 1     # poolings
  assert sum(w.shape[:2] == (16, 16) for w in weights) == 1                     # embedding
  features = lambda x: net.model.features(x, training=True)
  autodiff = dict(zip((w.ref() for w in weights),
                      ntk.per_image_gradients(features, weights, images)))
  for include_scales in (True, False):
    selected = net.kernels(include_scales)
    taps = ntk.TappedGradients(net.model, net.layers)
    try:
      assert taps.covers(selected)
      tapped = ntk.tapped_per_image_gradients(taps, selected, images)
      chunked = tf.function(lambda x: ntk.tapped_per_image_gradients(taps, selected, x, 2))(
          images)
      theta = taps.kernel_matrix(selected, images)
    finally:
      taps.untap()
    assert 'embedding_conv' not in vars(net.model)
    assert not any({'call', 'conv'} & set(vars(layer)) for layer in net.layers)
    expected = [autodiff[w.ref()] for w in selected]
    assert_per_image_gradients_close(selected, expected, tapped, chunked, rtol=1e-10)
    theta_expected = ntk.kernel_matrix(expected).numpy()
    np.testing.assert_allclose(theta.numpy(), theta_expected, rtol=1e-10,
                               atol=1e-10 * np.abs(theta_expected).max())


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['eager', 'graph'])
def test_kappa_of_pits_by_taps_equals_vmap(monkeypatch, mode):
  """The public κ_Θ of two small PiTs: 'auto' takes the taps (vmap is never called) and gives
  the vmap path's values to float32 rounding."""
  kwargs = dict(image_size=SIZE, repeats=2, seed=3, batch_size=4, mode=mode)
  for arch in PITS:
    build = pit.pit_factory(arch, SIZE)
    vmap = complexity.ntk_condition_number(build, method='vmap', **kwargs)
    with monkeypatch.context() as patch:
      patch.setattr(ntk, 'per_image_gradients', None)   # any call would fail
      auto = complexity.ntk_condition_number(build, **kwargs)
    assert not auto.bad and np.all(np.array(auto.values) > 1)
    np.testing.assert_allclose(auto.values, vmap.values, rtol=1e-5, err_msg=str(arch))


class _ScaledPiT(pit.PiT):
  """A PiT whose features pass through a kernel no tap knows: the taps do not cover it."""

  def build(self, input_shape):
    super().build(input_shape)
    d = self.arch.widths[-1]
    self.readout = self.add_weight('readout', [d, d], initializer='glorot_uniform')

  def features(self, images, training=None):
    return tf.matmul(super().features(images, training), tf.cast(self.readout, images.dtype))


@pytest.mark.slow
def test_a_weight_the_taps_miss_falls_back_to_vmap():
  arch = PITS[0]
  build = lambda use_layer_norm: _ScaledPiT(arch, SIZE, use_layer_norm=use_layer_norm)
  net = network.Network(build, True, (SIZE, SIZE, 3))
  taps = ntk.TappedGradients(net.model, net.layers)
  try:
    assert not taps.covers(net.kernels(True))
    assert taps.covers([w for w in net.kernels(True) if 'readout' not in w.name])
  finally:
    taps.untap()
  kwargs = dict(image_size=SIZE, repeats=1, seed=1, batch_size=4, mode='eager')
  auto = complexity.ntk_condition_number(build, **kwargs)
  assert auto.values == complexity.ntk_condition_number(build, method='vmap', **kwargs).values
  with pytest.raises(ValueError, match='method="taps" differentiates'):
    complexity.ntk_condition_number(build, method='taps', **kwargs)


def test_auto_weighs_a_pits_tapped_kappa_by_its_own_bound():
  """mode='auto' runs a PiT's κ_Θ eagerly while its batch is within
  PIT_TAPS_EAGER_BATCH_MACS (the curves' bound does not count), an As-ViT's by the
  curves' bound still (at two repeats: one goes by `ntk.one_repeat_eager_chunk`)."""
  arch = PITS[0]
  build = pit.pit_factory(arch, SIZE)
  batch = pit_size.count_macs(arch, SIZE) * 4
  modes = []
  compile_mode = network.compile_mode

  def recorded(fn, mode):
    modes.append(mode)
    return compile_mode(fn, mode)
  kwargs = dict(image_size=SIZE, repeats=1, batch_size=4)
  with mock.patch.object(network, 'compile_mode', recorded), \
       mock.patch.object(network, 'EAGER_BATCH_MACS', 0):
    for bound in (batch, batch - 1):
      with mock.patch.object(ntk, 'PIT_TAPS_EAGER_BATCH_MACS', bound):
        complexity.ntk_condition_number(build, **kwargs)
    assert modes == ['eager', 'graph']
    asvit = network.forward_macs(TINY, None, (32, 32, 3)) * 4
    with mock.patch.object(ntk, 'PIT_TAPS_EAGER_BATCH_MACS', asvit):
      complexity.ntk_condition_number(TINY, image_size=32, repeats=2, batch_size=4)
    assert modes[-1] == 'graph'
