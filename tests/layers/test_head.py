"""The classification head, one layer for `AsViT` and the backbone's 'pre_logits'."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from asvit_tf import layers


def _layer_norm(x, gamma, beta):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-5) * gamma + beta


@pytest.mark.parametrize('num_classes', [None, 3])
def test_head_is_norm_pool_dense_tanh_then_classifier(num_classes):
  head = layers.ClassificationHead(6, num_classes)
  x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype('float32')
  head(tf.constant(x))   # builds it
  for w in head.weights:   # move the weights off their init (gamma 1, beta and biases 0)
    w.assign(w + np.random.default_rng(1).normal(scale=0.1, size=w.shape).astype('float32'))
  out = head(tf.constant(x)).numpy()
  pooled = _layer_norm(x, head.norm.gamma.numpy(), head.norm.beta.numpy()).mean(axis=(1, 2))
  want = np.tanh(pooled @ head.pre_logits.kernel.numpy() + head.pre_logits.bias.numpy())
  if num_classes is not None:
    want = want @ head.classifier.kernel.numpy() + head.classifier.bias.numpy()
  assert out.shape == (2, 3 if num_classes else 6)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_head_without_layer_norm_and_its_config():
  head = layers.ClassificationHead(6, 3, use_layer_norm=False,
                                   kernel_regularizer=tf_keras.regularizers.L2(0.1), name='h')
  head.build([None, None, None, 5])
  assert not head.norm.weights   # the identity
  assert [w.name for w in head.weights] == [
      'pre_logits/kernel:0', 'pre_logits/bias:0', 'classifier/kernel:0', 'classifier/bias:0']
  copy = layers.ClassificationHead.from_config(head.get_config())
  assert copy.get_config() == head.get_config()
  copy.build([None, None, None, 5])
  assert len(copy.losses) == 2   # the regularizer of both kernels
