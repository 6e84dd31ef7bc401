"""--backend=ray: the records of --backend=local, on a two-node Ray cluster that loses a node.

The cluster (a head and a second node, one CPU each, started with `ray start`) and the Ray
runs live in a network namespace of their own that has only the loopback interface: every
Ray process binds and dials 127.0.0.1, and nothing can reach any other address.
"""
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from asvit_tf import arch as arch_lib
from asvit_tf.search import measure as measure_lib
from asvit_tf.search import ray_evaluator
from tests.search import records

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PORT = 6379  # inside the test's own network namespace: free whatever the machine runs
SEED = '8,2,3|4,1,2|4,1,4|4,1,6|32'
# The `ray` command of this Python's environment, whether it is activated or not.
RAY_CLI = os.path.join(os.path.dirname(sys.executable), 'ray')
RAY_TEST_ENV = ('RAY_USAGE_STATS_ENABLED', 'RAY_AUTH_MODE', 'RAY_AUTH_TOKEN')
TASK_TITLE = 'ray::' + ray_evaluator._measure_task.__name__  # pylint: disable=protected-access


def test_ray_backend_without_ray_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, 'ray', None)  # `import ray` raises ImportError
  evaluator = ray_evaluator.RayEvaluator(('length',), image_size=16, repeats=1)
  with pytest.raises(ray_evaluator.RayUnavailable, match=r'pip install -e "\.\[ray\]"'):
    list(evaluator.measure([(arch_lib.as_topology(SEED), 0)]))


def test_ray_options_name_the_bad_value():
  with pytest.raises(ValueError, match='`cpus_per_measurement` must be > 0, got 0'):
    ray_evaluator.RayOptions(cpus_per_measurement=0).validate()
  with pytest.raises(ValueError, match='`gpus_per_measurement` must be >= 0, got -1'):
    ray_evaluator.RayOptions(gpus_per_measurement=-1).validate()


def test_counts_need_no_cluster(monkeypatch):
  monkeypatch.setitem(sys.modules, 'ray', None)  # never imported: params are counted here
  evaluator = ray_evaluator.RayEvaluator(('params', 'macs'), image_size=32)
  (i, m), = evaluator.measure([(arch_lib.as_topology(SEED), 0)])
  assert i == 0 and m.params > 0 and m.macs > 0 and m.length is None


def _cli(*args, env=None, check=True):
  return subprocess.run([sys.executable, '-m', 'asvit_tf.cli.main', *args], cwd=REPO,
                        env=env, capture_output=True, text=True, check=check, timeout=1500)


def test_ray_flags_without_ray_backend_are_refused(tmp_path):
  r = _cli('search', f'--output_dir={tmp_path}', '--ray_address=127.0.0.1:6379', check=False)
  assert r.returncode != 0
  assert r.stderr.strip().splitlines()[-1] == ('error: --ray_address given with '
                                               '--backend=local; the --ray_* flags need '
                                               '--backend=ray')


def _descendants(pid: int):
  """The live processes started (directly or not) by `pid`."""
  out = subprocess.run(['ps', '-eo', 'pid=,ppid='], capture_output=True, text=True).stdout
  children = {}
  for line in out.splitlines():
    p, pp = map(int, line.split())
    children.setdefault(pp, []).append(p)
  found, todo = set(), [pid]
  while todo:
    for c in children.get(todo.pop(), []):
      if c not in found:
        found.add(c)
        todo.append(c)
  return found


def _listening(pids):
  """The local addresses the processes `pids` listen on (TCP and UDP)."""
  out = subprocess.run(['ss', '-ltunpH'], capture_output=True, text=True).stdout
  addresses = []
  for line in out.splitlines():
    owners = {int(p) for p in re.findall(r'pid=(\d+)', line)}
    if owners & pids:
      addresses.append(line.split()[4].rsplit(':', 1)[0])
  return addresses


@pytest.mark.slow
def test_one_machine_ray_binds_loopback_gives_local_values_and_leaves_the_env(monkeypatch):
  for name in ray_evaluator._ONE_MACHINE_ENV:  # pylint: disable=protected-access
    monkeypatch.delenv(name, raising=False)
  ray = ray_evaluator.import_ray()
  cluster = ray._private.ray_constants.ENABLE_RAY_CLUSTER  # pylint: disable=protected-access
  items = [(arch_lib.as_topology(SEED), 7), (arch_lib.as_topology('4,4,2|2,2,2|2,1,2|2,1,2|16'),
                                            8)]
  settings = dict(image_size=16, repeats=1, batch_size=4, num_points=4)
  with ray_evaluator.RayEvaluator(('length', 'ntk', 'params'), num_cpus=1,
                                  **settings) as evaluator:
    got = dict(evaluator.measure(items))
    # Every Ray process this run started listens on loopback only.
    addresses = _listening(_descendants(os.getpid()))
    assert addresses and all(a in ('127.0.0.1', '[::ffff:127.0.0.1]') for a in addresses), \
        addresses
    # What this run set for Ray is not left in this process (Ray itself leaves a few).
    assert not set(ray_evaluator._ONE_MACHINE_ENV) & set(os.environ)  # pylint: disable=protected-access
    assert ray._private.ray_constants.ENABLE_RAY_CLUSTER == cluster  # pylint: disable=protected-access
  assert not ray.is_initialized()
  want = measure_lib.make_measure(('length', 'ntk', 'params'), **settings)
  for i, item in enumerate(items):
    w = want(*item)
    assert got[i].params == w.params
    assert got[i].length == pytest.approx(w.length, rel=1e-6)
    assert got[i].ntk == pytest.approx(w.ntk, rel=1e-6)


