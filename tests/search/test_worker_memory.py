"""A long-lived measuring worker does not grow with the number of networks it measured."""
import gc
import os

import numpy as np
import pytest
import tf_keras

from asvit_tf import arch as arch_lib
from asvit_tf.search import measure as measure_lib
from asvit_tf.search import parallel

TOPOLOGIES = 16  # 32 measurements: L^E and κ_Θ of each, as a worker gets them
WARM_UP = 4  # topologies before the allocator's high-water mark settles (~10 MB after)

_measures = []  # in the worker: L^E and κ_Θ, set by _setup_worker


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


# Kinds of unit the worker keeps (`units.MAX_UNITS`, 256 by default): one topology's L^E
# units (embedding, 3 merges, 4 blocks), so every new topology evicts the last one's, and
# what an evicted unit held must be let go for the memory to stay bounded.
KEPT_UNITS = 8


def _setup_worker():
  """Forces the traced measures, the path of the paper preset (224 px), at 32 px: the eager
  path that 32 px takes by default traces nothing per network, so it cannot keep a graph
  (benchmarks/worker_memory.py measures both). L^E's units trace once per kind of unit and
  keep it: at most KEPT_UNITS here."""
  from asvit_tf.complexity import network  # pylint: disable=g-import-not-at-top
  from asvit_tf.complexity import units  # pylint: disable=g-import-not-at-top
  network.EAGER_REPEATS = 0
  units.MAX_UNITS = KEPT_UNITS
  _measures[:] = [measure_lib.make_measure((m,), image_size=32, repeats=1)
                  for m in ('length', 'ntk')]


def _measure_both(arch: str, seed: int):
  """L^E then κ_Θ of `arch`, each followed by what `parallel._call_in_worker` does after a
  call; returns the worker's RSS (MB), registered gradients and Python objects after."""
  # pylint: disable-next=g-direct-tensorflow-import,g-import-not-at-top
  from tensorflow.python.framework import ops
  for measure in _measures:
    measure(arch_lib.as_topology(arch), seed)
    tf_keras.backend.clear_session()
    gc.collect()
  registry = ops._gradient_registry._registry  # pylint: disable=protected-access
  return _rss_mb(), len(registry), len(gc.get_objects())


@pytest.mark.slow
def test_worker_memory_stays_bounded_over_32_measurements():
  """One spawned worker (as a search starts them: fresh process, one thread) measures 16
  different search-space topologies one after the other. Before the custom-gradient
  registrations were released, each traced κ_Θ kept its graph: +50-66 MB of RSS and
  thousands of Python objects per topology (~600 MB over the 12 after the warm-up). Since:
  RSS +40 MB at most over 25 topologies after the warm-up, the objects and the registries
  constant (docs/benchmarks.md, 'Worker memory'). In a fresh process, not in pytest's: one
  that ran hundreds of tests before (4.4 GB) grew by 140 MB over the same 12 topologies."""
  calls = parallel.PoolCalls(_measure_both, workers=1, threads=1, setup=_setup_worker)
  with calls:
    after = [next(iter(calls.measure([(str(t), i)])))[1]
             for i, t in enumerate(_search_space_topologies(TOPOLOGIES))]
  rss, registered, objects = (np.array(column) for column in zip(*after))
  # No gradient left registered per measurement.
  assert (registered[WARM_UP - 1:] == registered[WARM_UP - 1]).all(), registered
  # Python objects: constant to the object in a measured run; the leak added thousands
  # per topology.
  assert objects[-1] - objects[WARM_UP - 1] < 2000, objects
  # 100 MB: 2.5 times the largest growth measured (40 MB, 25 topologies at 64 px), a sixth
  # of what the leak added.
  assert rss[-1] - rss[WARM_UP - 1] < 100, rss
