"""The As-ViT network (docs/design.md §3) and its named variants.

`AsViTEncoder` is the trunk (patch embedding, four stages, three patch mergings) and returns
the four stage maps; `AsViT` adds the classification head. The Model Garden backbone reuses
the same encoder, so a classification checkpoint initialises a detection backbone.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, List, Optional

import tensorflow as tf
import tf_keras

from asvit_tf import arch as arch_lib
from asvit_tf import layers as asvit_layers
from asvit_tf import validation
from asvit_tf.layers import build_in_scope
from asvit_tf.layers import serialize_regularizer
from asvit_tf.models import memory
from asvit_tf.models import size

_PACKAGE = 'asvit_tf'
LEVELS = ('2', '3', '4', '5')  # Model Garden levels of stages 1..4 (strides 4, 8, 16, 32)
DEFAULT_BUILD_SIZE = 224  # the image side `create_model` builds for (no forward pass runs)


def drop_path_rates(total_blocks: int, rate: float) -> List[float]:
  """Linearly growing drop-path rates over all blocks, 0 for the first, `rate` for the last."""
  if total_blocks == 1:
    return [0.0]
  return [rate * i / (total_blocks - 1) for i in range(total_blocks)]


def own_name_scope(model: tf_keras.Model):
  """The model's name scope for `build`, unless Keras' `__call__` has entered it already: the
  weights get the same names (`asvit/encoder/...`) whether the model is built by a call or
  by `model.build(shape)`."""
  if tf.get_current_name_scope().split('/')[-1] == model.name:
    return contextlib.nullcontext()
  return tf.name_scope(model.name)


class BuildsWithoutCall:
  """Mixin of a `tf_keras.Model` whose `build` creates every weight without a forward pass:
  the sublayers of `_parts_to_build(input_shape)` ((layer, input shape) pairs) are built in
  their name scopes. No weight depends on the image size, so building costs the same at any.

  `build` is inherited, not defined by the model class itself, on purpose: tf_keras refuses
  `model.weights` on a model whose own class defines `build` until that `build` has run, and
  `AsViT.features` runs the encoder alone (the complexity measures then read the encoder's
  weights, the head having none yet).
  """

  def _parts_to_build(self, input_shape):
    raise NotImplementedError

  def build(self, input_shape):
    with own_name_scope(self):
      for layer, shape in self._parts_to_build(input_shape):
        build_in_scope(layer, tf.TensorShape(shape))
    # Layer.build, not Model.build: the latter would trace `call` to create the weights.
    tf_keras.layers.Layer.build(self, input_shape)


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class AsViTEncoder(tf_keras.layers.Layer):
  """Patch embedding + 4 stages of transformer blocks joined by patch mergings.

  Calling it on images [B, H, W, 3] returns the 4 stage maps, [B, ceil(H/s·2^-i), ..., d_i]
  for i = 0..3 (s the tokenization stride, 4 by default).

  Window policies (which windows the split attention uses):
  - 'splits' (the default, the topology's definition): stage i attends within S_i×S_i
    windows of whatever grid it gets, ceil(grid / S_i) tokens a side, so the windows grow with
    the image (As-ViT Large at 1024²: 128×128-token windows in stage 1, global in stage 2).
  - 'fixed': every stage keeps the window the splits give at `window_reference_size` (224
    px): As-ViT Large keeps 28, 28, 14, 7 tokens at any image size, padding the grids the
    window does not divide and attending grids smaller than the window globally. At another
    tokenization stride the window keeps its extent in pixels, not in tokens: it is the
    splits' window at the reference size tokenized with that stride (7, 7, 4, 2 tokens at
    stride 16), so that re-tokenization coarsens the grid inside the window as it does under
    `splits`, and `fixed` equals `splits` at the reference size at every stride.

  Merges (the patch merging between stages): 'plain' (the default, As-ViT's) or 'residual'
  (ViT-ResNAS's residual spatial reduction: each merging adds a shortcut, 2×2 average
  pooling and a Dense without bias; `PatchMerging`, docs/design.md §3).

  Remat (`remat=True`; off by default): every block recomputes its attention and MLP
  activations in the backward pass instead of keeping them (`TransformerBlock`), for training
  at large inputs (the detector at 1024²: docs/benchmarks.md, "Detector training step").

  `stages[i][j]` is block j+1 of stage i+1; each block is also the attribute
  `stage{i+1}_block{j+1}`. Keras' `.keras`/`.weights.h5` savers walk attributes and flat lists,
  not lists of lists: without these attributes they would drop every block. TF checkpoints
  reach a block through both paths (`encoder/stages/0/1` and `encoder/stage1_block2`), so
  checkpoints written before the attributes existed still load.
  """

  def __init__(self, topology, drop_path_rate: float = 0.0, use_layer_norm: bool = True,
               stride: int = 4, dilation: int = 1, kernel_regularizer=None,
               window_policy: str = 'splits',
               window_reference_size: int = size.REFERENCE_SIZE, merge: str = 'plain',
               remat: bool = False, **kwargs):
    super().__init__(**kwargs)
    size.check_window_policy(window_policy, window_reference_size)
    self.remat = bool(remat)
    self.merge = size.check_merge(merge)
    self.window_policy = window_policy
    self.window_reference_size = int(window_reference_size)
    self.topology = arch_lib.as_topology(topology)
    self.drop_path_rate = float(drop_path_rate)
    self.use_layer_norm = bool(use_layer_norm)
    self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
    topo, reg = self.topology, self.kernel_regularizer
    widths, heads = topo.stage_widths, topo.stage_heads
    self.patch_embed = asvit_layers.PatchEmbedding(
        widths[0], topo.kernels[0], stride, dilation, self.use_layer_norm, reg,
        name='patch_embed')
    rates = drop_path_rates(topo.num_blocks, self.drop_path_rate)
    self.merges, self.stages = [], []
    index = 0
    for i in range(arch_lib.NUM_STAGES):
      if i:
        self.merges.append(asvit_layers.PatchMerging(
            widths[i - 1], widths[i], topo.kernels[i], self.use_layer_norm, reg,
            shortcut=self.merge == 'residual', name=f'merge{i + 1}'))
      blocks = []
      for j in range(topo.depths[i]):
        block = asvit_layers.TransformerBlock(
            widths[i], heads[i], topo.splits[i], topo.expansions[i], rates[index],
            self.use_layer_norm, reg, remat=self.remat, name=f'stage{i + 1}_block{j + 1}')
        setattr(self, block.name, block)
        blocks.append(block)
        index += 1
      self.stages.append(blocks)
    self._set_windows()

  def _set_windows(self):
    """Gives every attention its stage's fixed window (None under `splits`)."""
    if self.window_policy == 'fixed':
      sides = size.fixed_windows(self.topology, self.patch_embed.stride,
                                 self.window_reference_size)
    else:
      sides = [None] * arch_lib.NUM_STAGES
    for blocks, side in zip(self.stages, sides):
      for block in blocks:
        block.attn.set_fixed_window(side)

  @property
  def tokenization(self):
    """(stride, dilation) of the patch embedding."""
    return self.patch_embed.stride, self.patch_embed.dilation

  def set_tokenization(self, stride: int, dilation: int = 1):
    self.patch_embed.set_tokenization(stride, dilation)
    self._set_windows()

  def build(self, input_shape):
    """Creates every weight without a forward pass: no weight depends on the image size."""
    build_in_scope(self.patch_embed, tf.TensorShape(input_shape))
    widths = self.topology.stage_widths
    for i, blocks in enumerate(self.stages):
      if i:
        build_in_scope(self.merges[i - 1], tf.TensorShape([None, None, None, widths[i - 1]]))
      for block in blocks:
        build_in_scope(block, tf.TensorShape([None, None, None, widths[i]]))
    super().build(input_shape)

  def units(self) -> list:
    """Its patch embedding, patch mergings and blocks, in the order its forward pass runs
    them (each maps the previous one's output to the next one's input)."""
    out = [self.patch_embed]
    for i, blocks in enumerate(self.stages):
      if i:
        out.append(self.merges[i - 1])
      out.extend(blocks)
    return out

  def call(self, images, training=None):
    x = self.patch_embed(images)
    maps = []
    for i, blocks in enumerate(self.stages):
      if i:
        x = self.merges[i - 1](x)
      for block in blocks:
        x = block(x, training=training)
      maps.append(x)
    return maps

  def get_config(self):
    stride, dilation = self.tokenization
    return {**super().get_config(), 'topology': str(self.topology),
            'drop_path_rate': self.drop_path_rate, 'use_layer_norm': self.use_layer_norm,
            'stride': stride, 'dilation': dilation,
            'kernel_regularizer': serialize_regularizer(self.kernel_regularizer),
            'window_policy': self.window_policy,
            'window_reference_size': self.window_reference_size, 'merge': self.merge,
            'remat': self.remat}


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class AsViT(BuildsWithoutCall, tf_keras.Model):
  """As-ViT classifier: encoder -> head (`layers.ClassificationHead`: LayerNorm -> global
  average pool -> Dense(F) -> tanh -> Dense(num_classes)). `call` returns logits
  [B, num_classes]; `head(last_map)` the logits of a stage-4 map.

  Args:
    topology: a `Topology`, a topology string or a variant name ('asvit_large').
    num_classes: classes of the final Dense.
    drop_path_rate: stochastic depth of the last block (linear from 0 over all blocks).
    use_layer_norm: False replaces every LayerNorm by the identity (the network the curve
      complexity metrics measure).
    stride, dilation: tokenization of the patch embedding (see `set_tokenization`).
    kernel_regularizer: applied to every Dense and conv kernel.
    window_policy: 'splits' (default) or 'fixed' attention windows (`AsViTEncoder`).
    window_reference_size: image side (px) whose windows 'fixed' keeps; 224 by default.
    merge: 'plain' (default, As-ViT's patch merging) or 'residual' (with ViT-ResNAS's
      shortcut across each merging; `AsViTEncoder`).
    remat: recompute each block's activations in the backward pass (`AsViTEncoder`).
  """

  def __init__(self, topology, num_classes: int = 1000, drop_path_rate: float = 0.0,
               use_layer_norm: bool = True, stride: int = 4, dilation: int = 1,
               kernel_regularizer=None, window_policy: str = 'splits',
               window_reference_size: int = size.REFERENCE_SIZE, name: str = 'asvit',
               merge: str = 'plain', remat: bool = False, **kwargs):
    super().__init__(name=name, **kwargs)
    # Refused before any layer is made: bad numbers, or a network no accelerator could hold.
    self.topology = memory.check_buildable(topology, None, num_classes, stride)
    self.num_classes = validation.integer('num_classes', num_classes)
    self.encoder = AsViTEncoder(self.topology, drop_path_rate, use_layer_norm, stride,
                                dilation, kernel_regularizer, window_policy,
                                window_reference_size, merge, remat, name='encoder')
    self.head = asvit_layers.ClassificationHead(
        self.topology.head_width, self.num_classes, self.encoder.use_layer_norm,
        self.encoder.kernel_regularizer, name='head')
    # TF checkpoints written before the head was one layer reach its parts on the model.
    asvit_layers.keep_checkpoint_paths(
        self, self.head.checkpoint_paths('head_norm', 'pre_logits', 'classifier'))

  # ---- tokenization -------------------------------------------------------------------
  @property
  def tokenization(self):
    return self.encoder.tokenization

  def set_tokenization(self, stride: int, dilation: int = 1):
    """Changes the patch embedding's stride and dilation (and the `fixed` windows with
    them); no weight changes.

    A `tf.function` that already traced the model keeps the old grid: trace a new one.
    """
    self.encoder.set_tokenization(stride, dilation)

  def _parts_to_build(self, input_shape):
    """`build` (`BuildsWithoutCall`) creates all weights without a forward pass."""
    return [(self.encoder, input_shape),
            (self.head, [None, None, None, self.topology.stage_widths[-1]])]

  # ---- forward passes -----------------------------------------------------------------
  def feature_maps(self, images, training=None) -> Dict[str, tf.Tensor]:
    """{'2': stage-1 map, ..., '5': stage-4 map}, each [B, rows, cols, width]."""
    return dict(zip(LEVELS, self.encoder(images, training=training)))

  def features(self, images, training=None):
    """Pooled stage-4 features before the final LayerNorm, [B, d4]."""
    return tf.reduce_mean(self.encoder(images, training=training)[-1], axis=[1, 2])

  def call(self, images, training=None):
    return self.head(self.encoder(images, training=training)[-1])

  def get_config(self):
    config = self.encoder.get_config()
    return {'topology': config['topology'], 'num_classes': self.num_classes,
            'drop_path_rate': config['drop_path_rate'],
            'use_layer_norm': config['use_layer_norm'], 'stride': config['stride'],
            'dilation': config['dilation'], 'kernel_regularizer': config['kernel_regularizer'],
            'window_policy': config['window_policy'],
            'window_reference_size': config['window_reference_size'], 'name': self.name,
            'merge': config['merge'], 'remat': config['remat']}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(**config)


# ---- named variants ---------------------------------------------------------------------
_MODELS: Dict[str, Callable[..., AsViT]] = {}


def register_model(fn: Callable[..., AsViT]) -> Callable[..., AsViT]:
  """Makes `fn(**kwargs) -> AsViT` a named model of `create_model` under `fn.__name__`."""
  _MODELS[fn.__name__] = fn
  return fn


def model_names() -> List[str]:
  return sorted(_MODELS)


def create_model(name: str, image_size: Optional[int] = DEFAULT_BUILD_SIZE, **kwargs) -> AsViT:
  """A named variant (`model_names()`), built: its weights exist, so `summary()`,
  `count_params`, weight files and checkpoints work at once (a SavedModel traces the first
  call's image size: call the model once before `model.save(dir)`).

  Building creates the weights without a forward pass and costs the same at any size (no
  weight depends on it): `image_size` (224 by default) is only the input shape Keras records
  for the build (`_build_input_shape`); the model takes any image size afterwards.
  `image_size=None` builds for [None, None, None, 3].
  """
  if name not in _MODELS:
    raise ValueError(f'unknown model {name!r}; known: {", ".join(model_names())}')
  model = _MODELS[name](**kwargs)
  if image_size is not None:
    validation.check_image_size(image_size, kwargs.get('stride', 4))
  model.build(tf.TensorShape([None, image_size, image_size, 3]))
  return model


def _variant(name: str) -> Callable[..., AsViT]:
  """The registry's maker of the named variant `name`: `AsViT(arch.VARIANTS[name], **kwargs)`."""
  def create(**kwargs) -> AsViT:
    return AsViT(arch_lib.VARIANTS[name], **kwargs)
  create.__name__ = create.__qualname__ = name
  create.__doc__ = f'As-ViT {name}: topology {arch_lib.VARIANTS[name]} (arch.VARIANTS).'
  return create


# One table, arch.VARIANTS (sizes and origins: docs/design.md §2), names every variant.
for _name in arch_lib.VARIANTS:
  register_model(_variant(_name))
del _name
