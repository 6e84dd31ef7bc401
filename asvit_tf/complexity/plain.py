"""κ_Θ's eager pass on an As-ViT topology in plain TensorFlow ops, without a Keras model.

Per new network, the eager tapped pass (`ntk.TappedGradients` on the built model) paid
mostly for Keras rather than for arithmetic: on the seed at 64 px, 56 ms to build the model
(its layers and variables), 30 ms to draw into the variables, and about two thousand ops,
most of them the layers' bookkeeping (Dense's `tensordot` on token maps, the LayerNorms'
`batch_normalization`, the taps' recomputed x̂) and their gradients.

Here the same network runs as functions of tensors:
- the weights are drawn as tensors, in the order and with the seeds `Network.reinitialise`
  draws the model's variables (`weight_plan` lists them as the model creates them), so they
  are the model's to the bit. The weights a Keras initializer does not draw (biases and
  LayerNorm offsets, zeros; LayerNorm scales, ones) are left out of the arithmetic, which
  they do not change;
- the forward pass is `asvit.AsViTEncoder`'s (patch embedding, blocks, patch mergings, with
  `asvit_tf.layers.blocks`' own functions for padding, windows, heads and patches, and
  `attention`'s maps for the core), each Dense one matmul on the tokens, each LayerNorm
  x̂ = (x − μ) / √(σ² + ε), which is also the scale's tapped x̂;
- the backward is written out, no tape: from the features' sum back to the patch
  embedding's output, each Dense δx = δz Wᵀ, each LayerNorm δx = (δ − mean(δ) − x̂ ·
  mean(δ ⊙ x̂)) / √(σ² + ε), GELU's slope Φ(f) + f·φ(f), the attention's `attention.backward`,
  the windows, heads and patches by their inverse permutations (the patches' δ added back
  into the grid by one segment sum). Each kernel's input a and the δ at its output are
  recorded as `TappedGradients` takes them. (A tape over the same forward pass took ~1,000
  eager ops on the seed at 64 px; this backward ~870, and 3–8 % less time.)

Θ is then formed from those factors as `TappedGradients` forms it (`ntk.theta_from_factors`).
The values equal the tapped pass on the Keras model to float rounding (tests in float64).

One helper thread (`_Helper`) draws the weights in the order the forward pass reads them,
and forms each kernel's Θ term as soon as the backward has its δ (`theta`; summed in the
forward's order, so Θ is the same to the bit): an eager op leaves Python's lock while its
kernel runs, so their kernels overlap the pass's (on the seed at 64 px, ~10 % less time).

Only for a topology measured as the default `AsViT` that `network.model_factory` builds
(plain merge, `splits` windows, tokenization stride 4, drop path 0) under a float32 or
float64 Keras policy (`topology_or_none`); anything else takes the Keras model.
"""
from __future__ import annotations

import collections.abc
import concurrent.futures
import functools
import math
import os
import threading
from typing import Callable, List, Mapping, NamedTuple, Optional, Tuple

import tensorflow as tf
import tf_keras

from asvit_tf import arch as arch_lib
from asvit_tf import seeding
from asvit_tf.complexity import attention
from asvit_tf.complexity import network as network_lib
from asvit_tf.complexity import ntk
from asvit_tf.layers import blocks
from asvit_tf.layers.blocks import ints

STRIDE = 4    # the default tokenization (`AsViTEncoder`'s stride, dilation 1)
EPSILON = 1e-5   # `blocks.norm`'s LayerNorm ε


class PlannedWeight(NamedTuple):
  """One trainable variable of the model: its name (its Keras name without `encoder/` and
  `:0`), shape, the initializer that draws it (None: a constant, zeros or ones), and whether
  it is a Dense or LayerNorm weight (drawn again at every repeat under `share_embedding`)."""
  name: str
  shape: Tuple[int, ...]
  initializer: Optional[tf_keras.initializers.Initializer]
  redrawn: bool


def policy_dtype() -> Optional[tf.DType]:
  """The dtype the model would be built in (weights and compute alike: Keras' global
  policy float32 or float64), or None under a mixed policy (the Keras path)."""
  name = tf_keras.mixed_precision.global_policy().name
  return tf.as_dtype(name) if name in ('float32', 'float64') else None


