"""Seconds per search step and per grow step, both presets; projected paper search + grow.

    python benchmarks/search_speed.py [--presets quick,paper] [--search_steps 3]
                                      [--grow_candidates 4] [--workers 0] [--write]
                                      [--search_run DIR] [--grow_run DIR]
                                      [--path_steps 1,5,8,12] [--path_candidates 4]

A search step is timed by running the real search for a few steps with `--workers`
processes, as `asvit search` does (its first step also pays the workers' start and
TensorFlow's warm-up and is reported apart). A grow step is 16 (or fewer) candidates, each
one measurement of L^E and κ_Θ on the proxy width: a few candidates of the first step are
timed, in one process and together in the worker pool as `asvit grow` measures them, and
multiplied. Wall and CPU seconds of the single process are both reported. Each
measurement's CPU time is also split into a fixed cost (building the network and tracing
its tf.functions, paid once per topology) and the cost per repeat, from 1 and 3 repeats.
The projection multiplies by 500 search steps (an upper bound:
the search reuses the measurement of a topology it samples again) and by the number of
measurements of a whole scaling run, counted by replaying the grow with stand-in metrics
that pick a random candidate (the real path depends on the metrics).

`--search_run` and `--grow_run` add what real runs of `asvit search` and `asvit grow` logged
(their JSONL records: seconds per step, which search steps re-used a measurement): the
summed step times, and the share of search steps that measured a new topology, which then
replaces the upper bound in the projection. `--grow_run` takes several runs, comma-separated;
the real search + grow total pairs the search with the grow of the seed it found when one of
them is (else with the first).

First-step candidates are the smallest of any scaling run, so the projection above is a lower
bound. With `--grow_run`, the paper preset is also projected along that grow's recorded path
(the paired run): `--path_candidates` candidates of each of `--path_steps` (default: four
steps spread over the run) are re-measured, together in the worker pool, and each step of
the run is charged its number of candidates times the time per candidate interpolated
between the sampled steps. This is the figure to hold against the 2 h target.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from asvit_tf import arch as arch_lib  # pylint: disable=g-import-not-at-top
from asvit_tf.search import grow  # pylint: disable=g-import-not-at-top
from asvit_tf.search import parallel  # pylint: disable=g-import-not-at-top
from asvit_tf.search import reinforce  # pylint: disable=g-import-not-at-top
from asvit_tf.search.measure import Measurement, make_measure  # pylint: disable=g-import-not-at-top
from benchmarks import _report  # pylint: disable=g-import-not-at-top


class Clock:
  """Wall and CPU (all threads of this process) seconds since the last `lap`."""

  def __init__(self):
    self.wall, self.cpu = time.perf_counter(), time.process_time()

  def lap(self):
    wall, cpu = time.perf_counter(), time.process_time()
    out = (wall - self.wall, cpu - self.cpu)
    self.wall, self.cpu = wall, cpu
    return out


def time_search(preset: str, steps: int, workers: int):
  """[(wall, cpu)] of each search step; the first also pays TensorFlow's warm-up."""
  config = reinforce.SearchConfig(**{**reinforce.PRESETS[preset], 'steps': steps})
  laps = []
  clock = Clock()
  with tempfile.TemporaryDirectory() as out:
    reinforce.run_search(config, out, progress=False, tensorboard=False, plot_every=0,
                         on_step=lambda record: laps.append(clock.lap()), workers=workers)
  return laps


def first_step_proxies(count: int):
  """A warm-up topology and `count` candidates of the first grow step, at proxy width."""
  seed = arch_lib.Topology.parse(arch_lib.SEED)
  return [c.proxy(seed) for c in grow.candidates(8, (1, 1, 1, 1))[:count + 1]]


def time_pool(preset: str, count: int, workers: int):
  """Wall seconds per candidate when `count` candidates of the first grow step are measured
  together by `workers` processes (after a warm-up measurement that starts them)."""
  return time_path(preset, {1: first_step_proxies(count)[1:]}, workers)[1]


def time_candidates(preset: str, count: int):
  """[(wall, cpu)] of `count` candidate measurements of the first grow step (after a
  warm-up measurement), and the CPU seconds of the same candidate at 1 and at 3 repeats."""
  p = grow.PRESETS[preset]
  warm_up, *cands = first_step_proxies(count)
  full = make_measure(('length', 'ntk'), p['image_size'], p['repeats'])
  full(warm_up, 0)  # warm-up: TensorFlow's first trace, not a candidate's cost
  clock = Clock()
  laps = []
  for c in cands:
    full(c, 1)
    laps.append(clock.lap())
  cpu = {}
  for repeats in (1, 3):
    make_measure(('length', 'ntk'), p['image_size'], repeats)(cands[0], 2)
    cpu[repeats] = clock.lap()[1]
  return laps, cpu


