"""κ_Θ's eager pass without a Keras model (`plain`): the same weights to the bit, the same
Θ to float rounding, and the path `ntk_condition_number` takes for a topology (issue 19)."""
import os
import signal
import time
from unittest import mock

import numpy as np
import pytest
from scipy import stats
import tensorflow as tf

from asvit_tf import complexity
from asvit_tf.complexity import network
from asvit_tf.complexity import ntk
from asvit_tf.complexity import plain
from asvit_tf.layers import blocks
from tests.complexity.conftest import TINY

SEED = '8,2,3|4,1,2|4,1,4|4,1,6|32'
# The tiny net; one with 2 and 3 blocks in stages, merging kernels 3 and 4 and windows the
# grid does not divide at 40×56 px; and a width set apart from the topology's.
TOPOLOGIES = [(TINY, None), ('5,4,2,2|3,2,5,3|4,1,3|3,1,2,2|16,8', None), (SEED, 16)]


def _keras_names(net):
  return [v.name.split('encoder/', 1)[1].rsplit(':', 1)[0] for v in net.variables]


@pytest.mark.parametrize('arch,width', TOPOLOGIES)
def test_the_plan_and_its_draws_are_the_models_variables_and_draws(arch, width):
  topology = plain.topology_or_none(arch, width)
  net = network.measured_network(arch, width, True, (40, 56, 3))
  plan = plain.weight_plan(topology)
  assert [w.name for w in plan] == _keras_names(net)
  assert [w.shape for w in plan] == [tuple(v.shape) for v in net.variables]
  for repeat, share in ((0, False), (2, False), (2, True)):
    net.reinitialise(7, repeat, share)
    drawn = plain.Drawing(plan, 7, repeat, share)   # drawn in the forward's order
    assert sorted(drawn) == sorted(w.name for w in plan if w.initializer is not None)
    for w, v in zip(plan, net.variables):
      if w.initializer is None:   # not drawn: the zeros and ones the arithmetic leaves out
        assert np.all(v.numpy() == (1.0 if w.name.endswith('gamma') else 0.0)), w.name
      else:
        np.testing.assert_array_equal(drawn[w.name].numpy(), v.numpy(), err_msg=w.name)


@pytest.mark.parametrize('arch,width', TOPOLOGIES)
@pytest.mark.parametrize('include_scales', [True, False])
def test_theta_equals_the_keras_models_tapped_theta(float64, arch, width, include_scales):
  """In float64, to 1e-10: the same network, the same weights, the same Θ; whole or in
  chunks (the last one short)."""
  topology = plain.topology_or_none(arch, width)
  net = network.measured_network(arch, width, True, (40, 56, 3))
  assert net.dtype == tf.float64
  net.reinitialise(4, 1)
  images = tf.constant(ntk.noise_images(5, (40, 56, 3), 4, 1), tf.float64)
  taps = ntk.TappedGradients(net.model)
  try:
    want = taps.kernel_matrix(net.kernels(include_scales), images).numpy()
  finally:
    taps.untap()
  for chunk in (None, 2):
    got = plain.kernel_matrix(topology, images, 4, 1, include_scales=include_scales,
                              chunk_size=chunk).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max(),
                               err_msg=str(chunk))


@pytest.mark.parametrize('arch,width', TOPOLOGIES)
@pytest.mark.parametrize('include_scales', [True, False])
def test_theta_with_its_terms_in_the_helper_thread_is_the_factors_theta_to_the_bit(
    arch, width, include_scales):
  """Θ whose terms the helper thread forms during the backward is bitwise the Θ of the
  same factors summed after it (the same ops, summed in the same order)."""
  topology = plain.topology_or_none(arch, width)
  weights = dict(plain.Drawing(plain.weight_plan(topology), 3, 0))   # all drawn first
  images = tf.constant(ntk.noise_images(4, (40, 56, 3), 3, 0), tf.float32)
  want = ntk.theta_from_factors(plain.factors(topology, weights, images, include_scales))
  got = plain.theta(topology, plain.Drawing(plain.weight_plan(topology), 3, 0), images,
                    include_scales)
  np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_an_error_in_the_helper_thread_is_raised_in_the_caller():
  topology = plain.topology_or_none(TINY, None)
  images = tf.zeros([2, 32, 32, 3])
  with mock.patch.object(plain, '_draw', side_effect=ValueError('a bad draw')):
    drawing = plain.Drawing(plain.weight_plan(topology), 0, 0)
    with pytest.raises(ValueError, match='a bad draw'):
      plain.kernel_matrix(topology, images, 0, 0)
    with pytest.raises(ValueError, match='a bad draw'):
      drawing['patch_embed/kernel']   # pylint: disable=pointless-statement
  with mock.patch.object(plain, '_term', side_effect=ValueError('a bad term')):
    with pytest.raises(ValueError, match='a bad term'):
      plain.kernel_matrix(topology, images, 0, 0)
  assert plain.kernel_matrix(topology, images, 0, 0).shape == (2, 2)   # the helper lives on


def test_a_forked_child_makes_its_own_helper_thread():
  """A thread does not survive a fork: the child's first submit starts a new one (without
  that, the child's submits would wait forever)."""
  assert plain._Helper.submit(lambda: 1).result() == 1   # the parent's thread runs
  pid = os.fork()
  if pid == 0:   # the child: pure Python only
    try:
      os._exit(0 if plain._Helper.submit(lambda: 2).result(timeout=30) == 2 else 1)
    except BaseException:  # pylint: disable=broad-except
      os._exit(2)
  deadline = time.monotonic() + 60
  while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
      break
    time.sleep(0.05)
  else:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail('the forked child hung')
  assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize('kernel,rows,cols', [(2, 5, 6), (3, 7, 4), (4, 6, 5)])
