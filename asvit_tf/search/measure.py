"""What the search and the scaling measure on a topology, and who measures it.

A `Measurement` holds the metric values of one topology: any of L^E ('length', higher is
better), κ_Θ ('ntk', lower is better), 'params', 'macs', whether it is bad, and the
per-repeat values of L^E and κ_Θ. A `MeasureFn` maps (topology, seed) to a `Measurement`.

An `Evaluator` measures many (topology, seed) pairs and yields each result as soon as it is
complete; `close` stops what it started. The run driver (`asvit_tf.search.run`) talks to an
evaluator only, so where the measurements happen is one choice: `SerialEvaluator` runs a
`MeasureFn` in this process (the tests' hand-made metrics, one-worker runs),
`asvit_tf.search.parallel.PoolMeasure` in local worker processes.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Protocol, Sequence, Tuple

import numpy as np

from asvit_tf import arch as arch_lib
from asvit_tf.errors import UserInputError
from asvit_tf.models import size

METRICS = ('length', 'ntk', 'params', 'macs')


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
    for i, (topology, seed) in enumerate(items):
      yield i, self.measure_fn(topology, seed)

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

  def measure(topology: arch_lib.Topology, seed: int) -> Measurement:
    out: Dict[str, object] = {'bad': False}
    if 'length' in metrics or 'ntk' in metrics:
      from asvit_tf import complexity  # pylint: disable=g-import-not-at-top
    if 'length' in metrics:
      r = complexity.length_distortion(topology, image_size=image_size, num_points=num_points,
                                       repeats=repeats, seed=seed,
                                       share_embedding=share_embedding)
      out['length'] = float(r.mean)
      out['length_values'] = [float(v) for v in r.values]
      out['bad'] = out['bad'] or bool(r.bad) or not math.isfinite(r.mean)
    if 'ntk' in metrics:
      r = complexity.ntk_condition_number(topology, image_size=image_size, repeats=repeats,
                                          seed=seed, images=images, batch_size=batch_size,
                                          share_embedding=share_embedding)
      out['ntk'] = float(r.mean)
      out['ntk_values'] = [float(v) for v in r.values]
      out['bad'] = out['bad'] or bool(r.bad) or not math.isfinite(r.mean)
    if 'params' in metrics:
      out['params'] = size.estimate_params(topology, num_classes=num_classes)
    if 'macs' in metrics:
      out['macs'] = size.count_macs(topology, image_size, num_classes)
    return Measurement(**out)

  return measure
