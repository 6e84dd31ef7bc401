"""`asvit export`: a trained As-ViT classifier or detector as a SavedModel.

  asvit export --experiment=asvit_imagenet --config_file=MODEL_DIR/params.yaml \\
      --checkpoint_path=MODEL_DIR --export_dir=EXPORT_DIR

The signature `serving_default` takes uint8 images [batch, height, width, 3] of any batch size
(`--batch_size` pins one) and uses the final tokenization of the training schedule.
"""
from __future__ import annotations

from absl import flags

from asvit_tf.errors import UserInputError


def define_flags():
  """Defines the flags of this command (the dispatcher calls it before parsing)."""
  flags.DEFINE_string('experiment', 'asvit_imagenet',
                      'Experiment name: asvit_imagenet or cascadercnn_asvit_coco.')
  flags.DEFINE_multi_string('config_file', [], 'YAML config files (e.g. MODEL_DIR/params.yaml).')
  flags.DEFINE_string('params_override', '', 'Overrides: YAML/JSON text or a.b=1,c=2.')
  flags.DEFINE_string('checkpoint_path', '', 'A checkpoint or a model_dir (latest checkpoint).')
  flags.DEFINE_string('export_dir', None, 'Where the SavedModel is written.')
  flags.DEFINE_integer('batch_size', 0, 'Fixed batch size of the signature; 0: any.',
                       lower_bound=0)
  flags.DEFINE_enum('input_type', 'image_tensor', ['image_tensor', 'image_bytes', 'tf_example'],
                    'What the signature takes.')


FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise UserInputError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.export_dir:
    raise UserInputError('--export_dir is required')
  from asvit_tf.serving import export as export_lib  # pylint: disable=g-import-not-at-top
  params = export_lib.load_params(FLAGS.experiment, FLAGS.config_file, FLAGS.params_override)
  if not FLAGS.checkpoint_path:
    raise UserInputError('--checkpoint_path is required (a checkpoint or a model_dir)')
  path = export_lib.export(params, FLAGS.checkpoint_path, FLAGS.export_dir,
                           batch_size=FLAGS.batch_size or None, input_type=FLAGS.input_type)
  backbone = params.task.model.backbone.get()
  print(f'exported {FLAGS.experiment} ({backbone.arch}, tokenization stride {backbone.stride} '
        f'dilation {backbone.dilation}) to {path}')
