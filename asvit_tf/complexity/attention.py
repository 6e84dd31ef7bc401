"""SplitAttention's core, softmax(q kᵀ)·v, as the complexity measures run it: map group by
map group, with its backward and its tangent written out.

At 224 px the measures spend most of their time in the stage-1 score maps (784×784 for a
28×28-token window: 2.4 MB each in float32). A layer holds hundreds of them (images × windows
× heads), and TensorFlow runs each op over all of them before the next op starts, so every
op streams the whole stack through memory. Here, inside a `tf.function`, a `tf.map_fn` loop
takes a few maps at a time (`group_size`: about `GROUP_BYTES` of scores) through all the
ops, so a group's maps stay in cache from one op to the next. Executed eagerly, the same
formulas run on all maps at once (an eager loop would pay Python per group).

With s = q kᵀ (q carries the 1/√d scale), p = softmax(s), o = p v:

- backward, for an output gradient g (traced, the maps are recomputed, not kept; eagerly,
  where they are all at once anyway, kept from the forward):
  ds = p ⊙ (g vᵀ − D) with D_i = g_i·o_i (= Σ_j p_ij (g vᵀ)_ij), one matmul of [g, −D] and
  [v, 1]; then dq = ds k, dk = dsᵀ q, dv = pᵀ g;
- tangent, for (q̇, k̇, v̇): ṡ = q̇ kᵀ + q k̇ᵀ and ṗ = p ⊙ (ṡ − c) with c_i = Σ_j p_ij ṡ_ij
  = q̇_i·(p k)_i + q_i·(p k̇)_i, one matmul of [q̇, q, −c] and [k, k̇, 1]; ȯ = ṗ v + p v̇,
  where p k, p k̇, o and p v̇ come from one matmul of p with [k, k̇, v, v̇].

- second-order jet, for velocities (q̇, k̇, v̇) and accelerations (q̈, k̈, v̈) (`jet`, for
  curvature): ṡ = q̇ kᵀ + q k̇ᵀ and s̈ = q̈ kᵀ + 2q̇ k̇ᵀ + q k̈ᵀ, each one matmul of stacked
  factors; with u = ṡ − Σ_j p ⊙ ṡ: ṗ = p ⊙ u and p̈ = p ⊙ (u² + s̈ − Σ_j p ⊙ s̈ − Σ_j p ⊙ u²)
  (Σ_j ṗ ⊙ ṡ = Σ_j p ⊙ u², as Σ_j p ⊙ u = 0); ȯ = ṗ v + p v̇, ö = p̈ v + 2ṗ v̇ + p v̈, from p
  times [v, v̇, v̈], ṗ times [v, 2v̇] and p̈ times v.

These are the plain ops' results up to float rounding (tests: float64, to 1e-12).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import tensorflow as tf

# Scores per group of maps: a group's working set (a few such maps) stays in the L2/L3 cache.
GROUP_BYTES = 3 << 20
# p·x with x at most this wide is taken as (xᵀ pᵀ)ᵀ (`_times`).
NARROW = 8


def group_size(maps: int, tokens: int, itemsize: int, budget: Optional[int] = None) -> int:
  """The maps per group: the largest divisor of `maps` whose score maps (tokens² values of
  `itemsize` bytes each) fit in `budget` bytes (default `GROUP_BYTES`); at least 1."""
  if maps < 1 or tokens < 1 or itemsize < 1:
    raise ValueError(f'maps, tokens and itemsize must be >= 1, got {maps}, {tokens}, '
                     f'{itemsize}')
  budget = GROUP_BYTES if budget is None else budget
  target = max(1, budget // (tokens * tokens * itemsize))
  if target >= maps:
    return maps
  return max(g for g in range(1, target + 1) if maps % g == 0)


def _over_groups(fn: Callable, inputs: Sequence[tf.Tensor],
                 outputs_like: Sequence[tf.Tensor]) -> Tuple[tf.Tensor, ...]:
  """`fn(*inputs)` (a tuple shaped like `outputs_like`), run group by group over the maps.

  All tensors are [..., tokens, d] with the same leading (map) axes; fn must treat maps
  independently. Eagerly, or with a map count unknown when traced, fn runs on all at once.
  """
  lead = inputs[0].shape[:-2]
  tokens = inputs[0].shape[-2]
  if tf.executing_eagerly() or not lead.is_fully_defined() or tokens is None:
    return tuple(fn(*inputs))
  maps = lead.num_elements()
  group = group_size(maps, tokens, inputs[0].dtype.size)
  if group == maps:
    return tuple(fn(*inputs))

  def grouped(x):
    return tf.reshape(x, [maps // group, group, *x.shape[-2:]])

  specs = tuple(tf.TensorSpec([group, *y.shape[-2:]], y.dtype) for y in outputs_like)
  out = tf.map_fn(lambda xs: tuple(fn(*xs)), tuple(grouped(x) for x in inputs),
                  fn_output_signature=specs, parallel_iterations=1)
  return tuple(tf.reshape(y, like.shape) for y, like in zip(out, outputs_like))


def _probabilities(q, k):
  return tf.nn.softmax(tf.matmul(q, k, transpose_b=True), axis=-1)


def _times(p, x):
  """p·x for maps p [..., n, n] and x [..., n, c]. Up to c = NARROW as (xᵀ pᵀ)ᵀ, which
  oneDNN runs faster for narrow x and slower for wide x (docs/benchmarks.md)."""
  if x.shape[-1] is not None and x.shape[-1] <= NARROW:
    return tf.linalg.matrix_transpose(tf.matmul(x, p, transpose_a=True, transpose_b=True))
  return tf.matmul(p, x)


def _transposed_times(p, x):
  """pᵀ·x as (xᵀ p)ᵀ, which reads p row by row: faster than a transposed p on oneDNN at
  every width measured (docs/benchmarks.md)."""
  return tf.linalg.matrix_transpose(tf.matmul(x, p, transpose_a=True))


def _forward(q, k, v):
  return (_times(_probabilities(q, k), v),)


def backward(q, k, v, o, g, p=None) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """(dq, dk, dv) from the output gradient g and the forward's output o (and its maps p, or
  they are recomputed)."""
  if p is None:
    p = _probabilities(q, k)
  d = tf.reduce_sum(g * o, axis=-1, keepdims=True)
  ds = p * tf.matmul(tf.concat([g, -d], -1), tf.concat([v, tf.ones_like(d)], -1),
                     transpose_b=True)
  return _times(ds, k), _transposed_times(ds, q), _transposed_times(p, g)


def maps_and_output(q, k, v) -> Tuple[tf.Tensor, tf.Tensor]:
  """(p, o): the maps p = softmax(q kᵀ) and o = p v, all maps at once (for `backward`)."""
  p = _probabilities(q, k)
  return p, _times(p, v)


@tf.custom_gradient
def attention(q, k, v):
  """softmax(q kᵀ)·v over the last two axes of [..., tokens, d] (q already scaled), with
  the backward written out; map group by map group inside a `tf.function`. Eagerly, the
  maps p are kept for the backward instead of recomputed: one q kᵀ and one softmax fewer
  per call, for the maps' memory until the backward."""
  if tf.executing_eagerly():
    p, o = maps_and_output(q, k, v)
    return o, lambda g: backward(q, k, v, o, g, p)
  o, = _over_groups(_forward, (q, k, v), (v,))

  def gradient(g):
    return _over_groups(backward, (q, k, v, o, g), (q, k, v))
  return o, gradient


