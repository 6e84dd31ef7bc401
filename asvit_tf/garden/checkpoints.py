"""Finding and reading the checkpoints of a training run (classifier or detector)."""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from asvit_tf.errors import UserInputError


def resolve_checkpoint(path: str) -> str:
  """A checkpoint file prefix: `path` itself (a ckpt-N prefix), or the latest checkpoint of
  the model_dir `path`. Raises UserInputError (one line, naming `path`) when there is none."""
  if path and tf.io.gfile.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest is not None:
      return latest
  elif path and tf.io.gfile.exists(path + '.index'):
    return path
  raise UserInputError(f'no checkpoint at {path!r}: give a checkpoint prefix (ckpt-N) or a '
                       'model_dir that holds one')


def restore_model(model: tf_keras.Model, path: str) -> str:
  """Reads the model's weights from the checkpoint `path` resolves to (`resolve_checkpoint`)
  and returns that prefix. Optimizer slots and other objects of the checkpoint are ignored;
  every weight of the model must be in it."""
  prefix = resolve_checkpoint(path)
  tf.train.Checkpoint(model=model).read(prefix).expect_partial().assert_existing_objects_matched()
  return prefix
