"""Fixtures of the Model Garden tests, built once per session for every module."""
import pytest


@pytest.fixture(scope='session')
def mnist_dir(tmp_path_factory):
  """160 train / 40 valid MNIST digits, 2 shards per split."""
  # pylint: disable-next=g-import-not-at-top
  from asvit_tf.garden.data import make_mnist_tfrecords as mnist
  out = tmp_path_factory.mktemp('mnist')
  mnist.make_mnist_tfrecords(str(out), val_per_class=4, shards=2, limit_per_class=20)
  return out
