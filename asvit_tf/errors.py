"""Errors the command lines report as one line (`asvit_tf.cli.main.user_errors`)."""


class UserFacingError(RuntimeError):
  """A failure the user can act on (its message says how): one line, no traceback."""
