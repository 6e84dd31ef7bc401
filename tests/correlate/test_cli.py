"""`asvit correlate` end to end with the real measures on three tiny PiTs, killed and
resumed: the same outputs as one uninterrupted run, measured in this process or in two
workers."""
import json
import os
import subprocess
import sys

import pytest

from tests.correlate import _subprocess as child

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARCHS = [{'base_dim': 8, 'mlp_ratio': 2, 'depth': [1, 1, 1], 'num_heads': [1, 2, 2]},
         {'base_dim': 8, 'mlp_ratio': 4, 'depth': [1, 2, 1], 'num_heads': [1, 1, 2]},
         {'base_dim': 16, 'mlp_ratio': 2, 'depth': [1, 1, 2], 'num_heads': [1, 2, 4]}]
FLAGS = ['--space=pit', '--image_size=32', '--repeats=1', '--num_points=4', '--batch_size=4',
         '--n_boot=50', '--num_groups=1', '--noprogress']


def _cmd(table, out, workers):
  return [sys.executable, '-m', 'asvit_tf.cli.main', 'correlate', f'--table={table}',
          f'--out_dir={out}', f'--workers={workers}', *FLAGS]


def _measured(out):
  with open(os.path.join(out, 'measures.jsonl')) as f:
    records = [json.loads(l) for l in f]
  return {r['key']: {k: v for k, v in r.items() if k != 'seconds'} for r in records}


@pytest.mark.slow
def test_killed_and_resumed_run_gives_the_uninterrupted_outputs(tmp_path):
  # In 2 workers (the default on this 2-core machine); the in-process path appends and
  # resumes through the same lines (tests/correlate/test_workers.py compares the two).
  workers = 2
  table = tmp_path / 'table.jsonl'
  with open(table, 'w') as f:
    for i, a in enumerate(ARCHS):
      f.write(json.dumps({'arch': a, 'c100_base_acc': 50.0 + i, 'c100_kd_acc': 60.0 - i}) + '\n')
  whole, resumed = str(tmp_path / 'whole'), str(tmp_path / 'resumed')
  r = subprocess.run(_cmd(table, whole, workers), cwd=REPO, env=child.env(),
                     capture_output=True, text=True, timeout=1200)
  assert r.returncode == 0, r.stderr
  assert '| κ_Θ | − |' in r.stdout  # the markdown table is printed

  path = os.path.join(resumed, 'measures.jsonl')
  killed_at = child.kill_after_first_line(_cmd(table, resumed, workers), path, REPO)
  assert 1 <= killed_at < 3, 'the run was not killed in the middle'
  r = subprocess.run(_cmd(table, resumed, workers), cwd=REPO, env=child.env(),
                     capture_output=True, text=True, timeout=1200)
  assert r.returncode == 0, r.stderr
  assert child.lines(path) == 3
  assert _measured(resumed) == _measured(whole)
  for name in ('correlation.json', 'correlation.md'):
    with open(os.path.join(whole, name)) as a, open(os.path.join(resumed, name)) as b:
      assert a.read() == b.read(), name
  result = json.load(open(os.path.join(whole, 'correlation.json')))
  assert result['n'] == 3 and set(result['correlations']) == {'c100_base_acc', 'c100_kd_acc'}
  for rec in result['networks']:
    assert rec['length'] > 0 and rec['ntk'] >= 1 and rec['params'] > 0 and rec['macs'] > 0
  assert os.path.exists(os.path.join(whole, 'scatter_c100_kd_acc.png'))
