"""PiT architectures of ViT-Bench-101 and their parameter and multiply-accumulate counts.

A PiT (Heo et al., "Rethinking Spatial Dimensions of Vision Transformers", 2021) as the
benchmark defines it (`pycls/models/auto/pit_subnet.py` in lliai/Auto-Prox-AAAI24, with
`configs/auto/pit/pit-ti_c100_base.yaml`): a patch-16, stride-8 conv embedding (no padding)
plus a learned position embedding and one class token; S stages of pre-norm global-attention
blocks over [class token; map tokens], stage i of width w_i = base_dim·heads_i with heads_i
heads (head width base_dim) and MLP hidden width int(w_i·mlp_ratio); between stages a pooling
that halves the map with a 3×3, stride-2, padding-1 conv of groups = w_i (each output channel
reads one input channel) and maps the class token with a Dense w_i -> w_{i+1}; then LayerNorm
(eps 1e-6) and a Dense head on the class token.

Parameters, per part (d = width, r = hidden width, p = patch, E = embedding grid side):
  embedding  3·p²·d0 + d0 (conv) + E²·d0 (position) + d0 (class token)
  block      2·2d (two LayerNorms) + d·3d + 3d (qkv) + d·d + d (proj) + d·r + r + r·d + d (MLP)
  pooling    9·d_out + d_out (conv, one input channel per output) + d_in·d_out + d_out (Dense)
  head       2·d_last (LayerNorm) + d_last·classes + classes
MACs as models/size.py counts them: dense layers, convs and the two attention matmuls
(N²·d each for N tokens); LayerNorm, GELU, softmax and additions not counted. Pure Python.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Tuple

from asvit_tf.errors import UserInputError

# The benchmark's fixed settings (pit-ti_c100_base.yaml and pycls' config defaults).
PATCH_SIZE = 16
PATCH_STRIDE = 8
# CIFAR-100 images enter the benchmark's PiT at 224×224: MODEL.IMG_SIZE keeps pycls' default
# 224 (the yaml does not set it), and the position embedding is built for that grid and added
# to the conv's output, so the network runs on 224-pixel inputs only (27×27 tokens).
IMAGE_SIZE = 224
NUM_CLASSES = 100
LN_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class PitArch:
  """One PiT of the benchmark's space: per-head width, MLP ratio, depth and heads per stage."""
  base_dim: int
  mlp_ratio: float
  depth: Tuple[int, ...]
  num_heads: Tuple[int, ...]

  def __post_init__(self):
    object.__setattr__(self, 'depth', tuple(int(d) for d in self.depth))
    object.__setattr__(self, 'num_heads', tuple(int(h) for h in self.num_heads))
    self.validate()

  def validate(self):
    if isinstance(self.base_dim, bool) or int(self.base_dim) != self.base_dim or \
        self.base_dim < 1:
      raise UserInputError(f'PiT base_dim must be a positive integer, got {self.base_dim!r}')
    if not self.mlp_ratio > 0:
      raise UserInputError(f'PiT mlp_ratio must be positive, got {self.mlp_ratio!r}')
    if not self.depth or len(self.depth) != len(self.num_heads):
      raise UserInputError(f'PiT depth and num_heads need one entry per stage, got depth='
                       f'{list(self.depth)}, num_heads={list(self.num_heads)}')
    if min(self.depth) < 1 or min(self.num_heads) < 1:
      raise UserInputError(f'PiT depths and heads must be >= 1, got depth={list(self.depth)}, '
                       f'num_heads={list(self.num_heads)}')
    for a, b in zip(self.num_heads, self.num_heads[1:]):
      # The pooling conv has groups = input width: the output width must be a multiple.
      if b % a:
        raise UserInputError(f'PiT num_heads {list(self.num_heads)}: each stage must have a '
                         f'multiple of the previous stage\'s heads ({b} is not a multiple '
                         f'of {a})')

  @property
  def widths(self) -> Tuple[int, ...]:
    return tuple(self.base_dim * h for h in self.num_heads)

  def hidden(self, stage: int) -> int:
    """MLP hidden width of a stage: int(width·mlp_ratio), as the definition truncates."""
    return int(self.widths[stage] * self.mlp_ratio)

  def to_dict(self) -> Dict[str, object]:
    ratio = int(self.mlp_ratio) if float(self.mlp_ratio).is_integer() else self.mlp_ratio
    return {'base_dim': self.base_dim, 'mlp_ratio': ratio, 'depth': list(self.depth),
            'num_heads': list(self.num_heads)}

  def __str__(self) -> str:
    """A compact key, e.g. `pit:16,6,2-8-4,2-4-4` (base_dim, mlp_ratio, depths, heads)."""
    d = self.to_dict()
    return (f'pit:{d["base_dim"]},{d["mlp_ratio"]},{"-".join(map(str, self.depth))},'
            f'{"-".join(map(str, self.num_heads))}')


FIELDS = ('base_dim', 'mlp_ratio', 'depth', 'num_heads')


