"""The As-ViT model: shapes at several sizes and strides, serialisation, sizes, XLA."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from asvit_tf import arch
from asvit_tf import models

TINY = '4,2,2|2,1,2|2,1,2|2,1,2|16,8'            # C=8: fast everywhere
TINY_WIDE_SPLIT = '4,8,2,2|2,4,2,1|3,2,2,1|2,1,3,1|16,8'


def _images(batch, size, seed=0):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.normal(size=(batch, size, size, 3)).astype('float32'))


@pytest.mark.parametrize('size', [64, 96, 224, 256, 640])
def test_feature_maps_at_image_sizes(size):
  model = models.AsViT(TINY_WIDE_SPLIT, num_classes=7)
  maps = model.feature_maps(_images(1, size))
  assert sorted(maps) == ['2', '3', '4', '5']
  side = size // 4
  for i, level in enumerate('2345'):
    assert maps[level].shape == (1, side, side, min(1024, 8 * 2**i))
    side = -(-side // 2)
  assert model(_images(1, size)).shape == (1, 7)


@pytest.mark.parametrize('stride, dilation, grids', [
    (4, 1, [56, 28, 14, 7]), (8, 2, [28, 14, 7, 4]), (16, 5, [14, 7, 4, 2])])
def test_coarse_strides_give_odd_grids(stride, dilation, grids):
  model = models.AsViT(TINY, num_classes=3)
  model.set_tokenization(stride, dilation)
  maps = model.feature_maps(_images(1, 224))
  assert [maps[l].shape[1] for l in '2345'] == grids
  assert model(_images(2, 224)).shape == (2, 3)


def test_features_are_pooled_stage4_before_final_norm():
  model = models.AsViT(TINY, num_classes=3)
  x = _images(2, 64)
  feats = model.features(x)
  assert feats.shape == (2, 64)
  np.testing.assert_allclose(feats.numpy(),
                             tf.reduce_mean(model.feature_maps(x)['5'], [1, 2]).numpy(),
                             rtol=1e-6)


def test_set_tokenization_keeps_weights():
  model = models.AsViT(TINY, num_classes=3)
  x = _images(1, 64)
  model(x)
  before = {w.name: w.numpy().copy() for w in model.weights}
  model.set_tokenization(16, 5)
  assert model.tokenization == (16, 5)
  assert model.feature_maps(x)['2'].shape[1] == 4
  after = {w.name: w.numpy() for w in model.weights}
  assert before.keys() == after.keys()
  for name, value in before.items():
    np.testing.assert_array_equal(value, after[name])


def test_layer_norm_free_model():
  model = models.AsViT(TINY, num_classes=3, use_layer_norm=False)
  model(_images(1, 32))
  assert not any('norm' in w.name for w in model.weights)
  assert models.count_params(model) == models.estimate_params(TINY, 3, use_layer_norm=False)


def test_drop_path_rates_grow_linearly():
  assert models.drop_path_rates(5, 0.4) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
  model = models.AsViT('4,2,2,2|2,1,2,1|2,1,2,1|2,1,2,1|16,8', drop_path_rate=0.3)
  rates = [b.drop_path_rate for stage in model.encoder.stages for b in stage]
  assert rates == pytest.approx([0.0, 0.075, 0.15, 0.225, 0.3])


def test_config_round_trip():
  model = models.AsViT(TINY, num_classes=5, drop_path_rate=0.1, stride=8, dilation=2,
                       kernel_regularizer=tf_keras.regularizers.L2(1e-4))
  x = _images(2, 64)
  y = model(x)
  clone = models.AsViT.from_config(model.get_config())
  clone(x)
  clone.set_weights(model.get_weights())
  assert clone.get_config() == model.get_config()
  assert clone.tokenization == (8, 2)
  np.testing.assert_allclose(clone(x).numpy(), y.numpy(), rtol=1e-6, atol=1e-6)
  assert len(model.losses) == len(clone.losses) > 0


@pytest.mark.slow
def test_saved_model_round_trip(tmp_path):
  model = models.AsViT(TINY, num_classes=4)
  x = _images(3, 32)
  y = model(x).numpy()
  path = str(tmp_path / 'asvit')
  model.save(path)  # SavedModel format
  loaded = tf_keras.models.load_model(path)
  assert isinstance(loaded, models.AsViT)
  np.testing.assert_allclose(loaded(x).numpy(), y, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(loaded.features(x).numpy(), model.features(x).numpy(),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_xla_forward_matches_eager():
  model = models.AsViT(TINY_WIDE_SPLIT, num_classes=4)
  x = _images(2, 64)
  eager = model(x).numpy()
  compiled = tf.function(lambda images: model(images), jit_compile=True)
  np.testing.assert_allclose(compiled(x).numpy(), eager, rtol=1e-4, atol=1e-5)
  # The compiled function really is an XLA cluster.
  hlo = compiled.experimental_get_compiler_ir(x)(stage='hlo')
  assert 'HloModule' in hlo


@pytest.mark.parametrize('name, params, macs', [
    ('asvit_seed', 2.32e6, 0.49e9), ('asvit_small', 29.87e6, 5.90e9),
    ('asvit_base', 57.70e6, 12.52e9), ('asvit_base_seed2', 45.91e6, 7.62e9),
    ('asvit_large', 87.58e6, 22.36e9)])
@pytest.mark.slow
def test_reference_sizes(name, params, macs):
  model = models.create_model(name, image_size=32)
  assert models.count_params(model) == pytest.approx(params, rel=0.005)
  assert models.count_params(model) == models.estimate_params(name)
  assert models.count_macs(name, 224, 1000) == pytest.approx(macs, rel=0.005)


@pytest.mark.parametrize('text', [TINY, TINY_WIDE_SPLIT, '7,4,5,2|3,2,3,1|2,2,6,2|4,1,2,1|64,24'])
def test_estimated_params_equal_built_model(text):
  model = models.AsViT(text, num_classes=11)
  model(_images(1, 32))
  assert models.count_params(model) == models.estimate_params(text, 11)


def test_count_macs_by_hand_for_a_tiny_network():
  # 32 px, stride 4: grids 8, 4, 2, 1; widths 8, 16, 32, 64; heads 2, 4, 8, 16 (head_dim 4).
  t = arch.Topology.parse(TINY)
  emb = 64 * 4 * 4 * 3 * 8
  def block(tokens, d, e, window_tokens, windows):
    return tokens * (d * 3 * d + d * d + 2 * e * d * d) + windows * 2 * window_tokens**2 * d
  # stage 1: split 2 -> window 4 (16 tokens), 4 windows
  s1 = block(64, 8, 2, 16, 4)
  m2 = 16 * 2 * 2 * 8 * 16
  s2 = block(16, 16, 2, 16, 1)
  m3 = 4 * 4 * 16 * 32
  s3 = block(4, 32, 2, 4, 1)
  m4 = 1 * 4 * 32 * 64
  s4 = block(1, 64, 2, 1, 1)
  head = 64 * 64 + 64 * 10
  assert models.count_macs(t, 32, 10) == emb + s1 + m2 + s2 + m3 + s3 + m4 + s4 + head
  # the coarse grid of re-tokenization costs less
  assert models.count_macs(t, 32, 10, stride=8) < models.count_macs(t, 32, 10)


@pytest.mark.slow
def test_create_model_errors_and_names():
  assert {'asvit_seed', 'asvit_small', 'asvit_base', 'asvit_large'} <= set(models.model_names())
  # one table: every variant of arch.VARIANTS is a model of that topology, and no other
  assert set(models.model_names()) == set(arch.VARIANTS)
  for name in arch.VARIANTS:
    model = models.create_model(name, image_size=None, num_classes=3)
    assert model.topology == arch.as_topology(name)
  with pytest.raises(ValueError, match="unknown model 'asvit_tiny'"):
    models.create_model('asvit_tiny')
  with pytest.raises(ValueError, match='num_classes must be an integer >= 1'):
    models.AsViT(TINY, num_classes=0)


def test_count_params_needs_a_built_model():
  with pytest.raises(ValueError, match='not built'):
    models.count_params(models.AsViT(TINY))


# ---- window policies ----------------------------------------------------------------------
# TINY_WIDE_SPLIT has splits 8, 4, 2, 1: at 224 px (grids 56, 28, 14, 7) every window is 7.
@pytest.mark.parametrize('size, stride, dilation, grids, splits, fixed', [
    (224, 4, 1, [56, 28, 14, 7], [7, 7, 7, 7], [7, 7, 7, 7]),     # the reference size
    (320, 4, 1, [80, 40, 20, 10], [10, 10, 10, 10], [7, 7, 7, 7]),  # padded to 84, 42, 21, 14
    (100, 4, 1, [25, 13, 7, 4], [4, 4, 4, 4], [7, 7, 7, 4]),        # odd grids; 4 < 7: clipped
    (320, 8, 2, [40, 20, 10, 5], [5, 5, 5, 5], [4, 4, 4, 4]),       # re-tokenized: same pixels
    (320, 16, 5, [20, 10, 5, 3], [3, 3, 3, 3], [2, 2, 2, 2]),
])
def test_window_policies_give_expected_windows(size, stride, dilation, grids, splits, fixed):
  for policy, windows in (('splits', splits), ('fixed', fixed)):
    model = models.AsViT(TINY_WIDE_SPLIT, num_classes=3, window_policy=policy)
    model.set_tokenization(stride, dilation)
    maps = model.feature_maps(_images(1, size))
    assert [maps[l].shape[1:3] for l in '2345'] == [(g, g) for g in grids]
    got = [blocks[0].attn.window(g, g) for blocks, g in zip(model.encoder.stages, grids)]
    assert got == [(w, w) for w in windows]
    # the cost model uses the same windows
    assert models.size.stage_windows(TINY_WIDE_SPLIT, size, stride, policy) == got


def test_fixed_windows_follow_the_reference_size():
  model = models.AsViT(TINY_WIDE_SPLIT, window_policy='fixed', window_reference_size=320)
  assert [b[0].attn.fixed_window for b in model.encoder.stages] == [10, 10, 10, 10]
  model.set_tokenization(16, 5)  # grids 20, 10, 5, 3 at 320 px
  assert [b[0].attn.fixed_window for b in model.encoder.stages] == [3, 3, 3, 3]
  model.set_tokenization(4, 1)
  assert [b[0].attn.fixed_window for b in model.encoder.stages] == [10, 10, 10, 10]
  assert [b[0].attn.fixed_window for b in models.AsViT(TINY_WIDE_SPLIT).encoder.stages] == [
      None] * 4


@pytest.mark.parametrize('reference, stride, dilation', [(224, 4, 1), (224, 16, 5),
                                                         (100, 4, 1), (100, 8, 2)])
def test_fixed_equals_splits_at_the_reference_size(reference, stride, dilation):
  splits = models.AsViT(TINY_WIDE_SPLIT, num_classes=5, stride=stride, dilation=dilation)
  fixed = models.AsViT(TINY_WIDE_SPLIT, num_classes=5, stride=stride, dilation=dilation,
                       window_policy='fixed', window_reference_size=reference)
  x = _images(2, reference)
  y = splits(x).numpy()
  fixed(x)
  fixed.set_weights(splits.get_weights())
  np.testing.assert_allclose(fixed(x).numpy(), y, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fixed.feature_maps(x)['2'].numpy(),
                             splits.feature_maps(x)['2'].numpy(), rtol=1e-5, atol=1e-5)
  # elsewhere the windows differ, and so does stage 1's output with the same weights (by
  # little at init: the attention branch is small beside the residual)
  other = _images(2, reference + 96, seed=1)
  a, b = fixed.feature_maps(other)['2'].numpy(), splits.feature_maps(other)['2'].numpy()
  assert np.abs(a - b).max() > 1e-4 * np.abs(b).max()  # equal windows: equal to 1e-5


@pytest.mark.slow
def test_window_policy_round_trips_config_and_saved_model(tmp_path):
  model = models.AsViT(TINY, num_classes=4, window_policy='fixed', window_reference_size=32)
  x = _images(2, 72)  # grids 18, 9, 5, 3; windows 4, 4, 2, 1 (those of 32 px)
  y = model(x).numpy()
  config = model.get_config()
  assert (config['window_policy'], config['window_reference_size']) == ('fixed', 32)
  clone = models.AsViT.from_config(config)
  clone(x)
  clone.set_weights(model.get_weights())
  assert clone.get_config() == config
  np.testing.assert_allclose(clone(x).numpy(), y, rtol=1e-6, atol=1e-6)
  path = str(tmp_path / 'asvit')
  model.save(path)
  loaded = tf_keras.models.load_model(path)
  assert loaded.encoder.window_policy == 'fixed'
  assert [b[0].attn.fixed_window for b in loaded.encoder.stages] == [4, 4, 2, 1]
  np.testing.assert_allclose(loaded(x).numpy(), y, rtol=1e-6, atol=1e-6)


def test_window_policy_errors():
  with pytest.raises(ValueError, match="window_policy must be one of splits, fixed, got 'swin'"):
    models.AsViT(TINY, window_policy='swin')
  with pytest.raises(ValueError, match='window reference size must be >= 1 pixel, got 0'):
    models.AsViT(TINY, window_policy='fixed', window_reference_size=0)


def test_count_macs_knows_the_window_policy():
  # TINY at 80 px: grids 20, 10, 5, 3; widths 8, 16, 32, 64 (inner = width); one block each.
  # splits 2, 1, 1, 1 -> windows 10, 10, 5, 3. fixed at 32 px (grids 8, 4, 2, 1) -> 4, 4, 2, 1:
  # stage 2 pads 10 -> 12, stage 3 pads 5 -> 6, and qkv/proj run on the padded tokens.
  def attention(padded_side, window, d):
    """(qkv + proj MACs, attention matmul MACs) of one block on a padded square grid."""
    windows = (padded_side // window) ** 2
    return padded_side**2 * 4 * d * d, windows * 2 * window**4 * d
  splits = [attention(20, 10, 8), attention(10, 10, 16), attention(5, 5, 32), attention(3, 3, 64)]
  fixed = [attention(20, 4, 8), attention(12, 4, 16), attention(6, 2, 32), attention(3, 1, 64)]
  difference = sum(sum(f) - sum(s) for f, s in zip(fixed, splits))
  macs = lambda policy: models.count_macs(TINY, 80, 10, window_policy=policy,
                                          window_reference_size=32)
  assert macs('fixed') - macs('splits') == difference
  assert models.count_macs(TINY, 32, 10, window_policy='fixed',
                           window_reference_size=32) == models.count_macs(TINY, 32, 10)
  # As-ViT Large at 1024 px: the fixed windows (28, 28, 14, 7) cost a fifth of the splits'.
  large = lambda policy: models.count_macs('asvit_large', 1024, None, window_policy=policy)
  assert large('splits') == pytest.approx(2794.6e9, rel=1e-4)
  assert large('fixed') == pytest.approx(511.8e9, rel=1e-4)
