"""`MetricResult`: what every complexity measure returns."""
from __future__ import annotations

import dataclasses
import math
from typing import List, Sequence

from asvit_tf import averaging


@dataclasses.dataclass(frozen=True)
class MetricResult:
  """One complexity measure averaged over independent initialisations.

  Attributes:
    mean: the mean of `values` (nan or inf when a repeat was not finite).
    values: one float per repeat (per initialisation and input).
    bad: True when any value is not finite (the network is reported, not raised).
    seconds: wall time of the whole measurement (build, trace and all repeats).
  """
  mean: float
  values: List[float]
  bad: bool
  seconds: float = 0.0

  @classmethod
  def from_values(cls, values: Sequence[float], seconds: float = 0.0) -> 'MetricResult':
    values = [float(v) for v in values]
    bad = not values or not all(math.isfinite(v) for v in values)
    return cls(mean=averaging.repeat_mean(values), values=values, bad=bad,
               seconds=float(seconds))
