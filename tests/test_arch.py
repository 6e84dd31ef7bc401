"""Topology strings, the search space and validation."""
import pytest

from asvit_tf import arch

SEED = '8,2,3|4,1,2|4,1,4|4,1,6|32'
LARGE = '8,2,3,5|4,1,2,2|4,1,4,5|4,1,6,2|32,180'


def test_seed_form_fills_depths_and_width():
  t = arch.Topology.parse(SEED)
  assert t.kernels == (8, 4, 4, 4)
  assert t.splits == (2, 1, 1, 1)
  assert t.expansions == (3, 2, 4, 6)
  assert t.depths == (1, 1, 1, 1)
  assert t.heads == 32 and t.width == 32
  assert str(t) == '8,2,3,1|4,1,2,1|4,1,4,1|4,1,6,1|32,32'
  assert t.seed_string == SEED


@pytest.mark.parametrize('text', [LARGE, '4,8,6,3|2,4,2,1|3,2,5,7|2,1,3,1|64,40',
                                  ' 8, 2,3,5 |4,1,2,2|4,1,4,5|4,1,6,2| 32 ,180 '])
def test_scaled_form_round_trips(text):
  t = arch.Topology.parse(text)
  assert arch.Topology.parse(str(t)) == t
  assert str(t) == text.replace(' ', '')


def test_large_fields():
  t = arch.Topology.parse(LARGE)
  assert t.depths == (5, 2, 5, 2) and t.width == 180
  assert t.stage_widths == (180, 360, 720, 1024)
  assert t.stage_heads == (4, 8, 16, 32)
  assert t.head_width == 1024


@pytest.mark.parametrize('text, fragment', [
    ('8,2,3|4,1', '2 "|"-separated parts'),
    ('x,2,3|4,1,2|4,1,4|4,1,6|32', "K1 must be an integer, got 'x'"),
    ('8,2,3|4,1,2|4,1,4|4,1,6|30', 'H must be divisible by 8'),
    ('8,2,3,0|4,1,2|4,1,4|4,1,6|32', 'L1 must be an integer >= 1, got 0'),
    ('8,2,3|4,1,2|4,1,4|4,1,6|32,-5', 'C must be an integer >= 1, got -5'),
    ('8,2|4,1,2|4,1,4|4,1,6|32', 'stage 1'),
    ('8,2,3|4,1,2|4,1,4|4,1,6|32,64,1', 'the last part'),
    ('8,2,3|4,1,2|4,1,4|4,1,6|32,2', 'too narrow'),
    ('8,2,3|1,1,2|4,1,4|4,1,6|32', 'K2 must be an integer >= 2, got 1'),
    ('8,0,3|4,1,2|4,1,4|4,1,6|32', 'S1'),
    ('8,2,3|4,1,2|4,1,4.5|4,1,6|32', "E3 must be an integer, got '4.5'"),
])
def test_bad_strings_name_field_and_value(text, fragment):
  with pytest.raises(ValueError, match=None) as info:
    arch.Topology.parse(text)
  assert fragment in str(info.value)


def test_search_space():
  assert len(arch.SEARCH_SPACE) == 12
  assert arch.search_space_size() == 4_556_250
  seed = arch.Topology.parse(SEED)
  indices = seed.decisions()
  assert indices == (4, 0, 1, 2, 0, 0, 2, 0, 2, 2, 4, 1)
  assert arch.Topology.from_decisions(indices) == seed


def test_every_decision_round_trips():
  for i, (_, choices) in enumerate(arch.SEARCH_SPACE):
    for j in range(len(choices)):
      indices = [0] * 12
      indices[i] = j
      t = arch.Topology.from_decisions(indices)
      assert t.decisions() == tuple(indices)
      assert t.splits[3] == 1


def test_decision_errors():
  with pytest.raises(ValueError, match='12 decisions'):
    arch.Topology.from_decisions([0] * 11)
  with pytest.raises(ValueError, match='decision S1 has 3 choices, got index 3'):
    arch.Topology.from_decisions([0, 3] + [0] * 10)
  with pytest.raises(ValueError, match='not in the search space'):
    arch.Topology.parse('9,2,3|4,1,2|4,1,4|4,1,6|32').decisions()


def test_as_topology_resolves_names_and_rejects_unknown():
  assert arch.as_topology('asvit_large') == arch.Topology.parse(LARGE)
  assert str(arch.as_topology('asvit_seed')) == '8,2,3,1|4,1,2,1|4,1,4,1|4,1,6,1|32,32'
  with pytest.raises(ValueError, match="unknown variant 'asvit_huge'"):
    arch.as_topology('asvit_huge')


def test_topology_is_frozen():
  t = arch.Topology.parse(SEED)
  with pytest.raises(Exception):
    t.width = 64  # type: ignore[misc]
  assert t.replace(width=64).width == 64
