"""A patch merging's patches by one gather (the library's) against k² strided slices (the
code before), timed in one process, alternated, so a machine whose speed drifts from minute
to minute treats both alike.

    python benchmarks/merge_speed.py [--measure ntk|length] [--image_size 224]
                                     [--repeats 3] [--threads 2] [--rounds 4]
                                     [--arch asvit_seed]

After one warm-up measurement of another topology (complexity_speed.py's), each round
measures a new network of `--arch` both ways (`asvit_tf.complexity.ntk_condition_number` or
`curve_metrics` for L^E, their defaults otherwise), the order swapped every other round.
Printed: each timing and value, then the medians. The values agree to float rounding; the
patches themselves are equal (tests/layers/test_blocks.py).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.complexity_speed import WARM_UP  # pylint: disable=g-import-not-at-top


def sliced_patches(layer, x):
  """`PatchMerging.patches` as it was: k² strided slices of the padded grid, concatenated."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rows, cols = x.shape[1], x.shape[2]
  from asvit_tf.layers import blocks  # pylint: disable=g-import-not-at-top
  (top, bottom) = blocks.merge_padding(rows, layer.kernel)
  (left, right) = blocks.merge_padding(cols, layer.kernel)
  x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
  out_r, out_c, k = -(-rows // 2), -(-cols // 2), layer.kernel
  return tf.concat([x[:, i:i + 2 * out_r - 1:2, j:j + 2 * out_c - 1:2, :]
                    for i in range(k) for j in range(k)], axis=-1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--measure', choices=('ntk', 'length'), default='ntk')
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--rounds', type=int, default=4)
  parser.add_argument('--arch', default='asvit_seed')
  args = parser.parse_args()

  import asvit_tf  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (its allocator setting first)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(args.threads)
  tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  from asvit_tf import complexity  # pylint: disable=g-import-not-at-top
  from asvit_tf.layers import blocks  # pylint: disable=g-import-not-at-top

  def measure(arch):
    if args.measure == 'ntk':
      return complexity.ntk_condition_number(arch, image_size=args.image_size,
                                             repeats=args.repeats).mean
    return complexity.curve_metrics(arch, image_size=args.image_size, repeats=args.repeats,
                                    metrics=('length',))['length'].mean

  ways = {'slices': sliced_patches, 'gather': blocks.PatchMerging.patches}
  measure(WARM_UP)
  seconds = {name: [] for name in ways}
  try:
    for round_ in range(args.rounds):
      for name in (list(ways) if round_ % 2 == 0 else list(ways)[::-1]):
        blocks.PatchMerging.patches = ways[name]
        start = time.perf_counter()
        value = measure(args.arch)
        seconds[name].append(time.perf_counter() - start)
        print(f'round {round_}, {name}: {seconds[name][-1]:.2f} s, value {value!r}', flush=True)
  finally:
    blocks.PatchMerging.patches = ways['gather']
  print(f'{args.measure} @{args.image_size}, {args.repeats} repeats, {args.threads} threads, '
        f'{args.arch}: median seconds')
  for name, times in seconds.items():
    print(f'  {name}: {statistics.median(times):.2f}  ({", ".join(f"{t:.2f}" for t in times)})')


if __name__ == '__main__':
  main()
