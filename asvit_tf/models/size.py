"""Parameter and multiply-accumulate counts of an As-ViT, computed from its topology.

MACs follow docs/design.md §3: multiply-accumulates of the dense layers, the convolution and the
two attention matmuls (q·kᵀ and attn·v); LayerNorm, GELU, softmax, pooling and additions are
not counted. Work on zero-padded tokens (split attention on a grid that the windows do not
divide) is counted, since it is computed. Pure Python: no TensorFlow needed.
"""
from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Tuple

from asvit_tf import arch as arch_lib
from asvit_tf import validation
from asvit_tf.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class PartCost:
  """Cost of one part of the network (embedding, a stage, a merging, the head)."""
  name: str
  grid: Tuple[int, int]  # token grid (rows, cols) the part outputs
  width: int
  heads: int
  window: int  # attention window side (0 where there is no attention)
  blocks: int
  params: int
  macs: int


def _as_hw(image_size) -> Tuple[int, int]:
  if isinstance(image_size, int):
    return image_size, image_size
  h, w = image_size
  return int(h), int(w)


def token_grid(image_size, stride: int = 4) -> Tuple[int, int]:
  """Token grid of the patch embedding: the image is padded up to a multiple of `stride`."""
  h, w = _as_hw(image_size)
  return math.ceil(h / stride), math.ceil(w / stride)


def stage_grids(image_size, stride: int = 4) -> List[Tuple[int, int]]:
  """Token grids of stages 1..4 (each patch merging halves a side, rounding up)."""
  grid = token_grid(image_size, stride)
  out = [grid]
  for _ in range(arch_lib.NUM_STAGES - 1):
    grid = (math.ceil(grid[0] / 2), math.ceil(grid[1] / 2))
    out.append(grid)
  return out


def window_size(resolution: int, split: int) -> int:
  """Side of an attention window: ceil(resolution / split)."""
  return max(1, math.ceil(resolution / split))


WINDOW_POLICIES = ('splits', 'fixed')
# 'plain': the As-ViT patch merging; 'residual': plus ViT-ResNAS's shortcut (pool + Dense).
MERGES = ('plain', 'residual')


def check_merge(merge: str, name: str = 'merge') -> str:
  """Raises UserInputError (one line) for a merge that is not one of `MERGES`."""
  if merge not in MERGES:
    raise UserInputError(f'{name} must be one of {", ".join(MERGES)}, got {merge!r}')
  return merge
REFERENCE_SIZE = 224  # the image side at which `fixed` windows are taken by default


def check_window_policy(window_policy: str, reference_size: int = REFERENCE_SIZE) -> None:
  """Raises UserInputError (one line) for an unknown policy or a reference size below 1."""
  if window_policy not in WINDOW_POLICIES:
    raise UserInputError(f'window_policy must be one of {", ".join(WINDOW_POLICIES)}, got '
                     f'{window_policy!r}')
  if int(reference_size) < 1:
    raise UserInputError(f'window reference size must be >= 1 pixel, got {reference_size}')


def fixed_windows(arch, stride: int = 4, reference_size: int = REFERENCE_SIZE) -> List[int]:
  """Window side, in tokens, of each stage under the `fixed` window policy.

  The window a stage's splits give at the reference image size (224 by default) tokenized
  with `stride`: ceil(grid_i / S_i) with grid_i the stage's grid at that size. The window is
  a region of the image, so a re-tokenized (coarser) grid gets a window with fewer tokens
  covering the same pixels, up to rounding: As-ViT Large's windows are 28, 28, 14, 7 tokens
  at stride 4 and 7, 7, 4, 2 at stride 16. At the reference size this is what the splits
  give at any stride, so `fixed` and `splits` compute the same function there.
  """
  topo = arch_lib.as_topology(arch)
  grids = stage_grids(int(reference_size), stride)
  return [window_size(rows, split) for (rows, _), split in zip(grids, topo.splits)]


def attention_window(grid: Tuple[int, int], split: int,
                     fixed: Optional[int] = None) -> Tuple[int, int]:
  """(rows, cols) of the attention windows on a token grid.

  `fixed=None` is the `splits` policy, ceil(side / split); otherwise the fixed side,
  clipped to the grid (a grid smaller than the window is attended as one window, not
  padded up to it). A grid the window does not divide is padded up to a multiple of it.
  """
  rows, cols = grid
  if fixed is None:
    return window_size(rows, split), window_size(cols, split)
  return min(int(fixed), rows), min(int(fixed), cols)


def stage_windows(arch, image_size=224, stride: int = 4, window_policy: str = 'splits',
                  reference_size: int = REFERENCE_SIZE) -> List[Tuple[int, int]]:
  """(rows, cols) of the attention windows of stages 1..4 at an image size."""
  check_window_policy(window_policy, reference_size)
  topo = arch_lib.as_topology(arch)
  fixed = (fixed_windows(topo, stride, reference_size) if window_policy == 'fixed'
           else [None] * arch_lib.NUM_STAGES)
  return [attention_window(grid, split, side) for grid, split, side
          in zip(stage_grids(image_size, stride), topo.splits, fixed)]