@pytest.mark.slow
def test_correlate_on_ray_gives_the_local_values(tmp_path):
  from asvit_tf.correlate import measure as correlate_measure  # pylint: disable=g-import-not-at-top
  from asvit_tf.correlate import table  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'table.jsonl'
  path.write_text(''.join(json.dumps({'topology': t, 'accuracy': a}) + '\n' for t, a in [
      (SEED, 1.0), ('4,4,2|2,2,2|2,1,2|2,1,2|16', 2.0)]))
  rows = table.read_table(str(path), 'asvit')
  settings = correlate_measure.Settings('asvit', metrics=('length', 'ntk'), image_size=16,
                                        repeats=1, num_points=4, batch_size=4)
  local = correlate_measure.measure_table(rows, settings, str(tmp_path / 'local'),
                                          progress=False)
  on_ray = correlate_measure.measure_table(
      rows, settings, str(tmp_path / 'ray'), progress=False,
      ray=ray_evaluator.RayOptions())
  assert not ray_evaluator.import_ray().is_initialized()  # the one-machine Ray is stopped
  for row in rows:
    for metric in settings.metrics + ('params', 'macs'):
      assert on_ray[row.key][metric] == pytest.approx(local[row.key][metric], rel=1e-6), \
          (row.key, metric)
    values = local[row.key]['values']
    assert sorted(on_ray[row.key]['values']) == sorted(values)
    for metric in values:
      assert on_ray[row.key]['values'][metric] == pytest.approx(values[metric], rel=1e-6)


