"""A step's jobs: κ_Θ's last repeat apart when the jobs would leave a worker waiting, and
the parts put together as one measurement."""
import math

import pytest

from asvit_tf import arch as arch_lib
from asvit_tf.complexity.result import MetricResult
from asvit_tf.search import measure as measure_lib

A = (arch_lib.as_topology('8,2,3|4,1,2|4,1,4|4,1,6|32'), 1)
B = (arch_lib.as_topology('4,1,3|4,1,2|4,1,4|4,1,6|16'), 2)
METRICS = ('length', 'ntk')


def test_one_topology_on_two_workers_splits_its_ntk():
  jobs = measure_lib.planned_jobs([A], METRICS, 224, repeats=5, workers=2)
  assert jobs == [(0, 'ntk', (0, 4)), (0, 'length', None), (0, 'ntk', (4, 5))]


@pytest.mark.parametrize('items, repeats, workers, metrics', [
    ([A, B], 5, 2, METRICS),      # four jobs on two workers balance by themselves
    ([A], 1, 2, METRICS),         # one repeat: nothing to split
    ([A], 5, 1, METRICS),         # one worker: nothing waits
    ([A], 5, 2, ('length',)),     # no κ_Θ
])
def test_no_split_where_the_jobs_balance_or_cannot_split(items, repeats, workers, metrics):
  jobs = measure_lib.planned_jobs(items, metrics, 224, repeats, workers)
  assert all(part is None for _, _, part in jobs)
  assert sorted((i, m) for i, m, _ in jobs) == sorted(
      (i, m) for i in range(len(items)) for m in metrics)


def test_parts_put_together_are_one_measurement():
  values = [3.25, 1e-3, 7.0, 2.5, 11.125]
  whole = MetricResult.from_values(values)
  parts = [(4, measure_lib.Measurement(ntk=11.125, ntk_values=values[4:])),
           (0, measure_lib.Measurement(ntk=0.0, ntk_values=values[:4]))]  # out of order
  got = measure_lib.joined('ntk', parts)
  assert got.ntk_values == values and got.ntk == whole.mean and got.bad is False
  assert got.length is None


def test_a_bad_part_makes_the_measurement_bad():
  parts = [(0, measure_lib.Measurement(length=1.0, length_values=[1.0])),
           (1, measure_lib.Measurement(length=math.inf, length_values=[math.inf], bad=True))]
  got = measure_lib.joined('length', parts)
  assert got.bad is True and got.length == math.inf


class _Recorded:
  """`run(jobs)` of an evaluator: each job's part as its worker would return it, the last
  job first (completion order is any order)."""

  def __init__(self, values):
    self.values, self.jobs = values, None

  def __call__(self, jobs):
    self.jobs = jobs
    for j in reversed(range(len(jobs))):
      _, metric, _, part = jobs[j]
      start, stop = part or (0, len(self.values[metric]))
      chosen = self.values[metric][start:stop]
      yield j, measure_lib.Measurement(**{metric: sum(chosen) / len(chosen),
                                          f'{metric}_values': chosen})


def test_metric_jobs_merge_the_split_parts():
  values = {'length': [0.5, 0.25, 0.125], 'ntk': [9.0, 7.0, 8.5]}
  run = _Recorded(values)
  jobs = measure_lib.MetricJobs(('length', 'ntk', 'params'), image_size=32, repeats=3)
  (i, got), = jobs.measure([A], run, workers=2)
  assert [part for *_, part in run.jobs] == [(0, 2), None, (2, 3)]
  assert i == 0 and got.ntk_values == values['ntk'] and got.length_values == values['length']
  assert got.ntk == MetricResult.from_values(values['ntk']).mean
  assert got.params is not None and got.bad is False
