"""The benchmark's PiT: parameter counts checked by hand against the definition, the built
Keras model against the counts, and the measures' factory contract."""
import numpy as np
import pytest
import tensorflow as tf

from asvit_tf.models import pit
from asvit_tf.models import pit_size
from asvit_tf.models import size


def _hand_count(base_dim, mlp_ratio, depth, heads, classes=100, image=224, patch=16,
                stride=8, tokens=1):
  """Written out from pit_subnet.py, layer by layer, independently of pit_size."""
  w = [base_dim * h for h in heads]
  e = (image - patch) // stride + 1
  total = 3 * patch * patch * w[0] + w[0]          # conv_embedding (bias=True)
  total += w[0] * e * e + tokens * w[0]            # pos_embed, cls_token
  for i, d in enumerate(w):
    r = int(d * mlp_ratio)
    layer = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * r + r) + (r * d + d)
    total += depth[i] * layer
    if i + 1 < len(w):                              # conv_head_pooling: groups=d, Linear
      total += (w[i + 1] * 1 * 3 * 3 + w[i + 1]) + (d * w[i + 1] + w[i + 1])
  return total + 2 * w[-1] + tokens * (w[-1] * classes + classes)  # norm, head(s)


# Benchmark rows (the first two records of the shipped table and three more), with the
# count worked out by hand in docs/proxies.md for the first.
ARCHS = [
    ({'base_dim': 16, 'mlp_ratio': 6, 'depth': [2, 8, 4], 'num_heads': [2, 4, 4]}, 893828),
    ({'base_dim': 32, 'mlp_ratio': 4, 'depth': [1, 6, 6], 'num_heads': [2, 8, 8]}, None),
    ({'base_dim': 40, 'mlp_ratio': 8, 'depth': [3, 8, 6], 'num_heads': [8, 8, 8]}, None),
    ({'base_dim': 24, 'mlp_ratio': 2, 'depth': [1, 4, 2], 'num_heads': [2, 2, 8]}, None),
    ({'base_dim': 40, 'mlp_ratio': 2, 'depth': [2, 4, 4], 'num_heads': [2, 4, 8]}, None),
]


@pytest.mark.parametrize('arch,by_hand', ARCHS)
def test_param_counts_equal_the_definition(arch, by_hand):
  a = pit_size.from_dict(arch)
  expected = _hand_count(arch['base_dim'], arch['mlp_ratio'], arch['depth'], arch['num_heads'])
  if by_hand is not None:
    assert expected == by_hand
  assert pit_size.count_params(a) == expected


def test_published_pit_sizes():
  # timm's model cards (ImageNet, 1000 classes, 224 px) for the original PiTs.
  ti = pit_size.PitArch(32, 4, (2, 6, 4), (2, 4, 8))
  assert round(pit_size.count_params(ti, num_classes=1000) / 1e6, 2) == 4.85
  assert round(pit_size.count_macs(ti, num_classes=1000) / 1e9, 1) == 0.7
  assert round(pit_size.count_params(ti, num_classes=1000, num_tokens=2) / 1e6, 1) == 5.1
  b = pit_size.PitArch(64, 4, (3, 6, 4), (4, 8, 16))
  assert round(pit_size.count_params(b, num_classes=1000, patch=14, stride=7) / 1e6, 1) == 73.8
  assert round(pit_size.count_macs(b, num_classes=1000, patch=14, stride=7) / 1e9, 1) == 12.4
  s = pit_size.PitArch(48, 4, (2, 6, 4), (3, 6, 12))
  assert round(pit_size.count_params(s, num_classes=1000) / 1e6, 1) == 23.5


@pytest.mark.parametrize('arch', [ARCHS[0][0], ARCHS[3][0]])
def test_built_model_has_the_counted_parameters_and_shapes(arch):
  a = pit_size.from_dict(arch)
  model = pit.PiT(a)
  logits = model(tf.zeros([2, 224, 224, 3]))
  assert logits.shape == (2, 100)
  assert size.count_params(model) == pit_size.count_params(a)
  assert model.features(tf.zeros([2, 224, 224, 3]), training=True).shape == (2, a.widths[-1])
  distilled = pit.PiT(a, num_tokens=2)
  distilled(tf.zeros([1, 224, 224, 3]))
  assert size.count_params(distilled) == pit_size.count_params(a, num_tokens=2)


def test_macs_by_hand_for_one_stage():
  # One stage, d=32, r=64 (mlp 2), 32 px: grid (32-16)//8+1 = 3, tokens 10, 10 classes.
  a = pit_size.PitArch(16, 2, (1,), (2,))
  embed = 3 * 3 * 32 * 3 * 16 * 16
  block = 10 * (3 * 32 * 32 + 32 * 32 + 2 * 32 * 64) + 2 * 10 * 10 * 32
  assert pit_size.count_macs(a, image_size=32, num_classes=10) == embed + block + 32 * 10


def test_pooling_conv_reads_one_input_channel_per_output_channel():
  layer = pit.PitPooling(2, 4)
  grid = tf.random.normal([1, 5, 5, 2], seed=1)
  out, _ = layer(grid, tf.zeros([1, 1, 2]))
  assert out.shape == (1, 3, 3, 4)
  kernel = layer.conv_kernel.numpy()  # [3, 3, in, multiplier]
  padded = np.pad(grid.numpy()[0], [[1, 1], [1, 1], [0, 0]])
  # output channel j = 3 is input channel 1 with multiplier index 1 (PyTorch groups order)
  expected = (padded[0:3, 0:3, 1] * kernel[:, :, 1, 1]).sum() + layer.conv_bias.numpy()[3]
  assert out.numpy()[0, 0, 0, 3] == pytest.approx(expected, rel=1e-5)


def test_factory_switches_layer_norms_and_checks_the_input_size():
  factory = pit.pit_factory(ARCHS[3][0], image_size=32)
  with_ln, without = factory(True), factory(False)
  x = tf.random.normal([2, 32, 32, 3], seed=2)
  with_ln.features(x), without.features(x)
  norms = lambda m: [l for l in m._flatten_layers() if 'LayerNormalization' in type(l).__name__]
  assert norms(with_ln) and not norms(without)
  with pytest.raises(ValueError, match='built for 32x32 images'):
    with_ln.features(tf.zeros([1, 40, 40, 3]))


def test_bad_archs_name_the_field():
  with pytest.raises(ValueError, match='lacks the field.*num_heads'):
    pit_size.from_dict({'base_dim': 16, 'mlp_ratio': 2, 'depth': [1, 4, 2]})
  with pytest.raises(ValueError, match='multiple of the previous'):
    pit_size.from_dict({'base_dim': 16, 'mlp_ratio': 2, 'depth': [1, 4, 2],
                        'num_heads': [4, 2, 8]})
