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
from typing import Callable, List, Optional

from asvit_tf.errors import UserFacingError

COMMANDS = {
    'describe': ('asvit_tf.cli.describe', 'per-stage table of a topology: grid, width, '
                 'heads, window, blocks, params, MACs'),
    'measure': ('asvit_tf.cli.measure', 'complexity at initialisation: length distortion, '
                'curvature, NTK condition number'),
    'search': ('asvit_tf.cli.search', 'training-free REINFORCE search of a seed topology'),
    'grow': ('asvit_tf.cli.grow', 'training-free scaling of a seed into a family of models'),
    'train': ('asvit_tf.cli.train', 'Model Garden training with progressive re-tokenization'),
    'export': ('asvit_tf.cli.export', 'SavedModel export of a trained classifier or detector'),
    'demo': ('asvit_tf.cli.demo', 'run an exported detector on an image and draw the result'),
    'correlate': ('asvit_tf.cli.correlate', 'do the measures rank networks as training does? '
                  'tau/rho against a ground-truth table'),
}


def usage() -> str:
  lines = ['usage: asvit <command> [--flags]   (asvit <command> --help for its flags)', '',
           'commands:']
  for name, (module, text) in COMMANDS.items():
    if importlib.util.find_spec(module) is not None:
      lines.append(f'  {name:<9} {text}')
  return '\n'.join(lines)


def fail(message: str, code: int = 2):
  """Prints one clear line to stderr and exits."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(code)


def user_errors(main: Callable[[List[str]], Optional[int]]):
  """Wraps a command's main: errors a user can cause become one line and a non-zero exit."""
  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError,
            UserFacingError) as e:
      fail(str(e) or type(e).__name__)
  return wrapped


def run(argv: Optional[List[str]] = None):
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('-h', '--help', 'help'):
    print(usage())
    sys.exit(0 if len(argv) >= 2 else 2)
  command = argv[1]
  if command not in COMMANDS or importlib.util.find_spec(COMMANDS[command][0]) is None:
    fail(f'unknown command {command!r}; run "asvit --help" for the list')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # keep TensorFlow's C++ start-up chatter out
  module = importlib.import_module(COMMANDS[command][0])
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  module.define_flags()
  # `--help` lists the key flags of the main module: make the command's flags those.
  for flag in flags.FLAGS.get_key_flags_for_module(module.__name__):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(user_errors(module.main), argv=[f'asvit {command}'] + argv[2:])


if __name__ == '__main__':
  run()
