"""Networks too large for any accelerator, refused from the topology before anything is built.

A network is refused when its float32 weights, or the largest float32 tensor one image
produces (attention scores, MLP hidden layer, patches of a merging), need more than
`MEMORY_CEILING` bytes: more than any single accelerator holds (the largest hold 192 GB), so
it could not run anywhere and would only exhaust the host. Every refusal is a
`UserInputError` naming the value and the rule. Pure Python: no TensorFlow.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

from asvit_tf import arch as arch_lib
from asvit_tf import validation
from asvit_tf.errors import UserInputError
from asvit_tf.models import size

MEMORY_CEILING = 256 * 2**30  # bytes: 256 GiB
FLOAT_BYTES = 4


def _gib(n_bytes: float) -> str:
  return f'{n_bytes / 2**30:,.0f} GiB' if n_bytes >= 2**30 else f'{n_bytes / 2**20:,.1f} MiB'


def largest_activation(topology, image_size, stride: int = 4, window_policy: str = 'splits',
                       window_reference_size: int = 224) -> Tuple[int, str]:
  """(scalars, what) of the largest tensor one image produces in the forward pass.

  The attention scores follow the model's window policy (`size.stage_windows`): under
  `fixed` the windows keep their reference size and a large image has many small windows,
  under `splits` they grow with the image.
  """
  topo = topology
  grids = size.stage_grids(image_size, stride)
  stage_windows = size.stage_windows(topo, image_size, stride, window_policy,
                                     window_reference_size)
  h, w = size._as_hw(image_size)  # pylint: disable=protected-access
  best = (h * w * 3, 'the image')
  for i, grid in enumerate(grids):
    width, heads = topo.stage_widths[i], topo.stage_heads[i]
    tokens = grid[0] * grid[1]
    if i:
      k = topo.kernels[i]
      best = max(best, (tokens * k * k * topo.stage_widths[i - 1],
                        f'the patches of merge{i + 1}'))
    wh, ww = stage_windows[i]
    windows = math.ceil(grid[0] / wh) * math.ceil(grid[1] / ww)  # the padded grid's windows
    best = max(best, (windows * heads * (wh * ww)**2, f'the attention scores of stage{i + 1}'),
               (tokens * topo.expansions[i] * width, f'the MLP hidden layer of stage{i + 1}'))
  return best


def check_buildable(topology, image_size=None, num_classes: Optional[int] = 1000,
                    stride: int = 4, name: str = 'image_size', window_policy: str = 'splits',
                    window_reference_size: int = 224):
  """Refuses a network beyond `MEMORY_CEILING`, from its topology alone (nothing allocated).

  Checks `num_classes` (None: no head) and `stride`, the parameters (float32 weights), and
  with `image_size` its rule and the largest tensor of one image under the model's window
  policy (`largest_activation`). Returns the topology.
  """
  topo = arch_lib.as_topology(topology)
  if num_classes is not None:
    num_classes = validation.integer('num_classes', num_classes)
  stride = validation.integer('stride', stride)
  params = size.estimate_params(topo, num_classes)
  if params * FLOAT_BYTES > MEMORY_CEILING:
    raise UserInputError(
        f'{topo} has {params:,} parameters ({_gib(params * FLOAT_BYTES)} of float32 weights): '
        f'beyond the {_gib(MEMORY_CEILING)} that any single accelerator holds '
        '(asvit_tf.models.memory.MEMORY_CEILING); use smaller depths or width')
  if image_size is not None:
    side = validation.check_image_size(image_size, stride, name)
    scalars, what = largest_activation(topo, side, stride, window_policy, window_reference_size)
    if scalars * FLOAT_BYTES > MEMORY_CEILING:
      raise UserInputError(
          f'{name} {image_size} is too large for {topo} at stride {stride} with '
          f'{window_policy} windows: {what} of one '
          f'image alone take {_gib(scalars * FLOAT_BYTES)}, beyond the {_gib(MEMORY_CEILING)} '
          'that any single accelerator holds (asvit_tf.models.memory.MEMORY_CEILING)')
  return topo
