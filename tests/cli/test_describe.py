"""`asvit describe` and the command dispatcher."""
import subprocess
import sys

import pytest

from asvit_tf.cli import describe


def _asvit(*args):
  return subprocess.run([sys.executable, '-m', 'asvit_tf.cli.main', *args],
                        capture_output=True, text=True, timeout=120)


def test_describe_table_totals_match_the_reference_sizes():
  table = describe.format_table('asvit_large', 224, 1000)
  lines = table.splitlines()
  assert lines[0].startswith('8,2,3,5|4,1,2,2|4,1,4,5|4,1,6,2|32,180')
  stage1 = next(l for l in lines if l.startswith('stage1')).split()
  assert stage1[1:6] == ['56x56', '180', '4', '28', '5']
  total = lines[-1].split()
  assert total[:2] == ['total', '14'] and total[2] == '87.581' and total[4] == '22.3578'


def test_describe_at_a_coarse_stride():
  table = describe.format_table('asvit_seed', 224, 1000, stride=8)
  rows = {l.split()[0]: l.split() for l in table.splitlines()[3:]}
  assert rows['stage1'][1] == '28x28' and rows['stage4'][1] == '4x4'


def test_cli_prints_the_table():
  result = _asvit('describe', '8,2,3|4,1,2|4,1,4|4,1,6|32', '--image_size=64')
  assert result.returncode == 0, result.stderr
  assert 'stage4' in result.stdout and '2.320 M' in result.stdout


@pytest.mark.parametrize('args, message', [
    (['describe', '8,2,3|4,1'], 'error: topology'),
    (['describe', 'asvit_huge'], "error: unknown variant 'asvit_huge'"),
    (['describe'], 'error: describe takes one ARCH'),
    (['describe', 'asvit_seed', '--image_size=0'],
     'error: --image_size must be an integer >= 1, got 0'),
    (['frobnicate'], "error: unknown command 'frobnicate'"),
])
def test_cli_bad_input_is_one_line_and_non_zero(args, message):
  result = _asvit(*args)
  assert result.returncode != 0
  err = [l for l in result.stderr.splitlines() if l.strip()]
  assert len(err) == 1 and err[0].startswith(message), result.stderr


def test_cli_help_lists_commands():
  result = _asvit('--help')
  assert result.returncode == 0
  assert 'describe' in result.stdout
