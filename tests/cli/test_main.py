"""The `asvit` dispatcher: user errors are one line, bugs keep their traceback, help and
version, Ctrl-C and a closed pipe. Subprocess tests run the real console entry point."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import asvit_tf
from asvit_tf import arch
from asvit_tf.cli import main as cli_main
from asvit_tf.errors import UserInputError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_YAML = os.path.join(REPO, 'official_configs', 'asvit_tiny_cpu.yaml')


def _env(**extra):
  # TF_CPP_MIN_LOG_LEVEL=3: this machine's TensorFlow logs a failed cuInit (no GPU driver)
  # on stderr; the tests count our lines only.
  env = dict(os.environ)
  env.pop('ASVIT_TRACEBACK', None)
  env.update(TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=REPO, **extra)
  return env


def _asvit(*args, timeout=600, **env):
  return subprocess.run([sys.executable, '-m', 'asvit_tf.cli.main', *args], cwd=REPO,
                        env=_env(**env), capture_output=True, text=True, timeout=timeout)


# ---- user_errors, in process ------------------------------------------------------------
def _wrapped(exc):
  def main(argv):
    raise exc
  return cli_main.user_errors(main)


@pytest.mark.parametrize('exc, line, code', [
    (UserInputError('--stride must be an integer >= 1, got 0'),
     'error: --stride must be an integer >= 1, got 0', 2),
    (FileNotFoundError(2, 'No such file or directory', '/no/such'),
     'error: /no/such: No such file or directory', 2),
    (IsADirectoryError(21, 'Is a directory', '/tmp'), 'error: /tmp: Is a directory', 2),
    (KeyboardInterrupt(), 'error: interrupted; run the same command again to resume', 130),
])
def test_user_errors_become_one_line(monkeypatch, capsys, exc, line, code):
  monkeypatch.delenv('ASVIT_TRACEBACK', raising=False)
  with pytest.raises(SystemExit) as info:
    _wrapped(exc)(['asvit x'])
  assert info.value.code == code
  assert capsys.readouterr().err.splitlines() == [line]


@pytest.mark.parametrize('exc', [ValueError('operands could not be broadcast'),
                                 KeyError('logits'), ZeroDivisionError('division by zero')])
def test_other_errors_keep_their_traceback(monkeypatch, exc):
  """A ValueError of TensorFlow or NumPy is a bug, not something the user typed."""
  monkeypatch.delenv('ASVIT_TRACEBACK', raising=False)
  with pytest.raises(type(exc)):
    _wrapped(exc)(['asvit x'])


def test_a_real_numpy_value_error_is_not_hidden(monkeypatch):
  monkeypatch.delenv('ASVIT_TRACEBACK', raising=False)
  def main(argv):
    return np.ones(3) + np.ones(4)
  with pytest.raises(ValueError, match='could not be broadcast'):
    cli_main.user_errors(main)(['asvit x'])


def test_the_environment_variable_shows_every_traceback(monkeypatch):
  monkeypatch.setenv('ASVIT_TRACEBACK', '1')
  with pytest.raises(UserInputError):
    _wrapped(UserInputError('bad'))(['asvit x'])


def test_marked_fields_are_shown_as_the_flags_of_the_command(monkeypatch, capsys):
  """A library message names fields; the command line names the flags that set them."""
  monkeypatch.delenv('ASVIT_TRACEBACK', raising=False)
  def main(argv):
    raise UserInputError('`data` /x: no such folder; `table` and `num_classes` too '
                         '(see `grow.budget_marks`)')
  wrapped = cli_main.user_errors(main, cli_main.flag_namer('correlate', {'ntk_data', 'table'}))
  with pytest.raises(SystemExit):
    wrapped(['asvit correlate'])
  # data is correlate's --ntk_data (an exception); num_classes is no flag of it: kept as is
  assert capsys.readouterr().err.splitlines() == [
      'error: --ntk_data /x: no such folder; --table and `num_classes` too '
      '(see `grow.budget_marks`)']


# ---- the real command line --------------------------------------------------------------
def test_version():
  r = _asvit('--version')
  assert r.returncode == 0 and r.stdout.strip() == f'asvit {asvit_tf.__version__}'


def test_traceback_on_request():
  r = _asvit('describe', 'asvit_seed', '--stride=0', ASVIT_TRACEBACK='1')
  assert r.returncode != 0
  assert 'Traceback' in r.stderr and '`stride` must be an integer >= 1, got 0' in r.stderr


def test_a_closed_pipe_is_a_quiet_exit():
  """`asvit describe asvit_large | head -1`: the reader is gone before the table is written."""
  proc = subprocess.Popen([sys.executable, '-m', 'asvit_tf.cli.main', 'describe',
                           'asvit_large'], cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
  proc.stdout.close()
  err = proc.stderr.read().decode()
  assert proc.wait(timeout=120) == 141
  assert err == ''


def _default_sigint():
  """In the child: Ctrl-C as in a terminal. A test runner's worker may ignore SIGINT (pytest-
  xdist's do), and an ignored signal stays ignored across exec."""
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cpu_seconds(pid: int) -> float:
  """User + system CPU time of a process so far (Linux /proc)."""
  with open(f'/proc/{pid}/stat') as f:
    fields = f.read().rsplit(')', 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_exit_130(tmp_path):
  proc = subprocess.Popen([sys.executable, '-m', 'asvit_tf.cli.main', 'measure',
                           'asvit_seed', '--image_size=64', '--repeats=500', '--metrics=ntk'],
                          cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
  # Inside TensorFlow's measuring loop by now: importing, building and tracing take ~10
  # CPU-seconds. Counted in CPU time, not wall time, so that a loaded machine cannot make the
  # signal land during the imports.
  deadline = time.time() + 600
  while _cpu_seconds(proc.pid) < 14 and proc.poll() is None and time.time() < deadline:
    time.sleep(0.5)
  assert proc.poll() is None
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 130
  assert err.strip().splitlines() == ['error: interrupted; run the same command again to '
                                      'resume'], err


# ---- help -------------------------------------------------------------------------------
@pytest.mark.parametrize('command', ['describe', 'measure', 'grow', 'search'])
def test_help_names_the_command_and_what_to_type(command):
  r = _asvit(command, '--help')
  assert r.returncode == 0, r.stderr
  assert f'usage: asvit {command}' in r.stdout
  if command in ('describe', 'measure', 'grow'):
    forms = 'a topology string' in r.stdout and '@FILE' in r.stdout and 'search' in r.stdout
    assert forms and all(name in r.stdout for name in arch.variant_names()), r.stdout
  if command in ('describe', 'measure'):
    assert f'usage: asvit {command} ARCH' in r.stdout
  if command == 'grow':
    assert '--arch' in r.stdout
  if command == 'search':
    assert 'docs/benchmarks.md, "Search and grow speed"' in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize('command, flags', [
    ('train', ('--experiment', '--mode', '--model_dir', '--config_file', '--params_override')),
    ('export', ('--experiment', '--config_file', '--checkpoint_path', '--export_dir')),
    ('demo', ('--saved_model', '--image', '--output')),
])
def test_help_lists_the_flags(command, flags):
  r = _asvit(command, '--help')
  assert r.returncode == 0, r.stderr
  assert f'usage: asvit {command}' in r.stdout
  assert all(f in r.stdout for f in flags), r.stdout


# ---- bad input: one line, no traceback --------------------------------------------------
BAD_INPUT = [
    (('describe', 'asvit_seed', '--stride=-4'), '--stride must be an integer >= 1, got -4'),
    (('describe', 'asvit_seed', '--stride=0'), '--stride must be an integer >= 1, got 0'),
    (('describe', 'asvit_seed', '--num_classes=-3'), '--num_classes must be an integer >= 1'),
    (('describe', 'asvit_seed', '--image_size=1'), 'at least the tokenization stride 4'),
    (('describe', 'asvit_seed', '--image_size=abc'), 'flag --image_size=abc'),
    (('describe', '8,2,3|4,1,2|4,1,4|4,1,6|32.7'), "H must be an integer, got '32.7'"),
    (('describe', '8,2,3,99999999|4,1,2|4,1,4|4,1,6|32'), 'parameters'),
    (('describe', 'asvit_large', '--image_size=100000'), 'is too large'),
    (('describe', '@/nonexistent/seed.txt'), 'does not exist'),
    (('describe',), 'describe takes one ARCH'),
    (('frobnicate',), "unknown command 'frobnicate'"),
    (('measure', 'asvit_seed', '--image_size=100000'), 'is too large'),
    (('measure', '8,2,3,99999999|4,1,2|4,1,4|4,1,6|32'), 'parameters'),
    (('search', '--output_dir=OUT', '--image_size=100000'), 'is too large'),
    (('search', '--output_dir=OUT', '--steps=0'), '--steps must be an integer >= 1'),
    (('grow', '--arch=asvit_seed', '--output_dir=OUT', '--image_size=0'),
     '--image_size must be an integer >= 1'),
    (('grow', '--arch=asvit_seed', '--output_dir=OUT', '--max_params=1e12',
      '--target_params=1e9'), 'beyond what any single accelerator holds'),
    (('train', '--experiment=asvit_imagenet', '--mode=train', '--model_dir=FILE',
      f'--config_file={TINY_YAML}'), 'is a file'),
    (('train', '--experiment=asvit_imagenet', '--mode=train', '--model_dir=OUT',
      '--config_file=BAD_YAML'), 'does not parse as YAML'),
    (('train', '--experiment=asvit_imagenet', '--mode=train', '--model_dir=OUT',
      f'--config_file={TINY_YAML}', '--params_override=task.model.input_size=[100000,100000,3]'),
     'is too large'),
    (('export', '--experiment=cascadercnn_asvit_coco', f'--config_file={TINY_YAML}',
      '--export_dir=OUT'), 'config error'),
    (('demo', '--saved_model=OUT', '--image=FILE'), 'is not a SavedModel'),
    (('demo', '--saved_model=SAVED', '--image=FILE'), 'is not an image file'),
]


@pytest.mark.slow
@pytest.mark.parametrize('args, message', BAD_INPUT, ids=[' '.join(a)[:60] for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_without_traceback(tmp_path, args, message):
  saved = tmp_path / 'saved'
  saved.mkdir()
  (saved / 'saved_model.pb').write_bytes(b'')  # only looked at after the image is read
  (tmp_path / 'file.txt').write_text('not an image, not a directory\n')
  (tmp_path / 'bad.yaml').write_text('task: [unclosed\n  a: b: c\n')
  subs = {'OUT': str(tmp_path), 'FILE': str(tmp_path / 'file.txt'), 'SAVED': str(saved),
          'BAD_YAML': str(tmp_path / 'bad.yaml')}
  for key, value in subs.items():
    args = [a[:-len(key)] + value if a.endswith('=' + key) else a for a in args]
  r = _asvit(*args)
  lines = r.stderr.splitlines()
  assert r.returncode != 0
  assert len(lines) == 1 and lines[0].startswith('error: '), r.stderr
  assert message in lines[0] and 'Traceback' not in r.stderr


# ---- library errors name fields, the command line names flags ---------------------------
FIELD_ERRORS = [
    (('grow', '--arch=asvit_seed', '--output_dir=OUT', '--budgets=params:200M'),
     'error: the last budget params 200M exceeds --max_params (110000000): no model of the '
     'run could reach it'),
    (('grow', '--arch=asvit_seed', '--output_dir=OUT', '--max_params=1e12',
      '--target_params=1e9'),
     'error: --max_params 1e+12 is beyond what any single accelerator holds '
     '(asvit_tf.models.memory.MEMORY_CEILING)'),
    (('search', '--data=/nonexistent/images', '--output_dir=OUT'),
     'error: --data /nonexistent/images: no such folder'),
    (('search', '--strategy=evolution', '--population=4', '--tournament=5', '--output_dir=OUT'),
     'error: --tournament (5) must not exceed --population (4)'),
    (('search', '--backend=ray', '--ray_cpus_per_measurement=0', '--output_dir=OUT'),
     'error: --ray_cpus_per_measurement must be > 0, got 0.0'),  # field cpus_per_measurement
    (('correlate', '--table=/nonexistent/table.jsonl', '--out_dir=OUT'),
     'error: --table /nonexistent/table.jsonl: no such file'),
    (('correlate', '--ntk_data=/nonexistent/images', '--limit=2', '--image_size=32',
      '--noprogress', '--out_dir=OUT'),
     'error: --ntk_data /nonexistent/images: no such folder'),  # load_batch's field data
]


@pytest.mark.parametrize('args, line', FIELD_ERRORS,
                         ids=[' '.join(a)[:60] for a, _ in FIELD_ERRORS])
def test_library_errors_name_the_flags_on_the_command_line(tmp_path, args, line):
  """The library raises these naming its fields (`max_params`, `data`, `table`, ...)."""
  r = _asvit(*[a.replace('OUT', str(tmp_path / 'out')) for a in args], timeout=300)
  assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
  assert [l for l in r.stderr.splitlines() if l.startswith('error:')] == [line], r.stderr


# Each command's flags, in a process of its own: commands define flags of the same name.
_COMMAND_FLAGS = """
import importlib, json
from absl import flags
from asvit_tf.cli import main
defined = {}
for command in main.FIELD_FLAGS:
  module = importlib.import_module(main.COMMANDS[command][0])
  module.define_flags()
  defined[command] = sorted(main.command_flags(module))
  for name in defined[command]:
    delattr(flags.FLAGS, name)  # the next command defines its own
print(json.dumps(defined))
"""


@pytest.mark.slow
def test_every_field_to_flag_exception_names_a_flag_of_its_command():
  r = subprocess.run([sys.executable, '-c', _COMMAND_FLAGS], cwd=REPO, env=_env(),
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr
  defined = json.loads(r.stdout.splitlines()[-1])
  assert set(defined) == set(cli_main.FIELD_FLAGS) and set(defined) <= set(cli_main.COMMANDS)
  for command, exceptions in cli_main.FIELD_FLAGS.items():
    for field, flag in exceptions.items():
      assert field != flag, f'{command}: {field} is its own flag, not an exception'
      assert flag in defined[command], f'{command} has no --{flag} (the flag of {field})'
