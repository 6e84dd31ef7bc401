"""What progressive re-tokenization saves: MACs and measured train-step time per phase.

  python benchmarks/retokenization.py                       # asvit_seed and asvit_small, 224 px
  python benchmarks/retokenization.py --models=asvit_seed --batch=4 --steps=3

For each model and each tokenization of the published schedule (docs/design.md §11: stride 16 until
~epoch 80 of 300, stride 8 until ~epoch 132, then stride 4; dilation by the K1 rule), it
measures the time of a full training step (forward, backward, AdamW update) and counts the
forward MACs. The whole-schedule saving against fixed stride-4 training is the phase-length-
weighted mean. Writes the table to docs/benchmarks.md.
"""
from __future__ import annotations

import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from asvit_tf import arch as arch_lib  # noqa: E402
from asvit_tf import layers  # noqa: E402
from asvit_tf import models  # noqa: E402
from benchmarks import _report  # noqa: E402

flags.DEFINE_list('models', ['asvit_seed', 'asvit_small'], 'Variant names or topology strings.')
flags.DEFINE_integer('image_size', 224, 'Image side.')
flags.DEFINE_integer('batch', 8, 'Images per training step.')
flags.DEFINE_integer('steps', 4, 'Timed steps per phase (after a warm-up step).')
flags.DEFINE_list('epochs', ['0', '80', '132'], 'Start epoch of each phase (of 300).')
flags.DEFINE_list('strides', ['16', '8', '4'], 'Stride of each phase.')
flags.DEFINE_integer('total_epochs', 300, 'Length of the schedule.')
flags.DEFINE_bool('jit', True, 'Compile the train step with XLA.')
flags.DEFINE_bool('write', True, 'Write the table to docs/benchmarks.md.')
FLAGS = flags.FLAGS


def phase_fractions(starts, total):
  ends = list(starts[1:]) + [total]
  return [(e - s) / total for s, e in zip(starts, ends)]


def time_train_step(model, images, labels, steps, jit):
  optimizer = tf_keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=0.05)
  loss_fn = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  def step(x, y):
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  fn = tf.function(step, jit_compile=jit)  # a new trace per tokenization, as in training
  fn(images, labels).numpy()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn(images, labels).numpy()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main(argv):
  del argv
  starts = [int(e) for e in FLAGS.epochs]
  strides = [int(s) for s in FLAGS.strides]
  if len(starts) != len(strides) or strides[-1] != 4:
    raise app.UsageError('--epochs and --strides need the same length, ending at stride 4')
  fractions = phase_fractions(starts, FLAGS.total_epochs)
  size = FLAGS.image_size
  rng = np.random.default_rng(0)
  images = tf.constant(rng.normal(size=(FLAGS.batch, size, size, 3)).astype('float32'))
  labels = tf.constant(rng.integers(0, 1000, FLAGS.batch))
  rows, summary = [], []
  for name in FLAGS.models:
    topo = arch_lib.as_topology(name)
    model = models.AsViT(topo, num_classes=1000)
    model(images[:1])
    full_macs = models.count_macs(topo, size, 1000)
    phases = []  # (start epoch, stride, dilation, MACs, seconds, fraction of the schedule)
    for start, stride, frac in zip(starts, strides, fractions):
      dilation = layers.retokenization_dilation(topo.kernels[0], stride)
      model.set_tokenization(stride, dilation)
      macs = models.count_macs(topo, size, 1000, stride=stride)
      seconds = time_train_step(model, images, labels, FLAGS.steps, FLAGS.jit)
      phases.append((start, stride, dilation, macs, seconds, frac))
      print(f'{name} stride {stride}/d{dilation}: {macs / 1e9:.3f} GMACs, '
            f'{seconds * 1e3:.0f} ms/step', flush=True)
    full_seconds = phases[-1][4]
    for start, stride, dilation, macs, seconds, _ in phases:
      grid = models.token_grid(size, stride)
      rows.append((name, f'{start}-', f'{stride}/{dilation}', f'{grid[0]}x{grid[1]}',
                   f'{macs / 1e9:.3f}', f'{100 * macs / full_macs:.1f}',
                   f'{seconds * 1e3:.0f}', f'{100 * seconds / full_seconds:.1f}'))
    mac_cost = sum(p[3] * p[5] for p in phases) / full_macs
    time_cost = sum(p[4] * p[5] for p in phases) / full_seconds
    mac_saving, time_saving = 1 - mac_cost, 1 - time_cost
    gap = abs(time_saving - mac_saving) / mac_saving if mac_saving else float('nan')
    summary.append((name, f'{100 * mac_saving:.1f}', f'{100 * time_saving:.1f}',
                    f'{100 * gap:.0f}', 'yes' if gap <= 0.2 else 'no'))
  header = ('model', 'from epoch', 'stride/dilation', 'tokens', 'GMACs', '% of stride-4 MACs',
            'ms/step', '% of stride-4 time')
  table = _report.markdown_table(header, rows)
  totals = _report.markdown_table(
      ('model', 'schedule MAC saving %', 'measured time saving %',
       'relative gap % (target <= 20)', 'within target'), summary)
  print(table)
  print(totals)
  if FLAGS.write:
    body = (f'{size}x{size}, batch {FLAGS.batch}, float32, one training step = forward + '
            f'backward + AdamW (XLA: {FLAGS.jit}); median of {FLAGS.steps} steps after a '
            f'warm-up. Schedule: phases start at epochs {starts} of {FLAGS.total_epochs} with '
            f'strides {strides}.\n\n' + table + '\n\n' + totals)
    _report.write_section('retokenization', 'Progressive re-tokenization: cost per phase',
                          body)


if __name__ == '__main__':
  app.run(main)
