"""The `asvit` backbone of Model Garden: config dataclass, Keras model and builder.

Importing this module registers the backbone builder 'asvit' with
`official.vision.modeling.backbones.factory`.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

import tensorflow as tf
import tf_keras

from official.modeling import hyperparams
from official.vision.configs import backbones as backbones_cfg
from official.vision.modeling.backbones import factory

from asvit_tf import arch as arch_lib
from asvit_tf import layers as asvit_layers
from asvit_tf.errors import UserInputError
from asvit_tf.garden.retokenization import RetokenizationPhase
from asvit_tf.models.asvit import LEVELS
from asvit_tf.models.asvit import AsViTEncoder
from asvit_tf.models.asvit import BuildsWithoutCall
from asvit_tf.models import size


@dataclasses.dataclass
class AsViTConfig(hyperparams.Config):
  """Config of the `asvit` backbone.

  Attributes:
    arch: a topology string or a variant name ('asvit_small', 'asvit_large', ...).
    drop_path_rate: stochastic depth of the last block (linear from 0).
    stride, dilation: tokenization of the patch embedding the model is built with (what
      evaluation and export use); a re-tokenization schedule must end with these values.
    pre_logits: add the As-ViT head's LayerNorm -> pool -> Dense(F) -> tanh as endpoint
      'pre_logits' (classification); off for detection.
    retokenization: progressive re-tokenization schedule, phases (start_step, stride,
      dilation) applied by `asvit_tf.garden.trainer.AsViTTrainer`; empty = fixed tokenization.
    window_policy: 'splits' (attention windows are 1/S of the grid, so they grow with the
      image; classification) or 'fixed' (each stage keeps the window it has at
      `window_reference_size`; detection). See `asvit_tf.models.AsViTEncoder`.
    window_reference_size: the image side (px) whose windows 'fixed' keeps.
    merge: 'plain' (As-ViT's patch merging) or 'residual' (plus ViT-ResNAS's shortcut across
      each merging: 2×2 average pooling and a Dense; docs/design.md §3).
    remat: gradient checkpointing of the transformer blocks (`tf.recompute_grad` of each
      block's attention and MLP branch): the backward pass recomputes their activations
      instead of keeping them, same loss and gradients, one more forward pass of the blocks.
      Off by default; what lets the 1024² detector's training step fit in 24 GB on CPU
      (docs/benchmarks.md, "Detector training step").
  """
  arch: str = 'asvit_seed'
  drop_path_rate: float = 0.0
  stride: int = 4
  dilation: int = 1
  pre_logits: bool = True
  retokenization: List[RetokenizationPhase] = dataclasses.field(default_factory=list)
  window_policy: str = 'splits'
  window_reference_size: int = size.REFERENCE_SIZE
  merge: str = 'plain'
  remat: bool = False


def check_config(cfg: AsViTConfig, where: str = 'task.model.backbone.asvit') -> None:
  """Raises UserInputError (one line, naming the field) for an `arch` that is neither a
  variant nor a topology string, a bad window policy or reference, or a merge that is not one of
  `size.MERGES`: the checks of the backbone config that classification and detection
  share."""
  try:
    arch_lib.as_topology(cfg.arch)
  except ValueError as e:
    raise UserInputError(f'{where}.arch: {e}') from None
  if cfg.window_policy not in size.WINDOW_POLICIES:
    raise UserInputError(f'{where}.window_policy must be one of {", ".join(size.WINDOW_POLICIES)}'
                     f', got {cfg.window_policy!r}')
  if cfg.window_reference_size < 1:
    raise UserInputError(f'{where}.window_reference_size must be >= 1 (pixels), got '
                     f'{cfg.window_reference_size}')
  size.check_merge(cfg.merge, f'{where}.merge')


@dataclasses.dataclass
class Backbone(backbones_cfg.Backbone):
  """Model Garden's backbone OneOfConfig with an `asvit` member."""
  type: Optional[str] = 'asvit'
  asvit: AsViTConfig = dataclasses.field(default_factory=AsViTConfig)


@tf_keras.utils.register_keras_serializable(package='asvit_tf')
class AsViTBackbone(BuildsWithoutCall, tf_keras.Model):
  """As-ViT as a Model Garden backbone.

  `call(images)` returns {'2': stage-1 map, ..., '5': stage-4 map} ([B, rows, cols, width],
  strides 4..32 at tokenization stride 4) and, with `pre_logits`, 'pre_logits' [B, 1, 1, F]:
  the As-ViT head before its last Dense. Model Garden's classifier reads the largest key
  ('pre_logits' sorts after the digits) and adds Dense(num_classes).
  """

  def __init__(self, arch, input_specs: Optional[tf_keras.layers.InputSpec] = None,
               drop_path_rate: float = 0.0, stride: int = 4, dilation: int = 1,
               pre_logits: bool = False, kernel_regularizer=None,
               window_policy: str = 'splits',
               window_reference_size: int = size.REFERENCE_SIZE, merge: str = 'plain',
               remat: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.topology = arch_lib.as_topology(arch)
    if input_specs is None:
      input_specs = tf_keras.layers.InputSpec(shape=[None, None, None, 3])
    self._input_specs = input_specs
    self._pre_logits = bool(pre_logits)
    self.encoder = AsViTEncoder(self.topology, drop_path_rate, True, stride, dilation,
                                kernel_regularizer, window_policy, window_reference_size,
                                merge, remat, name='encoder')
    if self._pre_logits:
      self.head = asvit_layers.ClassificationHead(
          self.topology.head_width, None, True, self.encoder.kernel_regularizer, name='head')
      # TF checkpoints written before the head was one layer reach its parts on the backbone.
      asvit_layers.keep_checkpoint_paths(
          self, self.head.checkpoint_paths('head_norm', 'pre_logits_dense'))

  @property
  def tokenization(self):
    return self.encoder.tokenization

  def set_tokenization(self, stride: int, dilation: int = 1):
    """Changes the token grid; traced functions must be re-traced to see it."""
    self.encoder.set_tokenization(stride, dilation)

  def _parts_to_build(self, input_shape):
    """`build` (`BuildsWithoutCall`) creates all weights without a forward pass."""
    parts = [(self.encoder, input_shape)]
    if self._pre_logits:
      parts.append((self.head, [None, None, None, self.topology.stage_widths[-1]]))
    return parts

  def call(self, images, training=None) -> Dict[str, tf.Tensor]:
    maps = self.encoder(images, training=training)
    out = dict(zip(LEVELS, maps))
    if self._pre_logits:
      out['pre_logits'] = self.head(maps[-1])[:, tf.newaxis, tf.newaxis, :]  # [B, 1, 1, F]
    return out

  @property
  def output_specs(self) -> Dict[str, tf.TensorShape]:
    """Shapes of the outputs at the current tokenization."""
    h, w = self._input_specs.shape[1:3]
    if h is None or w is None:
      grids = [(None, None)] * len(LEVELS)
    else:
      grids = size.stage_grids((h, w), self.encoder.tokenization[0])
    specs = {level: tf.TensorShape([None, rows, cols, width]) for level, (rows, cols), width
             in zip(LEVELS, grids, self.topology.stage_widths)}
    if self._pre_logits:
      specs['pre_logits'] = tf.TensorShape([None, 1, 1, self.topology.head_width])
    return specs

  def get_config(self):
    encoder = self.encoder.get_config()
    shape = self._input_specs.shape
    return {'arch': encoder['topology'],
            'input_specs': None if shape is None else [None if d is None else int(d)
                                                       for d in shape],
            'drop_path_rate': encoder['drop_path_rate'],
            'stride': encoder['stride'], 'dilation': encoder['dilation'],
            'pre_logits': self._pre_logits,
            'kernel_regularizer': encoder['kernel_regularizer'],
            'window_policy': encoder['window_policy'],
            'window_reference_size': encoder['window_reference_size'],
            'merge': encoder['merge'], 'remat': encoder['remat'], 'name': self.name}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    shape = config.pop('input_specs', None)  # absent in configs written before it was saved
    if shape is not None:
      config['input_specs'] = tf_keras.layers.InputSpec(shape=shape)
    return cls(**config)


@factory.register_backbone_builder('asvit')
def build_asvit(input_specs, backbone_config, norm_activation_config, l2_regularizer=None):
  """Model Garden builder of the `asvit` backbone (LayerNorm only: no norm_activation)."""
  del norm_activation_config
  if backbone_config.type != 'asvit':
    raise ValueError(f'build_asvit got backbone type {backbone_config.type!r}')
  cfg = backbone_config.get()
  check_config(cfg)
  return AsViTBackbone(cfg.arch, input_specs=input_specs, drop_path_rate=cfg.drop_path_rate,
                       stride=cfg.stride, dilation=cfg.dilation, pre_logits=cfg.pre_logits,
                       kernel_regularizer=l2_regularizer, window_policy=cfg.window_policy,
                       window_reference_size=cfg.window_reference_size, merge=cfg.merge,
                       remat=cfg.remat)
