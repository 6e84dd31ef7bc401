"""Resident memory of one process measuring many different topologies, as a worker does.

    python benchmarks/worker_memory.py [--topologies 30] [--image_size 64] [--traced]
                                       [--unreleased] [--seed 0]

`--topologies` seed topologies drawn from the search space with `--seed` (C=32, depths 1)
are measured one after the other in this process, L^E then κ_Θ, one repeat, one intra-op
thread, each measurement followed by `clear_session` and `gc.collect` as
`parallel._measure_in_worker` does. Printed after each topology: RSS, Python objects, the
functions in TensorFlow's eager context and the gradients in its global registry. `--traced`
forces the traced measures (what 224 px takes) at any size; `--unreleased` measures as the
code did before `network.releasing_custom_gradients` (the ~35-65 MB per topology of issue 19).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top

from asvit_tf import arch as arch_lib  # pylint: disable=g-import-not-at-top


def rss_mb() -> float:
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def drawn_topologies(n: int, seed: int):
  rng = np.random.default_rng(seed)
  return [arch_lib.Topology.from_decisions(
      [int(rng.integers(len(choices))) for _, choices in arch_lib.SEARCH_SPACE])
          for _ in range(n)]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--topologies', type=int, default=30)
  parser.add_argument('--image_size', type=int, default=64)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--traced', action='store_true')
  parser.add_argument('--unreleased', action='store_true')
  args = parser.parse_args(argv)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-direct-tensorflow-import,g-import-not-at-top
  from tensorflow.python.eager import context as eager
  # pylint: disable-next=g-direct-tensorflow-import,g-import-not-at-top
  from tensorflow.python.framework import ops
  from asvit_tf.complexity import network  # pylint: disable=g-import-not-at-top
  from asvit_tf.search import measure  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  if args.traced:
    network.EAGER_REPEATS = 0
  if args.unreleased:
    network.releasing_custom_gradients = contextlib.nullcontext
  measures = [measure.make_measure((m,), image_size=args.image_size, repeats=1)
              for m in ('length', 'ntk')]
  print('| topology | measurements | RSS (MB) | Python objects | eager functions | '
        'registered gradients | CPU s |')
  print('|---|---|---|---|---|---|---|')
  rss, start = [], time.process_time()
  for i, topology in enumerate(drawn_topologies(args.topologies, args.seed)):
    for fn in measures:
      fn(topology, i)
      tf_keras.backend.clear_session()
      gc.collect()
    rss.append(rss_mb())
    cell = str(topology).replace('|', '\\|')  # a Markdown table cell
    print(f'| `{cell}` | {2 * (i + 1)} | {rss[-1]:.1f} | {len(gc.get_objects())} | '
          f'{len(eager.context().list_function_names())} | '
          f'{len(ops._gradient_registry._registry)} | '  # pylint: disable=protected-access
          f'{time.process_time() - start:.1f} |', flush=True)
  first = min(4, len(rss) - 1)
  print(f'RSS growth from topology {first + 1} to {len(rss)}: {rss[-1] - rss[first]:.1f} MB '
        f'({(rss[-1] - rss[first]) / max(1, len(rss) - 1 - first):.2f} MB per topology)')


if __name__ == '__main__':
  main()
