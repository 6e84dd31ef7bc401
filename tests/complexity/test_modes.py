"""Whatever path a measure takes (eager, traced), it gives the same values to float rounding;
mode='auto' takes the eager one where it is cheaper (issue 19)."""
from unittest import mock

import numpy as np
import pytest

from asvit_tf import arch as arch_lib
from asvit_tf import complexity
from asvit_tf.complexity import network
from asvit_tf.complexity import ntk as ntk_lib
from asvit_tf.complexity import plain
from asvit_tf.models import pit
from asvit_tf.models import pit_size
from tests.complexity.conftest import TINY
from tests.complexity.conftest import linear_factory

SEED = '8,2,3|4,1,2|4,1,4|4,1,6|32'
# (topology, image size): the tiny net, the seed, and one with merging kernels 3 and global
# attention on a grid its windows do not divide (40 px: 10×10 tokens).
CASES = [(TINY, 32), (SEED, 32), ('5,4,2|3,2,5|3,1,3|3,1,2|16,8', 40)]


def _curves_eager_equal_traced(arch_or_build, rtol, **kwargs):
  """Asserts the curve metrics agree eagerly and traced (finite); returns the traced ones."""
  eager = complexity.curve_metrics(arch_or_build, mode='eager', **kwargs)
  graph = complexity.curve_metrics(arch_or_build, mode='graph', **kwargs)
  for metric in complexity.CURVE_METRICS:
    assert np.all(np.isfinite(eager[metric].values)), metric
    np.testing.assert_allclose(eager[metric].values, graph[metric].values, rtol=rtol,
                               err_msg=metric)
  return graph


