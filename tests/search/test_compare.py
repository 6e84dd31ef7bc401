"""`compare`: seed searches compared at equal measurements, on hand-made run directories in
both formats (REINFORCE's sample records, evolution's generations of children); no measuring."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from asvit_tf import arch as arch_lib
from asvit_tf.correlate import train
from asvit_tf.errors import UserInputError
from asvit_tf.search import compare
from asvit_tf.search import evolution
from asvit_tf.search import reinforce
from asvit_tf.search import state as state_lib
from tests.search.fakes import fake_measure

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEARCH = dataclasses.asdict(reinforce.SearchConfig(steps=6, image_size=32, repeats=1, seed=4))
EVOLVE = dataclasses.asdict(evolution.EvolutionConfig(population=2, measurements=6,
                                                      image_size=32, repeats=1, seed=4))


def topo(i: int) -> str:
  """A distinct seed topology of the search space per i (0 <= i < 25)."""
  return arch_lib.Topology.from_decisions([i % 5, (i // 5) % 3] + [0] * 10).seed_string


def metrics(length, ntk, bad=False):
  return {'length': length, 'ntk': ntk, 'bad': bad}


def write_run(path, config, records, done=True, result=None):
  """A search directory as `asvit search` leaves it: state, JSONL and (if done) seed.txt."""
  os.makedirs(path, exist_ok=True)
  state_lib.save_state(str(path), {'kind': 'search', 'config': config, 'step': len(records),
                                   'done': done, 'records': records})
  state_lib.write_jsonl(os.path.join(path, reinforce.LOG_FILE), records)
  if result is not None:
    with open(os.path.join(path, reinforce.SEED_FILE), 'w') as f:
      f.write(result + '\n')
  return str(path)


def reinforce_run(path, samples, config=None, **kw):
  """`samples`: (topology index, metrics) per step; a topology met again is `cached`."""
  records, seen = [], set()
  for step, (i, m) in enumerate(samples):
    records.append({'step': step, 'topology': topo(i), **m, 'params': 1, 'macs': None,
                    'cached': topo(i) in seen, 'reward': 0.0})
    seen.add(topo(i))
  return write_run(path, config or SEARCH, records, **kw)


def evolution_run(path, generations, config=None, **kw):
  """`generations`: per generation, its children as (topology index, metrics)."""
  records, seen = [], set()
  for step, children in enumerate(generations):
    kids = []
    for i, m in children:
      kids.append({'topology': topo(i), **m, 'params': 1, 'macs': 1, 'cached': topo(i) in seen})
      seen.add(topo(i))
    records.append({'step': step, 'children': kids, 'measured': len(seen)})
  return write_run(path, config or EVOLVE, records, **kw)


@pytest.fixture
def two_runs(tmp_path):
  """REINFORCE meets 0, 1, 0 again (cached), 2, 3 (bad, the best L^E), 4; evolution meets
  5, 1 (shared with REINFORCE), then 1 again (a reused parent), 6, 7, 8. The union's best is
  6; REINFORCE returns 9, which nobody measured."""
  r = reinforce_run(tmp_path / 'r', [
      (0, metrics(1.0, 50.0)), (1, metrics(2.0, 40.0)), (0, metrics(1.0, 50.0)),
      (2, metrics(2.0, 40.0)), (3, metrics(9.0, None, bad=True)), (4, metrics(0.5, 90.0))],
      result=topo(9))
  e = evolution_run(tmp_path / 'e', [
      [(5, metrics(1.5, 45.0)), (1, metrics(2.0, 40.0))],
      [(1, metrics(2.0, 40.0)), (6, metrics(3.0, 10.0))],
      [(7, metrics(0.1, 99.0)), (8, metrics(2.5, 30.0))]], result=topo(6))
  return r, e


def test_each_run_yields_its_distinct_topologies_in_the_order_measured(two_runs):
  r, e = (compare.load_run(p) for p in two_runs)
  assert [row['topology'] for row in r.measured] == [topo(i) for i in (0, 1, 2, 3, 4)]
  assert [row['topology'] for row in e.measured] == [topo(i) for i in (5, 1, 6, 7, 8)]
  assert (r.strategy, e.strategy) == ('reinforce', 'evolution')
  assert r.measured[3]['bad'] and r.measured[3]['ntk'] is None
  # Params and MACs are counted, alike for both formats (REINFORCE records have no MACs).
  params, macs = compare._count(topo(1), 32)  # pylint: disable=protected-access
  assert r.measured[1]['params'] == e.measured[1]['params'] == params > 1
  assert r.measured[1]['macs'] == e.measured[1]['macs'] == macs > 1


def test_the_union_is_ranked_by_the_rank_sum_with_ties_and_bad_networks_last(two_runs):
  report = compare.compare([compare.load_run(p) for p in two_runs])
  assert report['measurements'] == 5  # REINFORCE's 5 distinct: evolution cut to 5 too
  ranked = [(e['topology'], e['rank']) for e in report['union']]
  # L^E dense ranks (desc): 9→1 (bad), 3→2, 2.5→3, 2→4, 1.5→5, 1→6, 0.5→7, 0.1→8;
  # κ_Θ (asc): 10→1, 30→2, 40→3, 45→4, 50→5, 90→6, 99→7, bad→8.
  # Sums: t6 3, t8 5, t1 7, t2 7, t3 9, t5 9, t0 11, t4 13, t7 15. Ties of t1/t2 (equal
  # metrics) and t3/t5 go to the better L^E rank, then the earlier measurement.
  assert ranked == [(topo(6), 1), (topo(8), 2), (topo(1), 3), (topo(2), 4), (topo(3), 5),
                    (topo(5), 6), (topo(0), 7), (topo(4), 8), (topo(7), 9)]
  shared = next(e for e in report['union'] if e['topology'] == topo(1))
  assert shared['found'] == [2, 2]  # both met it at their second measurement: counted once
  assert len(report['union']) == 9 and report['mismatch'] == 0.0


def test_the_runs_are_cut_to_equal_measurements(two_runs):
  runs = [compare.load_run(p) for p in two_runs]
  report = compare.compare(runs, measurements=2)
  assert {e['topology'] for e in report['union']} == {topo(0), topo(1), topo(5)}
  r, e = report['runs']
  # Within 2 measurements both found t1, the union's best of the three.
  assert r['best']['topology'] == e['best']['topology'] == topo(1)
  assert (r['best']['rank'], r['best']['found_at'], e['best']['found_at']) == (1, 2, 2)
  assert len(r['curve']) == len(e['curve']) == 2
  # Evolution's result t6 was measured at its 3rd measurement: after the cut, so unranked.
  assert e['result']['rank'] is None and e['result']['measured_at'] == 3
  assert e['result']['length'] == 3.0  # its metrics are still known
  with pytest.raises(UserInputError, match=r'`measurements` 6 exceeds the 5 distinct'):
    compare.compare(runs, measurements=6)
  with pytest.raises(UserInputError, match=r'`measurements` must be >= 1, got 0'):
    compare.compare(runs, measurements=0)


def test_the_best_so_far_curve_and_the_top_counts(two_runs):
  assert compare.best_so_far([5, 3, 4, 1, 2]) == [5, 3, 3, 1, 1]
  r, e = compare.compare([compare.load_run(p) for p in two_runs])['runs']
  assert r['curve'] == [7, 3, 3, 3, 3]  # t0 (7), t1 (3), t2 (4), t3 (5), t4 (8)
  assert e['curve'] == [6, 3, 1, 1, 1]  # t5 (6), t1 (3), t6 (1), t7 (9), t8 (2)
  assert (r['best']['topology'], r['best']['found_at']) == (topo(1), 2)
  assert (e['best']['topology'], e['best']['found_at']) == (topo(6), 3)
  assert (r['top10'], e['top10']) == (5, 5)  # a union of 9: everything is in its top 10
  assert (r['top_fraction'], e['top_fraction']) == (0, 1)  # the top 1 % of 9 is rank 1
  assert compare.top_count(9) == 1 and compare.top_count(360) == 4
  params, macs = compare._count(topo(9), 32)  # pylint: disable=protected-access
  assert r['result'] == {'topology': topo(9), 'rank': None, 'measured_at': None,
                         'length': None, 'ntk': None, 'params': params, 'macs': macs,
                         'bad': None}  # never measured: only its size is known
  assert e['result']['rank'] == 1 and e['result']['measured_at'] == 3


def test_a_run_in_progress_is_compared_without_a_result(tmp_path, two_runs):
  unfinished = reinforce_run(tmp_path / 'u', [(6, metrics(3.0, 10.0)), (0, metrics(1.0, 50))],
                             done=False)
  report = compare.compare([compare.load_run(unfinished), compare.load_run(two_runs[1])])
  assert report['measurements'] == 2
  assert report['runs'][0]['result'] is None and not report['runs'][0]['done']
  assert report['runs'][0]['best']['rank'] == 1


@pytest.mark.parametrize('change, message', [
    (dict(seed=5), r"measures unlike .* \(seed=4 there, 5 here\)"),
    (dict(image_size=64, repeats=2),
     r'\(image_size=32 there, 64 here; repeats=1 there, 2 here\)'),
    (dict(share_embedding=True), r'share_embedding=False there, True here'),
])
def test_runs_measured_differently_are_refused_in_one_line(tmp_path, two_runs, change,
                                                           message):
  other = evolution_run(tmp_path / 'o', [[(5, metrics(1.0, 1.0))]], config={**EVOLVE, **change})
  with pytest.raises(UserInputError, match=message) as info:
    compare.compare([compare.load_run(two_runs[0]), compare.load_run(other)])
  assert '\n' not in str(info.value)


def test_a_setting_added_after_a_run_was_saved_matches_at_its_default(tmp_path, two_runs):
  old = {k: v for k, v in SEARCH.items() if k != 'share_embedding'}
  path = reinforce_run(tmp_path / 'old', [(5, metrics(1.0, 1.0))], config=old)
  report = compare.compare([compare.load_run(path), compare.load_run(two_runs[1])])
  assert report['measurements'] == 1
  # Two runs of one strategy are told apart by their directories.
  report = compare.compare([compare.load_run(path), compare.load_run(two_runs[0])])
  assert report['labels'] == [f'reinforce ({path})', f'reinforce ({two_runs[0]})']


def test_bad_inputs_are_refused_in_one_line(tmp_path, two_runs):
  r, e = two_runs
  (tmp_path / 'empty').mkdir()
  cases = [
      (lambda: compare.load_run(str(tmp_path / 'none')), r'`runs` .*none is not a directory'),
      (lambda: compare.load_run(str(tmp_path / 'empty')),
       r'`runs` .*empty is not a search run: it has no search_state.json'),
      (lambda: compare.compare([compare.load_run(r)]),
       r'`runs` needs at least two search directories, got 1'),
      (lambda: compare.compare([compare.load_run(r), compare.load_run(r + '/.')]),
       r'`runs` names .*/r/?\.? twice'),
      (lambda: compare.load_run(reinforce_run(tmp_path / 'p', [(0, metrics(1, 1))],
                                              config={**SEARCH, 'reward': 'params'})),
       r"searched by reward 'params', so it did not measure both L\^E and κ_Θ"),
      (lambda: compare.load_run(evolution_run(tmp_path / 'n', [],
                                              config={**EVOLVE, 'fitness': 'ntk'})),
       r"searched by reward 'ntk'"),
      (lambda: compare.load_run(reinforce_run(tmp_path / 'z', [])),
       r'has measured nothing yet'),
      (lambda: compare.output_paths('docs/strategies.txt'),
       r"`out` must name a .md file .*got 'docs/strategies.txt'"),
  ]
  for call, message in cases:
    with pytest.raises(UserInputError, match=message) as info:
      call()
    assert '\n' not in str(info.value)
  with open(os.path.join(tmp_path / 'empty', 'search_state.json'), 'w') as f:
    f.write('{"kind": "grow"}')
  with pytest.raises(UserInputError, match=r'cannot read the saved state .*not the state of '):
    compare.load_run(str(tmp_path / 'empty'))


def test_the_report_files(tmp_path, two_runs):
  report = compare.compare([compare.load_run(p) for p in two_runs])
  out = str(tmp_path / 'docs' / 'strategies.md')
  text = compare.write(report, out, 'asvit compare_searches --runs=r,e')
  assert open(out).read() == text
  assert 'Made by `asvit compare_searches --runs=r,e`.' in text
  assert 'Measured alike: seed 4, C=32' in text
  assert '![best rank so far](strategies.png)' in text
  assert '| 5 | 3 | 1 |' in text  # the curve's row at 5 measurements
  saved = json.load(open(str(tmp_path / 'docs' / 'strategies.json')))
  assert saved['runs'][1]['curve'] == [6, 3, 1, 1, 1]
  assert saved['command'] == 'asvit compare_searches --runs=r,e'
  assert os.path.getsize(str(tmp_path / 'docs' / 'strategies.png')) > 1000


def test_training_the_results_once_per_seed_and_topology(tmp_path, two_runs):
  r, e = two_runs
  # Both runs returning one topology: it is trained once per seed.
  with open(os.path.join(r, reinforce.SEED_FILE), 'w') as f:
    f.write(topo(6) + '\n')
  calls = []

  def fake_train(topology, settings):
    calls.append((topology.seed_string, settings.seed))
    return {'accuracy': 0.5 + settings.seed / 10, 'train_loss': 1.0,
            'seconds': {'wall': 0.0, 'cpu': 0.0}}

  report = compare.compare([compare.load_run(p) for p in two_runs])
  budget = train.TrainSettings(train_steps=30, train_warmup_steps=2)
  train_dir = str(tmp_path / 'trained')
  compare.train_results(report, budget, [0, 2], train_dir, progress=False,
                        train_network=fake_train)
  assert calls == [(topo(6), 0), (topo(6), 2)]
  for run in report['runs']:
    assert run['result']['accuracy'] == [0.5, 0.7]
    assert run['result']['mean_accuracy'] == pytest.approx(0.6)
  assert report['training']['seeds'] == [0, 2] and report['training']['train_steps'] == 30
  text = compare.markdown(report, 'cmd', 'p.png')
  assert '| 0.500, 0.700 |' in text and '30 steps of 64' in text
  # Resumed: nothing is trained again.
  compare.train_results(compare.compare([compare.load_run(p) for p in two_runs]), budget,
                        [0, 2], train_dir, progress=False, train_network=fake_train)
  assert len(calls) == 2


def test_runs_written_by_the_searches_are_read_in_their_order_of_measurement(tmp_path):
  """Runs written by the searches themselves (hand-made metrics), at one seed."""
  config = dict(image_size=32, repeats=1, seed=1)
  r = reinforce.run_search(reinforce.SearchConfig(steps=30, **config), str(tmp_path / 'r'),
                           measure=fake_measure, progress=False, tensorboard=False,
                           plot_every=0)
  e = evolution.run_evolution(evolution.EvolutionConfig(population=4, measurements=12,
                                                        **config),
                              str(tmp_path / 'e'), measure=fake_measure, progress=False,
                              tensorboard=False, plot_every=0)
  runs = [compare.load_run(r.output_dir), compare.load_run(e.output_dir)]
  assert [row['topology'] for row in runs[0].measured] == [
      rec['topology'] for rec in r.records if not rec['cached']]
  archive = state_lib.read_state(e.output_dir, 'search')['measured']  # in measurement order
  assert [row['topology'] for row in runs[1].measured] == [
      arch_lib.Topology.from_decisions(map(int, k.split(','))).seed_string for k in archive]
  assert [row['length'] for row in runs[1].measured] == [v['length'] for v in archive.values()]
  report = compare.compare(runs)
  assert report['measurements'] == min(12, len(runs[0].measured))
  assert report['runs'][0]['result']['topology'] == r.seed_string
  assert report['runs'][1]['result']['topology'] == e.seed_string


def test_two_measurements_of_one_topology_that_differ_are_reported():
  union, mismatch = compare.pool([[{'topology': 'a', **metrics(2.0, 10.0)}],
                                  [{'topology': 'a', **metrics(2.0, 10.5)}]])
  assert len(union) == 1 and union[0]['found'] == [1, 1]
  assert mismatch == pytest.approx(0.5 / 10.5)


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'asvit_tf.cli.main', 'compare_searches', *args],
                        cwd=REPO, capture_output=True, text=True, timeout=120,
                        env={**os.environ, 'PYTHONPATH': REPO})


def test_the_command_writes_the_report_and_refuses_in_one_line(tmp_path, two_runs):
  out = str(tmp_path / 'cmp.md')
  done = _cli(f'--runs={two_runs[0]},{two_runs[1]}', f'--out={out}', '--measurements=4')
  assert done.returncode == 0, done.stderr
  assert f'Made by `asvit compare_searches --runs={two_runs[0]},{two_runs[1]} --out={out} ' \
         '--measurements=4`.' in done.stdout
  assert done.stdout == open(out).read()
  bad = _cli(f'--runs={two_runs[0]},{tmp_path}', f'--out={out}')
  assert bad.returncode == 2
  assert bad.stderr.startswith(f'error: --runs {tmp_path} is not a search run')
  assert bad.stderr.count('\n') == 1