def load_records(directory: str, kind: str):
  """The JSONL records of a real run (`directory`: its output dir or the log itself)."""
  log = directory
  if os.path.isdir(directory):
    log = os.path.join(directory, reinforce.LOG_FILE if kind == 'search' else grow.LOG_FILE)
  if not os.path.exists(log):
    raise SystemExit(f'error: no {os.path.basename(log)} in {directory}')
  with open(log) as f:
    records = [json.loads(line) for line in f if line.strip()]
  if not records:
    raise SystemExit(f'error: {log} has no records')
  return records


def spread_steps(last: int, count: int = 4):
  """`count` grow steps spread over 1..last, first and last included."""
  if last < 1:
    return []
  count = max(1, min(count, last))
  if count == 1:
    return [last]
  return sorted({round(1 + i * (last - 1) / (count - 1)) for i in range(count)})


def path_samples(records, steps, count: int):
  """{step: proxy topologies of `count` of its candidates, spread over its candidate list}
  of a recorded grow; a ValueError names a step the run does not have."""
  by_step = {r['step']: r for r in records}
  out = {}
  for step in steps:
    if step not in by_step or not by_step[step]['candidates']:
      raise ValueError(f'the grow run has no candidates at step {step} '
                       f'(steps 1..{max(by_step)})')
    cands = by_step[step]['candidates']
    picks = sorted({round(i * (len(cands) - 1) / max(1, count - 1))
                    for i in range(min(count, len(cands)))})
    out[step] = []
    for i in picks:
      real = arch_lib.Topology.parse(cands[i]['arch'])
      out[step].append(real.replace(width=real.width // grow.WIDTH_FACTOR))
  return out


def interpolate(samples, step: int) -> float:
  """Seconds per candidate at `step`, linear between the sampled steps, flat beyond them."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  xs = sorted(samples)
  return float(np.interp(step, xs, [samples[x] for x in xs]))


def step_measurements(record) -> int:
  """Topologies a grow step measured: its candidates (step 0: the start alone)."""
  return 1 + len(record['candidates']) if record['step'] == 0 else len(record['candidates'])


def path_projection(records, seconds_per_candidate):
  """Seconds of the recorded grow re-run at the sampled speeds: each step's measurements
  (step 0: the start alone) times the interpolated seconds per candidate."""
  return sum(step_measurements(r) * interpolate(seconds_per_candidate, max(1, r['step']))
             for r in records)


def time_path(preset: str, samples, workers: int):
  """{step: wall seconds per candidate} measuring each step's sample together in the pool
  (after a warm-up measurement that starts the workers)."""
  p = grow.PRESETS[preset]
  out = {}
  with parallel.PoolMeasure(('length', 'ntk'), workers, p['image_size'],
                            p['repeats']) as pool:
    list(pool.measure([(first_step_proxies(0)[0], 0)]))
    for step, topologies in sorted(samples.items()):
      start = time.perf_counter()
      list(pool.measure([(t, 1) for t in topologies]))
      out[step] = (time.perf_counter() - start) / len(topologies)
      print(f'grow step {step}: {out[step]:.1f} s per candidate '
            f'({len(topologies)} measured, {workers} workers)', flush=True)
  return out


def grow_measurements(target=80_000_000, max_params=110_000_000, max_steps=0, runs=3):
  """(steps, measurements) averaged over `runs` scaling runs that pick a random candidate
  each step (stand-in metrics: the real path depends on L^E and κ_Θ; always taking the
  smallest candidate would need thousands of steps, so there is no useful upper bound)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  counts = []
  for run in range(runs):
    rng = np.random.default_rng(run)

    def measure(topo, seed, rng=rng):
      del topo, seed
      v = rng.random()
      return Measurement(length=v, ntk=-v)
    config = grow.GrowConfig(target_params=target, max_params=max_params,
                             max_steps=max_steps, image_size=32, repeats=1)
    with tempfile.TemporaryDirectory() as d:
      result = grow.run_grow(config, d, measure=measure, progress=False)
    counts.append((len(result.records) - 1,
                   1 + sum(len(r['candidates']) for r in result.records)))
  return tuple(round(statistics.mean(c[i] for c in counts)) for i in range(2))


def read_run(directory: str, kind: str):
  """Figures of a real run from its JSONL log (`directory` is the run's output dir or the
  log itself): a dict with 'steps', 'measured' (topologies measured), 'seconds' (summed
  step wall time), 'records' (the log) and, for a search, 'cached' (steps that
  re-used a measurement) and 'result' (the derived topology after the last step)."""
  records = load_records(directory, kind)
  out = {'steps': len(records), 'seconds': sum(r['seconds'] for r in records),
         'records': records}
  if kind == 'search':
    out['cached'] = sum(bool(r['cached']) for r in records)
    out['measured'] = out['steps'] - out['cached']
    out['result'] = records[-1]['derived']
  else:
    out['measured'] = sum(step_measurements(r) for r in records)
    out['result'] = records[-1]['arch']
    out['seed'] = arch_lib.Topology.parse(records[0]['arch']).seed_string
  return out


def real_total(search, grows):
  """The grow that goes with `search` (the one grown from the seed it found, else the first)
  and the minutes of both."""
  paired = next((g for g in grows if g['seed'] == search['result']), grows[0])
  return paired, (search['seconds'] + paired['seconds']) / 60


def _mean(laps, i):
  return statistics.mean(l[i] for l in laps)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--presets', default='quick,paper')
  parser.add_argument('--search_steps', type=int, default=3)
  parser.add_argument('--grow_candidates', type=int, default=4)
  parser.add_argument('--workers', type=int, default=0,
                      help='measuring processes (0: one per core, as the commands)')
  parser.add_argument('--search_run', default='',
                      help='output dir (or search.jsonl) of a real `asvit search` run')
  parser.add_argument('--grow_run', default='',
                      help='output dirs (or grow.jsonl files) of real `asvit grow` runs, '
                      'comma-separated')
  parser.add_argument('--path_steps', default='',
                      help='grow steps of the paired --grow_run to re-measure for the '
                      'projection along its path, comma-separated (default: four spread)')
  parser.add_argument('--path_candidates', type=int, default=4,
                      help='candidates re-measured per sampled step')
  parser.add_argument('--write', action='store_true', help='update docs/benchmarks.md')
  args = parser.parse_args()
  if args.path_candidates < 1:
    raise SystemExit(f'error: --path_candidates must be >= 1, got {args.path_candidates}')
  search_run = read_run(args.search_run, 'search') if args.search_run else None
  grow_runs = [read_run(d, 'grow') for d in args.grow_run.split(',') if d]
  runs = ([('search', search_run)] if search_run else []) + [
      (f'grow of `{g["seed"]}`'.replace('|', '\\|'), g) for g in grow_runs]
  paired, samples = None, {}
  if grow_runs and 'paper' in args.presets.split(','):
    # Checked before anything is timed: a bad --path_steps fails at once.
    paired = real_total(search_run, grow_runs)[0] if search_run else grow_runs[0]
    try:
      steps = ([int(x) for x in args.path_steps.split(',') if x] if args.path_steps
               else spread_steps(max(r['step'] for r in paired['records'])))
      samples = path_samples(paired['records'], steps, args.path_candidates)
    except ValueError as e:
      raise SystemExit(f'error: --path_steps={args.path_steps!r}: {e}') from None
  workers = args.workers or parallel.default_workers()
  load = os.getloadavg()[0]
  rows, totals, splits = [], [], []
  paper_step, path_lines = None, []
  for preset in [p for p in args.presets.split(',') if p]:
    laps = time_search(preset, args.search_steps, workers)
    later = laps[1:] or laps
    cands, cpu = time_candidates(preset, args.grow_candidates)
    pooled = time_pool(preset, args.grow_candidates, workers)
    g, s = grow.PRESETS[preset], reinforce.PRESETS[preset]
    steps, measurements = grow_measurements(g['target_params'], g['max_params'], g['max_steps'])
    per_repeat = max(0.0, (cpu[3] - cpu[1]) / 2)
    fixed = max(0.0, cpu[1] - per_repeat)
    share = fixed / max(1e-9, fixed + g['repeats'] * per_repeat)
    splits.append(f'{preset}: {fixed:.1f} s fixed + {g["repeats"]} × {per_repeat:.1f} s '
                  f'(fixed share {100 * share:.0f} %)')
    step_wall = _mean(later, 0)
    cand_wall, cand_cpu = _mean(cands, 0), _mean(cands, 1)
    rows.append((preset, f'{s["image_size"]}, {s["repeats"]}',
                 f'{laps[0][0]:.0f}', f'{step_wall:.1f}',
                 f'{cand_wall:.1f} / {cand_cpu:.1f}', f'{pooled:.1f}',
                 f'{fixed:.1f} + {per_repeat:.1f}/repeat', f'{16 * pooled:.0f}',
                 f'{steps} steps, {measurements} measurements'))
    print(rows[-1], flush=True)
    n, credit = s['steps'], '(no credit for re-sampled topologies)'
    if preset == 'paper' and search_run:
      real = search_run
      n = round(s['steps'] * real['measured'] / real['steps'])
      credit = (f'(the {real["measured"]} of {real["steps"]} steps of the real search that '
                f'measured a new topology, scaled to {s["steps"]})')
    if preset == 'paper':
      paper_step = (n, step_wall, credit)
    for name, cand in (('one process', cand_wall), (f'{workers} workers', pooled)):
      step = step_wall
      totals.append(f'- **{preset}**, grow in {name}, first-step candidates (a lower bound): '
                    f'search {n} × {step:.1f} s ≈ '
                    f'{n * step / 60:.0f} min {credit} + grow '
                    f'{measurements} × {cand:.1f} s ≈ {measurements * cand / 60:.0f} min = '
                    f'**{(n * step + measurements * cand) / 60:.0f} min**.')
      print(totals[-1], flush=True)
  if paper_step and samples:
    records = paired['records']
    per_candidate = time_path('paper', samples, workers)
    n, step, credit = paper_step
    grow_s = path_projection(records, per_candidate)
    seed = paired['seed'].replace('|', '\\|')
    path_lines = [
        '', f'Paper preset along the recorded path of the grow of `{seed}` ({workers} '
        f'workers; {args.path_candidates} candidates re-measured at each of steps '
        f'{", ".join(map(str, sorted(per_candidate)))}):', '',
        _report.markdown_table(('grow step', 'candidates in the run', 's per candidate'),
                               [(r['step'], len(r['candidates']),
                                 f'{interpolate(per_candidate, max(1, r["step"])):.1f}'
                                 + ('' if r['step'] in per_candidate else ' (interpolated)'))
                                for r in records if r['step'] >= 1]), '',
        f'- **paper**, grow in {workers} workers along that path: search {n} × {step:.1f} s ≈ '
        f'{n * step / 60:.0f} min {credit} + grow {paired["measured"]} measurements ≈ '
        f'{grow_s / 60:.0f} min (the run itself logged {paired["seconds"] / 60:.0f} min) = '
        f'**{(n * step + grow_s) / 60:.0f} min** (target: 120 min).']
    print('\n'.join(path_lines), flush=True)
  header = ('preset', 'image, repeats', 'search step 0 (s)',
            f'search step (s, {workers} workers)', 'grow candidate, one process (s, wall / CPU)',
            f'grow candidate, {workers} workers (s)', 'candidate CPU split (s)',
            f'grow step of 16, {workers} workers (s)', 'whole grow (typical)')
  body = [_report.markdown_table(header, rows), '', 'Projected search + grow (wall):',
          ''] + totals + path_lines
  if runs:
    run_rows = [(kind, r['steps'], r['measured'], f'{r["seconds"] / 60:.1f}',
                 f'{r["seconds"] / max(1, r["measured"]):.1f}',
                 '`' + r['result'].replace('|', '\\|') + '`')
                for kind, r in runs]
    body += ['', 'Real runs (summed step wall times from their logs):', '',
             _report.markdown_table(('run', 'steps', 'topologies measured', 'minutes',
                                     's per measured topology', 'result'), run_rows)]
    print(body[-1])
    if search_run and grow_runs:
      paired, total = real_total(search_run, grow_runs)
      own = paired['seed'] == search_run['result']
      body += ['', f'Real search + grow ({"of the seed it found" if own else "of another seed"}'
               f', `{paired["seed"]}`): **{total:.0f} min** (target: 120 min).'.replace(
                   '|', '\\|')]
      print(body[-1])
  body += ['', f'Load average at the start: {load:.1f} on {os.cpu_count()} cores'
           + (' (other jobs shared the CPU: wall times are inflated).' if load > 0.5 * (
               os.cpu_count() or 1) else ' (a quiet machine).'), '',
           'What dominates, per measured topology (CPU, grow candidate): '
           + '; '.join(splits) + '. The fixed part is building the Keras model twice (with '
           'and without LayerNorm) and tracing the tf.functions of `asvit_tf.complexity`, '
           'whatever the image size; each repeat executes one 16-image NTK (per-image '
           'gradients) and one curve of 9 distinct points, which at 224×224 is most of the cost. A '
           'search step measures at C=32, a grow candidate at the proxy width C/4.']
  if args.write:
    _report.write_section('search_speed', 'Search and grow speed (`asvit search`, '
                          '`asvit grow`)', '\n'.join(body))


if __name__ == '__main__':
  main()
