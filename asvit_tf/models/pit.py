"""PiT of ViT-Bench-101 in tf_keras: the benchmark's networks, to measure them at init.

Layers, shapes and parameter counts follow the benchmark's definition (`models/pit_size.py`
says which and counts them). Tokens are [B, T, d] with the class token first; between
stages the map tokens are reshaped to [B, n, n, d] for the pooling conv.

Initial weights follow the definition, which keeps PyTorch's defaults except where it says
otherwise: Dense and conv kernels and biases U(-1/√fan_in, 1/√fan_in) (fan_in of a grouped
conv = its kernel area times one input channel), LayerNorm γ=1, β=0, position embedding and
class token N(0, 0.02²) (timm's trunc_normal_ with absolute bounds ±2: in effect untruncated).

The position embedding and the class token are stored flat (rank 1) and reshaped when used:
the NTK differentiates the trainable variables of rank >= 2 (`Network.kernels`), and the
As-ViT authors' selection of parameters named 'weight' does not include these two either.

`features(images, training)` returns the class token after the last stage, before the final
LayerNorm ([B, width of the last stage]), as As-ViT's features are read before its final
LayerNorm; `use_layer_norm=False` makes every LayerNorm the identity (the curve measures).
"""
from __future__ import annotations

import math
from typing import Optional

import tensorflow as tf
import tf_keras

from asvit_tf.errors import UserInputError
from asvit_tf.layers import blocks
from asvit_tf.models import pit_size

_PACKAGE = 'asvit_tf'


def _uniform(fan_in: int):
  """PyTorch's default Linear/Conv init: U(-1/√fan_in, 1/√fan_in)."""
  bound = 1.0 / math.sqrt(fan_in)
  return tf_keras.initializers.RandomUniform(-bound, bound)


def _dense(units: int, fan_in: int, name: str):
  return tf_keras.layers.Dense(units, kernel_initializer=_uniform(fan_in),
                               bias_initializer=_uniform(fan_in), name=name)


