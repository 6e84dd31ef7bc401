"""What a new network costs less of (issue 19) leaves its values as they were: weights created
undrawn and drawn once give the same variables, and Θ from the tokens' Gram matrices equals
Θ from every per-image gradient."""
import numpy as np
import pytest
import tensorflow as tf

from asvit_tf import complexity
from asvit_tf.complexity import network
from asvit_tf.complexity import ntk
from tests.complexity.conftest import TINY
from tests.complexity.conftest import linear_factory

SEED = '8,2,3|4,1,2|4,1,4|4,1,6|32'


def test_token_gram_term_is_the_gram_of_the_per_image_gradients():
  rng = np.random.default_rng(0)
  a, delta = rng.normal(size=(5, 3, 7)), rng.normal(size=(5, 3, 4))
  g = np.einsum('bti,bto->bio', a, delta).reshape(5, -1)
  got = ntk.token_gram_term(tf.constant(a), tf.constant(delta)).numpy()
  np.testing.assert_allclose(got, g @ g.T, rtol=1e-12)
  # Few tokens against wide kernels pay; many tokens on narrow ones do not.
  assert ntk.token_gram_pays([16, 4, 256], [16, 4, 1536])
  assert not ntk.token_gram_pays([16, 256, 32], [16, 256, 96])


@pytest.mark.slow
# The tiny net, the seed, and merging kernels 3 on a grid its windows do not divide (40 px).
@pytest.mark.parametrize('arch,size', [(TINY, 32), (SEED, 32),
                                       ('5,4,2|3,2,5|3,1,3|3,1,2|16,8', 40)])
def test_tapped_kernel_matrix_equals_theta_of_the_gradients(arch, size, monkeypatch):
  shape = (size, size, 3)
  net = network.Network(network.model_factory(arch), True, shape, undrawn=True)
  net.reinitialise(1, 0)
  weights = net.kernels(include_scales=True)
  taps = ntk.TappedGradients(net.model, net.layers)
  images = tf.constant(ntk.noise_images(6, shape, 1, 0), tf.float32)
  before = ntk.kernel_matrix(taps(weights, images)).numpy()
  grams = []
  term = ntk.token_gram_term
  monkeypatch.setattr(ntk, 'token_gram_term', lambda *a: grams.append(1) or term(*a))
  after = taps.kernel_matrix(weights, images).numpy()
  taps.untap()
  assert grams   # the late stages' kernels took the tokens' Gram matrices
  np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-7 * np.abs(before).max())
  assert ntk.condition_number(after) == pytest.approx(ntk.condition_number(before), rel=1e-6)


@pytest.mark.slow
def test_auto_eager_kappa_equals_the_gradients_path():
  """The public measure (auto: eager, whole batch, Gram where it pays) against the same
  eager pass forming every g_i (chunks of 3 of 6 images take that path)."""
  kwargs = dict(image_size=32, repeats=2, seed=4, batch_size=6, mode='eager')
  gram = complexity.ntk_condition_number(SEED, chunk_size=None, **kwargs)
  grads = complexity.ntk_condition_number(SEED, chunk_size=3, **kwargs)
  np.testing.assert_allclose(gram.values, grads.values, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('arch', [TINY, SEED])
def test_undrawn_network_draws_the_same_weights(arch):
  shape = (32, 32, 3)
  drawn = network.Network(network.model_factory(arch), True, shape)
  undrawn = network.Network(network.model_factory(arch), True, shape, undrawn=True)
  # Created undrawn: the randomly initialised kernels are zeros until the first draw.
  assert not np.any(undrawn.kernels()[0].numpy())
  for repeat in (0, 1, 0):
    for net in (drawn, undrawn):
      net.reinitialise(3, repeat, share_embedding=repeat == 1)
    for a, b in zip(drawn.variables, undrawn.variables):
      np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f'{a.name} {repeat}')


def test_undrawn_keeps_constant_initializers():
  """A Constant kernel and a ones bias are kept as created at the first draw, and assigned
  their values again at the next."""
  w = np.arange(48 * 3, dtype='float32').reshape(48, 3) / 100
  net = network.Network(linear_factory(w, bias=True), True, (4, 4, 3), undrawn=True)
  for repeat in (0, 1):
    net.reinitialise(0, repeat)
    np.testing.assert_array_equal(net.kernels()[0].numpy(), w)
    np.testing.assert_array_equal(net.variables[1].numpy(), np.ones(3, 'float32'))
