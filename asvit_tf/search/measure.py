"""What the search and the scaling measure on a topology, and who measures it.

A `Measurement` holds the metric values of one topology: any of L^E ('length', higher is
better), κ_Θ ('ntk', lower is better), 'params', 'macs', whether it is bad, and the
per-repeat values of L^E and κ_Θ. A `MeasureFn` maps (topology, seed) to a `Measurement`.

An `Evaluator` measures many (topology, seed) pairs and yields each result as soon as it is
complete; `close` stops what it started. The run driver (`asvit_tf.search.run`) talks to an
evaluator only, so where the measurements happen is one choice: `SerialEvaluator` runs a
`MeasureFn` in this process (the tests' hand-made metrics, one-worker runs),
`asvit_tf.search.parallel.PoolMeasure` in local worker processes,
`asvit_tf.search.ray_evaluator.RayEvaluator` as Ray tasks; the last two measure each
complexity metric of a topology as a job of its own (`MetricJobs`).
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
from typing import (Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Protocol,
                    Sequence, Tuple)

import numpy as np

from asvit_tf import arch as arch_lib
from asvit_tf import averaging
from asvit_tf.errors import UserInputError
from asvit_tf.models import size

METRICS = ('length', 'ntk', 'params', 'macs')
COMPLEXITY = ('length', 'ntk')  # the metrics that need TensorFlow (the others are counted)


@dataclasses.dataclass(frozen=True)
class Measurement:
  """The metrics of one topology; a metric not measured is None.

  The field order is the key order of the search's JSONL records (`as_dict`).
  """
  length: Optional[float] = None
  ntk: Optional[float] = None
  params: Optional[int] = None
  macs: Optional[int] = None
  bad: bool = False
  length_values: Optional[List[float]] = None
  ntk_values: Optional[List[float]] = None

  @classmethod
  def from_dict(cls, values: Mapping[str, object]) -> 'Measurement':
    """From a record or a saved state entry (keys other than the fields are ignored)."""
    names = [f.name for f in dataclasses.fields(cls)]
    return cls(**{k: values[k] for k in names if k in values})

  def as_dict(self) -> Dict[str, object]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

  def cleaned(self) -> 'Measurement':
    """As it is logged: a non-finite L^E or κ_Θ becomes None, `bad` a bool."""
    finite = lambda x: x if x is None or math.isfinite(x) else None
    return dataclasses.replace(self, length=finite(self.length), ntk=finite(self.ntk),
                               bad=bool(self.bad))

  def merge(self, other: 'Measurement') -> 'Measurement':
    """Both parts of a topology measured apart: the other's measured metrics override,
    bad if either is."""
    taken = {k: v for k, v in other.as_dict().items() if v is not None and k != 'bad'}
    return dataclasses.replace(self, bad=bool(self.bad or other.bad), **taken)


MeasureFn = Callable[[arch_lib.Topology, int], Measurement]
Item = Tuple[arch_lib.Topology, int]  # (topology, seed)


class Evaluator(Protocol):
  """Measures topologies; the run driver's only way to get metrics."""

  def measure(self, items: Sequence[Item]) -> Iterator[Tuple[int, Measurement]]:
    """Yields (index into `items`, its measurement) for each item, in order of completion."""

  def close(self) -> None:
    """Stops what the evaluator started (processes, connections); it may be used again."""


class SerialEvaluator:
  """An `Evaluator` that calls a `MeasureFn` in this process, one item after the other."""

  def __init__(self, measure_fn: MeasureFn):
    self.measure_fn = measure_fn

  def measure(self, items: Sequence[Item]) -> Iterator[Tuple[int, Measurement]]:
    for i, item in enumerate(items):  # (topology, seed), or any arguments of measure_fn
      yield i, self.measure_fn(*item)

  def close(self) -> None:
    pass


def check_metrics(metrics: Sequence[str]) -> tuple:
  """`metrics` as a tuple; a ValueError names any not in METRICS."""
  unknown = [m for m in metrics if m not in METRICS]
  if unknown:
    raise UserInputError(f'unknown metric(s) {unknown}; known: {METRICS}')
  return tuple(metrics)