def from_dict(arch: Mapping[str, object]) -> PitArch:
  """A `PitArch` from the benchmark's {base_dim, mlp_ratio, depth, num_heads}."""
  if not isinstance(arch, Mapping):
    raise UserInputError(f'a PiT arch must be a mapping with {", ".join(FIELDS)}, got {arch!r}')
  missing = [f for f in FIELDS if f not in arch]
  if missing:
    raise UserInputError(f'PiT arch {dict(arch)} lacks the field(s) {", ".join(missing)}')
  depth, heads = arch['depth'], arch['num_heads']
  if not isinstance(depth, (list, tuple)) or not isinstance(heads, (list, tuple)):
    raise UserInputError(f'PiT depth and num_heads must be lists, got depth={depth!r}, '
                     f'num_heads={heads!r}')
  try:
    numbers = (int(arch['base_dim']), float(arch['mlp_ratio']), tuple(int(d) for d in depth),
               tuple(int(h) for h in heads))
  except (TypeError, ValueError) as e:
    raise UserInputError(f'PiT arch {dict(arch)} holds a non-numeric value: {e}') from None
  return PitArch(*numbers)


def as_pit(arch) -> PitArch:
  """`arch` itself, or the `PitArch` of a benchmark dict."""
  if isinstance(arch, PitArch):
    return arch
  return from_dict(arch)


def embed_grid(image_size: int = IMAGE_SIZE, patch: int = PATCH_SIZE,
               stride: int = PATCH_STRIDE) -> int:
  """Side of the embedding's token grid: floor((S - p) / stride) + 1 (conv without padding)."""
  if image_size < patch:
    raise UserInputError(f'PiT image_size must be >= the patch size {patch}, got {image_size}')
  return (image_size - patch) // stride + 1


def stage_grids(image_size: int = IMAGE_SIZE, num_stages: int = 3, patch: int = PATCH_SIZE,
                stride: int = PATCH_STRIDE) -> List[int]:
  """Map side of each stage: each pooling (k 3, stride 2, pad 1) maps n to floor((n-1)/2)+1."""
  grids = [embed_grid(image_size, patch, stride)]
  for _ in range(num_stages - 1):
    grids.append((grids[-1] - 1) // 2 + 1)
  return grids


@dataclasses.dataclass(frozen=True)
class PartCost:
  name: str
  params: int
  macs: int


def _block(d: int, r: int, tokens: int) -> Tuple[int, int]:
  params = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * r + r) + (r * d + d)
  macs = tokens * (3 * d * d + d * d + 2 * d * r) + 2 * tokens * tokens * d
  return params, macs


def cost_breakdown(arch: PitArch, image_size: int = IMAGE_SIZE,
                   num_classes: int = NUM_CLASSES, num_tokens: int = 1,
                   patch: int = PATCH_SIZE, stride: int = PATCH_STRIDE) -> List[PartCost]:
  """Per-part params and MACs: embedding, stage1, pool2, stage2, ..., head.

  `num_tokens=2` is the distillation variant (a second token and a second head); `patch`
  and `stride` other than 16 and 8 give the other published PiTs (PiT-B: 14 and 7).
  """
  grids = stage_grids(image_size, len(arch.depth), patch, stride)
  w = arch.widths
  p = patch
  e = grids[0]
  parts = [PartCost('embedding', 3 * p * p * w[0] + w[0] + e * e * w[0] + num_tokens * w[0],
                    e * e * w[0] * 3 * p * p)]
  for i, depth in enumerate(arch.depth):
    if i:
      d_in, d_out, n = w[i - 1], w[i], grids[i]
      parts.append(PartCost(f'pool{i + 1}', 9 * d_out + d_out + d_in * d_out + d_out,
                            n * n * d_out * 9 + num_tokens * d_in * d_out))
    params, macs = _block(w[i], arch.hidden(i), num_tokens + grids[i] ** 2)
    parts.append(PartCost(f'stage{i + 1}', depth * params, depth * macs))
  heads = num_tokens
  parts.append(PartCost('head', 2 * w[-1] + heads * (w[-1] * num_classes + num_classes),
                        heads * w[-1] * num_classes))
  return parts


def count_params(arch, image_size: int = IMAGE_SIZE, num_classes: int = NUM_CLASSES,
                 num_tokens: int = 1, patch: int = PATCH_SIZE,
                 stride: int = PATCH_STRIDE) -> int:
  """Trainable parameters of the benchmark's PiT (what its `complexity()` counts)."""
  return sum(p.params for p in cost_breakdown(as_pit(arch), image_size, num_classes,
                                              num_tokens, patch, stride))


def count_macs(arch, image_size: int = IMAGE_SIZE, num_classes: int = NUM_CLASSES,
               num_tokens: int = 1, patch: int = PATCH_SIZE, stride: int = PATCH_STRIDE) -> int:
  """Multiply-accumulates of one forward pass of one image."""
  return sum(p.macs for p in cost_breakdown(as_pit(arch), image_size, num_classes,
                                            num_tokens, patch, stride))


__all__ = ['FIELDS', 'IMAGE_SIZE', 'LN_EPS', 'NUM_CLASSES', 'PATCH_SIZE', 'PATCH_STRIDE',
           'PartCost', 'PitArch', 'as_pit', 'cost_breakdown', 'count_macs', 'count_params',
           'embed_grid', 'from_dict', 'stage_grids']
