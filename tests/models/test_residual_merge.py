"""The residual merge (issue 21): ViT-ResNAS's shortcut across each patch merging.

Shapes at several sizes and odd grids, the shortcut's value, sizes against the built model,
serialisation (config, `.keras`, SavedModel, Model Garden config) and `asvit describe`. The
complexity measures on it: tests/complexity/test_residual_merge.py.
"""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from asvit_tf import models
from asvit_tf.cli import describe
from asvit_tf.layers import blocks
from tests.models import _saving

TINY = '4,2,2|2,1,2|2,1,2|2,1,2|16,8'            # C=8: fast everywhere
ODD = '5,4,2|3,2,3|2,2,2|4,1,2|16,8'             # even and odd merge kernels


def _images(batch, size, seed=0):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.normal(size=(batch, size, size, 3)).astype('float32'))


def _residual(arch=TINY, **kwargs):
  return models.AsViT(arch, merge='residual', **kwargs)


@pytest.mark.parametrize('size, grids', [(32, [8, 4, 2, 1]), (40, [10, 5, 3, 2]),
                                         (72, [18, 9, 5, 3]), (100, [25, 13, 7, 4])])
def test_residual_merge_keeps_the_grids_and_widths(size, grids):
  model = _residual(ODD, num_classes=3)
  maps = model.feature_maps(_images(1, size))
  assert [maps[level].shape[1:] for level in '2345'] == [
      (g, g, w) for g, w in zip(grids, (8, 16, 32, 64))]
  assert model(_images(1, size)).shape == (1, 3)


