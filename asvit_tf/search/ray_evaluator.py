"""Measuring topologies on a Ray cluster: an `Evaluator` whose jobs are Ray tasks.

Like `parallel.PoolMeasure`, each (metric, topology, seed) job (L^E, κ_Θ) is one task, the
costliest first, and `measure(items)` yields each topology's merged metrics as soon as both
of its jobs are back. A task asks for `cpus_per_measurement` CPUs and `gpus_per_measurement`
GPUs; Ray places it on any node that has them, and runs it again elsewhere (up to
`max_retries` times) if its worker or its node dies, so a run survives the loss of a
worker node. A metric's value depends only on (topology, seed, settings) (see
`parallel`): a retried task, or one measured on another node, gives the same value, and the
same seed gives the records of `--backend=local` (to the rounding of the intra-op thread
count: each task uses as many threads as its CPUs). `RayCalls` is the same for any
function (`asvit correlate --backend=ray`: a task per network).

Ray is an optional dependency (`pip install -e ".[ray]"`), imported when first needed.
Without an address, a one-machine Ray is started for the run, bound to 127.0.0.1, and shut
down by `close`; with one (`host:port` of a cluster's head, or 'auto'), the run connects
to it and leaves it running. Every node must have asvit-tf and the same versions installed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from asvit_tf import arch as arch_lib
from asvit_tf.errors import UserFacingError
from asvit_tf.errors import UserInputError
from asvit_tf.search import measure as measure_lib
from asvit_tf.search import parallel

# A local Ray's shared-object store: it holds only the κ_Θ image batch and the results.
OBJECT_STORE_BYTES = 200 * 1024 * 1024
# A worker process is replaced after so many measurements (the local pool's number).
TASKS_PER_WORKER = parallel.TASKS_PER_WORKER
# Runs of a task after its worker or node died; a task that raises is not run again.
MAX_RETRIES = 3


class RayUnavailable(UserFacingError):
  """--backend=ray without Ray installed."""


class MeasurementLost(UserFacingError):
  """A measurement's worker died more often than it may be retried."""


@dataclasses.dataclass(frozen=True)
class RayOptions:
  """Where and with what a Ray measurement runs (the --ray_* flags)."""
  address: str = ''  # '' : a one-machine Ray started for the run
  cpus_per_measurement: float = 1.0
  gpus_per_measurement: float = 0.0
  max_retries: int = MAX_RETRIES

  def validate(self) -> 'RayOptions':
    if not self.cpus_per_measurement > 0:
      raise UserInputError('`cpus_per_measurement` must be > 0, got '
                       f'{self.cpus_per_measurement}')
    if self.gpus_per_measurement < 0:
      raise UserInputError('`gpus_per_measurement` must be >= 0, got '
                       f'{self.gpus_per_measurement}')
    if self.max_retries < 0:
      raise UserInputError(f'`max_retries` must be >= 0, got {self.max_retries}')
    return self


def import_ray():
  """The `ray` module, or RayUnavailable in one line."""
  try:
    import ray  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise RayUnavailable('measuring on Ray needs Ray, which is not installed: pip install -e '
                         '".[ray]" (or pip install "ray[default]")') from None
  return ray


# What a one-machine Ray needs to keep every process on the loopback address (else Ray
# looks up and binds the machine's network address) and to send no usage report. Ray's
# processes read them from the environment they are started with; the driver's `ray`
# reads the first at import into a module constant.
_CLUSTER_VAR = 'RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'
_ONE_MACHINE_ENV = {_CLUSTER_VAR: '0', 'RAY_USAGE_STATS_ENABLED': '0'}


@contextlib.contextmanager
def _one_machine_settings(ray):
  """`_ONE_MACHINE_ENV` (where not set by the user) in force while the one-machine Ray
  starts, and then undone: the processes `ray.init` starts inherit them, the caller's
  environment and `ray` module are left as they were (a leaked variable would, e.g., make a
  later `ray start --address=...` from this process refuse to join a cluster)."""
  added = {k: v for k, v in _ONE_MACHINE_ENV.items() if k not in os.environ}
  constants = ray._private.ray_constants  # pylint: disable=protected-access
  cluster = constants.ENABLE_RAY_CLUSTER
  os.environ.update(added)
  constants.ENABLE_RAY_CLUSTER = os.environ[_CLUSTER_VAR].lower() in ('1', 'true')
  try:
    yield
  finally:
    constants.ENABLE_RAY_CLUSTER = cluster
    for k in added:
      os.environ.pop(k, None)


_threads_set: List[int] = []  # the intra-op threads of this worker process, once set


def _measure_task(fn: Callable, threads: int, *args):
  """Runs in a Ray worker: `fn(*args)` (a measurement) with `threads` intra-op threads."""
  import gc  # pylint: disable=g-import-not-at-top
  import logging  # pylint: disable=g-import-not-at-top
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  if not _threads_set:  # TensorFlow takes them only before its first operation
    try:
      tf.config.threading.set_intra_op_parallelism_threads(threads)
      tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # this worker ran TensorFlow before (another task): as it is
      pass
    logging.getLogger('tensorflow').setLevel(logging.ERROR)
    _threads_set.append(threads)
  try:
    return fn(*args)
  finally:
    tf_keras.backend.clear_session()
    gc.collect()