def make_measure(metrics: Sequence[str], image_size: int = 224, repeats: int = 5,
                 images: Optional[np.ndarray] = None, batch_size: int = 16,
                 num_points: int = 10, num_classes: int = 1000,
                 share_embedding: bool = False) -> MeasureFn:
  """The default `MeasureFn`: the metrics of `asvit_tf.complexity`, counted params/MACs.

  Args:
    metrics: subset of METRICS to compute (the others are left None).
    image_size: square input side for L^E, κ_Θ and the MAC count.
    repeats: independent initialisations each complexity metric averages over.
    images: optional [B, H, W, 3] batch for κ_Θ (default: Gaussian noise).
    share_embedding: the patch-embedding conv is drawn once per topology and kept for all
      repeats, as the authors' code does (default: every weight re-drawn per repeat;
      docs/design.md §4).
  """
  metrics = check_metrics(metrics)

  def measure(topology: arch_lib.Topology, seed: int,
              repeat_range: Optional[Tuple[int, int]] = None) -> Measurement:
    # repeat_range: only those repeats of L^E and κ_Θ (a part of a split job, `MetricJobs`).
    out: Dict[str, object] = {'bad': False}
    if 'length' in metrics or 'ntk' in metrics:
      from asvit_tf import complexity  # pylint: disable=g-import-not-at-top
    if 'length' in metrics:
      r = complexity.length_distortion(topology, image_size=image_size, num_points=num_points,
                                       repeats=repeats, seed=seed,
                                       share_embedding=share_embedding,
                                       repeat_range=repeat_range)
      out['length'] = float(r.mean)
      out['length_values'] = [float(v) for v in r.values]
      out['bad'] = out['bad'] or bool(r.bad) or not math.isfinite(r.mean)
    if 'ntk' in metrics:
      r = complexity.ntk_condition_number(topology, image_size=image_size, repeats=repeats,
                                          seed=seed, images=images, batch_size=batch_size,
                                          share_embedding=share_embedding,
                                          repeat_range=repeat_range)
      out['ntk'] = float(r.mean)
      out['ntk_values'] = [float(v) for v in r.values]
      out['bad'] = out['bad'] or bool(r.bad) or not math.isfinite(r.mean)
    if 'params' in metrics:
      out['params'] = size.estimate_params(topology, num_classes=num_classes)
    if 'macs' in metrics:
      out['macs'] = size.count_macs(topology, image_size, num_classes)
    return Measurement(**out)

  return measure


RepeatRange = Optional[Tuple[int, int]]  # (start, stop) of a metric's repeats; None: all
# (index of the item, complexity metric, (topology, seed), the repeats the job measures)
Job = Tuple[int, str, Item, RepeatRange]


def longest_first(items: Sequence[Item], metrics: Sequence[str],
                  image_size: int) -> List[Tuple[int, str]]:
  """(item index, metric) jobs, the costliest first: workers take them in this order, so
  the last ones to start are short and no worker waits long for another at the end of a
  grow step. Cost: MACs of a forward pass at `image_size`, κ_Θ before L^E (its 16 images
  forward and backward cost more than the curve's 9 points forward-mode)."""
  macs = [size.count_macs(t, image_size, None) for t, _ in items]
  order = {'ntk': 0, 'length': 1}
  jobs = [(i, m) for i in range(len(items)) for m in metrics]
  return sorted(jobs, key=lambda job: (-macs[job[0]], order.get(job[1], 2), job[0]))


