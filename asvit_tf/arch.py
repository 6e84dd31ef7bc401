"""Topology strings <-> `Topology`, the As-ViT search space, and validation.

A topology string has the seed form ``K1,S1,E1|K2,S2,E2|K3,S3,E3|K4,S4,E4|H`` or the
scaled form ``K1,S1,E1,L1|...|K4,S4,E4,L4|H,C`` (docs/design.md §2). Missing depths default
to 1, a missing width C to 32. ``str(topology)`` always writes the scaled form.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Sequence, Tuple

from asvit_tf import validation
from asvit_tf.errors import UserInputError

NUM_STAGES = 4
DEFAULT_WIDTH = 32
MAX_WIDTH = 1024
# Stage i uses H / HEAD_DIVISORS[i] heads.
HEAD_DIVISORS = (8, 4, 2, 1)

# The 12 categorical decisions of the seed search, in string order (S4 is fixed to 1
# and therefore not a decision).
SEARCH_SPACE: Tuple[Tuple[str, Tuple[int, ...]], ...] = (
    ('K1', (4, 5, 6, 7, 8)),
    ('S1', (2, 4, 8)),
    ('E1', (2, 3, 4, 5, 6)),
    ('K2', (2, 3, 4)),
    ('S2', (1, 2, 4)),
    ('E2', (2, 3, 4, 5, 6)),
    ('K3', (2, 3, 4)),
    ('S3', (1, 2)),
    ('E3', (2, 3, 4, 5, 6)),
    ('K4', (2, 3, 4)),
    ('E4', (2, 3, 4, 5, 6)),
    ('H', (16, 32, 64)),
)
FIXED_SPLIT_4 = 1


def search_space_size() -> int:
  """Number of distinct seed topologies in `SEARCH_SPACE` (4,556,250)."""
  n = 1
  for _, choices in SEARCH_SPACE:
    n *= len(choices)
  return n


def extreme_topology(width: int, largest: bool) -> 'Topology':
  """The search-space topology with the most (`largest`) or fewest parameters and the
  largest or smallest tensors at `width`: the largest (smallest) kernels, expansions and
  heads, the fewest (most) splits."""
  space = dict(SEARCH_SPACE)
  pick, split = (max, min) if largest else (min, max)
  return Topology(
      kernels=tuple(pick(space[f'K{i}']) for i in range(1, 5)),
      splits=(split(space['S1']), split(space['S2']), split(space['S3']), FIXED_SPLIT_4),
      expansions=tuple(pick(space[f'E{i}']) for i in range(1, 5)), heads=pick(space['H']),
      width=width)


def _parse_int(field: str, text: str) -> int:
  text = text.strip()
  try:
    return int(text)
  except ValueError:
    raise UserInputError(f'{field} must be an integer, got {text!r}') from None


@dataclasses.dataclass(frozen=True)
class Topology:
  """An As-ViT topology: per-stage kernel, split, expansion and depth, heads and width.

  Attributes:
    kernels: (K1, K2, K3, K4): patch-embedding kernel, then the patch-merging kernels.
    splits: (S1..S4): windows per side of the split attention (1 = global).
    expansions: (E1..E4): MLP expansion ratios.
    depths: (L1..L4): transformer blocks per stage.
    heads: H, the heads of the last stage (stage i has H / (8, 4, 2, 1)[i]).
    width: C, the width of stage 1 (stage i has min(1024, C * 2**(i-1))).
  """
  kernels: Tuple[int, int, int, int]
  splits: Tuple[int, int, int, int]
  expansions: Tuple[int, int, int, int]
  depths: Tuple[int, int, int, int] = (1, 1, 1, 1)
  heads: int = 32
  width: int = DEFAULT_WIDTH

  def __post_init__(self):
    for name, letter in (('kernels', 'K'), ('splits', 'S'), ('expansions', 'E'),
                         ('depths', 'L')):
      value = tuple(getattr(self, name))
      if len(value) != NUM_STAGES:
        raise UserInputError(f'{name} needs {NUM_STAGES} values, got {value!r}')
      # A patch merging needs k >= 2 to cover the stride-2 grid.
      minimums = (1, 2, 2, 2) if name == 'kernels' else (1,) * NUM_STAGES
      object.__setattr__(self, name, tuple(
          validation.integer(f'{letter}{i + 1}', v, m)
          for i, (v, m) in enumerate(zip(value, minimums))))
    object.__setattr__(self, 'heads', validation.integer('H', self.heads, 8))
    object.__setattr__(self, 'width', validation.integer('C', self.width))
    self._validate()

  # ---- validation -------------------------------------------------------------------
  def _validate(self):
    if self.heads % 8:
      raise UserInputError(f'H must be divisible by 8 (stages use H/8, H/4, H/2, H heads), '
                           f'got {self.heads}')
    for i, (w, h) in enumerate(zip(self.stage_widths, self.stage_heads)):
      if w < h:
        raise UserInputError(f'C={self.width} is too narrow for H={self.heads}: stage {i + 1} '
                             f'has width {w} < {h} heads')

  # ---- derived quantities -----------------------------------------------------------
  @property
  def stage_widths(self) -> Tuple[int, ...]:
    return tuple(min(MAX_WIDTH, self.width * 2**i) for i in range(NUM_STAGES))

  @property
  def stage_heads(self) -> Tuple[int, ...]:
    return tuple(self.heads // d for d in HEAD_DIVISORS)

  @property
  def head_width(self) -> int:
    """F, the width of the hidden layer of the classification head."""
    return min(MAX_WIDTH, 8 * self.width)

  @property
  def num_blocks(self) -> int:
    return sum(self.depths)

  # ---- strings ------------------------------------------------------------------------
  @classmethod
  def parse(cls, text: str) -> 'Topology':
    """Reads the seed or the scaled form; raises ValueError naming the bad field."""
    if not isinstance(text, str):
      raise UserInputError(f'a topology string is needed, got {text!r}')
    parts = text.strip().split('|')
    if len(parts) != NUM_STAGES + 1:
      raise UserInputError(
          f'topology {text!r} has {len(parts)} "|"-separated parts; expected 5 '
          '(K,S,E[,L] for each of 4 stages, then H[,C])')
    kernels, splits, expansions, depths = [], [], [], []
    for i, part in enumerate(parts[:NUM_STAGES]):
      values = part.split(',')
      if len(values) not in (3, 4):
        raise UserInputError(f'stage {i + 1} of {text!r} must be "K,S,E" or "K,S,E,L", '
                             f'got {part.strip()!r}')
      names = [f'K{i + 1}', f'S{i + 1}', f'E{i + 1}', f'L{i + 1}']
      ints = [_parse_int(n, v) for n, v in zip(names, values)]
      kernels.append(ints[0])
      splits.append(ints[1])
      expansions.append(ints[2])
      depths.append(ints[3] if len(ints) == 4 else 1)
    tail = parts[NUM_STAGES].split(',')
    if len(tail) not in (1, 2):
      raise UserInputError(f'the last part of {text!r} must be "H" or "H,C", '
                           f'got {parts[NUM_STAGES].strip()!r}')
    heads = _parse_int('H', tail[0])
    width = _parse_int('C', tail[1]) if len(tail) == 2 else DEFAULT_WIDTH
    return cls(tuple(kernels), tuple(splits), tuple(expansions), tuple(depths), heads, width)

  def __str__(self) -> str:
    stages = [f'{k},{s},{e},{l}' for k, s, e, l in
              zip(self.kernels, self.splits, self.expansions, self.depths)]
    return '|'.join(stages) + f'|{self.heads},{self.width}'

  @property
  def seed_string(self) -> str:
    """The seed form (no depths, no width)."""
    stages = [f'{k},{s},{e}' for k, s, e in zip(self.kernels, self.splits, self.expansions)]
    return '|'.join(stages) + f'|{self.heads}'

  def replace(self, **changes) -> 'Topology':
    """A copy with fields changed (validated again)."""
    return dataclasses.replace(self, **changes)

  # ---- search decisions -------------------------------------------------------------
  def _decision_values(self) -> Tuple[int, ...]:
    k, s, e = self.kernels, self.splits, self.expansions
    return (k[0], s[0], e[0], k[1], s[1], e[1], k[2], s[2], e[2], k[3], e[3], self.heads)

  def decisions(self) -> Tuple[int, ...]:
    """Choice indices into `SEARCH_SPACE`; ValueError if outside the search space."""
    if self.splits[3] != FIXED_SPLIT_4:
      raise UserInputError(f'S4 must be {FIXED_SPLIT_4} in the search space, got {self.splits[3]}')
    out = []
    for (field, choices), value in zip(SEARCH_SPACE, self._decision_values()):
      if value not in choices:
        raise UserInputError(f'{field}={value} is not in the search space {choices}')
      out.append(choices.index(value))
    return tuple(out)

  @classmethod
  def from_decisions(cls, indices: Sequence[int], depths=(1, 1, 1, 1),
                     width: int = DEFAULT_WIDTH) -> 'Topology':
    """The topology of 12 choice indices (see `SEARCH_SPACE`)."""
    indices = list(indices)
    if len(indices) != len(SEARCH_SPACE):
      raise UserInputError(f'{len(SEARCH_SPACE)} decisions are needed, got {len(indices)}')
    v = []
    for (field, choices), index in zip(SEARCH_SPACE, indices):
      index = int(index)
      if not 0 <= index < len(choices):
        raise UserInputError(f'decision {field} has {len(choices)} choices, got index {index}')
      v.append(choices[index])
    return cls(kernels=(v[0], v[3], v[6], v[9]), splits=(v[1], v[4], v[7], FIXED_SPLIT_4),
               expansions=(v[2], v[5], v[8], v[10]), depths=tuple(depths), heads=v[11],
               width=width)


def as_topology(arch) -> Topology:
  """A `Topology` from a Topology, a topology string or a registered variant name."""
  if isinstance(arch, Topology):
    return arch
  if isinstance(arch, str):
    name = arch.strip()
    if name in VARIANTS:
      return Topology.parse(VARIANTS[name])
    if '|' not in name:
      raise UserInputError(f'unknown variant {name!r}; known: {", ".join(sorted(VARIANTS))} '
                           '(or give a topology string such as 8,2,3|4,1,2|4,1,4|4,1,6|32)')
    return Topology.parse(name)
  raise UserInputError(f'cannot make a topology from {arch!r}')


ARCH_FORMS = ('a topology string (seed form K1,S1,E1|...|K4,S4,E4|H such as '
              '8,2,3|4,1,2|4,1,4|4,1,6|32, or scaled K1,S1,E1,L1|...|H,C), a variant name ({}), '
              'the output directory of `asvit search` (its seed.txt), or @FILE (a file holding '
              'one of these)')
SEED_FILE = 'seed.txt'  # what `asvit search` writes (asvit_tf.search.reinforce.SEED_FILE)


def arch_help() -> str:
  """What an ARCH argument may be, in one sentence."""
  return ARCH_FORMS.format(', '.join(variant_names()))


def resolve(text: str, name: str = 'ARCH') -> Topology:
  """The topology of an ARCH argument of the command lines (`arch_help`), the same forms for
  `asvit describe`, `measure` and `grow`; UserInputError or FileNotFoundError otherwise."""
  text = (text or '').strip()
  if not text:
    raise UserInputError(f'{name} is required: {arch_help()}')
  path = os.path.expanduser(text[1:] if text.startswith('@') else text)
  if text.startswith('@') or ('|' not in text and os.path.isdir(path)):
    if os.path.isdir(path):
      path = os.path.join(path, SEED_FILE)
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{name} {text}: {path} does not exist (has the search finished?)')
    with open(path) as f:
      content = f.read().strip()
    if not content:
      raise UserInputError(f'{name} {text}: {path} is empty')
    text = content
  return as_topology(text)


# Named variants (the models registry builds them by these names). The paper gives As-ViT
# Small and Base by size only (29.0 M and 52.6 M params); asvit_small and asvit_base are the
# steps of our own paper-preset scaling run of the official seed closest to those sizes, made
# under the old initialisation (docs/family_old_init.md). asvit_base_seed2 is step 7 of the
# same grow under the authors' initialisation with --seed=2 (docs/scaling_study.md): the
# Base-sized member nearest the paper's Base in both parameters and MACs of all our grows.
SEED = '8,2,3|4,1,2|4,1,4|4,1,6|32'
VARIANTS = {
    'asvit_seed': '8,2,3,1|4,1,2,1|4,1,4,1|4,1,6,1|32,32',
    'asvit_small': '8,2,3,4|4,1,2,1|4,1,4,3|4,1,6,2|32,92',
    'asvit_base': '8,2,3,6|4,1,2,1|4,1,4,3|4,1,6,2|32,128',
    'asvit_base_seed2': '8,2,3,3|4,1,2,4|4,1,4,1|4,1,6,3|32,104',
    'asvit_large': '8,2,3,5|4,1,2,2|4,1,4,5|4,1,6,2|32,180',
}


def variant_names() -> Iterable[str]:
  return sorted(VARIANTS)
