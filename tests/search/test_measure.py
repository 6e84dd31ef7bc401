"""Measurements: merged from parts measured apart, cleaned as they are logged."""
import math

from asvit_tf import arch as arch_lib
from asvit_tf.search import measure as measure_lib
from asvit_tf.search.measure import Measurement


def test_a_part_that_is_bad_makes_the_topology_bad():
  """Whatever order the metrics of a topology come back in, one bad part marks it bad."""
  counts = Measurement(params=5)
  bad_ntk = Measurement(ntk=math.inf, ntk_values=[math.inf], bad=True)
  length = Measurement(length=0.5, length_values=[0.5])
  for first, second in ((bad_ntk, length), (length, bad_ntk)):
    merged = counts.merge(first).merge(second)
    assert merged.bad is True
    assert merged.length == 0.5 and merged.params == 5 and merged.ntk == math.inf
    assert merged.length_values == [0.5] and merged.ntk_values == [math.inf]
  assert counts.merge(length).bad is False


def test_cleaned_and_dict_round_trip():
  m = Measurement(length=math.nan, ntk=math.inf, params=3, bad=1)
  clean = m.cleaned()
  assert clean.length is None and clean.ntk is None and clean.bad is True
  record = {'step': 4, **clean.as_dict(), 'reward': 0.1}
  assert list(clean.as_dict()) == ['length', 'ntk', 'params', 'macs', 'bad',
                                   'length_values', 'ntk_values']
  assert Measurement.from_dict(record) == clean


def test_serial_evaluator_measures_in_order():
  seen = []

  def measure(topology, seed):
    seen.append(seed)
    return Measurement(params=seed)
  topo = arch_lib.as_topology('asvit_seed')
  evaluator = measure_lib.SerialEvaluator(measure)
  assert [(i, m.params) for i, m in evaluator.measure([(topo, 7), (topo, 9)])] == [(0, 7),
                                                                                 (1, 9)]
  assert seen == [7, 9]
  evaluator.close()
