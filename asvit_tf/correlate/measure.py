"""Measuring the networks of a table, resumably: one JSON line per measured network.

`OUT/settings.json` fixes the settings of a run (written once, atomically); a rerun with
other settings is refused with the differences listed. `OUT/measures.jsonl` gets one line per
network, appended with a single write and an fsync once the network is measured: a killed run
loses at most the network it was measuring, and a rerun skips every network already there (a
line torn by a kill mid-write is cut off on load). Every network is measured with the same
seed, hence the same input curves and NTK batches, and a network's numbers do not depend on
which other networks a run measured, so a resumed run gives the same numbers as one
uninterrupted run.

The networks are measured in this process, one after the other (`workers` 1), or side by
side, one call per network: in `workers` > 1 local processes (the search's measuring
workers, `parallel.PoolCalls`) or (`ray`: a `ray_evaluator.RayOptions`) as Ray tasks on a
Ray cluster. A call is (measure, settings, network, images, mode): the settings name the
space, so a worker builds a PiT or an As-ViT alike (`factory`). The numbers are the same
(to the float rounding of the workers' intra-op thread counts), the lines land in order of
completion, and the records are returned in the table's order whatever that was.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

from absl import logging
import numpy as np
from PIL import Image
from tqdm import tqdm

from asvit_tf.correlate import table as table_lib
from asvit_tf.errors import UserInputError
from asvit_tf.garden.data import make_mnist_tfrecords as mnist
from asvit_tf.models import pit_size
from asvit_tf.models import size as size_lib
from asvit_tf.search import data as data_lib
from asvit_tf.search import measure as measure_lib
from asvit_tf.search import parallel
from asvit_tf.search import ray_evaluator
from asvit_tf.search import state as state_lib

# The four measures of design.md §3 (the names `asvit measure` uses), and the sizes.
METRICS = ('length', 'curvature', 'curvature_length', 'ntk')
CURVE_METRICS = ('length', 'curvature', 'curvature_length')
SETTINGS_FILE = 'settings.json'
MEASURES_FILE = 'measures.jsonl'


@dataclasses.dataclass(frozen=True)
class Settings:
  """What decides a network's numbers; a run directory holds one set of them."""
  space: str
  metrics: Sequence[str] = METRICS
  image_size: int = 224
  repeats: int = 5
  seed: int = 0
  num_points: int = 10
  batch_size: int = 16
  ntk_data: str = ''  # '' Gaussian noise, 'mnist5k', a folder of images or a TFDS name
  merge: str = 'plain'  # an As-ViT's patch merging: 'residual' as `--train --residual_merge`

  def __post_init__(self):
    object.__setattr__(self, 'metrics', tuple(self.metrics))
    table_lib.check_space(self.space)
    bad = [m for m in self.metrics if m not in METRICS]
    if bad or not self.metrics:
      raise UserInputError(f'`metrics` must be a list of {", ".join(METRICS)}; got '
                       f'{list(self.metrics)}')
    for name in ('image_size', 'repeats', 'num_points', 'batch_size'):
      if getattr(self, name) < 1:
        raise UserInputError(f'`{name}` must be >= 1, got {getattr(self, name)}')
    size_lib.check_merge(self.merge, '`merge`')
    if self.space == 'pit' and self.merge != 'plain':
      raise UserInputError(f'`merge` {self.merge!r}: a PiT has no patch merging to change')
    if self.space == 'pit' and self.image_size < pit_size.PATCH_SIZE:
      raise UserInputError(f'`image_size` {self.image_size}: a PiT needs at least '
                       f'{pit_size.PATCH_SIZE} pixels (its patch)')

  def to_dict(self) -> Dict[str, object]:
    out = {**dataclasses.asdict(self), 'metrics': list(self.metrics)}
    if self.merge == 'plain':  # as runs wrote it before the option, so they still resume
      del out['merge']
    return out


def sizes(space: str, network, merge: str = 'plain') -> Dict[str, int]:
  """#params and MACs of the network as trained: a PiT at the benchmark's 224 px and 100
  classes; an As-ViT's backbone (no head) at 224 px, with its `merge`."""
  if space == 'pit':
    return {'params': pit_size.count_params(network), 'macs': pit_size.count_macs(network)}
  return {'params': size_lib.estimate_params(network, num_classes=None, merge=merge),
          'macs': size_lib.count_macs(network, 224, num_classes=None, merge=merge)}


