"""The re-tokenization schedule and the `Model.fit` callback."""
import numpy as np
import pytest
import tf_keras

from asvit_tf.garden import retokenization as retok
from asvit_tf.models.asvit import AsViT
from tests.garden._training import TINY_ARCH


def test_tokenization_at_follows_phases():
  schedule = [(0, 16, 2), (10, 8, 1), (20, 4, 1)]
  assert retok.tokenization_at(schedule, 0, (4, 1)) == (16, 2)
  assert retok.tokenization_at(schedule, 9, (4, 1)) == (16, 2)
  assert retok.tokenization_at(schedule, 10, (4, 1)) == (8, 1)
  assert retok.tokenization_at(schedule, 10**6, (4, 1)) == (4, 1)
  assert retok.tokenization_at([], 5, (4, 1)) == (4, 1)


def test_published_schedule_uses_the_dilation_rule():
  # K1 = 4 gives the paper's numbers (16/d5, 8/d2); our seed's K1 = 8 gives 16/d2, 8/d1.
  assert [p[1:] for p in retok.published_schedule(300, 4)] == [(16, 5), (8, 2), (4, 1)]
  phases = retok.published_schedule(375300, 8, steps_per_loop=1251)
  assert phases == [(0, 16, 2), (100080, 8, 1), (165132, 4, 1)]
  assert all(p.start_step % 1251 == 0 for p in phases)


@pytest.mark.parametrize('schedule, kwargs, message', [
    ([(1, 16, 2), (4, 4, 1)], {}, 'must start at step 0'),
    ([(0, 16, 2), (0, 4, 1)], {}, 'must increase'),
    ([(0, 16, 2), (3, 4, 1)], {'steps_per_loop': 2}, 'not a multiple of trainer.steps_per_loop'),
    ([(0, 16, 2), (4, 8, 1)], {}, 'must agree'),
    ([(0, 16, 2), (4, 4, 1)], {'train_steps': 4}, 'starts at or after'),
    ([(0, 16, 0), (4, 4, 1)], {}, '>= 1'),
    ([(0, 16, 2), (4, 4, 1)], {'image_size': [8, 8]}, 'at least the tokenization stride 16'),
])
def test_validate_schedule_names_the_rule(schedule, kwargs, message):
  with pytest.raises(ValueError, match=message):
    retok.validate_schedule(schedule, (4, 1), **kwargs)


def test_validate_schedule_accepts_a_good_one():
  retok.validate_schedule([(0, 16, 2), (4, 8, 1), (8, 4, 1)], (4, 1), [32, 32], 2, 10)
  retok.validate_schedule([], (4, 1), [36, 36])
  # a side the stride does not divide is padded up, as in the model: accepted
  retok.validate_schedule([(0, 16, 2), (4, 4, 1)], (4, 1), [40, 30])


def test_tokenization_logs():
  logs = retok.tokenization_logs([32, 32], 8, 1)
  assert logs['retokenization/tokens_per_image'] == 16
  assert (logs['retokenization/grid_rows'], logs['retokenization/grid_cols']) == (4, 4)


@pytest.mark.slow
def test_callback_switches_during_fit():
  tf_keras.utils.set_random_seed(0)
  model = AsViT(TINY_ARCH, num_classes=10)
  model.compile(tf_keras.optimizers.Adam(1e-3),
                tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 255, (12, 32, 32, 3)).astype('float32')
  y = rng.integers(0, 10, 12)
  schedule = [(0, 16, 2), (4, 4, 1)]
  callback = retok.RetokenizationCallback(schedule, image_size=[32, 32])
  history = model.fit(x, y, batch_size=2, epochs=1, callbacks=[callback], verbose=0)
  # 6 steps in the epoch: the second switch lands mid-epoch, on the global step.
  assert callback.switches == [(0, 16, 2), (4, 4, 1)]
  assert model.tokenization == (4, 1)
  assert history.history['retokenization/tokens_per_image'] == [64]
  assert np.isfinite(history.history['loss']).all()


def test_callback_resumes_at_the_global_step():
  model = AsViT(TINY_ARCH, num_classes=10)
  model.compile(tf_keras.optimizers.Adam(1e-3), 'mse')
  model.optimizer.iterations.assign(3)  # as restored from a checkpoint after the first switch
  callback = retok.RetokenizationCallback([(0, 16, 2), (2, 8, 1), (50, 4, 1)])
  callback.set_model(model)
  callback.on_train_begin()
  assert callback.switches == [(3, 8, 1)]
  assert model.tokenization == (8, 1)
  callback.on_train_batch_begin(0)
  assert callback.switches == [(3, 8, 1)]


def test_find_retokenizable_rejects_other_models():
  with pytest.raises(ValueError, match='no As-ViT tokenization'):
    retok.find_retokenizable(tf_keras.Sequential([tf_keras.layers.Dense(2)]))
