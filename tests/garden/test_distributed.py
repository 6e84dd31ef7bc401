"""A few training steps under MirroredStrategy (2 logical CPUs) and MultiWorkerMirroredStrategy
(2 worker processes on 127.0.0.1) agree on the loss with one device and the same global batch.

Every run is a subprocess (`_distributed_run.py`): logical devices must be configured before
TensorFlow initialises them, and the workers need processes of their own. The 4 processes run
side by side; the run includes a re-tokenization switch (stride 8 -> 4 at step 2), so the
re-traced loops are checked under each strategy too. All start from one saved initialisation.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.garden._distributed_run import write_init_checkpoint
from tests.garden._training import REPO, asvit_env, free_port

TIMEOUT = 600


def _start(strategy, data_dir, init_ckpt, model_dir, out_json, log, **env):
  cmd = [sys.executable, '-m', 'tests.garden._distributed_run', strategy, str(data_dir),
         init_ckpt, str(model_dir), str(out_json)]
  return subprocess.Popen(cmd, cwd=REPO, env=asvit_env(**env), stdout=log,
                          stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_strategies_agree_on_the_loss(mnist_dir, tmp_path):
  init_ckpt = write_init_checkpoint(mnist_dir, tmp_path / 'init' / 'ckpt')
  ports = [free_port(), free_port()]
  workers = [f'127.0.0.1:{p}' for p in ports]
  runs = {'single': ('one_device', {}), 'mirrored': ('mirrored', {})}
  for i in range(2):
    tf_config = {'cluster': {'worker': workers}, 'task': {'type': 'worker', 'index': i}}
    runs[f'worker{i}'] = ('multi_worker_mirrored', {'TF_CONFIG': json.dumps(tf_config)})
  procs = {}
  try:
    for name, (strategy, env) in runs.items():
      model_dir = tmp_path / ('mwms' if name.startswith('worker') else name)
      log = open(tmp_path / f'{name}.log', 'w')
      procs[name] = (_start(strategy, mnist_dir, init_ckpt, model_dir,
                            tmp_path / f'{name}.json', log,
                            **env), log)
    for name, (proc, log) in procs.items():
      proc.wait(timeout=TIMEOUT)
      log.close()
  finally:
    for proc, _ in procs.values():
      if proc.poll() is None:
        proc.kill()
  results = {}
  for name, (proc, _) in procs.items():
    text = (tmp_path / f'{name}.log').read_text()
    assert proc.returncode == 0, f'{name} failed:\n{text[-3000:]}'
    results[name] = json.loads((tmp_path / f'{name}.json').read_text())

  assert results['single']['replicas'] == 1
  assert results['mirrored']['replicas'] == 2
  assert results['worker0']['replicas'] == results['worker1']['replicas'] == 2
  single = np.array(results['single']['losses'])
  assert len(single) == 4 and np.isfinite(single).all()
  assert abs(single[-1] - single[0]) > 1e-3  # the weights did change
  for name in ('mirrored', 'worker0', 'worker1'):
    assert results[name]['tokenization'] == [4, 1]
    # Step 1 sees identical weights and data; later steps differ only by summation order.
    np.testing.assert_allclose(results[name]['losses'], single, rtol=1e-4, err_msg=name)
  np.testing.assert_allclose(results['worker0']['losses'], results['worker1']['losses'],
                             rtol=1e-6)
