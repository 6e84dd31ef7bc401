"""A fused attention kernel against TensorFlow's attention ops, per 784-token map.

    python benchmarks/attention_kernel.py [--head_widths 1,2,4,5,8] [--maps 128]
                                          [--tokens 784] [--threads 1] [--write]

Stage 1 of As-ViT at 224 px has 56×56 tokens; with S1 = 2 each window holds 28×28 = 784
tokens, and its attention maps are most of what κ_Θ (forward + backward) and L^E (forward +
tangent) cost in a paper-preset search and grow (docs/benchmarks.md, search and grow speed).
This times the attention core o = softmax(q kᵀ) v, forward and forward + backward, for
`--maps` maps at once (128: a chunk of 4 images × 8 heads × 4 windows, as κ_Θ runs them):

- TensorFlow: the ops SplitAttention uses (matmul, softmax, matmul) in one tf.function, and
  its gradient;
- the library's measuring core (`asvit_tf.complexity.attention.attention`, what κ_Θ runs):
  the same TensorFlow ops group by group of maps, its backward written out;
- `attention_kernel.cc`: a fused kernel that keeps each row of scores in L1, compiled here
  with the system's C++ compiler (`$CXX`, default g++; -O3 -march=native -ffast-math).

Both run with `--threads` threads (1: as each of the two measuring workers does). The
kernel's and the measuring core's outputs and gradients are checked against TensorFlow's
before they are timed; a mismatch stops the script. The kernel is a measurement for a
decision, not a part of the library: nothing in asvit_tf uses it.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _report  # pylint: disable=g-import-not-at-top

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'attention_kernel.cc')
FLAGS = ('-O3', '-march=native', '-ffast-math', '-fopenmp', '-shared', '-fPIC')


def compile_kernel(directory: str) -> ctypes.CDLL:
  """Builds attention_kernel.cc into `directory` and loads it."""
  cxx = os.environ.get('CXX', 'g++')
  if shutil.which(cxx) is None:
    raise SystemExit(f'error: no C++ compiler {cxx!r} on PATH (set $CXX)')
  out = os.path.join(directory, 'attention_kernel.so')
  done = subprocess.run([cxx, *FLAGS, SOURCE, '-o', out], capture_output=True, text=True,
                        check=False)
  if done.returncode:
    raise SystemExit(f'error: {cxx} failed on {SOURCE}:\n{done.stderr}')
  lib = ctypes.CDLL(out)
  i64, ptr, c_int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
  lib.attention_forward_f32.argtypes = [i64, i64, i64, c_int] + [ptr] * 5
  lib.attention_backward_f32.argtypes = [i64, i64, i64, c_int] + [ptr] * 9
  lib.attention_forward_f32.restype = lib.attention_backward_f32.restype = c_int
  return lib


class Kernel:
  """The compiled kernel on float32 [N, n, d] arrays."""

  def __init__(self, lib, threads: int):
    self.lib, self.threads = lib, threads

  def forward(self, q, k, v):
    n_maps, n, d = q.shape
    o, lse = np.empty_like(q), np.empty((n_maps, n), np.float32)
    if self.lib.attention_forward_f32(n_maps, n, d, self.threads, *_pointers(q, k, v, o, lse)):
      raise SystemExit(f'error: the kernel has no instance for head width {d}')
    return o, lse

  def backward(self, q, k, v, o, lse, g):
    n_maps, n, d = q.shape
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    if self.lib.attention_backward_f32(n_maps, n, d, self.threads,
                                       *_pointers(q, k, v, o, g, lse, dq, dk, dv)):
      raise SystemExit(f'error: the kernel has no instance for head width {d}')
    return dq, dk, dv


def _pointers(*arrays):
  for a in arrays:
    assert a.dtype == np.float32 and a.flags.c_contiguous
  return [a.ctypes.data for a in arrays]


def tensorflow_attention(threads: int):
  """(forward, forward_and_backward) tf.functions of SplitAttention's attention core."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(threads)

  from asvit_tf.layers import blocks  # pylint: disable=g-import-not-at-top

  @tf.function
  def forward(q, k, v):
    return blocks.attention(q, k, v)

  return forward, _forward_and_backward(blocks.attention)


def _forward_and_backward(core):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  @tf.function
  def forward_and_backward(q, k, v, g):
    with tf.GradientTape() as tape:
      tape.watch([q, k, v])
      o = core(q, k, v)
    return (o, *tape.gradient(o, [q, k, v], output_gradients=g))
  return forward_and_backward


