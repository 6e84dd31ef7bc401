"""The Model Garden `asvit` backbone in every Keras format, re-tokenized too (issue 14)."""
import dataclasses

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
  assert f'{model.name}/pre_logits/kernel:0' in names
