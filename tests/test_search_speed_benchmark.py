"""The projection of `benchmarks/search_speed.py` along a recorded grow path."""
import json
import os

import pytest

from benchmarks import search_speed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, 'docs', 'family_searched_grow.jsonl')


def _records():
  with open(RUN) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_spread_steps_include_first_and_last():
  assert search_speed.spread_steps(12) == [1, 5, 8, 12]
  assert search_speed.spread_steps(2) == [1, 2]
  assert search_speed.spread_steps(1) == [1]
  assert search_speed.spread_steps(0) == []


def test_path_samples_are_proxy_width_candidates_of_the_step():
  records = _records()
  samples = search_speed.path_samples(records, [1, 12], 3)
  last = [c['arch'] for c in records[12]['candidates']]
  middle = round((len(last) - 1) / 2)
  # Real width C = 4h: the sample is each picked candidate at its proxy width h.
  assert [str(t.replace(width=4 * t.width)) for t in samples[12]] == [
      last[0], last[middle], last[-1]]
  assert all(4 * t.width == int(a.rsplit(',', 1)[1])
             for t, a in zip(samples[12], (last[0], last[middle], last[-1])))
  with pytest.raises(ValueError, match='step 13'):
    search_speed.path_samples(records, [13], 2)


def test_interpolation_is_linear_between_samples_and_flat_beyond():
  samples = {1: 10.0, 5: 30.0, 9: 70.0}
  assert search_speed.interpolate(samples, 0) == 10.0
  assert search_speed.interpolate(samples, 3) == 20.0
  assert search_speed.interpolate(samples, 7) == 50.0
  assert search_speed.interpolate(samples, 12) == 70.0


def test_path_projection_charges_every_measurement_of_the_run():
  records = _records()
  measured = sum(len(r['candidates']) for r in records) + 1
  assert search_speed.path_projection(records, {1: 2.0}) == pytest.approx(2.0 * measured)
  # A cost rising with the step weighs the late steps more.
  rising = search_speed.path_projection(records, {1: 1.0, 12: 12.0})
  assert rising > search_speed.path_projection(records, {1: 1.0, 12: 1.0})
