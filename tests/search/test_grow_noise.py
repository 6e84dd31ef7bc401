"""A grow records each candidate's per-draw values and each step's draw noise (issue 16)."""
import json
import math
import os

import numpy as np

from asvit_tf.search import grow
from asvit_tf.search.measure import Measurement
from tests.search.fakes import fake_measure


def _drawn_measure(scale: float):
  """fake_measure's means with three draws around each: spread `scale` (both metrics)."""
  def measure(topology, seed):
    m = fake_measure(topology, seed)
    offsets = scale * np.array([-1.0, 0.0, 1.0])
    return Measurement(length=m.length, ntk=m.ntk, bad=False,
                       length_values=[m.length + d for d in offsets],
                       ntk_values=[m.ntk + d for d in offsets])
  return measure


def _run(tmp_path, name, measure):
  config = grow.GrowConfig(target_params=30_000_000, max_params=40_000_000, image_size=32,
                           repeats=3, seed=3, max_steps=2)
  out = str(tmp_path / name)
  grow.run_grow(config, out, measure=measure, progress=False)
  records = [json.loads(l) for l in open(os.path.join(out, grow.LOG_FILE))]
  return records, open(os.path.join(out, grow.TABLE_FILE)).read()


def test_each_step_records_its_candidates_draws_and_their_noise(tmp_path):
  records, table = _run(tmp_path, 'noisy', _drawn_measure(0.5))
  steps = [r for r in records if r['step'] > 0]
  assert len(steps) == 2
  for r in steps:
    for c in r['candidates']:
      assert len(c['length_values']) == len(c['ntk_values']) == 3
      assert math.isclose(np.mean(c['ntk_values']), c['ntk'], rel_tol=1e-12)
    for metric in ('length', 'ntk'):
      means = [c[metric] for c in r['candidates']]
      # every candidate's draws m − 0.5, m, m + 0.5: s.d. 0.5, standard error 0.5 / √3
      se = 0.5 / math.sqrt(3)
      assert math.isclose(r['noise'][metric]['se'], se)
      assert math.isclose(r['noise'][metric]['ratio'], se / np.std(means, ddof=1))
  assert '| noise L^E | noise κ_Θ |' in table
  assert 'the draws decided that ranking' in table
  ratio = f"{steps[0]['noise']['ntk']['ratio']:.2f}"
  assert f"| {steps[0]['noise']['length']['ratio']:.2f} | {ratio} |" in table


def test_more_scattered_draws_give_a_larger_noise_ratio_and_the_same_choices(tmp_path):
  quiet, _ = _run(tmp_path, 'quiet', _drawn_measure(0.01))
  loud, _ = _run(tmp_path, 'loud', _drawn_measure(5.0))
  assert [r['arch'] for r in quiet] == [r['arch'] for r in loud]   # ranked by the means
  for q, l in zip(quiet[1:], loud[1:]):
    assert l['noise']['ntk']['ratio'] > 100 * q['noise']['ntk']['ratio']


def test_single_draws_record_no_noise_and_the_table_keeps_its_columns(tmp_path):
  records, table = _run(tmp_path, 'one', fake_measure)
  assert all('noise' not in r for r in records)
  assert 'noise L^E' not in table and 'the draws decided' not in table
