"""Condition number of the neural tangent kernel at initialisation (docs/design.md §5, §6).

For B images x_i, g_i is the gradient of Σ_j h_j(x_i) (the sum of the pooled features) with
respect to the weights, Θ = G Gᵀ (B×B) and κ_Θ = λ_max / λ_min (lower is better).

Weights are, as in the authors' code (the PyTorch parameters named 'weight'), the kernels
(trainable variables of rank >= 2: Dense and conv kernels) and the LayerNorm scales γ;
biases and LayerNorm offsets β are left out. `include_scales=False` leaves γ out too (the
kernels only). LayerNorms stay in the network either way.

On an As-ViT or a PiT all g_i come from one batched forward and backward pass
(`TappedGradients`): every kernel acts on each image's tokens as a matmul (a Dense layer, or
the patch embedding's conv as a matmul of image patches), so with a_i its input and δ_i the
gradient with respect to its output for image i, g_i = Σ_tokens a_i ⊗ δ_i = a_iᵀ δ_i: one
batched matmul per kernel, as the weight gradient of ordinary training but without summing
over the batch. A PiT pooling's grouped conv (one input channel per output channel) is the
same per input channel: its patches of that channel against δ of its output channels. A
LayerNorm y = γ ⊙ x̂ + β, x̂ = (x − μ(x)) / √(σ²(x) + ε) over the last axis, gives
∂y_tc/∂γ_c = x̂_tc for every token t, so its γ's gradient is g_i = Σ_tokens x̂_i ⊙ δ_i
with δ_i the gradient at its output. For any other model (`per_image_gradients`):
`tf.vectorized_map` over the images of a per-image forward and backward pass, which
TensorFlow vectorises op by op, at a higher cost to trace. Θ is accumulated weight by
weight in float64 so that the full G is never concatenated.
"""
from __future__ import annotations

import functools
import logging as logging_lib
import time
from typing import List, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from asvit_tf.complexity import attention
from asvit_tf import seeding
from asvit_tf.complexity import network as network_lib
from asvit_tf.layers import blocks
from asvit_tf.layers.blocks import ints
from asvit_tf.complexity.result import MetricResult
from asvit_tf.errors import UserInputError


# Images per per-image-gradient pass: chunks of 4 need about half the memory of the whole
# batch at once (the seed, a late grow candidate) and are no slower on the seed
# (docs/benchmarks.md).
DEFAULT_CHUNK = 4
METHODS = ('auto', 'taps', 'vmap', 'units')
# mode='auto' runs a PiT's tapped κ_Θ eagerly (at most network.EAGER_REPEATS repeats) while
# its batch is within this many forward MACs (images × MACs of one image), instead of
# network.EAGER_BATCH_MACS: the tapped pass is one plain batched forward and backward, whose
# trace (~9 CPU-s per new PiT at 224 px) costs more than 5 eager repeats up to the median
# PiT, where eager memory is still within the curves' traced peak (docs/benchmarks.md,
# "κ_Θ of PiTs by taps"). As-ViT networks keep network.EAGER_BATCH_MACS (one repeat: below).
PIT_TAPS_EAGER_BATCH_MACS = 1.1e10
# mode='auto' runs an As-ViT's tapped κ_Θ of one repeat eagerly beyond network.EAGER_BATCH_MACS
# too, in at most two passes of at most this many forward MACs (images × MACs of one image)
# each: 16 images of any paper-space topology at C=32 and 224 px (0.23–0.55 G MACs each) in
# one pass. On the seed there (7.9 G MACs) a new network then costs 0.9–1.4 s at ~4.6 GB peak
# RSS, against 1.1–1.6 s in two eager passes of 8 images (2.7 GB) and 1.6–2.3 s traced in
# chunks of 4 (1.5 GB), about 1 s of it the trace. A further repeat costs ~1.3 s eagerly
# against ~0.8 s traced, so from two repeats on the trace pays (docs/benchmarks.md, "κ_Θ of
# one repeat eagerly").
ASVIT_ONE_REPEAT_PASS_MACS = 9e9
ASVIT_ONE_REPEAT_PASSES = 2
# Without a Keras model (`plain`), a topology's κ_Θ costs no build and far fewer eager ops:
# at 224 px a repeat of 16 images takes ~0.5–0.9 s eagerly, so mode='auto' runs it eagerly
# for up to network.EAGER_REPEATS repeats where the whole batch is one pass within
# ASVIT_ONE_REPEAT_PASS_MACS (on 4 paper-space topologies, 5 repeats: 13.5 s against
# 18.8–24.9 s traced; peak RSS 4.0 GB against 1.5 GB; docs/benchmarks.md, "κ_Θ without a
# Keras model").


class _QuietPforFallback(logging_lib.Filter):
  """Drops pfor's "<op> uses a while_loop. Fix that!" warning: the per-image gradient of a
  strided conv kernel (the patch embedding) has no vectorised rule and falls back to a loop
  over the images; it is correct, cheap here, and would otherwise be logged per topology."""

  def filter(self, record):
    return 'uses a while_loop. Fix that!' not in record.getMessage()