@pytest.mark.slow
@pytest.mark.parametrize('arch,size', CASES)
def test_curve_metrics_eager_equal_traced(arch, size):
  kwargs = dict(image_size=size, num_points=6, repeats=1, seed=3)
  graph = _curves_eager_equal_traced(arch, 2e-4, **kwargs)
  # L^E alone runs by hand (`dual`): eager and traced agree with the accumulator's too.
  for mode in ('eager', 'graph'):
    alone = complexity.length_distortion(arch, mode=mode, **kwargs)
    np.testing.assert_allclose(alone.values, graph['length'].values, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('arch,size', CASES)
def test_ntk_eager_equals_traced_in_chunks_or_not(arch, size):
  kwargs = dict(image_size=size, repeats=1, seed=5, batch_size=5)
  graph = complexity.ntk_condition_number(arch, mode='graph', **kwargs)
  assert not graph.bad
  for chunk in (None, 2):   # eager chunks run in a Python loop, the last one short
    eager = complexity.ntk_condition_number(arch, mode='eager', chunk_size=chunk, **kwargs)
    np.testing.assert_allclose(eager.values, graph.values, rtol=1e-4, err_msg=str(chunk))


@pytest.mark.slow
def test_auto_is_eager_for_few_repeats_of_a_small_network_else_traced():
  """The choice, and that 'auto' gives what the path it chose gives."""
  small = dict(image_size=32, seed=2)
  assert network.eager_pays(SEED, None, (32, 32, 3), 16, 1)
  assert not network.eager_pays(SEED, None, (32, 32, 3), 16,
                                network.EAGER_REPEATS + 1)
  # The seed at 224 px: 16 images × 0.49 G MACs, too much memory eagerly.
  assert not network.eager_pays(SEED, None, (224, 224, 3), 16, 1)
  assert not network.eager_pays(SEED, 256, (64, 64, 3), 16, 1)
  assert network.eager_pays(SEED, 8, (64, 64, 3), 16, 1)
  # A factory's cost is unknown here: its measure keeps the traced path.
  w = np.ones((48, 3), 'float32')
  assert not network.eager_pays(linear_factory(w), None, (4, 4, 3), 1, 1)

  auto = complexity.ntk_condition_number(SEED, repeats=1, batch_size=4, **small)
  eager = complexity.ntk_condition_number(SEED, repeats=1, batch_size=4, mode='eager', **small)
  assert auto.values == eager.values
  repeats = network.EAGER_REPEATS + 1
  auto = complexity.curvature(arch_lib.as_topology(TINY), num_points=4, repeats=repeats,
                              **small)
  graph = complexity.curvature(TINY, num_points=4, repeats=repeats, mode='graph', **small)
  assert auto.values == graph.values


TINY_PIT = pit_size.PitArch(8, 2, (1, 1, 1), (1, 2, 2))


@pytest.mark.slow
def test_pit_measures_eager_equal_traced():
  """A PiT factory (correlate's networks) gives the same values eagerly and traced."""
  build = pit.pit_factory(TINY_PIT, image_size=32)
  _curves_eager_equal_traced(build, 1e-5, image_size=32, num_points=6, repeats=2, seed=3)
  ntk = dict(image_size=32, repeats=2, seed=5, batch_size=4)
  eager = complexity.ntk_condition_number(build, mode='eager', **ntk)
  graph = complexity.ntk_condition_number(build, mode='graph', **ntk)
  assert not graph.bad
  np.testing.assert_allclose(eager.values, graph.values, rtol=1e-5)


def test_a_factory_carries_its_macs_and_auto_weighs_them():
  build = pit.pit_factory(TINY_PIT, image_size=32)
  macs = pit_size.count_macs(TINY_PIT, image_size=32)
  assert network.forward_macs(build, None, (32, 32, 3)) == macs
  # A factory made from a topology carries what the topology's own path counts.
  topology = arch_lib.as_topology(SEED)
  assert (network.forward_macs(network.model_factory(topology), None, (64, 64, 3))
          == network.forward_macs(topology, None, (64, 64, 3)))
  for factory, shape in ((build, (32, 32, 3)), (network.model_factory(SEED), (64, 64, 3))):
    batch = network.forward_macs(factory, None, shape) * 16
    with mock.patch.object(network, 'EAGER_BATCH_MACS', batch):
      assert network.eager_pays(factory, None, shape, 16, 1)
      assert not network.eager_pays(factory, None, shape, 16, network.EAGER_REPEATS + 1)
    with mock.patch.object(network, 'EAGER_BATCH_MACS', batch - 1):
      assert not network.eager_pays(factory, None, shape, 16, 1)


@pytest.mark.slow
@pytest.mark.parametrize('above', [False, True])
def test_auto_runs_a_small_pit_eagerly_and_one_above_the_bound_traced(above):
  build = pit.pit_factory(TINY_PIT, image_size=32)
  points, images = 4, 4  # 4 points on the curve, 3 distinct: a batch of 3 images
  macs = pit_size.count_macs(TINY_PIT, image_size=32)
  # Eager: a bound that holds the larger batch (the NTK's 4); traced: one below the smaller.
  bound = macs * (points - 1) - 1 if above else macs * images
  modes = []
  compile_mode = network.compile_mode

  def recorded(fn, mode):
    modes.append(mode)
    return compile_mode(fn, mode)
  # The PiT's κ_Θ (by taps) has a bound of its own: set it as the curves'.
  with mock.patch.object(network, 'EAGER_BATCH_MACS', bound), \
       mock.patch.object(ntk_lib, 'PIT_TAPS_EAGER_BATCH_MACS', bound), \
       mock.patch.object(network, 'compile_mode', recorded):
    auto = complexity.curvature(build, image_size=32, num_points=points, repeats=1)
    ntk = complexity.ntk_condition_number(build, image_size=32, repeats=1, batch_size=images)
  assert modes == (['graph', 'graph'] if above else ['eager', 'eager'])
  assert np.all(np.isfinite(auto.values))
  chosen = modes[0]
  # Eagerly, 'auto' takes the whole (small) batch in one pass.
  chunk = {'chunk_size': None} if chosen == 'eager' else {}
  assert ntk.values == complexity.ntk_condition_number(
      build, image_size=32, repeats=1, batch_size=images, mode=chosen, **chunk).values


def test_one_repeat_of_an_asvit_goes_eagerly_in_two_passes_at_most():
  # The seed at 224 px: 16 × 0.49 G MACs, beyond eager_pays' bound, in one pass; at
  # width 48 (16 × 0.91 G MACs) in two passes of 8.
  assert not network.eager_pays(SEED, None, (224, 224, 3), 16, 1)
  assert ntk_lib.one_repeat_eager_chunk(SEED, None, (224, 224, 3), 16, 1) == 16
  assert ntk_lib.one_repeat_eager_chunk(SEED, 48, (224, 224, 3), 16, 1) == 8
  # From two repeats on the trace pays; at width 64 two passes would hold too much.
  assert ntk_lib.one_repeat_eager_chunk(SEED, None, (224, 224, 3), 16, 2) is None
  assert ntk_lib.one_repeat_eager_chunk(SEED, 64, (224, 224, 3), 16, 1) is None
  # A factory's cost is unknown: traced.
  w = np.ones((48, 3), 'float32')
  assert ntk_lib.one_repeat_eager_chunk(linear_factory(w), None, (4, 4, 3), 1, 1) is None


@pytest.mark.parametrize('repeats', [1, 2])
def test_auto_takes_the_one_repeat_eager_passes_and_gives_their_values(repeats):
  """With the bound set so that 5 images of the seed at 32 px need two passes: one repeat
  runs eagerly in passes of 3 images (the last one short; without a Keras model, `plain`),
  two repeats traced (in chunks of `ntk.DEFAULT_CHUNK`, looped over outside the
  per-image-gradient helper)."""
  shape, images = (32, 32, 3), 5
  macs = network.forward_macs(SEED, None, shape)
  calls = []
  compile_mode, chunks = network.compile_mode, ntk_lib.tapped_per_image_gradients

  def recorded_mode(fn, mode):
    calls.append(mode)
    return compile_mode(fn, mode)

  def recorded_chunks(taps, weights, batch, chunk_size=None):
    calls.append(chunk_size)
    return chunks(taps, weights, batch, chunk_size)

  def recorded_plain(*args, chunk_size=None, **kwargs):
    calls.append(('plain', chunk_size))
    return plain_kernel(*args, chunk_size=chunk_size, **kwargs)
  plain_kernel = plain.kernel_matrix
  kwargs = dict(image_size=32, repeats=repeats, seed=6, batch_size=images)
  with mock.patch.object(network, 'EAGER_BATCH_MACS', macs - 1), \
       mock.patch.object(ntk_lib, 'ASVIT_ONE_REPEAT_PASS_MACS', 3 * macs), \
       mock.patch.object(network, 'compile_mode', recorded_mode), \
       mock.patch.object(ntk_lib, 'tapped_per_image_gradients', recorded_chunks), \
       mock.patch.object(plain, 'kernel_matrix', recorded_plain):
    auto = complexity.ntk_condition_number(SEED, **kwargs)
  if repeats == 1:
    assert calls == [('plain', 3)]
    eager = complexity.ntk_condition_number(SEED, mode='eager', chunk_size=3, **kwargs)
    assert auto.values == eager.values
  else:
    assert calls == ['graph']   # one traced 4-image pass, called per chunk
  graph = complexity.ntk_condition_number(SEED, mode='graph', **kwargs)
  np.testing.assert_allclose(auto.values, graph.values, rtol=1e-4)
