"""The checks of every number a user gives: one rule each, the same in every command.

- **Integers**: counts, sizes, strides and topology fields are integers >= their minimum. An
  integral float (``32.0``, from YAML or JSON) is taken; ``32.7``, ``True``, ``'32'`` and NaN are
  refused, never truncated.
- **Image size**: a side is an integer >= the tokenization stride s. The patch embedding pads
  a side that s does not divide up to the next multiple (a side of n gives ceil(n/s) tokens,
  nothing is cropped) and every patch merging gives ceil(n/2), so from one s×s patch on, every
  stage has at least one token that holds image pixels. Below s the first token would be
  mostly padding. During training the rule holds at every stride of the re-tokenization
  schedule. (Detection adds Model Garden's own rule: multiples of 2^max_level.)
- **Ceiling**: a network beyond any accelerator's memory is refused from its topology alone
  (`asvit_tf.models.memory`, which builds on these checks and on the size counts).

Every refusal is a `UserInputError` (a `ValueError`) whose one line names the value and the
rule. Pure Python: no TensorFlow.
"""
from __future__ import annotations

import math
import numbers
from typing import Tuple, Union

from asvit_tf.errors import UserInputError

def integer(name: str, value, minimum: int = 1) -> int:
  """`value` as an int if it is an integer >= `minimum`; UserInputError otherwise."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise UserInputError(f'{name} must be an integer >= {minimum}, got {value!r}')
  if not isinstance(value, numbers.Integral):
    if not (math.isfinite(value) and float(value).is_integer()):
      raise UserInputError(f'{name} must be an integer >= {minimum}, got {value!r} '
                           '(not rounded: give a whole number)')
  if value < minimum:
    raise UserInputError(f'{name} must be an integer >= {minimum}, got {int(value)}')
  return int(value)


def check_image_size(value, stride: int = 4,
                     name: str = 'image_size') -> Union[int, Tuple[int, int]]:
  """A checked image size: an int side, or (height, width); each side >= `stride`.

  See the module docstring for why; UserInputError naming the value and the rule otherwise.
  """
  stride = integer('stride', stride)
  sides = tuple(value) if isinstance(value, (tuple, list)) else (value,)
  if len(sides) not in (1, 2):
    raise UserInputError(f'{name} must be one side or (height, width), got {value!r}')
  out = []
  for side in sides:
    side = integer(name, side)
    if side < stride:
      raise UserInputError(
          f'{name} must be at least the tokenization stride {stride} (one {stride}x{stride} '
          f'patch per side, so every stage has a token of image pixels), got {side}')
    out.append(side)
  return out[0] if len(out) == 1 else tuple(out)
