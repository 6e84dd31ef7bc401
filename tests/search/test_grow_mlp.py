"""Grow's optional MLP candidate kind (--candidate_kinds=depth,mlp; issue 16)."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from asvit_tf import arch as arch_lib
from asvit_tf import models
from asvit_tf.cli import describe
from asvit_tf.errors import UserInputError
from asvit_tf.models import size
from asvit_tf.search import family
from asvit_tf.search import grow
from asvit_tf.search import state as state_lib
from tests.search.fakes import fake_measure

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = arch_lib.Topology.parse('4,8,2|3,1,4|2,2,4|3,1,2|32')
BOTH = ('depth', 'mlp')
GROW = grow.GrowConfig(target_params=30_000_000, max_params=40_000_000, image_size=32,
                       repeats=1, seed=3)
GROW_MLP = dataclasses.replace(GROW, candidate_kinds=BOTH)


# --- the candidate list ------------------------------------------------------------------------

def test_the_default_list_is_the_authors_depth_candidates():
  # today's list, written out: widths 8, 9, 10 (the second 9 skipped), +1 block per stage
  today = [grow.Candidate(stage, percent, width,
                          tuple(1 + (i == stage) for i in range(4)))
           for percent, width in ((5, 8), (10, 9), (20, 10)) for stage in range(4)]
  assert grow.candidates(8, (1, 1, 1, 1)) == today
  assert grow.candidates(8, (1, 1, 1, 1), kinds=('depth',), expansions=(6, 6, 6, 6)) == today
  assert [c.key for c in today[:2]] == ['8:2,1,1,1', '8:1,2,1,1']  # resumable old states


def test_mlp_candidates_follow_each_widths_depth_candidates_below_the_cap():
  cap = grow.MAX_EXPANSION
  assert cap == 6 == max(dict(arch_lib.SEARCH_SPACE)['E4'])
  cands = grow.candidates(8, (1, 2, 1, 1), kinds=BOTH, expansions=(2, 4, cap, 5))
  assert len(cands) == 3 * (4 + 3)  # 3 widths x (4 depth + 3 MLP: E3 is at the cap)
  assert [(c.kind, c.stage, c.width) for c in cands[:7]] == [
      ('depth', 0, 8), ('depth', 1, 8), ('depth', 2, 8), ('depth', 3, 8),
      ('mlp', 0, 8), ('mlp', 1, 8), ('mlp', 3, 8)]
  assert [c.width for c in cands[::7]] == [8, 9, 10]
  mlp = [c for c in cands[:7] if c.kind == 'mlp']
  assert [c.expansions for c in mlp] == [(3, 4, 6, 5), (2, 5, 6, 5), (2, 4, 6, 6)]
  assert all(c.depths == (1, 2, 1, 1) for c in mlp)
  assert all(c.expansions is None for c in cands if c.kind == 'depth')
  assert len({c.key for c in cands}) == len(cands)  # a step's measurements are kept by key
  # every expansion at the cap: only the depth candidates; the mlp kind alone: none left
  assert len(grow.candidates(8, (1, 1, 1, 1), kinds=BOTH, expansions=(6,) * 4)) == 12
  assert grow.candidates(8, (1, 1, 1, 1), kinds=('mlp',), expansions=(6,) * 4) == []
  assert len(grow.candidates(8, (1, 1, 1, 1), kinds=('mlp',), expansions=(2, 6, 6, 6))) == 3


def test_the_authors_order_puts_mlp_candidates_after_their_depth_candidates():
  cands = grow.candidates(8, (1, 1, 1, 1), kinds=BOTH, expansions=(2, 2, 2, 6))
  order = sorted(range(len(cands)), key=lambda i: grow.authors_order(cands)[i])
  assert [(cands[i].kind, cands[i].stage, cands[i].width) for i in order[:4]] == [
      ('depth', 0, 8), ('depth', 0, 9), ('depth', 0, 10), ('depth', 1, 8)]
  assert {cands[i].kind for i in order[:12]} == {'depth'}
  assert [(cands[i].stage, cands[i].width) for i in order[12:]] == [
      (0, 8), (0, 9), (0, 10), (1, 8), (1, 9), (1, 10), (2, 8), (2, 9), (2, 10)]
  # without MLP candidates, the order the authors' tie-break used before the option
  depth = grow.candidates(8, (1, 1, 1, 1))
  assert sorted(range(12), key=lambda i: grow.authors_order(depth)[i]) == \
      sorted(range(12), key=lambda i: (depth[i].stage, depth[i].width))


def test_an_mlp_candidate_costs_what_its_stage_adds_by_hand():
  base = SEED
  c = next(c for c in grow.candidates(8, (1, 1, 2, 1), kinds=BOTH,
                                      expansions=base.expansions)
           if c.kind == 'mlp' and c.stage == 2 and c.width == 8)
  real = c.real(base)
  assert str(real) == '4,8,2,1|3,1,4,1|2,2,5,2|3,1,2,1|32,32'
  assert str(c.proxy(base)) == '4,8,2,1|3,1,4,1|2,2,5,2|3,1,2,1|32,8'
  before = base.replace(depths=(1, 1, 2, 1), width=32)
  d, blocks, tokens = 32 * 4, 2, (224 // 4 // 4) ** 2  # stage 3: width 4C, 14×14 tokens
  # E + 1 adds one hidden unit per channel: d·d (fc1) + d (its bias) + d·d (fc2) per block
  assert size.estimate_params(real) - size.estimate_params(before) == blocks * (2 * d * d + d)
  assert size.count_macs(real, 224) - size.count_macs(before, 224) == blocks * tokens * 2 * d * d


# --- configuration -------------------------------------------------------------------------------

def test_candidate_kinds_parse_in_a_fixed_order_and_round_trip():
  assert grow.parse_candidate_kinds('depth') == ('depth',)
  assert grow.parse_candidate_kinds(' MLP, depth ') == BOTH
  assert grow.parse_candidate_kinds(','.join(BOTH)) == BOTH
  config = dataclasses.replace(GROW_MLP, arch=str(SEED.seed_string)).validate()
  saved = json.loads(state_lib.dumps(dataclasses.asdict(config)))
  assert saved['candidate_kinds'] == ['depth', 'mlp']
  again = grow.GrowConfig(**{**saved, 'budgets': tuple(saved['budgets']),
                             'candidate_kinds': tuple(saved['candidate_kinds'])})
  assert again == config


@pytest.mark.parametrize('kinds', [(), ('depth', 'depth'), ('width',), ('depth', 'MLP')])
def test_bad_candidate_kinds_are_refused_naming_the_field(kinds):
  with pytest.raises(UserInputError, match=r'^`candidate_kinds` must be distinct kinds from '
                                           r'depth, mlp \(at least one\), got'):
    dataclasses.replace(GROW, candidate_kinds=kinds).validate()


# --- runs on hand-made metrics ---------------------------------------------------------------

def _records(out):
  return [json.loads(l) for l in open(os.path.join(out, grow.LOG_FILE))]


@pytest.mark.slow
def test_a_default_run_writes_no_kind_fields(tmp_path):
  grow.run_grow(GROW, str(tmp_path / 'd'), measure=fake_measure, progress=False)
  rows = _records(str(tmp_path / 'd'))
  assert all('expansions' not in r for r in rows)
  assert all('kind' not in r['choice'] for r in rows[1:])
  assert all('kind' not in c for r in rows for c in r['candidates'])
  assert 'Candidate kinds' not in (tmp_path / 'd' / grow.TABLE_FILE).read_text()


@pytest.mark.slow
def test_a_run_with_mlp_candidates_grows_expansions_and_says_so(tmp_path):
  out = str(tmp_path / 'm')
  result = grow.run_grow(GROW_MLP, out, measure=fake_measure, progress=False)
  rows = _records(out)
  mlp_steps = [r for r in rows[1:] if r['choice']['kind'] == 'mlp']
  assert mlp_steps, 'the hand-made L^E rewards E1: some step must grow it'
  for before, r in zip(rows, rows[1:]):
    topo = arch_lib.Topology.parse(r['arch'])
    assert r['expansions'] == list(topo.expansions)
    assert r['params'] == size.estimate_params(topo)
    stage = r['choice']['stage'] - 1
    grown = [e - b for e, b in zip(r['expansions'], before['expansions'])]
    if r['choice']['kind'] == 'mlp':
      assert r['depths'] == before['depths'] and grown == [int(i == stage) for i in range(4)]
      assert r['choice']['expansion'] == [before['expansions'][stage], r['expansions'][stage]]
    else:
      assert grown == [0] * 4 and sum(r['depths']) == sum(before['depths']) + 1
    kinds = {c['kind'] for c in r['candidates']}
    assert kinds <= {'depth', 'mlp'} and 'depth' in kinds
    assert all(e <= grow.MAX_EXPANSION for e in r['expansions'])
  first = mlp_steps[0]['choice']
  text = (f'E{first["stage"]} {first["expansion"][0]}→{first["expansion"][1]}, '
          f'+{first["percent"]} %')
  assert text in open(os.path.join(out, grow.TABLE_FILE)).read()
  assert text in family.render_doc(out)
  assert 'candidate kinds depth, mlp' in family.render_doc(out)
  assert os.path.getsize(os.path.join(out, grow.PLOT_FILE)) > 1000
  # what the grow produced is a model, a size and a `describe` table
  last = result.records[-1]['arch']
  tiny = arch_lib.Topology.parse(last).replace(width=8)
  model = models.AsViT(str(tiny), num_classes=11)
  model(tf.zeros((1, 32, 32, 3)))
  assert models.count_params(model) == size.estimate_params(tiny, num_classes=11)
  total = describe.format_table(last, 224, 1000).splitlines()[-1].split()
  assert float(total[2]) == pytest.approx(result.records[-1]['params'] / 1e6, abs=5e-4)


@pytest.mark.slow
def test_an_mlp_run_resumes_mid_step_and_refuses_a_changed_kind_list(tmp_path):
  full = grow.run_grow(GROW_MLP, str(tmp_path / 'a'), measure=fake_measure, progress=False)
  out = str(tmp_path / 'b')
  seen = []

  class Stop(Exception):
    pass

  def stop_inside_step_2(_):
    seen.append(1)
    if len(seen) == 30:  # the start and step 1's 21 candidates (E4 is at 6), then step 2's
      raise Stop
  with pytest.raises(Stop):
    grow.run_grow(GROW_MLP, out, measure=fake_measure, progress=False,
                  on_measure=stop_inside_step_2)
  assert len(_records(out)) == 2
  strip = lambda rs: [{k: v for k, v in r.items() if k != 'seconds'} for r in rs]
  resumed = grow.run_grow(GROW_MLP, out, measure=fake_measure, progress=False)
  assert strip(resumed.records) == strip(full.records)
  with pytest.raises(UserInputError, match=r"candidate_kinds=\['depth', 'mlp'\] there, "
                                           r"\['depth'\] now"):
    grow.run_grow(GROW, out, measure=fake_measure, progress=False)


@pytest.mark.slow
def test_a_run_saved_before_the_option_resumes_as_depth_only(tmp_path):
  out = str(tmp_path / 'old')
  config = dataclasses.replace(GROW, max_steps=2)
  first = grow.run_grow(config, out, measure=fake_measure, progress=False)
  state = json.load(open(os.path.join(out, state_lib.state_file('grow'))))
  del state['config']['candidate_kinds']  # as an older version saved it
  state_lib.save_state(out, state)
  assert grow.run_grow(config, out, measure=fake_measure, progress=False).records == \
      first.records
  with pytest.raises(UserInputError, match='candidate_kinds'):
    grow.run_grow(dataclasses.replace(config, candidate_kinds=BOTH), out,
                  measure=fake_measure, progress=False)


# --- the command line -------------------------------------------------------------------------

def test_grow_command_refuses_a_bad_candidate_kind_in_one_line(tmp_path):
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  r = subprocess.run([sys.executable, '-m', 'asvit_tf.cli.main', 'grow', '--arch=asvit_seed',
                      f'--output_dir={tmp_path}/x', '--candidate_kinds=depth,width'],
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode != 0
  last = r.stderr.strip().splitlines()[-1]
  assert last == ("error: --candidate_kinds must be distinct kinds from depth, mlp (at least "
                  "one), got 'depth,width'")
  assert not os.path.exists(f'{tmp_path}/x/{state_lib.state_file("grow")}')
