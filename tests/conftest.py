"""Test-wide settings: quiet TensorFlow, small thread pools (the CI machine has 2 cores)."""
import os
import sys

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


@pytest.fixture(autouse=True)
def _op_determinism_as_before():
  """Training with a seed turns TensorFlow's op determinism on for the rest of the process,
  as documented (`train_lib.seed_everything`, `correlate.train.train_network`); in a test
  process that would leak into the tests after it (a random op without a seed then fails),
  so each test leaves the setting as it found it."""
  # Off by default: if the test is the first to import TensorFlow, it was off before it.
  before = 'tensorflow' in sys.modules and _determinism().is_op_determinism_enabled()
  yield
  if 'tensorflow' in sys.modules:
    config = _determinism()
    if config.is_op_determinism_enabled() != before:
      (config.enable_op_determinism if before else config.disable_op_determinism)()


def _determinism():
  # pylint: disable-next=g-direct-tensorflow-import,g-import-not-at-top
  from tensorflow.python.framework import config
  return config
