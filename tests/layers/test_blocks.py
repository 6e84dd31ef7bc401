"""Shapes, semantics and serialisation of the As-ViT layers."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from asvit_tf import layers
from benchmarks import merge_speed


def _rand(*shape, seed=0):
  return tf.constant(np.random.default_rng(seed).normal(size=shape).astype('float32'))


@pytest.mark.parametrize('size, stride, dilation, grid', [
    (224, 4, 1, 56), (64, 4, 1, 16), (96, 4, 1, 24), (256, 4, 1, 64),
    (224, 8, 2, 28), (224, 16, 5, 14), (64, 16, 5, 4), (32, 8, 2, 4),
    (30, 4, 1, 8),  # not a multiple of the stride: padded up, never cropped
])
def test_patch_embedding_grid(size, stride, dilation, grid):
  layer = layers.PatchEmbedding(8, kernel=8, stride=stride, dilation=dilation)
  out = layer(_rand(2, size, size, 3))
  assert out.shape == (2, grid, grid, 8)


@pytest.mark.parametrize('jit', [False, True])
def test_strided_dilated_conv_matches_dilate_then_subsample(jit):
  """The embedding's conv equals a stride-1 dilated conv, subsampled by the stride."""
  layer = layers.PatchEmbedding(5, kernel=4, stride=8, dilation=2, use_layer_norm=False)
  x = _rand(1, 32, 32, 3)
  run = tf.function(layer, jit_compile=True) if jit else layer
  out = run(x).numpy()
  top, bottom = layers.embedding_padding(32, 4, 8, 2)
  padded = tf.pad(x, [[0, 0], [top, bottom], [top, bottom], [0, 0]])
  dense = tf.nn.conv2d(padded, layer.conv_kernel, strides=1, padding='VALID', dilations=2)
  reference = (dense[:, ::8, ::8, :] + layer.conv_bias).numpy()
  assert out.shape == (1, 4, 4, 5)
  np.testing.assert_allclose(out, reference[:, :4, :4], rtol=1e-5, atol=1e-5)


def test_set_tokenization_changes_grid_not_weights():
  layer = layers.PatchEmbedding(8, kernel=8)
  x = _rand(1, 64, 64, 3)
  assert layer(x).shape[1:3] == (16, 16)
  before = [w.numpy().copy() for w in layer.weights]
  layer.set_tokenization(16, layers.retokenization_dilation(8, 16))
  assert (layer.stride, layer.dilation) == (16, 2)
  assert layer(x).shape[1:3] == (4, 4)
  after = layer.weights
  assert len(after) == len(before)
  for a, b in zip(before, after):
    np.testing.assert_array_equal(a, b.numpy())
  with pytest.raises(ValueError, match='stride must be an integer >= 1, got 0'):
    layer.set_tokenization(0, 1)


def test_retokenization_dilation_rule():
  # docs/design.md §11: d = max(1, round((s-1)/(K1-1))); K1=4 gives the published 16/5 and 8/2.
  assert layers.retokenization_dilation(4, 16) == 5
  assert layers.retokenization_dilation(4, 8) == 2
  assert layers.retokenization_dilation(4, 4) == 1
  assert layers.retokenization_dilation(8, 16) == 2
  assert layers.retokenization_dilation(1, 16) == 1


@pytest.mark.parametrize('grid, split, window', [(8, 2, 4), (7, 2, 4), (4, 8, 1), (5, 1, 5),
                                                 (3, 2, 2)])
def test_split_attention_shapes(grid, split, window):
  layer = layers.SplitAttention(16, num_heads=2, split=split)
  assert layer.window(grid, grid) == (window, window)
  out = layer(_rand(2, grid, grid, 16))
  assert out.shape == (2, grid, grid, 16)


def test_split_attention_keeps_windows_apart():
  """A change in one window does not reach the tokens of another window."""
  layer = layers.SplitAttention(8, num_heads=2, split=2)
  x = _rand(1, 8, 8, 8).numpy()
  base = layer(tf.constant(x)).numpy()
  x[0, 0, 0] += 10.0  # top-left window (rows 0-3, cols 0-3)
  moved = layer(tf.constant(x)).numpy()
  changed = np.abs(moved - base).max(axis=-1)[0] > 1e-6
  assert changed[:4, :4].any()
  assert not changed[4:, :].any() and not changed[:, 4:].any()


