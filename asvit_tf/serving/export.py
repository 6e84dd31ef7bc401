"""SavedModel export through Model Garden's export modules, with our checks.

The exported signature `serving_default` takes `inputs`: uint8 images [batch, height, width, 3]
of any batch size (and, for the classifier, any image size: Model Garden's module resizes to
the config's input size and normalises). Images of another rank or channel count are refused
with a message that names the expected shape; an empty batch gives empty outputs. The model
is built from the experiment config, whose backbone `stride`/`dilation` are the final
tokenization of the re-tokenization schedule, so a model trained with a schedule is exported
with the tokenization it finished with.
"""
from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from official.core import config_definitions as cfg
from official.vision.configs import image_classification as img_cls_cfg
from official.vision.configs import maskrcnn as maskrcnn_cfg
from official.vision.serving import detection as detection_serving
from official.vision.serving import export_saved_model_lib
from official.vision.serving import image_classification as classification_serving

from asvit_tf.errors import UserInputError
from asvit_tf.garden import checkpoints
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
    raise UserInputError(f'cannot export a {type(task).__name__}: only image classification and '
                         'Mask R-CNN experiments are supported')
  return params


class _CheckedImageTensors:
  """Mixin for Model Garden's export modules: the `image_tensor` signature takes a uint8
  tensor of any shape and checks it itself, so that a wrong rank or channel count names the
  expected shape (the plain signature's own check only says "Specified a list with shape
  [?,?,3] from a tensor with shape [32,3]")."""

  def expected_shape(self) -> str:
    return f'[{self._batch_size or "batch"}, height, width, {self._num_channels}]'

  @tf.function(autograph=False)  # plain Python conditions on the export settings
  def checked_image_tensors(self, inputs):
    rank, shape = tf.rank(inputs), tf.shape(inputs)
    padded = tf.concat([shape, tf.zeros([4], tf.int32)], 0)  # indexable whatever the rank
    ok = tf.logical_and(tf.equal(rank, 4), tf.equal(padded[3], self._num_channels))
    if self._batch_size:
      ok = tf.logical_and(ok, tf.equal(padded[0], self._batch_size))
    check = tf.debugging.Assert(ok, [f'inputs must be uint8 images of shape '
                                     f'{self.expected_shape()} (batch, height, width, '
                                     'channels); got shape', shape], summarize=8)
    with tf.control_dependencies([check]):
      inputs = tf.ensure_shape(inputs, [self._batch_size, None, None, self._num_channels])
    # An empty batch gives empty outputs (the model itself cannot run on zero images).
    outputs = self.inference_from_image_tensors.get_concrete_function(
        tf.TensorSpec([self._batch_size, None, None, self._num_channels], tf.uint8)
    ).structured_outputs
    empty = lambda: tf.nest.map_structure(
        lambda t: tf.zeros([0] + [d or 0 for d in t.shape.as_list()[1:]], t.dtype), outputs)
    return tf.cond(shape[0] > 0, lambda: self.inference_from_image_tensors(inputs), empty)

  def get_inference_signatures(self, function_keys):
    others = {k: v for k, v in function_keys.items() if k != 'image_tensor'}
    signatures = super().get_inference_signatures(others) if others else {}
    if 'image_tensor' in function_keys:
      spec = tf.TensorSpec(shape=None, dtype=tf.uint8, name=self._input_name)
      signatures[function_keys['image_tensor']] = (
          self.checked_image_tensors.get_concrete_function(spec))
    return signatures


class ClassificationModule(_CheckedImageTensors, classification_serving.ClassificationModule):
  """Model Garden's classification export module with checked image tensors."""


class DetectionModule(_CheckedImageTensors, detection_serving.DetectionModule):
  """Model Garden's detection export module with checked image tensors."""


def export(params: cfg.ExperimentConfig, checkpoint_path: str, export_dir: str,
           batch_size: Optional[int] = None, input_type: str = 'image_tensor') -> str:
  """Writes the SavedModel to `export_dir` (plus its params.yaml); returns `export_dir`.

  `batch_size=None` exports a signature that takes any batch size.
  """
  if input_type not in INPUT_TYPES:
    raise UserInputError(f'`input_type` must be one of {", ".join(INPUT_TYPES)}, '
                         f'got {input_type!r}')
  if batch_size is not None and batch_size < 1:
    raise UserInputError(f'`batch_size` must be >= 1 (or None for any), got {batch_size}')
  checkpoint = checkpoints.resolve_checkpoint(checkpoint_path)
  try:
    tf.io.gfile.makedirs(export_dir)
  except (tf.errors.OpError, OSError) as e:
    raise PermissionError(f'cannot write to {export_dir}: {e}') from None
  size = list(params.task.model.input_size[:2])
  module_cls = (ClassificationModule
                if isinstance(params.task, img_cls_cfg.ImageClassificationTask)
                else DetectionModule)
  module = module_cls(params=params, batch_size=batch_size, input_image_size=size,
                      input_type=input_type, num_channels=3)
  export_saved_model_lib.export_inference_graph(
      input_type=input_type, batch_size=batch_size, input_image_size=size, params=params,
      checkpoint_path=checkpoint, export_dir=export_dir, export_module=module)
  return export_dir
