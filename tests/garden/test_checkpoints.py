"""The one checkpoint resolver of training, detection and export."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from asvit_tf.errors import UserInputError
from asvit_tf.garden import checkpoints


def _model(seed):
  model = tf_keras.Sequential([tf_keras.layers.Dense(
      3, kernel_initializer=tf_keras.initializers.RandomNormal(seed=seed))])
  model.build([None, 2])
  return model


def test_a_model_dir_resolves_to_its_latest_checkpoint(tmp_path):
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=_model(0)), str(tmp_path), 3)
  first, second = manager.save(), manager.save()
  assert checkpoints.resolve_checkpoint(str(tmp_path)) == second
  assert checkpoints.resolve_checkpoint(first) == first   # a prefix is itself


@pytest.mark.parametrize('where', ['empty_dir', 'missing/ckpt-1', 'missing_dir', ''])
def test_no_checkpoint_is_one_error_naming_the_path(where, tmp_path):
  (tmp_path / 'empty_dir').mkdir()
  path = str(tmp_path / where) if where else ''
  with pytest.raises(UserInputError) as info:
    checkpoints.resolve_checkpoint(path)
  assert str(info.value) == (f'no checkpoint at {path!r}: give a checkpoint prefix (ckpt-N) '
                             'or a model_dir that holds one')


def test_restore_model_reads_every_weight_and_ignores_other_objects(tmp_path):
  saved = _model(0)
  step = tf.Variable(7)   # e.g. the trainer's step counter: not the model's
  prefix = tf.train.Checkpoint(model=saved, step=step).save(str(tmp_path / 'ckpt'))
  restored = _model(1)
  assert not np.allclose(restored.get_weights()[0], saved.get_weights()[0])
  assert checkpoints.restore_model(restored, str(tmp_path)) == prefix
  for got, want in zip(restored.get_weights(), saved.get_weights()):
    np.testing.assert_array_equal(got, want)


def test_restore_model_refuses_a_checkpoint_without_the_models_weights(tmp_path):
  prefix = tf.train.Checkpoint(other=tf.Variable(1.0)).save(str(tmp_path / 'ckpt'))
  with pytest.raises(AssertionError):
    checkpoints.restore_model(_model(0), prefix)
