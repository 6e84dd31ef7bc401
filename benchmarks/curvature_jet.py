"""CPU time of curvature by the hand-written jet against forward-over-forward, per network.

One measurement per process: a warm-up measure of a small network in the same path and mode
(so TensorFlow's start-up and first-use costs are not counted), then the measured network,
timed by this process's CPU clock (`time.process_time`: user + sys of all its threads) and
the wall clock. `--path=old` switches the jet off (`jet.supports` answers False), which is
the code path before it: forward-over-forward accumulators.

  # κ of the As-ViT seed at 64 px, 1 repeat, as complexity_speed.py --per_new_network:
  python benchmarks/curvature_jet.py --space=asvit --network=asvit_seed --image_size=64 \\
      --repeats=1 --metrics=curvature --path=jet
  # correlate's measurement of one PiT (L^E, κ, L^E_κ, κ_Θ, 5 repeats, 224 px):
  python benchmarks/curvature_jet.py --space=pit --network=pit:16,2,1-6-6,2-2-2 --path=old
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The warm-up networks: small, and not among the measured ones.
_WARM_UP = {'asvit': '7,2,3|4,1,2|4,1,4|4,1,6|32', 'pit': 'pit:8,2,1-1-1,1-2-2'}


def _network(space: str, key: str, pit_size):
  """A PiT from its key 'pit:base_dim,mlp_ratio,depths,heads' (as correlate names it);
  an As-ViT's topology string or variant name as it is."""
  if space != 'pit':
    return key
  base, ratio, depth, heads = key[len('pit:'):].split(',')
  ratio = float(ratio)
  return pit_size.PitArch(int(base), int(ratio) if ratio.is_integer() else ratio,
                          [int(d) for d in depth.split('-')], [int(h) for h in heads.split('-')])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--space', choices=('asvit', 'pit'), default='pit')
  parser.add_argument('--network', required=True, help='topology, variant or pit:... key')
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--metrics', default='length,curvature,curvature_length,ntk',
                      help='comma-separated: correlate\'s measures (ntk: κ_Θ, 16 images)')
  parser.add_argument('--path', choices=('jet', 'old'), default='jet')
  parser.add_argument('--mode', default='auto')
  args = parser.parse_args()

  from asvit_tf.complexity import jet  # pylint: disable=g-import-not-at-top
  from asvit_tf.correlate import measure  # pylint: disable=g-import-not-at-top
  from asvit_tf.models import pit_size  # pylint: disable=g-import-not-at-top
  if args.path == 'old':
    jet.supports = lambda model: False

  metrics = args.metrics.split(',')
  # The curve measures, then κ_Θ: two calls, as `measure_network` makes them (each builds
  # its own network), so that each part's CPU time is its own.
  parts = [p for p in ([m for m in metrics if m != 'ntk'], ['ntk'] if 'ntk' in metrics else [])
           if p]

  def run(network, image_size):
    cpu, values = {}, {}
    for part in parts:
      settings = measure.Settings(args.space, metrics=part, image_size=image_size,
                                  repeats=args.repeats)
      start = time.process_time()
      record = measure.measure_network(settings, _network(args.space, network, pit_size),
                                       mode=args.mode)
      cpu['ntk' if part == ['ntk'] else 'curves'] = round(time.process_time() - start, 3)
      values.update(record['values'])
    return cpu, values

  warm_size = 32 if args.space == 'pit' else args.image_size
  warm_start = time.process_time()
  run(_WARM_UP[args.space], warm_size)
  warm_cpu = time.process_time() - warm_start
  wall, cpu = time.perf_counter(), time.process_time()
  part_cpu, values = run(args.network, args.image_size)
  out = {'network': args.network, 'path': args.path, 'mode': args.mode,
         'repeats': args.repeats, 'cpu': round(time.process_time() - cpu, 3),
         'wall': round(time.perf_counter() - wall, 3), 'warm_up_cpu': round(warm_cpu, 3),
         'part_cpu': part_cpu, 'values': values,
         'peak_gb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
         'load': os.getloadavg()[0]}
  print('RESULT ' + json.dumps(out), flush=True)


if __name__ == '__main__':
  main()
