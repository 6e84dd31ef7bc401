"""A long-lived measuring worker does not grow with the number of networks it measured."""
import gc

import pytest
import tf_keras

from asvit_tf import arch as arch_lib
from asvit_tf.search import measure as measure_lib

SEED = arch_lib.as_topology('8,2,3|4,1,2|4,1,4|4,1,6|32')


def _rss_mb() -> float:
  import os  # pylint: disable=g-import-not-at-top
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


@pytest.mark.slow
@pytest.mark.parametrize('path', ['traced', 'auto'])
def test_worker_memory_stays_bounded_over_20_measurements(path, monkeypatch):
  """As `parallel._measure_in_worker` does: each measurement then clear_session + gc. Before
  the custom-gradient registrations were released, traced κ_Θ kept ~50 MB per measurement.
  'traced': the path of the paper preset (224 px), forced here at 32 px; 'auto': what 32 px
  takes by default (eager, `network.eager_pays`)."""
  from tensorflow.python.framework import ops  # pylint: disable=g-direct-tensorflow-import
  from asvit_tf.complexity import network  # pylint: disable=g-import-not-at-top
  if path == 'traced':
    monkeypatch.setattr(network, 'EAGER_REPEATS', 0)
  measures = [measure_lib.make_measure((m,), image_size=32, repeats=1) for m in ('length',
                                                                               'ntk')]
  registry = ops._gradient_registry._registry  # pylint: disable=protected-access
  rss = []
  for i in range(20):
    for measure in measures:
      measure(SEED, i)
      tf_keras.backend.clear_session()
      gc.collect()
    rss.append(_rss_mb())
    if i == 4:
      registered = len(registry)
  assert len(registry) == registered  # no gradient left registered per measurement
  assert rss[-1] - rss[4] < 150, rss  # was ~750 MB over these 15 measurements