def _with_tangent(q, k, v, dq, dk, dv):
  d_k, d_v = k.shape[-1], v.shape[-1]
  p = _probabilities(q, k)
  pm = _times(p, tf.concat([k, dk, v, dv], -1))
  pk, pdk = pm[..., :d_k], pm[..., d_k:2 * d_k]
  o, pdv = pm[..., 2 * d_k:2 * d_k + d_v], pm[..., 2 * d_k + d_v:]
  c = tf.reduce_sum(dq * pk + q * pdk, axis=-1, keepdims=True)
  x = tf.matmul(tf.concat([dq, q, -c], -1), tf.concat([k, dk, tf.ones_like(c)], -1),
                transpose_b=True)
  return o, _times(p * x, v) + pdv


def attention_with_tangent(q, k, v, dq, dk, dv) -> Tuple[tf.Tensor, tf.Tensor]:
  """(o, ȯ): softmax(q kᵀ)·v and its derivative along the tangents (q̇, k̇, v̇), all
  [..., tokens, d]; map group by map group inside a `tf.function`."""
  return _over_groups(_with_tangent, (q, k, v, dq, dk, dv), (v, v))


def _with_jet(q, k, v, dq, dk, dv, ddq, ddk, ddv):
  p = _probabilities(q, k)
  ds = tf.matmul(tf.concat([dq, q], -1), tf.concat([k, dk], -1), transpose_b=True)
  dds = tf.matmul(tf.concat([ddq, dq, q], -1), tf.concat([k, 2.0 * dk, ddk], -1),
                  transpose_b=True)
  u = ds - tf.reduce_sum(p * ds, axis=-1, keepdims=True)
  pu = p * u
  # p̈ = p ⊙ (u² + s̈ − Σ_j p s̈ − Σ_j ṗ ṡ), and Σ_j ṗ ṡ = Σ_j p u² (as Σ_j p u = 0).
  w = u * u + dds - tf.reduce_sum(p * dds + pu * u, axis=-1, keepdims=True)
  d_v = v.shape[-1]
  pm = _times(p, tf.concat([v, dv, ddv], -1))
  o, pdv, pddv = pm[..., :d_v], pm[..., d_v:2 * d_v], pm[..., 2 * d_v:]
  dpm = _times(pu, tf.concat([v, 2.0 * dv], -1))
  return (o, dpm[..., :d_v] + pdv,
          _times(p * w, v) + dpm[..., d_v:] + pddv)


def attention_with_jet(q, k, v, dq, dk, dv, ddq, ddk, ddv
                       ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """(o, ȯ, ö): softmax(q kᵀ)·v and its first and second derivatives along a path whose
  inputs move with velocities (q̇, k̇, v̇) and accelerations (q̈, k̈, v̈), all
  [..., tokens, d]; map group by map group inside a `tf.function`."""
  return _over_groups(_with_jet, (q, k, v, dq, dk, dv, ddq, ddk, ddv), (v, v, v))
