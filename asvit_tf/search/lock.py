"""One run per output directory: an exclusive lock held for the life of the process.

The lock is `fcntl.flock` on the file `.asvit.lock` inside the directory. The kernel drops
it when the process ends however it ends (exit, exception, SIGKILL), so a lock left by a
dead run is simply taken by the next one; the file itself stays (removing it would let two
runs lock two different files of the same name). While the lock is held, the file names the
holder (pid, host, start time, command), which is what a refused run reports.
"""
from __future__ import annotations

import fcntl
import os
import shlex
import socket
import sys
import time
from asvit_tf.errors import UserFacingError

LOCK_FILE = '.asvit.lock'


class DirectoryInUse(UserFacingError):
  """Another live process holds the lock of the output directory."""


def _holder() -> str:
  command = ' '.join(shlex.quote(a) for a in sys.argv) or sys.executable
  started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime())
  return f'pid {os.getpid()} on {socket.gethostname()}, since {started}: {command}'


class RunLock:
  """Context manager: holds the lock of `directory` or raises `DirectoryInUse` at once."""

  def __init__(self, directory: str):
    self.path = os.path.join(directory, LOCK_FILE)
    self._file = None

  def acquire(self) -> 'RunLock':
    f = open(self.path, 'a+')  # pylint: disable=consider-using-with
    try:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      holder = f.read().strip() or 'a process that is starting'
      f.close()
      raise DirectoryInUse(f'{os.path.dirname(self.path)} is in use by another run '
                           f'({holder}); wait for it to end or use another '
                           '`output_dir`') from None
    # Rewritten in place: a new file (atomic replace) would not be the locked one.
    f.seek(0)
    f.truncate()
    f.write(_holder() + '\n')
    f.flush()
    self._file = f
    return self

  def release(self):
    if self._file is not None:
      fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
      self._file.close()
      self._file = None

  def __enter__(self) -> 'RunLock':
    return self.acquire()

  def __exit__(self, *exc):
    self.release()

