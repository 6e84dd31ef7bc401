"""Measuring in worker processes: the same metrics as in-process, in any completion order."""
import pytest

from asvit_tf import arch as arch_lib
from asvit_tf.models import size
from asvit_tf.search import grow
from asvit_tf.search import measure as measure_lib
from asvit_tf.search import parallel
from tests.search.fakes import fake_measure

TINY = ['8,2,3,1|4,1,2,1|4,1,4,1|4,1,6,1|32,8', '4,1,3,1|4,1,2,2|4,1,4,1|4,1,6,1|16,8']


def test_pool_measures_what_one_process_measures(monkeypatch):
  items = [(arch_lib.as_topology(t), 5 + i) for i, t in enumerate(TINY)]
  metrics = ('length', 'ntk', 'params')
  monkeypatch.setattr(parallel, 'TASKS_PER_WORKER', 2)  # the map's 4 jobs use them up
  with parallel.PoolMeasure(metrics, workers=2, image_size=16, repeats=2,
                            batch_size=4) as pool:
    got = dict(pool.map(items))
    first_workers = pool._pool  # pylint: disable=protected-access
    single = pool(*items[0])  # on new workers
    assert pool._pool is not first_workers  # pylint: disable=protected-access
  serial = measure_lib.make_measure(metrics, image_size=16, repeats=2, batch_size=4)
  assert sorted(got) == [0, 1]
  for i, (topology, seed) in enumerate(items):
    want = serial(topology, seed)
    assert got[i]['params'] == want['params']
    assert got[i]['bad'] is False
    for metric in ('length', 'ntk'):
      # one intra-op thread per worker may round differently from two: 1e-9, not bits
      assert got[i][metric] == pytest.approx(want[metric], rel=1e-9)
      assert len(got[i][f'{metric}_values']) == 2
  assert single['length'] == got[0]['length'] and single['ntk'] == got[0]['ntk']


def test_pool_rejects_bad_arguments():
  with pytest.raises(ValueError, match='workers must be >= 1'):
    parallel.PoolMeasure(('length',), workers=0)
  with pytest.raises(ValueError, match='unknown metric'):
    parallel.PoolMeasure(('speed',), workers=2)
  with pytest.raises(ValueError, match='threads must be >= 1'):
    parallel.PoolMeasure(('length',), workers=2, threads=0)


class _ReversedPool:
  """A `map`-capable measure that completes the candidates of a step in reverse order."""

  def __init__(self):
    self.batches = []

  def __call__(self, topology, seed):
    return fake_measure(topology, seed)

  def map(self, items):
    items = list(items)
    self.batches.append(len(items))
    for i in reversed(range(len(items))):
      yield i, fake_measure(*items[i])


def test_grow_with_a_pool_gives_the_serial_series(tmp_path):
  config = grow.GrowConfig(target_params=30_000_000, max_params=40_000_000, image_size=32,
                           repeats=1, seed=3)
  serial = grow.run_grow(config, str(tmp_path / 'a'), measure=fake_measure, progress=False)
  pool = _ReversedPool()
  pooled = grow.run_grow(config, str(tmp_path / 'b'), measure=pool, progress=False)
  strip = lambda rs: [{k: v for k, v in r.items() if k != 'seconds'} for r in rs]
  assert strip(pooled.records) == strip(serial.records)
  # every step's candidates went out together
  assert pool.batches == [len(r['candidates']) for r in serial.records[1:]]


def test_workers_die_with_a_killed_parent(tmp_path):
  """SIGKILL of a running grow leaves no measuring worker behind."""
  import os
  import signal
  import subprocess
  import sys
  import time
  script = tmp_path / 'run.py'
  script.write_text(
      'import sys\n'
      'from asvit_tf.search import grow\n'
      'if __name__ == "__main__":  # the workers are spawned: they import this file\n'
      '  config = grow.GrowConfig(image_size=32, repeats=1, max_steps=1)\n'
      '  grow.run_grow(config, sys.argv[1], progress=False, workers=2)\n')
  proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / 'out')],
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))

  def children():
    out = subprocess.run(['ps', '-ww', '-eo', 'pid,ppid,cmd'], capture_output=True, text=True).stdout
    return [int(l.split()[0]) for l in out.splitlines()[1:]
            if 'spawn_main' in l and int(l.split()[1]) == proc.pid]

  def alive(pid):
    try:
      with open(f'/proc/{pid}/stat') as f:
        return f.read().rsplit(')', 1)[1].split()[0] != 'Z'  # a zombie is dead
    except FileNotFoundError:
      return False
  deadline = time.time() + 120
  while time.time() < deadline and len(children()) < 2:
    time.sleep(0.5)
  workers = children()
  assert len(workers) >= 2, "the pool did not start"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  deadline = time.time() + 30
  while time.time() < deadline and any(alive(p) for p in workers):
    time.sleep(0.5)
  assert not any(alive(p) for p in workers)


def test_a_killed_worker_is_one_clear_error():
  import threading
  import time
  pool = parallel.PoolMeasure(('length',), workers=1, image_size=64, repeats=3)

  def kill_the_worker():
    while pool._pool is None or not pool._pool._processes:  # pylint: disable=protected-access
      time.sleep(0.1)
    time.sleep(1)
    for process in list(pool._pool._processes.values()):  # pylint: disable=protected-access
      process.kill()
  threading.Thread(target=kill_the_worker, daemon=True).start()
  with pytest.raises(parallel.WorkerDied, match='run the same command again'):
    list(pool.map([(arch_lib.as_topology(TINY[0]), 0)]))
  assert pool._pool is None  # pylint: disable=protected-access


def test_a_part_that_is_bad_makes_the_topology_bad():
  """Whatever order the metrics of a topology come back in, one bad part marks it bad."""
  counts = {'params': 5, 'bad': False}
  bad_ntk = {'ntk': float('inf'), 'ntk_values': [float('inf')], 'bad': True}
  length = {'length': 0.5, 'length_values': [0.5], 'bad': False}
  for parts in ([counts, bad_ntk, length], [counts, length, bad_ntk]):
    merged = parallel._merge(parts)  # pylint: disable=protected-access
    assert merged['bad'] is True
    assert merged['length'] == 0.5 and merged['params'] == 5 and merged['ntk'] == float('inf')
  assert parallel._merge([counts, length])['bad'] is False  # pylint: disable=protected-access


def test_jobs_go_costliest_first():
  """A grow step's jobs start with the costliest topology (by MACs), κ_Θ before L^E, each
  job once, so the short jobs come last and the workers finish together."""
  seed = arch_lib.Topology.parse(arch_lib.SEED)
  items = [(c.proxy(seed), 3) for c in grow.candidates(8, (1, 1, 1, 1))]
  jobs = parallel._longest_first(items, ('length', 'ntk'), 224)  # pylint: disable=protected-access
  assert sorted(jobs) == sorted((i, m) for i in range(len(items)) for m in ('length', 'ntk'))
  macs = [size.count_macs(items[i][0], 224, None) for i, _ in jobs]
  assert macs == sorted(macs, reverse=True)
  assert items[jobs[0][0]][0].depths == (2, 1, 1, 1)  # a 56×56-token block costs the most
  assert [m for _, m in jobs[:2]] == ['ntk', 'length'] and jobs[0][0] == jobs[1][0]
