"""Measurements per minute: the local worker pool vs Ray, and a projected paper-preset search.

    python benchmarks/ray_speed.py [--topologies 6] [--paper_topologies 2] [--seed 0]
                                   [--workers 1,2] [--write]

Part 1 (measured). The same `--topologies` topologies, drawn from the search space with
`--seed`, are measured at the quick preset (32×32, 1 repeat; L^E and κ_Θ, 2 measurements
each) by the local pool (`parallel.PoolMeasure`, one intra-op thread per worker) and by a
one-machine Ray (`ray_evaluator.RayEvaluator`, one CPU per task), each with 1 and 2
workers. Each is warmed up first on two other topologies (process start, TensorFlow import,
first trace), so the figures are steady-state throughput. Ray's overhead per measurement
is Ray's seconds per measurement minus the pool's at the same number of workers, and,
apart, the round trip of an empty call through `ray_evaluator.RayCalls`.

Part 2 (projected). `--paper_topologies` topologies are measured at the paper preset
(224×224, 5 repeats) in this process with one intra-op thread: the seconds of each L^E and
κ_Θ are one worker's time for that job. Model of a paper-preset search with K samples per
step on W workers (one CPU each): 500 steps; a step is 2K jobs (L^E and κ_Θ of K samples,
their times the measured ones taken in turn), each plus Ray's measured overhead, handed
out longest first to the first free worker (as the evaluators do); the step ends when
its last job does (the policy update waits for all K). Time = 500 × that makespan. Ray's
overhead per job is the round trip of an empty call (the throughput difference of part 1
also holds the CPU that Ray's own processes take on this shared 2-core machine). Not
modelled: re-sampled topologies (their measurement is reused, so this is an upper bound),
a step's share of the slowest topologies, and the nodes' start.
"""
from __future__ import annotations

import argparse
import heapq
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top

from asvit_tf import arch as arch_lib  # pylint: disable=g-import-not-at-top
from asvit_tf.search import measure as measure_lib  # pylint: disable=g-import-not-at-top
from asvit_tf.search import parallel  # pylint: disable=g-import-not-at-top
from asvit_tf.search import ray_evaluator  # pylint: disable=g-import-not-at-top
from benchmarks import _report  # pylint: disable=g-import-not-at-top

METRICS = ('length', 'ntk')
QUICK = dict(image_size=32, repeats=1)
PAPER = dict(image_size=224, repeats=5)
PAPER_STEPS = 500
PROJECTED_K = (1, 4, 16)
PROJECTED_WORKERS = (1, 2, 4, 8, 16, 32, 64)


def topologies(n: int, seed: int):
  """`n` distinct topologies of the search space, drawn uniformly with `seed`."""
  rng = np.random.default_rng(seed)
  out = []
  while len(out) < n:
    decisions = [int(rng.integers(len(choices))) for _, choices in arch_lib.SEARCH_SPACE]
    topo = arch_lib.Topology.from_decisions(decisions)
    if topo not in out:
      out.append(topo)
  return out


def throughput(evaluator, warmup, timed) -> float:
  """Seconds per measurement of `timed` (after `warmup` went through the evaluator)."""
  list(evaluator.measure([(t, i) for i, t in enumerate(warmup)]))
  start = time.perf_counter()
  list(evaluator.measure([(t, i) for i, t in enumerate(timed)]))
  return (time.perf_counter() - start) / (len(METRICS) * len(timed))


def _noop():
  return 0


def empty_call_seconds(calls: int = 20) -> float:
  """Round trip of an empty call through RayCalls (one-machine Ray, warmed up)."""
  with ray_evaluator.RayCalls(_noop, num_cpus=1) as ray_calls:
    list(ray_calls.measure([()] * 2))
    start = time.perf_counter()
    for _ in range(calls):
      list(ray_calls.measure([()]))
    return (time.perf_counter() - start) / calls