def test_global_attention_matches_manual_formula():
  layer = layers.SplitAttention(8, num_heads=2, split=1)
  x = _rand(1, 3, 3, 8)
  out = layer(x).numpy().reshape(9, 8)
  tokens = x.numpy().reshape(9, 8)
  qkv = tokens @ layer.qkv.kernel.numpy() + layer.qkv.bias.numpy()
  q, k, v = np.split(qkv, 3, axis=-1)
  heads = []
  for h in range(2):
    sl = slice(4 * h, 4 * h + 4)
    logits = q[:, sl] @ k[:, sl].T * 4 ** -0.5
    a = np.exp(logits - logits.max(-1, keepdims=True))
    heads.append((a / a.sum(-1, keepdims=True)) @ v[:, sl])
  expected = np.concatenate(heads, -1) @ layer.proj.kernel.numpy() + layer.proj.bias.numpy()
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_attention_inner_width_below_width():
  """head_dim = width // heads, so 3·heads·head_dim can be below 3·width (docs/design.md §3)."""
  layer = layers.SplitAttention(10, num_heads=4, split=1)
  layer(_rand(1, 2, 2, 10))
  assert layer.qkv.kernel.shape == (10, 24)
  assert layer.proj.kernel.shape == (8, 10)


@pytest.mark.parametrize('grid, kernel', [(8, 2), (8, 3), (8, 4), (7, 2), (7, 3), (7, 4),
                                          (1, 4), (2, 3)])
