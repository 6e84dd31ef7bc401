"""benchmarks/retokenization_accuracy.py: the equal-time comparison on hand-made runs, the
settings' overrides, the refusal of another run's results, and (slow) both settings trained at
a tiny size, then a rerun that trains nothing."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from asvit_tf.errors import UserInputError
from benchmarks import retokenization_accuracy as study

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = {'train_steps': 600, 'config_sha256': 'abc', 'params_override': ''}


def _run(setting, seed, points):
  """A result as train_one saves it; points are (step, top1, train_cpu_s)."""
  pts = [{'step': s, 'top1': a, 'train_cpu_s': t, 'train_wall_s': 2 * t, 'cpu_s': t + 1,
          'wall_s': 2 * t + 2} for s, a, t in points]
  return dict(KEY, setting=setting, seed=seed, final_top1=pts[-1]['top1'],
              final_step=pts[-1]['step'], points=pts, train_cpu_s=pts[-1]['train_cpu_s'],
              train_wall_s=pts[-1]['train_wall_s'], eval_cpu_s=3.0, cpu_s=pts[-1]['cpu_s'],
              wall_s=pts[-1]['wall_s'], load_avg=[1.0, 2.0], tensorflow='2.20.0', losses=[])


RESULTS = [
    _run('schedule', 0, [(80, 0.5, 10), (160, 0.8, 20), (240, 0.9, 40)]),
    _run('fixed_stride4', 0, [(80, 0.6, 25), (160, 0.85, 50), (240, 0.95, 75)]),
    _run('schedule', 1, [(80, 0.4, 12), (160, 0.7, 22), (240, 0.92, 42)]),
    _run('fixed_stride4', 1, [(80, 0.7, 45), (160, 0.9, 60), (240, 0.93, 80)]),
]


def test_the_fixed_run_is_read_at_the_schedules_total_training_time():
  rows = study.compare(RESULTS, 'train_cpu_s')
  assert [r['seed'] for r in rows] == [0, 1]
  # Seed 0: the schedule trained 40 s; by then the fixed run had evaluated at 25 s (step 80).
  assert rows[0]['budget'] == 40 and rows[0]['fixed_top1_at_budget'] == 0.6
  assert rows[0]['fixed_step_at_budget'] == 80
  # The fixed runs first reached the schedule's final top-1 (0.9, 0.92) at 75 s and 80 s.
  assert rows[0]['fixed_time_to_schedule_top1'] == 75
  assert rows[1]['fixed_time_to_schedule_top1'] == 80
  # Seed 1: no fixed evaluation within the schedule's 42 s.
  assert rows[1]['fixed_top1_at_budget'] is None and rows[1]['fixed_step_at_budget'] is None
  wall = study.compare(RESULTS, 'train_wall_s')
  assert wall[0]['budget'] == 80 and wall[0]['fixed_top1_at_budget'] == 0.6


def test_report_has_the_means_the_seeds_and_the_comparison():
  text = study.report(RESULTS, [0, 1])
  assert 'Seeds 0, 1; 600 steps per run' in text.splitlines()[0]
  rows = [[c.strip() for c in line.strip('|').split('|')] for line in text.splitlines()
          if line.startswith('| ')]
  assert ['**schedule**', 'mean ± sd (n=2)', '0.910 ± 0.014', '41 ± 1'] == rows[1][:4]
  assert ['fixed_stride4', '1', '0.930', '80', '160', '3', '81', '162', '1.0-2.0'] in rows
  # The CPU comparison: seed 0's fixed run had 0.6 (step 80) within the schedule's 40 s, seed
  # 1's none; the mean says over how many seeds it is taken.
  assert ['0', '0.900', '40', '0.600 (80)', '0.950', '75', '75'] in rows
  assert ['1', '0.920', '42', 'none yet', '0.930', '80', '80'] in rows
  assert ['mean ± sd', '0.910 ± 0.014', '41 ± 1', '0.600 (1 of 2)', '0.940 ± 0.014', '78 ± 4',
          '78 ± 4'] in rows


def test_fixed_stride4_drops_the_schedule_whatever_the_override_says():
  override = "{task: {model: {backbone: {asvit: {retokenization: [{start_step: 0, stride: 8}]}}}}}"
  fixed = study.setting_override('fixed_stride4', '/d', 40, override)
  assert fixed['task']['model']['backbone']['asvit']['retokenization'] == []
  assert fixed['task']['train_data']['input_path'] == '/d/train*'
  assert fixed['trainer']['optimizer_config']['learning_rate']['cosine']['decay_steps'] == 40
  schedule = study.setting_override('schedule', '/d', 40, override)
  assert schedule['task']['model']['backbone']['asvit']['retokenization'][0]['stride'] == 8
  with pytest.raises(UserInputError, match="unknown setting 'stride2'; one of schedule"):
    study.setting_override('stride2', '/d', 40)


def test_a_saved_run_of_other_settings_is_refused(tmp_path):
  study.write_json(str(tmp_path / 'runs' / 'schedule_seed0.json'), RESULTS[0])
  assert study.load_finished(str(tmp_path), 'schedule_seed0', KEY)['final_top1'] == 0.9
  assert study.load_finished(str(tmp_path), 'schedule_seed1', KEY) is None
  with pytest.raises(UserInputError, match='train_steps: saved 600, now 300'):
    study.load_finished(str(tmp_path), 'schedule_seed0', dict(KEY, train_steps=300))


TINY = {'task': {'model': {'backbone': {'asvit': {
    'arch': '8,2,3,1|4,1,2,1|4,1,4,1|4,1,6,1|16,8',
    'retokenization': [{'start_step': 0, 'stride': 8, 'dilation': 1},
                       {'start_step': 2, 'stride': 4, 'dilation': 1}]}}},
    'train_data': {'global_batch_size': 8, 'shuffle_buffer_size': 16},
    'validation_data': {'global_batch_size': 8}},
    'trainer': {'steps_per_loop': 2, 'summary_interval': 2, 'checkpoint_interval': 2,
                'validation_interval': 2, 'validation_steps': 2,
                'optimizer_config': {'warmup': {'linear': {'warmup_steps': 1}}}}}


def _study(tmp_path, data_dir):
  cmd = [sys.executable, 'benchmarks/retokenization_accuracy.py', f'--out_dir={tmp_path}',
         f'--data_dir={data_dir}', '--seeds=0', '--train_steps=4', '--nowrite',
         '--params_override=' + yaml.safe_dump(TINY, default_flow_style=True, width=10**6)]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
  assert done.returncode == 0, done.stderr[-3000:]
  return done


@pytest.mark.slow
def test_both_settings_train_and_a_rerun_trains_nothing(tmp_path):
  # pylint: disable-next=g-import-not-at-top
  from asvit_tf.garden.data import make_mnist_tfrecords as mnist
  data_dir = tmp_path / 'mnist'
  mnist.make_mnist_tfrecords(str(data_dir), val_per_class=4, shards=2, limit_per_class=20)
  first = _study(tmp_path, data_dir)
  saved = {}
  for setting in study.SETTINGS:
    path = tmp_path / 'runs' / f'{setting}_seed0.json'
    saved[setting] = path.read_text()
    result = json.loads(saved[setting])
    assert [p['step'] for p in result['points']] == [2, 4]
    assert 0 <= result['final_top1'] <= 1 and result['final_step'] == 4
    for clock in ('train_cpu_s', 'train_wall_s', 'eval_cpu_s', 'cpu_s', 'wall_s'):
      assert result[clock] > 0, clock
    assert result['points'][-1]['train_cpu_s'] <= result['train_cpu_s'] < result['cpu_s']
    assert result['points'][0]['train_cpu_s'] < result['points'][1]['train_cpu_s']
  rows = [[c.strip() for c in line.strip('|').split('|')] for line in first.stdout.splitlines()
          if line.startswith('| ')]
  assert [r[:2] for r in rows[1:3]] == [['**schedule**', 'mean ± sd (n=1)'],
                                        ['**fixed_stride4**', 'mean ± sd (n=1)']]
  assert first.stdout == (tmp_path / 'report.md').read_text() + '\n'
  second = _study(tmp_path, data_dir)
  assert '2 of 2 runs finished earlier, skipped' in second.stderr
  assert 'training schedule_seed0' not in second.stderr
  for setting in study.SETTINGS:
    assert (tmp_path / 'runs' / f'{setting}_seed0.json').read_text() == saved[setting]
  assert second.stdout == first.stdout
