"""The velocity and acceleration of a network's features along an input curve, pushed
through by hand: a second-order jet.

Curvature (κ, L^E_κ) needs a = d²h/dθ² beside v = dh/dθ. Two nested
`tf.autodiff.ForwardAccumulator`s (forward-over-forward) compute it op by op, and tracing
that nest is most of a new network's measuring cost (docs/benchmarks.md). Here the triple
(x, ẋ, ẍ) travels through the same layers, written out for the networks the curve metrics
measure (LayerNorms removed, no drop path): an As-ViT (`dual.supports`, with or without the
residual merge) and a ViT-Bench-101 PiT (`models.pit.PiT(use_layer_norm=False)`). The values
come from the model's own layers; the derivatives from one plain forward computation, no
autodiff:

- linear maps y = L x + b (convs, Dense layers, pads, windows, patch merging, PiT's pooling,
  the mean over tokens): ẏ = L ẋ, ÿ = L ẍ (both in one call, on the two stacked along the
  batch axis); constants (PiT's position embedding and class token) have ẏ = ÿ = 0;
- GELU g(z) = z·Φ(z): ġ = g'(z)·ż, g̈ = g'(z)·z̈ + g''(z)·ż², with g' = Φ(z) + z·φ(z) and
  g'' = φ(z)·(2 − z²);
- attention (`attention.attention_with_jet`: map group by map group when traced),
  s = (q·scale)kᵀ, p = softmax(s), o = p·v: ṡ = q̇kᵀ + qk̇ᵀ, s̈ = q̈kᵀ + 2q̇k̇ᵀ + qk̈ᵀ;
  with u = ṡ − Σ_j p⊙ṡ: ṗ = p⊙u, p̈ = ṗ⊙u + p⊙(s̈ − Σ_j p⊙s̈ − Σ_j ṗ⊙ṡ);
  ȯ = ṗv + pv̇, ö = p̈v + 2ṗv̇ + pv̈.

`supports(model)` says whether a model is such a network; the curve metrics fall back to the
accumulators otherwise.
"""
from __future__ import annotations

import math
from typing import Callable, Tuple

import tensorflow as tf

from asvit_tf.complexity import attention
from asvit_tf.complexity import dual
from asvit_tf.layers import blocks

_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)

Jet = Tuple[tf.Tensor, tf.Tensor, tf.Tensor]


def _is_curve_pit(model) -> bool:
  from asvit_tf.models import pit  # pylint: disable=g-import-not-at-top
  return (isinstance(model, pit.PiT) and not model.use_layer_norm
          and model.drop_path_rate == 0.0)


def supports(model) -> bool:
  """True for an `AsViT` (`dual.supports`) or a `PiT` without LayerNorms and drop path."""
  return dual.supports(model) or _is_curve_pit(model)


def _linear(fn: Callable, dx, ddx):
  """(fn(ẋ), fn(ẍ)) for a linear `fn` that keeps the batch axis first: one call on both."""
  y = fn(tf.concat([dx, ddx], 0))
  if isinstance(y, (tuple, list)):
    halves = [tf.split(t, 2) for t in y]
    return tuple(h[0] for h in halves), tuple(h[1] for h in halves)
  return tuple(tf.split(y, 2))


def _gelu(z, dz, ddz) -> Jet:
  """The exact GELU as `tf.nn.gelu` computes it, g(z) = z·erfc(−c·z)/2, with its c = 1/√2
  rounded to float32 even in float64 (TF's cast of a Python float): the derivatives are
  those of that function, so in float64 they agree with autodiff of the model to rounding
  (with c exact they would differ by ~3e-8 relative). With a = c·z, E = exp(−a²):
  g' = erfc(−a)/2 + a·E/√π (= Φ(z) + z·φ(z) for c = 1/√2) and g'' = 2c·E·(1 − a²)/√π
  (= φ(z)·(2 − z²))."""
  c = tf.cast(tf.constant(_INV_SQRT_2, tf.float32), z.dtype)
  a = c * z
  e = tf.exp(-tf.square(a)) * _INV_SQRT_PI
  slope = 0.5 * tf.math.erfc(-a) + a * e
  bend = 2.0 * c * e * (1.0 - tf.square(a))
  return (tf.nn.gelu(z, approximate=False), slope * dz,
          slope * ddz + bend * tf.square(dz))


