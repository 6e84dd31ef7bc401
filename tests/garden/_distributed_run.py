"""Subprocess of test_distributed.py: a few As-ViT training steps under one strategy.

  python -m tests.garden._distributed_run STRATEGY DATA_DIR INIT_CKPT MODEL_DIR OUT_JSON
STRATEGY: one_device | mirrored (2 logical CPUs) | multi_worker_mirrored (TF_CONFIG set by the
caller). Every run starts from the weights in INIT_CKPT (`write_init_checkpoint`): random
initialisation is not reproducible across strategies. Writes
{"losses": [...], "replicas": n, "tokenization": [...]} to OUT_JSON: the loss
of every step (steps_per_loop=1) from the train output, as the chief and the other workers
see it.

The data are read in a fixed order (no shuffle, no augmentation) so that a global batch of 8
holds the same digits under every strategy: worker i of 2 reads file i alone (cycle length 1;
Model Garden repeats the file list before interleaving, so a longer cycle would read one file
twice), a single pipeline alternates blocks of 4 from the 2 files (cycle 2, block 4), and 2
replicas on one worker take one block each.
"""
import json
import sys


def distributed_params(data_dir, strategy_name='one_device', init_checkpoint=''):
  """The experiment config of these runs: 4 steps, one per loop, stride 8 -> 4 at step 2."""
  from asvit_tf.garden import train_lib  # pylint: disable=g-import-not-at-top
  from tests.garden._training import TINY_YAML, tiny_override  # pylint: disable=g-import-not-at-top
  cycle = 1 if strategy_name == 'multi_worker_mirrored' else 2
  override = tiny_override(
      data_dir, train_steps=4, steps_per_loop=1, schedule=((0, 8, 1), (2, 4, 1)),
      runtime={'distribution_strategy': strategy_name},
      task={'init_checkpoint': init_checkpoint,
            'train_data': {'seed': 1, 'shuffle_buffer_size': 1, 'cycle_length': cycle,
                           'block_length': 4, 'deterministic': True},
            'model': {'backbone': {'asvit': {'drop_path_rate': 0.0}}}},
      # Plain SGD: Adam's first steps follow the sign of near-zero gradients, which summation
      # order can flip; SGD keeps the runs within float round-off of each other.
      trainer={'optimizer_config': {'optimizer': {'type': 'sgd', 'sgd': {'momentum': 0.9}},
                                    'learning_rate': {'cosine': {
                                        'initial_learning_rate': 0.5}}}})
  return train_lib.parse_configuration('asvit_imagenet', [str(TINY_YAML)], override)


def write_init_checkpoint(data_dir, path) -> str:
  """Builds the model of these runs from a fixed seed and saves its initial weights the way
  Model Garden's classification task restores `init_checkpoint`; returns the checkpoint
  path. The seed makes the runs' losses the same from one test run to the next."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  from official.core import task_factory  # pylint: disable=g-import-not-at-top
  params = distributed_params(data_dir)
  tf_keras.utils.set_random_seed(0)
  model = task_factory.get_task(params.task).build_model()
  return tf.train.Checkpoint(model=model).write(str(path))


def main(strategy_name, data_dir, init_checkpoint, model_dir, out_json):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if strategy_name == 'mirrored':
    # Before TensorFlow initialises its devices: one physical CPU as two logical ones.
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  from asvit_tf.garden import train_lib  # pylint: disable=g-import-not-at-top

  params = distributed_params(
      data_dir, 'one_device' if strategy_name == 'mirrored' else strategy_name,
      init_checkpoint)
  if strategy_name == 'mirrored':
    # Model Garden's 'mirrored' with no GPU is one CPU replica: build the strategy here.
    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
  else:
    strategy = train_lib.build_strategy(params)
  losses = []
  model, _ = train_lib.run_experiment(
      params, model_dir, 'train', strategy=strategy,
      train_actions=[lambda output: losses.append(float(output['training_loss']))])
  with open(out_json, 'w') as f:
    json.dump({'losses': losses, 'replicas': strategy.num_replicas_in_sync,
               'tokenization': list(model.backbone.tokenization)}, f)


if __name__ == '__main__':
  main(*sys.argv[1:6])
