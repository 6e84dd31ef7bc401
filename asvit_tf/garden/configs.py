"""Experiment configs: `asvit_imagenet` on Model Garden's image-classification task.

The recipe (docs/design.md §12) is open: the paper's training appendix was not available. We start
from DeiT/Swin on ImageNet-1k: AdamW, lr 1e-3 x batch/1024 with a cosine decay and 5 warm-up
epochs, weight decay 0.05, 300 epochs, RandAugment m9, mixup 0.8, cutmix 1.0, label smoothing
0.1, random erasing 0.25, stochastic depth by model size. The re-tokenization schedule is the
paper's (stride 16 until epoch 80, 8 until 132, then 4), scaled to steps; the dilations of
its coarse phases follow d = max(1, round((s-1)/(K1-1))), which gives the paper's 16/d5 and
8/d2 at K1 = 4 and 16/d2 and 8/d1 at the variants' K1 = 8. The experiment is As-ViT Large
(stochastic depth 0.5, Swin-B-sized); official_configs/asvit_*_imagenet_tpu.yaml hold only
what differs from it (the TPU runtime in bfloat16, the variant and its stochastic depth).

`validate_experiment` holds the checks a config must pass before training; `asvit train` runs
it after parsing, so a bad variant, image size or schedule fails with one line.
"""
from __future__ import annotations

import os

from official.core import config_definitions as cfg
from official.core import exp_factory
from official.modeling import optimization
from official.vision.configs import common
from official.vision.configs import image_classification as img_cls_cfg

from asvit_tf import arch as arch_lib
from asvit_tf import validation
from asvit_tf.errors import UserInputError
from asvit_tf.garden.backbone import AsViTConfig
from asvit_tf.garden.backbone import Backbone
from asvit_tf.garden import retokenization as retok
from asvit_tf.garden.backbone import check_config
from asvit_tf.models import memory

IMAGENET_TRAIN_EXAMPLES = img_cls_cfg.IMAGENET_TRAIN_EXAMPLES
IMAGENET_VAL_EXAMPLES = img_cls_cfg.IMAGENET_VAL_EXAMPLES
IMAGENET_INPUT_PATH_BASE = img_cls_cfg.IMAGENET_INPUT_PATH_BASE


@exp_factory.register_config_factory('asvit_imagenet')
def asvit_imagenet() -> cfg.ExperimentConfig:
  """As-ViT Large on ImageNet-1k (Model Garden TFRecords, 1001 classes) at 224."""
  batch_size = 1024
  epochs = 300
  steps_per_epoch = IMAGENET_TRAIN_EXAMPLES // batch_size
  train_steps = epochs * steps_per_epoch
  label_smoothing = 0.1
  arch = 'asvit_large'
  kernel = arch_lib.as_topology(arch).kernels[0]
  schedule = retok.published_schedule(train_steps, kernel, epochs, steps_per_epoch)
  backbone = Backbone(type='asvit', asvit=AsViTConfig(
      arch=arch, drop_path_rate=0.5, stride=schedule[-1].stride,
      dilation=schedule[-1].dilation, pre_logits=True,
      retokenization=[retok.RetokenizationPhase(**p._asdict()) for p in schedule]))
  return cfg.ExperimentConfig(
      task=img_cls_cfg.ImageClassificationTask(
          model=img_cls_cfg.ImageClassificationModel(
              num_classes=1001, input_size=[224, 224, 3], backbone=backbone,
              kernel_initializer='zeros'),
          losses=img_cls_cfg.Losses(l2_weight_decay=0.0, label_smoothing=label_smoothing,
                                    one_hot=False, soft_labels=True),
          train_data=img_cls_cfg.DataConfig(
              input_path=os.path.join(IMAGENET_INPUT_PATH_BASE, 'train*'),
              is_training=True, global_batch_size=batch_size,
              aug_type=common.Augmentation(type='randaug', randaug=common.RandAugment(
                  magnitude=9, magnitude_std=0.5, exclude_ops=['Cutout'])),
              random_erasing=common.RandomErasing(probability=0.25),
              mixup_and_cutmix=common.MixupAndCutmix(
                  mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=label_smoothing)),
          validation_data=img_cls_cfg.DataConfig(
              input_path=os.path.join(IMAGENET_INPUT_PATH_BASE, 'valid*'),
              is_training=False, global_batch_size=batch_size)),
      trainer=cfg.TrainerConfig(
          train_steps=train_steps, steps_per_loop=steps_per_epoch,
          summary_interval=steps_per_epoch, checkpoint_interval=steps_per_epoch,
          validation_interval=steps_per_epoch,
          validation_steps=IMAGENET_VAL_EXAMPLES // batch_size,
          optimizer_config=optimization.OptimizationConfig({
              'optimizer': {'type': 'adamw', 'adamw': {
                  'weight_decay_rate': 0.05,
                  'include_in_weight_decay': r'.*(kernel|weight):0$',
                  'gradient_clip_norm': 5.0}},
              'learning_rate': {'type': 'cosine', 'cosine': {
                  'initial_learning_rate': 1e-3 * batch_size / 1024,
                  'decay_steps': train_steps, 'alpha': 0.01}},
              'warmup': {'type': 'linear', 'linear': {
                  'warmup_steps': 5 * steps_per_epoch, 'warmup_learning_rate': 0.0}}})),
      restrictions=['task.train_data.is_training != None',
                    'task.validation_data.is_training != None'])


def validate_experiment(params: cfg.ExperimentConfig):
  """Raises ValueError (one line, naming the field) if an As-ViT experiment cannot run.

  Checks the backbone type, that `arch` is a known variant or a valid topology string, the
  window policy, the input size (3 values; `validation.check_image_size` at every
  tokenization stride), the number of classes, the re-tokenization schedule
  (`retokenization.validate_schedule`) and that the network fits the memory of an
  accelerator (`memory.check_buildable`).
  """
  model = params.task.model
  if model.backbone.type != 'asvit':
    raise UserInputError(f'task.model.backbone.type must be "asvit", got {model.backbone.type!r}')
  backbone = model.backbone.get()
  check_config(backbone)
  size = list(model.input_size)
  if len(size) != 3:
    raise UserInputError(f'task.model.input_size must be [height, width, channels], got {size}')
  validation.integer('task.model.input_size channels', size[2])
  validation.integer('task.model.num_classes', model.num_classes)
  retok.validate_schedule(backbone.retokenization, (backbone.stride, backbone.dilation),
                          size[:2], params.trainer.steps_per_loop, params.trainer.train_steps)
  # The finest tokenization of the schedule makes the largest tensors.
  finest = min([backbone.stride] + [p.stride for p in retok.as_phases(backbone.retokenization)])
  memory.check_buildable(backbone.arch, tuple(size[:2]), model.num_classes, finest,
                             'task.model.input_size', backbone.window_policy,
                             backbone.window_reference_size)
