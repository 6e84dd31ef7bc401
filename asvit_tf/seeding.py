"""Every seed the pipeline derives from the user's seed, in one place.

A run has one user seed (`--seed`). Everything random draws from a stream named by a tuple of
integer keys that starts with that seed: numpy's `SeedSequence` mixes the keys (each taken
modulo 2**32), so two different tuples give independent streams and the same tuple the same
stream, whichever process asks and however often a run was resumed. The stream tags below
keep apart streams whose other keys could coincide.

Two reductions of a stream to one 31-bit integer exist, because both are recorded in past
runs and changing either would change every number measured with it:
- `seed` keeps the low 31 bits of the stream's first word (the search: a topology's
  measurement seed, a scaling step's seed);
- `measure_seed` keeps its high 31 bits (complexity measurements: a variable's weight draw,
  the input curves and the noise images of one repeat).
The tags' values are part of every recorded run as well: never renumber them.
"""
from __future__ import annotations

import numpy as np

# Search streams, keyed (seed, tag) or as commented.
SAMPLE = 1  # reinforce: the policy's sample at step t is drawn from (seed, t, SAMPLE).
MEASURE = 2  # a searched topology is measured with seed(seed, MEASURE, *decisions).
EVOLVE = 3  # evolution: generation g draws from (seed, g, EVOLVE).
POLICY_INIT = 0x5EED  # the policy's initial logits.
FOLDER_PICKS = 0xDA7A  # which files of an image folder make the κ_Θ batch.
PHOTO_CROPS = 0xF070  # which photos and crops make the `photos` batch.

# Ground truth by training (`asvit correlate --train`), keyed (seed, tag, ...).
CORRELATE_SAMPLE = 0xC0A5  # (seed, tag, i): the i-th sampled topology's draws.
TRAIN_WEIGHTS = 0x7A1A  # (seed, tag, variable index), `measure_seed`: a trained net's init.
TRAIN_BATCHES = 0x7A1B  # (seed, tag, epoch): the order of the training digits in an epoch.

# Complexity streams, keyed (seed, tag, ...) and reduced with `measure_seed`.
WEIGHTS = 0  # (seed, WEIGHTS, repeat, variable index): one variable's initial draw.
CURVE = 1  # (seed, CURVE, repeat): the input curve of the expressivity metrics.
IMAGES = 2  # (seed, IMAGES, repeat): the Gaussian images of the NTK.

_WORD = 0xFFFFFFFF


def sequence(*keys: int) -> np.random.SeedSequence:
  """The stream named by the integer keys (each taken modulo 2**32)."""
  return np.random.SeedSequence([int(k) & _WORD for k in keys])


def rng(*keys: int) -> np.random.Generator:
  """A generator drawing the stream named by the keys."""
  return np.random.default_rng(sequence(*keys))


def seed(*keys: int) -> int:
  """A 31-bit seed of the search: the low 31 bits of the stream's first word."""
  return int(sequence(*keys).generate_state(1)[0] & 0x7FFFFFFF)


def measure_seed(*keys: int) -> int:
  """A 31-bit seed of a complexity measurement: the high 31 bits of the stream's first word."""
  return int(sequence(*keys).generate_state(1)[0] >> 1)


def measure_rng(*keys: int) -> np.random.Generator:
  """A generator seeded with `measure_seed(*keys)` (curves and noise images)."""
  return np.random.default_rng(measure_seed(*keys))
