"""The exported Cascade Mask R-CNN equals the Keras detector; `asvit demo` draws its output."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from official.vision.ops import anchor
from official.vision.ops import preprocess_ops

from asvit_tf.cli import demo
from asvit_tf.garden import detection
from asvit_tf.serving import draw
from asvit_tf.serving import export as export_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_YAML = os.path.join(REPO, 'official_configs', 'cascadercnn_asvit_tiny_cpu.yaml')
SIZE = 128


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  root = tmp_path_factory.mktemp('det')
  # The data of the tiny YAML need not exist to export: only the model part is checked.
  params = export_lib.load_params(detection.DETECTION_EXPERIMENT, [TINY_YAML],
                                  '{"task": {"annotation_file": "/nonexistent.json"}}')
  model = detection.build_detector(params)
  rng = np.random.default_rng(0)
  for w in model.trainable_weights:  # move off the initialisation, as training would
    w.assign(w + rng.normal(scale=0.02, size=w.shape).astype('float32'))
  tf.train.Checkpoint(model=model).save(str(root / 'model' / 'ckpt'))
  out = export_lib.export(params, str(root / 'model'), str(root / 'saved'))
  return params, model, out, root


def _keras_detections(params, model, image_uint8):
  m = params.task.model
  image = preprocess_ops.normalize_image(tf.cast(image_uint8, tf.float32),
                                         offset=preprocess_ops.MEAN_RGB,
                                         scale=preprocess_ops.STDDEV_RGB)
  anchors = anchor.build_anchor_generator(
      min_level=m.min_level, max_level=m.max_level, num_scales=m.anchor.num_scales,
      aspect_ratios=m.anchor.aspect_ratios, anchor_size=m.anchor.anchor_size)(
          image_size=[SIZE, SIZE])
  anchors = {k: v[None] for k, v in anchors.items()}
  return model.call(images=image[None], image_shape=tf.constant([[SIZE, SIZE]], tf.float32),
                    anchor_boxes=anchors, training=False)


@pytest.mark.slow
def test_exported_detector_matches_keras(exported):
  params, model, out, _ = exported
  serve = tf.saved_model.load(out).signatures['serving_default']
  image = np.random.default_rng(3).integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
  got = {k: v.numpy() for k, v in serve(inputs=tf.constant(image[None])).items()}
  want = {k: v.numpy() for k, v in _keras_detections(params, model, image).items()
          if k in ('detection_boxes', 'detection_scores', 'detection_classes',
                   'num_detections', 'detection_masks')}
  assert got['detection_masks'].ndim == 4
  assert int(got['num_detections'][0]) == int(want['num_detections'][0]) > 0
  n = int(got['num_detections'][0])
  for key in ('detection_boxes', 'detection_scores', 'detection_masks'):
    np.testing.assert_allclose(got[key][0, :n], want[key][0, :n], rtol=1e-3, atol=1e-3)
  np.testing.assert_array_equal(got['detection_classes'][0, :n],
                                want['detection_classes'][0, :n])


@pytest.mark.slow
def test_demo_writes_a_png_with_the_detections(exported, tmp_path):
  _, _, out, _ = exported
  image = np.zeros((SIZE, SIZE), np.uint16)  # a 16-bit grey image, like the nuclei TIFF
  image[30:60, 40:80] = 3000
  path = tmp_path / 'in.tif'
  Image.fromarray(image).save(path)
  png = tmp_path / 'out.png'
  dets = demo.run(out, str(path), str(png), score_threshold=0.0)
  assert len(dets['boxes']) > 0 and dets['masks'].shape[0] == len(dets['boxes'])
  drawn = np.array(Image.open(png))
  assert drawn.shape == (SIZE, SIZE, 3)
  plain = draw.load_image(str(path))
  assert (drawn != plain).any()  # boxes and masks were drawn on it


def test_draw_maps_boxes_back_to_the_original_image():
  outputs = {
      'num_detections': np.array([2]), 'detection_scores': np.array([[0.9, 0.1]]),
      'detection_classes': np.array([[1, 1]]),
      'detection_boxes': np.array([[[10., 20., 30., 40.], [0., 0., 5., 5.]]]),
      'image_info': np.array([[[64, 64], [128, 128], [2., 2.], [0, 0]]], np.float32)}
  sel = draw.select(outputs, 0.5)
  np.testing.assert_allclose(sel['boxes'], [[5., 10., 15., 20.]])
  np.testing.assert_array_equal(sel['classes'], [1])


@pytest.mark.slow
def test_demo_cli_errors(tmp_path):
  result = subprocess.run([sys.executable, '-m', 'asvit_tf.cli.main', 'demo',
                           f'--saved_model={tmp_path}/none', f'--image={tmp_path}/x.png'],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert [l for l in result.stderr.splitlines() if l.startswith('error:')] == [
      f'error: --saved_model {tmp_path}/none is not a directory']
