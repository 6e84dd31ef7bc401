"""`asvit train` end to end on MNIST digits: re-tokenization mid-run, TensorBoard scalars, and
a run killed after a switch that resumes from its checkpoint with the right stride at once."""
import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from asvit_tf.garden import retokenization as retok
from asvit_tf.garden import train_lib
from tests.garden._training import REPO, TINY_YAML, asvit_env, tiny_override

SCHEDULE = ((0, 16, 2), (4, 8, 1), (80, 4, 1))  # a long stride-8 phase to kill the run in
TRAIN_STEPS = 100
TIMEOUT = 400


def _command(data_dir, model_dir):
  override = tiny_override(data_dir, train_steps=TRAIN_STEPS, steps_per_loop=2,
                           schedule=SCHEDULE,
                           trainer={'validation_interval': TRAIN_STEPS, 'max_to_keep': 50})
  return [sys.executable, '-m', 'asvit_tf.cli.main', 'train', '--experiment=asvit_imagenet',
          '--mode=train_and_eval', f'--config_file={TINY_YAML}', f'--model_dir={model_dir}',
          f'--params_override={override}']


def _checkpoint_steps(model_dir):
  return sorted(int(re.search(r'ckpt-(\d+)\.index$', p).group(1))
                for p in glob.glob(os.path.join(model_dir, 'ckpt-*.index')))


def _restored_step(model_dir):
  """The step a restart restores: the checkpoint state file's, -1 before the first."""
  latest = tf.train.latest_checkpoint(model_dir)
  return int(latest.rsplit('-', 1)[1]) if latest else -1


def _scalars(model_dir, tag):
  """{step: value} of a scalar in the train summaries of every run in model_dir."""
  out = {}
  for path in glob.glob(os.path.join(model_dir, 'train', 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          out[event.step] = float(tf.make_ndarray(value.tensor))
  return out


@pytest.mark.slow
def test_train_is_killed_after_a_switch_and_resumes(mnist_dir, tmp_path):
  model_dir = str(tmp_path / 'run')
  cmd = _command(mnist_dir, model_dir)
  with open(tmp_path / 'first.log', 'w') as log:
    first = subprocess.Popen(cmd, cwd=REPO, env=asvit_env(), stdout=log,
                             stderr=subprocess.STDOUT)
    try:
      deadline = time.time() + TIMEOUT
      # Kill it in the stride-8 phase, once a checkpoint past the first switch exists.
      while _restored_step(model_dir) < 6:
        assert first.poll() is None, (tmp_path / 'first.log').read_text()[-3000:]
        assert time.time() < deadline, 'no checkpoint in time'
        time.sleep(0.1)
      first.send_signal(signal.SIGKILL)
    finally:
      if first.poll() is None:
        first.kill()
      first.wait(timeout=60)
  # Not the newest index file: the kill can fall between writing ckpt-N and pointing the
  # checkpoint state file at it, and a restart restores what the state file names.
  resumed_at = _restored_step(model_dir)
  assert 6 <= resumed_at < 80, f'killed too late to test the resume: step {resumed_at}'

  second = subprocess.run(cmd, cwd=REPO, env=asvit_env(), capture_output=True, text=True,
                          timeout=TIMEOUT)
  log = second.stdout + second.stderr
  assert second.returncode == 0, log[-3000:]
  # Restored at step k of the stride-8 phase: switched before its first loop, not from 0.
  assert f'training until step {TRAIN_STEPS}' in log
  assert re.search(rf'train \| step:\s+{resumed_at} \| training until', log), log[-3000:]
  switches = re.findall(r're-tokenization for step (\d+): stride/dilation (\(\d+, \d+\)) -> '
                        r'(\(\d+, \d+\))', log)
  assert switches[0] == (str(resumed_at), '(4, 1)', '(8, 1)')
  assert switches[1] == ('80', '(8, 1)', '(4, 1)')
  assert _checkpoint_steps(model_dir)[-1] == TRAIN_STEPS
  # The final evaluation ran (any numpy repr).
  assert re.search(r"'accuracy': (np\.float32\()?[0-9.]+", log)

  # TensorBoard: tokens per image of every loop, over both runs.
  tokens = _scalars(model_dir, 'retokenization/tokens_per_image')
  for step, value in tokens.items():
    stride, _ = retok.tokenization_at(SCHEDULE, step - 1, (4, 1))
    assert value == (32 // stride) ** 2, (step, value)
  assert {4.0, 16.0, 64.0} <= set(tokens.values())

  # What export builds: the run's params.yaml and last checkpoint, at the final tokenization.
  model, params = train_lib.build_trained_model(os.path.join(model_dir, 'params.yaml'),
                                                model_dir)
  assert model.backbone.tokenization == (4, 1)
  trained = tf.train.load_variable(tf.train.latest_checkpoint(model_dir),
                                   'model/layer_with_weights-1/kernel/.ATTRIBUTES/VARIABLE_VALUE')
  assert model.layers[-1].kernel.shape == trained.shape
  assert abs(model.layers[-1].kernel.numpy() - trained).max() == 0
  assert model(tf.zeros([1] + params.task.model.input_size)).shape == (1, 10)
