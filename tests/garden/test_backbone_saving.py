"""The Model Garden `asvit` backbone in every Keras format, re-tokenized too (issue 14)."""
import dataclasses
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from official.vision.modeling.backbones import factory

from asvit_tf import arch
from asvit_tf.garden import backbone as backbone_lib
from asvit_tf.models import size
from tests.models import _saving

SIZE = 32
INPUT_SHAPE = (None, SIZE, SIZE, 3)
DATA = pathlib.Path(__file__).parent / 'data'


def _images(seed=0):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.normal(size=(2, SIZE, SIZE, 3)).astype('float32'))


def _backbone(pre_logits=True, tokenization=(8, 2)):
  topology = dataclasses.replace(arch.as_topology('asvit_seed'), width=8)
  model = backbone_lib.AsViTBackbone(
      topology, input_specs=tf_keras.layers.InputSpec(shape=INPUT_SHAPE),
      drop_path_rate=0.1, pre_logits=pre_logits)
  model.set_tokenization(*tokenization)
  model(_images())
  return model


@pytest.mark.slow
@pytest.mark.parametrize('pre_logits', [True, False])
@pytest.mark.parametrize('fmt', sorted(_saving.FAST))
def test_every_format_keeps_every_weight(fmt, pre_logits, tmp_path):
  model = _backbone(pre_logits)
  loaded = _saving.FAST[fmt](model, INPUT_SHAPE, tmp_path)
  _saving.assert_same_model(loaded, model, _images(1))
  assert sorted(loaded(_images())) == sorted(model.output_specs)
  if fmt != 'tf checkpoint':   # a checkpoint holds weights, not the config
    assert loaded.tokenization == (8, 2)
    assert loaded.output_specs == model.output_specs


@pytest.mark.slow   # tf_keras traces every layer's call for a SavedModel: 30-100 s on a busy CPU
@pytest.mark.parametrize('fmt', sorted(_saving.SAVED_MODEL))
def test_saved_model_keeps_every_weight(fmt, tmp_path):
  model = _backbone()
  loaded = _saving.SAVED_MODEL[fmt](model, INPUT_SHAPE, tmp_path)
  _saving.assert_same_model(loaded, model, _images(1))


def test_builder_gives_a_built_backbone_with_unique_names():
  config = backbone_lib.Backbone(asvit=backbone_lib.AsViTConfig(arch='asvit_seed'))
  model = factory.build_backbone(tf_keras.layers.InputSpec(shape=[None, 64, 64, 3]), config,
                                 None)
  model.build([None, 64, 64, 3])
  topology = arch.as_topology('asvit_seed')
  d, f = topology.stage_widths[-1], topology.head_width
  head = 2 * d + d * f + f   # LayerNorm and Dense(F) of 'pre_logits'
  assert size.count_params(model) == size.estimate_params('asvit_seed', None) + head
  _saving.assert_unique_names(model)
  names = {w.name for w in model.weights}
  assert f'{model.name}/encoder/stage2_block1/attn/proj/kernel:0' in names
  assert f'{model.name}/head/pre_logits/kernel:0' in names


def test_checkpoint_of_the_separate_head_layers_still_loads():
  """tests/garden/data/pre_logits_checkpoint was written by the code of commit 87900ed, whose
  head was two layers of the backbone, `head_norm` and `pre_logits_dense`
  (tf.train.Checkpoint(model=...) of AsViTBackbone('2,2,1,2|2,1,1|2,1,1|2,1,1|8,4',
  pre_logits=True) with perturbed weights; 'pre_logits' of sin(0..6143) images)."""
  prefix = str(DATA / 'pre_logits_checkpoint' / 'ckpt')
  model = backbone_lib.AsViTBackbone('2,2,1,2|2,1,1|2,1,1|2,1,1|8,4', pre_logits=True)
  model.build(INPUT_SHAPE)
  tf.train.Checkpoint(model=model).read(prefix).assert_consumed()
  old = tf.train.load_variable(prefix, 'model/pre_logits_dense/kernel/.ATTRIBUTES/VARIABLE_VALUE')
  np.testing.assert_array_equal(model.head.pre_logits.kernel.numpy(), old)
  images = tf.reshape(tf.sin(tf.range(2 * SIZE * SIZE * 3, dtype=tf.float32)), [2, SIZE, SIZE, 3])
  np.testing.assert_allclose(model(images)['pre_logits'].numpy(),
                             np.load(DATA / 'pre_logits_checkpoint' / 'pre_logits.npy'),
                             rtol=0, atol=1e-6)
