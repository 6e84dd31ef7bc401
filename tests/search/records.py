"""Comparing search records across machines: floats to float32 rounding, all else exactly."""
import pytest


def close(a, b) -> bool:
  """The same structure and values; floats within 1e-6 relative (TensorFlow's float32 maths
  rounds its last bits differently on other CPUs and thread counts)."""
  if isinstance(b, float) and isinstance(a, float):
    return a == pytest.approx(b, rel=1e-6, abs=1e-12)
  if isinstance(b, list) and isinstance(a, list):
    return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
  if isinstance(b, dict) and isinstance(a, dict):
    return sorted(a) == sorted(b) and all(close(a[k], b[k]) for k in b)
  return a == b
