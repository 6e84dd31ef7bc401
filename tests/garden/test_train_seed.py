"""`asvit train --seed=N`: the same seed gives the same run, bit for bit; another seed does not;
a bad seed is one line."""
import random

import numpy as np
import pytest
import tensorflow as tf
# pylint: disable-next=g-direct-tensorflow-import
from tensorflow.python.framework import config as tf_config  # is_op_determinism_enabled

from asvit_tf.errors import UserInputError
from asvit_tf.garden import train_lib
from tests.garden._training import TINY_YAML, run_asvit, tiny_override


def _train(data_dir, model_dir, seed):
  # One loop, one evaluation, one tokenization: the least work that still trains and evaluates.
  override = tiny_override(data_dir, train_steps=2, steps_per_loop=2, schedule=((0, 4, 1),))
  result = run_asvit(['train', '--experiment=asvit_imagenet', '--mode=train_and_eval',
                      f'--config_file={TINY_YAML}', f'--model_dir={model_dir}',
                      f'--params_override={override}', f'--seed={seed}'], timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  reader = tf.train.load_checkpoint(str(model_dir))
  weights = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
             if name.startswith('model/')}
  assert weights
  return weights, _validation_scalars(model_dir)


def _validation_scalars(model_dir):
  out = {}
  for path in tf.io.gfile.glob(str(model_dir / 'validation' / 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag in ('accuracy', 'validation_loss'):
          out[(event.step, value.tag)] = float(tf.make_ndarray(value.tensor))
  return out


@pytest.mark.slow
def test_same_seed_same_run_other_seed_other_run(mnist_dir, tmp_path):
  first, first_eval = _train(mnist_dir, tmp_path / 'a', seed=3)
  again, again_eval = _train(mnist_dir, tmp_path / 'b', seed=3)
  other, other_eval = _train(mnist_dir, tmp_path / 'c', seed=4)
  assert {step for step, _ in first_eval} == {2}  # the evaluation was logged
  assert first_eval == again_eval
  assert first.keys() == again.keys() == other.keys()
  for name in first:
    np.testing.assert_array_equal(first[name], again[name], err_msg=name)
  assert any(not np.array_equal(first[n], other[n]) for n in first)
  assert first_eval != other_eval


@pytest.mark.parametrize('seed', [-1, 2**32, 1.5, True])
def test_a_bad_seed_is_one_line(seed):
  with pytest.raises(UserInputError, match=r'`seed` must be an integer in \[0, 2\*\*32\), got'):
    train_lib.seed_training(seed)


def test_no_seed_changes_nothing():
  # Unseeded stays unseeded: no generator is reset, determinism stays as it was.
  random_state, numpy_state = random.getstate(), np.random.get_state()
  determinism = tf_config.is_op_determinism_enabled()
  train_lib.seed_training(None)
  assert random.getstate() == random_state
  assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state))
  assert tf_config.is_op_determinism_enabled() == determinism
