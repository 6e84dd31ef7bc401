"""The evolutionary search on hand-made metrics: operators, determinism, ceilings, resume."""
import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from asvit_tf import arch as arch_lib
from asvit_tf import seeding
from asvit_tf.search import evolution as ev
from asvit_tf.search import reinforce
from asvit_tf.search import state as state_lib
from tests.search import test_run
from tests.search.fakes import fake_measure

_strip = test_run._strip  # pylint: disable=protected-access
CONFIG = ev.EvolutionConfig(population=6, measurements=30, image_size=32, repeats=1, seed=5)


def _run(config, out, **kw):
  kw.setdefault('progress', False)
  kw.setdefault('tensorboard', False)
  kw.setdefault('plot_every', 0)
  return ev.run_evolution(config, str(out), measure=kw.pop('measure', fake_measure), **kw)


def _in_space(decisions):
  topo = arch_lib.Topology.from_decisions(decisions)
  assert topo.decisions() == tuple(decisions)  # in the search space, S4 fixed
  return topo


def test_mutation_and_crossover_keep_topologies_in_the_search_space():
  rng = seeding.rng(0, 1, 2)
  changed = np.zeros(len(ev.SIZES))
  for _ in range(2000):
    a, b = ev.random_decisions(rng), ev.random_decisions(rng)
    _in_space(a)
    m = ev.mutate(a, 0.3, rng)
    _in_space(m)
    changed += np.array(m) != np.array(a)
    c = ev.crossover(a, b, rng)
    _in_space(c)
    assert all(x in (y, z) for x, y, z in zip(c, a, b))
  # every decision mutates (to another choice) at about the rate
  assert np.all(np.abs(changed / 2000 - 0.3) < 0.05), changed / 2000
  assert ev.mutate(a, 1.0, rng) != a and all(
      x != y for x, y in zip(ev.mutate(a, 1.0, rng), a))
  assert ev.mutate(a, 0.0, rng) == a


def test_fitness_is_the_rank_sum_among_the_measured():
  entries = [{'length': 3.0, 'ntk': 10.0}, {'length': 1.0, 'ntk': 1.0},
             {'length': 2.0, 'ntk': 5.0}, {'length': 5.0, 'ntk': 2.0, 'bad': True}]
  fit = ev.rank(entries, 'length_ntk')
  assert [f['ranks'] for f in fit] == [{'length': 2, 'ntk': 3}, {'length': 4, 'ntk': 1},
                                       {'length': 3, 'ntk': 2}, {'length': 1, 'ntk': 4}]
  # sums 5, 5, 5, 5: the first metric (L^E) breaks the tie, so the bad one still wins
  assert [f['place'] for f in fit] == [1, 3, 2, 0]
  assert [f['place'] for f in ev.rank(entries, 'ntk')] == [2, 0, 1, 3]  # bad κ_Θ is last
  assert [f['place'] for f in ev.rank(entries, 'length')] == [1, 3, 2, 0]


@pytest.mark.slow
def test_a_tiny_search_is_deterministic_by_seed_and_writes_the_outputs(tmp_path):
  a = _run(CONFIG, tmp_path / 'a', tensorboard=True, plot_every=1)
  b = _run(CONFIG, tmp_path / 'b')
  other = _run(ev.EvolutionConfig(population=6, measurements=30, image_size=32, repeats=1,
                                  seed=6), tmp_path / 'c')
  assert _strip(a.records) == _strip(b.records) and a.seed_string == b.seed_string
  assert _strip(a.records) != _strip(other.records)
  assert [r['measured'] for r in a.records] == [6, 12, 18, 24, 30]
  seen = [c['topology'] for r in a.records for c in r['children']]
  assert len(set(seen)) == 30  # every measurement a new topology
  for r in a.records[1:]:
    assert all(c['parents'] for c in r['children'])
  # the fittest of everything measured: the smallest rank sum of L^E and κ_Θ
  out = tmp_path / 'a'
  state = json.loads((out / 'search_state.json').read_text())
  entries = list(state['measured'].values())
  fit = ev.rank(entries, 'length_ntk')
  best = arch_lib.Topology.from_decisions(
      map(int, list(state['measured'])[fit.index(min(fit, key=lambda f: f['place']))]
          .split(',')))
  assert (out / 'seed.txt').read_text().strip() == a.seed_string == best.seed_string
  result = json.loads((out / 'result.json').read_text())
  assert result['seed'] == a.seed_string and result['measured'] == 30
  assert result['population'][0]['topology'] == a.seed_string
  lines = (out / 'search.jsonl').read_text().splitlines()
  assert [json.loads(l)['step'] for l in lines] == [0, 1, 2, 3, 4]
  assert (out / 'search.png').stat().st_size > 1000
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(out / 'tensorboard'))
  # selection works: the population's L^E (which the fake raises with the params) grows
  assert a.records[-1]['mean_length'] >= a.records[0]['mean_length']


def test_ceilings_hold_for_every_measured_topology(tmp_path):
  config = ev.EvolutionConfig(population=6, measurements=30, image_size=32, repeats=1,
                              seed=5, max_params=2_000_000, max_macs=400_000_000)
  result = _run(config, tmp_path)
  children = [c for r in result.records for c in r['children']]
  assert children and all(c['params'] <= 2_000_000 and c['macs'] <= 400_000_000
                          for c in children)
  free = _run(CONFIG, tmp_path / 'free')
  assert any(c['params'] > 2_000_000 or c['macs'] > 400_000_000
             for r in free.records for c in r['children'])
  with pytest.raises(ValueError, match=r'`max_params` 1000 admits no topology of the search '
                     r'space at C=32: the smallest, 4,8,2\|2,4,2\|2,2,2\|2,1,2\|16, has'):
    ev.EvolutionConfig(max_params=1000).validate()


