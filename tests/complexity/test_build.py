"""A measured As-ViT is built from the image shape, without a forward pass on zeros (issue 19):
the same variables, the same draws and the same measured values as the network built by a
forward pass."""
import numpy as np
import pytest
import tensorflow as tf

from asvit_tf import complexity
from asvit_tf.complexity import network
from tests.complexity.conftest import TINY

SEED = '8,2,3|4,1,2|4,1,4|4,1,6|32'
# The tiny net, the seed, one with merging kernels 3 on a grid its windows do not divide
# (40 px), and one with the residual merge's shortcut.
CASES = [(TINY, 32, {}), (SEED, 32, {}), ('5,4,2|3,2,5|3,1,3|3,1,2|16,8', 40, {}),
         (TINY, 36, {'merge': 'residual'})]


def _factories(arch, kwargs):
  """(new, old): a factory as the measures build today, and one whose model a forward pass
  on zeros has built already (the path before issue 19), the Network then keeping it."""
  from asvit_tf.models import asvit  # pylint: disable=g-import-not-at-top

  def new(use_layer_norm):
    return asvit.AsViT(arch, num_classes=1, use_layer_norm=use_layer_norm, name='measured',
                       **kwargs)

  def old(use_layer_norm, size):
    model = new(use_layer_norm)
    model.features(tf.zeros([1, size, size, 3]), training=True)
    return model
  return new, old


@pytest.mark.parametrize('arch,size,kwargs', CASES)
@pytest.mark.parametrize('use_layer_norm', [True, False])
def test_built_from_shape_has_the_forward_built_variables_and_draws(arch, size, kwargs,
                                                                    use_layer_norm):
  new, old = _factories(arch, kwargs)
  shape = (size, size, 3)
  calls = []

  def counted(ln):
    model = new(ln)
    features = model.features
    model.features = lambda *a, **k: calls.append(1) or features(*a, **k)
    return model
  built = network.Network(counted, use_layer_norm, shape)
  assert not calls   # built without running the network
  del built.model.features
  forward = network.Network(lambda ln: old(ln, size), use_layer_norm, shape)
  assert ([(v.name, v.shape) for v in built.variables]
          == [(v.name, v.shape) for v in forward.variables])
  assert [type(l).__name__ for l in built.layers] == [type(l).__name__ for l in forward.layers]
  for repeat in (0, 1):
    built.reinitialise(7, repeat, share_embedding=True)
    forward.reinitialise(7, repeat, share_embedding=True)
    for a, b in zip(built.variables, forward.variables):
      np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
  images = tf.random.stateless_normal([2, *shape], [1, 2])
  np.testing.assert_array_equal(built.model.features(images, training=True).numpy(),
                                forward.model.features(images, training=True).numpy())


@pytest.mark.slow
@pytest.mark.parametrize('arch,size,kwargs', CASES[:3])
def test_measures_equal_on_both_builds(arch, size, kwargs):
  new, old = _factories(arch, kwargs)
  for mode in ('eager', 'graph'):
    common = dict(image_size=size, repeats=2, seed=4, mode=mode)
    ntk_new = complexity.ntk_condition_number(new, batch_size=4, **common)
    ntk_old = complexity.ntk_condition_number(lambda ln: old(ln, size), batch_size=4, **common)
    np.testing.assert_array_equal(ntk_new.values, ntk_old.values)
    curve_new = complexity.curve_metrics(new, num_points=5, **common)
    curve_old = complexity.curve_metrics(lambda ln: old(ln, size), num_points=5, **common)
    for metric in complexity.CURVE_METRICS:
      np.testing.assert_array_equal(curve_new[metric].values, curve_old[metric].values,
                                    err_msg=f'{metric} {mode}')
