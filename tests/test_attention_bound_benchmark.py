"""`benchmarks/attention_bound.py`: the topologies it picks from a search's records, and its
map-free stand-in (what its `free` variant times)."""
import json

import numpy as np
import tensorflow as tf

from asvit_tf.complexity import attention
from benchmarks import attention_bound


def _write_run(path, rows):
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return str(path)


def test_picks_the_first_new_measured_topology_at_or_after_each_step(tmp_path):
  rows = [{'step': i, 'topology': f't{i}', 'cached': False, 'ntk_values': [1.0]}
          for i in range(12)]
  rows[4]['cached'] = True                      # measured before: skipped
  rows[5]['topology'] = 't1'                    # already picked: skipped
  rows[8]['ntk_values'] = []                    # not measured (a bad topology): skipped
  run = _write_run(tmp_path / 'run.jsonl', rows)
  assert attention_bound.pick_topologies(run, 3, first=1, every=4) == [
      ('t1', 1), ('t6', 6), ('t9', 9)]
  # Past the end of the run: fewer than asked.
  assert attention_bound.pick_topologies(run, 5, first=1, every=4) == [
      ('t1', 1), ('t6', 6), ('t9', 9)]


def test_free_maps_replace_the_core_by_the_values(monkeypatch):
  # Restored after the test: free_maps() rebinds the module's functions.
  monkeypatch.setattr(attention, 'attention', attention.attention)
  monkeypatch.setattr(attention, 'attention_with_tangent', attention.attention_with_tangent)
  rng = np.random.default_rng(0)
  q, k, v, dq, dk, dv = (tf.constant(rng.normal(size=(2, 5, 3)), tf.float32) for _ in range(6))
  real = attention.attention(q, k, v)
  attention_bound.free_maps()
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([q, k, v])
    o = attention.attention(q, k, v)
  np.testing.assert_array_equal(o.numpy(), v.numpy())
  assert not np.allclose(real.numpy(), v.numpy())
  g = tf.constant(rng.normal(size=(2, 5, 3)), tf.float32)
  dq_, dk_, dv_ = tape.gradient(o, [q, k, v], output_gradients=g)
  np.testing.assert_array_equal(dv_.numpy(), g.numpy())
  assert not dq_.numpy().any() and not dk_.numpy().any()
  o, t = attention.attention_with_tangent(q, k, v, dq, dk, dv)
  np.testing.assert_array_equal(o.numpy(), v.numpy())
  np.testing.assert_array_equal(t.numpy(), dv.numpy())
