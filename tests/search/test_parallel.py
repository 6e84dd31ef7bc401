"""Measuring in worker processes: the same metrics as in-process, in any completion order."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from asvit_tf import arch as arch_lib
from asvit_tf.models import size
from asvit_tf.search import grow
from asvit_tf.search import measure as measure_lib
from asvit_tf.search import parallel
from tests.search.fakes import fake_measure

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ['8,2,3,1|4,1,2,1|4,1,4,1|4,1,6,1|32,8', '4,1,3,1|4,1,2,2|4,1,4,1|4,1,6,1|16,8']


@pytest.mark.slow
def test_pool_measures_what_one_process_measures(monkeypatch):
  items = [(arch_lib.as_topology(t), 5 + i) for i, t in enumerate(TINY)]
  metrics = ('length', 'ntk', 'params')
  monkeypatch.setattr(parallel, 'TASKS_PER_WORKER', 2)  # the first call's 4 jobs use them up
  with parallel.PoolMeasure(metrics, workers=2, image_size=16, repeats=2,
                            batch_size=4) as pool:
    got = dict(pool.measure(items))
    first_workers = set(pool.worker_pids())
    single = dict(pool.measure(items[:1]))[0]
    assert first_workers and not first_workers & set(pool.worker_pids())  # new workers
  serial = measure_lib.make_measure(metrics, image_size=16, repeats=2, batch_size=4)
  assert sorted(got) == [0, 1]
  for i, (topology, seed) in enumerate(items):
    want = serial(topology, seed)
    assert got[i].params == want.params
    assert got[i].bad is False
    for metric in ('length', 'ntk'):
      # one intra-op thread per worker may round differently from two: 1e-9, not bits
      assert getattr(got[i], metric) == pytest.approx(getattr(want, metric), rel=1e-9)
      assert len(getattr(got[i], f'{metric}_values')) == 2
  # One topology on two workers: its κ_Θ's repeats are split between them (`planned_jobs`),
  # put together they are what one job measured.
  assert single.ntk_values == got[0].ntk_values and single.ntk == got[0].ntk
  assert single.length == got[0].length


@pytest.mark.slow
def test_one_worker_finishes_the_costliest_topology_first():
  """The jobs of a grow step start with the costliest topology (by MACs), so the short
  ones come last and the workers finish together: one worker returns them in that order."""
  seed = arch_lib.Topology.parse(arch_lib.SEED)
  proxies = [c.proxy(seed).replace(width=8) for c in grow.candidates(8, (1, 1, 1, 1))[:4]]
  items = [(t, 3) for t in proxies]
  with parallel.PoolMeasure(('length',), workers=1, image_size=16, repeats=1) as pool:
    order = [i for i, _ in pool.measure(items)]
  macs = [size.count_macs(t, 16, None) for t in proxies]
  assert sorted(order) == [0, 1, 2, 3]
  assert [macs[i] for i in order] == sorted(macs, reverse=True)
  assert order != sorted(order)  # not the order given: at 16 px the stage-4 block costs most


def test_pool_rejects_bad_arguments():
  with pytest.raises(ValueError, match='workers must be >= 1'):
    parallel.PoolMeasure(('length',), workers=0)
  with pytest.raises(ValueError, match='unknown metric'):
    parallel.PoolMeasure(('speed',), workers=2)
  with pytest.raises(ValueError, match='threads must be >= 1'):
    parallel.PoolMeasure(('length',), workers=2, threads=0)


def test_pool_counts_params_and_macs_without_workers():
  pool = parallel.PoolMeasure(('params', 'macs'), workers=2, image_size=32)
  topology = arch_lib.as_topology(TINY[0])
  (i, m), = pool.measure([(topology, 0)])
  assert i == 0 and pool.worker_pids() == []
  assert m.params == size.estimate_params(topology) and m.macs == size.count_macs(topology, 32)
  assert m.length is None and m.ntk is None and m.bad is False


class _ReversedEvaluator:
  """An evaluator that completes the topologies it is given in reverse order."""

  def __init__(self):
    self.batches = []
    self.closed = False

  def measure(self, items):
    items = list(items)
    self.batches.append(len(items))
    for i in reversed(range(len(items))):
      yield i, fake_measure(*items[i])

  def close(self):
    self.closed = True


@pytest.mark.slow
def test_grow_with_a_pool_gives_the_serial_series(tmp_path):
  config = grow.GrowConfig(target_params=30_000_000, max_params=40_000_000, image_size=32,
                           repeats=1, seed=3)
  serial = grow.run_grow(config, str(tmp_path / 'a'), measure=fake_measure, progress=False)
  pool = _ReversedEvaluator()
  pooled = grow.run_grow(config, str(tmp_path / 'b'), evaluator=pool, progress=False)
  strip = lambda rs: [{k: v for k, v in r.items() if k != 'seconds'} for r in rs]
  assert strip(pooled.records) == strip(serial.records)
  # every step's candidates went out together; the caller's evaluator is left open
  assert pool.batches == [1] + [len(r['candidates']) for r in serial.records[1:]]
  assert not pool.closed


_ORPHAN_SCRIPT = '''
import concurrent.futures, multiprocessing, os, sys, time
from asvit_tf.search import parallel
if __name__ == "__main__":  # the workers are spawned: they import this file
  pool = concurrent.futures.ProcessPoolExecutor(
      2, mp_context=multiprocessing.get_context("spawn"),
      initializer=parallel.die_with_parent, initargs=(os.getpid(),))
  futures = [pool.submit(time.sleep, 600) for _ in range(2)]
  print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
  time.sleep(600)
'''


def _alive(pid):
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'  # a zombie is dead
  except FileNotFoundError:
    return False


@pytest.mark.slow
def test_workers_die_with_a_killed_parent(tmp_path):
  """SIGKILL of the process that started the workers leaves none of them behind (the
  pool's workers run `die_with_parent` first; these measure nothing, so no TensorFlow)."""
  script = tmp_path / 'run.py'
  script.write_text(_ORPHAN_SCRIPT)
  env = {**os.environ, 'PYTHONPATH': REPO}
  proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, text=True)
  workers = [int(p) for p in proc.stdout.readline().split()]
  assert len(workers) == 2 and all(_alive(p) for p in workers), 'the pool did not start'
  time.sleep(1)  # the initializers have run
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  deadline = time.time() + 30
  while time.time() < deadline and any(_alive(p) for p in workers):
    time.sleep(0.2)
  assert not any(_alive(p) for p in workers)


@pytest.mark.slow
def test_a_killed_worker_is_one_clear_error():
  pool = parallel.PoolMeasure(('length',), workers=1, image_size=64, repeats=3)

  def kill_the_worker():
    while not pool.worker_pids():
      time.sleep(0.1)
    time.sleep(1)
    for pid in pool.worker_pids():
      os.kill(pid, signal.SIGKILL)
  threading.Thread(target=kill_the_worker, daemon=True).start()
  with pytest.raises(parallel.WorkerDied, match='run the same command again'):
    list(pool.measure([(arch_lib.as_topology(TINY[0]), 0)]))
  assert pool.worker_pids() == []  # closed: the next measurement starts new workers
