"""Times the authors' PyTorch code (VITA-Group/AsViT) per new network on this CPU.

To set beside `complexity_speed.py --per_new_network` (issue 19) run in the same quiet minutes:
2 threads, their seed 27 (`prepare_seed`, grow.py's default), then their `TEG(size_curve=(10,
3, S, S), repeat=1, batch_curve=6)` as grow.py builds it, fed 16 Gaussian images with random
labels. Per measure (each re-seeds and builds its TEG), after the same steps untimed on
`7,2,3|4,1,2|4,1,4|4,1,6|32`, the seed `8,2,3|4,1,2|4,1,4|4,1,6|32` (C = 32, depths 1,1,1,1)
is timed as a new network: their `Transformer` built with reinforce.py's arguments,
`TEG.set_network` (their copy and initialisation) and `get_curve_complexity` (L^E),
`get_extrinsic_curvature` (κ) or `get_ntk` (κ_Θ). Printed: wall and CPU seconds, their value
against docs/benchmarks.md's, and the machine's speed measured in torch as `machine_speed()`
of complexity_speed.py measures it in TensorFlow (ours is TensorFlow's: shown if it imports).

Their code is imported from `--authors_dir` (a checkout of ebb1de2), neither copied nor
changed. In this process only: `.cuda()` returns the CPU object, `torch.cuda.current_device()`
None; `timm.models.layers` (timm 0.3.4 does not import on torch 2.13) is a stand-in with the
three names they import; PIL (starts.py logs its version) is stubbed if absent.

L^E and κ loop over coordinates: the 256 features of the seed's last stage, one backward pass
each (κ: two) per batch of curve points. `--coords=N` keeps the first N and extrapolates their
time linearly to all (building, copy, forward passes counted once); the value is then partial.

  python3.11 -m venv ../torchenv   # outside the repository
  ../torchenv/bin/pip install torch==2.13.0 numpy scipy   # the CPU build on this disk
  ../torchenv/bin/python benchmarks/authors_code_speed.py --authors_dir=../AsViT   # their checkout
  ../torchenv/bin/python benchmarks/authors_code_speed.py --authors_dir=../AsViT \\
      --image_size=224 --coords=4 --json=authors_224.json
  python benchmarks/complexity_speed.py --per_new_network --archs=asvit_seed \\
      --image_size=64 --no_write   # ours, in the same minutes
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
import types

SEED_TOPOLOGY = '8,2,3|4,1,2|4,1,4|4,1,6|32'
WARM_UP_TOPOLOGY = '7,2,3|4,1,2|4,1,4|4,1,6|32'
THEIR_SEED = 27
NTK_IMAGES = 16
MEASURES = {'length': ('L^E', 'get_curve_complexity'),
            'curvature': ('κ', 'get_extrinsic_curvature'),
            'ntk': ('κ_Θ', 'get_ntk')}
# Their values, their seed (docs/benchmarks.md, "The authors' code on the same machine" and
# the next section). L^E @224: the evening's full run; the afternoon's list says 0.00786.
DOC_VALUES = {('length', 64): 0.0807, ('curvature', 64): 1400.5, ('ntk', 64): 1.498,
              ('ntk', 224): 6.626, ('length', 224): 0.00804}


def timm_stand_in(torch):
  """`timm.models.layers` with the three names their models import, written from what the
  helpers do; any other name fails their import."""
  def to_2tuple(x):
    return tuple(x) if isinstance(x, (list, tuple)) else (x, x)

  def trunc_normal_(tensor, mean=0., std=1., a=-2., b=2.):
    # Normal(mean, std) cut to [a, b], in place, drawn as timm 0.3.4 draws it so that their
    # weights get the same numbers: u uniform on [Φ(α), Φ(β)], x = mean + std·Φ⁻¹(u), with
    # Φ⁻¹(u) = √2·erfinv(2u − 1). torch 2.13's trunc_normal_ draws normals and rejects:
    # another random stream, other weights, other values.
    cdf = lambda z: (1. + math.erf(z / math.sqrt(2.))) / 2.
    with torch.no_grad():
      low, high = cdf((a - mean) / std), cdf((b - mean) / std)
      tensor.uniform_(2 * low - 1, 2 * high - 1).erfinv_()
      return tensor.mul_(std * math.sqrt(2.)).add_(mean).clamp_(min=a, max=b)

  class DropPath(torch.nn.Module):
    # Stochastic depth: in training, drops a sample's branch with probability p, scales the
    # kept ones by 1 / (1 - p). Built only if drop_path > 0 (never here).
    def __init__(self, drop_prob=0.):
      super().__init__()
      self.drop_prob = drop_prob

    def forward(self, x):
      if not self.training or self.drop_prob == 0.:
        return x
      keep = 1. - self.drop_prob
      return x * x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep) / keep

  def missing(name):  # an AttributeError: `from ... import` turns it into an ImportError
    raise AttributeError(f'timm stand-in: no timm.models.layers.{name}')

  layers = types.ModuleType('timm.models.layers')
  layers.to_2tuple, layers.trunc_normal_, layers.DropPath = to_2tuple, trunc_normal_, DropPath
  layers.__getattr__ = missing
  timm, models = types.ModuleType('timm'), types.ModuleType('timm.models')
  timm.models, models.layers = models, layers
  sys.modules.update({'timm': timm, 'timm.models': models, 'timm.models.layers': layers})


def import_authors(authors_dir: str, torch) -> types.SimpleNamespace:
  lib = os.path.join(os.path.abspath(authors_dir), 'lib')
  if not os.path.isfile(os.path.join(lib, 'procedures', 'teg.py')):
    raise ValueError(f'--authors_dir={authors_dir}: no lib/procedures/teg.py there (a '
                     'checkout of VITA-Group/AsViT is needed)')
  timm_stand_in(torch)
  # Their `.cuda()` calls keep the CPU object; ntk.py's device query (passed back to the
  # patched `.cuda`) answers None instead of failing on a CPU-only torch.
  torch.Tensor.cuda = lambda self, *args, **kwargs: self
  torch.nn.Module.cuda = lambda self, *args, **kwargs: self
  torch.cuda.current_device = lambda: None
  if importlib.util.find_spec('PIL') is None:   # starts.py imports it to log its version
    sys.modules['PIL'] = types.SimpleNamespace(__version__='stub')
  sys.path.insert(0, lib)
  import models  # pylint: disable=g-import-not-at-top
  import procedures  # pylint: disable=g-import-not-at-top
  return types.SimpleNamespace(TEG=procedures.TEG, prepare_seed=procedures.prepare_seed,
                               Transformer=models.Transformer, Structure=models.CellStructure)


def build(authors, arch: str, image_size: int):
  """Their network of `arch`, as search/reinforce.py's `Policy.generate_arch` builds it."""
  genotype = authors.Structure(arch)
  return authors.Transformer(
      img_size=image_size, patch_sizes=genotype.patch_sizes, stride=4, in_chans=3,
      num_classes=1000, embed_dim=32, depths=[1, 1, 1, 1], num_heads=genotype.heads,
      window_sizes=genotype.window_sizes, mlp_ratios=genotype.mlp_ratios, drop_rate=0.,
      attn_drop_rate=0., drop_path_rate=0., use_checkpoint=False)


