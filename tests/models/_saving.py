"""Every Keras way of saving and loading a model, and the checks that nothing was lost.

Each round trip takes a built, called model and a temporary directory and returns what a user
gets back: a model (or, for `tf.saved_model.load`, the restored object) to call on images.
"""
import numpy as np
import tensorflow as tf
import tf_keras


def fresh_copy(model, input_shape):
  """A new model of the same config, built for `input_shape`, with its own random weights."""
  copy = type(model).from_config(model.get_config())
  copy.build(input_shape)
  return copy


def _whole_model(name):
  """`model.save` to `name` in the directory, then `load_model` (the format follows `name`)."""
  def round_trip(model, input_shape, tmp_path):
    del input_shape
    path = str(tmp_path / name)
    model.save(path)
    return tf_keras.models.load_model(path)
  return round_trip


def _weights_only(name):
  """`save_weights` to `name`, then `load_weights` into a fresh copy (the format follows
  `name`)."""
  def round_trip(model, input_shape, tmp_path):
    path = str(tmp_path / name)
    model.save_weights(path)
    copy = fresh_copy(model, input_shape)
    copy.load_weights(path)
    return copy
  return round_trip


keras_file = _whole_model('model.keras')
weights_h5 = _weights_only('model.weights.h5')
legacy_h5_weights = _weights_only('model.h5')  # the legacy HDF5 layout
keras_saved_model = _whole_model('saved_model')  # a directory: the Keras SavedModel


def legacy_h5_model(model, input_shape, tmp_path):
  """`save('x.h5')` takes Functional models only (tf_keras refuses subclassed ones): the model
  inside a Functional one, as a user would save it."""
  inputs = tf_keras.Input(input_shape[1:])
  path = str(tmp_path / 'model.h5')
  tf_keras.Model(inputs, model(inputs)).save(path)
  return tf_keras.models.load_model(path).layers[-1]


def tf_saved_model(model, input_shape, tmp_path):
  path = str(tmp_path / 'tf_saved_model')
  tf.saved_model.save(model, path)
  return tf.saved_model.load(path)


def tf_checkpoint(model, input_shape, tmp_path):
  prefix = tf.train.Checkpoint(model=model).write(str(tmp_path / 'ckpt'))
  copy = fresh_copy(model, input_shape)
  tf.train.Checkpoint(model=copy).read(prefix).assert_consumed()
  return copy


def clone(model, input_shape, tmp_path):
  del tmp_path
  copy = tf_keras.models.clone_model(model)
  copy.build(input_shape)
  copy.set_weights(model.get_weights())
  return copy


FAST = {'keras': keras_file, 'weights.h5': weights_h5, 'h5 weights': legacy_h5_weights,
        'h5 model': legacy_h5_model, 'tf checkpoint': tf_checkpoint, 'clone_model': clone}
SAVED_MODEL = {'keras SavedModel': keras_saved_model, 'tf.saved_model': tf_saved_model}


def variables(model):
  return model.weights if hasattr(model, 'weights') else model.variables


def assert_unique_names(model):
  names = [v.name for v in variables(model)]
  assert len(set(names)) == len(names), sorted(n for n in names if names.count(n) > 1)


def assert_same_model(loaded, model, images):
  """Same number of weights, same values, unique names, outputs equal to 1e-6."""
  got, want = variables(loaded), model.weights
  assert len(got) == len(want)
  assert_unique_names(loaded)
  assert sorted(v.shape.as_list() for v in got) == sorted(v.shape.as_list() for v in want)
  expected, actual = model(images), loaded(images)
  tf.nest.assert_same_structure(expected, actual)
  for e, a in zip(tf.nest.flatten(expected), tf.nest.flatten(actual)):
    np.testing.assert_allclose(a.numpy(), e.numpy(), rtol=0, atol=1e-6)
