"""Measuring topologies in worker processes: an `Evaluator` that uses every core.

Measuring a topology is two independent jobs (L^E and κ_Θ), each of which spends seconds in
single-threaded Python (building the Keras model, tracing the forward-mode and per-image
gradient functions) before the multi-threaded execution of its repeats. One process leaves
a core idle for much of that time. `PoolMeasure` runs each (metric, topology, seed) job in
one of `workers` spawned processes, each with an equal share of the intra-op threads.
`measure(items)` (the `asvit_tf.search.measure.Evaluator` protocol) submits every metric of
every topology at once (the search's one topology: its L^E and κ_Θ side by side; a grow step:
all its candidates) and yields each topology's merged metrics as soon as it is complete, so
the caller can save it.

A metric's value depends only on (topology, seed, settings): every repeat re-draws its weights
and inputs from the seed (`asvit_tf.complexity.network`), never from a process's history, so
the result does not depend on which worker measured what. Their number sets the intra-op
threads of each, which may round the last bits differently (about 1e-15 relative).

The workers themselves (spawned, dying with their parent, their threads set, the Keras
session freed after every call, a dead one as one `WorkerDied`) are `PoolCalls`, which runs
any picklable function: `PoolMeasure` gives it (metric, topology, seed) jobs, `asvit
correlate --workers` one call per network of its table (a PiT or an As-ViT).
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from asvit_tf import arch as arch_lib
from asvit_tf.errors import UserFacingError
from asvit_tf.search import measure as measure_lib

# The workers are replaced (between two calls, never during one) once they have made so many
# measurements each, a safety net only: a worker no longer grows per measurement (it did by
# ~35-65 MB, a custom gradient registered per traced κ_Θ, until
# `network.releasing_custom_gradients`; 30 different search-space topologies in one process
# plateau within ~10 measurements: docs/benchmarks.md, tests/search/test_worker_memory.py).
# 1000 is more than a paper-preset run gives a worker (a 500-step search: at most 1000 jobs in
# all), so no search or grow of that size replaces its workers. (Not `max_tasks_per_child`:
# its replacement of a worker can hang the pool in Python 3.11.)
TASKS_PER_WORKER = 1000
_worker_measures: Dict[str, measure_lib.MeasureFn] = {}


class WorkerDied(UserFacingError):
  """A measuring process died (killed, e.g. for memory); the pool is closed."""


def default_workers() -> int:
  """One worker per core this process may use."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # not Linux
    return max(1, os.cpu_count() or 1)


def die_with_parent(parent: int):
  """A worker process's initializer. Linux: the kernel kills this worker when the process
  `parent` that started it dies (a killed search must not leave workers computing for
  nobody); if it died already, exit now."""
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    import signal  # pylint: disable=g-import-not-at-top
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
  except (OSError, AttributeError):  # not Linux: the pool's own shutdown has to do
    pass
  if os.getppid() != parent:
    os._exit(1)  # pylint: disable=protected-access


def _init_worker(parent: int, threads: int, setup: Optional[Callable], setup_args: tuple):
  import logging  # pylint: disable=g-import-not-at-top
  die_with_parent(parent)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(threads)
  logging.getLogger('tensorflow').setLevel(logging.ERROR)
  if setup is not None:
    setup(*setup_args)


def _call_in_worker(fn: Callable, *args):
  import gc  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  try:
    return fn(*args)
  finally:
    # Each measurement leaves a model and its traced functions behind: free them, so a
    # worker that measures hundreds of networks does not grow.
    tf_keras.backend.clear_session()
    gc.collect()


