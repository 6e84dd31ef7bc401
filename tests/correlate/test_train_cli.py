"""`asvit correlate --train` end to end at tiny sizes (3 topologies and a reference, a few
steps at width 8 and 16 px): killed with SIGKILL mid-run and rerun, it writes what one
uninterrupted run writes; a second run into the same directory is refused."""
import json
import os
import subprocess
import sys

import pytest

from tests.correlate import _subprocess as child

from asvit_tf.search import lock

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS = ['--train', '--n=3', '--reference=paper=8,2,3|4,1,2|4,1,4|4,1,6|32',
         '--train_width=8', '--train_image_size=16', '--train_steps=4',
         '--train_warmup_steps=1', '--train_batch_size=16', '--metrics=length,ntk',
         '--image_size=32', '--repeats=1', '--num_points=4', '--batch_size=4', '--n_boot=50',
         '--num_groups=1', '--noprogress']


def _cmd(out):
  return [sys.executable, '-m', 'asvit_tf.cli.main', 'correlate', f'--out_dir={out}', *FLAGS]




def _without_seconds(path):
  """The lines of a JSONL file, in order, without their timings."""
  with open(path) as f:
    return [{k: v for k, v in json.loads(line).items() if k != 'seconds'} for line in f]


@pytest.mark.slow
def test_killed_and_resumed_training_gives_the_uninterrupted_outputs(tmp_path):
  whole, resumed = str(tmp_path / 'whole'), str(tmp_path / 'resumed')
  r = subprocess.run(_cmd(whole), cwd=REPO, env=child.env(), capture_output=True, text=True,
                     timeout=1500)
  assert r.returncode == 0, r.stderr
  assert '## Search and size against random sampling' in r.stdout  # the markdown is printed

  path = os.path.join(resumed, 'trained.jsonl')
  killed_at = child.kill_after_first_line(_cmd(resumed), path, REPO)
  assert 1 <= killed_at < 4, 'the run was not killed in the middle of its training'
  with lock.RunLock(resumed):  # as a live run holds it
    second = subprocess.run(_cmd(resumed), cwd=REPO, env=child.env(), capture_output=True,
                            text=True, timeout=300)
  assert second.returncode != 0 and 'is in use by another run' in second.stderr, second.stderr
  assert 'or use another --out_dir' in second.stderr, second.stderr
  assert len(second.stderr.strip().splitlines()) == 1, second.stderr
  assert child.lines(path) == killed_at

  r = subprocess.run(_cmd(resumed), cwd=REPO, env=child.env(), capture_output=True, text=True,
                     timeout=1500)
  assert r.returncode == 0, r.stderr
  assert _without_seconds(os.path.join(resumed, 'trained.jsonl')) == \
      _without_seconds(os.path.join(whole, 'trained.jsonl'))
  # Measuring workers append lines as networks finish, in any order (docs/proxies.md).
  by_key = lambda path: sorted(_without_seconds(path), key=lambda r: r['key'])
  assert by_key(os.path.join(resumed, 'measures.jsonl')) == \
      by_key(os.path.join(whole, 'measures.jsonl'))
  for name in ('correlation.json', 'correlation.md', 'train_settings.json'):
    with open(os.path.join(whole, name)) as a, open(os.path.join(resumed, name)) as b:
      assert a.read() == b.read(), name
  result = json.load(open(os.path.join(whole, 'correlation.json')))
  assert result['n'] == 3 and result['training']['train_width'] == 8
  assert [ref['name'] for ref in result['references']] == ['paper']
  assert {p['by'] for p in result['picks']} == {'length', 'ntk', 'combined', 'params', 'macs'}
  trained = _without_seconds(os.path.join(whole, 'trained.jsonl'))
  assert len(trained) == 4 and trained[-1]['topology'] == '8,2,3|4,1,2|4,1,4|4,1,6|32'
  assert all(0 <= t['accuracy'] <= 1 for t in trained)

  other = subprocess.run(_cmd(resumed)[:-1] + ['--train_steps=5', '--noprogress'], cwd=REPO,
                         env=child.env(), capture_output=True, text=True, timeout=300)
  assert other.returncode != 0 and 'steps: 4 there, 5 now' in other.stderr, other.stderr
