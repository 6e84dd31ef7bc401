"""Saving and loading an AsViT in every Keras format keeps every weight (issue 14).

The variants are tested with their own kernels, splits, expansions, depths and heads at width
C=8 (the real widths only make the files bigger); images are 32 px.
"""
import dataclasses
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from asvit_tf import arch
from asvit_tf import models
from tests.models import _saving

SIZE = 32
INPUT_SHAPE = (None, SIZE, SIZE, 3)
VARIANTS = ('asvit_seed', 'asvit_small', 'asvit_base', 'asvit_large')
TOKENIZATIONS = ((4, 1), (8, 2))
DATA = pathlib.Path(__file__).parent / 'data'


def _narrow(variant):
  return dataclasses.replace(arch.as_topology(variant), width=8)


def _images(seed=0):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.normal(size=(2, SIZE, SIZE, 3)).astype('float32'))


def _model(variant, tokenization):
  model = models.AsViT(_narrow(variant), num_classes=5, drop_path_rate=0.1)
  model.set_tokenization(*tokenization)
  model(_images())
  return model


def _fast_cases():
  """Every fast format for every variant, half of them re-tokenized; the Functional wrapper
  that `.h5` needs takes 10-20 s to trace, so beyond the smallest variant it counts as slow."""
  for fmt in sorted(_saving.FAST):
    for variant, tokenization in zip(VARIANTS, TOKENIZATIONS * 2):
      slow = fmt == 'h5 model' and variant != 'asvit_seed'
      yield pytest.param(fmt, variant, tokenization, marks=[pytest.mark.slow] if slow else [],
                         id=f'{fmt}-{variant}-stride{tokenization[0]}')


@pytest.mark.slow
@pytest.mark.parametrize('fmt, variant, tokenization', _fast_cases())
def test_every_format_keeps_every_weight(fmt, variant, tokenization, tmp_path):
  model = _model(variant, tokenization)
  assert models.count_params(model) == models.estimate_params(_narrow(variant), 5)
  loaded = _saving.FAST[fmt](model, INPUT_SHAPE, tmp_path)
  _saving.assert_same_model(loaded, model, _images(1))
  if fmt != 'tf checkpoint':   # a checkpoint holds weights, not the config
    assert loaded.tokenization == tokenization


# tf_keras traces every layer's call for a SavedModel: 20-75 s a model on a busy 2-core CPU.
# asvit_small and asvit_base have asvit_large's kernels, splits, expansions and heads and
# fewer blocks: the seed (one block a stage) and large (several in every stage) cover them.
@pytest.mark.slow
@pytest.mark.parametrize('variant, tokenization', [('asvit_seed', (8, 2)), ('asvit_large', (4, 1))],
                         ids=['asvit_seed-stride8', 'asvit_large-stride4'])
@pytest.mark.parametrize('fmt', sorted(_saving.SAVED_MODEL))
def test_saved_model_keeps_every_weight(fmt, variant, tokenization, tmp_path):
  model = _model(variant, tokenization)
  loaded = _saving.SAVED_MODEL[fmt](model, INPUT_SHAPE, tmp_path)
  _saving.assert_same_model(loaded, model, _images(1))


@pytest.mark.parametrize('variant', VARIANTS)
def test_weight_names_are_unique_and_readable(variant):
  model = models.AsViT(_narrow(variant), num_classes=5)
  model(_images())
  _saving.assert_unique_names(model)
  names = {w.name for w in model.weights}
  assert 'asvit/encoder/stage1_block1/attn/qkv/kernel:0' in names
  assert 'asvit/encoder/stage4_block1/mlp/fc2/bias:0' in names
  assert 'asvit/encoder/patch_embed/norm/gamma:0' in names
  assert 'asvit/encoder/merge3/reduction/kernel:0' in names
  depths = _narrow(variant).depths
  blocks = {n.split('/')[2] for n in names if '_block' in n}
  assert blocks == {f'stage{i + 1}_block{j + 1}' for i, d in enumerate(depths)
                    for j in range(d)}


def test_build_and_call_give_the_same_weights_in_the_same_order():
  built = models.AsViT(_narrow('asvit_small'), num_classes=5)
  built.build(INPUT_SHAPE)
  called = models.AsViT(_narrow('asvit_small'), num_classes=5)
  called(_images())
  assert [w.name for w in built.weights] == [w.name for w in called.weights]
  assert [w.shape for w in built.weights] == [w.shape for w in called.weights]


def test_checkpoint_of_the_nested_stages_still_loads():
  """tests/models/data/stages_checkpoint was written by the code of commit 160405b, whose
  blocks were reachable only as `encoder/stages/i/j` (tf.train.Checkpoint(model=...) of
  AsViT('2,2,1,2|2,1,1|2,1,1|2,1,1|8,4', num_classes=3), logits of sin(0..12287) images)."""
  prefix = str(DATA / 'stages_checkpoint' / 'ckpt')
  model = models.AsViT('2,2,1,2|2,1,1|2,1,1|2,1,1|8,4', num_classes=3)
  model.build(INPUT_SHAPE)
  tf.train.Checkpoint(model=model).read(prefix).assert_consumed()
  old_key = 'model/encoder/stages/0/1/attn/qkv/kernel/.ATTRIBUTES/VARIABLE_VALUE'
  old = tf.train.load_variable(prefix, old_key)
  np.testing.assert_array_equal(model.encoder.stage1_block2.attn.qkv.kernel.numpy(), old)
  images = tf.reshape(tf.sin(tf.range(2 * SIZE * SIZE * 3, dtype=tf.float32)), [2, SIZE, SIZE, 3])
  np.testing.assert_allclose(model(images).numpy(), np.load(DATA / 'stages_checkpoint' /
                                                            'logits.npy'), rtol=0, atol=1e-6)


@pytest.mark.parametrize('variant', ['asvit_seed', 'asvit_small'])  # all four: test_asvit.py
def test_create_model_returns_a_built_model(variant):
  model = models.create_model(variant, num_classes=10)
  assert model.built
  assert models.count_params(model) == models.estimate_params(variant, 10)
  lines = []
  model.summary(print_fn=lines.append)
  total = f'Total params: {models.estimate_params(variant, 10)} '
  assert any(line.startswith(total) for line in lines), lines[-5:]
  # No forward pass ran: the model has not seen an input yet.
  assert model.save_spec() is None
  _saving.assert_unique_names(model)


def test_create_model_without_an_image_size():
  model = models.create_model('asvit_seed', image_size=None, num_classes=3)
  assert model.built
  assert model(_images()).shape == (2, 3)


def test_features_alone_build_only_the_encoder():
  """The complexity measures call `features` on an unbuilt model and read its weights: those
  of the encoder, without the head's."""
  model = models.AsViT(_narrow('asvit_seed'), num_classes=5)
  model.features(_images())
  assert not model.built
  assert [v.name for v in model.trainable_variables] == [
      v.name for v in model.encoder.trainable_variables]