def _mlp(layer, x, dx, ddx) -> Jet:
  """Dense -> GELU -> Dense (`layer.fc1`, `layer.fc2`)."""
  g, dg, ddg = _gelu(layer.fc1(x), *_linear(lambda t: dual.kernel(layer.fc1, t), dx, ddx))
  return (layer.fc2(g), *_linear(lambda t: dual.kernel(layer.fc2, t), dg, ddg))


def _attention(layer, x, dx, ddx, to_tokens=tf.identity, from_tokens=tf.identity) -> Jet:
  """Multi-head attention of `layer` (`qkv`, `proj`, `split_heads`, `merge_heads`) on the
  tokens `to_tokens` makes of x, put back by `from_tokens`."""
  q, k, v = layer.split_heads(layer.qkv(to_tokens(x)))
  (dq, dk, dv), (ddq, ddk, ddv) = _linear(
      lambda t: layer.split_heads(dual.kernel(layer.qkv, to_tokens(t))), dx, ddx)
  o, do, ddo = attention.attention_with_jet(q, k, v, dq, dk, dv, ddq, ddk, ddv)
  return (from_tokens(layer.proj(layer.merge_heads(o))),
          *_linear(lambda t: from_tokens(dual.kernel(layer.proj, layer.merge_heads(t))),
                   do, ddo))


def _add(a: Jet, b: Jet) -> Jet:
  return tuple(s + t for s, t in zip(a, b))


def _asvit(model, images, dx, ddx) -> Jet:
  encoder = model.encoder
  embed = encoder.patch_embed
  jet = (embed(images), *_linear(lambda t: embed.conv(embed.pad(t)), dx, ddx))
  for i, stage in enumerate(encoder.stages):
    if i:
      merge = encoder.merges[i - 1]             # linear: no bias, no norm, shortcut too
      jet = (merge(jet[0]), *_linear(merge, *jet[1:]))
    for block in stage:
      attn = block.attn                          # norm1 and norm2 are the identity
      windows = attn.windows(*blocks.static_hw(jet[0], 'SplitAttention'))
      jet = _add(jet, _attention(attn, *jet, *windows))
      jet = _add(jet, _mlp(block.mlp, *jet))
  return tuple(tf.reduce_mean(t, axis=[1, 2]) for t in jet)


def _pit(model, images, dx, ddx) -> Jet:
  x, cls = model.embed(images)                   # position embedding, class token: constants
  dx, ddx = _linear(model.embedding_conv, dx, ddx)
  dcls = ddcls = tf.zeros_like(cls)
  for i, stage in enumerate(model.stages):
    if i:
      pool = model.pools[i - 1]
      x, cls = pool(x, cls)
      dx, ddx = _linear(pool.conv, dx, ddx)
      dcls, ddcls = _linear(lambda t, fc=pool.fc: dual.kernel(fc, t), dcls, ddcls)
    jet = (model.sequence(i, x, cls), model.sequence(i, dx, dcls),
           model.sequence(i, ddx, ddcls))
    for block in stage:                          # norm1 and norm2 are the identity
      jet = _add(jet, _attention(block, *jet))
      jet = _add(jet, _mlp(block, *jet))
    (x, cls), (dx, dcls), (ddx, ddcls) = (model.grid_and_tokens(i, t) for t in jet)
  return cls[:, 0], dcls[:, 0], ddcls[:, 0]


def features_jet(model, images, velocity, acceleration) -> Jet:
  """(h, ḣ, ḧ): `model.features(images, training=True)` [B, F] and its first and second
  derivatives along a path through `images` with `velocity` and `acceleration` (each of the
  images' shape). `model` must pass `supports` and be built."""
  if dual.supports(model):
    return _asvit(model, images, velocity, acceleration)
  if _is_curve_pit(model):
    model._check(images)  # pylint: disable=protected-access
    return _pit(model, images, velocity, acceleration)
  raise ValueError('features_jet needs an AsViT or a PiT without LayerNorm and drop path, '
                   f'got {type(model).__name__}')
