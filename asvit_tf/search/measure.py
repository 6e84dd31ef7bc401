"""What the search and the scaling measure on a topology: a `MeasureFn`.

A `MeasureFn` maps (topology, seed) to a dict of metric values: any of 'length' (L^E,
higher is better), 'ntk' (κ_Θ, lower is better), 'params', 'macs', plus 'bad' (bool) and the
per-repeat values under '<metric>_values'. Search and grow take it as a parameter, so tests
use hand-made metrics and the defaults use `asvit_tf.complexity`.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from asvit_tf import arch as arch_lib
from asvit_tf.errors import UserInputError
from asvit_tf.models import size

MeasureFn = Callable[[arch_lib.Topology, int], Dict[str, object]]
METRICS = ('length', 'ntk', 'params', 'macs')


def check_metrics(metrics: Sequence[str]) -> tuple:
  """`metrics` as a tuple; a ValueError names any not in METRICS."""
  unknown = [m for m in metrics if m not in METRICS]
  if unknown:
    raise UserInputError(f'unknown metric(s) {unknown}; known: {METRICS}')
  return tuple(metrics)


def make_measure(metrics: Sequence[str], image_size: int = 224, repeats: int = 5,
                 images: Optional[np.ndarray] = None, batch_size: int = 16,
                 num_points: int = 10, num_classes: int = 1000) -> MeasureFn:
  """The default `MeasureFn`: the metrics of `asvit_tf.complexity`, counted params/MACs.

  Args:
    metrics: subset of METRICS to compute (the others are left out of the result).
    image_size: square input side for L^E, κ_Θ and the MAC count.
    repeats: independent initialisations each complexity metric averages over.
    images: optional [B, H, W, 3] batch for κ_Θ (default: Gaussian noise).
  """
  metrics = check_metrics(metrics)

  def measure(topology: arch_lib.Topology, seed: int) -> Dict[str, object]:
    out: Dict[str, object] = {'bad': False}
    if 'length' in metrics or 'ntk' in metrics:
      from asvit_tf import complexity  # pylint: disable=g-import-not-at-top
    if 'length' in metrics:
      r = complexity.length_distortion(topology, image_size=image_size, num_points=num_points,
                                       repeats=repeats, seed=seed)
      out['length'] = float(r.mean)
      out['length_values'] = [float(v) for v in r.values]
      out['bad'] = out['bad'] or bool(r.bad) or not math.isfinite(r.mean)
    if 'ntk' in metrics:
      r = complexity.ntk_condition_number(topology, image_size=image_size, repeats=repeats,
                                          seed=seed, images=images, batch_size=batch_size)
      out['ntk'] = float(r.mean)
      out['ntk_values'] = [float(v) for v in r.values]
      out['bad'] = out['bad'] or bool(r.bad) or not math.isfinite(r.mean)
    if 'params' in metrics:
      out['params'] = size.estimate_params(topology, num_classes=num_classes)
    if 'macs' in metrics:
      out['macs'] = size.count_macs(topology, image_size, num_classes)
    return out

  return measure


def measure_from_config(metrics: Sequence[str], config, workers: int = 1,
                        threads: Optional[int] = None):
  """`make_measure` with a run config's image_size, repeats, batch_size and its --data batch
  (loaded, and so checked, whenever given, though only κ_Θ reads it).

  With `workers` > 1 the complexity metrics run in that many processes
  (`asvit_tf.search.parallel.PoolMeasure`, which also has `map`), each with `threads`
  intra-op threads (default: its share of the cores); close it when done.
  """
  from asvit_tf.search import data as data_lib  # pylint: disable=g-import-not-at-top
  images = data_lib.load_batch(config.data, config.data_dir, config.image_size,
                               config.batch_size, config.seed)
  if workers > 1:
    from asvit_tf.search import parallel  # pylint: disable=g-import-not-at-top
    return parallel.PoolMeasure(metrics, workers, config.image_size, config.repeats, images,
                                config.batch_size, threads=threads)
  return make_measure(metrics, config.image_size, config.repeats, images, config.batch_size)