def seeded_teg(authors, torch, image_size: int):
  """grow.py's order: `prepare_seed`, then the TEG (which takes its NTK batch, then draws
  its curve). κ_Θ does not use the labels, but drawing them shifts the draws after them:
  with them the values are the doc's."""
  authors.prepare_seed(THEIR_SEED)
  images = torch.randn(NTK_IMAGES, 3, image_size, image_size)
  batches = [(images, torch.randint(0, 1000, (NTK_IMAGES,)))]
  return authors.TEG(batches, batches, size_curve=(10, 3, image_size, image_size), repeat=1,
                     batch_curve=6)


def _now():
  return time.perf_counter(), time.process_time()


def first_coords(teg, n: int, forwards: list):
  """Keeps the first n features of each network's output; adds the forward passes' wall
  and CPU seconds to `forwards`."""
  for net in teg._networks:  # pylint: disable=protected-access
    def forward_features(x, _forward=net.forward_features):
      start = _now()
      pooled, features = _forward(x)
      forwards[:] = [f + e - s for f, e, s in zip(forwards, _now(), start)]
      return pooled, features[:, :n]
    net.forward_features = forward_features


def new_network(authors, teg, arch, image_size, measure, coords) -> dict:
  """Wall and CPU seconds of building `arch`, `set_network` and the measure, and its value;
  with `coords`, the coordinates' part extrapolated from the first `coords` to all."""
  forwards = [0., 0.]
  start = _now()
  network = build(authors, arch, image_size)
  teg.set_network(network)
  setup = _now()
  if coords:
    first_coords(teg, coords, forwards)
  value = float(getattr(teg, MEASURES[measure][1])())
  end = _now()
  got = {'wall': end[0] - start[0], 'cpu': end[1] - start[1], 'value': value}
  if coords:
    for i, key in enumerate(('wall', 'cpu')):
      got[key] += (end[i] - setup[i] - forwards[i]) * (network.num_features / coords - 1)
    got.update(value=None, partial_value=value, coords=coords,
               all_coords=network.num_features)
  return got


def time_measure(authors, torch, measure: str, image_size: int, coords) -> dict:
  coords = coords if measure in ('length', 'curvature') else None
  teg = seeded_teg(authors, torch, image_size)
  new_network(authors, teg, WARM_UP_TOPOLOGY, image_size, measure, coords)  # untimed
  return new_network(authors, teg, SEED_TOPOLOGY, image_size, measure, coords)


