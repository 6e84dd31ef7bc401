"""The complexity measures' attention core (`asvit_tf.complexity.attention`): the plain
ops' values, gradients and tangents, group by group when traced."""
import numpy as np
import pytest
import tensorflow as tf

from asvit_tf.complexity import attention
from asvit_tf.layers import blocks


def _inputs(shape, count, seed=0):
  rng = np.random.default_rng(seed)
  return [tf.constant(rng.normal(size=shape)) for _ in range(count)]


def _while_ops(fn, *args):
  graph = tf.function(fn).get_concrete_function(*args).graph
  ops = [op.type for op in graph.get_operations()]
  return sum(t in ('While', 'StatelessWhile') for t in ops)


def test_group_size():
  assert attention.group_size(128, 784, 4) == 1          # a 2.4 MB stage-1 map per group
  assert attention.group_size(12, 10, 4, budget=1200) == 3
  assert attention.group_size(12, 10, 4, budget=2000) == 4  # 5 does not divide 12
  assert attention.group_size(7, 10, 4, budget=1200) == 1
  assert attention.group_size(6, 10, 8, budget=10 ** 6) == 6
  assert attention.group_size(6, 10, 8, budget=1) == 1
  with pytest.raises(ValueError, match='maps, tokens and itemsize'):
    attention.group_size(0, 10, 4)


@pytest.mark.parametrize('budget', [None, 2 * 7 * 7 * 8])
def test_values_and_gradients_equal_the_plain_ops(monkeypatch, budget):
  """Forward and backward equal autodiff of softmax(q kᵀ)·v, eagerly and traced in groups
  (budget 2 maps: the 2·3 maps of each input go 2 at a time)."""
  if budget is not None:
    monkeypatch.setattr(attention, 'GROUP_BYTES', budget)
  q, k, v, w = _inputs([2, 3, 7, 4], 4)

  def loss_and_grads(core):
    def run(q, k, v):
      with tf.GradientTape() as tape:
        tape.watch([q, k, v])
        out = core(q, k, v)
        loss = tf.reduce_sum(w * out * out)   # an output gradient that is not uniform
      return (out,) + tuple(tape.gradient(loss, [q, k, v]))
    return run

  want = loss_and_grads(blocks.attention)(q, k, v)
  for got in (loss_and_grads(attention.attention)(q, k, v),
              tf.function(loss_and_grads(attention.attention))(q, k, v)):
    for a, b in zip(got, want):
      np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)
  loops = _while_ops(loss_and_grads(attention.attention), q, k, v)
  assert loops == (2 if budget else 0)                     # forward and backward loops


@pytest.mark.parametrize('budget', [None, 7 * 7 * 8])
def test_tangent_equals_the_accumulator(monkeypatch, budget):
  if budget is not None:
    monkeypatch.setattr(attention, 'GROUP_BYTES', budget)
  q, k, v, dq, dk, dv = _inputs([3, 2, 7, 5], 6, seed=1)
  with tf.autodiff.ForwardAccumulator([q, k, v], [dq, dk, dv]) as acc:
    out = blocks.attention(q, k, v)
  want = (out, acc.jvp(out))
  for got in (attention.attention_with_tangent(q, k, v, dq, dk, dv),
              tf.function(attention.attention_with_tangent)(q, k, v, dq, dk, dv)):
    for a, b in zip(got, want):
      np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)
  assert _while_ops(attention.attention_with_tangent, q, k, v, dq, dk, dv) == (
      1 if budget else 0)
