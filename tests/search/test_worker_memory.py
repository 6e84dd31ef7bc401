"""A long-lived measuring worker does not grow with the number of networks it measured."""
import gc
import os

import numpy as np
import pytest
import tf_keras

from asvit_tf import arch as arch_lib
from asvit_tf.search import measure as measure_lib

TOPOLOGIES = 16  # 32 measurements: L^E and κ_Θ of each, as a worker gets them
WARM_UP = 4  # topologies before the allocator's high-water mark settles (~10 MB after)


def _rss_mb() -> float:
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def _search_space_topologies(n: int):
  """`n` different seed topologies drawn from the search space, at C=32, depths 1."""
  rng = np.random.default_rng(19)
  drawn = {}
  while len(drawn) < n:
    t = arch_lib.Topology.from_decisions(
        [int(rng.integers(len(choices))) for _, choices in arch_lib.SEARCH_SPACE])
    drawn[str(t)] = t
  return list(drawn.values())


@pytest.mark.slow
def test_worker_memory_stays_bounded_over_32_measurements(monkeypatch):
  """As `parallel._measure_in_worker` does: each measurement, then clear_session + gc, over
  16 different search-space topologies. Before the custom-gradient registrations were
  released, each traced κ_Θ kept its graph: +50-66 MB of RSS and thousands of Python objects
  per topology (~600 MB over the 12 after the warm-up). Since: RSS +40 MB at most over 25
  topologies after the warm-up, the objects and the registries constant (docs/benchmarks.md,
  'Per new network'). Traced: the path of the paper preset (224 px), forced here at 32 px (the
  eager path that 32 px takes by default traces nothing per network, so it cannot keep a
  graph; benchmarks/worker_memory.py measures both)."""
  # pylint: disable-next=g-direct-tensorflow-import,g-import-not-at-top
  from tensorflow.python.framework import ops
  from asvit_tf.complexity import network  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(network, 'EAGER_REPEATS', 0)
  measures = [measure_lib.make_measure((m,), image_size=32, repeats=1)
              for m in ('length', 'ntk')]
  registry = ops._gradient_registry._registry  # pylint: disable=protected-access
  rss = []
  for i, topology in enumerate(_search_space_topologies(TOPOLOGIES)):
    for measure in measures:
      measure(topology, i)
      tf_keras.backend.clear_session()
      gc.collect()
    rss.append(_rss_mb())
    if i == WARM_UP - 1:
      registered, objects = len(registry), len(gc.get_objects())
  assert len(registry) == registered  # no gradient left registered per measurement
  # Python objects: constant to the object in a measured run; the leak added thousands
  # per topology.
  assert len(gc.get_objects()) - objects < 2000
  # 100 MB: 2.5 times the largest growth measured (40 MB, 25 topologies at 64 px), a sixth
  # of what the leak added.
  assert rss[-1] - rss[WARM_UP - 1] < 100, rss