def topology_or_none(arch_or_factory, width: Optional[int]) -> Optional[arch_lib.Topology]:
  """The topology (with C = `width` if given) when `arch_or_factory` is a topology, topology
  string or variant name and the Keras policy is not mixed (`policy_dtype`); else None (a
  factory or a model: the Keras path)."""
  if callable(arch_or_factory) or network_lib.is_model(arch_or_factory):
    return None
  if policy_dtype() is None:
    return None
  topology = arch_lib.as_topology(arch_or_factory)
  return topology if width is None else topology.replace(width=int(width))


@functools.lru_cache(maxsize=256)
def weight_plan(topology: arch_lib.Topology, channels: int = 3) -> Tuple[PlannedWeight, ...]:
  """The trainable variables of `network.model_factory(topology)`'s model built for images
  of `channels` channels, in its `trainable_variables` order: the patch embedding's, the
  patch mergings', then the blocks', stage by stage."""
  widths, kernels = topology.stage_widths, topology.kernels
  conv = blocks.embedding_initializer(channels, kernels[0])
  plan = [PlannedWeight('patch_embed/kernel', (kernels[0], kernels[0], channels, widths[0]),
                        conv, False),
          PlannedWeight('patch_embed/bias', (widths[0],), conv, False)]
  plan += _norm_plan('patch_embed/norm', widths[0])
  for i in range(1, arch_lib.NUM_STAGES):
    patch = kernels[i] ** 2 * widths[i - 1]
    plan += _norm_plan(f'merge{i + 1}/norm', patch)
    plan += _dense_plan(f'merge{i + 1}/reduction', patch, widths[i], bias=False)
  for i, (width, heads) in enumerate(zip(widths, topology.stage_heads)):
    inner = width // heads * heads
    hidden = topology.expansions[i] * width
    for j in range(topology.depths[i]):
      name = f'stage{i + 1}_block{j + 1}'
      plan += _norm_plan(f'{name}/norm1', width)
      plan += _dense_plan(f'{name}/attn/qkv', width, 3 * inner)
      plan += _dense_plan(f'{name}/attn/proj', inner, width)
      plan += _norm_plan(f'{name}/norm2', width)
      plan += _dense_plan(f'{name}/mlp/fc1', width, hidden)
      plan += _dense_plan(f'{name}/mlp/fc2', hidden, width)
  return tuple(plan)


def _norm_plan(name: str, width: int) -> List[PlannedWeight]:
  return [PlannedWeight(f'{name}/gamma', (width,), None, True),
          PlannedWeight(f'{name}/beta', (width,), None, True)]


def _dense_plan(name: str, n_in: int, n_out: int, bias: bool = True) -> List[PlannedWeight]:
  kernel = PlannedWeight(f'{name}/kernel', (n_in, n_out), blocks.dense_initializer(), True)
  return [kernel, PlannedWeight(f'{name}/bias', (n_out,), None, True)] if bias else [kernel]


def _draw(plan, i: int, seed: int, repeat: int, share_embedding: bool, dtype: tf.DType):
  weight = plan[i]
  draw = repeat if weight.redrawn or not share_embedding else 0
  initial = functools.partial(weight.initializer, weight.shape, dtype=dtype)
  return network_lib.reseeded(initial, seeding.measure_seed(seed, seeding.WEIGHTS, draw, i))


class _Helper:
  """The one helper thread that draws the weights and forms Θ's terms while the pass goes on,
  made on first use (and anew in a forked child: a thread does not survive a fork)."""
  executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
  lock = threading.Lock()

  @classmethod
  def submit(cls, fn, *args) -> concurrent.futures.Future:
    with cls.lock:
      if cls.executor is None:
        cls.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='asvit-plain')
    return cls.executor.submit(fn, *args)

  @classmethod
  def forget(cls):
    cls.executor, cls.lock = None, threading.Lock()


os.register_at_fork(after_in_child=_Helper.forget)


