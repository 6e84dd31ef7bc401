"""Errors the command lines report as one line (`asvit_tf.cli.main.user_errors`).

Only these (and file-system errors that name their file) become one line; any other exception
is a bug and keeps its traceback.
"""


class UserFacingError(RuntimeError):
  """A failure the user can act on (its message says how): one line, no traceback."""


class UserInputError(UserFacingError, ValueError):
  """A value the user gave breaks a rule; the message names the value and the rule.

  Also a `ValueError`, so library callers that catch `ValueError` keep working.
  """
