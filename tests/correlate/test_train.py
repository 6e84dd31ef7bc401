"""`asvit correlate --train`: the sample, the training budget (seeded, deterministic), the
resumable loop, and where picks and references fall among the sample. The end-to-end run,
killed and resumed: test_train_cli.py."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from asvit_tf import arch
from asvit_tf.correlate import stats
from asvit_tf.correlate import train
from asvit_tf.garden.data import make_mnist_tfrecords as mnist

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = train.TrainSettings(seed=0, train_width=8, train_image_size=16, train_steps=3,
                           train_batch_size=16, train_warmup_steps=1)


def test_sample_is_seeded_distinct_in_the_space_and_grows_by_appending():
  ten = train.sample_topologies(10, seed=3)
  assert train.sample_topologies(10, seed=3) == ten
  assert train.sample_topologies(4, seed=3) == ten[:4]  # a larger N keeps the first ones
  assert train.sample_topologies(10, seed=4) != ten
  assert len({t.seed_string for t in ten}) == 10
  for t in ten:
    t.decisions()  # raises outside the search space
    assert t.depths == (1, 1, 1, 1) and t.width == arch.DEFAULT_WIDTH


def test_a_repeat_is_drawn_again_from_its_own_stream(monkeypatch):
  real = train.sample_topology

  def repeating(seed, index, attempt=0):  # topology 1's first draw repeats topology 0
    return real(seed, 0) if (index, attempt) == (1, 0) else real(seed, index, attempt)
  monkeypatch.setattr(train, 'sample_topology', repeating)
  three = train.sample_topologies(3, seed=0)
  assert three == [real(0, 0), real(0, 1, 1), real(0, 2)]
  assert train.sample_topologies(6, seed=0)[:3] == three


def test_every_choice_of_a_decision_is_drawn_about_equally():
  sample = train.sample_topologies(600, seed=0)
  counts = np.bincount([t.decisions()[0] for t in sample], minlength=5)  # K1: 5 choices
  assert counts.min() > 600 / 5 * 0.7 and counts.max() < 600 / 5 * 1.3


def test_the_split_is_the_tiny_recipes_and_batches_visit_every_digit_once_an_epoch():
  x_train, y_train, x_valid, y_valid = train.mnist_split(32)
  assert x_train.shape == (4000, 32, 32, 3) and x_valid.shape == (1000, 32, 32, 3)
  assert np.bincount(y_valid).tolist() == [100] * 10
  _, labels = mnist.load_digits()
  tr, va = mnist.split(labels, 100, 0)  # make_mnist_tfrecords' default split
  assert (y_train == labels[tr]).all() and (y_valid == labels[va]).all()
  order = train.batch_indices(4000, steps=125, batch_size=64, seed=1)  # 2 epochs
  assert order.shape == (125, 64)
  flat = order.reshape(-1)
  assert sorted(flat[:4000]) == list(range(4000)) and sorted(flat[4000:]) == list(range(4000))
  assert (train.batch_indices(4000, 125, 64, 1) == order).all()
  assert not (train.batch_indices(4000, 125, 64, 2) == order).all()


@pytest.mark.slow
def test_same_topology_and_seed_give_the_same_accuracy_whatever_ran_before():
  a, b = train.sample_topologies(2, seed=0)
  first = train.train_network(a, TINY)
  train.train_network(b, TINY)  # other weights, another trace in between
  again = train.train_network(a, TINY)
  assert 0 <= first['accuracy'] <= 1
  assert (again['accuracy'], again['train_loss']) == (first['accuracy'], first['train_loss'])
  other = train.train_network(a, TINY.__class__(**{**TINY.to_dict(), 'seed': 1}))
  assert other['train_loss'] != first['train_loss']


def test_the_residual_merge_option_trains_the_network_with_shortcuts():
  topology = train.sample_topologies(1, seed=0)[0]
  plain = train.build_model(topology, TINY)
  residual = train.build_model(topology, TINY.__class__(**{**TINY.to_dict(),
                                                             'merge': 'residual'}))
  assert residual.encoder.merge == 'residual' and plain.encoder.merge == 'plain'
  assert residual.count_params() > plain.count_params()


def _fake_train(calls):
  def fake(topology, settings):
    calls.append(topology.seed_string)
    return {'accuracy': sum(topology.decisions()) / 100, 'train_loss': 1.0,
            'seconds': {'wall': 0.1, 'cpu': 0.1}}
  return fake


def test_rerun_trains_only_what_is_missing_and_refuses_other_settings(tmp_path):
  tops = train.sample_topologies(3, seed=0)
  out, calls = str(tmp_path / 'run'), []
  first = train.train_all(tops[:2], TINY, out, progress=False, train=_fake_train(calls))
  again = train.train_all(tops, TINY, out, progress=False, train=_fake_train(calls))
  assert calls == [t.seed_string for t in tops]  # the first two were not trained again
  key = tops[0].seed_string
  assert again[key] == first[key] and again[key]['settings_hash'] == TINY.digest()
  assert again[key]['trained'] == str(tops[0].replace(width=8))  # at `train_width`
  assert again[key]['train_params'] > 0 and again[key]['train_macs'] > 0
  with open(os.path.join(out, train.TRAINED_FILE)) as f:
    assert [json.loads(line)['topology'] for line in f] == [t.seed_string for t in tops]
  other = train.TrainSettings(**{**TINY.to_dict(), 'train_steps': 4})
  with pytest.raises(ValueError, match='trained networks made with other settings '
                     r'\(train_steps: 3 there, 4 now\)'):
    train.train_all(tops, other, out, progress=False, train=_fake_train(calls))


def test_percentile_on_hand_made_numbers():
  population = [0.1, 0.2, 0.3, 0.4]
  assert stats.percentile(0.5, population) == 100.0
  assert stats.percentile(0.0, population) == 0.0
  assert stats.percentile(0.25, population) == 50.0
  assert stats.percentile(0.3, population) == pytest.approx(100 * 2.5 / 4)  # a tie: half
  assert stats.percentile(0.2, [0.2, 0.2]) == 50.0
  assert np.isnan(stats.percentile(0.2, []))


def test_picks_and_references_are_placed_among_the_others():
  keys = ['a', 'b', 'c', 'd', 'e']
  accuracy = [0.50, 0.60, 0.70, 0.80, 0.90]
  columns = {'length': [5.0, 1.0, 2.0, 3.0, 4.0],  # top: a, the worst network
             'ntk': [3.0, 2.0, float('inf'), 1.0, 1.0],  # top: d and e tie, d first
             'params': [1.0, 2.0, 9.0, 3.0, 4.0]}  # the largest: c
  result = train.compare(columns, keys, accuracy,
                         [('outside', 'x', 0.85), ('inside', 'e', 0.90)])
  picks = {p['by']: p for p in result['picks']}
  assert (picks['length']['topology'], picks['length']['percentile']) == ('a', 0.0)
  assert (picks['ntk']['topology'], picks['ntk']['ties']) == ('d', 2)
  assert picks['ntk']['percentile'] == 75.0  # above 3 of the 4 others
  assert (picks['params']['topology'], picks['params']['percentile']) == ('c', 50.0)
  refs = {r['name']: r for r in result['references']}
  assert refs['outside']['percentile'] == 80.0 and not refs['outside']['in_sample']
  assert refs['inside']['percentile'] == 100.0 and refs['inside']['in_sample']
  assert result['random'] == {'n': 5, 'median': 0.7, 'mean': pytest.approx(0.7),
                              'min': 0.5, 'max': 0.9}
  lines = train.comparison_lines(result)
  assert '| reference `outside` | `x` | 0.8500 | 80.0 |' in lines
  assert '- reference `outside`: above the random median, above the largest model by ' \
         '#params.' in lines
  assert '- top by L^E: below the random median, below the largest model by #params.' in lines


def test_references_hold_commas_and_bad_ones_are_one_line():
  refs = train.parse_references('paper=8,2,3|4,1,2|4,1,4|4,1,6|32,'
                                'mine=8,2,3,2|4,4,6,1|4,1,3,1|4,1,3,1|64,48')
  assert [(n, t.seed_string) for n, t in refs] == [
      ('paper', '8,2,3|4,1,2|4,1,4|4,1,6|32'), ('mine', '8,2,3|4,4,6|4,1,3|4,1,3|64')]
  assert refs[1][1].width == 32 and refs[1][1].depths == (1, 1, 1, 1)
  assert train.parse_references('') == []
  with pytest.raises(ValueError, match="a `reference` must be NAME=TOPOLOGY, got '8,2,3"):
    train.parse_references('8,2,3|4,1,2|4,1,4|4,1,6|32')
  with pytest.raises(ValueError, match="`reference` name 'a' is given twice"):
    train.parse_references('a=8,2,3|4,1,2|4,1,4|4,1,6|32,a=8,2,3|4,1,2|4,1,4|4,1,6|16')


def test_budget_below_what_the_space_builds_is_refused():
  with pytest.raises(ValueError, match='`train_width` must be an integer >= 8, got 4'):
    train.TrainSettings(train_width=4)
  with pytest.raises(ValueError, match='`train_warmup_steps` must be below `train_steps`'):
    train.TrainSettings(train_steps=10, train_warmup_steps=10)
  with pytest.raises(ValueError, match="`merge` must be one of plain, residual, got 'x'"):
    train.TrainSettings(merge='x')


def _asvit(*args):
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  return subprocess.run([sys.executable, '-m', 'asvit_tf.cli.main', 'correlate', *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize('args,message', [
    (['--train', '--n=3', '--table=t.jsonl'], '--train makes its own table'),
    (['--train', '--n=3', '--space=pit'], '--space must be asvit, got --space=pit'),
    (['--train', '--n=1'], '--n must be >= 2 with --train'),
    (['--n=3', '--residual_merge', '--table=t.jsonl'], '--n, --residual_merge only apply with '
     '--train'),
    (['--train', '--n=3', '--train_width=4'], '--train_width must be an integer >= 8, got 4'),
    (['--train', '--n=3', '--reference=8,2,3|4,1,2|4,1,4|4,1,6|32'],
     "a --reference must be NAME=TOPOLOGY, got '8,2,3|4,1,2|4,1,4|4,1,6|32'"),
])
def test_bad_flag_combination_is_one_line(tmp_path, args, message):
  r = _asvit(*args, f'--out_dir={tmp_path}/o')
  assert r.returncode != 0
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], r.stderr


def test_the_command_line_defaults_are_the_libraries():
  from asvit_tf.cli import correlate as cli  # pylint: disable=g-import-not-at-top
  assert cli.REFERENCES == tuple(f'{n}={t}' for n, t in train.REFERENCES)
  text = subprocess.run([sys.executable, '-m', 'asvit_tf.cli.main', 'correlate', '--help'],
                        cwd=REPO, capture_output=True, text=True, timeout=120).stdout
  defaults = train.TrainSettings()
  for name in cli.TRAIN_FLAGS:
    block = text[text.index(f'--{name}:'):]
    shown = block[block.index("(default: '") + 11:].split("'")[0]
    assert float(shown) == getattr(defaults, name), name
