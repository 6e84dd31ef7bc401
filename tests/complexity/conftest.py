"""Shared fixtures of the complexity tests: tiny models with closed forms."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

TINY = '4,2,2|2,1,2|2,1,2|2,1,2|16,8'   # C=8, F=64 features: fast at 32 px


@pytest.fixture
def float64():
  """Builds Keras layers in float64 for the duration of a test."""
  old = tf_keras.backend.floatx()
  tf_keras.backend.set_floatx('float64')
  yield
  tf_keras.backend.set_floatx(old)


class LinearFeatures(tf_keras.Model):
  """features(x) = flatten(x) @ W1 [+ tanh(flatten(x)) @ W2] [+ b]: linear in its weights."""

  def __init__(self, w1, w2=None, bias=False):
    super().__init__()
    const = tf_keras.initializers.Constant
    self.dense1 = tf_keras.layers.Dense(w1.shape[1], use_bias=bias,
                                        kernel_initializer=const(w1), bias_initializer='ones')
    self.dense2 = (None if w2 is None else
                   tf_keras.layers.Dense(w2.shape[1], use_bias=False,
                                         kernel_initializer=const(w2)))

  def features(self, images, training=None):
    x = tf.reshape(images, [tf.shape(images)[0], -1])
    h = self.dense1(x)
    if self.dense2 is not None:
      h = h + self.dense2(tf.tanh(x))
    return h

  def call(self, images, training=None):
    return self.features(images, training)


def linear_factory(w1, w2=None, bias=False):
  """A `factory(use_layer_norm)` for `LinearFeatures` (it has no LayerNorm)."""
  return lambda use_layer_norm: LinearFeatures(w1, w2, bias)


def assert_per_image_gradients_close(weights, expected, *got, rtol):
  """Each of `got` (lists of per-image gradients, one per weight) equals `expected` to
  `rtol`, relative to each weight's largest expected value, which must not be 0."""
  for w, want, *others in zip(weights, expected, *got):
    want = want.numpy()
    scale = np.abs(want).max()
    assert scale > 0, w.name
    for g in others:
      np.testing.assert_allclose(g.numpy(), want, rtol=rtol, atol=rtol * scale, err_msg=w.name)
