"""The velocity of As-ViT's features along an input curve, pushed through by hand.

L^E needs v = dh/dθ, the forward-mode derivative of the pooled features. `tf.autodiff.
ForwardAccumulator` computes it op by op, each op's JVP as the transpose of its VJP, which on
this network costs several forward passes (docs/benchmarks.md). Here the tangent travels
beside the activations through the same layers, written out once for the network the curve
metrics measure (LayerNorms removed, no drop path):

- linear maps (the patch embedding conv, Dense kernels, pads, windows, patch merging,
  pooling) apply to the tangent without their biases; the patch merging, with or without
  its `residual` shortcut (average pooling and a Dense, neither with a bias), is linear
  without its LayerNorm, so it applies to the tangent as it is;
- GELU: ġ = (Φ(z) + z·φ(z))·ż;
- attention, s = (q·scale)kᵀ, p = softmax(s), o = p·v:
  ṡ = (q̇·scale)kᵀ + (q·scale)k̇ᵀ, ṗ = p ⊙ (ṡ − Σ_j p ⊙ ṡ), ȯ = ṗ·v + p·v̇
  (`attention.attention_with_tangent`: map group by map group when traced).

The activations themselves come from the model's own layers. `supports(model)` says whether a
model is such a network; the curve metrics fall back to the accumulator otherwise. This runs
for L^E alone; when κ or L^E_κ are asked, `jet` pushes the second derivative through too
(the same layers, one pass for h, v and a).

GELU's slope here uses c = 1/√2 exactly, where `tf.nn.gelu` in float64 uses 1/√2 rounded to
float32: in float64, v then differs from autodiff's beyond float64 rounding (4e-13 relative
on a tiny As-ViT, more where pre-activations are larger); `jet` follows TF's constant and
agrees with autodiff to ~1e-15.
"""
from __future__ import annotations

import math
from typing import Tuple

import tensorflow as tf

from asvit_tf.complexity import attention
from asvit_tf.layers import blocks

_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def supports(model) -> bool:
  """True for an `AsViT` without LayerNorms and without drop path."""
  from asvit_tf.models import asvit  # pylint: disable=g-import-not-at-top
  return (isinstance(model, asvit.AsViT) and not model.encoder.use_layer_norm
          and model.encoder.drop_path_rate == 0.0)


def kernel(dense, t):
  """The Dense layer's linear part (its kernel, no bias) on the tangent."""
  return tf.matmul(t, tf.cast(dense.kernel, t.dtype))


def gelu_slope(z):
  """g'(z) = Φ(z) + z·φ(z), the slope of the exact GELU g(z) = z·Φ(z)."""
  return (0.5 * (1.0 + tf.math.erf(z * _INV_SQRT_2))
          + z * tf.exp(-0.5 * tf.square(z)) * _INV_SQRT_2PI)


def _patch_embedding(layer, x, t):
  return layer(x), layer.conv(layer.pad(t))


def _attention(layer, x, t):
  to_windows, from_windows = layer.windows(*blocks.static_hw(x, 'SplitAttention'))
  q, k, v = layer.split_heads(layer.qkv(to_windows(x)))
  dq, dk, dv = layer.split_heads(kernel(layer.qkv, to_windows(t)))
  o, do = attention.attention_with_tangent(q, k, v, dq, dk, dv)
  return (from_windows(layer.proj(layer.merge_heads(o))),
          from_windows(kernel(layer.proj, layer.merge_heads(do))))


def _mlp(layer, x, t):
  z, dz = layer.fc1(x), kernel(layer.fc1, t)
  return (layer.fc2(tf.nn.gelu(z, approximate=False)), kernel(layer.fc2, gelu_slope(z) * dz))


def unit_with_velocity(layer, x, t) -> Tuple[tf.Tensor, tf.Tensor]:
  """(y, ẏ) of one unit of such a network (`AsViTEncoder.units`: its patch embedding, a
  patch merging or a block) on x and its tangent t."""
  if isinstance(layer, blocks.PatchEmbedding):
    return _patch_embedding(layer, x, t)
  if isinstance(layer, blocks.TransformerBlock):
    a, da = _attention(layer.attn, x, t)        # norm1 is the identity
    x, t = x + a, t + da
    m, dm = _mlp(layer.mlp, x, t)               # norm2 is the identity
    return x + m, t + dm
  return layer(x), layer(t)                     # a merging: linear (no bias, no norm)


def features_and_velocity(model, images, tangents) -> Tuple[tf.Tensor, tf.Tensor]:
  """(h, ḣ): `model.features(images, training=True)` [B, F] and its derivative along
  `tangents` (images' direction of motion, same shape). `model` must pass `supports`."""
  if not supports(model):
    raise ValueError('features_and_velocity needs an AsViT without LayerNorm and drop path')
  x, t = images, tangents
  for layer in model.encoder.units():
    x, t = unit_with_velocity(layer, x, t)
  return tf.reduce_mean(x, axis=[1, 2]), tf.reduce_mean(t, axis=[1, 2])