def _measure_metric(metric: str, arch: str, seed: int, settings: Dict,
                    repeat_range: measure_lib.RepeatRange = None) -> measure_lib.Measurement:
  """One metric of one topology (only the repeats of `repeat_range`, if given)."""
  return measure_lib.make_measure((metric,), **settings)(arch_lib.as_topology(arch), seed,
                                                          repeat_range)


class RayCalls:
  """Calls of one function, each a Ray task (an `Evaluator` of argument tuples).

  `measure(items)` runs `fn(*item)` for each item as a task that reserves the options'
  CPUs and GPUs and yields (index into `items`, result) in order of completion; a task
  whose worker or node dies is run again elsewhere. `fn` and its arguments must pickle
  (a module-level function; an `ObjectRef` among the arguments is resolved).

  Args:
    fn: the measurement.
    options: the cluster's address and each call's resources.
    num_cpus: CPUs of the one-machine Ray started when `options.address` is empty
      (default: the cores this process may use).
    describe: names item i in the error of a lost call.
  """

  def __init__(self, fn: Callable, options: RayOptions = RayOptions(),
               num_cpus: Optional[int] = None,
               describe: Callable[[Sequence], str] = lambda item: repr(item)):
    self.fn, self.options, self.describe = fn, options.validate(), describe
    self._num_cpus = num_cpus
    self._ray = None  # the module, once connected
    self._started = False  # this object called ray.init (and so calls ray.shutdown)
    self._task = None

  def connect(self):
    """The `ray` module, connected (a one-machine Ray started if there is no address)."""
    if self._ray is not None:
      return self._ray
    ray = import_ray()
    if not ray.is_initialized():
      if self.options.address:
        try:
          ray.init(address=self.options.address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
          raise UserFacingError(f'`address` {self.options.address}: cannot connect to '
                                f'a Ray cluster there ({e})') from None
      else:
        with _one_machine_settings(ray):
          ray.init(address='local', num_cpus=self._num_cpus or parallel.default_workers(),
                   include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
                   _node_ip_address='127.0.0.1', log_to_driver=False)
      self._started = True
    self._task = ray.remote(max_calls=TASKS_PER_WORKER)(_measure_task).options(
        num_cpus=self.options.cpus_per_measurement,
        num_gpus=self.options.gpus_per_measurement,
        max_retries=self.options.max_retries, retry_exceptions=False)
    self._ray = ray
    return ray

  def measure(self, items: Iterable[Sequence]) -> Iterator[Tuple[int, object]]:
    """Yields (index into `items`, fn(*item)) for each item, in order of completion."""
    items = [tuple(item) for item in items]
    if not items:
      return
    ray = self.connect()
    threads = max(1, int(self.options.cpus_per_measurement))
    refs = {self._task.remote(self.fn, threads, *item): i for i, item in enumerate(items)}
    pending = list(refs)
    try:
      while pending:
        (ref,), pending = ray.wait(pending, num_returns=1)
        i = refs[ref]
        try:
          result = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # the measurement itself raised
          raise e.as_instanceof_cause() from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError) as e:
          raise MeasurementLost(
              f'a measurement of {self.describe(items[i])} was lost '
              f'{self.options.max_retries + 1} times ({type(e).__name__}); what was '
              'measured is saved: run the same command again') from None
        yield i, result
    finally:
      for ref in pending:
        ray.cancel(ref)

  def put(self, value):
    """`value` in the object store (sent to the nodes once, not with every call)."""
    return self.connect().put(value)

  def close(self):
    """Disconnects (and stops the one-machine Ray this object started)."""
    if self._ray is not None and self._started:
      self._ray.shutdown()
    self._ray = self._task = None
    self._started = False

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class RayEvaluator:
  """An `Evaluator` whose complexity metrics run as Ray tasks (one per metric and topology).

  Args:
    metrics: subset of `measure.METRICS`; 'params' and 'macs' are counted here.
    options: the cluster's address and each measurement's resources.
    image_size, repeats, images, batch_size, num_points, num_classes, share_embedding: as
      `make_measure`.
    num_cpus: CPUs of the one-machine Ray started when `options.address` is empty
      (default: the cores this process may use).
  """

  def __init__(self, metrics: Sequence[str], options: RayOptions = RayOptions(),
               image_size: int = 224, repeats: int = 5, images: Optional[np.ndarray] = None,
               batch_size: int = 16, num_points: int = 10, num_classes: int = 1000,
               num_cpus: Optional[int] = None, share_embedding: bool = False):
    self._calls = RayCalls(_measure_metric, options, num_cpus,
                           describe=lambda item: item[1])
    self.options = self._calls.options
    self._jobs = measure_lib.MetricJobs(metrics, image_size, repeats, images, batch_size,
                                        num_points, num_classes, share_embedding)
    self.metrics = self._jobs.metrics
    self._settings_ref = None

  def measure(self, items: Iterable[measure_lib.Item]
              ) -> Iterator[Tuple[int, measure_lib.Measurement]]:
    """Yields (index into `items`, measurement) for each topology, in order of completion."""
    return self._jobs.measure(items, self._run)

  def _run(self, jobs: List[measure_lib.Job]
           ) -> Iterator[Tuple[int, measure_lib.Measurement]]:
    if self._settings_ref is None:
      self._settings_ref = self._calls.put(self._jobs.settings)
    calls = [(metric, str(topology), seed, self._settings_ref, part)
             for _, metric, (topology, seed), part in jobs]
    yield from self._calls.measure(calls)

  def close(self):
    """Disconnects (and stops the one-machine Ray this evaluator started)."""
    self._calls.close()
    self._settings_ref = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
