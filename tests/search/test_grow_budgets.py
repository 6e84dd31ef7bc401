"""Grow's budgets (--max_macs, --budgets), the tie-break option and the measures' options."""
import dataclasses
import json
import os
import subprocess
import sys
import types

import pytest

from asvit_tf import arch as arch_lib
from asvit_tf.errors import UserInputError
from asvit_tf.models import size
from asvit_tf.search import amounts
from asvit_tf.search import grow
from asvit_tf.search import run as run_lib
from asvit_tf.search import state as state_lib
from tests.search.fakes import fake_measure

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = arch_lib.Topology.parse(arch_lib.SEED)
GROW = grow.GrowConfig(target_params=30_000_000, max_params=40_000_000, image_size=32,
                       repeats=1, seed=3)


# --- parsing -------------------------------------------------------------------------------

def test_parse_budgets_reads_suffixes_and_sorts():
  assert grow.parse_budgets('params:29M,52M,88M') == ('params', (29_000_000, 52_000_000,
                                                                 88_000_000))
  assert grow.parse_budgets('macs:5.3G, 8.9g,22.6G') == ('macs', (5_300_000_000,
                                                                 8_900_000_000,
                                                                 22_600_000_000))
  assert grow.parse_budgets('PARAMS:88M,29e6,52000K') == ('params', (29_000_000, 52_000_000,
                                                                   88_000_000))
  assert grow.parse_budgets('') == ('', ())
  assert amounts.parse_amount('110e6', '--max_macs') == 110_000_000


@pytest.mark.parametrize('text, message', [
    ('flops:5G', "KIND one of params, macs"),
    ('29M,52M', "must be KIND:B1,B2"),
    ('params:', 'needs at least one budget'),
    ('params:29M,0', "'0' is not positive"),
    ('params:-5M', "'-5M' is not positive"),
    ('params:29Q', "'29Q' is not a number with an optional K, M or G suffix"),
    ('params:29M,,52M', "'' is not a number"),
    ('macs:inf', "'inf' is not a number"),
    ('params:29M,29000K', 'gives 29M twice'),
])
def test_parse_budgets_refuses_bad_input_in_one_line(text, message):
  with pytest.raises(UserInputError, match=message) as e:
    grow.parse_budgets(text)
  assert '\n' not in str(e.value)


def test_format_budget():
  assert amounts.format_budget('params', 29_000_000) == 'params 29M'
  assert amounts.format_budget('macs', 22_600_000_000) == 'MACs 22.6G'
  assert amounts.format_amount(88_270_000) == '88.27M'


# --- budget selection and the MAC ceiling on hand-made series --------------------------------

def test_budget_marks_name_the_nearest_member():
  values = [2, 10, 25, 31, 50, 56, 90]
  # 29 -> 31 (|2| < |4|), 52 -> 50 (|2| < |4|), 88 -> 90
  assert grow.budget_marks(values, [29, 52, 88], final=False) == {3: [29], 4: [52], 6: [88]}
  # a tie goes to the earlier (smaller) member: 40 is 10 from 30 and from 50
  assert grow.budget_marks([30, 50], [40], final=False) == {0: [40]}
  # two budgets can share a member
  assert grow.budget_marks([10, 30, 60], [28, 33], final=False) == {1: [28, 33]}


def test_budget_marks_wait_until_a_budget_is_reached_or_the_run_ends():
  values = [2, 10, 25, 31]
  # 52 and 88 not reached yet: their nearest member may still come
  assert grow.budget_marks(values, [29, 52, 88], final=False) == {3: [29]}
  # the run ended below them: the last member is the nearest
  assert grow.budget_marks(values, [29, 52, 88], final=True) == {3: [29, 52, 88]}
  assert grow.budget_marks([], [29], final=True) == {}


def test_filter_by_macs_uses_the_real_width_at_224():
  cands = grow.candidates(8, (1, 1, 1, 1))
  macs = [size.count_macs(c.real(SEED), 224) for c in cands]
  limit = sorted(macs)[4]
  kept, dropped = grow.filter_by_macs(cands, SEED, limit)
  assert len(kept) == 5 and len(dropped) == 7
  assert kept == [c for c, m in zip(cands, macs) if m <= limit]  # order kept
  assert grow.filter_by_macs(cands, SEED, 0) == (cands, [])  # 0: no ceiling
  # the proxy width's MACs would all pass: the real width decides
  assert all(size.count_macs(c.proxy(SEED), 224) <= limit for c in dropped)


# --- the tie-break option ---------------------------------------------------------------------

def test_tie_break_ours_and_the_authors_differ():
  # All three tie (rank sums 4, 4, 4). L^E has the larger range both ways.
  lengths, ntks = [1.0, 3.0, 2.0], [10.0, 10.2, 10.1]
  ours = grow.select(lengths, ntks)
  authors = grow.select(lengths, ntks, tie_break='authors')
  assert ours.index == 1 and ours.tie_break == 'length'  # the higher L^E: better
  # the authors' code takes the minimum even for L^E, between its first two tied (0 and 1)
  assert authors.index == 0 and authors.tie_break == 'length'
  assert authors.tied == ours.tied == [0, 1, 2]


