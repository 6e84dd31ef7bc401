"""Run an As-ViT experiment the way Model Garden's `official/vision/train.py` does, with the
re-tokenization trainer and our checks before anything is built.

`parse_configuration` reads experiment + YAML files + overrides and validates them;
`run_experiment` builds the strategy, the task and an `AsViTTrainer`, then hands over to
`official.core.train_lib.run_experiment` (checkpoints, summaries, resume: all Model Garden's);
`build_trained_model` rebuilds a trained classifier from its `params.yaml` and a checkpoint,
at the schedule's final tokenization.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

from absl import logging
import tensorflow as tf
import tf_keras
import yaml

from official.common import distribute_utils
from official.core import config_definitions as cfg
from official.core import exp_factory
from official.core import task_factory
from official.core import train_lib
from official.core import train_utils
from official.modeling import performance

from asvit_tf.errors import UserInputError
from asvit_tf.garden import checkpoints
from asvit_tf.garden import registry_imports  # noqa: F401  # pylint: disable=unused-import
from asvit_tf.garden.configs import validate_experiment
from asvit_tf.garden.trainer import AsViTTrainer

MODES = ('train', 'eval', 'train_and_eval', 'continuous_eval', 'continuous_train_and_eval',
         'train_and_post_eval')


def seed_training(seed: Optional[int]):
  """Makes the training of this process a function of `seed`; None leaves it unseeded (Model
  Garden's and the authors' behaviour).

  Seeds Python's `random` (Model Garden's input reader draws its file-shuffle seed from it),
  NumPy and TensorFlow's global seed (the initialisers, the tf.data shuffles, dropout and drop
  path draw their op seeds from it), and turns on TensorFlow's op determinism, without which
  parallel tf.data stages and multi-threaded kernels may reorder float sums. Call it before
  anything is built.
  """
  if seed is None:
    return
  if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
    raise UserInputError(f'`seed` must be an integer in [0, 2**32), got {seed!r}')
  tf_keras.utils.set_random_seed(seed)
  tf.config.experimental.enable_op_determinism()
  logging.info('training seeded with %d (op determinism on)', seed)


def check_config_files(config_files: Sequence[str]):
  """FileNotFoundError (one line) for a file of `config_files` that does not exist."""
  for path in config_files or ():
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f'`config_files`: {path} does not exist')


def parse_configuration(experiment: str, config_files: Sequence[str] = (),
                        params_override: str = '', tpu: str = '',
                        tf_data_service: str = '') -> cfg.ExperimentConfig:
  """The locked, validated experiment config; ValueError (one line) on any config error."""
  try:
    exp_factory.get_exp_config(experiment)
  except LookupError:
    raise UserInputError(f'config error: unknown experiment {experiment!r}') from None
  check_config_files(config_files)
  options = train_utils.ParseConfigOptions(
      experiment=experiment, config_file=list(config_files or []), tpu=tpu or '',
      tf_data_service=tf_data_service or '', params_override=params_override or '')
  try:
    params = train_utils.parse_configuration(options, print_return=False)
  except LookupError as e:
    # Model Garden raises KeyError for an unknown config key, LookupError for an unknown
    # experiment.
    raise UserInputError(f'config error: {e.args[0] if e.args else e}') from None
  except tf.errors.NotFoundError as e:  # a config file (or override) that is not a file
    raise UserInputError(f'config error: {e.message}') from None
  except yaml.YAMLError as e:  # a config file that is not YAML
    raise UserInputError(f'config error: a file of `config_files` does not parse as YAML: '
                         f'{" ".join(str(e).split())}') from None
  except (AttributeError, TypeError, ValueError) as e:
    raise UserInputError(f'config error: {e}') from None
  validate_experiment(params)
  return params


def build_trained_model(config_file: str, checkpoint: Optional[str] = None,
                        experiment: str = 'asvit_imagenet', params_override: str = ''):
  """(model, params) of a training run: the classifier of `config_file` (a run's params.yaml)
  with the weights of `checkpoint` (a ckpt-N prefix or a model_dir: its latest one).

  The model has the backbone's `stride`/`dilation`, which a valid schedule ends with, so it
  is the final tokenization of the run; optimizer slots in the checkpoint are ignored.
  """
  params = parse_configuration(experiment, [config_file], params_override)
  model = task_factory.get_task(params.task).build_model()
  if checkpoint:
    checkpoints.restore_model(model, checkpoint)
  return model, params


def build_strategy(params: cfg.ExperimentConfig) -> tf.distribute.Strategy:
  runtime = params.runtime
  return distribute_utils.get_distribution_strategy(
      distribution_strategy=runtime.distribution_strategy,
      all_reduce_alg=runtime.all_reduce_alg, num_gpus=runtime.num_gpus,
      tpu_address=runtime.tpu)


def run_experiment(params: cfg.ExperimentConfig, model_dir: str, mode: str,
                   strategy: Optional[tf.distribute.Strategy] = None,
                   train_actions: Optional[List] = None, eval_actions: Optional[List] = None,
                   run_post_eval: bool = False):
  """Trains and/or evaluates; returns Model Garden's (model, eval_logs).

  A run whose `model_dir` holds checkpoints resumes from the latest one, with the tokenization
  the schedule gives for its step.
  """
  if mode not in MODES:
    raise UserInputError(f'unknown `mode` {mode!r}; one of {", ".join(MODES)}')
  validate_experiment(params)
  if 'train' in mode:
    # Pure eval jobs do not write it: they may run beside the train job.
    train_utils.serialize_config(params, model_dir)
  if params.runtime.mixed_precision_dtype:
    performance.set_mixed_precision_policy(params.runtime.mixed_precision_dtype)
  strategy = strategy or build_strategy(params)
  logging.info('strategy %s with %d replicas', type(strategy).__name__,
               strategy.num_replicas_in_sync)
  evaluate = 'eval' in mode or run_post_eval
  with strategy.scope():
    task = task_factory.get_task(params.task, logging_dir=model_dir)
    trainer = train_utils.create_trainer(
        params, task, train='train' in mode, evaluate=evaluate,
        checkpoint_exporter=train_lib.maybe_create_best_ckpt_exporter(params, model_dir),
        trainer_cls=AsViTTrainer)
  return train_lib.run_experiment(
      distribution_strategy=strategy, task=task, mode=mode, params=params,
      model_dir=model_dir, run_post_eval=run_post_eval, train_actions=train_actions,
      eval_actions=eval_actions, trainer=trainer)