@pytest.mark.parametrize('changes, message', [
    (dict(tournament=7), r'`tournament` \(7\) must not exceed `population` \(6\)'),
    (dict(measurements=5), r'`measurements` \(5\) must be at least `population` \(6\)'),
    (dict(mutation_rate=1.5), r'`mutation_rate` must be in \[0, 1\], got 1.5'),
    (dict(fitness='accuracy'), '`fitness` must be one of'),
])
def test_bad_settings_are_refused_in_one_line(changes, message):
  config = ev.EvolutionConfig(population=6, measurements=30, image_size=32)
  with pytest.raises(ValueError, match=message):
    ev.EvolutionConfig(**{**{'population': 6, 'measurements': 30, 'image_size': 32},
                          **changes}).validate()
  config.validate()


@pytest.mark.slow
def test_resumed_mid_generation_gives_the_uninterrupted_result(tmp_path):
  full = _run(CONFIG, tmp_path / 'full')
  for stop in (3, 16):  # inside generations 0 and 2
    out = tmp_path / f'b{stop}'
    with pytest.raises(test_run.Stop):
      _run(CONFIG, out, on_measure=test_run._stop_after(stop))  # pylint: disable=W0212
    resumed = _run(CONFIG, out)
    assert _strip(resumed.records) == _strip(full.records)
    assert resumed.seed_string == full.seed_string


def test_the_strategies_do_not_share_a_directory(tmp_path):
  reinforce.run_search(reinforce.SearchConfig(steps=2, image_size=32, repeats=1),
                       str(tmp_path), measure=fake_measure, progress=False, tensorboard=False)
  with pytest.raises(ValueError, match='holds a reinforce search; an evolution search needs '
                     'another `output_dir`'):
    _run(CONFIG, tmp_path)


_SCRIPT = textwrap.dedent('''
    import sys
    from asvit_tf.search import evolution as ev
    from tests.search.fakes import slow_measure
    ev.run_evolution(ev.EvolutionConfig(population=6, measurements=30, image_size=32,
                                        repeats=1, seed=5),
                     sys.argv[1], measure=slow_measure, progress=False, tensorboard=False)
''')


@pytest.mark.slow
def test_sigkill_and_resume_gives_the_uninterrupted_result(tmp_path):
  out = str(tmp_path / 'evo')
  env = {**os.environ, 'PYTHONPATH': test_run.REPO, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  cmd = [sys.executable, '-c', _SCRIPT, out]
  proc = subprocess.Popen(cmd, cwd=test_run.REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  state_path = os.path.join(out, 'search_state.json')
  # killed inside generation 2, with some of its measurements saved
  test_run._kill_when(proc, state_path,  # pylint: disable=protected-access
                      lambda s: s['step'] >= 2 and len(s['pending']) >= 2)
  with open(state_path) as f:
    assert not json.load(f)['done']
  subprocess.run(cmd, cwd=test_run.REPO, env=env, check=True, capture_output=True,
                 timeout=300)
  full = _run(CONFIG, tmp_path / 'full')
  with open(os.path.join(out, 'search.jsonl')) as f:
    resumed = [json.loads(l) for l in f]
  assert _strip(resumed) == _strip(full.records)
  assert open(os.path.join(out, 'seed.txt')).read().strip() == full.seed_string


_FLAGS_SCRIPT = textwrap.dedent('''
    import dataclasses, json, sys
    from absl import flags
    from asvit_tf.cli import search
    search.define_flags()
    flags.FLAGS(['asvit'] + sys.argv[1:])
    config = search.config_from_flags()
    print(type(config).__name__, json.dumps(dataclasses.asdict(config)))
''')


@pytest.mark.parametrize('args, expected', [
    ((), reinforce.SearchConfig()),  # REINFORCE stays the default, the paper's preset
    (('--preset=quick',), reinforce.SearchConfig(steps=10, image_size=32, repeats=1)),
    (('--strategy=evolution',), ev.EvolutionConfig()),
    (('--strategy=evolution', '--preset=quick', '--measurements=30', '--max_macs=5e8',
      '--mutation_rate=0.2', '--reward=ntk'),
     ev.EvolutionConfig(population=6, measurements=30, image_size=32, repeats=1,
                        max_macs=500_000_000, mutation_rate=0.2, fitness='ntk')),
    (('--population=4',), '--population: only with --strategy=evolution'),
    (('--strategy=evolution', '--steps=3'), '--steps applies to --strategy=reinforce only'),
])
def test_the_command_line_makes_the_config(args, expected):
  r = subprocess.run([sys.executable, '-c', _FLAGS_SCRIPT, '--output_dir=x', *args],
                     cwd=test_run.REPO, capture_output=True, text=True, timeout=120,
                     env={**os.environ, 'PYTHONPATH': test_run.REPO})
  if isinstance(expected, str):
    assert r.returncode != 0 and expected in r.stderr
    return
  assert r.returncode == 0, r.stderr
  name, values = r.stdout.split(' ', 1)
  assert name == type(expected).__name__
  assert json.loads(values) == json.loads(state_lib.dumps(dataclasses.asdict(expected)))