def planned_jobs(items: Sequence[Item], metrics: Sequence[str], image_size: int,
                 repeats: int, workers: int = 1) -> List[Tuple[int, str, RepeatRange]]:
  """(item index, metric, repeats) jobs in the order workers take them (`longest_first`).

  When the jobs are fewer than twice the `workers` (a search step measures one topology's
  L^E and κ_Θ on two workers), each κ_Θ of more than one repeat runs as two jobs: its first
  repeats − 1 first, its last repeat after every other job, so the worker that measured L^E
  takes it while the other still measures the rest. κ_Θ costs ~3× L^E at 224 px, so
  otherwise one worker waits for the other (docs/benchmarks.md: 19 % less wall per search
  step). Each repeat's value depends only on (topology, seed, repeat), so the parts put
  together are the whole measurement (`joined`). More jobs than that balance by themselves,
  and a split would pay a κ_Θ's building and tracing twice.
  """
  jobs = [(i, m, None) for i, m in longest_first(items, metrics, image_size)]
  if repeats < 2 or len(jobs) >= 2 * workers or 'ntk' not in metrics:
    return jobs
  head = [(i, m, (0, repeats - 1) if m == 'ntk' else None) for i, m, _ in jobs]
  return head + [(i, m, (repeats - 1, repeats)) for i, m, _ in jobs if m == 'ntk']


def joined(metric: str, parts: Sequence[Tuple[int, Measurement]]) -> Measurement:
  """`metric` of a topology from the parts measured apart, each (its first repeat, its
  measurement): the values in repeat order and their mean, as one measurement gives them."""
  values = [v for _, part in sorted(parts, key=lambda p: p[0])
            for v in getattr(part, f'{metric}_values')]
  mean = averaging.repeat_mean(values)
  return Measurement(**{metric: mean, f'{metric}_values': values},
                     bad=any(part.bad for _, part in parts) or not math.isfinite(mean))


class MetricJobs:
  """The part of an evaluator that runs each complexity metric of each topology as a job of
  its own (local worker processes, Ray tasks): the metrics split into jobs and counts, and
  the merging of a topology's parts.

  Args: as `make_measure`. `settings` is what a job's `make_measure((metric,), **settings)`
  takes.
  """

  def __init__(self, metrics: Sequence[str], image_size: int = 224, repeats: int = 5,
               images: Optional[np.ndarray] = None, batch_size: int = 16,
               num_points: int = 10, num_classes: int = 1000, share_embedding: bool = False):
    self.metrics = check_metrics(metrics)
    self.complexity = tuple(m for m in self.metrics if m in COMPLEXITY)
    self.counts = make_measure(tuple(m for m in self.metrics if m not in COMPLEXITY),
                               image_size=image_size, num_classes=num_classes)
    self.settings = dict(image_size=image_size, repeats=repeats, images=images,
                         batch_size=batch_size, num_points=num_points,
                         num_classes=num_classes, share_embedding=bool(share_embedding))

  def measure(self, items: Iterable[Item],
              run: Callable[[List[Job]], Iterator[Tuple[int, Measurement]]],
              workers: int = 1) -> Iterator[Tuple[int, Measurement]]:
    """Yields (index into `items`, measurement) for each topology, in order of completion.

    `run(jobs)` runs the jobs in their order (`planned_jobs` for `workers` workers) and
    yields (job index, the job's measurement) as each completes; it is closed when this
    generator is.
    """
    items = [(arch_lib.as_topology(t), int(s)) for t, s in items]
    merged = [self.counts(t, s) for t, s in items]
    if not self.complexity:
      yield from enumerate(merged)
      return
    jobs = [(i, metric, items[i], part) for i, metric, part in planned_jobs(
        items, self.complexity, self.settings['image_size'], self.settings['repeats'],
        workers)]
    waiting = collections.Counter(job[0] for job in jobs)
    split: Dict[Tuple[int, str], List[Tuple[int, Measurement]]] = {}
    with contextlib.closing(run(jobs)) as parts:
      for j, part in parts:
        i, metric, _, repeat_range = jobs[j]
        if repeat_range is None:
          merged[i] = merged[i].merge(part)
        else:
          split.setdefault((i, metric), []).append((repeat_range[0], part))
        waiting[i] -= 1
        if not waiting[i]:
          for name in self.complexity:
            if (i, name) in split:
              merged[i] = merged[i].merge(joined(name, split.pop((i, name))))
          yield i, merged[i]
