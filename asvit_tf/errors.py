"""Errors the command lines report as one line (`asvit_tf.cli.main.user_errors`).

Only these (and file-system errors that name their file) become one line; any other exception
is a bug and keeps its traceback.

A library message names what the caller gave by its config field or argument, in backquotes:
"`max_params` 1000 admits no topology of the search space". A Python caller reads the name it
passed; a command line shows the flag that set it instead ("--max_params 1000 admits ..."):
`with_flags` rewrites the marked names, with the command's table of field -> flag
(`asvit_tf.cli.main.FIELD_FLAGS`). So no library module needs to know the flags.
"""
import re
from typing import Callable, Optional

# A marked name: a Python identifier in backquotes. `foo.bar` or `asvit search` are not one.
FIELD = re.compile(r'`([A-Za-z_][A-Za-z0-9_]*)`')


class UserFacingError(RuntimeError):
  """A failure the user can act on (its message says how): one line, no traceback."""


class UserInputError(UserFacingError, ValueError):
  """A value the user gave breaks a rule; the message names the value and the rule.

  Also a `ValueError`, so library callers that catch `ValueError` keep working.
  """


def with_flags(message: str, flag_of: Callable[[str], Optional[str]]) -> str:
  """`message` with each marked field that `flag_of` maps to a flag written as `--flag`.

  A marked name `flag_of` returns None for (no flag sets it) keeps its backquotes.
  """
  def flag(match):
    name = flag_of(match.group(1))
    return f'--{name}' if name else match.group(0)
  return FIELD.sub(flag, message)