def test_tie_break_authors_looks_at_the_first_two_tied_in_their_order():
  lengths, ntks = [1.0, 1.01, 1.02], [5.0, 3.0, 4.0]  # κ_Θ is the wider metric
  # ranks: L 3,2,1; κ 3,1,2; sums 6,3,3 -> 1 and 2 tie; both rules take κ_Θ's minimum
  assert grow.select(lengths, ntks).index == 1
  assert grow.select(lengths, ntks, tie_break='authors').index == 1
  # four-way tie: ours finds the best of all; the authors' code compares only the first two
  lengths, ntks = [4.0, 3.0, 2.0, 1.0], [40.0, 30.0, 20.0, 5.0]
  assert grow.select(lengths, ntks).tied == [0, 1, 2, 3]
  assert grow.select(lengths, ntks).index == 3  # κ_Θ wider (relative to the mean): 5
  assert grow.select(lengths, ntks, tie_break='authors').index == 1  # min(40, 30)
  # their enumeration order (stage-major) decides which two come first
  assert grow.select(lengths, ntks, tie_break='authors', order=[3, 2, 1, 0]).index == 3


def test_tie_break_authors_prefers_ntk_on_equal_ranges():
  lengths, ntks = [2.0, 1.0], [2.0, 1.0]  # L ranks 1,2; κ ranks 2,1: sums 3,3
  assert grow.authors_range(lengths) == grow.authors_range(ntks) == 0.5
  assert grow.select(lengths, ntks, tie_break='authors').index == 1  # κ_Θ's minimum
  assert grow.select(lengths, ntks, tie_break='authors').tie_break == 'ntk'
  assert grow.select(lengths, ntks).index == 0  # ours: L^E on equal ranges, higher wins


def test_unknown_tie_break_is_refused():
  with pytest.raises(UserInputError, match="`tie_break` must be one of ours, authors"):
    grow.GrowConfig(tie_break='mine').validate()


# --- the configuration ------------------------------------------------------------------------

def test_budget_config_rules():
  ok = grow.GrowConfig(budget_metric='params', budgets=(29_000_000, 52_000_000, 88_000_000))
  assert ok.validate().end_rule == 'the last budget, params 88M'
  # with budgets, --target_params is not the end: it may exceed a smaller ceiling
  grow.GrowConfig(max_params=60_000_000, budget_metric='params',
                  budgets=(20_000_000,)).validate()
  with pytest.raises(UserInputError, match=r'last budget params 120M exceeds `max_params`'):
    grow.GrowConfig(budget_metric='params', budgets=(120_000_000,)).validate()
  with pytest.raises(UserInputError, match=r'last budget MACs 30G exceeds `max_macs`'):
    grow.GrowConfig(max_macs=25 * 10**9, budget_metric='macs', budgets=(30 * 10**9,)).validate()
  with pytest.raises(UserInputError, match='strictly ascending'):
    grow.GrowConfig(budget_metric='params', budgets=(52_000_000, 29_000_000)).validate()
  with pytest.raises(UserInputError,
                     match=r'`budget_metric` \(the kind of the budgets\) must be one of'):
    grow.GrowConfig(budget_metric='flops', budgets=(1,)).validate()
  with pytest.raises(UserInputError, match='`max_macs` must be an integer >= 0'):
    grow.GrowConfig(max_macs=-1).validate()


# --- runs on hand-made metrics ---------------------------------------------------------------

def _records(out):
  return [json.loads(l) for l in open(os.path.join(out, grow.LOG_FILE))]


@pytest.mark.slow
def test_defaults_keep_the_records_without_budget_columns(tmp_path):
  result = grow.run_grow(GROW, str(tmp_path / 'g'), measure=fake_measure, progress=False)
  assert result.stop_reason == 'reached target_params 30000000'
  assert all('budget' not in r for r in _records(str(tmp_path / 'g')))
  assert '## Budgets' not in (tmp_path / 'g' / grow.TABLE_FILE).read_text()


@pytest.mark.slow
def test_a_run_ends_at_the_last_budget_and_marks_the_nearest(tmp_path):
  series = grow.run_grow(GROW, str(tmp_path / 'ref'), measure=fake_measure, progress=False)
  params = [r['params'] for r in series.records]
  # budgets between the reference series' members; the last one its last member exactly
  assert len(params) == 6
  budgets = (params[2] + 1000, params[4] - 1000, params[5])
  config = grow.GrowConfig(max_params=40_000_000, image_size=32, repeats=1, seed=3,
                           budget_metric='params', budgets=budgets)
  out = str(tmp_path / 'b')
  result = grow.run_grow(config, out, measure=fake_measure, progress=False)
  # the same path (budgets do not steer the scaling), ended at the first member >= the last
  # budget (the default --target_params, 80 M, is not the end any more)
  assert [r['params'] for r in result.records] == params
  last = amounts.format_budget('params', budgets[-1])
  assert result.stop_reason == f'reached the last budget, {last}'
  rows = _records(out)
  marks = {r['step']: r['budget'] for r in rows if r['budget']}
  assert marks == {2: [budgets[0]], 4: [budgets[1]], 5: [budgets[2]]}
  table = open(os.path.join(out, grow.TABLE_FILE)).read()
  assert '## Budgets' in table
  assert f'| 2 **≈ {amounts.format_budget("params", budgets[0])}** |' in table
  assert os.path.getsize(os.path.join(out, grow.PLOT_FILE)) > 1000


