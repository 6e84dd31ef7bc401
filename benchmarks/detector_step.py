"""One training step of As-ViT Large Cascade Mask R-CNN at 1024x1024, batch 1, on this CPU:
peak memory and seconds, under a window policy of the backbone; and, for both policies, the
bytes of the attention maps, computed from the shapes.

The step is Model Garden's `MaskRCNNTask.train_step` (forward, losses, gradients, AdamW
update) in a `tf.function`, float32, on the nuclei tiles of `asvit_tf.garden.data.
make_nuclei_coco` scaled up to 1024x1024 by the parser (the data only fills the input; its
content does not change the cost). The config is `cascadercnn_asvit_coco` (= the TPU YAML)
with only the data, batch 1, float32 and no scale jitter changed; `--remat` turns on the
backbone's gradient checkpointing (`task.model.backbone.asvit.remat`, off in the config).

The step runs in a child process that the parent watches: the parent samples the child's
resident memory (VmRSS) every 0.2 s, kills it once it passes `--limit_gb` and then reports
"needs more than" that. Peak RSS is the process's (TensorFlow and the model included).

Writes its section of docs/benchmarks.md through benchmarks/_report.py.
Usage: python benchmarks/detector_step.py [--policy fixed] [--remat] [--limit_gb 10]
       [--steps 2] [--data_dir /tmp/asvit_nuclei_coco] [--no_write]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _report  # noqa: E402

IMAGE = 1024
GB = 1e9


def attention_map_bytes(arch: str, image: int, window_policy: str, dtype_bytes: int = 4):
  """[(stage, windows, heads, tokens per window, bytes of one block's attention map)], and
  the total over all blocks: softmax(q kᵀ) for one image, [windows, heads, n, n]."""
  from asvit_tf import arch as arch_lib
  from asvit_tf.models import size
  topo = arch_lib.as_topology(arch)
  rows = []
  total = 0
  windows = size.stage_windows(topo, image, window_policy=window_policy)
  for i, ((r, c), (wh, ww)) in enumerate(zip(size.stage_grids(image), windows)):
    count = math.ceil(r / wh) * math.ceil(c / ww)
    n = wh * ww
    one = count * topo.stage_heads[i] * n * n * dtype_bytes
    rows.append((i + 1, count, topo.stage_heads[i], n, one, topo.depths[i]))
    total += one * topo.depths[i]
  return rows, total


def _child(args):
  """Builds the detector and runs `args.steps` training steps; prints one JSON line each."""
  import tensorflow as tf
  from official.core import task_factory
  from asvit_tf.garden import detection
  from asvit_tf.garden import registry_imports  # noqa: F401  (the Mask R-CNN task)
  pattern = os.path.join(args.data_dir, 'tfrecord', 'train-*')
  params = detection.detection_config(overrides={
      'runtime': {'mixed_precision_dtype': 'float32'},
      'task': {'model': {'backbone': {'asvit': {'window_policy': args.policy,
                                                'remat': args.remat}},
                         'input_size': [args.image, args.image, 3]},
               'train_data': {'input_path': pattern, 'global_batch_size': 1,
                              'dtype': 'float32', 'shuffle_buffer_size': 4,
                              'parser': {'aug_scale_min': 1.0, 'aug_scale_max': 1.0}}}})
  start = time.time()
  task = task_factory.get_task(params.task)
  model = task.build_model()
  optimizer = task.create_optimizer(params.trainer.optimizer_config, params.runtime)
  metrics = task.build_metrics(training=True)
  inputs = iter(task.build_inputs(params.task.train_data))
  print(json.dumps({'event': 'built', 'seconds': time.time() - start,
                    'params': int(model.count_params())}), flush=True)

  @tf.function
  def step(batch):
    return task.train_step(batch, model, optimizer, metrics=metrics)

  for i in range(args.steps):
    batch = next(inputs)
    start = time.time()
    logs = step(batch)
    loss = float(logs[task.loss])
    print(json.dumps({'event': 'step', 'step': i + 1, 'seconds': time.time() - start,
                      'loss': loss}), flush=True)


def _key(result):
  """What a run measured: (image, policy, remat); runs cached before `--remat` had none."""
  return result['image'], result['policy'], result.get('remat', False)


def _peak_text(r) -> str:
  return f'more than {r["limit_gb"]:g} GB' if r['killed'] else f'{r["peak_gb"]:.1f} GB'


def _memory_paragraph(arch: str, results) -> str:
  """Where the memory of the `fixed` runs goes, in words, from the cached runs."""
  fixed = [r for r in results if r['policy'] == 'fixed']
  plain = {r['image']: r for r in fixed if not r.get('remat')}
  remat = {r['image']: r for r in fixed if r.get('remat')}
  parts = []
  if plain:
    peaks = ', '.join(f'{n}²: {_peak_text(plain[n])} (maps '
                      f'{attention_map_bytes(arch, n, "fixed")[1] / GB:.2f} GB)'
                      for n in sorted(plain))
    parts.append(f'Without remat the `fixed` step peaks at {peaks}.')
  if remat:
    rows = ', '.join(f'{n}²: {_peak_text(r)}' +
                     (f', 2nd step {r["steps_s"][-1]:.0f} s' if len(r['steps_s']) > 1 else '')
                     for n, r in sorted(remat.items()))
    parts.append('With `remat` each block keeps only its input and its attention residual '
                 'sum for the backward pass, which recomputes the rest (qkv, attention logits '
                 "and maps, the MLP's hidden layer) one block at a time, at the cost of one more "
                 f'forward pass of the backbone: {rows}.')
  both = [n for n in sorted(remat) if n in plain and not remat[n]['killed']]
  if both:
    saved = ', '.join(
        f'{n}²: ' + (f'{plain[n]["peak_gb"]:.1f} → {remat[n]["peak_gb"]:.1f} GB'
                     if not plain[n]['killed'] else
                     f'more than {plain[n]["limit_gb"]:g} → {remat[n]["peak_gb"]:.1f} GB')
        for n in both)
    parts.append(f'Remat of the backbone blocks alone lowers the peak ({saved}): most of '
                 "what grows with the input is the blocks' activations kept for the backward "
                 'pass. What stays includes TensorFlow itself, the 134 M weights with their '
                 'gradients and two AdamW slots (2.1 GB), the traced graph, the FPN and the '
                 'Cascade Mask R-CNN heads, and one block being recomputed.')
    fits = sorted(n for n in remat if not remat[n]['killed'])
    if len(fits) > 1:
      a, b = remat[fits[0]], remat[fits[-1]]
      parts.append(f'With remat the peak still grows by {b["peak_gb"] - a["peak_gb"]:.1f} GB '
                   f'from {fits[0]}² to {fits[-1]}².')
  if parts:
    parts.append('The losses differ between runs because neither the drop-path masks nor the '
                 'data order are seeded here; that remat gives the same loss and gradients is '
                 'tested (tests/layers/test_blocks.py, tests/garden/test_detection.py).')
  return ' '.join(parts)


def _rss_bytes(pid: int) -> int:
  try:
    with open(f'/proc/{pid}/status') as f:
      for line in f:
        if line.startswith('VmRSS:'):
          return int(line.split()[1]) * 1024
  except FileNotFoundError:
    pass
  return 0


def run_watched(args):
  """Runs the child; returns (events, peak RSS bytes, killed for memory, return code)."""
  cmd = [sys.executable, os.path.abspath(__file__), '--child', f'--policy={args.policy}',
         f'--steps={args.steps}', f'--data_dir={args.data_dir}', f'--image={args.image}']
  if args.remat:
    cmd.append('--remat')
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
  lines = []
  reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
  reader.start()
  peak, killed, started = 0, False, time.time()
  while proc.poll() is None:
    peak = max(peak, _rss_bytes(proc.pid))
    if peak > args.limit_gb * GB:
      proc.kill()
      killed = True
      break
    time.sleep(0.2)
  proc.wait()
  args.seconds = time.time() - started
  reader.join(timeout=10)
  events = []
  for line in lines:
    if line.startswith('{'):
      events.append(json.loads(line))
      print(line.strip(), flush=True)
  return events, peak, killed, proc.returncode


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--policy', default='fixed', choices=['splits', 'fixed'])
  parser.add_argument('--limit_gb', type=float, default=10.0)
  parser.add_argument('--steps', type=int, default=2)
  parser.add_argument('--data_dir', default='/tmp/asvit_nuclei_coco')
  parser.add_argument('--image', type=int, default=IMAGE, help='square input side (px)')
  parser.add_argument('--remat', action='store_true',
                      help="the backbone's gradient checkpointing (backbone.asvit.remat)")
  parser.add_argument('--cache', default='',
                      help='JSON file of earlier measurements (image, policy): the report '
                      'lists them all; this run adds or replaces its own')
  parser.add_argument('--no_write', action='store_true')
  parser.add_argument('--report_only', action='store_true',
                      help='run nothing: rewrite the section from --cache')
  parser.add_argument('--child', action='store_true')
  args = parser.parse_args(argv)
  if args.child:
    _child(args)
    return
  if args.report_only:
    if not args.cache or not os.path.exists(args.cache):
      raise SystemExit('--report_only needs an existing --cache')
  elif not os.path.exists(os.path.join(args.data_dir, 'tfrecord')):
    from asvit_tf.garden.data import make_nuclei_coco
    make_nuclei_coco.make_nuclei_coco(args.data_dir)
  result = None
  if not args.report_only:
    load_before = os.getloadavg()[0]
    events, peak, killed, code = run_watched(args)
    steps = [e for e in events if e['event'] == 'step']
    built = next((e for e in events if e['event'] == 'built'), None)
    result = {'image': args.image, 'policy': args.policy, 'remat': args.remat,
              'limit_gb': args.limit_gb,
              'peak_gb': peak / GB, 'killed': killed, 'code': code, 'load': load_before,
              'built_s': built['seconds'] if built else None,
              'params': built['params'] if built else None,
              'steps_s': [e['seconds'] for e in steps],
              'loss': steps[-1]['loss'] if steps else None, 'seconds': args.seconds}
  results = []
  if args.cache and os.path.exists(args.cache):
    with open(args.cache) as f:
      results = [r for r in json.load(f) if result is None or _key(r) != _key(result)]
  results = sorted(results + ([result] if result else []),
                   key=lambda r: (-r['image'], r['policy'], r.get('remat', False)))
  if args.cache and result:
    with open(args.cache, 'w') as f:
      json.dump(results, f, indent=1)

  arch = 'asvit_large'
  maps = {p: attention_map_bytes(arch, IMAGE, p) for p in ('splits', 'fixed')}
  rows = []
  for policy, (stages, total) in maps.items():
    for stage, count, heads, n, one, depth in stages:
      side = int(math.isqrt(n))
      rows.append([policy, f'stage {stage}', f'{count} × {side}×{side}', heads,
                   f'{one / GB:.3f}', depth, f'{one * depth / GB:.2f}'])
    rows.append([policy, '**all blocks**', '', '', '', '', f'**{total / GB:.2f}**'])
  map_table = _report.markdown_table(
      ['policy', 'stage', 'windows × tokens', 'heads', 'one map (GB)', 'blocks',
       'maps of the stage (GB)'], rows)

  measured = []
  for r in results:
    if r['killed']:
      outcome = f'**needs more than {r["limit_gb"]:g} GB** (stopped there'
      if r.get('seconds') and r['built_s'] is not None:
        outcome += f', about {r["seconds"] - r["built_s"]:.0f} s after the model was built'
      outcome += ')'
    elif r['code'] != 0 or not r['steps_s']:
      outcome = f'failed (exit {r["code"]}) after {len(r["steps_s"])} step(s)'
    else:
      outcome = f'loss {r["loss"]:.3f}'
    peak_text = f'> {r["limit_gb"]:g}' if r['killed'] else f'{r["peak_gb"]:.2f}'
    measured.append([f'{r["image"]}²', r['policy'], 'on' if r.get('remat') else 'off',
                     f'{r["built_s"]:.0f}' if r['built_s'] is not None else '—',
                     ', '.join(f'{t:.0f}' for t in r['steps_s']) or '—', peak_text,
                     f'{r["limit_gb"]:g}',
                     f'{r["load"]:.1f}', outcome])
  measured_table = _report.markdown_table(
      ['input', 'policy', 'remat', 'build (s)', 'steps (s; 1st traces)', 'peak RSS (GB)',
       'limit (GB)', 'load avg at start', 'result'], measured)
  not_maps = _memory_paragraph(arch, results)
  cache = os.path.relpath(args.cache, _report.REPO) if args.cache else '(none)'
  splits_total = maps['splits'][1]
  fixed_total = maps['fixed'][1]
  body = f"""One training step (Model Garden's `MaskRCNNTask.train_step`: forward, losses,
gradients, AdamW update, in a `tf.function`) of As-ViT Large Cascade Mask R-CNN at
{IMAGE}×{IMAGE} (and smaller inputs, to see how it scales), batch 1, float32, on this 2-core
CPU, config `cascadercnn_asvit_coco` (the TPU YAML: 134.30 M params) with the window policy
shown; nuclei tiles scaled to the input size. Each step ran in a child process whose resident
memory was sampled every 0.2 s and which was stopped past the limit (the machine's 24 GB are
shared by several jobs). Other jobs were running (load averages below, on 2 cores): the
seconds are pessimistic. Each row is one run of `python benchmarks/detector_step.py --image N
[--remat] --limit_gb L --cache {cache}` (2 steps; L at most the memory `free` showed
available minus 1.5 GB); the runs are kept in that file. `remat` on is the backbone's
gradient checkpointing, `task.model.backbone.asvit.remat: true` (off in the config).

{measured_table}

Attention maps softmax(q·kᵀ) of one image, float32, from the shapes (each block's map is kept
for the backward pass, and the logits and the gradient have the same size again while a
block is differentiated):

{map_table}

Under `splits` the maps alone take {splits_total / GB:.1f} GB ({splits_total / fixed_total:.0f}× the
`fixed` ones): one stage-1 map is {maps['splits'][0][0][4] / GB:.1f} GB, so a training step
needs well over {splits_total / GB:.0f} GB, more than this machine or a TPU core holds, and was
not run; with `remat` it would keep fewer maps, but differentiating one stage-1 block still
holds its logits, its map and their gradients at once, at least
{3 * maps['splits'][0][0][4] / GB:.0f} GB. Under `fixed` they take {fixed_total / GB:.1f} GB.

{not_maps}
"""
  print(body)
  if not args.no_write:
    _report.write_section('detector_step', 'Detector training step: memory and time at '
                          '1024×1024', body)


if __name__ == '__main__':
  main(sys.argv[1:])
