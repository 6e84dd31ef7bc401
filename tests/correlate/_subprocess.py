"""What the correlate command-line tests share: the child's environment and a file's lines."""
import os


def env():
  """The environment of a child `asvit correlate`: ours, TensorFlow's C++ logs quiet."""
  return {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}


def lines(path: str) -> int:
  """The complete lines written to `path` so far (0 before it exists)."""
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    return f.read().count('\n')
