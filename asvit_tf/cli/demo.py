"""`asvit demo`: run an exported detector on an image and write a PNG with its detections.

  asvit demo --saved_model=EXPORT_DIR --image=photo.png --output=detections.png
"""
from __future__ import annotations

import os

from absl import flags

from asvit_tf.errors import UserInputError


def define_flags():
  """Defines the flags of this command (the dispatcher calls it before parsing)."""
  flags.DEFINE_string('saved_model', None, 'Directory of a SavedModel from `asvit export`.')
  flags.DEFINE_string('image', None, 'Image file (PNG, JPEG, TIFF).')
  flags.DEFINE_string('output', 'detections.png', 'PNG to write.')
  flags.DEFINE_float('score_threshold', 0.3, 'Draw detections scoring at least this.')
  flags.DEFINE_list('class_names', [], 'Names of class ids 0, 1, ... (default: the ids).')


FLAGS = flags.FLAGS


def run(saved_model: str, image_path: str, output: str, score_threshold: float = 0.3,
        class_names=()):
  """Returns the selected detections (dict of numpy arrays) after writing `output`."""
  if not os.path.isdir(saved_model):
    raise FileNotFoundError(f'--saved_model {saved_model} is not a directory')
  if not os.path.isfile(image_path):
    raise FileNotFoundError(f'--image {image_path} does not exist')
  if not os.path.isfile(os.path.join(saved_model, 'saved_model.pb')):
    raise UserInputError(f'--saved_model {saved_model} is not a SavedModel (no saved_model.pb): '
                         'give the --export_dir of `asvit export`')
  from PIL import UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from asvit_tf.serving import draw  # pylint: disable=g-import-not-at-top
  try:
    image = draw.load_image(image_path)
  except UnidentifiedImageError:
    raise UserInputError(f'--image {image_path} is not an image file PIL can read (PNG, JPEG, '
                         'TIFF)') from None
  signatures = tf.saved_model.load(saved_model).signatures
  if 'serving_default' not in signatures:
    raise UserInputError(f'--saved_model {saved_model} has no serving_default signature: give '
                         'the --export_dir of `asvit export`')
  serve = signatures['serving_default']
  outputs = {k: v.numpy() for k, v in serve(inputs=tf.constant(image[None])).items()}
  if 'detection_boxes' not in outputs:
    raise UserInputError(f'{saved_model} is not a detector (outputs: {", ".join(outputs)})')
  detections = draw.select(outputs, score_threshold)
  draw.draw_detections(image, detections, list(class_names) or None).save(output)
  return detections


def main(argv):
  if len(argv) > 1:
    raise UserInputError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.saved_model or not FLAGS.image:
    raise UserInputError('--saved_model and --image are required')
  detections = run(FLAGS.saved_model, FLAGS.image, FLAGS.output, FLAGS.score_threshold,
                   FLAGS.class_names)
  print(f'{len(detections["boxes"])} detections with score >= {FLAGS.score_threshold} '
        f'drawn to {FLAGS.output}')
