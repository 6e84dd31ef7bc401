"""Run directories that survive SIGKILL: atomic files, saved state, per-step seeds.

Every file a run writes goes through `atomic_write` (temp file in the same directory, fsync,
`os.replace`), so a kill leaves either the old or the new version, never half of one. The
state of a run is one JSON file holding its configuration and everything needed to continue;
randomness is derived from (seed, step, ...) so a resumed run draws exactly what the
uninterrupted one would have drawn.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from asvit_tf.errors import UserInputError



def state_file(kind: str) -> str:
  """One state file per kind of run, so a search and its grow can share a directory."""
  return f'{kind}_state.json'


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


_UMASK = _umask()


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path beside `path`; on success it replaces `path` atomically."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp',
                             dir=directory)
  os.close(fd)
  os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are ordinary files
  try:
    yield tmp
    with open(tmp, 'rb') as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def atomic_write(path: str, text: str):
  with atomic_path(path) as tmp:
    with open(tmp, 'w') as f:
      f.write(text)


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.generic):
    return x.item()
  return x


def dumps(x) -> str:
  """JSON that keeps NaN/Infinity (Python's json reads them back)."""
  return json.dumps(_jsonable(x), allow_nan=True)


def write_jsonl(path: str, records):
  atomic_write(path, ''.join(dumps(r) + '\n' for r in records))


def append_jsonl(path: str, record: Mapping[str, Any]):
  """Appends `record` as one JSON line (keys sorted) with a single write, then fsyncs: a kill
  tears at most this line, which `read_jsonl` cuts off."""
  data = (json.dumps(_jsonable(record), sort_keys=True, allow_nan=True) + '\n').encode('utf-8')
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
  try:
    view = memoryview(data)
    while view:
      view = view[os.write(fd, view):]
    os.fsync(fd)
  finally:
    os.close(fd)


def read_jsonl(path: str) -> List[Dict]:
  """The records of a file `append_jsonl` writes ([] if there is none). Bytes after the last
  newline are a line torn by a kill mid-write: they are cut off (from the file too, so the
  next append starts a line). Any other line that is not JSON raises a one-line error."""
  if not os.path.exists(path):
    return []
  with open(path, 'rb') as f:
    data = f.read()
  end = data.rfind(b'\n') + 1
  if end < len(data):
    with open(path, 'r+b') as f:
      f.truncate(end)
  out = []
  for n, line in enumerate(data[:end].split(b'\n')[:-1], 1):
    if not line.strip():
      continue
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      raise UserInputError(f'{path} line {n} is not JSON; remove that line to resume') from None
  return out


def prepare_output_dir(path: str) -> str:
  """Creates `path` if needed; ValueError (one line) if it cannot be written."""
  if not path:
    raise UserInputError('`output_dir` is required')
  path = os.path.abspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserInputError(f'`output_dir` {path} exists and is not a directory')
  try:
    os.makedirs(path, exist_ok=True)
    probe = tempfile.NamedTemporaryFile(dir=path, prefix='.probe', delete=True)
    probe.close()
  except OSError as e:
    raise UserInputError(f'`output_dir` {path} is not writable ({e.strerror or e})') from None
  return path


def _same(a, b) -> bool:
  if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
    return True
  return a == b


def read_state(directory: str, kind: str) -> Optional[Dict]:
  """The saved state of the run of `kind` in `directory` (None if there is none), for
  resuming it or for reading what it was run with (`family`, `rescore`). One line naming the
  file if it is not a readable state of that kind."""
  path = os.path.join(directory, state_file(kind))
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      state = json.load(f)
    if not isinstance(state, dict) or state.get('kind') != kind:
      raise ValueError(f'not the state of a {kind} run')
  except (OSError, ValueError) as e:
    raise UserInputError(f'cannot read the saved state {path} ({e}): move it away to start the '
                         'run afresh, or use another `output_dir`') from None
  return state


def load_state(output_dir: str, kind: str, config: Mapping[str, Any],
               defaults: Optional[Mapping[str, Any]] = None) -> Optional[Dict]:
  """The saved state of a run of `kind` in `output_dir`, or None for a fresh directory.

  Raises ValueError (one line) if the directory holds a run with a different
  configuration. A setting the saved run did not have yet (an option added later) matches
  when it has its value from `defaults`.
  """
  state = read_state(output_dir, kind)
  if state is None:
    return None
  saved = dict(state.get('config', {}))
  config = json.loads(dumps(config))
  for k, v in json.loads(dumps(defaults or {})).items():
    saved.setdefault(k, v)
  diffs = [f'{k}={saved.get(k)!r} there, {config.get(k)!r} now'
           for k in sorted(set(saved) | set(config)) if not _same(saved.get(k), config.get(k))]
  if diffs:
    raise UserInputError(f'{output_dir} holds a {kind} run with a different configuration '
                         f'({"; ".join(diffs)}); rerun with the same settings to resume it, '
                         'or use another `output_dir`')
  return state


def save_state(output_dir: str, state: Mapping[str, Any]):
  atomic_write(os.path.join(output_dir, state_file(state['kind'])), dumps(state))


def open_run(output_dir: str, kind: str, config) -> Tuple[str, Optional[Dict]]:
  """(absolute output dir, its saved state or None): `prepare_output_dir` + `load_state`
  for a dataclass `config` (options added since a run was saved match at their default)."""
  output_dir = prepare_output_dir(output_dir)
  return output_dir, load_state(output_dir, kind, dataclasses.asdict(config),
                                dataclasses.asdict(type(config)()))
