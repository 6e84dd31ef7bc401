"""`asvit export`: the SavedModel takes uint8 images of any batch and equals the Keras model."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from official.vision.modeling import factory
from official.vision.ops import preprocess_ops

from asvit_tf.errors import UserInputError
from asvit_tf.serving import export as export_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_YAML = os.path.join(REPO, 'official_configs', 'asvit_tiny_cpu.yaml')
OVERRIDE = ('{"task": {"model": {"num_classes": 5, "backbone": {"asvit": '
            '{"arch": "4,2,2|2,1,2|2,1,2|2,1,2|16,8"}}}}}')


def _keras_model(params, checkpoint):
  size = list(params.task.model.input_size)
  model = factory.build_classification_model(
      tf_keras.layers.InputSpec(shape=[None] + size), params.task.model)
  tf.train.Checkpoint(model=model).read(checkpoint).expect_partial()
  return model


def _normalise(images_uint8):
  return preprocess_ops.normalize_image(tf.cast(images_uint8, tf.float32),
                                        offset=preprocess_ops.MEAN_RGB,
                                        scale=preprocess_ops.STDDEV_RGB)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny classifier's checkpoint, as training leaves it (weights moved off their init)."""
  root = tmp_path_factory.mktemp('export')
  params = export_lib.load_params('asvit_imagenet', [TINY_YAML], OVERRIDE)
  model = factory.build_classification_model(
      tf_keras.layers.InputSpec(shape=[None, 32, 32, 3]), params.task.model)
  model(tf.zeros([1, 32, 32, 3]))
  rng = np.random.default_rng(0)
  for w in model.weights:
    w.assign(w + rng.normal(scale=0.05, size=w.shape).astype('float32'))
  prefix = tf.train.Checkpoint(model=model).save(str(root / 'model' / 'ckpt'))
  return params, root, prefix


@pytest.mark.slow
def test_export_matches_keras_for_any_batch(trained):
  params, root, prefix = trained
  out = str(root / 'saved')
  export_lib.export(params, str(root / 'model'), out)  # a model_dir: its latest checkpoint
  loaded = tf.saved_model.load(out)
  serve = loaded.signatures['serving_default']
  spec = serve.structured_input_signature[1]['inputs']
  # any shape: the signature checks rank and channels itself, with a message naming them
  assert spec.dtype == tf.uint8 and spec.shape.rank is None
  keras = _keras_model(params, prefix)
  rng = np.random.default_rng(1)
  for batch in (1, 3):
    images = rng.integers(0, 256, size=(batch, 32, 32, 3), dtype=np.uint8)
    logits = serve(inputs=tf.constant(images))['logits'].numpy()
    expected = keras(_normalise(images), training=False).numpy()
    assert logits.shape == (batch, 5)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_export_uses_the_final_tokenization(trained):
  params, root, prefix = trained
  phases = params.task.model.backbone.asvit.retokenization
  assert phases[0].stride == 16 and phases[-1].stride == 4
  serve = tf.saved_model.load(export_lib.export(params, prefix, str(root / 'final'))) \
      .signatures['serving_default']
  images = np.random.default_rng(2).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
  logits = serve(inputs=tf.constant(images))['logits'].numpy()
  keras = _keras_model(params, prefix)
  final = keras(_normalise(images), training=False).numpy()
  keras.backbone.set_tokenization(16, 2)
  coarse = keras(_normalise(images), training=False).numpy()
  np.testing.assert_allclose(logits, final, rtol=1e-4, atol=1e-4)
  assert not np.allclose(logits, coarse, atol=1e-3)


@pytest.mark.slow
def test_signature_checks_the_shape_and_takes_an_empty_batch(trained):
  params, root, _ = trained
  serve = tf.saved_model.load(export_lib.export(params, str(root / 'model'),
                                                str(root / 'checked'))) \
      .signatures['serving_default']
  expected = r'inputs must be uint8 images of shape \[batch, height, width, 3\]'
  for shape in ((32, 3), (2, 32, 32), (2, 32, 32, 1), (2, 32, 32, 4), (1, 2, 32, 32, 3)):
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected) as info:
      serve(inputs=tf.zeros(shape, tf.uint8))
    assert '[' + ' '.join(str(d) for d in shape) + ']' in str(info.value)  # the shape given
  out = serve(inputs=tf.zeros([0, 32, 32, 3], tf.uint8))
  assert out['logits'].shape == (0, 5) and out['probs'].shape == (0, 5)
  # other image sizes still work: Model Garden's module resizes them
  assert serve(inputs=tf.zeros([2, 20, 24, 3], tf.uint8))['logits'].shape == (2, 5)


@pytest.mark.slow
def test_export_errors(trained, tmp_path):
  params, root, _ = trained
  empty = tmp_path / 'empty'
  empty.mkdir()
  for missing in (empty, tmp_path / 'nope' / 'ckpt-1'):
    with pytest.raises(UserInputError, match=f"no checkpoint at '{missing}'"):
      export_lib.export(params, str(missing), str(tmp_path / 'x'))
  assert not (tmp_path / 'x').exists()   # refused before anything is written
  with pytest.raises(ValueError, match='`input_type` must be one of'):
    export_lib.export(params, str(root / 'model'), str(tmp_path / 'x'), input_type='jpeg')
  with pytest.raises(ValueError, match="unknown experiment 'asvit_nonexistent'"):
    export_lib.load_params('asvit_nonexistent', [])
  with pytest.raises(ValueError, match='config error'):
    export_lib.load_params('asvit_imagenet', [TINY_YAML], '{"task": {"modle": 1}}')
  with pytest.raises(ValueError, match='arch'):
    export_lib.load_params('asvit_imagenet', [TINY_YAML],
                           '{"task": {"model": {"backbone": {"asvit": {"arch": "asvit_huge"}}}}}')
  # a config of the other experiment: one line, not a KeyError
  with pytest.raises(UserInputError, match=r'config error: .*\(is it a config of '
                                           r'cascadercnn_asvit_coco\?\)'):
    export_lib.load_params('cascadercnn_asvit_coco', [TINY_YAML])


@pytest.mark.slow
def test_cli_bad_input_is_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'asvit_tf.cli.main', 'export', '--experiment=asvit_imagenet',
       f'--config_file={tmp_path}/missing.yaml', f'--export_dir={tmp_path}/out'],
      capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  lines = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert lines == [f'error: --config_file: {tmp_path}/missing.yaml does not exist']