def measuring_attention():
  """(forward, forward_and_backward) tf.functions of the library's measuring core."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from asvit_tf.complexity import attention  # pylint: disable=g-import-not-at-top
  return tf.function(attention.attention), _forward_and_backward(attention.attention)


def best_of(fn, runs: int) -> float:
  """Median wall seconds of `runs` calls after one warm-up call."""
  fn()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def relative_error(got, want) -> float:
  return float(np.max(np.abs(got - want)) / max(1e-30, float(np.max(np.abs(want)))))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--head_widths', default='1,2,4,5,8')
  parser.add_argument('--maps', type=int, default=128)
  parser.add_argument('--tokens', type=int, default=784)
  parser.add_argument('--threads', type=int, default=1)
  parser.add_argument('--runs', type=int, default=3)
  parser.add_argument('--write', action='store_true', help='update docs/benchmarks.md')
  args = parser.parse_args()
  try:
    widths = [int(w) for w in args.head_widths.split(',') if w]
  except ValueError:
    raise SystemExit(f'error: --head_widths must be integers, got {args.head_widths!r}') from None
  for name in ('maps', 'tokens', 'threads', 'runs'):
    if getattr(args, name) < 1:
      raise SystemExit(f'error: --{name} must be >= 1, got {getattr(args, name)}')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  load = os.getloadavg()[0]
  tf_forward, tf_both = tensorflow_attention(args.threads)
  lib_forward, lib_both = measuring_attention()
  rows = []
  with tempfile.TemporaryDirectory() as build:
    kernel = Kernel(compile_kernel(build), args.threads)
    for d in widths:
      rng = np.random.default_rng(d)
      shape = (args.maps, args.tokens, d)
      # q carries SplitAttention's head_dim^-0.5; unit-variance inputs give peaked maps.
      q, k, v, g = (rng.standard_normal(shape).astype(np.float32) for _ in range(4))
      q *= np.float32(d ** -0.5)
      tq, tk, tv, tg = (tf.constant(a) for a in (q, k, v, g))
      want = [t.numpy() for t in tf_both(tq, tk, tv, tg)]
      o, lse = kernel.forward(q, k, v)
      got = [o, *kernel.backward(q, k, v, o, lse, g)]
      error = max(relative_error(a, b) for a, b in zip(got, want))
      lib_error = max(relative_error(t.numpy(), b)
                      for t, b in zip(lib_both(tq, tk, tv, tg), want))
      for what, err in (('the kernel', error), ('the measuring core', lib_error)):
        if err > 1e-4:
          raise SystemExit(f'error: head width {d}: {what} differs from TensorFlow by '
                           f'{err:.1e} (relative)')
      per_map = 1e3 / args.maps
      tf_f = best_of(lambda: tf_forward(tq, tk, tv).numpy(), args.runs) * per_map
      tf_b = best_of(lambda: [t.numpy() for t in tf_both(tq, tk, tv, tg)], args.runs) * per_map
      lib_f = best_of(lambda: lib_forward(tq, tk, tv).numpy(), args.runs) * per_map
      lib_b = best_of(lambda: [t.numpy() for t in lib_both(tq, tk, tv, tg)],
                      args.runs) * per_map
      k_f = best_of(lambda: kernel.forward(q, k, v), args.runs) * per_map
      k_b = best_of(lambda: kernel.backward(q, k, v, o, lse, g), args.runs) * per_map + k_f
      rows.append((d, f'{tf_f:.2f}', f'{tf_b:.2f}', f'{lib_f:.2f}', f'{lib_b:.2f}',
                   f'{k_f:.2f}', f'{k_b:.2f}', f'{tf_b / lib_b:.1f}×', f'{tf_b / k_b:.1f}×',
                   f'{max(error, lib_error):.0e}'))
      print(rows[-1], flush=True)
  header = ('head width', 'TensorFlow forward (ms/map)', 'TensorFlow fwd+bwd (ms/map)',
            'measuring core forward (ms/map)', 'measuring core fwd+bwd (ms/map)',
            'kernel forward (ms/map)', 'kernel fwd+bwd (ms/map)',
            'fwd+bwd speed-up, measuring core', 'fwd+bwd speed-up, kernel',
            'max relative difference')
  table = _report.markdown_table(header, rows)
  print(table)
  if args.write:
    body = '\n'.join([
        f'{args.maps} maps of {args.tokens} tokens at once, float32, {args.threads} '
        f'thread(s); median of {args.runs} runs after a warm-up, per map. Load average at '
        f'the start: {load:.1f} on {os.cpu_count()} cores.', '', table, '',
        'The measuring core is `asvit_tf.complexity.attention.attention` (TensorFlow ops, '
        'the maps group by group, backward written out): what κ_Θ runs. The kernel '
        '(`benchmarks/attention_kernel.cc`) is not used by the library: it is the '
        'measurement behind the proposal in the search and grow section.'])
    _report.write_section('attention_kernel', 'Stage-1 attention maps: a fused kernel '
                          'against TensorFlow\'s ops', body)


if __name__ == '__main__':
  main()
