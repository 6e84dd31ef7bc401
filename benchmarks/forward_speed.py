"""Forward-pass throughput of an As-ViT on this machine: eager vs. tf.function vs. XLA.

  python benchmarks/forward_speed.py                 # asvit_large, batch 8, 224 px
  python benchmarks/forward_speed.py --model asvit_seed --batch 16 --repeats 5

Prints a table (images/s, ms/batch, speed-up over eager) and writes it to docs/benchmarks.md.
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

from asvit_tf import models  # noqa: E402
from benchmarks import _report  # noqa: E402

flags.DEFINE_string('model', 'asvit_large', 'Variant name or topology string.')
flags.DEFINE_integer('batch', 8, 'Images per batch.')
flags.DEFINE_integer('image_size', 224, 'Image side.')
flags.DEFINE_integer('repeats', 3, 'Timed batches per mode (after one warm-up).')
flags.DEFINE_bool('write', True, 'Write the table to docs/benchmarks.md.')
FLAGS = flags.FLAGS


def _time(fn, x, repeats):
  t0 = time.perf_counter()
  fn(x).numpy()  # warm-up: tracing / compilation
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn(x).numpy()
    times.append(time.perf_counter() - t0)
  return first, float(np.median(times))


def main(argv):
  del argv
  if FLAGS.model in models.model_names():
    model = models.create_model(FLAGS.model)
  else:
    model = models.AsViT(FLAGS.model)
  x = tf.random.normal([FLAGS.batch, FLAGS.image_size, FLAGS.image_size, 3], seed=0)
  model(x[:1])
  modes = [('eager', lambda t: model(t, training=False)),
           ('tf.function', tf.function(lambda t: model(t, training=False))),
           ('tf.function + XLA', tf.function(lambda t: model(t, training=False),
                                             jit_compile=True))]
  results = []
  for name, fn in modes:
    first, median = _time(fn, x, FLAGS.repeats)
    results.append((name, first, median))
    print(f'{name:<18} first call {first:7.2f} s, median {median * 1e3:8.1f} ms/batch', flush=True)
  eager = results[0][2]
  gmacs = models.count_macs(model.topology, FLAGS.image_size, model.num_classes) / 1e9
  rows = [(name, f'{FLAGS.batch / median:.2f}', f'{median * 1e3:.0f}', f'{first:.1f}',
           f'{eager / median:.2f}x', f'{FLAGS.batch * gmacs / median:.1f}')
          for name, first, median in results]
  header = ('mode', 'images/s', 'ms/batch', 'first call (s)', 'vs eager', 'GMAC/s')
  table = _report.markdown_table(header, rows)
  print(table)
  if FLAGS.write:
    body = (f'`{FLAGS.model}` ({models.count_params(model) / 1e6:.2f} M params, {gmacs:.2f} G '
            f'MACs/image), batch {FLAGS.batch}, {FLAGS.image_size}x{FLAGS.image_size}, '
            f'float32, inference mode; median of {FLAGS.repeats} batches after a warm-up call '
            '(the first call includes tracing and XLA compilation).\n\n' + table)
    _report.write_section('forward_speed', 'Forward pass: eager vs. graph vs. XLA', body)


if __name__ == '__main__':
  app.run(main)