def test_budgets_the_run_ends_below_are_marked_on_the_last_model(tmp_path):
  config = grow.GrowConfig(max_params=40_000_000, image_size=32, repeats=1, seed=3,
                           max_steps=2, budget_metric='macs', budgets=(20 * 10**9, 30 * 10**9))
  out = str(tmp_path / 'm')
  result = grow.run_grow(config, out, measure=fake_measure, progress=False)
  assert result.stop_reason == 'reached max_steps 2'
  rows = _records(out)
  assert rows[-1]['budget'] == [20 * 10**9, 30 * 10**9] and rows[-1]['macs'] < 20 * 10**9
  assert [r['budget'] for r in rows[:-1]] == [[], []]
  assert 'MACs 30G' in open(os.path.join(out, grow.TABLE_FILE)).read()


def test_the_mac_ceiling_drops_candidates_and_ends_the_run(tmp_path):
  start = SEED.replace(width=32)
  ceiling = size.count_macs(start, 224) * 2
  config = grow.GrowConfig(target_params=30_000_000, max_params=40_000_000, image_size=32,
                           repeats=1, seed=3, max_macs=ceiling)
  result = grow.run_grow(config, str(tmp_path / 'c'), measure=fake_measure, progress=False)
  assert result.stop_reason.startswith(f'no candidate under max_params 40000000 and '
                                       f'max_macs {ceiling}')
  assert all(r['macs'] <= ceiling for r in result.records)
  last = result.records[-1]
  # every candidate of the next step was over the ceiling (none over --max_params)
  cands = grow.candidates(last['proxy_width'], last['depths'])
  assert all(size.count_macs(c.real(SEED), 224) > ceiling for c in cands)
  assert all(size.estimate_params(c.real(SEED)) <= 40_000_000 for c in cands)
  assert result.stop_reason.endswith(f'({len(cands)} dropped)')


def test_a_run_saved_before_the_new_options_resumes(tmp_path):
  out = str(tmp_path / 'old')
  config = grow.GrowConfig(target_params=30_000_000, max_params=40_000_000, image_size=32,
                           repeats=1, seed=3, max_steps=2)
  first = grow.run_grow(config, out, measure=fake_measure, progress=False)
  path = os.path.join(out, state_lib.state_file('grow'))
  state = json.load(open(path))
  new = ('max_macs', 'budget_metric', 'budgets', 'tie_break', 'share_embedding')
  assert all(k in state['config'] for k in new)
  for k in new:
    del state['config'][k]  # as an older version saved it
  state_lib.save_state(out, state)
  again = grow.run_grow(config, out, measure=fake_measure, progress=False)
  assert again.records == first.records
  with pytest.raises(UserInputError, match="tie_break='ours' there, 'authors' now"):
    grow.run_grow(dataclasses.replace(config, tie_break='authors'), out,
                  measure=fake_measure, progress=False)


# --- share_embedding reaches the measures -----------------------------------------------------

def test_share_embedding_reaches_the_measures(monkeypatch):
  from asvit_tf import complexity
  calls = []

  def fake(name):
    def metric(*args, **kwargs):
      calls.append((name, kwargs.get('share_embedding')))
      return types.SimpleNamespace(mean=1.0, values=[1.0], bad=False)
    return metric
  monkeypatch.setattr(complexity, 'length_distortion', fake('length'))
  monkeypatch.setattr(complexity, 'ntk_condition_number', fake('ntk'))
  for share in (False, True):
    calls.clear()
    config = grow.GrowConfig(image_size=32, repeats=1, share_embedding=share)
    evaluator = run_lib.default_evaluator(('length', 'ntk'), config, workers=1)
    list(evaluator.measure([(SEED, 0)]))
    assert sorted(calls) == [('length', share), ('ntk', share)]


# --- the command line -------------------------------------------------------------------------

@pytest.mark.parametrize('args, message', [
    (('--budgets=flops:5G',), 'KIND one of params, macs'),
    (('--budgets=params:29M', '--target_params=30e6'), '--target_params and --budgets both'),
    (('--max_macs=lots',), "--max_macs: 'lots' is not a number"),
    (('--budgets=params:200M',), 'exceeds --max_params'),
])
def test_grow_command_refuses_bad_budgets(tmp_path, args, message):
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  r = subprocess.run([sys.executable, '-m', 'asvit_tf.cli.main', 'grow', '--arch=asvit_seed',
                      f'--output_dir={tmp_path}/x', *args], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode != 0
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and message in last
