"""How τ changes with the number of repeats, from one run's per-repeat values: the report's
"Repeats: 1 vs all" on hand-made records (checked against SciPy), and that repeat 0 of an
R-repeat measurement is what a one-repeat measurement gives (the real measures)."""
import json

import numpy as np
import pytest
from scipy import stats as sp_stats

from asvit_tf import arch as arch_lib
from asvit_tf.correlate import measure
from asvit_tf.correlate import report
from asvit_tf.correlate import stats

N, R = 9, 3


def _settings(repeats, metrics=('length', 'curvature', 'ntk')):
  return {'metrics': list(metrics), 'repeats': repeats, 'image_size': 32, 'seed': 0,
          'ntk_data': '', 'batch_size': 4}


def _records(repeats, seed=5):
  """N networks with `repeats` noisy per-repeat values around a trend in accuracy; the
  mean is what measures.jsonl holds beside them. A bad repeat (inf κ_Θ) in network 2."""
  rng = np.random.default_rng(seed)
  records = []
  for i in range(N):
    values = {'length': list(i + 3 * rng.normal(size=repeats)),
              'curvature': list(rng.normal(size=repeats)),
              'ntk': list(np.exp(-i + 2 * rng.normal(size=repeats)))}
    if i == 2:
      values['ntk'][-1] = 'inf'
    records.append({'key': str(i), **{m: float(np.mean(np.asarray(v, float)))
                                      for m, v in values.items()},
                    'values': values, 'params': 100 + i, 'macs': 1000 + i})
  return records


def _accuracy():
  return {'acc': [float(i) for i in range(N)],
          'acc_b': [float(v) for v in np.random.default_rng(1).normal(size=N)]}


def _dense_combined(lengths, ntks):
  """The combined rank by hand: −(dense rank of L^E descending + of κ_Θ ascending)."""
  lengths, ntks = np.asarray(lengths, float), np.asarray(ntks, float)
  return -(sp_stats.rankdata(-lengths, method='dense')
           + sp_stats.rankdata(ntks, method='dense'))


def test_single_repeat_taus_equal_scipy_and_the_mean_column_is_the_main_table(tmp_path):
  records, accuracy = _records(R), _accuracy()
  result = report.write(str(tmp_path), 'pit', 't', _settings(R), records, accuracy,
                        n_boot=200, num_groups=2)
  section = json.load(open(tmp_path / 'correlation.json'))[report.REPEATS_KEY]
  assert list(section) == ['acc', 'acc_b']
  for acc_name, acc in accuracy.items():
    # The sizes have no repeats; the combined rank has (from each repeat's L^E and κ_Θ).
    assert list(section[acc_name]) == ['length', 'curvature', 'ntk', 'combined']
    for m, got in section[acc_name].items():
      expected = []
      for r in range(R):
        per = {k: [float(rec['values'][k][r]) for rec in records]
               for k in ('length', 'curvature', 'ntk')}
        per['combined'] = _dense_combined(per['length'], per['ntk'])
        expected.append(sp_stats.kendalltau(per[m], acc)[0])
      assert got['single_repeats'] == pytest.approx(expected, abs=1e-12)
      assert got['repeat_0']['kendall_tau'] == pytest.approx(expected[0], abs=1e-12)
      assert (got['single_min'], got['single_max']) == pytest.approx(
          (min(expected), max(expected)), abs=1e-12)
      repeat_0 = [float(rec['values'][m][0]) for rec in records] if m != 'combined' else (
          _dense_combined([rec['values']['length'][0] for rec in records],
                          [float(rec['values']['ntk'][0]) for rec in records]))
      assert got['repeat_0']['kendall_tau_ci'] == pytest.approx(
          list(stats.bootstrap_interval(repeat_0, acc, 'kendall_tau', 200, 0)))
      main = result['correlations'][acc_name][m]
      assert got['all'] == {'kendall_tau': main['kendall_tau'],
                            'kendall_tau_ci': main['kendall_tau_ci']}
  # The repeats differ here, so one repeat's τ is not the mean's.
  assert section['acc']['length']['repeat_0']['kendall_tau'] != pytest.approx(
      section['acc']['length']['all']['kendall_tau'])


def test_the_markdown_section_holds_the_numbers_of_the_json(tmp_path):
  result = report.write(str(tmp_path), 'pit', 't', _settings(R), _records(R), _accuracy(),
                        n_boot=100, num_groups=2)
  md = open(tmp_path / 'correlation.md').read()
  assert '## Repeats: 1 vs all' in md and 'what a `--repeats=1` run' in md
  c = result[report.REPEATS_KEY]['acc']['ntk']
  row = (f'| κ_Θ | {c["all"]["kendall_tau"]:+.3f} [{c["all"]["kendall_tau_ci"][0]:+.3f}, '
         f'{c["all"]["kendall_tau_ci"][1]:+.3f}] | {c["repeat_0"]["kendall_tau"]:+.3f} '
         f'[{c["repeat_0"]["kendall_tau_ci"][0]:+.3f}, {c["repeat_0"]["kendall_tau_ci"][1]:+.3f}]'
         f' | {c["single_min"]:+.3f} – {c["single_max"]:+.3f} |')
  assert row in md
  section = md[md.index('## Repeats: 1 vs all'):]
  assert '#params' not in section and 'MACs' not in section


def test_no_section_with_one_repeat(tmp_path):
  result = report.write(str(tmp_path), 'pit', 't', _settings(1), _records(1), _accuracy(),
                        n_boot=50, num_groups=2)
  assert report.REPEATS_KEY not in result
  assert report.REPEATS_KEY not in json.load(open(tmp_path / 'correlation.json'))
  assert 'Repeats: 1 vs all' not in open(tmp_path / 'correlation.md').read()


def test_measures_without_per_repeat_values_are_left_out(tmp_path):
  records = _records(R)
  for rec in records:  # κ_Θ given by the table: no repeats (measure_table drops them)
    del rec['values']['ntk']
  result = report.write(str(tmp_path), 'pit', 't', _settings(R), records, _accuracy(),
                        n_boot=50, num_groups=2)
  assert list(result[report.REPEATS_KEY]['acc']) == ['length', 'curvature']
  for rec in records:
    rec['values'] = {}
  result = report.write(str(tmp_path), 'pit', 't', _settings(R), records, _accuracy(),
                        n_boot=50, num_groups=2)
  assert report.REPEATS_KEY not in result


TINY = dict(image_size=32, num_points=4, batch_size=4)


@pytest.mark.slow
@pytest.mark.parametrize('space,network', [
    ('asvit', arch_lib.as_topology('8,2,3,1|4,1,2,1|4,1,4,1|4,1,6,1|16,8'))])
def test_repeat_0_of_more_repeats_is_the_one_repeat_measurement_to_the_bit(space, network):
  # One space: a PiT takes the same path (a factory, seeded by seed and repeat); both were
  # checked to the bit once (docs/proxies.md), the As-ViT kept here for the suite's time.
  # Repeat r's weights, curve and noise images are seeded by (seed, r); mode='auto' takes
  # the same path (here eager: tiny networks) for 1 and 2 repeats, as for any count up to
  # network.EAGER_REPEATS; and repeat 0 is that path's first call: the same bits.
  one = measure.measure_network(measure.Settings(space, repeats=1, **TINY), network)
  two = measure.measure_network(measure.Settings(space, repeats=2, **TINY), network)
  for m in measure.METRICS:
    assert len(two['values'][m]) == 2 and two['values'][m][1] != two['values'][m][0]
    assert two['values'][m][0] == one['values'][m][0] == one[m], (space, m)
