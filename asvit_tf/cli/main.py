"""`asvit <command> [--flags]`: one console script, one absl-flags module per command.

Only the chosen command's module is imported, and its flags are defined (`define_flags()`)
only when it runs: commands may share flag names, importing one defines nothing, and
TensorFlow is loaded only by the commands that need it.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from typing import Callable, Collection, List, Optional, Set

import asvit_tf
from asvit_tf import arch as arch_lib
from asvit_tf import errors
from asvit_tf.errors import UserFacingError

COMMANDS = {
    'describe': ('asvit_tf.cli.describe', 'per-stage table of a topology: grid, width, '
                 'heads, window, blocks, params, MACs'),
    'measure': ('asvit_tf.cli.measure', 'complexity at initialisation: length distortion, '
                'curvature, NTK condition number'),
    'search': ('asvit_tf.cli.search', 'training-free search of a seed '
               'topology (REINFORCE or evolution)'),
    'grow': ('asvit_tf.cli.grow', 'training-free scaling of a seed into a family of models'),
    'rescore': ('asvit_tf.cli.rescore', 're-rank chosen grow steps under another setting: '
                'same choice? Kendall-tau of the rankings'),
    'train': ('asvit_tf.cli.train', 'Model Garden training with progressive re-tokenization'),
    'export': ('asvit_tf.cli.export', 'SavedModel export of a trained classifier or detector'),
    'demo': ('asvit_tf.cli.demo', 'run an exported detector on an image and draw the result'),
    'compare_searches': ('asvit_tf.cli.compare_searches', 'seed searches (REINFORCE, '
                         'evolution) compared at equal measurements on their pooled ranks'),
    'compare_families': ('asvit_tf.cli.compare_families', 'scaling runs side by side at '
                         'the paper\'s three sizes: MACs against the paper\'s, a plot'),
    'correlate': ('asvit_tf.cli.correlate', 'do the measures rank networks as training does? '
                  'tau/rho against a ground-truth table'),
}


# Library errors name config fields and arguments (`asvit_tf.errors`); a command shows the flag
# that set each. A field is its flag's name, except these (field: flag, per command).
_RAY_FIELDS = {'address': 'ray_address', 'cpus_per_measurement': 'ray_cpus_per_measurement',
               'gpus_per_measurement': 'ray_gpus_per_measurement'}  # ray_evaluator.RayOptions
FIELD_FLAGS = {
    'search': {**_RAY_FIELDS, 'fitness': 'reward'},  # EvolutionConfig.fitness
    'grow': {**_RAY_FIELDS, 'budget_metric': 'budgets'},  # --budgets=KIND:B1,B2,...
    'rescore': {**_RAY_FIELDS, 'data': 'ntk_data'},  # rescore.Changes.data
    # data.load_batch reads --ntk_data; search/lock.py names the run directory `output_dir`
    'correlate': {**_RAY_FIELDS, 'data': 'ntk_data', 'output_dir': 'out_dir'},
    'train': {'config_files': 'config_file'},  # train_lib.parse_configuration
    'export': {'config_files': 'config_file'},  # export.load_params
}


def command_flags(module) -> Set[str]:
  """The names of the flags a command's module defined (its key flags: what --help lists)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  return {f.name for f in flags.FLAGS.get_key_flags_for_module(module.__name__)}


def flag_namer(command: str, defined: Collection[str]) -> Callable[[str], Optional[str]]:
  """field -> the name of the flag of `command` that sets it, None if none of `defined` does."""
  exceptions = FIELD_FLAGS.get(command, {})
  def flag_of(field: str) -> Optional[str]:
    flag = exceptions.get(field, field)
    return flag if flag in defined else None
  return flag_of


def usage() -> str:
  lines = ['usage: asvit <command> [--flags]   (asvit <command> --help for its flags)',
           '       asvit --version', '', 'commands:']
  width = max(len(name) for name in COMMANDS)
  for name, (module, text) in COMMANDS.items():
    if importlib.util.find_spec(module) is not None:
      lines.append(f'  {name:<{width}} {text}')
  return '\n'.join(lines)


