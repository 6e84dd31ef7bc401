"""benchmarks/detection_curve.py reads Model Garden's summaries into the AP-vs-steps table."""

import pytest
import tensorflow as tf

from benchmarks import detection_curve


def _write(event_dir, step_values):
  writer = tf.summary.create_file_writer(event_dir)
  with writer.as_default():
    for step, values in step_values:
      for tag, value in values.items():
        tf.summary.scalar(tag, value, step=step)
  writer.close()


def test_curve_rows_pair_each_evaluation_with_its_step(tmp_path):
  _write(str(tmp_path / 'validation'), [
      (100, {'AP50': 0.4, 'AP': 0.2, 'mask_AP50': 0.45, 'mask_AP': 0.25}),
      (200, {'AP50': 0.7, 'AP': 0.35, 'mask_AP50': 0.72, 'mask_AP': 0.4})])
  _write(str(tmp_path / 'train'), [(50, {'training_loss': 3.5}), (100, {'training_loss': 2.0}),
                                   (200, {'training_loss': 1.5})])
  rows = detection_curve.curve_rows(str(tmp_path))
  assert [r['step'] for r in rows] == [100, 200]
  assert rows[1]['AP50'] == pytest.approx(0.7) and rows[1]['mask_AP'] == pytest.approx(0.4)
  assert rows[0]['training_loss'] == pytest.approx(2.0)
  table = detection_curve.markdown(rows).splitlines()
  assert table[2] == '| 100 | 2.000 | 0.400 | 0.200 | 0.450 | 0.250 |'
  png = tmp_path / 'curve.png'
  detection_curve.plot(rows, str(png), 'test')
  assert png.stat().st_size > 1000


def test_a_run_without_evaluations_is_named(tmp_path):
  _write(str(tmp_path / 'train'), [(50, {'training_loss': 3.5})])
  with pytest.raises(FileNotFoundError, match='no evaluation summaries'):
    detection_curve.curve_rows(str(tmp_path))
