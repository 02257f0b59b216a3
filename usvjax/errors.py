"""Errors the person running a command can fix.

A ``ConfigError`` says which setting (config key, flag, split, checkpoint, file) cannot
work and what to do; the entry points print it as one line and exit 1
(``experiments/common.py:USER_ERRORS``, with ``DatasetError``, ``NonFiniteLossError`` and
``OSError``). Any other exception is a bug and shows its traceback. It is a ``ValueError``,
so code that catches bad values keeps working.
"""


class ConfigError(ValueError):
  """A setting that cannot work; the message names it and says what to do."""