def test_the_written_out_backwards_equal_the_tapes(float64, kernel, rows, cols):
  """The LayerNorm's and the merging's patches' backwards equal the tape's gradients of
  the plain ops, and GELU's its derivative Φ(x) + x·φ(x), in float64."""
  rng = np.random.default_rng(kernel)
  x = tf.constant(rng.standard_normal((2, rows, cols, 3)))

  def tape_and_written(fn, backward):
    out = fn(x)
    delta = tf.constant(rng.standard_normal(out.shape))
    with tf.GradientTape() as tape:
      tape.watch(x)
      value = tf.reduce_sum(fn(x) * delta)
    np.testing.assert_allclose(backward(delta).numpy(), tape.gradient(value, x).numpy(),
                               rtol=1e-10, atol=1e-12)

  def moments_norm(x):
    mean, variance = tf.nn.moments(x, [3], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + tf.constant(1e-5, x.dtype))
  x_hat, inverse = plain.normalised(x)
  np.testing.assert_allclose(x_hat.numpy(), moments_norm(x).numpy(), rtol=1e-12, atol=1e-12)
  tape_and_written(moments_norm, lambda d: plain.normalised_backward(d, x_hat, inverse))
  # GELU's against its closed form: TensorFlow's own float64 GELU is off by ~4e-9 (its
  # erfc), so its tape's gradient is no float64 reference.
  delta = rng.standard_normal(x.shape)
  np.testing.assert_allclose(
      plain.gelu_backward(tf.constant(delta), x).numpy(),
      delta * (stats.norm.cdf(x.numpy()) + x.numpy() * stats.norm.pdf(x.numpy())),
      rtol=1e-12, atol=1e-14)
  tape_and_written(lambda x: blocks.merge_patches(x, kernel),
                   lambda d: plain.merge_patches_backward(d, x.shape, kernel))


@pytest.mark.parametrize('mode', ['auto', 'eager'])
def test_a_topology_measured_eagerly_takes_the_plain_pass(mode):
  """'auto' (eager on a small net) and 'eager' run `plain` on a topology, with no Keras
  model built, and agree with the traced Keras measure and the Keras model's eager taps."""
  kwargs = dict(image_size=32, repeats=2, seed=3, batch_size=6, share_embedding=True)
  with mock.patch.object(network, 'measured_network',
                         side_effect=AssertionError('built a Keras model')), \
       mock.patch.object(plain, 'kernel_matrix', wraps=plain.kernel_matrix) as run:
    got = complexity.ntk_condition_number(SEED, mode=mode, **kwargs)
  assert run.call_count == 2
  assert run.call_args.kwargs['chunk_size'] == (None if mode == 'auto' else ntk.DEFAULT_CHUNK)
  graph = complexity.ntk_condition_number(SEED, mode='graph', **kwargs)
  keras_eager = complexity.ntk_condition_number(SEED, mode=mode, method='taps', **kwargs)
  np.testing.assert_allclose(got.values, graph.values, rtol=1e-4)
  np.testing.assert_allclose(got.values, keras_eager.values, rtol=1e-4)


def test_models_factories_traced_runs_and_mixed_policies_keep_the_keras_model():
  net = network.measured_network(TINY, None, True, (32, 32, 3))
  assert plain.topology_or_none(net.model, None) is None
  assert plain.topology_or_none(network.model_factory(TINY), None) is None
  shape = (32, 32, 3)
  assert ntk._plain_path(TINY, None, shape, 4, 1, 'graph', 'auto', None) is None
  assert ntk._plain_path(TINY, None, shape, 4, 1, 'eager', 'taps', None) is None
  assert ntk._plain_path(TINY, None, shape, 4, 1, 'eager', 'auto', 2)[1] == 2
  with mock.patch.object(plain.tf_keras.mixed_precision, 'global_policy',
                         return_value=plain.tf_keras.mixed_precision.Policy('mixed_float16')):
    assert ntk._plain_path(TINY, None, shape, 4, 1, 'eager', 'auto', None) is None


def test_auto_runs_a_topology_of_up_to_five_repeats_eagerly_within_one_pass():
  """Without a Keras model the eager pass pays from one repeat to `EAGER_REPEATS` where the
  batch is one pass within `ASVIT_ONE_REPEAT_PASS_MACS`; beyond either bound, traced."""
  shape = (224, 224, 3)   # the seed: 16 × 0.49 G MACs, beyond the small-batch bound
  assert not network.eager_pays(SEED, None, shape, 16, 5)
  assert ntk._plain_path(SEED, None, shape, 16, 5, 'auto', 'auto', 4)[1] is None
  assert ntk._plain_path(SEED, None, shape, 16, 6, 'auto', 'auto', 4) is None
  assert ntk._plain_path(SEED, 48, shape, 16, 2, 'auto', 'auto', 4) is None   # 2 passes
  assert ntk._plain_path(SEED, 48, shape, 16, 1, 'auto', 'auto', 4)[1] == 8
  assert ntk._plain_path(SEED, None, shape, 16, 5, 'auto', 'taps', 4) is None
