"""The `asvit search` and `asvit grow` commands: a tiny real run, and bad input."""
import json
import os
import subprocess
import sys

import pytest

from asvit_tf import arch as arch_lib
from asvit_tf.models import size
from asvit_tf.search import grow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _asvit(*args, timeout=600):
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  return subprocess.run([sys.executable, '-m', 'asvit_tf.cli.main', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_tiny_search_then_grow_with_the_real_metrics(tmp_path):
  out = str(tmp_path / 'run')
  r = _asvit('search', '--steps=2', '--image_size=16', '--repeats=1', '--seed=1',
             '--noprogress', f'--output_dir={out}')
  assert r.returncode == 0, r.stderr
  seed = open(os.path.join(out, 'seed.txt')).read().strip()
  assert f'seed topology: {seed}' in r.stdout
  records = [json.loads(l) for l in open(os.path.join(out, 'search.jsonl'))]
  assert len(records) == 2 and all(rec['ntk'] and rec['length'] for rec in records)
  # Let only the cheapest candidate through: the grow is one step of one measurement.
  topo = arch_lib.Topology.parse(seed)
  cands = grow.candidates(8, (1, 1, 1, 1))
  params = sorted(size.estimate_params(c.real(topo)) for c in cands)
  r = _asvit('grow', f'--arch={out}', '--image_size=16', '--repeats=1', '--noprogress',
             f'--target_params={params[0]}', f'--max_params={params[0]}', f'--output_dir={out}')
  assert r.returncode == 0, r.stderr
  rows = [json.loads(l) for l in open(os.path.join(out, 'grow.jsonl'))]
  assert [row['step'] for row in rows] == [0, 1]
  assert len(rows[1]['candidates']) == 1
  assert 'reached target_params' in r.stdout
  assert os.path.exists(os.path.join(out, 'scaling.png'))
  # the same command again: reported, not recomputed; another config: refused in one line
  r = _asvit('grow', f'--arch={out}', '--image_size=16', '--repeats=1', '--noprogress',
             f'--target_params={params[0]}', f'--max_params={params[0]}', f'--output_dir={out}')
  assert r.returncode == 0 and 'step  1' in r.stdout
  r = _asvit('search', '--steps=3', '--image_size=16', '--repeats=1', '--seed=1',
             f'--output_dir={out}')
  assert r.returncode != 0
  assert r.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'different configuration (steps=2 there, 3 now)' in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize('args, message', [
    (('grow', '--arch=8,2,3|4,1,2|4,1,4|4,1,6', '--output_dir=/tmp/x'), 'has 4 "|"-separated'),
    (('grow', '--arch=asvit_huge', '--output_dir=/tmp/x'), 'unknown variant'),
    (('grow', '--arch=@/nonexistent/seed.txt', '--output_dir=/tmp/x'), 'does not exist'),
    (('grow', '--arch=asvit_seed', '--output_dir=/proc/asvit'), 'not writable'),
    (('search', '--reward=params', '--data=/nonexistent/images', '--reward=ntk',
      '--output_dir=OUT'), '--data /nonexistent/images: no such folder'),
    (('search', '--image_size=2', '--output_dir=OUT'), 'at least the tokenization stride 4'),
    (('search',), '--output_dir is required'),
    (('search', '--samples_per_step=0', '--output_dir=OUT'),
     '--samples_per_step must be an integer >= 1, got 0'),
    (('search', '--strategy=evolution', '--samples_per_step=4', '--output_dir=OUT'),
     '--samples_per_step applies to --strategy=reinforce only'),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path, args, message):
  args = [a.replace('OUT', str(tmp_path)) for a in args]
  r = _asvit(*args, timeout=120)
  assert r.returncode != 0
  lines = [l for l in r.stderr.strip().splitlines()
           if not l.startswith(('WARNING', 'E0000', 'I0000'))]
  assert lines[-1].startswith('error: ') and message in lines[-1], r.stderr
