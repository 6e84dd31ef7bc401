"""`asvit train`: Model Garden training of As-ViT with progressive re-tokenization.

The flags of Model Garden's `official/vision/train.py` (`--experiment --mode --model_dir
--config_file --params_override --tpu --tf_data_service --gin_file --gin_params`), with the
As-ViT registrations imported and the `AsViTTrainer` that applies the schedule. The config is
checked before anything is built: an unknown variant, an image side below a tokenization
stride (`asvit_tf.validation`), a network beyond an accelerator's memory or a bad schedule ends
the command with one line. `--seed=N` (ours) makes the run reproducible: the same seed and
config give the same weights and metrics. Example:

  asvit train --experiment=asvit_imagenet --mode=train_and_eval \\
      --config_file=official_configs/asvit_tiny_cpu.yaml --model_dir=/tmp/asvit_tiny
"""
from __future__ import annotations

import os

from absl import flags
import gin

from official.common import flags as tfm_flags
from official.core import train_utils

from asvit_tf.errors import UserInputError
from asvit_tf.garden import train_lib


def define_flags():
  """Defines the flags of this command (the dispatcher calls it before parsing)."""
  tfm_flags.define_flags()
  flags.adopt_module_key_flags(tfm_flags)  # --help of this command lists Model Garden's flags
  flags.DEFINE_integer(
      'seed', None, 'Seeds Python, NumPy, TensorFlow and tf.data and turns on op determinism, '
      'so the same seed and config give the same run; unset (default): unseeded, as Model '
      'Garden\'s trainer.')


FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise UserInputError(f'unexpected arguments {argv[1:]}; train takes only flags')
  for name in ('experiment', 'mode', 'model_dir'):
    if not FLAGS[name].value:
      raise UserInputError(f'--{name} is required')
  if os.path.exists(FLAGS.model_dir) and not os.path.isdir(FLAGS.model_dir):
    raise UserInputError(f'--model_dir {FLAGS.model_dir} is a file; give a directory (new or '
                         'of an earlier run of this experiment)')
  train_lib.seed_training(FLAGS.seed)
  gin.parse_config_files_and_bindings(FLAGS.gin_file, FLAGS.gin_params)
  params = train_lib.parse_configuration(
      FLAGS.experiment, FLAGS.config_file, FLAGS.params_override, FLAGS.tpu,
      FLAGS.tf_data_service)
  train_lib.run_experiment(params, FLAGS.model_dir, FLAGS.mode)
  train_utils.save_gin_config(FLAGS.mode, FLAGS.model_dir)
