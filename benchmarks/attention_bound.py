"""What a faster attention core could at most save in a search: L^E and κ_Θ of recorded
search topologies, as a search worker measures them, with the attention maps as they are and
with the maps replaced by a stand-in that costs almost nothing.

    python benchmarks/attention_bound.py [--run docs/search_paper.jsonl] [--topologies 9]
                                         [--image_size 224] [--repeats 5] [--threads 1]
                                         [--rounds 2]

The topologies are the first newly measured one at or after steps 10, 70, 130, ... of the
recorded run (`--run`, a search's step records). Each variant runs in a fresh process with
`--threads` intra- and inter-op threads (1: as each of a search's two workers), measures a
warm-up topology first (complexity_speed.py's), then every picked topology: L^E
(`length_distortion`) and κ_Θ (`ntk_condition_number`), `--repeats` repeats, their defaults
otherwise. The variants alternate, `--rounds` times each:

- `maps`: the library as it is;
- `free`: the measuring core's attention (`asvit_tf.complexity.attention`: `attention` for
  κ_Θ, `attention_with_tangent` for L^E) returns v (and v̇; its backward passes the output
  gradient to v, zeros to q and k). Everything else runs as before: the projections, MLPs,
  norms, merges, taps, Θ, the traces and the building of each network. Its values are
  meaningless; its time is what remains of each measure if the maps cost nothing.

Printed: per topology the median seconds of each measure under both variants, then the
means. A search step runs one topology's L^E and κ_Θ side by side on two workers, so
max(L^E, κ_Θ) is its critical path; the last column is that path's share that the maps
are.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _report  # pylint: disable=g-import-not-at-top
from benchmarks.complexity_speed import WARM_UP  # pylint: disable=g-import-not-at-top

VARIANTS = ('maps', 'free')


def pick_topologies(run: str, count: int, first: int = 10, every: int = 60) -> list:
  """(topology, seed) of the first newly measured record at or after steps first,
  first + every, ... of a search's step records (`count` of them, distinct)."""
  with open(run, encoding='utf-8') as f:
    rows = [json.loads(line) for line in f if line.strip()]
  picked, seen = [], set()
  for want in range(first, first + every * count, every):
    for row in rows:
      if (row['step'] >= want and not row.get('cached') and row['topology'] not in seen
          and row.get('ntk_values')):
        picked.append((row['topology'], int(row['step'])))
        seen.add(row['topology'])
        break
  return picked


def free_maps():
  """Replaces the measuring core's attention by o = v (and ȯ = v̇)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from asvit_tf.complexity import attention  # pylint: disable=g-import-not-at-top

  @tf.custom_gradient
  def stand_in(q, k, v):
    def gradient(g):
      return tf.zeros_like(q), tf.zeros_like(k), g
    return tf.identity(v), gradient

  attention.attention = stand_in
  attention.attention_with_tangent = (
      lambda q, k, v, dq, dk, dv: (tf.identity(v), tf.identity(dv)))


def worker(variant: str, topologies: list, image_size: int, repeats: int, threads: int):
  """Measures `topologies` in this process; prints one RESULT line of JSON."""
  import asvit_tf  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import  (its allocator setting first)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(threads)
  from asvit_tf import complexity  # pylint: disable=g-import-not-at-top
  if variant == 'free':
    free_maps()
  complexity.length_distortion(WARM_UP, image_size=image_size, repeats=1)
  complexity.ntk_condition_number(WARM_UP, image_size=image_size, repeats=1)
  out = []
  for topology, seed in topologies:
    start = time.perf_counter()
    length = complexity.length_distortion(topology, image_size=image_size, repeats=repeats,
                                          seed=seed)
    middle = time.perf_counter()
    ntk = complexity.ntk_condition_number(topology, image_size=image_size, repeats=repeats,
                                          seed=seed)
    out.append({'topology': topology, 'length_s': middle - start,
                'ntk_s': time.perf_counter() - middle, 'length': float(length.mean),
                'ntk': float(ntk.mean)})
  _report.print_result(out)


def run_variant(variant: str, topologies: list, args) -> list:
  """`worker` of `variant` in a fresh process: its measurements."""
  out, proc = _report.worker_result(
      [sys.executable, os.path.abspath(__file__), '--worker', variant, '--topologies_json',
       json.dumps(topologies), '--image_size', str(args.image_size), '--repeats',
       str(args.repeats), '--threads', str(args.threads)])
  if out is None:
    raise SystemExit(f'error: the {variant} process failed ({_report.failure(proc)})')
  return out


def summarise(topologies: list, results: dict) -> None:
  """Prints the medians per topology and the means, as a Markdown table."""
  rows = []
  for i, (topology, _) in enumerate(topologies):
    med = {(v, m): statistics.median(r[i][m] for r in results[v])
           for v in VARIANTS for m in ('length_s', 'ntk_s')}
    row = [med['maps', 'length_s'], med['free', 'length_s'], med['maps', 'ntk_s'],
           med['free', 'ntk_s']]
    rows.append(row + [max(row[0], row[2]), max(row[1], row[3])])
  mean = [statistics.fmean(column) for column in zip(*rows)]
  names = ['`' + t.replace('|', '\\|') + '`' for t, _ in topologies] + ['mean']
  print(_report.markdown_table(
      ['topology', 'L^E maps', 'L^E free', 'κ_Θ maps', 'κ_Θ free', 'step path maps',
       'step path free', "maps' share of the path"],
      [[name] + [f'{x:.2f} s' for x in row] + [f'{1 - row[5] / row[4]:.0%}']
       for name, row in zip(names, rows + [mean])]))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--run', default='docs/search_paper.jsonl')
  parser.add_argument('--topologies', type=int, default=9)
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--threads', type=int, default=1)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--worker', choices=VARIANTS, help=argparse.SUPPRESS)
  parser.add_argument('--topologies_json', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    worker(args.worker, json.loads(args.topologies_json), args.image_size, args.repeats,
           args.threads)
    return
  topologies = pick_topologies(args.run, args.topologies)
  results = {v: [] for v in VARIANTS}
  for round_ in range(args.rounds):
    for variant in (VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]):
      start = time.perf_counter()
      results[variant].append(run_variant(variant, topologies, args))
      print(f'round {round_}, {variant}: {time.perf_counter() - start:.0f} s', flush=True)
  print(f'{len(topologies)} topologies of {args.run}, {args.image_size} px, '
        f'{args.repeats} repeats, {args.threads} thread(s); median seconds of '
        f'{args.rounds} round(s)')
  summarise(topologies, results)


if __name__ == '__main__':
  main()
