"""benchmarks/residual_merge_accuracy.py: pairs two `asvit correlate --train` runs."""
import json
import os

import pytest

from asvit_tf.errors import UserInputError
from benchmarks import residual_merge_accuracy as bench

BUDGET = {'seed': 0, 'train_steps': 300, 'train_width': 32}


def _run(root, name, merge, accuracies, measures=None, **budget):
  run = os.path.join(root, name)
  os.makedirs(run)
  with open(os.path.join(run, 'train_settings.json'), 'w') as f:
    json.dump({**BUDGET, 'merge': merge, **budget}, f)
  with open(os.path.join(run, 'trained.jsonl'), 'w') as f:
    for key, acc in accuracies.items():
      f.write(json.dumps({'key': key, 'topology': key, 'trained': key + '+',
                          'accuracy': acc}) + '\n')
  if measures:
    with open(os.path.join(run, 'measures.jsonl'), 'w') as f:
      for key, (length, ntk) in measures.items():
        f.write(json.dumps({'key': key + '+', 'length': length, 'ntk': ntk}) + '\n')
  return run


def test_pairs_by_topology_and_summarises(tmp_path):
  plain = _run(tmp_path, 'plain', 'plain', {'a': 0.90, 'b': 0.95, 'c': 0.80, 'x': 0.5},
               {'a': (0.1, 2.0), 'b': (0.2, 4.0)})
  res = _run(tmp_path, 'res', 'residual', {'b': 0.96, 'a': 0.92, 'c': 0.79},
             {'a': (0.11, 1.0), 'b': (0.2, 4.0)})
  pairs = bench.load_pairs(plain, res)
  assert [p[0] for p in pairs] == ['b', 'a', 'c']  # the residual run's order, x unpaired
  text = bench.report(pairs)
  rows = {cells[0]: cells[1:] for cells in
          ([c.strip() for c in line.strip('|').split(' | ')] for line in text.splitlines()
           if line.startswith('| `'))}
  assert rows['`b`'] == ['0.950', '0.960', '+0.010', '0.2', '0.2', '4', '4']
  assert rows['`c`'] == ['0.800', '0.790', '-0.010', '—', '—', '—', '—']  # not measured
  assert 'mean +0.0067' in text
  assert 'residual better on 2, worse on 1, equal on 0' in text
  assert 'L^E residual / plain over 2 topologies: median 1.050, range 1.000–1.100' in text
  assert 'κ_Θ residual / plain over 2 topologies: median 0.750, range 0.500–1.000' in text


def test_refuses_other_budgets_and_swapped_merges(tmp_path):
  plain = _run(tmp_path, 'plain', 'plain', {'a': 0.9})
  other = _run(tmp_path, 'other', 'residual', {'a': 0.9}, train_steps=100)
  with pytest.raises(UserInputError, match='train_steps'):
    bench.load_pairs(plain, other)
  with pytest.raises(UserInputError, match='plain-merge run'):
    bench.load_pairs(other, plain)
  with pytest.raises(UserInputError, match='not an `asvit correlate --train` run'):
    bench.load_pairs(plain, str(tmp_path / 'missing'))
