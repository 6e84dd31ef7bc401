"""`benchmarks/_report`: a worker process's result line, printed and read back."""
import os
import sys

from benchmarks import _report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _worker(tmp_path, body):
  script = tmp_path / 'worker.py'
  script.write_text('import sys\nsys.path.insert(0, %r)\nfrom benchmarks import _report\n%s\n'
                    % (ROOT, body))
  return [sys.executable, str(script)]


def test_worker_result_reads_the_last_result_line(tmp_path):
  out, proc = _report.worker_result(_worker(
      tmp_path, "print('noise')\n_report.print_result({'a': 0})\n"
                "_report.print_result({'a': 1, 'b': [2.5]})"))
  assert proc.returncode == 0
  assert out == {'a': 1, 'b': [2.5]}


def test_worker_result_is_none_for_a_failed_or_silent_worker(tmp_path):
  out, proc = _report.worker_result(_worker(
      tmp_path, "_report.print_result({'a': 1})\nsys.exit('boom')"))
  assert out is None
  assert _report.failure(proc) == 'exit 1: boom'
  out, proc = _report.worker_result(_worker(tmp_path, "print('no result')"))
  assert out is None and proc.returncode == 0
