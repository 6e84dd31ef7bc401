"""Speed and memory of the complexity measures (issue 3), against the brute-force references.

For each topology (the official seed at C=32, depths 1,1,1,1, and As-ViT Large; 224 px,
10 curve points, 1 repeat, 16 NTK images) it times:
  * L^E and κ: one forward-mode pass (forward-over-forward for κ), cold (the first call on a
    new topology: what the search pays) and warm (a further repeat on the same network);
  * one plain forward pass of the same 10-image batch (eager and traced);
  * the per-coordinate reference (one reverse pass per feature, nested tapes for κ): timed on
    a few coordinates and extrapolated linearly to all F features (it is a loop, one
    coordinate costs the same as the next);
  * κ_Θ: the vectorised per-image gradients, against the authors' loop (one forward of the
    batch, then one reverse pass per image through it) and a loop of per-image forward and
    reverse passes (eager, and with a traced per-image step);
  * the peak resident memory of each measurement (each runs in its own process).
Then it prints a table with the ratios and writes its section of docs/benchmarks.md.

Per new network (issue 19; `--per_new_network`): what a search or a grow pays for every
topology, the public measure (`length_distortion`, `curvature`, `ntk_condition_number`, one
repeat, its defaults) called on a network not measured before in a process that has
measured another topology first (so TensorFlow's own start-up is not counted): build,
trace when traced, and measure (L^E's default goes unit by unit where it is traced, traces
kept across networks, so the warm-up's units serve the next); L^E also by `method='network'`
(the whole network, traced per network: the default before), κ_Θ also by `method='units'`.
Beside it the authors' PyTorch code timed on this CPU (`AUTHORS_SECONDS_BY_MACHINE`: issue
19's machine, or `--authors_times=epyc`), and their ratio.

  python benchmarks/complexity_speed.py            # the full run (As-ViT Large: long)
  python benchmarks/complexity_speed.py --quick    # the seed at 64 px; docs untouched
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _report  # pylint: disable=g-import-not-at-top

SEED = 'asvit_seed'
LARGE = 'asvit_large'
# The authors' PyTorch code per new network, eager on 2 threads (the seed at C=32, depths
# 1,1,1,1, 10 curve points, 16 NTK images, one repeat): seconds by (measure, image size), per
# machine it was timed on (`--authors_times`). 'issue19': the machine of issue 19's table.
# 'epyc': the 2-core "AMD EPYC" machine of 2026-12-02 (a 2048² float32 matmul at 79 GFLOP/s in
# TensorFlow), quiet, torch 2.13.0+cpu (docs/benchmarks.md, "The authors' code on the same
# machine"). 'epyc2': the same model of CPU on the evening of 2026-12-02, running faster
# (2048² matmul 123 GFLOP/s, eager op 0.063 ms against 0.25 ms: `machine_speed`), quiet.
AUTHORS_SECONDS_BY_MACHINE = {
    'issue19': {('length', 64): 7.17, ('ntk', 64): 0.51, ('curvature', 64): 14.8,
                ('length', 224): 289.0, ('ntk', 224): 19.9},
    'epyc': {('length', 64): 14.7, ('ntk', 64): 1.33, ('curvature', 64): 36.7,
             ('length', 224): 394.0, ('ntk', 224): 44.7},
    'epyc2': {('length', 64): 7.45, ('ntk', 64): 0.71, ('curvature', 64): 17.7,
              ('length', 224): 252.0, ('ntk', 224): 35.5},
}
NEW_NETWORK_TASKS = ('new_length', 'new_length_network', 'new_curvature', 'new_ntk',
                     'new_ntk_units')
# A topology measured first in each per-new-network process: not the measured one.
WARM_UP = '7,2,3|4,1,2|4,1,4|4,1,6|32'


def _peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # KiB on Linux


def _timed(fn, *args):
  start = time.perf_counter()
  out = fn(*args)
  if hasattr(out, 'numpy'):
    out.numpy()
  elif isinstance(out, dict):
    [t.numpy() for t in out.values()]
  elif isinstance(out, (list, tuple)):
    [t.numpy() for t in out if hasattr(t, 'numpy')]
  return time.perf_counter() - start, out


def worker(task: str, arch: str, image_size: int, num_points: int, batch_size: int,
           coords: int) -> dict:
  """One measurement in this process; returns seconds (and peak memory)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from asvit_tf.complexity import curves  # pylint: disable=g-import-not-at-top
  from asvit_tf.complexity import network  # pylint: disable=g-import-not-at-top
  from asvit_tf.complexity import ntk  # pylint: disable=g-import-not-at-top
  from asvit_tf.complexity import reference  # pylint: disable=g-import-not-at-top

  if task == 'speed':
    return {'speed': machine_speed()}
  if task in NEW_NETWORK_TASKS:
    return _new_network(task[len('new_'):], arch, image_size, num_points, batch_size)
  shape = (image_size, image_size, 3)
  factory = network.model_factory(arch)
  out = {}
  start = time.perf_counter()
  net = network.Network(factory, use_layer_norm=task.startswith('ntk'), image_shape=shape)
  net.reinitialise(0, 0)
  out['build'] = time.perf_counter() - start
  features = lambda x: net.model.features(x, training=True)
  u0, u1 = (tf.constant(u, tf.float32) for u in curves.input_curve(shape, 0))
  theta = tf.constant(curves.angles(num_points), tf.float32)
  if task in ('length_dual', 'length_dual_eager'):
    # The default for L^E on an As-ViT: the tangent pushed through by hand, on the curve's
    # distinct points (θ = 2π is θ = 0), traced once per network (its attention maps then
    # run group by group); or eagerly.
    from asvit_tf.complexity import dual  # pylint: disable=g-import-not-at-top
    distinct = tf.constant(curves.distinct_angles(curves.angles(num_points)), tf.float32)
    run = network.compile_mode(
        lambda: curves.point_products(dual.features_and_velocity(
            net.model, curves.curve_points(u0, u1, distinct),
            curves.curve_tangents(u0, u1, distinct))[1]),
        'eager' if task == 'length_dual_eager' else 'graph')
    out['cold'], products = _timed(run)
    out['warm'], _ = _timed(run)
    out['value'] = curves.metrics_from_products(
        {k: curves.with_period_end(v.numpy(), num_points) for k, v in products.items()}
    )['length']
  elif task in ('length', 'curvature', 'length_eager'):
    second = task == 'curvature'
    # As `curve_metrics` runs it: traced once per network by default, or eagerly.
    run = network.compile_mode(
        lambda: curves.point_products(*curves.derivatives(features, u0, u1, theta, second)[1:]),
        'eager' if task == 'length_eager' else 'graph')
    out['cold'], products = _timed(run)
    out['warm'], _ = _timed(run)
    out['value'] = curves.metrics_from_products(
        {k: v.numpy() for k, v in products.items()})[task.replace('_eager', '')]
  elif task == 'forward':
    x = curves.curve_points(u0, u1, theta)
    _timed(features, x)
    out['eager'], _ = _timed(features, x)
    traced = tf.function(features)
    _timed(traced, x)
    out['graph'], _ = _timed(traced, x)
  elif task in ('reference_length', 'reference_curvature'):
    second = task == 'reference_curvature'
    x = curves.curve_points(u0, u1, theta)
    out['features'] = int(features(x[:1]).shape[-1])
    # T(m) = t0 + m·c: time m and 2m coordinates, extrapolate to all F of them. Nested
    # tapes go one coordinate per forward (chunk=1): recording them all does not fit.
    ref = lambda m: reference.curve_derivatives(features, u0, u1, theta, second, range(m),
                                                chunk=1)
    t1, _ = _timed(ref, coords)
    t2, _ = _timed(ref, 2 * coords)
    per_coord = max(t2 - t1, 1e-9) / coords
    out.update(per_coordinate=per_coord, timed_coordinates=3 * coords,
               total=max(t1 - coords * per_coord, 0.0) + out['features'] * per_coord)
  elif task in ('ntk', 'ntk_taps'):
    weights = net.kernels()
    images = tf.constant(ntk.noise_images(batch_size, shape, 0, 0), tf.float32)
    if task == 'ntk_taps':   # the default on an As-ViT: one batched pass, tapped layers
      taps = ntk.TappedGradients(net.model)
      traced = tf.function(lambda: ntk.kernel_matrix(
          ntk.tapped_per_image_gradients(taps, weights, images, ntk.DEFAULT_CHUNK)))
    else:
      traced = tf.function(lambda: ntk.kernel_matrix(
          ntk.per_image_gradients(features, weights, images, ntk.DEFAULT_CHUNK)))
    out['cold'], _ = _timed(traced)   # trace + first run, as the measure does
    out['warm'], theta_fast = _timed(traced)
    out['value'] = ntk.condition_number(theta_fast.numpy())
  elif task == 'ntk_loop':
    weights = net.kernels()
    images = tf.constant(ntk.noise_images(batch_size, shape, 0, 0), tf.float32)
    out['authors'], _ = _timed(lambda: reference.authors_ntk(features, weights, images))
    out['eager'], _ = _timed(lambda: reference.per_image_gradient_loop(features, weights,
                                                                       images))

    @tf.function
    def step(x):
      with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(weights)
        total = tf.reduce_sum(features(x))
      return [g for g in tape.gradient(total, weights) if g is not None]
    step(images[:1])   # trace once; the loop below is then warm
    out['traced'], theta_loop = _timed(
        lambda: reference.per_image_gradient_loop(features, weights, images, step))
    out['value'] = ntk.condition_number(theta_loop)
  else:
    raise ValueError(f'unknown task {task!r}')
  out['peak_gb'] = _peak_rss_gb()
  return out