class PoolCalls:
  """Calls of one function in `workers` spawned processes (an `Evaluator` of argument
  tuples; `ray_evaluator.RayCalls` is the same on Ray).

  `measure(items)` runs `fn(*item)` for each item in a worker and yields (index into
  `items`, result) in order of completion. A worker dies with the process that started it
  (`die_with_parent`), sets its intra-op and inter-op threads before TensorFlow's first
  operation, then runs `setup(*setup_args)` once (state every call of that worker reads),
  and frees the Keras session after each call. `fn`, `setup` and the arguments must pickle
  (module-level functions). A worker that dies raises `WorkerDied` in the caller and closes
  the pool; the next `measure` starts new workers.

  Args:
    fn: the measurement.
    workers: processes (>= 1); started at the first call, not before.
    threads: intra-op threads of each (default max(1, cores // workers)).
    setup, setup_args: run once in each worker after the threads are set.
  """

  def __init__(self, fn: Callable, workers: int, threads: Optional[int] = None,
               setup: Optional[Callable] = None, setup_args: tuple = ()):
    if workers < 1:
      raise ValueError(f'workers must be >= 1, got {workers}')
    if threads is not None and threads < 1:
      raise ValueError(f'threads must be >= 1, got {threads}')
    self.fn, self.workers = fn, int(workers)
    self.threads = threads or max(1, default_workers() // self.workers)
    self._setup = (setup, tuple(setup_args))
    self._pool: Optional[concurrent.futures.ProcessPoolExecutor] = None
    self._tasks = 0  # submitted to the current workers

  def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
    if self._pool is not None and self._tasks >= TASKS_PER_WORKER * self.workers:
      self.close()
    if self._pool is None:
      self._tasks = 0
      self._pool = concurrent.futures.ProcessPoolExecutor(
          max_workers=self.workers, mp_context=multiprocessing.get_context('spawn'),
          initializer=_init_worker, initargs=(os.getpid(), self.threads, *self._setup))
    return self._pool

  def worker_pids(self) -> List[int]:
    """The process ids of the running workers (none before the first call)."""
    if self._pool is None:
      return []
    return [p.pid for p in list(self._pool._processes.values())]  # pylint: disable=protected-access

  def measure(self, items: Iterable[Sequence]) -> Iterator[Tuple[int, object]]:
    """Yields (index into `items`, fn(*item)) for each item, in order of completion."""
    items = [tuple(item) for item in items]
    if not items:
      return
    pool = self._executor()
    futures = {}
    for i, item in enumerate(items):
      futures[pool.submit(_call_in_worker, self.fn, *item)] = i
      self._tasks += 1
    try:
      for future in concurrent.futures.as_completed(futures):
        try:
          result = future.result()
        except concurrent.futures.process.BrokenProcessPool:
          self.close()
          raise WorkerDied('a measuring worker died (out of memory?); what was measured is '
                           'saved: run the same command again, with fewer `workers` if '
                           'memory is short') from None
        yield futures[future], result
    finally:
      for future in futures:
        future.cancel()

  def close(self):
    """Stops the workers (the next `measure` starts new ones)."""
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)
      self._pool = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _make_worker_measures(settings: Dict):
  for metric in measure_lib.COMPLEXITY:
    _worker_measures[metric] = measure_lib.make_measure((metric,), **settings)


def _measure_in_worker(metric: str, arch: str, seed: int,
                      repeat_range: measure_lib.RepeatRange = None) -> measure_lib.Measurement:
  return _worker_measures[metric](arch_lib.as_topology(arch), seed, repeat_range)


class PoolMeasure:
  """An `Evaluator` whose complexity metrics run in `workers` processes.

  Args:
    metrics: subset of `measure.METRICS`; 'params' and 'macs' are counted here.
    workers: processes (>= 1).
    threads: intra-op threads of each (default max(1, cores // workers)).
    image_size, repeats, images, batch_size, num_points, num_classes, share_embedding: as
      `make_measure`.

  Use it as a context manager (or call `close`) to stop the workers. A worker that dies
  (e.g. out of memory) raises `WorkerDied` in the caller; what was saved stays saved.
  """

  def __init__(self, metrics: Sequence[str], workers: int, image_size: int = 224,
               repeats: int = 5, images: Optional[np.ndarray] = None, batch_size: int = 16,
               num_points: int = 10, num_classes: int = 1000, threads: Optional[int] = None,
               share_embedding: bool = False):
    self._jobs = measure_lib.MetricJobs(metrics, image_size, repeats, images, batch_size,
                                        num_points, num_classes, share_embedding)
    # The settings (and the κ_Θ images) reach each worker once, not with every job.
    self._calls = PoolCalls(_measure_in_worker, workers, threads,
                            setup=_make_worker_measures, setup_args=(self._jobs.settings,))
    self.metrics, self.workers, self.threads = (self._jobs.metrics, self._calls.workers,
                                                self._calls.threads)

  def worker_pids(self) -> List[int]:
    """The process ids of the running workers (none before the first measurement)."""
    return self._calls.worker_pids()

  def measure(self, items: Iterable[measure_lib.Item]
              ) -> Iterator[Tuple[int, measure_lib.Measurement]]:
    """Yields (index into `items`, measurement) for each topology, in order of completion."""
    return self._jobs.measure(items, self._run, self.workers)

  def _run(self, jobs: List[measure_lib.Job]
           ) -> Iterator[Tuple[int, measure_lib.Measurement]]:
    calls = [(metric, str(topology), seed, part)
             for _, metric, (topology, seed), part in jobs]
    return self._calls.measure(calls)

  def close(self):
    self._calls.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
