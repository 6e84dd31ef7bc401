"""A measurement in parts (`repeat_range`): each part's values are the whole measurement's
values of those repeats, to the bit, so parts measured in different workers put together
are the measurement (`search.measure.planned_jobs` splits a search step's κ_Θ)."""
import pytest

from asvit_tf import complexity
from asvit_tf.complexity import network as network_lib
from asvit_tf.errors import UserInputError

TOPOLOGY = '8,2,3|4,1,2|4,1,4|4,1,6|8'


@pytest.mark.parametrize('mode', ['eager', 'graph'])
def test_ntk_parts_are_the_whole_measurements_repeats(mode):
  kwargs = dict(image_size=16, repeats=3, seed=4, batch_size=4, mode=mode)
  whole = complexity.ntk_condition_number(TOPOLOGY, **kwargs).values
  head = complexity.ntk_condition_number(TOPOLOGY, repeat_range=(0, 2), **kwargs).values
  tail = complexity.ntk_condition_number(TOPOLOGY, repeat_range=(2, 3), **kwargs).values
  assert len(set(whole)) == 3  # the repeats differ, so an off-by-one would show
  assert head + tail == whole


def test_length_parts_are_the_whole_measurements_repeats():
  kwargs = dict(image_size=16, repeats=3, seed=4, share_embedding=True)
  whole = complexity.length_distortion(TOPOLOGY, **kwargs).values
  middle = complexity.length_distortion(TOPOLOGY, repeat_range=(1, 2), **kwargs).values
  assert len(set(whole)) == 3
  assert middle == whole[1:2]


def test_a_part_takes_the_path_of_the_whole_measurement(monkeypatch):
  """'auto' picks eager or traced for all `repeats`, not for the part: a part's values are
  then the whole measurement's, whichever path that is."""
  asked = []
  original = network_lib.eager_pays
  monkeypatch.setattr(network_lib, 'eager_pays',
                      lambda *args: asked.append(args[4]) or original(*args))
  complexity.ntk_condition_number(TOPOLOGY, image_size=16, repeats=3, batch_size=2,
                                  repeat_range=(2, 3))
  assert asked == [3]


@pytest.mark.parametrize('bad', [(2, 2), (-1, 1), (0, 4), (3, 1), 'ab', 5])
def test_a_repeat_range_outside_the_repeats_is_one_clear_error(bad):
  with pytest.raises(UserInputError, match='repeat_range'):
    network_lib.measured_repeats(3, bad)


def test_the_whole_range_by_default():
  assert network_lib.measured_repeats(3) == range(3)
  assert network_lib.measured_repeats(3, (1, 3)) == range(1, 3)