def machine_speed(torch) -> dict:
  """complexity_speed.machine_speed in torch: 10 matmuls after one, 2000 scalar adds."""
  a = torch.randn(2048, 2048, generator=torch.Generator().manual_seed(0))  # not their seed
  torch.mm(a, a)
  start = time.perf_counter()
  for _ in range(10):
    torch.mm(a, a)
  gflops = 10 * 2 * 2048**3 / (time.perf_counter() - start) / 1e9
  x = torch.tensor(1.0)
  start = time.perf_counter()
  for _ in range(2000):
    x = x + 1.0
  return {'matmul_gflops': gflops, 'eager_op_ms': (time.perf_counter() - start) / 2000 * 1e3}


def tensorflow_speed():
  """Our benchmark's figure (TensorFlow's own threads), if TensorFlow imports here."""
  if importlib.util.find_spec('tensorflow') is None:
    return None
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from benchmarks import complexity_speed  # pylint: disable=g-import-not-at-top
  return complexity_speed.machine_speed()


def table(results: dict, image_size: int) -> str:
  rows = ['| measure | per new network: wall / CPU | value | theirs in the doc | match |',
          '|---|---|---|---|---|']
  for measure, got in results.items():
    doc = DOC_VALUES.get((measure, image_size))
    seconds = f'{got["wall"]:.2f} s / {got["cpu"]:.2f} s'
    if got['value'] is None:
      seconds += f', extrapolated from {got["coords"]}/{got["all_coords"]} coords'
      value, match = f'{got["partial_value"]:.6g} (first {got["coords"]} coords)', '—'
    else:
      value, off = f'{got["value"]:.6g}', got['value'] / doc - 1 if doc else None
      match = '—' if off is None else 'yes' if abs(off) < 1e-3 else f'NO ({off:+.2%})'
    rows.append(f'| {MEASURES[measure][0]} @{image_size} | {seconds} | {value} | '
                f'{doc or "—"} | {match} |')
  return '\n'.join(rows)


def report(results, args, torch, speed, tf_speed, loads):
  print(table(results, args.image_size))
  print(f'\ntorch {torch.__version__}, {torch.get_num_threads()} threads; this machine in '
        f'torch: 2048² matmul {speed["matmul_gflops"]:.0f} GFLOP/s, eager op '
        f'{speed["eager_op_ms"]:.3f} ms. Our benchmark\'s figure is TensorFlow\'s: '
        f'{tf_speed or "not importable here (complexity_speed.py prints it)"}')
  print('1/5/15-min load average before ' + ', after '.join(
      '/'.join(f'{x:.1f}' for x in load) for load in loads) + f' on {os.cpu_count()} cores')
  if max(load[0] for load in loads) > 2:  # the doc's quiet runs: ≤ 1.8
    # At load 7.5 κ_Θ @64 took 1.3 s on 1 thread and 15 s on 2: a thread spins at each
    # barrier while the other waits for a core, so CPU time inflates as much as wall.
    print('WARNING: the machine is loaded: these times (CPU time too, on more than one '
          'thread) are not comparable with quiet-machine ones')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--authors_dir', required=True, help='a checkout of VITA-Group/AsViT')
  parser.add_argument('--image_size', type=int, choices=(64, 224), default=64)
  parser.add_argument('--measures', default='length,curvature,ntk')
  parser.add_argument('--coords', type=int, default=None,
                      help='time L^E and κ on the first N coordinates, extrapolate to all')
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--json', default=None, help='write the results here')
  args = parser.parse_args()
  measures = args.measures.split(',')
  for m in measures:
    if m not in MEASURES:
      parser.error(f'--measures: {m!r} is not one of {",".join(MEASURES)}')
  if args.coords is not None and not 1 <= args.coords < 256:
    parser.error(f'--coords={args.coords}: from 1 to 255 (the seed has 256 features)')
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  authors = import_authors(args.authors_dir, torch)
  load_before, speed = os.getloadavg(), machine_speed(torch)
  results = {m: time_measure(authors, torch, m, args.image_size, args.coords) for m in measures}
  loads = (load_before, os.getloadavg())
  tf_speed = tensorflow_speed()
  report(results, args, torch, speed, tf_speed, loads)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'date': time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()),
                 'image_size': args.image_size, 'coords': args.coords,
                 'torch': torch.__version__, 'threads': torch.get_num_threads(),
                 'machine_speed_torch': speed, 'machine_speed_tensorflow': tf_speed,
                 'load_before': loads[0], 'load_after': loads[1], 'measures': results},
                f, indent=1)


if __name__ == '__main__':
  main()