TRACEBACK_ENV = 'ASVIT_TRACEBACK'  # set to 1: every error keeps its traceback
INTERRUPTED = 'interrupted; run the same command again to resume'
# File-system errors name what the user pointed at: one line, like a UserFacingError.
FILE_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def _show_tracebacks() -> bool:
  return os.environ.get(TRACEBACK_ENV, '') not in ('', '0')


def fail(message: str, code: int = 2):
  """Prints one clear line to stderr and exits."""
  print(f'error: {" ".join(str(message).split())}', file=sys.stderr)
  sys.exit(code)


def _file_error_message(e: OSError) -> str:
  if e.filename is not None and e.strerror:
    return f'{e.filename}: {e.strerror}'
  return str(e) or type(e).__name__


def _quiet_broken_pipe():
  """The reader of stdout went away (`asvit describe ... | head -1`): exit without a word."""
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, sys.stdout.fileno())  # the final flush at exit must not fail again
  sys.exit(141)  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe


def user_errors(main: Callable[[List[str]], Optional[int]],
                flag_of: Callable[[str], Optional[str]] = lambda field: None):
  """Wraps a command's main: errors the user caused become one line and a non-zero exit.

  Those are `UserFacingError` (with `UserInputError`) and file-system errors; anything else
  is a bug and keeps its traceback. With ASVIT_TRACEBACK=1 every error keeps it. The fields
  the line names are shown as the flags `flag_of` gives (`errors.with_flags`).
  """
  @functools.wraps(main)
  def wrapped(argv):
    if _show_tracebacks():
      return main(argv)
    try:
      code = main(argv)
      sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
      return code
    except UserFacingError as e:
      fail(errors.with_flags(str(e) or type(e).__name__, flag_of))
    except FILE_ERRORS as e:
      fail(errors.with_flags(_file_error_message(e), flag_of))
    except BrokenPipeError:
      _quiet_broken_pipe()
    except KeyboardInterrupt:
      fail(INTERRUPTED, 130)
  return wrapped


def command_help(command: str, module) -> str:
  """`asvit <command> --help`: the command's usage and docstring, then its flags."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  arch_arg = getattr(module, 'ARCH_ARGUMENT', None)  # 'ARCH' (positional) or '--arch'
  positional = ' ARCH' if arch_arg == 'ARCH' else ''
  text = [f'usage: asvit {command}{positional} [--flags]', '', (module.__doc__ or '').strip(),
          '']
  if arch_arg:
    text += [f'{arch_arg}: {arch_lib.arch_help()}.', '']
  # module_help starts with a line naming the module: the flags follow it.
  flag_help = flags.FLAGS.module_help(module.__name__).strip('\n').split('\n', 1)
  text += [f'flags of asvit {command}:', flag_help[1] if len(flag_help) == 2 else '  none']
  return '\n'.join(text)


def _parse_flags(argv: List[str]) -> List[str]:
  """absl's flag parsing, with a bad flag reported as one line."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    command = argv[0].split()[-1]
    fail(f'{e} (run "asvit {command} --help" for its flags)')


def run(argv: Optional[List[str]] = None):
  try:
    _run(list(sys.argv if argv is None else argv))
  except KeyboardInterrupt:
    if _show_tracebacks():
      raise
    fail(INTERRUPTED, 130)
  except BrokenPipeError:
    _quiet_broken_pipe()


def _run(argv: List[str]):
  if len(argv) < 2 or argv[1] in ('-h', '--help', 'help'):
    print(usage())
    sys.exit(0 if len(argv) >= 2 else 2)
  if argv[1] in ('--version', 'version'):
    print(f'asvit {asvit_tf.__version__}')
    sys.exit(0)
  command = argv[1]
  if command not in COMMANDS or importlib.util.find_spec(COMMANDS[command][0]) is None:
    fail(f'unknown command {command!r}; run "asvit --help" for the list')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # keep TensorFlow's C++ start-up chatter out
  module = importlib.import_module(COMMANDS[command][0])
  from absl import app  # pylint: disable=g-import-not-at-top
  module.define_flags()
  if any(a in ('-h', '--help', '-help', '--helpshort', '-?') for a in argv[2:]):
    print(command_help(command, module))
    sys.exit(0)
  app.run(user_errors(module.main, flag_namer(command, command_flags(module))),
          argv=[f'asvit {command}'] + argv[2:], flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