def test_patch_merging_halves_rounding_up(grid, kernel):
  layer = layers.PatchMerging(6, 12, kernel)
  out = layer(_rand(2, grid, grid, 6))
  assert out.shape == (2, -(-grid // 2), -(-grid // 2), 12)


@pytest.mark.parametrize('kernel', [2, 3, 4])
def test_patch_merging_is_a_strided_conv_without_norm(kernel):
  """Without LayerNorm, merging = zero-pad (k-2)//2 before, conv k×k stride 2, no bias."""
  layer = layers.PatchMerging(3, 5, kernel, use_layer_norm=False)
  x = _rand(1, 8, 8, 3)
  out = layer(x).numpy()
  before = (kernel - 2) // 2
  after = kernel - 2 - before
  padded = tf.pad(x, [[0, 0], [before, after], [before, after], [0, 0]])
  conv_kernel = tf.reshape(layer.reduction.kernel, [kernel, kernel, 3, 5])
  reference = tf.nn.conv2d(padded, conv_kernel, strides=2, padding='VALID').numpy()
  np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('rows, cols, kernel', [(8, 8, 2), (7, 9, 3), (6, 5, 4), (9, 4, 5),
                                                (3, 3, 6), (1, 2, 4)])
def test_patch_merging_patches_are_the_strided_slices(rows, cols, kernel):
  """The patches equal the k² strided slices of the padded grid bitwise; the input
  gradient and the derivative along a tangent equal theirs to float rounding."""
  layer = layers.PatchMerging(3, 5, kernel)
  x, tangent = _rand(2, rows, cols, 3), _rand(2, rows, cols, 3)
  weights = tf.random.stateless_normal([2, -(-rows // 2), -(-cols // 2), 3 * kernel**2],
                                       seed=[rows, cols])
  np.testing.assert_array_equal(layer.patches(x).numpy(),
                                merge_speed.sliced_patches(layer, x).numpy())
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    got = tf.reduce_sum(weights * layer.patches(x))
    want = tf.reduce_sum(weights * merge_speed.sliced_patches(layer, x))
  np.testing.assert_allclose(tape.gradient(got, x).numpy(), tape.gradient(want, x).numpy(),
                             rtol=1e-6, atol=1e-6)
  with tf.autodiff.ForwardAccumulator(x, tangent) as acc:
    got, want = layer.patches(x), merge_speed.sliced_patches(layer, x)
  np.testing.assert_array_equal(acc.jvp(got).numpy(), acc.jvp(want).numpy())


def test_drop_path_only_in_training():
  block = layers.TransformerBlock(8, 2, 1, 2, drop_path_rate=0.5)
  x = _rand(16, 2, 2, 8)
  np.testing.assert_allclose(block(x, training=False).numpy(), block(x).numpy())
  tf.random.set_seed(1)
  a = block(x, training=True).numpy()
  b = block(x, training=False).numpy()
  assert not np.allclose(a, b)
  drop = layers.DropPath(0.5)
  kept = drop(tf.ones([200, 3]), training=True).numpy()
  assert set(np.unique(kept)) <= {0.0, 2.0}  # dropped, or kept and rescaled by 1/keep
  assert 40 < (kept[:, 0] == 0).sum() < 160


# Eager with drop-path: the same seed draws the same masks in both blocks (a traced graph
# derives its random ops' seeds from its own op count, which remat changes).
@pytest.mark.parametrize('traced, drop_path_rate', [(False, 0.5), (True, 0.0)])
def test_remat_block_gives_the_same_output_and_gradients(traced, drop_path_rate):
  """Gradient checkpointing recomputes the branches in the backward pass: the output and the
  gradients of the input and of every weight equal those of the block without it, also with
  drop-path on (a random mask per call that must not be drawn again in the recomputation)."""
  x = _rand(8, 6, 6, 8)
  plain = layers.TransformerBlock(8, 2, 2, 3, drop_path_rate=drop_path_rate)
  plain(x)
  remat = layers.TransformerBlock.from_config({**plain.get_config(), 'remat': True})
  remat(x)
  remat.set_weights(plain.get_weights())
  assert remat.remat and not plain.remat

  def loss_and_grads(block):
    def run(x):
      with tf.GradientTape() as tape:
        tape.watch(x)
        y = block(x, training=True)
        loss = tf.reduce_sum(tf.sin(y))
      return (y, loss) + tuple(tape.gradient(loss, [x] + block.trainable_weights))
    tf.random.set_seed(7)
    return [t.numpy() for t in (tf.function(run) if traced else run)(x)]

  want, got = loss_and_grads(plain), loss_and_grads(remat)
  assert len(got) == 2 + 1 + len(plain.trainable_weights)
  if drop_path_rate:  # a branch of some sample was dropped: a mask drawn again in the
    # backward pass would change the gradients
    assert not np.allclose(want[0], plain(x, training=False).numpy())
  for a, b in zip(want, got):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_layer_norm_free_block_has_no_norm_weights():
  block = layers.TransformerBlock(8, 2, 1, 2, use_layer_norm=False)
  block(_rand(1, 2, 2, 8))
  assert not [w for w in block.weights if 'norm' in w.name]
  assert len(block.weights) == 8  # qkv, proj, fc1, fc2: kernel + bias each


def _round_trip(layer, x):
  y = layer(x)
  config = layer.get_config()
  clone = type(layer).from_config(config)
  clone(x)
  clone.set_weights(layer.get_weights())
  assert clone.get_config() == config
  np.testing.assert_allclose(clone(x).numpy(), y.numpy(), rtol=1e-6, atol=1e-6)
  # and through Keras' registry, as a SavedModel/H5 loader would do it
  revived = tf_keras.layers.deserialize(tf_keras.layers.serialize(layer))
  assert type(revived) is type(layer)


@pytest.mark.parametrize('make', [
    lambda: layers.PatchEmbedding(8, 5, stride=8, dilation=2,
                                  kernel_regularizer=tf_keras.regularizers.L2(1e-4)),
    lambda: layers.SplitAttention(8, 2, 2),
    lambda: layers.Mlp(8, 24),
    lambda: layers.TransformerBlock(8, 2, 2, 3, drop_path_rate=0.1, use_layer_norm=False),
    lambda: layers.TransformerBlock(8, 2, 2, 3, drop_path_rate=0.1, remat=True),
    lambda: layers.PatchMerging(8, 16, 3),
    lambda: layers.DropPath(0.2),
])
def test_get_config_round_trip(make):
  layer = make()
  shape = (2, 32, 32, 3) if isinstance(layer, layers.PatchEmbedding) else (2, 6, 6, 8)
  _round_trip(layer, _rand(*shape))


@pytest.mark.parametrize('rows, cols, fixed, window, count', [
    (8, 8, 4, (4, 4), 4),     # divides
    (7, 7, 4, (4, 4), 4),     # odd grid: padded to 8x8
    (9, 5, 4, (4, 4), 6),     # non-square, padded to 12x8
    (3, 5, 4, (3, 4), 2),     # rows below the window: clipped, not padded
    (2, 2, 7, (2, 2), 1),     # grid below the window: one global window
])
def test_fixed_window_shapes(rows, cols, fixed, window, count):
  layer = layers.SplitAttention(16, num_heads=2, split=1, fixed_window=fixed)
  assert layer.window(rows, cols) == window
  x = _rand(2, rows, cols, 16)
  to_windows, from_windows = layer.windows(rows, cols)
  tokens = to_windows(x)
  assert tokens.shape == (2 * count, window[0] * window[1], 16)
  np.testing.assert_array_equal(from_windows(tokens).numpy(), x.numpy())
  assert layer(x).shape == (2, rows, cols, 16)


def test_fixed_window_keeps_padded_windows_apart():
  """7x7 grid, 4-token windows: the bottom-right window (3x3 real tokens) is its own."""
  layer = layers.SplitAttention(8, num_heads=2, split=1, fixed_window=4)
  x = _rand(1, 7, 7, 8).numpy()
  base = layer(tf.constant(x)).numpy()
  x[0, 6, 6] += 10.0
  changed = np.abs(layer(tf.constant(x)).numpy() - base).max(axis=-1)[0] > 1e-6
  assert changed[4:, 4:].all()
  assert not changed[:4, :].any() and not changed[:, :4].any()


def test_fixed_window_round_trips_and_rejects_bad_sides():
  block = layers.TransformerBlock(8, 2, split=2, expansion=2, fixed_window=3)
  x = _rand(1, 7, 5, 8)
  y = block(x)
  clone = layers.TransformerBlock.from_config(block.get_config())
  clone(x)
  clone.set_weights(block.get_weights())
  assert clone.attn.fixed_window == 3 and clone.attn.window(7, 5) == (3, 3)
  np.testing.assert_allclose(clone(x).numpy(), y.numpy(), rtol=1e-6, atol=1e-6)
  assert layers.SplitAttention(8, 2, 2).get_config()['fixed_window'] is None
  with pytest.raises(ValueError, match='fixed_window must be >= 1 token'):
    layers.SplitAttention(8, 2, 2, fixed_window=0)


def test_dense_kernels_are_untruncated_normal_with_zero_bias():
  """The authors' Dense init (design.md §2): N(0, 0.02²), in effect untruncated (Keras'
  TruncatedNormal cuts at 2σ: std 0.0176 and nothing beyond 0.04); biases 0; LayerNorm
  γ = 1, β = 0. 2^20 samples: the std's sampling error is 1.4e-5."""
  block = layers.TransformerBlock(512, num_heads=8, split=1, expansion=4)
  block.build([None, 4, 4, 512])
  w = block.mlp.fc1.kernel.numpy().ravel()
  assert w.size == 2**20
  assert abs(w.mean()) < 1e-4 and abs(w.std() - 0.02) < 1e-4
  beyond = np.mean(np.abs(w) > 0.04)                     # 4.55 % for a normal
  assert 0.0435 < beyond < 0.0475 and np.abs(w).max() > 0.08   # ~66 samples beyond 4σ
  assert not block.mlp.fc1.bias.numpy().any() and not block.attn.qkv.bias.numpy().any()
  np.testing.assert_array_equal(block.norm1.gamma.numpy(), 1.0)
  np.testing.assert_array_equal(block.norm1.beta.numpy(), 0.0)


@pytest.mark.parametrize('width, kernel', [(2048, 8), (64, 4)])
def test_patch_embedding_kernel_and_bias_are_uniform_in_fan_in_bounds(width, kernel):
  """The authors' conv init (PyTorch's Conv2d default): kernel and bias both
  U(−1/√fan_in, 1/√fan_in) with fan_in = 3·K², whatever the width (Glorot's bound would
  shrink with the width; a zero bias would fail too)."""
  layer = layers.PatchEmbedding(width, kernel=kernel)
  layer.build([None, 32, 32, 3])
  bound = 1 / np.sqrt(3 * kernel * kernel)
  for w in (layer.conv_kernel.numpy().ravel(), layer.conv_bias.numpy()):
    # Tolerances of ~6 standard errors for w.size samples: a false alarm is below 1e-8.
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > (1 - 21 / w.size) * bound
    assert abs(w.std() / (bound / np.sqrt(3)) - 1) < 3 * np.sqrt(0.8 / w.size)   # uniform
  big = layer.conv_kernel.numpy().ravel()
  if big.size > 10**5:   # flat: each tenth of [−b, b] holds a tenth of the samples
    counts, _ = np.histogram(big, bins=10, range=(-bound, bound))
    np.testing.assert_allclose(counts / big.size, 0.1, atol=0.005)


@pytest.mark.parametrize('dilation, stride', [(2, 3), (3, 2)])
def test_a_dilated_patch_embedding_equals_the_dilated_conv_and_has_a_kernel_gradient(
    dilation, stride):
  """The kernel dilated by hand gives tf.nn.conv2d's dilated conv, and its kernel gradient
  (which TensorFlow's CPU kernels without oneDNN do not have for a dilated conv) is the
  correlation of the input taps d apart with the output gradient, summed by hand."""
  rng = np.random.default_rng(dilation)
  x = rng.normal(size=(2, 23, 23, 3))
  k = rng.normal(size=(3, 3, 3, 4))
  layer = layers.PatchEmbedding(4, 3, stride=stride, dilation=dilation, use_layer_norm=False)
  layer.build((None, 23, 23, 3))
  layer.conv_kernel.assign(k.astype(np.float32))
  xt = tf.constant(x, tf.float64)
  native = tf.nn.conv2d(xt, tf.constant(k), strides=stride, padding='VALID', dilations=dilation)
  with tf.GradientTape() as tape:
    out = layer.conv(xt)
    g = tf.constant(rng.normal(size=out.shape))
    loss = tf.reduce_sum(out * g)
  np.testing.assert_allclose(out.numpy(), native.numpy(), rtol=1e-5, atol=1e-5)
  grad = tape.gradient(loss, layer.conv_kernel).numpy()
  want = np.zeros_like(k)
  rows, cols = out.shape[1:3]
  for i in range(3):
    for j in range(3):
      taps = x[:, i * dilation:, j * dilation:][:, :rows * stride:stride, :cols * stride:stride]
      want[i, j] = np.einsum('bpqc,bpqw->cw', taps[:, :rows, :cols], g.numpy())
  np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-6)