class Drawing(collections.abc.Mapping):
  """{name: value} of the drawn weights of `plan` at `repeat`: `Network.reinitialise`'s
  draws of a model in `dtype`, to the bit. They are drawn in a helper thread in the order
  the forward pass reads them (the patch embedding, then each stage's merging and blocks)
  while that pass runs on the ones already drawn: an eager op leaves Python's lock while its
  kernel runs, so the draws' kernels overlap the pass's. Reading a value waits for it."""

  def __init__(self, plan, seed: int, repeat: int, share_embedding: bool = False,
               dtype: tf.DType = tf.float32):
    drawn = [i for i, weight in enumerate(plan) if weight.initializer is not None]
    order = sorted(drawn, key=lambda i: _forward_place(plan[i].name))
    self._futures = {plan[i].name: _Helper.submit(_draw, plan, i, seed, repeat,
                                                   share_embedding, dtype) for i in order}

  def __getitem__(self, name: str) -> tf.Tensor:
    return self._futures[name].result()

  def __iter__(self):
    return iter(self._futures)

  def __len__(self) -> int:
    return len(self._futures)


def _forward_place(name: str) -> Tuple[int, int]:
  """(stage, place) of a weight in the forward pass: the merging before the stage's blocks."""
  unit = name.split('/')[0]
  if unit == 'patch_embed':
    return (0, 0)
  if unit.startswith('merge'):
    return (int(unit[len('merge'):]) - 1, 0)
  stage, block = unit[len('stage'):].split('_block')
  return (int(stage) - 1, int(block))


def normalised(x) -> Tuple[tf.Tensor, tf.Tensor]:
  """(x̂, 1/√(σ² + ε)): x̂ = (x − μ) / √(σ² + ε) over the last axis (μ, σ² of each token's
  vector)."""
  mean = tf.reduce_mean(x, axis=-1, keepdims=True)
  centred = x - mean
  variance = tf.reduce_mean(tf.square(centred), axis=-1, keepdims=True)
  inverse = tf.math.rsqrt(variance + tf.constant(EPSILON, x.dtype))
  return centred * inverse, inverse


def normalised_backward(delta, x_hat, inverse):
  """δx from δ at x̂: (δ − mean(δ) − x̂ · mean(δ ⊙ x̂)) / √(σ² + ε)."""
  return inverse * (delta - tf.reduce_mean(delta, axis=-1, keepdims=True)
                    - x_hat * tf.reduce_mean(delta * x_hat, axis=-1, keepdims=True))


def gelu_backward(delta, x):
  """δ at x of the exact GELU x·Φ(x): δ · (Φ(x) + x·φ(x))."""
  cdf = 0.5 * (1.0 + tf.math.erf(x * tf.constant(0.5 ** 0.5, x.dtype)))
  pdf = tf.exp(-0.5 * tf.square(x)) * tf.constant((2 * math.pi) ** -0.5, x.dtype)
  return delta * (cdf + x * pdf)


def merge_patches_backward(delta, x_shape, kernel: int):
  """δ at the grid [B, n, m, d] of `blocks.merge_patches` from δ at its patches: the
  patches' δ added back into the padded grid by one segment sum, then cropped."""
  b, rows, cols, d = x_shape
  (top, bottom), (left, right) = (blocks.merge_padding(rows, kernel),
                                  blocks.merge_padding(cols, kernel))
  padded_rows, padded_cols = rows + top + bottom, cols + left + right
  index = blocks.patch_index(padded_cols, delta.shape[1], delta.shape[2], kernel)
  delta = tf.transpose(tf.reshape(delta, ints([b, -1, d])), ints([1, 0, 2]))  # [P·k², b, d]
  grid = tf.math.unsorted_segment_sum(delta, index, padded_rows * padded_cols)
  grid = tf.reshape(tf.transpose(grid, ints([1, 0, 2])), ints([b, padded_rows, padded_cols, d]))
  return grid[:, top:top + rows, left:left + cols]


