"""Cascade Mask R-CNN with an As-ViT backbone: the `cascadercnn_asvit_coco` experiment.

The As-ViT stage maps (levels '2'..'5', strides 4..32) feed an FPN that adds level 6; the heads
are Model Garden's Cascade R-CNN ones as in its `cascadercnn_spinenet_coco` experiment
(cascade IoU 0.6/0.7 after the first stage's 0.5, class-agnostic box regression, class
ensemble over the three stages) plus the mask head. The defaults are the paper's detector
(As-ViT Large, 1024x1024, COCO); `official_configs/cascadercnn_asvit_*.yaml` say which
settings are the paper's and which are ours.

Importing this module registers the experiment (and, through `backbone`, the `asvit` builder).
`DetectionExperimentConfig.validate()` — run by Model Garden's `parse_configuration` before a
run — turns the usual configuration mistakes into one `ValueError` line each.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable, List, Optional, Sequence, Union

import tensorflow as tf
import tf_keras
import yaml

from official.core import config_definitions as cfg
from official.core import exp_factory
from official.modeling import hyperparams
from official.modeling import optimization
from official.vision.configs import common
from official.vision.configs import decoders
from official.vision.configs import maskrcnn as maskrcnn_cfg
from official.vision.modeling import factory as model_factory

from asvit_tf.errors import UserInputError
from asvit_tf.garden import backbone as asvit_backbone
from asvit_tf.garden import checkpoints
from asvit_tf.models import memory

DETECTION_EXPERIMENT = 'cascadercnn_asvit_coco'
COCO_TRAIN_IMAGES = 118287
COCO_VAL_IMAGES = 5000


# ---- validation ---------------------------------------------------------------------------
def check_model(model: maskrcnn_cfg.MaskRCNN) -> None:
  """Raises ValueError (one line) when the model config cannot build or train correctly."""
  size = list(model.input_size)
  if len(size) != 3 or any(int(v) < 1 for v in size):
    raise UserInputError(f'task.model.input_size must be [height, width, 3], got {size}')
  multiple = 2**model.max_level
  if size[0] % multiple or size[1] % multiple:
    up = [-(-int(v) // multiple) * multiple for v in size[:2]]
    raise UserInputError(
        f'task.model.input_size {size[0]}x{size[1]} is not divisible by 2^max_level = '
        f'{multiple} (max_level {model.max_level}): use multiples of {multiple}, e.g. '
        f'{up[0]}x{up[1]}')
  if model.min_level < 2:
    raise UserInputError(f'task.model.min_level must be >= 2 (the As-ViT backbone gives levels '
                         f'2..5), got {model.min_level}')
  if model.backbone.type == 'asvit':
    backbone = model.backbone.asvit
    asvit_backbone.check_config(backbone)
    if backbone.pre_logits:
      raise UserInputError('task.model.backbone.asvit.pre_logits must be false for detection '
                           '(FPN reads numeric levels only)')
    if backbone.stride != 4:
      raise UserInputError(f'task.model.backbone.asvit.stride must be 4 for detection (levels '
                           f'2..5 are strides 4..32), got {backbone.stride}')
    memory.check_buildable(backbone.arch, (int(size[0]), int(size[1])), None,
                               backbone.stride, 'task.model.input_size',
                               backbone.window_policy, backbone.window_reference_size)
  if model.roi_sampler.cascade_iou_thresholds and not (
      model.detection_head.class_agnostic_bbox_pred):
    raise UserInputError('task.model.detection_head.class_agnostic_bbox_pred must be true with '
                         'roi_sampler.cascade_iou_thresholds (Cascade R-CNN)')
  if model.num_classes < 2:
    raise UserInputError(f'task.model.num_classes must be >= 2 (background + 1), got '
                         f'{model.num_classes}')


def _patterns(input_path) -> List[str]:
  if isinstance(input_path, str):
    return [p for p in input_path.split(',') if p]
  if isinstance(input_path, (list, tuple)):
    return [p for p in input_path if p]
  return []  # a weighted mixture config: not checked


def check_input_files(name: str, data: cfg.DataConfig) -> None:
  """Raises ValueError when `data.input_path` is empty or a pattern matches no file."""
  if getattr(data, 'tfds_name', ''):
    return
  if not isinstance(data.input_path, (str, list, tuple)):
    return
  patterns = _patterns(data.input_path)
  if not patterns:
    raise UserInputError(f'task.{name}.input_path is empty: point it at the TFRecords of '
                         'official.vision.data.create_coco_tf_record')
  for pattern in patterns:
    if not tf.io.gfile.glob(pattern):
      raise UserInputError(f'task.{name}.input_path {pattern!r} matches no file')


def largest_category_id(annotation_file: str) -> int:
  """The largest category id used in (or declared by) a COCO instances json."""
  with tf.io.gfile.GFile(annotation_file) as f:
    data = json.load(f)
  ids = [int(c['id']) for c in data.get('categories', [])]
  ids += [int(a['category_id']) for a in data.get('annotations', [])]
  if not ids:
    raise UserInputError(f'task.annotation_file {annotation_file} has no categories')
  return max(ids)


def check_annotation_file(task: maskrcnn_cfg.MaskRCNNTask) -> None:
  """Raises ValueError when the COCO ground truth of the evaluation is missing or does not
  fit `num_classes` (category ids are used as class indices; 0 is the background)."""
  path = task.annotation_file
  if not path:
    if task.model.include_mask and task.use_coco_metrics and (
        task.validation_data.num_examples <= 0):
      raise UserInputError('task.annotation_file is empty: set it to the instances json of the '
                           'validation set (or set task.validation_data.num_examples so that '
                           'Model Garden writes one from the TFRecords)')
    return
  if not tf.io.gfile.exists(path):
    raise UserInputError(f'task.annotation_file {path!r} does not exist')
  largest = largest_category_id(path)
  if task.model.num_classes <= largest:
    raise UserInputError(f'task.model.num_classes {task.model.num_classes} must be above the '
                         f'largest category id {largest} in {path}: set it to {largest + 1} or '
                         'more')


def validate_detection(params: cfg.ExperimentConfig, check_data: bool = True) -> None:
  """All checks of a detection experiment; `check_data=False` checks the model only."""
  check_model(params.task.model)
  if check_data:
    check_input_files('train_data', params.task.train_data)
    check_input_files('validation_data', params.task.validation_data)
    check_annotation_file(params.task)


@dataclasses.dataclass
class DetectionExperimentConfig(cfg.ExperimentConfig):
  """An ExperimentConfig whose `validate()` also runs `validate_detection`.

  Model Garden's `train_utils.parse_configuration` calls `validate()` after all overrides,
  so a bad configuration fails there, before any model is built.
  """

  def validate(self):
    super().validate()
    validate_detection(self)


# ---- the experiment ------------------------------------------------------------------------
def asvit_detection_backbone(arch: str = 'asvit_large',
                             drop_path_rate: float = 0.3) -> asvit_backbone.Backbone:
  """The detection backbone: `fixed` windows, those of 224 px (As-ViT Large: 28, 28, 14, 7
  tokens), since the splits' windows grow with the image (128×128 tokens at 1024²).

  `remat` stays off (the default); `task.model.backbone.asvit.remat: true` recomputes the
  blocks' activations in the backward pass: on a 2-core CPU in float32 the 1024² training
  step then fits in 9.6 GB instead of more than 15.5 GB (docs/benchmarks.md)."""
  return asvit_backbone.Backbone(type='asvit', asvit=asvit_backbone.AsViTConfig(
      arch=arch, drop_path_rate=drop_path_rate, stride=4, dilation=1, pre_logits=False,
      window_policy='fixed', window_reference_size=224))


@exp_factory.register_config_factory(DETECTION_EXPERIMENT)
def cascadercnn_asvit_coco() -> DetectionExperimentConfig:
  """COCO Cascade Mask R-CNN with As-ViT Large + FPN at 1024x1024 (the paper's detector).

  Heads and cascade follow Model Garden's `cascadercnn_spinenet_coco`; the schedule is the
  Swin 3x recipe for transformer backbones (AdamW, 36 epochs), since the paper gives none.
  """
  train_batch_size = 64
  eval_batch_size = 8
  steps_per_epoch = COCO_TRAIN_IMAGES // train_batch_size
  task = maskrcnn_cfg.MaskRCNNTask(
      annotation_file=os.path.join(maskrcnn_cfg.COCO_INPUT_PATH_BASE,
                                   'instances_val2017.json'),
      init_checkpoint_modules='backbone',
      model=maskrcnn_cfg.MaskRCNN(
          num_classes=91,
          input_size=[1024, 1024, 3],
          min_level=2,
          max_level=6,
          backbone=asvit_detection_backbone(),
          decoder=decoders.Decoder(type='fpn', fpn=decoders.FPN(num_filters=256)),
          anchor=maskrcnn_cfg.Anchor(anchor_size=8.0),
          roi_sampler=maskrcnn_cfg.ROISampler(cascade_iou_thresholds=[0.6, 0.7]),
          # 2fc box heads: mmdetection's Cascade Mask R-CNN, which the paper's 138.8 M
          # parameters match (benchmarks/detector_size.py); Model Garden's default is 4conv1fc.
          detection_head=maskrcnn_cfg.DetectionHead(
              num_convs=0, num_fcs=2, fc_dims=1024, class_agnostic_bbox_pred=True,
              cascade_class_ensemble=True),
          norm_activation=common.NormActivation(
              activation='swish', norm_momentum=0.997, norm_epsilon=0.0001,
              use_sync_bn=True),
          include_mask=True),
      losses=maskrcnn_cfg.Losses(l2_weight_decay=0.0),
      train_data=maskrcnn_cfg.DataConfig(
          input_path=os.path.join(maskrcnn_cfg.COCO_INPUT_PATH_BASE, 'train*'),
          is_training=True, global_batch_size=train_batch_size,
          parser=maskrcnn_cfg.Parser(aug_rand_hflip=True, aug_scale_min=0.1,
                                     aug_scale_max=2.0)),
      validation_data=maskrcnn_cfg.DataConfig(
          input_path=os.path.join(maskrcnn_cfg.COCO_INPUT_PATH_BASE, 'val*'),
          is_training=False, global_batch_size=eval_batch_size, drop_remainder=False))
  trainer = cfg.TrainerConfig(
      train_steps=steps_per_epoch * 36,
      validation_steps=COCO_VAL_IMAGES // eval_batch_size,
      validation_interval=steps_per_epoch,
      steps_per_loop=steps_per_epoch,
      summary_interval=steps_per_epoch,
      checkpoint_interval=steps_per_epoch,
      optimizer_config=optimization.OptimizationConfig({
          'optimizer': {'type': 'adamw', 'adamw': {
              'weight_decay_rate': 0.05, 'gradient_clip_norm': 0.0,
              'exclude_from_weight_decay': ['gamma', 'beta', 'bias']}},
          'learning_rate': {'type': 'stepwise', 'stepwise': {
              'boundaries': [steps_per_epoch * 27, steps_per_epoch * 33],
              'values': [4e-4, 4e-5, 4e-6]}},
          'warmup': {'type': 'linear', 'linear': {
              'warmup_steps': 1000, 'warmup_learning_rate': 4e-6}}}))
  # Rebuilt rather than derived from cascadercnn_spinenet_coco: its restrictions read
  # task.model.backbone.spinenet.* and would pin the levels to SpineNet's 3..7.
  return DetectionExperimentConfig(
      task=task, trainer=trainer,
      runtime=cfg.RuntimeConfig(mixed_precision_dtype='bfloat16'),
      restrictions=['task.train_data.is_training != None',
                    'task.validation_data.is_training != None',
                    'task.model.min_level <= task.model.max_level'])


# ---- building a detector from a config (export, demo, benchmarks) -------------------------
def detection_config(config_files: Sequence[str] = (),
                     overrides: Union[None, str, dict] = None,
                     validate_data: bool = False) -> DetectionExperimentConfig:
  """The `cascadercnn_asvit_coco` config with YAML files and overrides applied (strict).

  Checks the model part always and the data part (input files, annotation file) with
  `validate_data`.
  """
  params = exp_factory.get_exp_config(DETECTION_EXPERIMENT)
  try:
    for path in config_files:
      params = hyperparams.override_params_dict(params, path, is_strict=True)
    if overrides:
      params = hyperparams.override_params_dict(params, overrides, is_strict=True)
    cfg.ExperimentConfig.validate(params)  # the restrictions
  except KeyError as e:  # a key of another experiment's config
    raise UserInputError(f'config error: {e.args[0] if e.args else e} (is it a config of '
                         f'{DETECTION_EXPERIMENT}?)') from None
  except yaml.YAMLError as e:
    raise UserInputError(f'config error: a file of `config_files` does not parse as YAML: '
                         f'{" ".join(str(e).split())}') from None
  except (AttributeError, TypeError, ValueError) as e:
    raise UserInputError(f'config error: {e}') from None
  validate_detection(params, check_data=validate_data)
  return params


def build_detector(params: cfg.ExperimentConfig, checkpoint_path: Optional[str] = None,
                   image_size: Optional[Iterable[int]] = None) -> tf_keras.Model:
  """The Cascade Mask R-CNN Keras model of `params`, built, and restored when given a
  checkpoint (a file prefix or a model_dir: its latest checkpoint).

  `image_size` (height, width) overrides `task.model.input_size` for the input spec; it must
  also be a multiple of 2^max_level. Call the model as
  `model(images, image_shape=..., training=False)` (see Model Garden's MaskRCNNModel).
  """
  model_cfg = params.task.model
  if image_size is not None:
    model_cfg = model_cfg.replace(input_size=[*[int(v) for v in image_size], 3])
  check_model(model_cfg)
  size = list(model_cfg.input_size)
  model = model_factory.build_maskrcnn(
      input_specs=tf_keras.layers.InputSpec(shape=[None] + size), model_config=model_cfg)
  model(tf_keras.Input(size), image_shape=tf_keras.Input([2]), training=False)
  if checkpoint_path:
    checkpoints.restore_model(model, checkpoint_path)
  return model
