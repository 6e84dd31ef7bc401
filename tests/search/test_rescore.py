"""`rescore`: re-ranking a grow's steps under another setting, on hand-made and real metrics."""
import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import pytest

from asvit_tf import arch as arch_lib
from asvit_tf import seeding
from asvit_tf.errors import UserInputError
from asvit_tf.models import size
from asvit_tf.search import grow
from asvit_tf.search import measure as measure_lib
from asvit_tf.search import rescore
from asvit_tf.search import run as run_lib
from tests.search import test_run
from tests.search.fakes import fake_measure

GROW = grow.GrowConfig(target_params=30_000_000, max_params=40_000_000, image_size=32,
                       repeats=1, seed=3, max_steps=3)


@pytest.fixture(scope='module')
def grow_dir(tmp_path_factory):
  """A 3-step grow on hand-made metrics (records and grow_state.json, as `asvit grow` leaves)."""
  out = str(tmp_path_factory.mktemp('grow'))
  grow.run_grow(GROW, out, measure=fake_measure, progress=False)
  return out


def _never(topology, seed):
  raise AssertionError(f'measured {topology} although nothing needs measuring')


def _records(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_the_tie_break_alone_reproduces_the_recorded_choices_without_measuring(grow_dir,
                                                                               tmp_path):
  out = str(tmp_path / 'r')
  report = rescore.run_rescore(grow_dir, [1, 2, 3], out, rescore.Changes(tie_break='ours'),
                               measure=_never, progress=False)
  recorded = _records(os.path.join(grow_dir, grow.LOG_FILE))
  assert [s['new_arch'] for s in report['steps']] == [r['arch'] for r in recorded[1:]]
  assert all(s['same'] for s in report['steps'])
  assert all(s['tau'] == {'rank_sum': 1.0, 'length': 1.0, 'ntk': 1.0} for s in report['steps'])
  assert not report['settings']['measured']
  assert not os.path.exists(os.path.join(out, rescore.MEASURES_FILE))
  assert json.load(open(os.path.join(out, rescore.REPORT_JSON))) == report
  assert 'Same choice at 3 of 3 steps.' in open(os.path.join(out, rescore.REPORT_MD)).read()
  assert os.path.getsize(os.path.join(out, rescore.PLOT_FILE)) > 1000


def _tied_step(tmp_path):
  """A bare grow.jsonl (no grow_state.json) of one step whose three candidates tie: L^E has the
  wider range, so ours takes its highest value (the 2nd) and the authors' code its lowest
  of the first two (the 1st)."""
  base = '8,2,3,{}|4,1,2,{}|4,1,4,{}|4,1,6,1|32,36'
  archs = [base.format(2, 1, 1), base.format(1, 2, 1), base.format(1, 1, 2)]
  cands = [{'arch': a, 'stage': i + 1, 'percent': 10, 'length': v, 'ntk': k, 'bad': False}
           for i, (a, v, k) in enumerate(zip(archs, (1.0, 3.0, 2.0), (10.0, 10.2, 10.1)))]
  start = {'step': 0, 'arch': '8,2,3,1|4,1,2,1|4,1,4,1|4,1,6,1|32,32', 'candidates': []}
  step = {'step': 1, 'arch': archs[1], 'candidates': cands}
  path = tmp_path / 'bare' / 'grow.jsonl'
  path.parent.mkdir()
  path.write_text(json.dumps(start) + '\n' + json.dumps(step) + '\n')
  return str(path), archs


def test_the_authors_tie_break_changes_a_tied_choice(tmp_path):
  path, archs = _tied_step(tmp_path)
  out = str(tmp_path / 'r')
  ours = rescore.run_rescore(path, [1], out, rescore.Changes(tie_break='ours'), measure=_never,
                             progress=False)['steps'][0]
  assert ours['same'] and ours['new_arch'] == archs[1] and ours['new_tie_break'] == 'length'
  authors = rescore.run_rescore(path, [1], out, rescore.Changes(tie_break='authors'),
                                measure=_never, progress=False)['steps'][0]
  assert not authors['same'] and authors['new_arch'] == archs[0]
  assert authors['new_tied'] == 3 and authors['recorded_choice'] == '+1 stage 2, +10 %'
  table = open(os.path.join(out, rescore.REPORT_MD)).read()
  assert '| 1 | 3 | +1 stage 2, +10 % | +1 stage 1, +10 % (tie of 3 → length) | **no** |' in table


def test_a_remeasure_with_the_recorded_setting_reproduces_the_records(grow_dir, tmp_path):
  out = str(tmp_path / 'r')
  report = rescore.run_rescore(grow_dir, [2, 3], out, rescore.Changes(remeasure=True),
                               measure=fake_measure, progress=False)
  recorded = {r['step']: r for r in _records(os.path.join(grow_dir, grow.LOG_FILE))}
  lines = _records(os.path.join(out, rescore.MEASURES_FILE))
  assert len(lines) == len(recorded[2]['candidates']) + len(recorded[3]['candidates'])
  for step in report['steps']:
    cands = recorded[step['step']]['candidates']
    assert [r['new']['length'] for r in step['rows']] == [c['length'] for c in cands]
    assert [r['new']['ntk'] for r in step['rows']] == [c['ntk'] for c in cands]
    assert [r['new']['rank_sum'] for r in step['rows']] == [c['rank_sum'] for c in cands]
    assert step['same'] and step['new_arch'] == recorded[step['step']]['arch']
  assert report['settings']['measured'] and 'the recorded setting, re-measured' in report['what']


def test_another_seed_measures_with_the_steps_seeds_and_is_refused_in_the_same_dir(grow_dir,
                                                                                  tmp_path):
  out = str(tmp_path / 'r')
  report = rescore.run_rescore(grow_dir, [1], out, rescore.Changes(seed=4),
                               measure=fake_measure, progress=False)
  lines = _records(os.path.join(out, rescore.MEASURES_FILE))
  assert {line['seed'] for line in lines} == {seeding.seed(4, 1)}
  step = report['steps'][0]
  assert [r['new']['length'] for r in step['rows']] != [r['recorded']['length']
                                                        for r in step['rows']]
  assert report['what'] == 'seed 3 → 4, re-measured'
  # measured again from the file, not by the measure
  again = rescore.run_rescore(grow_dir, [1], out, rescore.Changes(seed=4), measure=_never,
                              progress=False)
  assert again == report
  with pytest.raises(UserInputError, match=r'different configuration \(seed=4 there, 5 now\)'):
    rescore.run_rescore(grow_dir, [1], out, rescore.Changes(seed=5), measure=fake_measure,
                        progress=False)


def test_another_image_size_reaches_the_evaluator_and_keeps_the_real_candidates(
    grow_dir, tmp_path, monkeypatch):
  built = []

  def evaluator(metrics, config, workers=1):
    built.append(config)
    return measure_lib.SerialEvaluator(fake_measure)

  monkeypatch.setattr(run_lib, 'default_evaluator', evaluator)
  out = str(tmp_path / 'r')
  report = rescore.run_rescore(grow_dir, [1, 2], out, rescore.Changes(image_size=16),
                               progress=False)
  assert [c.image_size for c in built] == [16]
  assert (built[0].repeats, built[0].seed) == (GROW.repeats, GROW.seed)
  assert report['what'] == 'image_size 32 → 16, re-measured'
  assert report['settings']['recorded']['image_size'] == 32
  assert report['settings']['new']['image_size'] == 16
  saved = json.load(open(os.path.join(out, 'rescore_state.json')))['config']
  assert saved['image_size'] == 16
  # the candidates stay the records' real topologies, measured at their proxy widths
  recorded = {r['step']: r for r in _records(os.path.join(grow_dir, grow.LOG_FILE))}
  for step in report['steps']:
    assert [r['arch'] for r in step['rows']] == [c['arch'] for c in
                                                 recorded[step['step']]['candidates']]
  for line in _records(os.path.join(out, rescore.MEASURES_FILE)):
    real = arch_lib.Topology.parse(line['arch'])
    assert line['proxy_arch'] == str(real.replace(width=real.width // grow.WIDTH_FACTOR))
  with pytest.raises(UserInputError, match=r'different configuration \(image_size=16 there, '
                     r'24 now\)'):
    rescore.run_rescore(grow_dir, [1], out, rescore.Changes(image_size=24), measure=_never,
                        progress=False)


def _three_draws(topology, seed):
  """fake_measure's metrics as the mean of three draws 0.5 apart (κ_Θ) and 0.01 apart (L^E)."""
  m = fake_measure(topology, seed)
  return dataclasses.replace(m, length_values=[m.length - 0.01, m.length, m.length + 0.01],
                             ntk_values=[m.ntk - 0.5, m.ntk, m.ntk + 0.5])


def test_draw_noise_is_the_median_standard_error_over_the_spread_of_the_means():
  noise = grow.draw_noise([[1.0, 3.0], [5.0, 7.0], [0.0, 4.0, 8.0]])
  # standard errors 1, 1, 4/√3 → median 1; means 2, 6, 4 → s.d. 2
  assert noise == pytest.approx({'se': 1.0, 'spread': 2.0, 'ratio': 0.5})
  # a non-finite draw is left out; a candidate of one draw has no standard error
  assert grow.draw_noise([[1.0, 3.0, float('nan')], [5.0, 7.0], [9.0]]) == pytest.approx(
      {'se': 1.0, 'spread': 8 ** 0.5, 'ratio': 8 ** -0.5})
  for draws in ([[1.0, 3.0], [2.0]], [[1.0, 3.0], None], [[1.0, 3.0], [3.0, 1.0]]):
    assert grow.draw_noise(draws) is None


def test_a_measured_step_reports_how_far_its_draws_resolve_the_candidates(grow_dir, tmp_path):
  out = str(tmp_path / 'r')
  report = rescore.run_rescore(grow_dir, [1, 2], out, rescore.Changes(repeats=3),
                               measure=_three_draws, progress=False)
  for step in report['steps']:
    lines = [r['new'] for r in step['rows']]
    for key, half_gap in (('length', 0.01), ('ntk', 0.5)):
      noise = step['noise'][key]
      # every candidate's draws are m - gap, m, m + gap: s.e. = gap / √3
      assert noise['se'] == pytest.approx(half_gap / 3 ** 0.5)
      means = [line[key] for line in lines]
      mean = sum(means) / len(means)
      spread = (sum((v - mean) ** 2 for v in means) / (len(means) - 1)) ** 0.5
      assert noise['spread'] == pytest.approx(spread)
      assert noise['ratio'] == pytest.approx(noise['se'] / spread)
  table = open(os.path.join(out, rescore.REPORT_MD)).read()
  assert '| noise L^E | noise κ_Θ |' in table
  ratio = report['steps'][0]['noise']['ntk']['ratio']
  assert f'| {report["steps"][0]["noise"]["length"]["ratio"]:.2f} | {ratio:.2f} |' in table
  # from the records alone there are no draws: no noise columns
  again = rescore.run_rescore(grow_dir, [1], str(tmp_path / 't'),
                              rescore.Changes(tie_break='authors'), measure=_never,
                              progress=False)
  assert again['steps'][0]['noise'] is None
  assert 'noise' not in open(os.path.join(tmp_path, 't', rescore.REPORT_MD)).read()


@pytest.mark.parametrize('steps, changes, message', [
    ([9], rescore.Changes(tie_break='ours'), r'`steps` 9: .* holds steps 1..3 with candidates'),
    ([0], rescore.Changes(tie_break='ours'), r'`steps` 0: .*step 0, the start, has none'),
    ([], rescore.Changes(tie_break='ours'), '`steps` is empty'),
    ([1], rescore.Changes(repeats=0), '`repeats` must be an integer >= 1, got 0'),
    ([1], rescore.Changes(tie_break='first'), '`tie_break` must be one of ours, authors'),
    ([1], rescore.Changes(image_size=0), '`image_size` must be an integer >= 1, got 0'),
    ([1], rescore.Changes(image_size=2),
     '`image_size` must be at least the tokenization stride 4 .*got 2'),
    ([1], rescore.Changes(image_size=10**6), '`image_size` 1000000 is too large for'),
])
def test_bad_steps_and_settings_are_one_line_errors(grow_dir, tmp_path, steps, changes,
                                                    message):
  with pytest.raises(UserInputError, match=message):
    rescore.run_rescore(grow_dir, steps, str(tmp_path / 'r'), changes, measure=_never,
                        progress=False)


def test_missing_records_and_settings_are_one_line_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    rescore.run_rescore(str(tmp_path / 'none'), [1], str(tmp_path / 'r'))
  path, _ = _tied_step(tmp_path)
  with pytest.raises(UserInputError, match='no grow_state.json beside the records'):
    rescore.run_rescore(path, [1], str(tmp_path / 'r'), rescore.Changes(repeats=1))
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'grow.jsonl').write_text('{"step": 0, "arch": "x", "candidates": []}\n')
  with pytest.raises(UserInputError, match='holds no grow step with candidates'):
    rescore.run_rescore(str(tmp_path / 'empty'), [1], str(tmp_path / 'r'))


def test_records_kept_apart_are_re_measured_with_their_settings_file(grow_dir, tmp_path):
  path, archs = _tied_step(tmp_path)
  settings = tmp_path / 'settings.json'
  settings.write_text(json.dumps({'arch': GROW.arch, 'image_size': 32, 'repeats': 1, 'seed': 3}))
  out = str(tmp_path / 'r')
  report = rescore.run_rescore(path, [1], out, rescore.Changes(seed=4), measure=fake_measure,
                               progress=False, grow_settings=str(settings))
  assert report['what'] == 'seed 3 → 4, re-measured'
  assert report['settings']['recorded']['image_size'] == 32
  lines = _records(os.path.join(out, rescore.MEASURES_FILE))
  assert sorted(line['arch'] for line in lines) == sorted(archs)
  assert {line['seed'] for line in lines} == {seeding.seed(4, 1)}
  # a whole grow_state.json serves as well
  state = json.load(open(os.path.join(grow_dir, 'grow_state.json')))
  settings.write_text(json.dumps(state))
  assert rescore.load_grow(path, str(settings)).config == GROW
  # a run with its own state, or a file that is no setting: one line each
  with pytest.raises(UserInputError,
                     match='has its own grow_state.json; leave `grow_settings` out'):
    rescore.load_grow(grow_dir, str(settings))
  for text, message in (('{"repeats": 1}', 'not a grow setting'), ('[1', 'cannot read it')):
    settings.write_text(text)
    with pytest.raises(UserInputError, match=message):
      rescore.load_grow(path, str(settings))


def test_parse_steps():
  assert rescore.parse_steps('3, 1-2,3') == [1, 2, 3]
  for text in ('a', '4-2', '1,,2'):
    with pytest.raises(UserInputError, match='`steps`'):
      rescore.parse_steps(text)


# --- real metrics, processes -----------------------------------------------------------------

def _tiny_real_grow(out: str) -> dict:
  """Step 1 of a real grow at 16 px with 2 to 4 candidates; returns its record."""
  config = dataclasses.replace(GROW, image_size=16, max_steps=1)
  seed = arch_lib.Topology.parse(config.arch)
  # only the three cheapest candidates of step 1 stay under the ceiling
  limit = sorted(size.estimate_params(c.real(seed)) for c in grow.candidates(8, (1, 1, 1, 1)))[2]
  config = dataclasses.replace(config, max_params=limit, target_params=limit)
  recorded = grow.run_grow(config, out, progress=False).records[1]
  assert 2 <= len(recorded['candidates']) <= 4
  return recorded


@pytest.mark.slow
def test_a_tiny_real_grow_is_reproduced_by_its_recorded_setting(tmp_path):
  out = str(tmp_path / 'g')
  recorded = _tiny_real_grow(out)
  report = rescore.run_rescore(out, [1], str(tmp_path / 'r'), rescore.Changes(remeasure=True),
                               progress=False)
  step = report['steps'][0]
  for row, c in zip(step['rows'], recorded['candidates']):
    assert row['new']['length'] == pytest.approx(c['length'], rel=1e-6)
    assert row['new']['ntk'] == pytest.approx(c['ntk'], rel=1e-6)
  assert step['same'] and step['new_arch'] == recorded['arch']


@pytest.mark.slow
def test_a_tiny_real_grow_remeasured_at_another_image_size_measures_at_that_size(tmp_path):
  out = str(tmp_path / 'g')
  recorded = _tiny_real_grow(out)
  report = rescore.run_rescore(out, [1], str(tmp_path / 'r'), rescore.Changes(image_size=32),
                               progress=False)
  at_32 = measure_lib.make_measure(('length', 'ntk'), image_size=32, repeats=GROW.repeats)
  for row, c in zip(report['steps'][0]['rows'], recorded['candidates']):
    want = at_32(rescore.proxy_topology(c), seeding.seed(GROW.seed, 1))
    assert row['new']['length'] == pytest.approx(want.length, rel=1e-6)
    assert row['new']['ntk'] == pytest.approx(want.ntk, rel=1e-6)
    assert row['new']['length'] != pytest.approx(c['length'], rel=1e-3)


_SCRIPT = textwrap.dedent('''
    import sys
    from asvit_tf.search import rescore
    from tests.search.fakes import slow_measure
    rescore.run_rescore(sys.argv[1], [1, 2, 3], sys.argv[2], rescore.Changes(repeats=2),
                        measure=slow_measure, progress=False)
''')


@pytest.mark.slow
def test_sigkill_and_resume_gives_the_uninterrupted_output(grow_dir, tmp_path):
  out = str(tmp_path / 'killed')
  env = {**os.environ, 'PYTHONPATH': test_run.REPO, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  cmd = [sys.executable, '-c', _SCRIPT, grow_dir, out]
  proc = subprocess.Popen(cmd, cwd=test_run.REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  measures = os.path.join(out, rescore.MEASURES_FILE)
  test_run._kill_when(proc, os.path.join(out, 'rescore_state.json'),  # pylint: disable=W0212
                      lambda _: os.path.exists(measures) and len(_records(measures)) >= 3)
  killed = len(_records(measures))
  assert not os.path.exists(os.path.join(out, rescore.REPORT_JSON))
  subprocess.run(cmd, cwd=test_run.REPO, env=env, check=True, capture_output=True,
                 timeout=300)
  full = rescore.run_rescore(grow_dir, [1, 2, 3], str(tmp_path / 'full'),
                             rescore.Changes(repeats=2), measure=fake_measure, progress=False)
  assert json.load(open(os.path.join(out, rescore.REPORT_JSON))) == full
  key = lambda line: (line['step'], line['arch'])
  resumed = _records(measures)
  assert killed < len(resumed) == sum(s['candidates'] for s in full['steps'])
  assert sorted(resumed, key=key) == sorted(_records(os.path.join(tmp_path, 'full',
                                                                  rescore.MEASURES_FILE)),
                                            key=key)


def _asvit(*args):
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  return subprocess.run([sys.executable, '-m', 'asvit_tf.cli.main', 'rescore', *args],
                        cwd=test_run.REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_command_prints_the_table_and_refuses_bad_input_in_one_line(grow_dir, tmp_path):
  path, _ = _tied_step(tmp_path)
  out = f'--output_dir={tmp_path}/r'
  r = _asvit(f'--grow_dir={path}', '--steps=1', '--tie_break=authors', '--noprogress', out)
  assert r.returncode == 0, r.stderr
  assert 'Same choice at 0 of 1 steps.' in r.stdout and '**no**' in r.stdout
  for args, message in [(('--steps=7', '--tie_break=authors'), '--steps 7: '),
                        (('--steps=1', '--ntk_data=photos'),
                         'no grow_state.json beside the records'),
                        (('--steps=x',), "--steps 'x': must be step numbers")]:
    r = _asvit(f'--grow_dir={path}', *args, out)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1].startswith('error: ') and message in r.stderr
  r = _asvit(f'--grow_dir={tmp_path}/none', '--steps=1', out)
  assert r.returncode != 0 and 'does not exist' in r.stderr.strip().splitlines()[-1]
  r = _asvit(f'--grow_dir={grow_dir}', '--steps=1', '--image_size=3', out)
  assert r.returncode != 0 and r.stderr.strip().splitlines()[-1] == (
      'error: --image_size must be at least the tokenization stride 4 (one 4x4 patch per side, '
      'so every stage has a token of image pixels), got 3')
