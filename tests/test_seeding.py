"""The derived seeds are part of every recorded run: these values were computed with the code
before the seeding helper existed (`state.derive_seed`, `state.step_rng`,
`network.seed_words`, `network.rng` and the literal `default_rng([seed, salt])` calls), so a
change of derivation, tag or reduction fails here before it silently changes a result."""
import numpy as np

from asvit_tf import seeding
from asvit_tf.search import policy as policy_lib


def test_search_seeds_keep_their_recorded_values():
  # reinforce's measurement seed (seed, MEASURE, *decisions); grow's step seed (seed, step);
  # keys wrap modulo 2**32, so a negative or huge user seed still names a stream.
  assert seeding.seed(0, seeding.MEASURE, 1, 0, 3) == 1003997019
  assert seeding.seed(7, 3) == 1318712413
  assert seeding.seed(2**32 + 5, 1) == 1649007020
  assert seeding.seed(-1, 2) == 1874926788


def test_search_streams_keep_their_recorded_draws():
  assert seeding.rng(0, 4, seeding.SAMPLE).integers(1 << 30) == 710771587
  assert seeding.rng(11, 2, seeding.EVOLVE).integers(1 << 30) == 9231615
  assert seeding.rng(9, seeding.FOLDER_PICKS).integers(1 << 30) == 325327899
  assert seeding.rng(9, seeding.PHOTO_CROPS).integers(1 << 30) == 258695623
  np.testing.assert_array_equal(
      policy_lib.Policy(seed=4).logits[0],
      [0.0005564859538476157, 0.0006783861258623915, -0.0014972067443261273,
       0.001070271591571273, 2.6691537923624575e-05])


def test_measurement_seeds_keep_their_recorded_values():
  assert seeding.measure_seed(0, seeding.WEIGHTS, 1, 5) == 438368231
  assert seeding.measure_seed(3, seeding.WEIGHTS, 0, 0) == 788445325
  assert seeding.measure_seed(-2, seeding.IMAGES, 4) == 1463364395
  assert seeding.measure_rng(0, seeding.CURVE, 2).standard_normal() == 1.9020308030497137
  assert seeding.measure_rng(5, seeding.IMAGES, 0).standard_normal() == -1.48979781486707


def test_streams_are_deterministic_and_distinct():
  assert len({seeding.seed(0, i) for i in range(100)}) == 100
  assert len({seeding.measure_seed(0, seeding.WEIGHTS, 0, i) for i in range(100)}) == 100
  assert seeding.rng(3, 4).random() == seeding.rng(3, 4).random()
  assert seeding.rng(3, 4).random() != seeding.rng(4, 3).random()