def _norm(use_layer_norm: bool, name: str):
  if use_layer_norm:
    return tf_keras.layers.LayerNormalization(epsilon=pit_size.LN_EPS, name=name)
  return tf_keras.layers.Activation('linear', name=name)


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class PitBlock(tf_keras.layers.Layer):
  """Pre-norm block over all tokens: x + Attn(LN(x)); x + MLP(LN(x)) (global attention,
  qkv with bias, scale head_dim^-0.5, MLP Dense -> GELU (exact) -> Dense)."""

  def __init__(self, width: int, num_heads: int, hidden: int, drop_path_rate: float = 0.0,
               use_layer_norm: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.width, self.num_heads, self.hidden = int(width), int(num_heads), int(hidden)
    if self.width % self.num_heads:
      raise UserInputError(f'PiT width {self.width} is not divisible by {self.num_heads} heads')
    self.head_dim = self.width // self.num_heads
    self.drop_path_rate = float(drop_path_rate)
    self.use_layer_norm = bool(use_layer_norm)
    self.norm1 = _norm(self.use_layer_norm, 'norm1')
    self.qkv = _dense(3 * self.width, self.width, 'qkv')
    self.proj = _dense(self.width, self.width, 'proj')
    self.norm2 = _norm(self.use_layer_norm, 'norm2')
    self.fc1 = _dense(self.hidden, self.width, 'fc1')
    self.fc2 = _dense(self.width, self.hidden, 'fc2')
    self.drop_path = blocks.DropPath(self.drop_path_rate, name='drop_path')

  def build(self, input_shape):
    shape = tf.TensorShape([None, None, self.width])
    for layer in (self.norm1, self.qkv, self.norm2, self.fc1):
      layer.build(shape)
    self.proj.build(shape)
    self.fc2.build(tf.TensorShape([None, None, self.hidden]))
    super().build(input_shape)

  def split_heads(self, qkv):
    """[B, T, 3·width] -> (q·head_dim^-0.5, k, v), each [B, heads, T, head_dim]."""
    qkv = tf.reshape(qkv, [-1, qkv.shape[1], 3, self.num_heads, self.head_dim])
    q, k, v = tf.unstack(tf.transpose(qkv, [2, 0, 3, 1, 4]))
    return q * self.head_dim ** -0.5, k, v

  def merge_heads(self, out):
    """[B, heads, T, head_dim] -> [B, T, width]."""
    out = tf.transpose(out, [0, 2, 1, 3])  # [B, T, heads, hd]
    return tf.reshape(out, [-1, out.shape[1], self.width])

  def attention(self, x):
    q, k, v = self.split_heads(self.qkv(x))
    weights = tf.nn.softmax(tf.matmul(q, k, transpose_b=True), -1)
    return self.proj(self.merge_heads(tf.matmul(weights, v)))

  def call(self, x, training=None):
    x = x + self.drop_path(self.attention(self.norm1(x)), training=training)
    mlp = self.fc2(tf.nn.gelu(self.fc1(self.norm2(x)), approximate=False))
    return x + self.drop_path(mlp, training=training)

  def get_config(self):
    return {**super().get_config(), 'width': self.width, 'num_heads': self.num_heads,
            'hidden': self.hidden, 'drop_path_rate': self.drop_path_rate,
            'use_layer_norm': self.use_layer_norm}


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class PitPooling(tf_keras.layers.Layer):
  """Halves the map with a 3×3, stride-2, padding-1 conv whose groups = input width (output
  channel j reads input channel j // (d_out / d_in)), and maps the tokens with a Dense."""

  KERNEL, STRIDE, PADDING = 3, 2, 1

  def __init__(self, width_in: int, width_out: int, **kwargs):
    super().__init__(**kwargs)
    self.width_in, self.width_out = int(width_in), int(width_out)
    if self.width_out % self.width_in:
      raise UserInputError(f'PiT pooling from width {self.width_in} to {self.width_out}: the '
                       'output width must be a multiple of the input width')
    self.multiplier = self.width_out // self.width_in
    self.fc = _dense(self.width_out, self.width_in, 'fc')

  def build(self, input_shape):
    # fan_in of a grouped conv: 3·3 taps of one input channel.
    k = self.KERNEL
    self.conv_kernel = self.add_weight('kernel', [k, k, self.width_in, self.multiplier],
                                       initializer=_uniform(k * k))
    self.conv_bias = self.add_weight('bias', [self.width_out], initializer=_uniform(k * k))
    self.fc.build(tf.TensorShape([None, None, self.width_in]))
    super().build(input_shape)

  def pad(self, grid):
    """The map as the conv reads it: PADDING zeros on each side."""
    p = self.PADDING
    return tf.pad(grid, [[0, 0], [p, p], [p, p], [0, 0]])

  def conv(self, grid):
    """The pooling conv of grid [B, n, n, d_in] without its bias: [B, m, m, d_out]."""
    kernel = tf.cast(self.conv_kernel, grid.dtype)
    return tf.nn.depthwise_conv2d(self.pad(grid), kernel, [1, self.STRIDE, self.STRIDE, 1],
                                  'VALID')

  def call(self, grid, tokens):
    """grid [B, n, n, d_in], tokens [B, t, d_in] -> ([B, m, m, d_out], [B, t, d_out])."""
    out = self.conv(grid)
    return tf.nn.bias_add(out, tf.cast(self.conv_bias, out.dtype)), self.fc(tokens)

  def get_config(self):
    return {**super().get_config(), 'width_in': self.width_in, 'width_out': self.width_out}


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class PiT(tf_keras.Model):
  """The benchmark's PiT for `image_size`² images (224 in the benchmark) and `num_classes`.

  `num_tokens=2` builds the distillation variant (second token and head; its logits are
  averaged with the class head's at inference, as the definition does).
  """

  def __init__(self, arch, image_size: int = pit_size.IMAGE_SIZE,
               num_classes: int = pit_size.NUM_CLASSES, drop_path_rate: float = 0.0,
               use_layer_norm: bool = True, num_tokens: int = 1, **kwargs):
    super().__init__(**kwargs)
    self.arch = pit_size.as_pit(arch)
    self.image_size, self.num_classes = int(image_size), int(num_classes)
    if num_tokens not in (1, 2):
      raise UserInputError(f'num_tokens must be 1 or 2 (with distillation), got {num_tokens}')
    self.num_tokens = int(num_tokens)
    self.drop_path_rate = float(drop_path_rate)
    self.use_layer_norm = bool(use_layer_norm)
    self.grids = pit_size.stage_grids(self.image_size, len(self.arch.depth))
    widths = self.arch.widths
    total = sum(self.arch.depth)
    rates = [drop_path_rate * i / total for i in range(total)]
    self.stages, self.pools = [], []
    for i, depth in enumerate(self.arch.depth):
      start = sum(self.arch.depth[:i])
      self.stages.append([PitBlock(widths[i], self.arch.num_heads[i], self.arch.hidden(i),
                                   rates[start + j], self.use_layer_norm,
                                   name=f'stage{i + 1}_block{j + 1}')
                          for j in range(depth)])
      if i:
        self.pools.append(PitPooling(widths[i - 1], widths[i], name=f'pool{i + 1}'))
    self.norm = _norm(self.use_layer_norm, 'norm')
    self.head = _dense(self.num_classes, widths[-1], 'head')
    # The definition zero-initialises its distillation head.
    self.distill_head = (tf_keras.layers.Dense(self.num_classes, kernel_initializer='zeros',
                                               name='distill_head')
                         if self.num_tokens == 2 else None)

  def build(self, input_shape):
    d0, p = self.arch.widths[0], pit_size.PATCH_SIZE
    channels = int(input_shape[-1])
    self.embed_kernel = self.add_weight('embed_kernel', [p, p, channels, d0],
                                        initializer=_uniform(channels * p * p))
    self.embed_bias = self.add_weight('embed_bias', [d0], initializer=_uniform(channels * p * p))
    normal = lambda: tf_keras.initializers.RandomNormal(stddev=0.02)  # one instance each
    self.pos_embed = self.add_weight('pos_embed', [self.grids[0] ** 2 * d0],
                                     initializer=normal())
    self.cls_token = self.add_weight('cls_token', [self.num_tokens * d0], initializer=normal())
    # Not Model.build: it would trace `call` on placeholders. The sublayers build on use.
    self.built = True

  def _check(self, images):
    h, w = images.shape[1], images.shape[2]
    if (h, w) != (self.image_size, self.image_size):
      raise UserInputError(f'this PiT was built for {self.image_size}x{self.image_size} images '
                       f'(its position embedding has that grid), got {h}x{w}')

  def tokens(self, images, training=None):
    """The tokens after the last stage: [B, num_tokens, width of the last stage]."""
    if not self.built:
      self.build(images.shape)
    self._check(images)
    x, cls = self.embed(images)
    for i, stage in enumerate(self.stages):
      if i:
        x, cls = self.pools[i - 1](x, cls)
      seq = self.sequence(i, x, cls)
      for block in stage:
        seq = block(seq, training=training)
      x, cls = self.grid_and_tokens(i, seq)
    return cls

  def embedding_conv(self, images):
    """The patch embedding's conv without its bias: [B, n, n, d0]."""
    kernel = tf.cast(self.embed_kernel, images.dtype)
    return tf.nn.conv2d(images, kernel, pit_size.PATCH_STRIDE, 'VALID')

  def embed(self, images):
    """(map [B, n, n, d0], class tokens [B, num_tokens, d0]): the conv with its bias plus
    the position embedding, and the class token(s)."""
    dtype = images.dtype
    d0, n = self.arch.widths[0], self.grids[0]
    x = tf.nn.bias_add(self.embedding_conv(images), tf.cast(self.embed_bias, dtype))
    x = x + tf.reshape(tf.cast(self.pos_embed, dtype), [1, n, n, d0])
    cls = tf.tile(tf.reshape(tf.cast(self.cls_token, dtype), [1, self.num_tokens, d0]),
                  [tf.shape(x)[0], 1, 1])
    return x, cls

  def sequence(self, stage: int, grid, tokens):
    """[class tokens; map tokens]: [B, num_tokens + n², d] from the stage's grid and tokens."""
    n, d = self.grids[stage], self.arch.widths[stage]
    return tf.concat([tokens, tf.reshape(grid, [-1, n * n, d])], axis=1)

  def grid_and_tokens(self, stage: int, seq):
    """The inverse of `sequence`: (grid [B, n, n, d], class tokens [B, num_tokens, d])."""
    n, d, t = self.grids[stage], self.arch.widths[stage], self.num_tokens
    return tf.reshape(seq[:, t:], [-1, n, n, d]), seq[:, :t]

  def features(self, images, training=None):
    """The class token before the final LayerNorm: [B, width of the last stage]."""
    return self.tokens(images, training)[:, 0]

  def call(self, images, training=None):
    tokens = self.norm(self.tokens(images, training))
    logits = self.head(tokens[:, 0])
    if self.distill_head is None:
      return logits
    distill = self.distill_head(tokens[:, 1])
    return logits if training else (logits + distill) / 2

  def get_config(self):
    return {'arch': self.arch.to_dict(), 'image_size': self.image_size,
            'num_classes': self.num_classes, 'drop_path_rate': self.drop_path_rate,
            'use_layer_norm': self.use_layer_norm, 'num_tokens': self.num_tokens,
            'name': self.name}


def pit_factory(arch, image_size: int = pit_size.IMAGE_SIZE,
                num_classes: Optional[int] = None):
  """A measures' factory `use_layer_norm -> PiT` (complexity/network.py `Factory`), carrying
  `forward_macs(image_side)` (`network.with_macs`), its MACs per image, for mode='auto'."""
  arch = pit_size.as_pit(arch)
  classes = pit_size.NUM_CLASSES if num_classes is None else num_classes

  def build(use_layer_norm: bool) -> PiT:
    return PiT(arch, image_size, classes, use_layer_norm=use_layer_norm, name='measured_pit')
  # Set here, not by `network.with_macs`: models do not import complexity.
  build.forward_macs = lambda side: pit_size.count_macs(arch, side, classes)
  return build