@pytest.mark.parametrize('rows, cols', [(6, 6), (7, 5), (1, 3)])
def test_shortcut_is_the_pooled_projection_added_to_the_merge(rows, cols):
  """The shortcut averages the real tokens of each 2×2 window (1 or 2 at an odd edge) and
  projects them; the merge's own branch is the plain merge's."""
  plain = blocks.PatchMerging(4, 6, 3)
  residual = blocks.PatchMerging(4, 6, 3, shortcut=True)
  x = tf.constant(np.random.default_rng(1).normal(size=(2, rows, cols, 4)), tf.float32)
  plain(x), residual(x)
  plain.set_weights(residual.get_weights()[:len(plain.get_weights())])
  xs = x.numpy()
  pooled = np.zeros((2, -(-rows // 2), -(-cols // 2), 4))
  for i in range(pooled.shape[1]):
    for j in range(pooled.shape[2]):
      pooled[:, i, j] = xs[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(axis=(1, 2))
  expected = plain(x).numpy() + pooled @ residual.shortcut_proj.kernel.numpy()
  np.testing.assert_allclose(residual(x).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_shortcut_is_initialised_like_the_other_dense_layers():
  layer = _residual().encoder.merges[0].shortcut_proj
  config = layer.kernel_initializer.get_config()
  assert type(layer.kernel_initializer) is tf_keras.initializers.RandomNormal
  assert (config['mean'], config['stddev']) == (0.0, 0.02)
  assert not layer.use_bias
  model = models.create_model('asvit_seed', merge='residual')
  std = np.std(model.encoder.merges[2].shortcut_proj.kernel.numpy())   # 128×256 draws
  assert std == pytest.approx(0.02, rel=0.02)


def test_plain_is_the_default_and_has_no_shortcut():
  model = models.AsViT(TINY, num_classes=5)
  model(_images(1, 32))
  assert model.encoder.merge == 'plain'
  assert all(m.shortcut_proj is None for m in model.encoder.merges)
  assert not any('shortcut' in w.name for w in model.weights)
  assert models.count_params(model) == models.estimate_params(TINY, 5)


@pytest.mark.parametrize('arch', [TINY, ODD, 'asvit_seed'])
def test_estimated_params_equal_the_built_residual_model(arch):
  model = _residual(arch, num_classes=11)
  model(_images(1, 32))
  widths = model.topology.stage_widths
  shortcuts = sum(a * b for a, b in zip(widths, widths[1:]))
  assert models.count_params(model) == models.estimate_params(arch, 11, merge='residual')
  assert (models.estimate_params(arch, 11, merge='residual')
          == models.estimate_params(arch, 11) + shortcuts)
  assert sum(int(np.prod(w.shape)) for w in model.weights if 'shortcut' in w.name) == shortcuts


@pytest.mark.parametrize('size, stride', [(32, 4), (40, 4), (72, 4), (100, 4), (72, 8)])
def test_macs_add_one_projection_per_merged_token(size, stride):
  """MACs of each shortcut: merged tokens × d_(i-1) × d_i (odd grids: ceil(n/2) a side)."""
  widths = (8, 16, 32, 64)
  grids = models.stage_grids(size, stride)
  extra = sum(r * c * widths[i - 1] * widths[i] for i, (r, c) in enumerate(grids) if i)
  assert (models.count_macs(ODD, size, 10, stride=stride, merge='residual')
          == models.count_macs(ODD, size, 10, stride=stride) + extra)
  model = _residual(ODD, num_classes=10, stride=stride)
  maps = model.feature_maps(_images(1, size))
  assert [tuple(maps[level].shape[1:3]) for level in '2345'] == grids


def test_merge_errors():
  with pytest.raises(ValueError, match="merge must be one of plain, residual, got 'swin'"):
    models.AsViT(TINY, merge='swin')
  with pytest.raises(ValueError, match="merge must be one of plain, residual, got 'res'"):
    models.count_macs(TINY, 32, merge='res')
  with pytest.raises(ValueError, match="`merge` must be one of plain, residual, got 'x'"):
    describe.format_table(TINY, 32, 10, merge='x')


def test_describe_shows_each_shortcut():
  table = describe.format_table(ODD, 72, 10, merge='residual')
  rows = {line.split()[0]: line.split() for line in table.splitlines()[3:]}
  assert [name for name in rows if name.startswith('shortcut')] == [
      'shortcut2', 'shortcut3', 'shortcut4']
  assert rows['shortcut3'][1:3] == ['5x5', '32']
  assert rows['shortcut3'][-4] == f'{16 * 32 / 1e6:.3f}'            # params, M
  assert rows['shortcut3'][-2] == f'{25 * 16 * 32 / 1e9:.4f}'       # MACs, G
  total = models.estimate_params(ODD, 10, merge='residual')
  assert rows['total'][-4] == f'{total / 1e6:.3f}'
  assert 'residual merge' in table.splitlines()[0]
  assert 'shortcut' not in describe.format_table(ODD, 72, 10)


def test_config_and_keras_file_round_trip(tmp_path):
  model = _residual(ODD, num_classes=4, drop_path_rate=0.1)
  x = _images(2, 40)
  y = model(x).numpy()
  config = model.get_config()
  assert config['merge'] == 'residual'
  clone = models.AsViT.from_config(config)
  clone(x)
  clone.set_weights(model.get_weights())
  assert clone.get_config() == config
  np.testing.assert_allclose(clone(x).numpy(), y, rtol=1e-6, atol=1e-6)
  loaded = _saving.keras_file(model, (None, 40, 40, 3), tmp_path)
  assert loaded.encoder.merge == 'residual'
  _saving.assert_same_model(loaded, model, x)


@pytest.mark.slow   # tf_keras traces every layer's call for a SavedModel
def test_saved_model_round_trip(tmp_path):
  model = _residual(num_classes=4)
  x = _images(3, 40)
  y = model(x).numpy()
  loaded = _saving.keras_saved_model(model, (None, 40, 40, 3), tmp_path)
  assert loaded.encoder.merge == 'residual'
  np.testing.assert_allclose(loaded(x).numpy(), y, rtol=1e-6, atol=1e-6)


def test_model_garden_backbone_config():
  from official.vision.modeling.backbones import factory  # pylint: disable=g-import-not-at-top
  from asvit_tf.garden import backbone as backbone_lib  # pylint: disable=g-import-not-at-top
  cfg = backbone_lib.Backbone(asvit=backbone_lib.AsViTConfig(arch=TINY, merge='residual'))
  assert backbone_lib.Backbone(**cfg.as_dict()).asvit.merge == 'residual'
  specs = tf_keras.layers.InputSpec(shape=[None, 40, 40, 3])
  net = factory.build_backbone(specs, cfg, None)
  assert net.encoder.merge == 'residual'
  x = _images(2, 40)
  out = net(x)
  assert models.count_params(net) == models.estimate_params(TINY, None, merge='residual') + (
      2 * 64 + 64 * 64 + 64)  # + the pre_logits head's LayerNorm and Dense(F=64)
  clone = backbone_lib.AsViTBackbone.from_config(net.get_config())
  clone(x)
  clone.set_weights(net.get_weights())
  assert clone.get_config() == net.get_config()
  np.testing.assert_allclose(clone(x)['5'].numpy(), out['5'].numpy(), rtol=1e-6, atol=1e-6)
  bad = backbone_lib.Backbone(asvit=backbone_lib.AsViTConfig(arch=TINY, merge='pool'))
  with pytest.raises(ValueError, match=r"task.model.backbone.asvit.merge must be one of "
                                       r"plain, residual, got 'pool'"):
    factory.build_backbone(specs, bad, None)


@pytest.mark.slow
def test_experiment_override_builds_the_residual_merge():
  """`task.model.backbone.asvit.merge` reaches the classifier `asvit train` builds; a bad
  value is one line naming the field."""
  from official.core import task_factory  # pylint: disable=g-import-not-at-top
  from asvit_tf.garden import train_lib  # pylint: disable=g-import-not-at-top
  from tests.garden._training import TINY_YAML  # pylint: disable=g-import-not-at-top
  params = train_lib.parse_configuration('asvit_imagenet', [str(TINY_YAML)],
                                         'task.model.backbone.asvit.merge=residual')
  backbone = task_factory.get_task(params.task).build_model().backbone
  assert backbone.encoder.merge == 'residual'
  assert all(m.shortcut_proj is not None for m in backbone.encoder.merges)
  with pytest.raises(ValueError, match="merge must be one of plain, residual, got 'pool'"
                     ) as info:
    train_lib.parse_configuration('asvit_imagenet', [str(TINY_YAML)],
                                  'task.model.backbone.asvit.merge=pool')
  assert '\n' not in str(info.value)
