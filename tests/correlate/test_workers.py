"""`asvit correlate --workers`: the table's networks measured in the search's worker processes
give the numbers the command's own process gives, for both spaces; a dead worker is one
error and what was saved stays saved."""
import json
import os
import signal

import pytest

from asvit_tf import arch as arch_lib
from asvit_tf.correlate import measure
from asvit_tf.correlate import table
from asvit_tf.models import pit_size
from asvit_tf.search import parallel

PITS = [pit_size.PitArch(8, 2, (1, 1, 1), (1, 2, 2)), pit_size.PitArch(8, 4, (1, 2, 1), (1, 1, 2)),
        pit_size.PitArch(16, 2, (1, 1, 2), (1, 2, 4)), pit_size.PitArch(4, 3, (2, 1, 1), (2, 2, 2))]
TOPOLOGIES = ['8,2,3,1|4,1,2,1|4,1,4,1|4,1,6,1|16,8', '4,4,2,1|2,2,5,1|3,1,3,1|2,1,4,1|16,8',
              '6,8,6,1|3,1,2,1|2,2,2,1|4,1,5,1|16,8', '5,2,4,1|4,4,3,1|3,2,6,1|3,1,2,1|16,8']
TINY = dict(image_size=32, repeats=1, num_points=4, batch_size=4)


def _rows(space, count=4):
  networks = PITS if space == 'pit' else [arch_lib.as_topology(t) for t in TOPOLOGIES]
  return [table.Row(str(n), n, {'accuracy': float(i)}, {})
          for i, n in enumerate(networks[:count])]


def _without_seconds(records):
  return {k: {f: v for f, v in r.items() if f != 'seconds'} for k, r in records.items()}


def _lines(out):
  with open(os.path.join(out, measure.MEASURES_FILE)) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
@pytest.mark.parametrize('space', ['pit', 'asvit'])
def test_workers_measure_what_the_process_measures(tmp_path, space):
  rows = _rows(space, count=2)  # one network per worker
  settings = measure.Settings(space, **TINY)
  here = measure.measure_table(rows, settings, str(tmp_path / 'here'), progress=False)
  pooled = measure.measure_table(rows, settings, str(tmp_path / 'pool'), progress=False,
                                 workers=2)
  assert list(pooled) == list(here) == [r.key for r in rows]  # the table's order
  assert sorted(r['key'] for r in _lines(tmp_path / 'pool')) == sorted(here)  # a line each
  here, pooled = _without_seconds(here), _without_seconds(pooled)
  for key in here:
    assert set(pooled[key]) == set(here[key])
    # Float rounding, not bits: each worker has one intra-op thread, this process two, and
    # κ and L^E_κ (float32 second derivatives) move by up to ~1.4e-7 relative with what the
    # measuring process measured before (the 4th PiT of PITS after the other three vs alone;
    # measured alone, a worker with N threads gives this process's bits with N threads).
    for metric in measure.METRICS:
      assert pooled[key][metric] == pytest.approx(here[key][metric], rel=1e-6), (key, metric)
      assert pooled[key]['values'][metric] == pytest.approx(here[key]['values'][metric],
                                                            rel=1e-6)
    for name in ('ntk_bad', 'params', 'macs'):
      assert pooled[key][name] == here[key][name]


def _dies_on_the_largest(settings, network, images, mode):
  """A measure (module-level: it pickles) whose worker is killed, as for memory, on the
  largest PiT of PITS; the others get made-up numbers."""
  if network.base_dim == 16:
    os.kill(os.getpid(), signal.SIGKILL)
  return {'length': float(network.base_dim), 'ntk': 1.0, 'ntk_bad': False, 'values': {},
          'seconds': {}}


@pytest.mark.slow
def test_a_dead_worker_is_one_error_and_the_rerun_measures_the_rest(tmp_path):
  rows, out = _rows('pit'), str(tmp_path / 'run')
  settings = measure.Settings('pit', metrics=('length', 'ntk'), **TINY)
  with pytest.raises(parallel.WorkerDied, match='run the same command again'):
    measure.measure_table(rows, settings, out, progress=False, measure=_dies_on_the_largest,
                          workers=2)
  saved = {r['key'] for r in _lines(out)}
  assert str(PITS[2]) not in saved and saved <= {r.key for r in rows}
  calls = []

  def fake(settings, network, images, mode):
    calls.append(str(network))
    return {'length': float(network.base_dim), 'ntk': 1.0, 'ntk_bad': False, 'values': {},
            'seconds': {}}

  records = measure.measure_table(rows, settings, out, progress=False, measure=fake)
  assert sorted(calls) == sorted({r.key for r in rows} - saved)  # only what was missing
  assert [records[r.key]['length'] for r in rows] == [8.0, 8.0, 16.0, 4.0]


def test_workers_below_one_are_refused(tmp_path):
  with pytest.raises(ValueError, match='`workers` must be >= 1, got 0'):
    measure.measure_table(_rows('pit'), measure.Settings('pit', **TINY), str(tmp_path),
                          progress=False, workers=0)