class Cluster:
  """A head and a second node in a network namespace that only has loopback."""

  def __init__(self, tmp: str):
    self.tmp = tmp
    # The namespace lives as long as this process does; every command joins it.
    self.holder = subprocess.Popen(
        ['unshare', '--net', 'sh', '-c', 'ip link set lo up && exec sleep 3600'],
        start_new_session=True)
    self.groups = []  # process groups of `ray start`: a node's processes
    self.env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2',
                    RAY_USAGE_STATS_ENABLED='0', RAY_AUTH_MODE='token',
                    RAY_AUTH_TOKEN=secrets.token_hex(32))
    # Of the driver's environment, nothing that steers Ray: a node must not inherit what
    # this process holds (e.g. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes `ray start
    # --address` refuse to join).
    for name in [k for k in self.env if k.startswith('RAY_') and k not in RAY_TEST_ENV]:
      del self.env[name]
    # Its programs (`ray` and what it starts), whether the environment is activated or not.
    bin_dir = os.path.dirname(sys.executable)
    self.env['PATH'] = os.pathsep.join([bin_dir, self.env.get('PATH', '')])

  def command(self, args):
    return ['nsenter', f'--net=/proc/{self.holder.pid}/ns/net', '--'] + list(args)

  def wait_for_loopback(self):
    for _ in range(100):
      out = subprocess.run(self.command(['ip', '-o', 'link', 'show', 'lo']),
                           capture_output=True, text=True)
      if out.returncode == 0 and 'UP' in out.stdout:
        return
      time.sleep(0.1)
    raise RuntimeError(f'no loopback in the test namespace: {out.stderr}')

  def start_node(self, *args) -> int:
    """Starts a node; returns its process group."""
    p = subprocess.Popen(
        self.command([RAY_CLI, 'start', '--num-cpus=1', '--object-store-memory=100000000',
                      '--disable-usage-stats', *args]),
        env=self.env, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    self.groups.append(p.pid)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out
    return p.pid

  def processes(self, group: int):
    """(pid, title) of the live processes of the node started as `group`: those in the
    group, and the workers its raylet started (each in a group of its own)."""
    out = subprocess.run(['ps', '-eo', 'pid=,ppid=,pgid=,stat=,args='], capture_output=True,
                         text=True).stdout
    rows = [line.split(None, 4) for line in out.splitlines()]
    rows = [(int(r[0]), int(r[1]), int(r[2]), r[3], r[4] if len(r) > 4 else '')
            for r in rows if not r[3].startswith('Z')]
    members = {pid for pid, _, pgid, _, _ in rows if pgid == group}
    return [(pid, title) for pid, ppid, pgid, _, title in rows
            if pid in members or ppid in members]

  def run(self, *args, **kwargs):
    return subprocess.Popen(self.command([sys.executable, '-m', 'asvit_tf.cli.main', *args]),
                            cwd=REPO, env=self.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)

  def stop(self):
    workers = [pid for group in self.groups for pid, _ in self.processes(group)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
      for pid in workers:
        try:
          os.kill(pid, sig)
        except ProcessLookupError:
          pass
      for group in self.groups + [self.holder.pid]:
        try:
          os.killpg(group, sig)
        except ProcessLookupError:
          pass
      time.sleep(2)
    self.holder.wait(timeout=30)
    shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope='module')
def cluster():
  if shutil.which('unshare') is None or shutil.which('nsenter') is None:
    pytest.skip('needs unshare and nsenter (util-linux) for a loopback-only namespace')
  # Short: Ray's socket paths live under it (at most 107 characters).
  c = Cluster(tempfile.mkdtemp(prefix='asvit-ray-', dir='/tmp'))
  try:
    c.wait_for_loopback()
    c.head = c.start_node('--head', '--node-ip-address=127.0.0.1', f'--port={PORT}',
                          '--include-dashboard=false', '--dashboard-host=127.0.0.1',
                          f'--temp-dir={c.tmp}')
    c.second = c.start_node(f'--address=127.0.0.1:{PORT}')
    yield c
  finally:
    c.stop()


def _records(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def _assert_same_records(got, want):
  """Equal but for the time taken, and floats to rounding (one intra-op thread per Ray
  task, two per local worker)."""
  assert len(got) == len(want)
  for g, w in zip(got, want):
    g, w = dict(g), dict(w)
    g.pop('seconds', None), w.pop('seconds', None)
    assert sorted(g) == sorted(w)
    for key in w:
      assert records.close(g[key], w[key]), (key, g[key], w[key])


@pytest.mark.slow
def test_search_on_ray_gives_the_local_records(cluster, tmp_path):
  # Small and short (2 steps at 16 px): what is compared is where the measurements ran.
  common = ['--preset=quick', '--steps=2', '--image_size=16', '--seed=3', '--progress=false']
  _cli('search', *common, f'--output_dir={tmp_path / "local"}')
  run = cluster.run('search', *common, f'--output_dir={tmp_path / "ray"}', '--backend=ray',
                    f'--ray_address=127.0.0.1:{PORT}')
  out, err = run.communicate(timeout=1500)
  assert run.returncode == 0, err[-3000:]
  _assert_same_records(_records(tmp_path / 'ray' / 'search.jsonl'),
                       _records(tmp_path / 'local' / 'search.jsonl'))
  assert (tmp_path / 'ray' / 'seed.txt').read_text() == \
      (tmp_path / 'local' / 'seed.txt').read_text()


@pytest.mark.slow
def test_grow_on_ray_survives_the_loss_of_a_node(cluster, tmp_path):
  # One step at 16 px; --max_params keeps 3 of its 12 candidates (6 measurements: enough
  # for one to run on the second node when it is killed, and for the rest to be retried).
  common = ['--preset=quick', f'--arch={SEED}', '--max_steps=1', '--image_size=16',
            '--max_params=2600000', '--target_params=2600000', '--seed=5',
            '--progress=false']
  _cli('grow', *common, f'--output_dir={tmp_path / "local"}')
  run = cluster.run('grow', *common, f'--output_dir={tmp_path / "ray"}', '--backend=ray',
                    f'--ray_address=127.0.0.1:{PORT}')
  try:
    # Kill the second node while it measures (a task of the run is executing there).
    deadline = time.time() + 900
    while not any(t.startswith(TASK_TITLE) for _, t in cluster.processes(cluster.second)):
      assert run.poll() is None, run.communicate()[1][-3000:]
      assert time.time() < deadline, 'no measurement ever ran on the second node'
      time.sleep(0.2)
    victims = cluster.processes(cluster.second)
    os.killpg(cluster.second, signal.SIGKILL)
    for pid, _ in victims:
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    out, err = run.communicate(timeout=1500)
  finally:
    if run.poll() is None:
      run.kill()
  for _ in range(50):  # the node is gone (its processes reaped)
    if not cluster.processes(cluster.second):
      break
    time.sleep(0.2)
  assert not cluster.processes(cluster.second)
  assert run.returncode == 0, err[-3000:]
  _assert_same_records(_records(tmp_path / 'ray' / 'grow.jsonl'),
                       _records(tmp_path / 'local' / 'grow.jsonl'))
  assert (tmp_path / 'ray' / 'family.txt').read_text() == \
      (tmp_path / 'local' / 'family.txt').read_text()