def _block_params(width: int, heads: int, expansion: int, layer_norm: bool) -> int:
  inner = heads * (width // heads)
  hidden = expansion * width
  norm = 4 * width if layer_norm else 0
  qkv = width * 3 * inner + 3 * inner
  proj = inner * width + width
  mlp = width * hidden + hidden + hidden * width + width
  return norm + qkv + proj + mlp


def _block_macs(grid, width: int, heads: int, expansion: int,
                window: Tuple[int, int]) -> Tuple[int, int]:
  inner = heads * (width // heads)
  wh, ww = window
  nh, nw = math.ceil(grid[0] / wh), math.ceil(grid[1] / ww)
  padded_tokens = nh * wh * nw * ww
  tokens = grid[0] * grid[1]
  n = wh * ww
  attention = nh * nw * 2 * n * n * inner
  macs = padded_tokens * (width * 3 * inner + inner * width) + attention
  macs += tokens * 2 * expansion * width * width
  return macs, max(wh, ww)


def cost_breakdown(arch, image_size=224, num_classes: Optional[int] = 1000, stride: int = 4,
                   dilation: int = 1, use_layer_norm: bool = True,
                   window_policy: str = 'splits',
                   window_reference_size: int = REFERENCE_SIZE,
                   merge: str = 'plain') -> List[PartCost]:
  """Per-part costs in network order: embedding, stage1, merge2, stage2, ..., head; with
  `merge='residual'` each merging i is followed by its shortcut, `shortcut{i}` (2×2 average
  pooling, not counted, then a Dense d_(i-1) -> d_i without bias on the merged grid).

  `num_classes=None` leaves out the classification head (the backbone alone). The numbers
  follow `validation`: UserInputError naming a bad `image_size`, `stride` or `num_classes`.
  `window_policy` and `window_reference_size` are the model's (`stage_windows`).
  """
  del dilation  # the dilation changes no weight and no output size
  check_merge(merge)
  topo = arch_lib.as_topology(arch)
  stride = validation.integer('stride', stride)
  image_size = validation.check_image_size(image_size, stride)
  if num_classes is not None:
    num_classes = validation.integer('num_classes', num_classes)
  widths, heads = topo.stage_widths, topo.stage_heads
  grids = stage_grids(image_size, stride)
  windows = stage_windows(topo, image_size, stride, window_policy, window_reference_size)
  ln = use_layer_norm
  parts = []
  k1, c = topo.kernels[0], widths[0]
  parts.append(PartCost('embedding', grids[0], c, 0, 0, 0,
                        k1 * k1 * 3 * c + c + (2 * c if ln else 0),
                        grids[0][0] * grids[0][1] * k1 * k1 * 3 * c))
  for i in range(arch_lib.NUM_STAGES):
    if i:
      k, d_in, d_out = topo.kernels[i], widths[i - 1], widths[i]
      tokens = grids[i][0] * grids[i][1]
      parts.append(PartCost(f'merge{i + 1}', grids[i], d_out, 0, 0, 0,
                            k * k * d_in * d_out + (2 * k * k * d_in if ln else 0),
                            tokens * k * k * d_in * d_out))
      if merge == 'residual':
        parts.append(PartCost(f'shortcut{i + 1}', grids[i], d_out, 0, 0, 0, d_in * d_out,
                              tokens * d_in * d_out))
    w, h, e, depth = widths[i], heads[i], topo.expansions[i], topo.depths[i]
    macs, window = _block_macs(grids[i], w, h, e, windows[i])
    parts.append(PartCost(f'stage{i + 1}', grids[i], w, h, window, depth,
                          depth * _block_params(w, h, e, ln), depth * macs))
  if num_classes is not None:
    d, f = widths[-1], topo.head_width
    parts.append(PartCost('head', (1, 1), num_classes, 0, 0, 0,
                          (2 * d if ln else 0) + d * f + f + f * num_classes + num_classes,
                          d * f + f * num_classes))
  return parts


def count_macs(arch, image_size=224, num_classes: Optional[int] = 1000, stride: int = 4,
               dilation: int = 1, window_policy: str = 'splits',
               window_reference_size: int = REFERENCE_SIZE, merge: str = 'plain') -> int:
  """Multiply-accumulates of one forward pass of one image (docs/design.md §3), with the
  attention windows of `window_policy` ('splits' or 'fixed', see `stage_windows`) and the
  patch merging `merge` ('plain' or 'residual')."""
  return sum(p.macs for p in cost_breakdown(arch, image_size, num_classes, stride, dilation,
                                            window_policy=window_policy,
                                            window_reference_size=window_reference_size,
                                            merge=merge))


def estimate_params(arch, num_classes: Optional[int] = 1000, use_layer_norm: bool = True,
                    merge: str = 'plain') -> int:
  """Parameters of the network of `arch`, from the topology alone (equals `count_params`);
  `merge='residual'` adds the shortcuts' projections."""
  return sum(p.params for p in cost_breakdown(arch, 224, num_classes,
                                              use_layer_norm=use_layer_norm, merge=merge))


def count_params(model) -> int:
  """Number of scalars in all weights of a built Keras model (trainable or not)."""
  if not model.built:
    raise UserInputError('the model is not built yet: call it on an image batch first')
  return int(sum(math.prod(w.shape) for w in model.weights))