def factory(space: str, network, image_size: int, merge: str = 'plain'):
  """The measures' model factory of a network (an As-ViT with its patch `merge`)."""
  if space == 'pit':
    from asvit_tf.models import pit  # pylint: disable=g-import-not-at-top
    return pit.pit_factory(network, image_size)
  from asvit_tf.complexity import network as network_lib  # pylint: disable=g-import-not-at-top
  return network_lib.model_factory(network, merge=merge)


def mnist_batch(image_size: int, batch_size: int, seed: int) -> np.ndarray:
  """`batch_size` MNIST-5k digits (seeded choice) as [B, S, S, 3] float32, resized and
  normalised with the ImageNet mean and std as the search's image batches are."""
  images, _ = mnist.load_digits()
  pick = np.random.default_rng(seed).choice(len(images), batch_size, replace=False)
  mean = np.array([0.485, 0.456, 0.406], np.float32)
  std = np.array([0.229, 0.224, 0.225], np.float32)
  out = []
  for i in pick:
    img = Image.fromarray(mnist.to_rgb32(images[i])).resize((image_size, image_size),
                                                            Image.BILINEAR)
    out.append((np.asarray(img, np.float32) / 255.0 - mean) / std)
  return np.stack(out)


def ntk_images(ntk_data: str, image_size: int, batch_size: int, seed: int,
               data_dir: str = '') -> Optional[np.ndarray]:
  """The NTK's image batch: None (Gaussian noise) for '', MNIST-5k digits for 'mnist5k',
  else a folder of images or a prepared TFDS data set (as `asvit search --data`)."""
  if not ntk_data:
    return None
  if ntk_data == 'mnist5k':
    return mnist_batch(image_size, batch_size, seed)
  return data_lib.load_batch(ntk_data, data_dir, image_size, batch_size, seed)


def _clean(x: float):
  """JSON has no inf/nan: they are written as the strings "inf", "nan"."""
  return x if math.isfinite(x) else str(x)


def measure_network(settings: Settings, network, images: Optional[np.ndarray] = None,
                    mode: str = 'auto') -> Dict[str, object]:
  """{metric: mean, 'ntk_bad', 'values': {metric: per repeat}, 'seconds': {...}}."""
  from asvit_tf import complexity  # pylint: disable=g-import-not-at-top
  build = factory(settings.space, network, settings.image_size, settings.merge)
  out, values, seconds = {}, {}, {}
  curves = [m for m in settings.metrics if m in CURVE_METRICS]
  if curves:
    results = complexity.curve_metrics(build, settings.image_size, settings.num_points,
                                       settings.repeats, settings.seed, curves, mode=mode)
    for m in curves:
      out[m], values[m] = _clean(results[m].mean), [_clean(v) for v in results[m].values]
    seconds['curves'] = round(results[curves[0]].seconds, 3)
  if 'ntk' in settings.metrics:
    result = complexity.ntk_condition_number(build, settings.image_size, settings.repeats,
                                             settings.seed, images=images,
                                             batch_size=settings.batch_size, mode=mode)
    out['ntk'], values['ntk'] = _clean(result.mean), [_clean(v) for v in result.values]
    out['ntk_bad'] = bool(result.bad)
    seconds['ntk'] = round(result.seconds, 3)
  return {**out, 'values': values, 'seconds': seconds}


def _write_atomic(path: str, text: str):
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or '.', prefix='.tmp-')
  with os.fdopen(fd, 'w', encoding='utf-8') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def append_line(path: str, record: Dict[str, object]):
  """Appends one JSON line with a single write, then fsyncs (`state.append_jsonl`)."""
  state_lib.append_jsonl(path, record)


def load_measures(path: str) -> Dict[str, Dict[str, object]]:
  """{key: record} of a measures file. Bytes after the last newline are a line torn by a
  kill mid-write: they are cut off. Any other line that is not JSON is an error."""
  return {record['key']: record for record in state_lib.read_jsonl(path)}