class _Pass:
  """One forward pass of a topology on drawn weights that keeps what its backward needs,
  then that backward written out from the features' sum, recording (name, kind, a, δ) per
  tapped kernel or scale as `TappedGradients` takes them ('dense': a the input, δ at the
  output; 'scale': a = x̂, δ at the LayerNorm's output; 'conv': a None, the patches taken
  afterwards, δ at the conv's output), in the backward's order, each also handed to
  `on_record` as soon as it is taken."""

  def __init__(self, topology: arch_lib.Topology, weights: Mapping[str, tf.Tensor],
               include_scales: bool, on_record: Optional[Callable[..., None]] = None):
    self.topology, self.weights, self.include_scales = topology, weights, include_scales
    self.records, self._on_record = [], on_record

  def _record(self, *record):
    self.records.append(record)
    if self._on_record is not None:
      self._on_record(*record)

  def run(self, images):
    topo = self.topology
    kernel = topo.kernels[0]
    padded = blocks.pad_images(images, kernel, STRIDE, 1)
    z = tf.nn.bias_add(blocks.embedding_conv(padded, self.weights['patch_embed/kernel'],
                                             STRIDE, 1), self.weights['patch_embed/bias'])
    x, norm = self._norm(z)
    steps = []    # per merging and block: its backward, δ at its output -> δ at its input
    for i in range(arch_lib.NUM_STAGES):
      if i:
        x, step = self._merge(f'merge{i + 1}', x, topo.kernels[i])
        steps.append(step)
      for j in range(topo.depths[i]):
        x, step = self._block(f'stage{i + 1}_block{j + 1}', x, topo.splits[i],
                              topo.stage_heads[i])
        steps.append(step)
    # The features are the mean over the grid: each token's δ is 1 / tokens.
    delta = tf.fill(x.shape, tf.constant(1.0 / (x.shape[1] * x.shape[2]), x.dtype))
    for step in reversed(steps):
      delta = step(delta)
    self._record('patch_embed/kernel', 'conv', None, norm('patch_embed/norm', delta))

  def _norm(self, x):
    """(x̂, backward(name, δ at x̂) -> δ at x, recording the scale's factors)."""
    x_hat, inverse = normalised(x)

    def backward(name, delta):
      if self.include_scales:
        self._record(f'{name}/gamma', 'scale', x_hat, delta)
      return normalised_backward(delta, x_hat, inverse)
    return x_hat, backward

  def _dense(self, name: str, x):
    """(z, backward(δ at z) -> δ at x, recording the kernel's factors) of a Dense at its
    initial bias 0: one matmul of the tokens by its kernel."""
    kernel = self.weights[f'{name}/kernel']
    z = tf.reshape(tf.matmul(tf.reshape(x, ints([-1, x.shape[-1]])), kernel),
                   ints([*x.shape[:-1], kernel.shape[-1]]))

    def backward(delta):
      self._record(f'{name}/kernel', 'dense', x, delta)
      return tf.reshape(tf.matmul(tf.reshape(delta, ints([-1, delta.shape[-1]])), kernel,
                                  transpose_b=True), ints(x.shape))
    return z, backward

  def _merge(self, name: str, x, kernel: int):
    patches = blocks.merge_patches(x, kernel)
    h, norm = self._norm(patches)
    z, reduction = self._dense(f'{name}/reduction', h)

    def backward(delta):
      delta = norm(f'{name}/norm', reduction(delta))
      return merge_patches_backward(delta, x.shape, kernel)
    return z, backward

  def _block(self, name: str, x, split: int, heads: int):
    rows, cols = blocks.static_hw(x, 'SplitAttention')
    to_windows, from_windows = blocks.window_functions(
        rows, cols, *blocks.split_window(rows, cols, split))
    head_dim = x.shape[-1] // heads
    scale = head_dim ** -0.5
    h1, norm1 = self._norm(x)
    qkv, qkv_dense = self._dense(f'{name}/attn/qkv', to_windows(h1))
    q, k, v = blocks.split_heads(qkv, heads, head_dim, scale)
    p, o = attention.maps_and_output(q, k, v)
    proj, proj_dense = self._dense(f'{name}/attn/proj', blocks.merge_heads(o))
    x1 = x + from_windows(proj)
    h2, norm2 = self._norm(x1)
    f, fc1 = self._dense(f'{name}/mlp/fc1', h2)
    g, fc2 = self._dense(f'{name}/mlp/fc2', tf.nn.gelu(f, approximate=False))

    def backward(delta):
      d_f = gelu_backward(fc2(delta), f)
      d_x1 = delta + norm2(f'{name}/norm2', fc1(d_f))
      d_o = proj_dense(to_windows(d_x1))   # [Bw, n, heads·hd]
      n = d_o.shape[1]
      d_o = tf.transpose(tf.reshape(d_o, ints([-1, n, heads, head_dim])), ints([0, 2, 1, 3]))
      dq, dk, dv = attention.backward(q, k, v, o, d_o, p)
      d_qkv = tf.reshape(tf.transpose(tf.stack([dq * scale, dk, dv]), ints([1, 3, 0, 2, 4])),
                         ints([-1, n, 3 * heads * head_dim]))
      return d_x1 + norm1(f'{name}/norm1', from_windows(qkv_dense(d_qkv)))
    return x1 + g, backward