def _new_network(metric: str, arch: str, image_size: int, num_points: int,
                 batch_size: int) -> dict:
  """Seconds (wall and this process's CPU) of one public measure on a new network, after a
  first measure of `WARM_UP` in this process; then the same measure on a second new
  network of the topology ('again': with method='units', one whose every unit was traced
  before) and with 3 repeats on a third: (its time − the second's) / 2 is what a further
  repeat costs, the rest of the first the fixed cost of a new network (build, trace)."""
  from asvit_tf import complexity  # pylint: disable=g-import-not-at-top
  if metric in ('ntk', 'ntk_units'):
    method = 'units' if metric == 'ntk_units' else 'auto'
    measure = lambda a, r=1: complexity.ntk_condition_number(
        a, image_size=image_size, repeats=r, batch_size=batch_size, method=method)
  else:
    fn = complexity.curvature if metric == 'curvature' else complexity.length_distortion
    kwargs = {'method': 'network'} if metric == 'length_network' else {}
    measure = lambda a, r=1: fn(a, image_size=image_size, num_points=num_points, repeats=r,
                                **kwargs)
  measure(WARM_UP)
  wall, cpu = time.perf_counter(), time.process_time()
  result = measure(arch)
  new, new_cpu = time.perf_counter() - wall, time.process_time() - cpu
  wall = time.perf_counter()
  measure(arch)
  again = time.perf_counter() - wall
  wall = time.perf_counter()
  measure(arch, 3)
  further = max(0.0, (time.perf_counter() - wall - again) / 2)
  return {'new': new, 'new_cpu': new_cpu, 'again': again, 'further': further,
          'value': float(result.mean), 'peak_gb': _peak_rss_gb()}