def _quiet_pfor():
  logger = logging_lib.getLogger('tensorflow')
  if not any(isinstance(f, _QuietPforFallback) for f in logger.filters):
    logger.addFilter(_QuietPforFallback())


def per_image_gradients(features, weights, images, chunk_size: Optional[int] = None):
  """Per-image gradients of Σ_j features(x_i)_j: a list with one [B, *w.shape] per weight
  (zeros for a weight the features do not depend on).

  `chunk_size` images go through one vectorised pass at a time (None: all B at once): a
  `tf.map_fn` over the chunks, one after the other, so the per-image function is traced
  once whatever the number of chunks (the batch is padded to whole chunks). The activations
  a pass keeps for its backward passes scale with the chunk.
  """
  def one_image(x):
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(weights)
      total = tf.reduce_sum(features(x[None]))
    return tape.gradient(total, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
  _quiet_pfor()
  return _chunked(lambda chunk: tf.vectorized_map(one_image, chunk), images, chunk_size,
                  weights)


def _chunked(fn, images, chunk_size: Optional[int], weights):
  """fn(images) -> [one [b, *w.shape] per weight], run on `chunk_size` images at a time by
  one `tf.map_fn` (traced once whatever the number of chunks; the batch is padded to whole
  chunks and the padding's rows dropped). Run eagerly, the chunks go through a Python loop
  instead: an eager `tf.map_fn` converts and traces `fn` for every chunk."""
  count = images.shape[0]
  if count is None or not chunk_size or chunk_size >= count:
    return fn(images)
  if tf.executing_eagerly():
    return chunk_by_chunk(fn, images, chunk_size, pad=False)
  chunks = -(-count // chunk_size)
  pad = chunks * chunk_size - count
  if pad:
    images = tf.concat([images, tf.zeros([pad, *images.shape[1:]], images.dtype)], axis=0)
  stacked = tf.reshape(images, [chunks, chunk_size, *images.shape[1:]])
  grads = tf.map_fn(fn, stacked, parallel_iterations=1,
                    fn_output_signature=[tf.TensorSpec([chunk_size, *w.shape], w.dtype)
                                         for w in weights])
  return [tf.reshape(g, [chunks * chunk_size, *w.shape])[:count]
          for g, w in zip(grads, weights)]


class TappedGradients:
  """Per-image kernel and LayerNorm-scale gradients of an As-ViT or a PiT from one batched
  forward and backward pass.

  The model's Dense layers, its LayerNorms, its patch embedding and (PiT) its poolings are
  tapped (their `call`, a PiT's `embedding_conv` and its poolings' `conv` wrapped on the
  instance, until `untap`): while
  `__call__` traces, each records what its weight's gradient needs, and one
  `GradientTape.gradient` of Σ_i Σ_j h_j(x_i) with respect to every recorded output z gives
  every δ = ∂(Σ_i Σ_j h_j(x_i))/∂z. The batch rows of every recorded tensor are images
  (windows and tokens of an image are contiguous; a PiT's Dense layers see [B, tokens, d]),
  so per image i:

  - a Dense kernel W (z = a W): g_i = a_iᵀ δ_i, a_i [tokens, in], δ_i [tokens, out];
  - the patch embedding's conv kernel: the same with a_i the image's patches, taken from the
    (As-ViT: padded) images as the conv sees them (`tf.image.extract_patches`), and δ_i the
    gradient at the conv's output (plus bias): on an As-ViT its norm's input, on a PiT
    `embedding_conv`'s output;
  - a PiT pooling's grouped conv kernel [k, k, C, m] (output channel c·m + j reads input
    channel c only): g_i[:, :, c, j] = Σ_positions P_i[p, :, :, c] δ_i[p, c·m + j], P_i the
    k×k patches of the padded map at the conv's strides, δ_i the gradient at its output;
  - a LayerNorm's scale γ (z = γ ⊙ x̂ + β over the last axis: the blocks' over d, the patch
    embedding's over d, the patch merging's over the k²·d vector): ∂z_tc/∂γ_c = x̂_tc, so
    g_i = Σ_tokens x̂_i ⊙ δ_i, with x̂ = (x − μ) / √(σ² + ε) recomputed from the recorded
    input x with the layer's ε (μ, σ² the mean and variance of each token's vector).

  During that pass the attention layers run `attention.attention` (the maps group by group
  when traced, their backward written out), and their own core again after.

  Only for `AsViT` and `PiT` models, whose layers keep each image's rows together (any
  Dense input's leading axis is image-major); `covers(weights)` says whether every weight is
  a tapped kernel or scale: if not, use `per_image_gradients`. `on_pit` says whether the
  model is a PiT (mode='auto' weighs its eager pass by a bound of its own).
  """

  def __init__(self, model, layers=None):
    """Taps `model`; `layers`, when given, is its `submodules` walked already."""
    from asvit_tf.layers import blocks  # pylint: disable=g-import-not-at-top
    from asvit_tf.models import pit  # pylint: disable=g-import-not-at-top
    import tf_keras  # pylint: disable=g-import-not-at-top
    if not self.applies_to(model):
      raise ValueError(f'tapped gradients need an AsViT or PiT model, got '
                       f'{type(model).__name__}')
    self._records = None
    self._tape = None   # the pass's tape, while it runs
    self._watched_inside = False   # whether a tap starts the tape (`_tap`'s `watch`)
    self._tapped = set()
    self._untaps = []
    layers = list(model.submodules) if layers is None else layers
    for layer in layers:
      if isinstance(layer, tf_keras.layers.Dense) and layer.built:
        self._tap(layer, layer.kernel, 'dense', lambda x, z: (x, z))
      elif isinstance(layer, blocks.PatchEmbedding) and layer.built:
        # The norm's input is the conv's output (plus its bias): its δ is the conv's.
        patches = functools.partial(self._patches, layer)
        self._tap(layer.norm, layer.conv_kernel, 'conv',
                  lambda x, z, patches=patches: (patches, x), watch='input')
      elif isinstance(layer, pit.PitPooling) and layer.built:
        self._tap(layer, layer.conv_kernel, 'grouped', lambda x, z, pool=layer: ((pool, x), z),
                  method='conv')
    if isinstance(model, pit.PiT) and model.built:
      self._tap(model, model.embed_kernel, 'conv', lambda x, z: (_pit_patches, z),
                method='embedding_conv', watch='output')
    for layer in layers:   # after the embedding's: a norm may be tapped twice
      if (isinstance(layer, tf_keras.layers.LayerNormalization) and layer.built
          and layer.scale):
        self._tap(layer, layer.gamma, 'scale', lambda x, z, norm=layer: ((norm, x), z))
    self.on_pit = isinstance(model, pit.PiT)
    self._features = model.features
    self._attention = [layer for layer in layers
                       if isinstance(layer, blocks.SplitAttention)]

  def _tap(self, layer, weight, kind, record, method='call', watch=None):
    """Wraps `layer.<method>` to record (weight, kind, a, z) with (a, z) = record(its first
    input, its output), z the tensor whose δ is taken. a is, by kind: 'dense': the layer's
    input; 'conv': a function of the images giving the patches the conv reads (the As-ViT
    embedding is tapped at its norm, z the norm's input); 'grouped' (a PiT pooling): the
    layer and its map input; 'scale' (a LayerNorm): the layer and its input (x̂ comes from
    both). `watch` ('input' or 'output', the patch embedding's z): the pass's tape starts
    there, so nothing before it (the padding, the conv) is recorded or differentiated."""
    call = getattr(layer, method)

    def tapped(inputs, *args, **kwargs):
      if watch == 'input' and self._tape is not None:
        self._tape.watch(inputs)
      out = call(inputs, *args, **kwargs)
      if watch == 'output' and self._tape is not None:
        self._tape.watch(out)
      if self._records is not None:
        self._records.append((weight, kind, *record(inputs, out)))
      return out
    if watch is not None:
      self._watched_inside = True
    own = method in vars(layer)
    setattr(layer, method, tapped)
    self._tapped.add(weight.ref())
    self._untaps.append((layer, method, own, call))

  def untap(self):
    """Gives every tapped layer its own methods back: the model leaves as it came."""
    for layer, method, own, call in reversed(self._untaps):
      if own:
        setattr(layer, method, call)
      else:
        delattr(layer, method)
    self._untaps = []

  @staticmethod
  def applies_to(model) -> bool:
    from asvit_tf.models import asvit  # pylint: disable=g-import-not-at-top
    from asvit_tf.models import pit  # pylint: disable=g-import-not-at-top
    return isinstance(model, (asvit.AsViT, pit.PiT))

  def covers(self, weights) -> bool:
    return all(w.ref() in self._tapped for w in weights)

  @staticmethod
  def _patches(embedding, images):
    """[b, rows, cols, K·K·C] patches of the padded images, in the conv kernel's order."""
    return blocks.embedding_patches(images, embedding.kernel, embedding.stride,
                                    embedding.dilation)

  @staticmethod
  def _normalised(layer, x):
    """x̂ = (x − μ) / √(σ² + ε) of a LayerNorm over the last axis, in x's dtype."""
    if list(layer.axis) != [x.shape.rank - 1]:
      raise ValueError(f'tapped LayerNorm {layer.name} normalises axes {layer.axis} of a '
                       f'rank-{x.shape.rank} input: only the last axis is supported')
    x = tf.cast(x, layer.compute_dtype)
    mean, variance = tf.nn.moments(x, [x.shape.rank - 1], keepdims=True)
    # ε as Keras adds it: a Python float taken in x's dtype (tf.cast would round it to
    # float32 first, 1e-5 by 2.5e-13: 1e-11 of x̂ at a variance of 1e-2, in float64).
    return (x - mean) * tf.math.rsqrt(variance + tf.constant(layer.epsilon, x.dtype))

  @staticmethod
  def _grouped_gradient(pool, x, delta):
    """g [b, k, k, C, m] of a PiT pooling's grouped conv kernel [k, k, C, m], from its map
    input x [b, n, n, C] and δ [b, positions, C·m] at its output."""
    b, c = x.shape[0], x.shape[-1]
    k, s = pool.KERNEL, pool.STRIDE
    patches = tf.image.extract_patches(pool.pad(x), [1, k, k, 1], [1, s, s, 1], [1, 1, 1, 1],
                                       'VALID')  # [b, m, m, k·k·C], C fastest
    patches = tf.reshape(patches, [b, -1, k * k, c])
    delta = tf.reshape(delta, [b, -1, c, delta.shape[-1] // c])
    return tf.einsum('bpkc,bpcm->bkcm', tf.cast(patches, delta.dtype), delta)

  def _factors(self, weights, images):
    """Per weight in `weights` that the pass reaches: (weight, kind, factors) for every time
    a tapped layer ran, with kind 'product' and factors (a, δ), a [b, tokens, in] and
    δ [b, tokens, out] (g_i = a_iᵀ δ_i), or kind 'gradient' and factors g [b, ...] (a
    LayerNorm scale's, a PiT pooling conv's)."""
    b = images.shape[0]
    self._records = []
    cores = [layer.core for layer in self._attention]
    try:
      for layer in self._attention:
        layer.core = attention.attention
      with tf.GradientTape(watch_accessed_variables=False) as tape:
        # Records every op downstream of the patch embedding's z (of the images where it is
        # not tapped); only the δ are asked for.
        if self._watched_inside:
          self._tape = tape
        else:
          tape.watch(images)
        total = tf.reduce_sum(self._features(images, training=True))
      records = self._records
    finally:
      self._records, self._tape = None, None
      for layer, core in zip(self._attention, cores):
        layer.core = core
    wanted = {w.ref() for w in weights}
    records = [r for r in records if r[0].ref() in wanted]
    deltas = tape.gradient(total, [z for _, _, _, z in records],
                           unconnected_gradients=tf.UnconnectedGradients.ZERO)
    out = []
    for (weight, kind, a, _), delta in zip(records, deltas):
      delta = tf.reshape(delta, [b, -1, delta.shape[-1]])
      if kind == 'scale':
        layer, x = a
        x_hat = tf.reshape(self._normalised(layer, x), [b, -1, delta.shape[-1]])
        out.append((weight, 'gradient', tf.reduce_sum(tf.cast(x_hat, delta.dtype) * delta,
                                                      axis=1)))   # [b, C]
      elif kind == 'grouped':
        out.append((weight, 'gradient', self._grouped_gradient(*a, delta)))
      else:
        if kind == 'conv':
          a = a(images)
        out.append((weight, 'product', (tf.reshape(a, [b, -1, a.shape[-1]]), delta)))
    return out

  def __call__(self, weights, images):
    """[one [b, *w.shape] per weight]: the per-image gradients of Σ_j h_j(x_i)."""
    factors = [(w.ref(), kind, f) for w, kind, f in self._factors(weights, images)]
    return per_image_from_factors(factors, [(w.ref(), w.shape, w.dtype) for w in weights],
                                  images.shape[0])

  def kernel_matrix(self, weights, images):
    """Θ [b, b] in float64, as `kernel_matrix(self(weights, images))` to float rounding,
    without forming every g_i (`theta_from_factors`)."""
    return theta_from_factors([(w.ref(), kind, f)
                               for w, kind, f in self._factors(weights, images)])


def per_image_from_factors(factors, weights, b: int):
  """[one [b, *shape] per weight]: the per-image gradients from `factors`, (key, kind,
  factors) per tapped call as `TappedGradients._factors` gives them with a key per weight;
  `weights`: (key, shape, dtype) per weight wanted, in the order returned (zeros for a
  weight no call reached)."""
  sums = {}
  for key, kind, f in factors:
    g = f if kind == 'gradient' else tf.matmul(*f, transpose_a=True)
    sums[key] = g if key not in sums else sums[key] + g        # a layer called twice
  out = []
  for key, shape, dtype in weights:
    g = sums.get(key)
    out.append(tf.zeros([b, *shape], dtype) if g is None else tf.reshape(g, [b, *shape]))
  return out


def theta_from_factors(factors):
  """Θ [b, b] in float64 from `factors`, (key, kind, factors) per tapped call as
  `TappedGradients._factors` gives them with a key per weight, as `kernel_matrix` of the
  per-image gradients to float rounding, without forming every g_i: a kernel whose images
  have few tokens adds its term from the tokens' Gram matrices (`token_gram_term`) where that
  costs fewer operations."""
  grouped = {}
  for key, kind, f in factors:
    grouped.setdefault(key, []).append((kind, f))
  terms = []
  for parts in grouped.values():
    if parts[0][0] == 'gradient':
      terms.append(('gradient', parts[0][1] if len(parts) == 1
                    else tf.add_n([f for _, f in parts])))
      continue
    a, delta = parts[0][1]
    if len(parts) > 1:   # a layer called twice: more tokens
      a = tf.concat([f[0] for _, f in parts], axis=1)
      delta = tf.concat([f[1] for _, f in parts], axis=1)
    terms.append(('product', product_term(a, delta)))
  return theta_from_terms(terms)


def theta_from_terms(terms):
  """Θ [b, b] in float64 from (kind, value) per weight, in order: 'product', a kernel's term
  (`product_term`), summed in that order; 'gradient', a scale's per-image gradient [b, ...],
  the gradients' one term (`gradients_term`) added last."""
  theta, gradients = None, []
  for kind, value in terms:
    if kind == 'gradient':
      gradients.append(value)
    else:
      theta = value if theta is None else theta + value
  if gradients:
    term = gradients_term(gradients)
    theta = term if theta is None else theta + term
  return theta


def product_term(a, delta):
  """One kernel's Θ term [b, b] in float64 from its input a [b, t, in] and output δ
  [b, t, out]: by the tokens' Gram matrices or by g_i = a_iᵀ δ_i, whichever costs less."""
  return (token_gram_term(a, delta) if token_gram_pays(a.shape, delta.shape)
          else kernel_matrix([tf.matmul(a, delta, transpose_a=True)]))


def gradients_term(gradients):
  """The Θ term [b, b] in float64 of (small) per-image gradients [b, ...], side by side: one
  product for all of them."""
  b = gradients[0].shape[0]
  return kernel_matrix([tf.concat([tf.reshape(g, ints([b, -1])) for g in gradients], 1)])


def _pit_patches(images):
  """[b, rows, cols, P·P·C] patches of a PiT's images as its embedding conv reads them."""
  from asvit_tf.models import pit_size  # pylint: disable=g-import-not-at-top
  p, s = pit_size.PATCH_SIZE, pit_size.PATCH_STRIDE
  return tf.image.extract_patches(images, [1, p, p, 1], [1, s, s, 1], [1, 1, 1, 1], 'VALID')


def token_gram_pays(a_shape, delta_shape) -> bool:
  """Whether `token_gram_term` takes fewer multiply-adds than forming g_i = a_iᵀ δ_i
  (b·t·in·out) and then G Gᵀ (b²·in·out), for a [b, t, in] and δ [b, t, out]."""
  b, t, n_in = (int(s) for s in a_shape)
  n_out = int(delta_shape[-1])
  return (b * t) ** 2 * (n_in + n_out) < b * n_in * n_out * (t + b)


def token_gram_term(a, delta):
  """Θ_ij = ⟨a_iᵀ δ_i, a_jᵀ δ_j⟩ = Σ_{t,s} (a_i a_jᵀ)_ts (δ_i δ_jᵀ)_ts, [b, b] in float64,
  from a [b, t, in] and δ [b, t, out]: the tokens' Gram matrices, cheap when b·t is small
  against in and out (the late stages' kernels at small image sizes)."""
  b, t = a.shape[0], a.shape[1]
  a = tf.cast(tf.reshape(a, ints([b * t, -1])), tf.float64)
  delta = tf.cast(tf.reshape(delta, ints([b * t, -1])), tf.float64)
  products = (tf.matmul(a, a, transpose_b=True) * tf.matmul(delta, delta, transpose_b=True))
  return tf.reduce_sum(tf.reshape(products, ints([b, t, b, t])), axis=ints([1, 3]))


def tapped_per_image_gradients(taps: TappedGradients, weights, images,
                               chunk_size: Optional[int] = None):
  """`per_image_gradients` from a `TappedGradients` (one batched pass per chunk)."""
  return _chunked(lambda chunk: taps(weights, chunk), images, chunk_size, weights)


def chunk_by_chunk(fn, images, chunk_size: int, pad: bool = True):
  """fn(chunk) -> [one [chunk_size, ...] per weight] on `chunk_size` images at a time from
  Python. With `pad`, every chunk has that size (the last padded with zero images, whose
  rows are dropped): `fn` traced once serves them all; without, the last chunk is what is
  left (eager `fn`). The rows are joined per weight."""
  count = int(images.shape[0])
  parts = []
  for start in range(0, count, chunk_size):
    chunk = images[start:start + chunk_size]
    extra = chunk_size - int(chunk.shape[0]) if pad else 0
    if extra:
      chunk = tf.concat([chunk, tf.zeros([extra, *chunk.shape[1:]], chunk.dtype)], axis=0)
    parts.append([g[:chunk_size - extra] for g in fn(chunk)])
  return [tf.concat(list(g), axis=0) for g in zip(*parts)]


def kernel_matrix(per_image):
  """Θ = Σ_w G_w G_wᵀ in float64, [B, B], from per-image gradients [B, ...] per weight."""
  theta = None
  for g in per_image:
    rows = g.shape[0]
    g = tf.cast(tf.reshape(g, [tf.shape(g)[0], -1] if rows is None else ints([rows, -1])),
                tf.float64)
    term = tf.matmul(g, g, transpose_b=True)
    theta = term if theta is None else theta + term
  return theta


def condition_number(theta: np.ndarray) -> float:
  """λ_max / λ_min of a symmetric PSD matrix; inf when it is singular in floating point
  (λ_min <= 0), nan when it holds a non-finite entry."""
  theta = np.asarray(theta, np.float64)
  if not np.all(np.isfinite(theta)):
    return float('nan')
  eig = np.linalg.eigvalsh((theta + theta.T) / 2)
  if eig[0] <= 0.0:
    return float('inf')
  return float(eig[-1] / eig[0])


def noise_images(batch_size: int, image_shape, seed: int, repeat: int) -> np.ndarray:
  """Gaussian noise images [B, H, W, 3] for one repeat."""
  return seeding.measure_rng(seed, seeding.IMAGES, repeat).standard_normal(
      (batch_size, *image_shape))


def one_repeat_eager_chunk(arch_or_factory: network_lib.ArchOrFactory, width: Optional[int],
                           image_shape, images: int, repeats: int) -> Optional[int]:
  """Images per eager pass where mode='auto' runs an As-ViT's tapped κ_Θ of a single
  repeat eagerly although its batch is beyond `network.eager_pays`' bound: at most
  ASVIT_ONE_REPEAT_PASSES passes of at most ASVIT_ONE_REPEAT_PASS_MACS each. None where it
  does not (more repeats, a larger batch, a cost not known)."""
  if repeats != 1:
    return None
  macs = network_lib.forward_macs(arch_or_factory, width, image_shape)
  if macs is None:
    return None
  passes = max(1, -(-images * macs // int(ASVIT_ONE_REPEAT_PASS_MACS)))
  if passes > ASVIT_ONE_REPEAT_PASSES:
    return None
  return -(-images // passes)


def _auto_path(arch_or_factory, width, shape, count: int, repeats: int,
               taps: Optional[str]) -> Tuple[str, Optional[int]]:
  """The mode that mode='auto' takes and, when eager, its images per pass: eager on the
  whole batch (None) where `network.eager_pays` (a PiT by taps: within
  PIT_TAPS_EAGER_BATCH_MACS), eager in the passes of `one_repeat_eager_chunk` for one repeat
  of an As-ViT by taps, else ('graph', None): traced, in the caller's chunks. `taps`: 'pit'
  or 'asvit' for a model measured by taps, None by vmap or units."""
  bound = PIT_TAPS_EAGER_BATCH_MACS if taps == 'pit' else None
  if network_lib.eager_pays(arch_or_factory, width, shape, count, repeats, bound):
    # One pass for the whole batch: its memory is bounded by `eager_pays`, and each eager
    # chunk pays the dispatch of every op again (on the seed at 64 px, 16 images in
    # chunks of 4: 1.9 CPU-s per new network against 1.1 at once).
    return 'eager', None
  if taps == 'asvit':
    chunk = one_repeat_eager_chunk(arch_or_factory, width, shape, count, repeats)
    if chunk is not None:
      return 'eager', chunk
  return 'graph', None


def _checked_input_shape(repeats, chunk_size, mode, method, images, image_size,
                         batch_size) -> Tuple[int, int, int]:
  """Checks `ntk_condition_number`'s arguments; returns the [H, W, C] of one image."""
  if repeats < 1:
    raise UserInputError(f'repeats must be >= 1, got {repeats}')
  if chunk_size is not None and chunk_size < 1:
    raise UserInputError(f'chunk_size must be >= 1 (or None), got {chunk_size}')
  network_lib.check_mode(mode)
  if method not in METHODS:
    raise UserInputError(f'method must be one of {METHODS}, got {method!r}')
  if images is not None:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] < 1:
      raise ValueError(f'images must be a [B, H, W, C] batch, got shape {images.shape}')
    shape = tuple(int(s) for s in images.shape[1:])
  else:
    if batch_size < 1:
      raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    shape = network_lib.image_shape(image_size)
  return shape


def _tapped_or_none(model, weights, method: str,
                    layers=None) -> Optional['TappedGradients']:
  """`TappedGradients` on `model` (its `submodules` walked already: `layers`) when `method`
  asks for taps ('taps', or 'auto' on an As-ViT or PiT whose taps cover `weights`), else None
  (per-image gradients by vmap)."""
  if not (method == 'taps' or (method == 'auto' and TappedGradients.applies_to(model))):
    return None
  taps = TappedGradients(model, layers)
  if not taps.covers(weights):
    taps.untap()
    if method == 'taps':
      raise ValueError('method="taps" differentiates Dense, patch-embedding and PiT '
                       'pooling kernels and LayerNorm scales only; use method="vmap" or '
                       '"auto"')
    return None
  return taps


def _units_or_none(model, method: str):
  """The `units` module for method='units' (UserInputError if it cannot measure `model`),
  else None."""
  if method != 'units':
    return None
  from asvit_tf.complexity import units  # pylint: disable=g-import-not-at-top
  if not units.supports(model):
    raise UserInputError('method="units" measures As-ViT networks without drop path or remat '
                         'only; use method="auto"')
  return units


def _kernel_function(net: network_lib.Network, weights, units, taps, include_scales: bool,
                     mode: str, chunk_size: Optional[int], count: int):
  """images -> Θ by the path `ntk_condition_number` picked: `units`, taps or vmap, run as
  `mode` ('eager', 'graph' or 'xla'), `count` images in chunks of `chunk_size`."""
  # Eagerly on the whole batch, Θ comes from the taps without every g_i where that is
  # cheaper (`TappedGradients.kernel_matrix`); traced, as before (its values to the bit).
  whole_eager = mode == 'eager' and (chunk_size is None or chunk_size >= count)

  def kernel(batch):
    if units:
      return units.kernel_matrix(net.model, batch, include_scales)
    if taps is not None and whole_eager:
      return taps.kernel_matrix(weights, batch)
    if taps is not None:
      return kernel_matrix(tapped_per_image_gradients(taps, weights, batch, chunk_size))
    features = lambda x: net.model.features(x, training=True)
    return kernel_matrix(per_image_gradients(features, weights, batch, chunk_size))
  if units:
    return kernel   # units trace themselves
  if taps is not None and mode != 'eager' and chunk_size and chunk_size < count:
    # Traced by chunks: one chunk's pass traced, the chunks looped over from Python. A
    # `tf.map_fn` over them in one trace cost ~0.3 s more to trace and ~0.9 s more on its
    # first run per new network at 224 px (docs/benchmarks.md), for the same values.
    per_chunk = network_lib.compile_mode(lambda chunk: taps(weights, chunk), mode)
    return lambda batch: kernel_matrix(chunk_by_chunk(per_chunk, batch, chunk_size))
  return network_lib.compile_mode(kernel, mode)


def _plain_path(arch_or_factory, width, shape, count: int, repeats: int, mode: str,
                method: str, chunk_size: Optional[int]):
  """(topology, images per pass or None) where κ_Θ runs eagerly on a topology without its
  Keras model (`plain`): method 'auto' on a topology `plain.topology_or_none` takes, run
  eagerly: mode 'eager' in `chunk_size`; 'auto' where `_auto_path` picks eager, in its
  passes, and up to `network.EAGER_REPEATS` repeats of a batch within one pass of
  ASVIT_ONE_REPEAT_PASS_MACS; else None."""
  if method != 'auto' or mode not in ('auto', 'eager'):
    return None
  from asvit_tf.complexity import plain  # pylint: disable=g-import-not-at-top
  topology = plain.topology_or_none(arch_or_factory, width)
  if topology is None:
    return None
  if mode == 'eager':
    return topology, chunk_size
  mode, chunk = _auto_path(arch_or_factory, width, shape, count, repeats, 'asvit')
  if mode == 'eager':
    return topology, chunk
  macs = network_lib.forward_macs(arch_or_factory, width, shape)
  if (repeats <= network_lib.EAGER_REPEATS and macs is not None
      and count * macs <= ASVIT_ONE_REPEAT_PASS_MACS):
    return topology, None
  return None


def _values(measured, repeats: int, theta) -> List[float]:
  """κ_Θ of Θ = theta(r) for each repeat r in `measured`."""
  values = []
  for r in measured:
    value = condition_number(theta(r).numpy())
    values.append(value)
    logging.vlog(1, 'NTK repeat %d/%d: %s', r + 1, repeats, value)
  return values


def ntk_condition_number(arch_or_factory: network_lib.ArchOrFactory, image_size: int = 224,
                         repeats: int = 5, seed: int = 0, images=None, batch_size: int = 16,
                         *, width: Optional[int] = None, include_scales: bool = True,
                         mode: str = 'auto', chunk_size: Optional[int] = DEFAULT_CHUNK,
                         method: str = 'auto', share_embedding: bool = False,
                         repeat_range: Optional[Tuple[int, int]] = None) -> MetricResult:
  """κ_Θ averaged over `repeats` independent initialisations (lower is better).

  Args:
    arch_or_factory: what to measure. A `Topology`, topology string or variant name (built
      as `AsViT` with its LayerNorms) or a factory `factory(use_layer_norm: bool) -> model`
      whose model has `features(images, training) -> [B, F]` (called with
      use_layer_norm=True): its weights are drawn afresh at every repeat. Or a given model
      with `features` (e.g. an `AsViT` holding the weights to check), measured as it is:
      its weights are neither drawn nor changed, and only the noise images change from
      repeat to repeat (none do with `images`: then use repeats=1).
    image_size: square side of the noise images (ignored when `images` is given).
    repeats: independent initialisations; without `images` each gets its own noise.
    seed: same seed, same numbers.
    images: optional real images [B, H, W, 3], used for every repeat.
    batch_size: B when `images` is None.
    width: overrides the topology's C.
    include_scales: differentiate the LayerNorm scales γ besides the kernels, the authors'
      selection (default); False: the kernels only.
    mode: 'auto', 'graph' (one traced function reused by the repeats), 'xla' (the same,
      XLA-compiled) or 'eager' (no outer `tf.function`; `tf.vectorized_map` then traces
      its body at every repeat). 'auto' is eager for a topology (or a factory carrying
      its MACs, `network.with_macs`) of a small batch cost (`network.eager_pays`) measured
      at most `network.EAGER_REPEATS` times, where one trace costs more than the eager
      repeats (a PiT by taps: a batch within `PIT_TAPS_EAGER_BATCH_MACS`); an As-ViT by
      taps measured once is eager up to a larger batch, in two passes at most
      (`one_repeat_eager_chunk`); a topology by taps without a Keras model (`plain`, see
      `method`) is eager for up to `network.EAGER_REPEATS` repeats of a batch within one
      pass of `ASVIT_ONE_REPEAT_PASS_MACS`; graph otherwise. The values agree to float
      rounding.
    chunk_size: images per pass (None: the whole batch at once). The memory of the
      backward passes scales with it; the values agree to float rounding. When 'auto'
      runs eagerly, it sets the passes itself: the whole (small) batch at once, or the
      passes of `one_repeat_eager_chunk`.
    method: how the per-image gradients are taken: 'taps' (`TappedGradients`: one batched
      pass, As-ViT and PiT models only), 'vmap' (`per_image_gradients`, any model) or 'auto'
      (taps on an As-ViT or PiT, else vmap): taps run one batched pass where vmap vectorises
      op by op (docs/benchmarks.md compares them). Where 'auto' runs a topology eagerly, its
      taps run without a Keras model (`plain`: the same values to float rounding, no build);
      'taps' keeps the Keras model. 'units' (As-ViT only; `units`): Θ as
      by taps, from each unit (patch embedding, merging, block) traced once per kind of unit
      and kept across networks, so a new network made of units measured before pays no
      trace; the whole batch at once, `mode` and `chunk_size` unused.
    share_embedding: draw the patch embedding's conv once and keep it for all repeats,
      re-drawing only Dense and LayerNorm weights, as the authors' code does (default: every
      weight drawn per repeat). Not for a given model.
    repeat_range: (start, stop): only repeats start..stop-1 of the `repeats` (the path still
      chosen for all of them), so a measurement can run in parts whose values, put together
      in order, are the whole measurement's (`network.measured_repeats`). Default: all.

  A non-finite Θ or a singular one (λ_min <= 0) gives a non-finite value and `bad=True`.
  """
  shape = _checked_input_shape(repeats, chunk_size, mode, method, images, image_size,
                               batch_size)
  measured = network_lib.measured_repeats(repeats, repeat_range)
  if images is not None:
    images = np.asarray(images)
  start = time.perf_counter()
  count = images.shape[0] if images is not None else batch_size
  noise = lambda r: images if images is not None else noise_images(batch_size, shape, seed, r)
  path = _plain_path(arch_or_factory, width, shape, count, repeats, mode, method, chunk_size)
  if path is not None:
    from asvit_tf.complexity import plain  # pylint: disable=g-import-not-at-top
    topology, chunk_size = path
    dtype = plain.policy_dtype()
    values = _values(measured, repeats, lambda r: plain.kernel_matrix(
        topology, tf.constant(noise(r), dtype), seed, r, include_scales=include_scales,
        share_embedding=share_embedding, chunk_size=chunk_size))
    return MetricResult.from_values(values, time.perf_counter() - start)

  net = network_lib.measured_network(arch_or_factory, width, True, shape, share_embedding)
  weights = net.kernels(include_scales)
  if not weights:
    raise ValueError('the model has no kernels (trainable variables of rank >= 2) nor '
                     'LayerNorm scales')
  units = _units_or_none(net.model, method)
  taps = None if units else _tapped_or_none(net.model, weights, method, net.layers)
  if mode == 'auto':
    kind = None if taps is None else 'pit' if taps.on_pit else 'asvit'
    mode, auto_chunk = _auto_path(arch_or_factory, width, shape, count, repeats, kind)
    if mode == 'eager':
      chunk_size = auto_chunk
  run = _kernel_function(net, weights, units, taps, include_scales, mode, chunk_size, count)

  def theta(r):
    if not net.given:
      net.reinitialise(seed, r, share_embedding)
    return run(tf.constant(noise(r), net.dtype))
  try:
    values = _values(measured, repeats, theta)
  finally:
    if taps is not None:
      taps.untap()
  return MetricResult.from_values(values, time.perf_counter() - start)
