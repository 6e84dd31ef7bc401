"""Ground-truth tables: networks with trained accuracies, read and checked.

A table is a JSON object with a `records` list (the shipped benchmark file), a JSON list, or
JSON lines (one object per line). Each record holds the network and one or more accuracy
columns: `accuracy`, or any field ending in `_acc` (the benchmark's `c100_base_acc`,
`c100_kd_acc`); every record must have the same columns.

- space `pit`: the network is `arch` = {base_dim, mlp_ratio, depth, num_heads}
  (ViT-Bench-101's PiT space, `models/pit_size.py`).
- space `asvit`: the network is `topology`, an As-ViT topology string (`arch.py`).

A record may also hold measures already known (`length`, `curvature`, `curvature_length`,
`ntk`, `params`, `macs`): those are used as given and not measured.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Dict, List, Optional, Tuple

from asvit_tf import arch as arch_lib
from asvit_tf.errors import UserInputError
from asvit_tf.models import pit_size

SPACES = ('pit', 'asvit')
NETWORK_FIELD = {'pit': 'arch', 'asvit': 'topology'}
KNOWN_MEASURES = ('length', 'curvature', 'curvature_length', 'ntk', 'params', 'macs')


@dataclasses.dataclass(frozen=True)
class Row:
  """One network of a table: its key (a canonical string), the network, its accuracies and
  any measures the table already gives."""
  key: str
  network: object  # pit_size.PitArch or arch_lib.Topology
  accuracy: Dict[str, float]
  given: Dict[str, float]


def check_space(space: str) -> str:
  if space not in SPACES:
    raise UserInputError(f'`space` must be one of {", ".join(SPACES)}, got {space!r}')
  return space


def _records(path: str) -> List[Tuple[str, object]]:
  """[(where, record)] with `where` naming the line or record for error messages."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'`table` {path}: no such file')
  with open(path, encoding='utf-8') as f:
    text = f.read()
  try:
    data = json.loads(text)
  except json.JSONDecodeError:
    data = None
  if isinstance(data, dict) and 'records' in data:
    if not isinstance(data['records'], list):
      raise UserInputError(f'table {path}: "records" must be a list of records')
    return [(f'{path} record {i + 1}', r) for i, r in enumerate(data['records'])]
  if isinstance(data, list):
    return [(f'{path} record {i + 1}', r) for i, r in enumerate(data)]
  out = []  # JSON lines (a one-line file is a JSON object without "records")
  for n, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      out.append((f'{path} line {n}', json.loads(line)))
    except json.JSONDecodeError as e:
      raise UserInputError(f'table {path} line {n} is not JSON: {e.msg}') from None
  return out


def _accuracy_columns(record: Dict[str, object]) -> List[str]:
  return sorted(k for k in record if k == 'accuracy' or k.endswith('_acc'))


def _number(where: str, field: str, value) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
    raise UserInputError(f'{where}: field {field!r} must be a number, got {value!r}')
  return float(value)


def _network(space: str, where: str, record: Dict[str, object]):
  field = NETWORK_FIELD[space]
  if field not in record:
    raise UserInputError(f'{where}: missing field {field!r} (space {space})')
  try:
    if space == 'pit':
      net = pit_size.from_dict(record[field])
    else:
      net = arch_lib.as_topology(str(record[field]))
  except ValueError as e:
    raise UserInputError(f'{where}: {e}') from None
  return net


def read_table(path: str, space: str, columns: Optional[List[str]] = None) -> List[Row]:
  """The rows of the table at `path` for `space`; ValueError names the record and field."""
  check_space(space)
  records = _records(path)
  if not records:
    raise UserInputError(f'table {path} holds no records')
  rows, seen = [], {}
  for where, record in records:
    if not isinstance(record, dict):
      raise UserInputError(f'{where}: a record must be a JSON object, got {record!r}')
    net = _network(space, where, record)
    found = _accuracy_columns(record)
    if columns is None:
      if not found:
        raise UserInputError(f'{where}: missing field "accuracy" (or a "*_acc" column)')
      columns = found
    for c in columns:
      if c not in record:
        raise UserInputError(f'{where}: missing field {c!r} (the accuracy columns are '
                         f'{", ".join(columns)})')
    key = str(net)
    if key in seen:
      raise UserInputError(f'{where}: network {key} repeats {seen[key]}')
    seen[key] = where
    given = {m: _number(where, m, record[m]) for m in KNOWN_MEASURES if m in record}
    rows.append(Row(key, net, {c: _number(where, c, record[c]) for c in columns}, given))
  return rows