def machine_speed() -> str:
  """This machine's speed in two figures, to tell which authors' times apply: a 2048²
  float32 matmul (GFLOP/s, TensorFlow's threads) and one small eager op (ms)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  a = tf.random.stateless_normal([2048, 2048], seed=[0, 0])
  tf.matmul(a, a).numpy()
  start = time.perf_counter()
  for _ in range(10):
    tf.matmul(a, a).numpy()
  gflops = 10 * 2 * 2048**3 / (time.perf_counter() - start) / 1e9
  x = tf.constant(1.0)
  start = time.perf_counter()
  for _ in range(2000):
    x = x + 1.0
  op_ms = (time.perf_counter() - start) / 2000 * 1e3
  return f'2048² matmul {gflops:.0f} GFLOP/s, eager op {op_ms:.3f} ms'


def authors_seconds_for(machine: str, json_files: str) -> dict:
  """The authors' seconds per new network by (measure, image size): `machine`'s, replaced by
  the wall times in `json_files` (benchmarks/authors_code_speed.py --json) where they have
  them."""
  seconds = dict(AUTHORS_SECONDS_BY_MACHINE[machine])
  for path in filter(None, json_files.split(',')):
    with open(path) as f:
      timed = json.load(f)
    for measure, got in timed['measures'].items():
      seconds[(measure, timed['image_size'])] = got['wall']
  return seconds


def new_network_rows(arch, image_size, r, authors_seconds) -> list:
  """Rows of the per-new-network table of one topology: ours, the authors', their ratio, and
  our further repeat (measured beside the new network, else the main table's warm column).
  `authors_seconds`: by (measure, image size), as `authors_seconds_for` gives them."""
  rows = []
  for label, metric, warm_task in (('L^E', 'length', 'length_dual'),
                                   ('L^E (whole network)', 'length_network', None),
                                   ('κ', 'curvature', 'curvature'),
                                   ('κ_Θ', 'ntk', 'ntk_taps'),
                                   ('κ_Θ (units)', 'ntk_units', None)):
    got = r.get(f'new_{metric}', {})
    new = got.get('new')
    authors = authors_seconds.get((metric.split('_')[0], image_size))
    cpu = '—' if got.get('new_cpu') is None else f'{got["new_cpu"]:.2f} s'
    further = got.get('further', r.get(warm_task, {}).get('warm') if warm_task else None)
    rows.append([arch, f'{label} @{image_size}', _s(authors), _s(new), cpu,
                 _x(authors, new), _s(got.get('again')), _x(authors, got.get('again')),
                 _s(further),
                 '—' if got.get('value') is None else f'{got["value"]:.6g}'])
  return rows


def run_worker(task, arch, args) -> dict:
  """Runs `worker` in a fresh process (own memory peak; an OOM kill is reported)."""
  cmd = [sys.executable, os.path.abspath(__file__), '--worker', task, '--arch', arch,
         '--image_size', str(args.image_size), '--num_points', str(args.num_points),
         '--batch_size', str(args.batch_size), '--coords', str(args.coords or 0)]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  start = time.perf_counter()
  out, proc = _report.worker_result(cmd, env)
  wall = time.perf_counter() - start
  if out is None:
    print(f'  {arch} {task}: failed ({_report.failure(proc)})', flush=True)
    return {'error': f'exit {proc.returncode}'}
  out['process'] = wall
  print(f'  {arch} {task}: {json.dumps(out)}', flush=True)
  return out


def _s(x):
  return '—' if x is None else (f'{x:.2f} s' if x < 100 else f'{x:.0f} s')


def _x(a, b):
  return '—' if a is None or b is None or b <= 0 else f'{a / b:.1f}×'


def summarise(arch, r) -> list:
  """Table rows of one topology."""
  g = lambda task, key: r.get(task, {}).get(key)
  fwd_e, fwd_g = g('forward', 'eager'), g('forward', 'graph')
  peak = lambda task: '—' if g(task, 'peak_gb') is None else f'{g(task, "peak_gb"):.2f} GB'
  vs_forward = lambda warm: f'{_x(warm, fwd_e)} eager / {_x(warm, fwd_g)} traced'
  rows = []
  # (row, task, reference): the default first (L^E by hand), then the accumulator's.
  for label, task, ref in (('L^E (by hand, traced, default)', 'length_dual', 'reference_length'),
                           ('L^E (by hand, eager)', 'length_dual_eager', 'reference_length'),
                           ('L^E (accumulator, eager)', 'length_eager', 'reference_length'),
                           ('L^E (accumulator, mode=graph)', 'length', 'reference_length'),
                           ('κ (graph, default)', 'curvature', 'reference_curvature')):
    warm, cold, ref_total = g(task, 'warm'), g(task, 'cold'), g(ref, 'total')
    ref_text = ('—' if ref_total is None else f'{_s(ref_total)} ({g(ref, "timed_coordinates")}'
                f' of {g(ref, "features")} coords timed)')
    rows.append([arch, label, _s(cold), _s(warm), ref_text, _x(ref_total, warm),
                 vs_forward(warm) if warm else '—', peak(task)])
  loop_a, loop_e = g('ntk_loop', 'authors'), g('ntk_loop', 'eager')
  loop_t = g('ntk_loop', 'traced')
  loops = (f'authors\' loop {_s(loop_a)}; per-image loop {_s(loop_e)} eager, {_s(loop_t)} '
           'traced') if loop_a else '—'
  for label, task in (('κ_Θ (16 images, taps, default)', 'ntk_taps'),
                      ('κ_Θ (16 images, vectorized_map)', 'ntk')):
    warm, cold = g(task, 'warm'), g(task, 'cold')
    ratios = (f'{_x(loop_a, warm)}; {_x(loop_e, warm)}, {_x(loop_t, warm)}'
              if loop_a and warm else '—')
    rows.append([arch, label, _s(cold), _s(warm), loops if warm else '—', ratios, '—',
                 peak(task)])
  rows.append([arch, 'plain forward (10 images)', '—',
               f'{_s(fwd_e)} eager, {_s(fwd_g)} traced', '—', '—', '1×', peak('forward')])
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true',
                      help='the seed only, at 64 px, 2 coordinates; docs untouched')
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--num_points', type=int, default=10)
  parser.add_argument('--batch_size', type=int, default=16)
  parser.add_argument('--coords', type=int, default=None,
                      help='coordinates the reference is timed on, then twice as many '
                      '(default 4, 1 for As-ViT Large)')
  parser.add_argument('--archs', default=None, help='comma-separated, default seed,large')
  parser.add_argument('--note', default='', help='a line added to the docs section')
  parser.add_argument('--no_write', action='store_true')
  parser.add_argument('--skip', default='',
                      help='comma-separated ARCH:TASK measurements not to run')
  parser.add_argument('--cache', default=None,
                      help='JSON file of finished measurements: reused, so an interrupted '
                      'run resumes where it stopped')
  parser.add_argument('--per_new_network', action='store_true',
                      help='only the per-new-network table (issue 19) of each topology')
  parser.add_argument('--authors_times', default='issue19',
                      choices=sorted(AUTHORS_SECONDS_BY_MACHINE),
                      help="whose machine's times of the authors' code the ratios use")
  parser.add_argument('--authors_json', default='',
                      help="comma-separated JSON files of benchmarks/authors_code_speed.py: "
                      "the authors' code timed in the same minutes (overrides --authors_times "
                      'for the measures and sizes they hold)')
  parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
  parser.add_argument('--arch', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    out = worker(args.worker, args.arch, args.image_size, args.num_points, args.batch_size,
                 args.coords)
    _report.print_result(out)
    return
  if args.quick:
    args.image_size = 64 if args.image_size == 224 else args.image_size
    args.coords = args.coords or 2
    args.archs = args.archs or SEED
    args.no_write = True
  if args.per_new_network:
    args.no_write = True   # the section holds the full table
  archs = (args.archs or f'{SEED},{LARGE}').split(',')
  tasks = ('length_dual', 'length_dual_eager', 'length', 'length_eager', 'curvature',
           'forward', 'reference_length', 'reference_curvature', 'ntk_taps', 'ntk', 'ntk_loop')
  tasks = NEW_NETWORK_TASKS if args.per_new_network else tasks + NEW_NETWORK_TASKS
  load = os.getloadavg()[0]
  speed = run_worker('speed', '-', args).get('speed', 'not measured')
  start = time.perf_counter()
  rows, new_rows = [], []
  cache = {}
  if args.cache and os.path.exists(args.cache):
    with open(args.cache) as f:
      cache = json.load(f)
  coords = args.coords
  for arch in archs:
    # The reference is timed on few coordinates of As-ViT Large (one costs minutes).
    args.coords = coords or (1 if arch == LARGE else 4)
    results = {}
    for task in tasks:
      key = f'{arch}|{task}|{args.image_size}|{args.num_points}|{args.batch_size}'
      if f'{arch}:{task}' in args.skip.split(','):
        print(f'  {arch} {task}: skipped', flush=True)
        results[task] = {}
        continue
      if key in cache:
        print(f'  {arch} {task}: cached', flush=True)
      else:
        cache[key] = run_worker(task, arch, args)
        if args.cache and 'error' not in cache[key]:
          with open(args.cache, 'w') as f:
            json.dump({k: v for k, v in cache.items() if 'error' not in v}, f, indent=1)
      results[task] = cache[key]
    if not args.per_new_network:
      rows += summarise(arch, results)
    new_rows += new_network_rows(arch, args.image_size, results,
                                 authors_seconds_for(args.authors_times, args.authors_json))
  load = max(load, os.getloadavg()[0])
  header = ['topology', 'measure', 'cold (1st call)', 'warm (1 repeat)', 'reference',
            'reference / warm', 'vs plain forward', 'peak RSS']
  new_table = _report.markdown_table(
      ['topology', 'measure', "authors' code", 'ours per new network', 'its CPU time',
       "authors' / ours", 'a 2nd network of it', "authors' / 2nd", 'ours per further repeat',
       'value'], new_rows)
  table = new_table if args.per_new_network else (
      _report.markdown_table(header, rows) + '\n\nPer new network (issue 19):\n\n' + new_table)
  print(table)
  print(f'total {time.perf_counter() - start:.0f} s, load average up to {load:.1f}; '
        f'this machine: {speed}')
  if args.no_write:
    return
  body = (
      f'{args.image_size}×{args.image_size}, {args.num_points} curve points, 1 repeat, '
      f'{args.batch_size} NTK images, float32. The defaults on an As-ViT: L^E with the '
      'tangent pushed through the layers by hand (traced once per network, the 9 distinct '
      'points of the closed curve), κ traced once per network (forward-over-forward '
      'accumulators), κ_Θ from tapped layers (one batched pass per chunk of 4 images, traced '
      'once per network); in both the by-hand L^E and κ_Θ the attention maps run group by '
      'group (`asvit_tf.complexity.attention`). The other rows are the general paths: L^E '
      'by `ForwardAccumulator` (all 10 points), κ_Θ by `tf.vectorized_map`. *Cold* is the '
      'first call on a new network in a fresh process (per-op JVP functions are traced '
      'then; later topologies in the same process pay less), *warm* a further repeat. The '
      'per-coordinate reference (eager, like the authors\' PyTorch loop) is timed on m and '
      '2m coordinates (m = 4, 1 for Large) and extrapolated to all F. Peak RSS is that of '
      'the process running the one measurement (TensorFlow itself included). *Per new '
      'network*: the public measure with its defaults, one repeat, on a network new to a '
      'process that measured another topology first (what a search pays per topology), '
      'beside the authors\' PyTorch code timed on this CPU (issue 19).\n\n'
      f'Load average during the run up to {load:.1f} on {os.cpu_count()} cores (other jobs '
      'were running): absolute times are pessimistic and noisy; ratios less so. This '
      f'machine: {speed}.\n'
      + (f'\n{args.note}\n' if args.note else '') + '\n' + table)
  _report.write_section('complexity_speed', 'Complexity measures: speed and memory', body)


if __name__ == '__main__':
  main()