def paper_job_seconds(topos):
  """Seconds of each paper-preset job (L^E and κ_Θ of each topology), one thread."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  measures = {m: measure_lib.make_measure((m,), **PAPER) for m in METRICS}
  measures['length'](topos[0], 0)  # TensorFlow's warm-up, not counted
  seconds = []
  for i, topo in enumerate(topos):
    for metric in METRICS:
      start = time.perf_counter()
      measures[metric](topo, i)
      seconds.append(time.perf_counter() - start)
  return seconds


def makespan(jobs, workers: int) -> float:
  """Longest first to the first free of `workers`: when the last job ends."""
  free = [0.0] * workers
  for job in sorted(jobs, reverse=True):
    heapq.heappush(free, heapq.heappop(free) + job)
  return max(free)


def projected_hours(job_seconds, overhead: float, k: int, workers: int) -> float:
  jobs = [job_seconds[j % len(job_seconds)] + overhead for j in range(len(METRICS) * k)]
  return PAPER_STEPS * makespan(jobs, workers) / 3600


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--topologies', type=int, default=6)
  parser.add_argument('--paper_topologies', type=int, default=2)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--workers', default='1,2')
  parser.add_argument('--write', action='store_true', help='Write docs/benchmarks.md.')
  args = parser.parse_args()
  topos = topologies(args.topologies + 2, args.seed)
  warmup, timed = topos[:2], topos[2:]
  rows, per = [], {}
  for workers in [int(w) for w in args.workers.split(',')]:
    with parallel.PoolMeasure(METRICS, workers, threads=1, **QUICK) as pool:
      per['local', workers] = throughput(pool, warmup, timed)
    with ray_evaluator.RayEvaluator(METRICS, num_cpus=workers, **QUICK) as on_ray:
      per['ray', workers] = throughput(on_ray, warmup, timed)
    for backend in ('local', 'ray'):
      s = per[backend, workers]
      rows.append([backend, workers, f'{s:.2f}', f'{60 / s:.1f}',
                   f'{s - per["local", workers]:+.2f}' if backend == 'ray' else ''])
    print(rows[-2], rows[-1], flush=True)
  empty = empty_call_seconds()
  overhead = empty  # what Ray adds to a task (the throughput difference above also holds
  # the load on a shared machine, which on a cluster's dedicated CPUs it would not)
  job_seconds = paper_job_seconds(topologies(args.paper_topologies, args.seed + 1))
  print('paper-preset job seconds:', [round(s, 1) for s in job_seconds], flush=True)
  table1 = _report.markdown_table(
      ['backend', 'workers', 's / measurement', 'measurements / min',
       'Ray overhead s / measurement'], rows)
  projection = [[k] + [f'{projected_hours(job_seconds, overhead, k, w):.2f}'
                       for w in PROJECTED_WORKERS] for k in PROJECTED_K]
  table2 = _report.markdown_table(
      ['K (samples / step)'] + [f'{w} workers' for w in PROJECTED_WORKERS], projection)
  load = os.getloadavg()
  contention = ('other jobs ran beside it, so the absolute figures are slower than on a quiet '
                'machine.' if load[1] > 2.5 else 'nothing else ran beside it.')
  body = f"""Quick preset (32×32, 1 repeat), {len(timed)} topologies × L^E and κ_Θ, after a
warm-up on 2 others; one CPU (one intra-op thread) per worker, a one-machine Ray on
127.0.0.1. 1/5/15-minute load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on 2 cores
when the run ended (this run included); {contention} The backends were measured one after the
other.

{table1}

An empty call through `RayCalls` (one-machine Ray, warmed up) takes {empty * 1000:.0f} ms
round trip.

Projected hours of a paper-preset search (500 steps of K samples, 224×224, 5 repeats) on W
one-CPU workers. Job times measured here with one thread on {args.paper_topologies}
topologies: {', '.join(f'{s:.1f}' for s in job_seconds)} s (L^E, κ_Θ of each in turn); each
job plus {overhead:.2f} s of Ray overhead (the empty call's round trip). Model: a step's
2K jobs go longest first to the first free worker, the step ends with its last job (the
update waits for all K); 500 × that. An upper bound (re-sampled topologies reuse their
measurement); K > 1 measures K times as many topologies per step.

{table2}
"""
  print(body)
  if args.write:
    _report.write_section('ray_speed', 'Local pool vs Ray, and a paper-preset search on W '
                          'workers (`benchmarks/ray_speed.py`)', body)


if __name__ == '__main__':
  main()