def factors(topology: arch_lib.Topology, weights: Mapping[str, tf.Tensor], images,
            include_scales: bool = True):
  """(name, kind, factors) per tapped call, as `TappedGradients._factors` gives them for
  the model's weights (names for weights): 'product' (a [b, tokens, in], δ [b, tokens,
  out]) or 'gradient' (a scale's g [b, C])."""
  run = _Pass(topology, weights, include_scales)
  run.run(images)
  return [_factor(topology, images, *record) for record in reversed(run.records)]


def _factor(topology: arch_lib.Topology, images, name: str, kind: str, a, delta):
  """(name, kind, factors) of one record of `_Pass` (`factors`)."""
  b = images.shape[0]
  delta = tf.reshape(delta, ints([b, -1, delta.shape[-1]]))
  if kind == 'scale':
    a = tf.reshape(a, ints([b, -1, delta.shape[-1]]))
    return name, 'gradient', tf.reduce_sum(a * delta, axis=1)   # [b, C]
  if kind == 'conv':
    a = blocks.embedding_patches(images, topology.kernels[0], STRIDE, 1)
  return name, 'product', (tf.reshape(a, ints([b, -1, a.shape[-1]])), delta)


def _term(topology: arch_lib.Topology, images, *record):
  """(kind, value) of one record: a kernel's Θ term ('product') or a scale's g ('gradient')."""
  _, kind, value = _factor(topology, images, *record)
  return kind, ntk.product_term(*value) if kind == 'product' else value


def theta(topology: arch_lib.Topology, weights: Mapping[str, tf.Tensor], images,
          include_scales: bool = True) -> tf.Tensor:
  """`ntk.theta_from_factors(factors(...))` to the bit, each record's term formed in the
  helper thread while the backward goes on (its kernels overlap the backward's), summed in
  the forward's order."""
  terms = []
  run = _Pass(topology, weights, include_scales,
              lambda *record: terms.append(_Helper.submit(_term, topology, images, *record)))
  run.run(images)
  return ntk.theta_from_terms(future.result() for future in reversed(terms))


def kernel_matrix(topology: arch_lib.Topology, images, seed: int, repeat: int, *,
                  include_scales: bool = True, share_embedding: bool = False,
                  chunk_size: Optional[int] = None) -> tf.Tensor:
  """Θ [B, B] in float64 of `topology` at `repeat`'s weights (`Drawing`, in the images'
  dtype) on `images` [B, H, W, C]: the whole batch in one pass (None), or in passes of
  `chunk_size` images whose per-image gradients are joined."""
  plan = weight_plan(topology, int(images.shape[-1]))
  weights = Drawing(plan, seed, repeat, share_embedding, images.dtype)
  count = int(images.shape[0])
  if chunk_size is None or chunk_size >= count:
    return theta(topology, weights, images, include_scales)
  wanted = [(w.name, w.shape, images.dtype) for w in plan
            if len(w.shape) >= 2 or (include_scales and w.name.endswith('/gamma'))]

  def per_image(chunk):
    return ntk.per_image_from_factors(factors(topology, weights, chunk, include_scales),
                                      wanted, int(chunk.shape[0]))
  return ntk.kernel_matrix(ntk.chunk_by_chunk(per_image, images, chunk_size, pad=False))
