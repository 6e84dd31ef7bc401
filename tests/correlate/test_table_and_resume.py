"""Ground-truth tables (bad input is one clear line) and the resumable measuring loop, with
a hand-made measure in place of the real ones (the real ones: test_cli.py)."""
import json
import os
import subprocess
import sys

import pytest

from asvit_tf import correlate
from asvit_tf.correlate import measure
from asvit_tf.correlate import report
from asvit_tf.correlate import table
from asvit_tf.models import pit_size

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARCHS = [{'base_dim': 8, 'mlp_ratio': 2, 'depth': [1, 1, 1], 'num_heads': [1, 2, 2]},
         {'base_dim': 8, 'mlp_ratio': 4, 'depth': [1, 2, 1], 'num_heads': [1, 1, 2]},
         {'base_dim': 16, 'mlp_ratio': 2, 'depth': [1, 1, 2], 'num_heads': [1, 2, 4]}]


def _write(path, records):
  with open(path, 'w') as f:
    for r in records:
      f.write(json.dumps(r) + '\n')
  return str(path)


def _asvit(*args):
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  return subprocess.run([sys.executable, '-m', 'asvit_tf.cli.main', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def test_the_shipped_table_reads_as_100_pit_rows_with_two_columns():
  rows = table.read_table(correlate.PIT_C100, 'pit')
  assert len(rows) == 100 and len({r.key for r in rows}) == 100
  assert set(rows[0].accuracy) == {'c100_base_acc', 'c100_kd_acc'}
  assert rows[0].network == pit_size.PitArch(16, 6, (2, 8, 4), (2, 4, 4))
  assert rows[0].accuracy['c100_base_acc'] == 68.33


def test_asvit_table_and_given_measures(tmp_path):
  path = _write(tmp_path / 't.jsonl', [
      {'topology': '8,2,3|4,1,2|4,1,4|4,1,6|32', 'accuracy': 0.9, 'ntk': 12.0},
      {'topology': '4,2,3|4,1,2|4,1,4|4,1,6|32', 'accuracy': 0.8}])
  rows = table.read_table(path, 'asvit')
  assert [r.accuracy for r in rows] == [{'accuracy': 0.9}, {'accuracy': 0.8}]
  assert rows[0].given == {'ntk': 12.0} and rows[1].given == {}


@pytest.mark.parametrize('records,space,message', [
    ([{'arch': ARCHS[0], 'c100_base_acc': 1.0}, {'arch': ARCHS[1]}], 'pit',
     "t.jsonl line 2: missing field 'c100_base_acc'"),
    ([{'c100_base_acc': 1.0}], 'pit', "t.jsonl line 1: missing field 'arch' (space pit)"),
    ([{'arch': ARCHS[0]}], 'pit', 't.jsonl line 1: missing field "accuracy"'),
    ([{'topology': '8,2,3|4,1,2|4,1,4|4,1,6|32', 'accuracy': 'high'}], 'asvit',
     "t.jsonl line 1: field 'accuracy' must be a number, got 'high'"),
    ([{'arch': ARCHS[0], 'accuracy': 1.0}], 'vit', "--space must be one of pit, asvit, got 'vit'"),
])
def test_bad_table_is_one_clear_line(tmp_path, records, space, message):
  path = _write(tmp_path / 't.jsonl', records)
  r = _asvit('correlate', f'--table={path}', f'--space={space}', f'--out_dir={tmp_path}/o')
  assert r.returncode != 0
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], r.stderr


def _fake_measure(calls):
  def fake(settings, network, images, mode):
    calls.append(str(network))
    return {'length': float(network.base_dim * sum(network.depth)),
            'ntk': float(network.mlp_ratio), 'ntk_bad': False,
            'values': {}, 'seconds': {}}
  return fake


def test_rerun_measures_only_what_is_missing_and_refuses_other_settings(tmp_path):
  rows = table.read_table(_write(tmp_path / 't.jsonl', [
      {'arch': a, 'accuracy': float(i)} for i, a in enumerate(ARCHS)]), 'pit')
  settings = measure.Settings('pit', metrics=('length', 'ntk'), image_size=32, repeats=1)
  out = str(tmp_path / 'run')
  calls = []
  first = measure.measure_table(rows[:2], settings, out, progress=False,
                                measure=_fake_measure(calls))
  assert calls == [rows[0].key, rows[1].key]
  again = measure.measure_table(rows, settings, out, progress=False,
                                measure=_fake_measure(calls))
  assert calls == [rows[0].key, rows[1].key, rows[2].key]  # only the new row
  assert again[rows[0].key]['length'] == first[rows[0].key]['length'] == 8 * 3
  assert again[rows[2].key]['params'] == pit_size.count_params(rows[2].network)
  other = measure.Settings('pit', metrics=('length', 'ntk'), image_size=32, repeats=5)
  with pytest.raises(ValueError, match="repeats: 1 there, 5 now"):
    measure.measure_table(rows, other, out, progress=False, measure=_fake_measure(calls))


def test_a_torn_last_line_is_cut_off_and_remeasured(tmp_path):
  path = str(tmp_path / 'measures.jsonl')
  measure.append_line(path, {'key': 'a', 'length': 1.0})
  with open(path, 'a') as f:
    f.write('{"key": "b", "len')  # a kill in the middle of a write
  assert list(measure.load_measures(path)) == ['a']
  with open(path) as f:
    assert f.read() == '{"key": "a", "length": 1.0}\n'
  with open(path, 'a') as f:
    f.write('not json\n{"key": "c"}\n')
  with pytest.raises(ValueError, match='line 2 is not JSON'):
    measure.load_measures(path)


def test_report_writes_json_markdown_and_one_plot_per_column(tmp_path):
  records = [{'key': str(i), 'length': float(i), 'ntk': float(10 - i),
              'params': 100 + i, 'macs': 1000 + i} for i in range(8)]
  accuracy = {'acc_a': [float(i) for i in range(8)], 'acc_b': [float(-i) for i in range(8)]}
  result = report.write(str(tmp_path), 'pit', 't', {'metrics': ['length', 'ntk'],
                        'repeats': 1, 'image_size': 32, 'seed': 0, 'ntk_data': '',
                        'batch_size': 4}, records, accuracy, n_boot=50, num_groups=2)
  by = result['correlations']
  assert by['acc_a']['length']['kendall_tau'] == 1.0
  assert by['acc_a']['ntk']['kendall_tau'] == -1.0
  assert by['acc_a']['combined']['kendall_tau'] == 1.0  # both ranks agree with accuracy
  assert by['acc_b']['params']['kendall_tau'] == -1.0
  md = open(tmp_path / 'correlation.md').read()
  assert '| L^E | + | +1.000 [+1.000, +1.000]' in md
  assert json.load(open(tmp_path / 'correlation.json'))['n'] == 8
  assert os.path.getsize(tmp_path / 'scatter_acc_a.png') > 1000
  assert os.path.getsize(tmp_path / 'scatter_acc_b.png') > 1000


def test_real_image_ntk_batch_is_seeded_mnist_digits():
  a = measure.ntk_images('mnist5k', image_size=32, batch_size=4, seed=3)
  assert a.shape == (4, 32, 32, 3) and a.dtype == 'float32'
  assert (a == measure.ntk_images('mnist5k', 32, 4, 3)).all()
  assert not (a == measure.ntk_images('mnist5k', 32, 4, 4)).all()
  # grey digits on a black background, ImageNet-normalised: the background is -mean/std
  assert a[0, 0, 0, 0] == pytest.approx(-0.485 / 0.229, rel=1e-5)
  assert a.max() > 1.0
  assert measure.ntk_images('', 32, 4, 3) is None  # Gaussian noise


def test_the_bundled_table_is_named_by_its_place_in_the_package(tmp_path):
  """A report of the default table names it as a user finds it in the repository, not by
  this machine's path (reports are published in docs/)."""
  from asvit_tf.cli import correlate as correlate_cli  # pylint: disable=g-import-not-at-top
  settings = dict(metrics=('length',), image_size=32, repeats=1, num_points=4, batch_size=4)
  result = correlate_cli.run('', 'pit', str(tmp_path), settings, limit=2, n_boot=10,
                             num_groups=1, progress=False)
  assert result['table'] == 'asvit_tf/correlate/data/vit_bench_101_pit_c100.json'
  assert os.path.exists(os.path.join(REPO, result['table']))
  md = open(tmp_path / 'correlation.md').read()
  assert '2 networks from `asvit_tf/correlate/data/vit_bench_101_pit_c100.json`' in md
  assert os.path.dirname(correlate.DATA_DIR) not in md
