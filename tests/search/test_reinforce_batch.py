"""--samples_per_step: K = 1 writes the records of the paper's algorithm as before; K > 1
measures a step's samples together, updates once, and resumes to the uninterrupted result."""
import json
import os

import numpy as np
import pytest

from asvit_tf.search import measure as measure_lib
from asvit_tf.search import policy as policy_lib
from asvit_tf.search import reinforce
from tests.search import records
from tests.search.fakes import fake_measure

HERE = os.path.dirname(os.path.abspath(__file__))
# Written by the search before --samples_per_step existed: 60 steps, seed 4, fake metrics.
K1_RECORDS = os.path.join(HERE, 'data', 'search_k1_seed4.jsonl')


def _lines_without_seconds(path):
  out = []
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      record.pop('seconds', None)
      out.append(json.dumps(record) + '\n')
  return out


def test_one_sample_per_step_writes_the_records_of_before(tmp_path):
  config = reinforce.SearchConfig(steps=60, image_size=32, repeats=1, seed=4,
                                  samples_per_step=1)
  reinforce.run_search(config, str(tmp_path), measure=fake_measure, progress=False,
                       tensorboard=False, plot_every=0)
  with open(K1_RECORDS) as f:
    want = [json.loads(line) for line in f]
  got = [json.loads(line) for line in _lines_without_seconds(tmp_path / 'search.jsonl')]
  # the same records; floats to float32 rounding (the policy's TensorFlow maths rounds its
  # last bits differently on other CPUs)
  assert records.close(got, want)


class _Recorder:
  """An evaluator that measures with the fake metrics and keeps each call's items."""

  def __init__(self):
    self.calls = []

  def measure(self, items):
    self.calls.append([t.seed_string for t, _ in items])
    for i, (t, s) in enumerate(items):
      yield i, fake_measure(t, s)

  def close(self):
    pass


def test_a_step_measures_its_samples_together_and_updates_once(tmp_path):
  config = reinforce.SearchConfig(steps=5, image_size=32, repeats=1, seed=2,
                                  samples_per_step=4)
  evaluator = _Recorder()
  result = reinforce.run_search(config, str(tmp_path), evaluator=evaluator, progress=False,
                                tensorboard=False, plot_every=0)
  records = result.records
  assert [(r['step'], r['sample']) for r in records] == [(t, k) for t in range(5)
                                                         for k in range(4)]
  # One call per step with its distinct samples not measured before.
  assert len(evaluator.calls) == 5
  seen = set()
  for t, call in enumerate(evaluator.calls):
    step = [r['topology'] for r in records if r['step'] == t]
    assert call == list(dict.fromkeys(s for s in step if s not in seen))
    seen.update(step)
  for t in range(5):
    step = [r for r in records if r['step'] == t]
    assert len({(r['baseline'], r['derived'], r['entropy']) for r in step}) == 1
    for r in step:
      assert r['advantage'] == pytest.approx(r['reward'] - r['baseline'], abs=1e-15)
  # The policy moved once per step: replaying the batch updates from the records gives
  # the saved logits.
  policy, adam = policy_lib.Policy(2), policy_lib.Adam(lr=config.lr)
  for t in range(5):
    step = [r for r in records if r['step'] == t]
    policy.reinforce_batch_step(adam, [r['actions'] for r in step],
                                [r['advantage'] for r in step])
  with open(tmp_path / 'search_state.json') as f:
    saved = json.load(f)['logits']
  for got, want in zip(policy.state(), saved):
    np.testing.assert_array_equal(got, want)


class _Killed(Exception):
  pass


def _dying_measure(after):
  """fake_measure that raises (a kill) at its call number `after`."""
  calls = []

  def measure(t, s):
    calls.append(1)
    if len(calls) == after:
      raise _Killed
    return fake_measure(t, s)
  return measure


def _strip(records):
  return [{k: v for k, v in r.items() if k != 'seconds'} for r in records]


