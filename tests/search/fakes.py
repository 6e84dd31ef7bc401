"""Hand-made metrics for the search tests: cheap, deterministic functions of the topology."""
import math
import time

import numpy as np

from asvit_tf.models import size
from asvit_tf.search.measure import Measurement


def fake_measure(topology, seed, delay: float = 0.0) -> Measurement:
  """L^E grows with params and E1, κ_Θ falls with K1; a little seeded noise; no TF."""
  if delay:
    time.sleep(delay)
  rng = np.random.default_rng(seed)
  params = size.estimate_params(topology)
  length = math.log(params) + 0.1 * topology.expansions[0] + 0.01 * rng.normal()
  ntk = 100.0 / (1 + topology.kernels[0]) + topology.depths[3] + 0.1 * rng.normal()
  return Measurement(length=length, ntk=ntk, bad=False, length_values=[length],
                     ntk_values=[ntk])


def slow_measure(topology, seed):
  return fake_measure(topology, seed, delay=0.15)
