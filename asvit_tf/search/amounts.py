"""Amounts of parameters and MACs with K/M/G suffixes: read from flags, written in tables."""
from __future__ import annotations

import math

from asvit_tf.errors import UserInputError

SUFFIXES = {'K': 10**3, 'M': 10**6, 'G': 10**9}


def format_amount(value: float) -> str:
  """29000000 → '29M', 5300000000 → '5.3G' (4 significant digits)."""
  for suffix in ('G', 'M', 'K'):
    if abs(value) >= SUFFIXES[suffix]:
      return f'{value / SUFFIXES[suffix]:.4g}{suffix}'
  return f'{value:.4g}'


def format_budget(metric: str, value: float) -> str:
  """'params 29M', 'MACs 5.3G'."""
  return f'{"MACs" if metric == "macs" else metric} {format_amount(value)}'


def parse_amount(text: str, name: str) -> int:
  """'29M', '5.3G', '800K', '110e6' → a positive int; UserInputError naming `name` otherwise."""
  item = text.strip()
  scale = SUFFIXES.get(item[-1:].upper(), 1)
  number = item[:-1] if scale != 1 else item
  try:
    value = float(number)
  except ValueError:
    value = math.nan
  if not math.isfinite(value) or not number.strip():
    raise UserInputError(f'{name}: {text.strip()!r} is not a number with an optional K, M or G '
                         'suffix (e.g. 29M, 5.3G)')
  value = round(value * scale)
  if value <= 0:
    raise UserInputError(f'{name}: {text.strip()!r} is not positive')
  return value