def test_batched_search_resumes_after_every_step_and_mid_step(tmp_path):
  config = reinforce.SearchConfig(steps=4, image_size=32, repeats=1, seed=9,
                                  samples_per_step=3)
  full = reinforce.run_search(config, str(tmp_path / 'full'), measure=fake_measure,
                              progress=False, tensorboard=False, plot_every=0)
  # Stopped after each step in turn (a new process each time), then finished.
  out = str(tmp_path / 'steps')

  class Stop(Exception):
    pass

  def stop(_):
    raise Stop
  for _ in range(config.steps):
    with pytest.raises(Stop):
      reinforce.run_search(config, out, measure=fake_measure, progress=False,
                           tensorboard=False, plot_every=0, on_step=stop)
  resumed = reinforce.run_search(config, out, measure=fake_measure, progress=False,
                                 tensorboard=False, plot_every=0)
  assert _strip(resumed.records) == _strip(full.records)
  assert resumed.seed_string == full.seed_string
  # Killed inside a step, after some of its samples were measured: they are kept.
  out = str(tmp_path / 'mid')
  with pytest.raises(_Killed):
    reinforce.run_search(config, out, measure=_dying_measure(5), progress=False,
                         tensorboard=False, plot_every=0)
  with open(os.path.join(out, 'search_state.json')) as f:
    assert len(json.load(f)['pending']) >= 1
  calls = []

  def counting(t, s):
    calls.append(t.seed_string)
    return fake_measure(t, s)
  resumed = reinforce.run_search(config, out, measure=counting, progress=False,
                                 tensorboard=False, plot_every=0)
  assert _strip(resumed.records) == _strip(full.records)
  measured = {r['topology'] for r in full.records}
  assert len(calls) < len(measured) and len(set(calls)) == len(calls)


def test_one_sample_batch_step_is_the_single_step_and_a_batch_is_the_mean():
  a = [1, 0, 2, 1, 0, 0, 1, 0, 3, 1, 4, 2]
  b = [0, 2, 1, 0, 1, 2, 0, 1, 1, 0, 2, 1]
  single, batch = policy_lib.Policy(5), policy_lib.Policy(5)
  adam_single, adam_batch = policy_lib.Adam(), policy_lib.Adam()
  single.reinforce_step(adam_single, a, 0.7)
  batch.reinforce_batch_step(adam_batch, [a], [0.7])
  assert single.state() == batch.state()
  # The batch gradient is the mean of the samples' gradients: the same sample twice with
  # the same advantage is one sample; two samples are half of each.
  twice = policy_lib.Policy(5)
  twice.reinforce_batch_step(policy_lib.Adam(), [a, a], [0.7, 0.7])
  np.testing.assert_allclose(np.concatenate(twice.logits), np.concatenate(single.logits),
                             rtol=0, atol=1e-15)
  p = policy_lib.Policy(5)
  want = [-(0.5 * 0.7) * ga - (0.5 * -0.2) * gb
          for ga, gb in zip(p.log_prob_grad(a), p.log_prob_grad(b))]

  class Capture(policy_lib.Adam):
    def step(self, params, grads):
      self.grads = grads
  capture = Capture()
  p.reinforce_batch_step(capture, [a, b], [0.7, -0.2])
  for g, w in zip(capture.grads, want):
    np.testing.assert_allclose(g, w, rtol=0, atol=1e-15)
  with pytest.raises(ValueError, match='one advantage per sample'):
    p.reinforce_batch_step(capture, [a, b], [0.7])


@pytest.mark.parametrize('value, message', [
    (0, '`samples_per_step` must be an integer >= 1, got 0'),
    (2.5, '`samples_per_step` must be an integer >= 1, got 2.5'),
])
def test_samples_per_step_must_be_a_positive_integer(value, message):
  with pytest.raises(ValueError, match=message.replace('.', r'\.')):
    reinforce.SearchConfig(samples_per_step=value, image_size=32).validate()


def test_records_of_measured_samples_are_reused_in_a_step(tmp_path):
  """A topology drawn twice in one step is measured once and marked cached the second time."""
  config = reinforce.SearchConfig(steps=30, image_size=32, repeats=1, seed=1,
                                  samples_per_step=8, lr=2.0)
  result = reinforce.run_search(config, str(tmp_path), measure=fake_measure, progress=False,
                                tensorboard=False, plot_every=0)
  assert any(r['cached'] for r in result.records)
  for r in result.records:
    m = measure_lib.Measurement.from_dict(r)
    assert m.length == fake_measure(*_item(r, config)).length


def _item(record, config):
  from asvit_tf import arch as arch_lib  # pylint: disable=g-import-not-at-top
  from asvit_tf import seeding  # pylint: disable=g-import-not-at-top
  topo = arch_lib.Topology.from_decisions(record['actions'], width=config.width)
  return topo, seeding.seed(config.seed, seeding.MEASURE, *record['actions'])
