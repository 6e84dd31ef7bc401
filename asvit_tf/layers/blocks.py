"""The As-ViT building blocks. Token maps stay 2-D, [batch, rows, cols, width], throughout:
windows and patch merging need the grid, and Dense layers act on the last axis."""
from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from asvit_tf import validation
from asvit_tf.errors import UserInputError

_PACKAGE = 'asvit_tf'


def ints(values):
  """A shape, permutation, axis list or padding (ints, possibly nested) as an op argument:
  eagerly a cached int32 tensor, since TensorFlow converts a Python list anew at every eager
  call (a reshape with a list costs ~4× one with a tensor, a transpose ~10×); inside a trace
  the values themselves, so the graph keeps its constants and static shapes."""
  if not tf.executing_eagerly():
    return values
  return _eager_ints(tuple(tuple(v) if isinstance(v, (list, tuple)) else int(v)
                           for v in values))


@functools.lru_cache(maxsize=4096)
def _eager_ints(values):
  return tf.constant(values, tf.int32)


def dense_initializer():
  """Dense kernels: N(0, 0.02²), untruncated (docs/design.md §4). The authors call timm's
  `trunc_normal_(std=.02)`, whose bounds ±2 are absolute (100σ): in effect no truncation.
  Keras' `TruncatedNormal(0.02)` would cut at 2σ (std 0.0176)."""
  return tf_keras.initializers.RandomNormal(stddev=0.02)


def embedding_initializer(channels: int, kernel: int):
  """The patch-embedding conv's kernel and bias: U(−1/√fan_in, 1/√fan_in), fan_in =
  channels·kernel² (PyTorch's Conv2d default, which the authors keep; docs/design.md §4)."""
  bound = 1.0 / math.sqrt(channels * kernel * kernel)
  return tf_keras.initializers.RandomUniform(-bound, bound)


def serialize_regularizer(regularizer):
  """A kernel regularizer as `get_config` stores it (None for none)."""
  return tf_keras.regularizers.serialize(regularizer) if regularizer else None


def dense(units, name, use_bias=True, regularizer=None):
  """The As-ViT Dense: `dense_initializer` kernel, zero bias."""
  return tf_keras.layers.Dense(units, use_bias=use_bias, kernel_initializer=dense_initializer(),
                               bias_initializer='zeros', kernel_regularizer=regularizer,
                               name=name)


def norm(use_layer_norm: bool, name: str):
  """LayerNorm (epsilon 1e-5, PyTorch's), or the identity when `use_layer_norm` is False."""
  if use_layer_norm:
    return tf_keras.layers.LayerNormalization(epsilon=1e-5, name=name)
  return tf_keras.layers.Activation('linear', name=name)  # identity: the curve metrics' network


def build_in_scope(layer, input_shape):
  """Builds a sublayer inside its own name scope, as Keras' `__call__` would, so that weight
  names are unique and readable (`stage1_block2/attn/qkv/kernel`, not four
  `stage1_block2/kernel`): HDF5 weight files need unique names."""
  with tf.name_scope(layer.name):
    layer.build(input_shape)


def static_hw(x, what: str) -> Tuple[int, int]:
  """(rows, cols) of a token map [B, rows, cols, width]; ValueError if they are not static."""
  h, w = x.shape[1], x.shape[2]
  if h is None or w is None:
    raise ValueError(f'{what} needs a static token grid; got shape {x.shape}. '
                     'Build the model with a fixed image size.')
  return int(h), int(w)


def retokenization_dilation(kernel: int, stride: int) -> int:
  """The dilation that keeps the effective kernel near the stride: max(1, round((s-1)/(K-1)))."""
  if kernel <= 1:
    return 1
  return max(1, round((stride - 1) / (kernel - 1)))


