"""The mean over repeats every complexity measure reports (`complexity.MetricResult`), in a
module without TensorFlow: the search's parent process puts together the parts of a
measurement its workers ran apart (`search.measure.MetricJobs`) and gets the same mean."""
from __future__ import annotations

import math
from typing import Sequence


def repeat_mean(values: Sequence[float]) -> float:
  """The mean of `values`, exactly rounded (math.fsum), so it does not depend on how the
  values were grouped; nan if there are none or any is nan, a signed inf if one is and no
  inf of the other sign is (the plain mean's answer, without numpy's warnings)."""
  values = [float(v) for v in values]
  if not values:
    return math.nan
  if all(math.isfinite(v) for v in values):
    return math.fsum(values) / len(values)
  return (math.nan if any(math.isnan(v) for v in values)
          or (math.inf in values and -math.inf in values)
          else next(v for v in values if math.isinf(v)))