def check_settings(out_dir: str, settings, name: str = SETTINGS_FILE,
                   holds: str = 'measurements'):
  """Writes OUT/`name` (settings.json), or refuses a run whose settings (anything with a
  `to_dict()`: `Settings`, `train.TrainSettings`) differ from it."""
  path = os.path.join(out_dir, name)
  mine = settings.to_dict()
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      theirs = json.load(f)
    diff = [f'{k}: {theirs.get(k)!r} there, {mine.get(k)!r} now'
            for k in sorted(set(mine) | set(theirs)) if theirs.get(k) != mine.get(k)]
    if diff:
      raise UserInputError(f'{out_dir} holds {holds} made with other settings ('
                           f'{"; ".join(diff)}): use the same settings or another `out_dir`')
    return
  os.makedirs(out_dir, exist_ok=True)
  _write_atomic(path, json.dumps(mine, indent=2, sort_keys=True) + '\n')


def _timed(measure: Callable[..., Dict[str, object]], settings: Settings, network,
           images: Optional[np.ndarray], mode: str) -> Dict[str, object]:
  """`measure(settings, network, images, mode)` with its wall time as seconds['total']."""
  start = time.perf_counter()
  record = measure(settings, network, images, mode)
  record['seconds']['total'] = round(time.perf_counter() - start, 3)
  return record


def _evaluator(ray, workers: int):
  """Where `_timed` runs: Ray tasks (`ray`, a `ray_evaluator.RayOptions`), else `workers`
  local processes when more than one, else this process."""
  if ray is not None:
    return ray_evaluator.RayCalls(_timed, ray, describe=lambda item: str(item[2]))
  if workers > 1:
    return parallel.PoolCalls(_timed, workers)
  return measure_lib.SerialEvaluator(_timed)


def measure_table(rows: List[table_lib.Row], settings: Settings, out_dir: str,
                  data_dir: str = '', mode: str = 'auto', progress: bool = True,
                  measure: Callable[..., Dict[str, object]] = measure_network,
                  ray=None, workers: int = 1) -> Dict[str, Dict[str, object]]:
  """Measures every row not yet in OUT/measures.jsonl; returns {key: record} for all rows.

  `measure(settings, network, images, mode)` runs here (`workers` 1), in `workers` local
  processes, or with `ray` (a `ray_evaluator.RayOptions`) as a Ray task per network; with
  either of the last two it must pickle (a module-level function).

  A row's measures given by the table are used as they are (without per-repeat `values`);
  the sizes are computed.
  """
  if workers < 1:
    raise UserInputError(f'`workers` must be >= 1, got {workers}')
  check_settings(out_dir, settings)
  path = os.path.join(out_dir, MEASURES_FILE)
  done = load_measures(path)
  todo = [r for r in rows if r.key not in done
          and not all(m in r.given for m in settings.metrics)]
  images = None
  if todo and 'ntk' in settings.metrics:
    images = ntk_images(settings.ntk_data, settings.image_size, settings.batch_size,
                        settings.seed, data_dir)
  logging.info('%d networks, %d measured before, %d to measure', len(rows),
               len(rows) - len(todo), len(todo))
  bar = tqdm(total=len(rows), initial=len(rows) - len(todo), disable=not progress,
             unit='net', file=sys.stderr, desc='measuring')
  evaluator = _evaluator(ray if todo else None, workers)
  if isinstance(evaluator, ray_evaluator.RayCalls):
    images = evaluator.put(images)  # sent to the nodes once
  try:
    for i, measured in evaluator.measure([(measure, settings, row.network, images, mode)
                                          for row in todo]):
      row = todo[i]
      record = {'key': row.key, **measured}
      append_line(path, record)
      # As a rerun reads it back: the outputs of a resumed run equal an uninterrupted one's.
      done[row.key] = json.loads(json.dumps(record, sort_keys=True))
      logging.info('%s: %s (%.1f s)', row.key,
                   {m: record.get(m) for m in settings.metrics}, record['seconds']['total'])
      bar.update(1)
  finally:
    bar.close()
    evaluator.close()
  out = {}
  for row in rows:
    record = dict(done.get(row.key, {'key': row.key}))
    record.update(row.given)
    if row.given and 'values' in record:  # a given measure's repeats are not known here
      record['values'] = {m: v for m, v in record['values'].items() if m not in row.given}
    record.update(sizes(settings.space, row.network, settings.merge))
    out[row.key] = record
  return out
