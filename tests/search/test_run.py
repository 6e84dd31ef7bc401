"""End-to-end search and grow on hand-made metrics: outputs, resume, refusals, SIGKILL."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from asvit_tf import arch as arch_lib
from asvit_tf.errors import UserInputError
from asvit_tf.search import family
from asvit_tf.search import grow
from asvit_tf.search import lock as lock_lib
from asvit_tf.search import reinforce
from tests.search.fakes import fake_measure

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEARCH = reinforce.SearchConfig(steps=25, image_size=32, repeats=1, seed=7)
GROW = grow.GrowConfig(target_params=30_000_000, max_params=40_000_000, image_size=32,
                       repeats=1, seed=3)


def _strip(records):
  return [{k: v for k, v in r.items() if k != 'seconds'} for r in records]


class Stop(Exception):
  pass


def _stop_after(n):
  seen = []

  def hook(_):
    seen.append(1)
    if len(seen) == n:
      raise Stop
  return hook


@pytest.mark.slow
def test_search_writes_its_outputs(tmp_path):
  out = tmp_path / 'search'
  result = reinforce.run_search(SEARCH, str(out), measure=fake_measure, progress=False)
  assert len(result.records) == SEARCH.steps
  assert (out / 'seed.txt').read_text().strip() == result.seed_string
  arch_lib.Topology.parse(result.seed_string).decisions()  # inside the search space
  lines = (out / 'search.jsonl').read_text().splitlines()
  assert [json.loads(l)['step'] for l in lines] == list(range(SEARCH.steps))
  first = json.loads(lines[0])
  for key in ('topology', 'derived', 'length', 'ntk', 'reward', 'baseline', 'entropy'):
    assert key in first
  assert first['reward'] == 0.0
  assert (out / 'search.png').stat().st_size > 1000
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(out / 'tensorboard'))
  # a finished run is reported again, not recomputed
  again = reinforce.run_search(SEARCH, str(out), measure=None, progress=False)
  assert again.seed_string == result.seed_string


@pytest.mark.slow
def test_search_resumes_to_the_uninterrupted_result(tmp_path):
  full = reinforce.run_search(SEARCH, str(tmp_path / 'a'), measure=fake_measure,
                              progress=False, tensorboard=False)
  for stop in (1, 9):
    out = str(tmp_path / f'b{stop}')
    with pytest.raises(Stop):
      reinforce.run_search(SEARCH, out, measure=fake_measure, progress=False,
                           tensorboard=False, plot_every=0, on_step=_stop_after(stop))
    assert not os.path.exists(os.path.join(out, 'seed.txt'))
    resumed = reinforce.run_search(SEARCH, out, measure=fake_measure, progress=False,
                                   tensorboard=False, plot_every=0)
    assert resumed.seed_string == full.seed_string
    assert _strip(resumed.records) == _strip(full.records)


@pytest.mark.slow
def test_a_finished_run_regenerates_its_deleted_outputs(tmp_path):
  search_out, grow_out = tmp_path / 'search', tmp_path / 'grow'
  reinforce.run_search(SEARCH, str(search_out), measure=fake_measure, progress=False,
                       tensorboard=False)
  grow.run_grow(GROW, str(grow_out), measure=fake_measure, progress=False)
  names = {search_out: ('seed.txt', 'result.json', 'search.jsonl', 'search.png'),
           grow_out: ('family.md', 'family.txt', 'grow.jsonl', 'scaling.png')}
  texts = {}
  for out, files in names.items():
    for name in files:
      texts[out / name] = (out / name).read_bytes()
      (out / name).unlink()
  # measure=None: nothing is measured again (the default would need TensorFlow)
  reinforce.run_search(SEARCH, str(search_out), progress=False, tensorboard=False)
  grow.run_grow(GROW, str(grow_out), progress=False)
  for path, text in texts.items():
    if path.suffix != '.png':
      assert path.read_bytes() == text, path
    else:
      assert path.stat().st_size > 1000


def test_a_damaged_state_is_one_line_saying_what_to_do(tmp_path):
  reinforce.run_search(SEARCH, str(tmp_path), measure=fake_measure, progress=False,
                       tensorboard=False, plot_every=0)
  path = tmp_path / 'search_state.json'
  state = json.loads(path.read_text())
  del state['logits']
  path.write_text(json.dumps(state))
  with pytest.raises(ValueError, match=r'search_state.json is damaged \(KeyError.*move it '
                     'away to start the run afresh, or use another `output_dir`'):
    reinforce.run_search(SEARCH, str(tmp_path), measure=fake_measure, progress=False)
  path.write_text(path.read_text()[:100])
  with pytest.raises(ValueError, match='cannot read the saved state .*move it away'):
    reinforce.run_search(SEARCH, str(tmp_path), measure=fake_measure, progress=False)


@pytest.mark.slow
def test_a_directory_in_use_is_refused_at_once(tmp_path):
  with lock_lib.RunLock(str(tmp_path)):
    with pytest.raises(lock_lib.DirectoryInUse, match=f'is in use by another run \\(pid '
                       f'{os.getpid()} on '):
      grow.run_grow(GROW, str(tmp_path), measure=fake_measure, progress=False)
  assert not os.path.exists(tmp_path / 'grow_state.json')
  grow.run_grow(GROW, str(tmp_path), measure=fake_measure, progress=False)  # released


@pytest.mark.parametrize('kind', ['search', 'grow'])
def test_records_without_their_state_are_refused_and_kept(tmp_path, kind):
  # A run whose state file was deleted (or records copied without it): a new run into that
  # directory would overwrite the records at once; it is refused and the file left as it was.
  out = str(tmp_path)
  if kind == 'search':
    run = lambda: reinforce.run_search(SEARCH, out, measure=fake_measure, progress=False,
                                       tensorboard=False, plot_every=0)
  else:
    run = lambda: grow.run_grow(dataclasses.replace(GROW, max_steps=1), out,
                                measure=fake_measure, progress=False)
  run()
  log, state = tmp_path / f'{kind}.jsonl', tmp_path / f'{kind}_state.json'
  records = log.read_text()
  state.unlink()
  with pytest.raises(UserInputError, match=rf'{kind}.jsonl holds \d+ records of a {kind} run '
                     rf'but .* has no {kind}_state.json to resume it from, .* move {kind}.jsonl '
                     'away, or use another `output_dir`'):
    run()
  assert log.read_text() == records and not state.exists()
  log.write_text('')  # an empty log holds nothing to lose: the run starts afresh
  run()
  parse = lambda text: _strip([json.loads(line) for line in text.splitlines()])
  assert parse(log.read_text()) == parse(records)


def test_resume_with_another_configuration_is_refused(tmp_path):
  out = str(tmp_path)
  with pytest.raises(Stop):
    reinforce.run_search(SEARCH, out, measure=fake_measure, progress=False,
                         tensorboard=False, on_step=_stop_after(2))
  other = reinforce.SearchConfig(steps=30, image_size=32, repeats=1, seed=7)
  with pytest.raises(ValueError, match=r'different configuration \(steps=25 there, 30 now\)'):
    reinforce.run_search(other, out, measure=fake_measure, progress=False)


@pytest.mark.slow
def test_grow_stops_at_the_target_and_writes_its_outputs(tmp_path):
  out = tmp_path / 'grow'
  result = grow.run_grow(GROW, str(out), measure=fake_measure, progress=False)
  params = [r['params'] for r in result.records]
  assert params[-1] >= GROW.target_params > max(params[:-1])
  assert params == sorted(params)
  assert result.records[0]['arch'] == '8,2,3,1|4,1,2,1|4,1,4,1|4,1,6,1|32,32'
  assert 'target' in result.stop_reason
  for r in result.records[1:]:
    assert r['width'] == 4 * r['proxy_width']
    assert all(c['rank_sum'] >= r['choice']['rank_sum'] for c in r['candidates'])
  lines = (out / 'grow.jsonl').read_text().splitlines()
  assert len(lines) == len(result.records)
  table = (out / 'family.md').read_text()
  assert result.records[-1]['arch'].replace('|', '\\|') in table and 'Stopped' in table
  assert (out / 'scaling.png').stat().st_size > 1000
  assert (out / 'family.txt').read_text().split() == result.topologies
  doc = family.render_doc(str(out))
  small = family.closest(result.records, 29.0e6)
  assert '`{}`'.format(small['arch'].replace('|', '\\|')) in doc and '**Small' in doc
  assert 'As-ViT Large (authors)' in doc and 'finished: reached target_params' in doc
  # the command: the document and, beside it, the scaling plot it shows
  family.main([str(out), '--out', str(tmp_path / 'docs' / 'family.md')])
  written = (tmp_path / 'docs' / 'family.md').read_text()
  assert f'{1 + sum(len(r["candidates"]) for r in result.records)} measurements' in written
  assert '![scaling path](family_scaling.png)' in written
  plot = (tmp_path / 'docs' / 'family_scaling.png').read_bytes()
  assert plot == (out / 'scaling.png').read_bytes()
  # a second run documented beside it keeps its own plot and regenerate command
  family.main([str(out), '--out', str(tmp_path / 'docs' / 'family_other.md')])
  other = (tmp_path / 'docs' / 'family_other.md').read_text()
  assert '![scaling path](family_other_scaling.png)' in other
  assert f'--out {tmp_path / "docs" / "family_other.md"}`' in other
  assert (tmp_path / 'docs' / 'family_other_scaling.png').exists()
  plot = (tmp_path / 'docs' / 'family_scaling.png').read_bytes()
  assert plot == (out / 'scaling.png').read_bytes()


@pytest.mark.slow
def test_grow_stops_after_max_steps(tmp_path):
  config = grow.GrowConfig(max_steps=2, image_size=32, repeats=1)
  result = grow.run_grow(config, str(tmp_path), measure=fake_measure, progress=False)
  assert len(result.records) == 3 and 'max_steps 2' in result.stop_reason


def test_grow_stops_when_no_candidate_is_left(tmp_path):
  config = grow.GrowConfig(target_params=3_000_000, max_params=3_000_000, image_size=32,
                           repeats=1)
  result = grow.run_grow(config, str(tmp_path), measure=fake_measure, progress=False)
  assert 'no candidate' in result.stop_reason
  assert all(r['params'] <= 3_000_000 for r in result.records)


@pytest.mark.slow
def test_grow_resumes_mid_step_to_the_uninterrupted_result(tmp_path):
  full = grow.run_grow(GROW, str(tmp_path / 'a'), measure=fake_measure, progress=False)
  out = str(tmp_path / 'b')
  with pytest.raises(Stop):  # stops after 20 candidate measurements: inside step 2
    grow.run_grow(GROW, out, measure=fake_measure, progress=False,
                  on_measure=_stop_after(20))
  resumed = grow.run_grow(GROW, out, measure=fake_measure, progress=False)
  assert _strip(resumed.records) == _strip(full.records)


_SCRIPT = textwrap.dedent('''
    import sys
    from asvit_tf.search import grow, reinforce
    from tests.search.fakes import slow_measure
    kind, out = sys.argv[1], sys.argv[2]
    if kind == 'search':
      reinforce.run_search(reinforce.SearchConfig(steps=25, image_size=32, repeats=1, seed=7),
                           out, measure=slow_measure, progress=False, tensorboard=False)
    else:
      grow.run_grow(grow.GrowConfig(target_params=30_000_000, max_params=40_000_000,
                                    image_size=32, repeats=1, seed=3),
                    out, measure=slow_measure, progress=False)
''')


def _kill_when(proc, state_path, ready, timeout=120):
  start = time.time()
  while time.time() - start < timeout:
    if os.path.exists(state_path):
      try:
        with open(state_path) as f:
          if ready(json.load(f)):
            break
      except ValueError:
        pass
    if proc.poll() is not None:
      raise AssertionError(f'finished before the kill: {proc.stderr.read()}')
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['search', 'grow'])
def test_sigkill_and_resume_gives_the_uninterrupted_result(tmp_path, kind):
  out = str(tmp_path / kind)
  env = {**os.environ, 'PYTHONPATH': REPO, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  cmd = [sys.executable, '-c', _SCRIPT, kind, out]
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  state_path = os.path.join(out, f'{kind}_state.json')
  if kind == 'search':
    _kill_when(proc, state_path, lambda s: s['step'] >= 5)
  else:
    _kill_when(proc, state_path, lambda s: s['step'] >= 2 and len(s['pending']) >= 3)
  with open(state_path) as f:
    state = json.load(f)
  assert not state['done']
  subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
  if kind == 'search':
    full = reinforce.run_search(SEARCH, str(tmp_path / 'full'), measure=fake_measure,
                                progress=False, tensorboard=False)
    name = 'search.jsonl'
  else:
    full = grow.run_grow(GROW, str(tmp_path / 'full'), measure=fake_measure, progress=False)
    name = 'grow.jsonl'
  with open(os.path.join(out, name)) as f:
    resumed = [json.loads(l) for l in f]
  assert _strip(resumed) == _strip(full.records)


@pytest.mark.slow
def test_a_second_process_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path):
  """Two real processes on one directory: the second exits at once with one line naming
  the first; once the first is killed, its lock is no obstacle."""
  out = str(tmp_path / 'search')
  env = {**os.environ, 'PYTHONPATH': REPO, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  cmd = [sys.executable, '-c', _SCRIPT, 'search', out]
  first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  try:
    state_path = os.path.join(out, 'search_state.json')
    start = time.time()
    while not os.path.exists(state_path) and time.time() - start < 120:
      assert first.poll() is None, first.stderr.read()
      time.sleep(0.05)
    second = subprocess.run([sys.executable, '-m', 'asvit_tf.cli.main', 'search',
                             '--preset=quick', f'--output_dir={out}'], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert first.poll() is None  # the first run was still running
  finally:
    first.kill()
    first.wait()
  assert second.returncode != 0
  lines = [l for l in second.stderr.strip().splitlines()
           if not l.startswith(('WARNING', 'E0000', 'I0000'))]
  assert len(lines) == 1, second.stderr
  assert lines[0].startswith(f'error: {out} is in use by another run (pid {first.pid} on ')
  assert '-c' in lines[0] and 'use another --output_dir' in lines[0]
  assert not os.path.exists(os.path.join(out, 'seed.txt'))
  # the killed run's lock is taken over: the same run resumes and finishes
  subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
  full = reinforce.run_search(SEARCH, str(tmp_path / 'full'), measure=fake_measure,
                              progress=False, tensorboard=False)
  assert open(os.path.join(out, 'seed.txt')).read().strip() == full.seed_string
