"""What the correlate command-line tests share: the child's environment and a file's lines."""
import os
import signal
import subprocess
import time


def env():
  """The environment of a child `asvit correlate`: ours, TensorFlow's C++ logs quiet."""
  return {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}


def lines(path: str) -> int:
  """The complete lines written to `path` so far (0 before it exists)."""
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    return f.read().count('\n')


def kill_after_first_line(cmd, path: str, cwd: str, timeout: float = 900) -> int:
  """Starts `cmd`, SIGKILLs it once `path` holds a line (or it ended, or `timeout` passed);
  returns the lines `path` then holds."""
  proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + timeout
  while lines(path) < 1 and proc.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  return lines(path)
