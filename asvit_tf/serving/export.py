"""SavedModel export through Model Garden's export modules, with our checks.

The exported signature `serving_default` takes `inputs`: uint8 images [batch, height, width, 3]
of any batch size (and, for the classifier, any image size: Model Garden's module resizes to
the config's input size and normalises). The model is built from the experiment config, whose
backbone `stride`/`dilation` are the final tokenization of the re-tokenization schedule, so a
model trained with a schedule is exported with the tokenization it finished with.
"""
from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from official.core import config_definitions as cfg
from official.vision.configs import image_classification as img_cls_cfg
from official.vision.configs import maskrcnn as maskrcnn_cfg
from official.vision.serving import export_saved_model_lib

from asvit_tf.garden import detection
from asvit_tf.garden import train_lib

INPUT_TYPES = ('image_tensor', 'image_bytes', 'tf_example')


def load_params(experiment: str, config_files: Sequence[str] = (),
                params_override: str = '') -> cfg.ExperimentConfig:
  """Experiment config + YAML files + overrides, checked as `asvit train` checks them, but
  without the data files (exporting needs none); ValueError on errors."""
  if experiment == detection.DETECTION_EXPERIMENT:
    train_lib.check_config_files(config_files)
    # Its config's validate() checks the data files too: check the model part only.
    return detection.detection_config(config_files, params_override or None,
                                      validate_data=False)
  params = train_lib.parse_configuration(experiment, config_files, params_override)
  task = params.task
  if not isinstance(task, (img_cls_cfg.ImageClassificationTask, maskrcnn_cfg.MaskRCNNTask)):
    raise ValueError(f'cannot export a {type(task).__name__}: only image classification and '
                     'Mask R-CNN experiments are supported')
  return params


def resolve_checkpoint(checkpoint_path: str) -> str:
  """A checkpoint file prefix: the path itself, or the latest checkpoint of a directory."""
  if not checkpoint_path:
    raise ValueError('--checkpoint_path is required (a checkpoint or a model_dir)')
  if tf.io.gfile.isdir(checkpoint_path):
    latest = tf.train.latest_checkpoint(checkpoint_path)
    if latest is None:
      raise ValueError(f'no checkpoint in {checkpoint_path}')
    return latest
  if not tf.io.gfile.exists(checkpoint_path + '.index'):
    raise FileNotFoundError(f'checkpoint {checkpoint_path} does not exist')
  return checkpoint_path


def export(params: cfg.ExperimentConfig, checkpoint_path: str, export_dir: str,
           batch_size: Optional[int] = None, input_type: str = 'image_tensor') -> str:
  """Writes the SavedModel to `export_dir` (plus its params.yaml); returns `export_dir`.

  `batch_size=None` exports a signature that takes any batch size.
  """
  if input_type not in INPUT_TYPES:
    raise ValueError(f'--input_type must be one of {", ".join(INPUT_TYPES)}, got {input_type!r}')
  if batch_size is not None and batch_size < 1:
    raise ValueError(f'--batch_size must be >= 1 (or 0 for any), got {batch_size}')
  checkpoint = resolve_checkpoint(checkpoint_path)
  try:
    tf.io.gfile.makedirs(export_dir)
  except (tf.errors.OpError, OSError) as e:
    raise PermissionError(f'cannot write to {export_dir}: {e}') from None
  size = list(params.task.model.input_size[:2])
  export_saved_model_lib.export_inference_graph(
      input_type=input_type, batch_size=batch_size, input_image_size=size, params=params,
      checkpoint_path=checkpoint, export_dir=export_dir)
  return export_dir