def embedding_padding(size: int, kernel: int, stride: int, dilation: int) -> Tuple[int, int]:
  """(before, after) zero padding of one image side for the patch embedding.

  With k_eff = d(K-1)+1 and p = max(0, k_eff - s): floor(p/2) before, ceil(p/2) after, plus
  what pads the side up to a multiple of s (after), so a side of n gives ceil(n/s) tokens.
  """
  k_eff = dilation * (kernel - 1) + 1
  p = max(0, k_eff - stride)
  return p // 2, p - p // 2 + (-size) % stride


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class DropPath(tf_keras.layers.Layer):
  """Stochastic depth: drops the whole residual branch of a sample with probability `rate`."""

  def __init__(self, rate: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.rate = float(rate)

  def call(self, x, training=None):
    if not training or self.rate <= 0.0:
      return x
    keep = 1.0 - self.rate
    shape = [tf.shape(x)[0]] + [1] * (x.shape.rank - 1)
    mask = tf.floor(keep + tf.random.uniform(shape, dtype=x.dtype))
    return x / keep * mask

  def get_config(self):
    return {**super().get_config(), 'rate': self.rate}


def dilated_kernel(kernel, dilation: int):
  """[K, K, C, W] → [d(K−1)+1, d(K−1)+1, C, W]: the taps d apart, zeros between them."""
  k, _, c, w = kernel.shape
  x = tf.reshape(kernel, [k, 1, k, 1, c, w])
  x = tf.pad(x, [[0, 0], [0, dilation - 1], [0, 0], [0, dilation - 1], [0, 0], [0, 0]])
  size = dilation * (k - 1) + 1
  return tf.reshape(x, [k * dilation, k * dilation, c, w])[:size, :size]


def pad_images(images, kernel: int, stride: int, dilation: int):
  """Images [B, H, W, C] zero-padded as the patch embedding's conv sees them
  (`embedding_padding` on each side)."""
  h, w = static_hw(images, 'PatchEmbedding')
  top, bottom = embedding_padding(h, kernel, stride, dilation)
  left, right = embedding_padding(w, kernel, stride, dilation)
  return tf.pad(images, ints([[0, 0], [top, bottom], [left, right], [0, 0]]))


def embedding_patches(images, kernel: int, stride: int, dilation: int):
  """[B, rows, cols, K·K·C]: the patches of the padded images (`pad_images`) that the
  patch embedding's conv reads, in its kernel's order (the conv as a matmul of patches)."""
  return tf.image.extract_patches(pad_images(images, kernel, stride, dilation),
                                  [1, kernel, kernel, 1], [1, stride, stride, 1],
                                  [1, dilation, dilation, 1], 'VALID')


def embedding_conv(padded, kernel, stride: int, dilation: int):
  """The patch embedding's conv of padded images by `kernel` [K, K, C, W], without its
  bias: [B, rows, cols, W].

  A dilation d > 1 is applied to the kernel itself (d − 1 zeros between its taps, an
  ordinary strided conv of the dilated kernel): TensorFlow's CPU kernels without oneDNN
  have no gradient of a dilated conv's filter ("do not yet support dilation rates larger
  than 1"), which progressive re-tokenization trains through."""
  kernel = tf.cast(kernel, padded.dtype)
  if dilation > 1:
    kernel = dilated_kernel(kernel, dilation)
  return tf.nn.conv2d(padded, kernel, strides=stride, padding='VALID')


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class PatchEmbedding(tf_keras.layers.Layer):
  """Zero-pad, K×K conv with stride s and dilation d, then LayerNorm.

  `set_tokenization(stride, dilation)` changes the token grid at run time without touching a
  weight. Stride and dilation are plain Python values read when the layer is traced: a
  `tf.function` that already traced the layer must be re-traced to see a change.
  """

  def __init__(self, width: int, kernel: int, stride: int = 4, dilation: int = 1,
               use_layer_norm: bool = True, kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    self.width = int(width)
    self.kernel = int(kernel)
    self.stride = 1
    self.dilation = 1
    self.set_tokenization(stride, dilation)
    self.use_layer_norm = bool(use_layer_norm)
    self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
    self.norm = norm(self.use_layer_norm, 'norm')

  def set_tokenization(self, stride: int, dilation: int = 1):
    self.stride = validation.integer('stride', stride)
    self.dilation = validation.integer('dilation', dilation)

  def build(self, input_shape):
    channels = int(input_shape[-1])
    # Kernel and bias both U(±1/√fan_in): the authors' (PyTorch's) conv init, not Keras'.
    self.conv_kernel = self.add_weight(
        'kernel', [self.kernel, self.kernel, channels, self.width],
        initializer=embedding_initializer(channels, self.kernel),
        regularizer=self.kernel_regularizer)
    self.conv_bias = self.add_weight('bias', [self.width],
                                     initializer=embedding_initializer(channels, self.kernel))
    build_in_scope(self.norm, tf.TensorShape([None, None, None, self.width]))
    super().build(input_shape)

  def pad(self, images):
    """The images zero-padded as the conv sees them (`embedding_padding`)."""
    return pad_images(images, self.kernel, self.stride, self.dilation)

  def conv(self, padded):
    """The conv of padded images, without its bias: [B, rows, cols, width]
    (`embedding_conv`)."""
    return embedding_conv(padded, self.conv_kernel, self.stride, self.dilation)

  def call(self, images):
    x = self.conv(self.pad(images))
    x = tf.nn.bias_add(x, tf.cast(self.conv_bias, x.dtype))
    return self.norm(x)

  def get_config(self):
    return {**super().get_config(), 'width': self.width, 'kernel': self.kernel,
            'stride': self.stride, 'dilation': self.dilation,
            'use_layer_norm': self.use_layer_norm,
            'kernel_regularizer': serialize_regularizer(self.kernel_regularizer)}


def _window_partition(x, rows: int, cols: int, window_h: int, window_w: int):
  """[B, rows, cols, C] (rows, cols multiples of the window) -> [B·nh·nw, wh·ww, C]."""
  c = x.shape[-1]
  nh, nw = rows // window_h, cols // window_w
  x = tf.reshape(x, ints([-1, nh, window_h, nw, window_w, c]))
  x = tf.transpose(x, ints([0, 1, 3, 2, 4, 5]))
  return tf.reshape(x, ints([-1, window_h * window_w, c]))


def _window_merge(x, rows: int, cols: int, window_h: int, window_w: int):
  """Inverse of `_window_partition`."""
  c = x.shape[-1]
  nh, nw = rows // window_h, cols // window_w
  x = tf.reshape(x, ints([-1, nh, nw, window_h, window_w, c]))
  x = tf.transpose(x, ints([0, 1, 3, 2, 4, 5]))
  return tf.reshape(x, ints([-1, rows, cols, c]))


def split_window(rows: int, cols: int, split: int) -> Tuple[int, int]:
  """The window (rows, cols) of `split`×`split` windows over a rows×cols grid: ceil(grid /
  split) tokens a side (the `splits` window policy)."""
  return math.ceil(rows / split), math.ceil(cols / split)


def window_functions(rows: int, cols: int, window_h: int, window_w: int):
  """(to_windows, from_windows) for a rows×cols grid and windows of window_h×window_w
  tokens: [B, rows, cols, C] -> [Bw, n, C] tokens of the (zero-padded) grid's windows, and
  back, cropped."""
  pad_r, pad_c = (-rows) % window_h, (-cols) % window_w
  prow, pcol = rows + pad_r, cols + pad_c
  # One window holding the whole grid: the partition is a reshape (the transposes would
  # move only axes of size 1), and without padding there is nothing to crop.
  whole = prow == window_h and pcol == window_w

  def to_windows(x):
    if pad_r or pad_c:
      x = tf.pad(x, ints([[0, 0], [0, pad_r], [0, pad_c], [0, 0]]))
    if whole:
      return tf.reshape(x, ints([-1, prow * pcol, x.shape[-1]]))
    return _window_partition(x, prow, pcol, window_h, window_w)

  def from_windows(tokens):
    if whole:
      x = tf.reshape(tokens, ints([-1, prow, pcol, tokens.shape[-1]]))
    else:
      x = _window_merge(tokens, prow, pcol, window_h, window_w)
    return x[:, :rows, :cols, :] if pad_r or pad_c else x
  return to_windows, from_windows


def split_heads(qkv, heads: int, head_dim: int, scale: float):
  """[Bw, n, 3·heads·head_dim] -> (q·scale, k, v), each [Bw, heads, n, head_dim]."""
  n = qkv.shape[1]
  qkv = tf.reshape(qkv, ints([-1, n, 3, heads, head_dim]))
  # unstack, not indexing: the gradient of three strided slices is three zero-padded
  # copies of the whole tensor, added up.
  q, k, v = tf.unstack(tf.transpose(qkv, ints([2, 0, 3, 1, 4])))   # each [Bw, heads, n, hd]
  return q * scale, k, v


def merge_heads(out):
  """[Bw, heads, n, head_dim] -> [Bw, n, heads·head_dim]."""
  heads, head_dim = out.shape[1], out.shape[3]
  out = tf.transpose(out, ints([0, 2, 1, 3]))                       # [Bw, n, heads, hd]
  return tf.reshape(out, ints([-1, out.shape[1], heads * head_dim]))


def attention(q, k, v):
  """softmax(q kᵀ)·v over the last two axes: SplitAttention's core (q already scaled)."""
  return tf.matmul(tf.nn.softmax(tf.matmul(q, k, transpose_b=True), axis=-1), v)


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class SplitAttention(tf_keras.layers.Layer):
  """Multi-head self-attention inside each of split×split windows of the token grid.

  The window side is ceil(resolution / split), recomputed from the grid of each call, so the
  layer follows a re-tokenized (coarser) grid; or, with `fixed_window` (the `fixed` window
  policy, set by the encoder), that many tokens whatever the grid, clipped to the grid. A grid
  the window does not divide is padded with zero tokens and cropped after. head_dim = width //
  heads; qkv maps width to 3·heads·head_dim and the output projection maps heads·head_dim
  back to width.

  `core(q, k, v)` computes softmax(q kᵀ)·v (`attention`); the NTK measure's tapped pass
  swaps in an equal one that runs map group by map group (`asvit_tf.complexity.attention`).
  """

  def __init__(self, width: int, num_heads: int, split: int, kernel_regularizer=None,
               fixed_window: Optional[int] = None, **kwargs):
    super().__init__(**kwargs)
    self.width, self.num_heads, self.split = int(width), int(num_heads), int(split)
    if self.num_heads < 1 or self.width < self.num_heads:
      raise UserInputError(f'width {self.width} cannot hold {self.num_heads} heads')
    if self.split < 1:
      raise UserInputError(f'split must be >= 1, got {self.split}')
    self.fixed_window = None
    self.set_fixed_window(fixed_window)
    self.head_dim = self.width // self.num_heads
    self.inner = self.head_dim * self.num_heads
    self.scale = self.head_dim ** -0.5
    self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
    self.qkv = dense(3 * self.inner, 'qkv', regularizer=self.kernel_regularizer)
    self.proj = dense(self.width, 'proj', regularizer=self.kernel_regularizer)
    self.core = attention

  def build(self, input_shape):
    build_in_scope(self.qkv, tf.TensorShape([None, self.width]))
    build_in_scope(self.proj, tf.TensorShape([None, self.inner]))
    super().build(input_shape)

  def set_fixed_window(self, side: Optional[int]):
    """None: windows of ceil(grid / split) (the `splits` policy); an int: windows of that
    many tokens a side, clipped to the grid. Read at trace time, like the tokenization."""
    if side is not None and int(side) < 1:
      raise UserInputError(f'fixed_window must be >= 1 token (or None), got {side}')
    self.fixed_window = None if side is None else int(side)

  def window(self, rows: int, cols: int) -> Tuple[int, int]:
    if self.fixed_window is not None:
      return min(self.fixed_window, rows), min(self.fixed_window, cols)
    return split_window(rows, cols, self.split)

  def windows(self, rows: int, cols: int):
    """(to_windows, from_windows) for a rows×cols grid: [B, rows, cols, C] -> [Bw, n, C]
    tokens of the (zero-padded) grid's windows, and back, cropped."""
    return window_functions(rows, cols, *self.window(rows, cols))

  def split_heads(self, qkv):
    """[Bw, n, 3·inner] -> (q·scale, k, v), each [Bw, heads, n, head_dim]."""
    return split_heads(qkv, self.num_heads, self.head_dim, self.scale)

  def merge_heads(self, out):
    """[Bw, heads, n, head_dim] -> [Bw, n, inner]."""
    return merge_heads(out)

  def call(self, x):
    to_windows, from_windows = self.windows(*static_hw(x, 'SplitAttention'))
    q, k, v = self.split_heads(self.qkv(to_windows(x)))
    return from_windows(self.proj(self.merge_heads(self.core(q, k, v))))

  def get_config(self):
    return {**super().get_config(), 'width': self.width, 'num_heads': self.num_heads,
            'split': self.split,
            'kernel_regularizer': serialize_regularizer(self.kernel_regularizer),
            'fixed_window': self.fixed_window}


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class Mlp(tf_keras.layers.Layer):
  """Dense(hidden) -> GELU (exact) -> Dense(width)."""

  def __init__(self, width: int, hidden: int, kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    self.width, self.hidden = int(width), int(hidden)
    self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
    self.fc1 = dense(self.hidden, 'fc1', regularizer=self.kernel_regularizer)
    self.fc2 = dense(self.width, 'fc2', regularizer=self.kernel_regularizer)

  def build(self, input_shape):
    build_in_scope(self.fc1, tf.TensorShape([None, self.width]))
    build_in_scope(self.fc2, tf.TensorShape([None, self.hidden]))
    super().build(input_shape)

  def call(self, x):
    return self.fc2(tf.nn.gelu(self.fc1(x), approximate=False))

  def get_config(self):
    return {**super().get_config(), 'width': self.width, 'hidden': self.hidden,
            'kernel_regularizer': serialize_regularizer(self.kernel_regularizer)}


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class TransformerBlock(tf_keras.layers.Layer):
  """Pre-norm block: x + DropPath(SplitAttention(LN(x))); x + DropPath(MLP(LN(x))).

  `fixed_window` is the attention's (`SplitAttention.set_fixed_window`).

  `remat` (gradient checkpointing; off by default): each branch, LN -> attention and LN -> MLP,
  runs under `tf.recompute_grad`, so the backward pass recomputes its activations (qkv, the
  attention maps, the MLP's hidden layer) instead of keeping them from the forward pass; the
  block keeps only its input and the attention branch's residual sum. Drop-path stays outside
  the recomputed branches: its random mask is drawn once, so gradients equal those without
  `remat` (one more forward pass of each branch in the backward pass).
  """

  def __init__(self, width: int, num_heads: int, split: int, expansion: int,
               drop_path_rate: float = 0.0, use_layer_norm: bool = True,
               kernel_regularizer=None, fixed_window: Optional[int] = None,
               remat: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.remat = bool(remat)
    self.width, self.num_heads = int(width), int(num_heads)
    self.split, self.expansion = int(split), int(expansion)
    self.drop_path_rate = float(drop_path_rate)
    self.use_layer_norm = bool(use_layer_norm)
    self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
    self.norm1 = norm(self.use_layer_norm, 'norm1')
    self.attn = SplitAttention(self.width, self.num_heads, self.split,
                               self.kernel_regularizer, fixed_window, name='attn')
    self.norm2 = norm(self.use_layer_norm, 'norm2')
    self.mlp = Mlp(self.width, self.expansion * self.width, self.kernel_regularizer,
                   name='mlp')
    self.drop_path = DropPath(self.drop_path_rate, name='drop_path')

  def build(self, input_shape):
    shape = tf.TensorShape([None, None, None, self.width])
    for layer in (self.norm1, self.attn, self.norm2, self.mlp):
      build_in_scope(layer, shape)
    super().build(input_shape)

  def _attention_branch(self, x):
    return self.attn(self.norm1(x))

  def _mlp_branch(self, x):
    return self.mlp(self.norm2(x))

  def call(self, x, training=None):
    attention_branch, mlp_branch = self._attention_branch, self._mlp_branch
    if self.remat:
      attention_branch = tf.recompute_grad(attention_branch)
      mlp_branch = tf.recompute_grad(mlp_branch)
    x = x + self.drop_path(attention_branch(x), training=training)
    return x + self.drop_path(mlp_branch(x), training=training)

  def get_config(self):
    return {**super().get_config(), 'width': self.width, 'num_heads': self.num_heads,
            'split': self.split, 'expansion': self.expansion,
            'drop_path_rate': self.drop_path_rate, 'use_layer_norm': self.use_layer_norm,
            'kernel_regularizer': serialize_regularizer(self.kernel_regularizer),
            'fixed_window': self.attn.fixed_window, 'remat': self.remat}


@functools.lru_cache(maxsize=64)
def patch_index(padded_cols: int, out_r: int, out_c: int, kernel: int) -> np.ndarray:
  """For a padded grid flattened row-major (`padded_cols` tokens a row), the tokens of the
  k×k stride-2 patches: [out_r·out_c·k²] int32, patch by patch, then patch row, patch column."""
  r = 2 * np.arange(out_r)[:, None, None, None] + np.arange(kernel)[None, None, :, None]
  c = 2 * np.arange(out_c)[None, :, None, None] + np.arange(kernel)[None, None, None, :]
  index = (r * padded_cols + c).reshape(-1).astype(np.int32)
  index.flags.writeable = False   # shared by every call of these sizes
  return index


def merge_padding(size: int, kernel: int) -> Tuple[int, int]:
  """(before, after) zero padding of one grid side for the patch merging: (k-2)//2 before
  and the rest after, so that a side of n gives ceil(n/2)."""
  out = math.ceil(size / 2)
  total = max(0, 2 * (out - 1) + kernel - size)
  before = min(total, (kernel - 2) // 2)
  return before, total - before


def merge_patches(x, kernel: int):
  """[B, n, m, d] -> [B, ceil(n/2), ceil(m/2), k²·d]: the k×k patches, stride 2, of the
  padded grid (`merge_padding`); the k²·d vector ordered patch row, patch column, channel."""
  rows, cols = static_hw(x, 'PatchMerging')
  top, bottom = merge_padding(rows, kernel)
  left, right = merge_padding(cols, kernel)
  x = tf.pad(x, ints([[0, 0], [top, bottom], [left, right], [0, 0]]))
  out_r, out_c = math.ceil(rows / 2), math.ceil(cols / 2)
  _, padded_rows, padded_cols, d = x.shape
  # One gather from the flattened grid, not k² strided slices: their backward writes k²
  # grids of zeros and adds them (docs/benchmarks.md, "Patch merging by one gather").
  grid = tf.reshape(x, ints([-1, padded_rows * padded_cols, d]))
  index = patch_index(padded_cols, out_r, out_c, kernel)
  return tf.reshape(tf.gather(grid, index, axis=1),
                    ints([-1, out_r, out_c, kernel**2 * d]))


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class PatchMerging(tf_keras.layers.Layer):
  """k×k patches with stride 2 -> LayerNorm over the k²·d vector -> Dense (no bias).

  Pads (k-2)//2 zeros before and the rest after so that a side of n gives ceil(n/2), odd n
  included.

  With `shortcut` (the `residual` merge, ViT-ResNAS's residual spatial reduction; docs/
  design.md §3) a second branch is added to that output: 2×2 average pooling with stride 2,
  then Dense(out_width) without bias. On an odd side the last window holds one row (column)
  and averages only the tokens it holds, so the shortcut's grid is ceil(n/2) too. The merge
  stays linear in its input once its LayerNorm is the identity (no bias in either branch).
  """

  def __init__(self, in_width: int, out_width: int, kernel: int, use_layer_norm: bool = True,
               kernel_regularizer=None, shortcut: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.in_width, self.out_width, self.kernel = int(in_width), int(out_width), int(kernel)
    self.shortcut = bool(shortcut)
    if self.kernel < 2:
      raise UserInputError(f'patch merging needs a kernel >= 2, got {self.kernel}')
    self.use_layer_norm = bool(use_layer_norm)
    self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
    self.norm = norm(self.use_layer_norm, 'norm')
    self.reduction = dense(self.out_width, 'reduction', use_bias=False,
                            regularizer=self.kernel_regularizer)
    self.shortcut_proj = (dense(self.out_width, 'shortcut', use_bias=False,
                                 regularizer=self.kernel_regularizer)
                          if self.shortcut else None)

  def build(self, input_shape):
    patch = self.kernel * self.kernel * self.in_width
    build_in_scope(self.norm, tf.TensorShape([None, None, None, patch]))
    build_in_scope(self.reduction, tf.TensorShape([None, patch]))
    if self.shortcut:
      build_in_scope(self.shortcut_proj, tf.TensorShape([None, self.in_width]))
    super().build(input_shape)


  def call(self, x):
    out = self.merge(x)
    if self.shortcut:
      out = out + self.shortcut_proj(self.pool(x))
    return out

  @staticmethod
  def pool(x):
    """2×2 average pooling, stride 2: [B, n, m, d] -> [B, ceil(n/2), ceil(m/2), d]. 'SAME'
    pads an odd side by one row (column) after, and the average leaves that padding out."""
    return tf.nn.avg_pool2d(x, 2, 2, 'SAME')

  def merge(self, x):
    """The merge's own branch (patches -> LayerNorm -> Dense), without the shortcut."""
    return self.reduction(self.norm(self.patches(x)))

  def patches(self, x):
    """[B, n, m, d] -> [B, ceil(n/2), ceil(m/2), k²·d] (`merge_patches`)."""
    return merge_patches(x, self.kernel)

  def get_config(self):
    return {**super().get_config(), 'in_width': self.in_width, 'out_width': self.out_width,
            'kernel': self.kernel, 'use_layer_norm': self.use_layer_norm,
            'kernel_regularizer': serialize_regularizer(self.kernel_regularizer),
            'shortcut': self.shortcut}
