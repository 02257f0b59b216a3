"""What a command shows: its own lines on the terminal, the libraries' in a log file.

At the default verbosity (no ``--verbosity`` flag) an entry point calls ``set_up`` once its
flags are parsed, and from then on

* the terminal shows this project's lines: its log records (files of this repository) from
  INFO up as plain lines (a warning led by 'warning: '), the progress bars, the data
  summary and the results, and a user error as one line that names the log (``fail_line``);
* the log file receives the libraries' warnings and errors (TFDS's deprecation notices,
  Orbax's thread tracebacks and "Given directory is read only", TensorFlow's logger),
  Python warnings, the native output written to the process's stdout and stderr (the
  coordination service's errors, gloo's lines, whatever TensorFlow or XLA print), what the libraries print
  while a dataset is prepared (``library_output``: "Downloading and preparing dataset ...
  Unknown size" for a local folder), the tracebacks of errors raised in the libraries'
  native threads, and the traceback behind every user error. TFDS's progress bars are off.

Native info and warning lines (``PredictCost CropAndResize``) are hidden before
TensorFlow or XLA load: ``quiet_native`` sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless it is set.
It also turns TensorFlow's oneDNN custom operations off (``TF_ENABLE_ONEDNN_OPTS=0`` unless
set), loud or not: TensorFlow turns them on only on CPUs with AVX-512 or AMX, so with them the
input pipeline's arithmetic would depend on the machine, and their "oneDNN custom operations
are on" line is printed through absl even at ``TF_CPP_MIN_LOG_LEVEL=2`` once JAX has loaded.

The log is ``<workdir>/errors.log`` (``errors.process<I>.log`` for process I > 0 of a
multi-process run) where the command has a workdir that is, or can be made, a writable
directory; otherwise (no workdir, a workdir that is a file or read-only) ``fallback_log()``:
``usvjax-errors-<user>.log`` in the temporary directory. Each command appends a header line.

``--verbosity=N`` (any N: 0 INFO, 1 debug, -1 warnings) turns all of this off: every
library's messages go to the terminal as absl prints them.
"""
from __future__ import annotations

import contextlib
import datetime
import getpass
import logging
import os
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator, Sequence
from typing import TextIO

LOG_NAME = 'errors.log'
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_FORMAT = '%(levelname).1s%(asctime)s %(name)s %(filename)s:%(lineno)d] %(message)s'


class _Log:
  """The log file, written line-buffered. A write that fails (the log is on the disk that
  just filled up) moves the log to ``fallback_log()``; if that fails too, the text is lost,
  never raised or printed."""

  def __init__(self, stream: TextIO, path: str):
    self.stream, self.path = stream, path

  def write(self, text: str) -> bool:
    """Writes ``text``; False if it could be written nowhere."""
    try:
      self.stream.write(text)
      return True
    except OSError:
      if self.path == fallback_log():
        return False
    try:
      self.stream, self.path = _append(fallback_log()), fallback_log()
      self.stream.write(text)
      return True
    except OSError:
      return False

  def flush(self) -> None:
    try:
      self.stream.flush()
    except OSError:
      pass


class _LibraryHandler(logging.StreamHandler):
  """The libraries' records (warnings and up) into the log; a failing write is dropped."""

  def handleError(self, record: logging.LogRecord) -> None:
    del record


class _Stderr:
  """``sys.stderr`` once set up: the main thread's writes (progress bars, the error line, a
  bug's traceback) on the terminal, other threads' (the tracebacks TensorStore's callbacks
  print after a failed save) in the log."""

  def __init__(self, terminal: TextIO):
    self.terminal = terminal

  def write(self, text: str) -> int:
    if threading.current_thread() is threading.main_thread() or _log is None:
      return self.terminal.write(text)
    _log.write(text)
    return len(text)

  def flush(self) -> None:
    self.terminal.flush()

  def __getattr__(self, name: str):  # fileno, isatty, encoding: the terminal's.
    return getattr(self.terminal, name)


# The log once ``set_up`` has run at the default verbosity, else None.
_log: _Log | None = None


def loud(argv: Sequence[str]) -> bool:
  """Whether the command line asks for the libraries' messages (``--verbosity``/``-v``)."""
  return any(a.split('=')[0] in ('--verbosity', '-v', '--v') for a in argv[1:])


def quiet_native(argv: Sequence[str]) -> None:
  """Hides TensorFlow's and XLA's native info and warning lines, unless ``argv`` is loud or
  ``TF_CPP_MIN_LOG_LEVEL`` is set, and turns TensorFlow's machine-dependent oneDNN
  operations off unless ``TF_ENABLE_ONEDNN_OPTS`` is set. Call before TensorFlow or JAX is
  imported."""
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  if not loud(argv):
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def fallback_log() -> str:
  """The log of a command without a usable workdir."""
  return os.path.join(tempfile.gettempdir(), f'usvjax-errors-{getpass.getuser()}.log')


def log_path() -> str:
  """The log file of this command ('' when the libraries print to the terminal)."""
  return _log.path if _log is not None else ''


class _ProjectLine(logging.Formatter):
  """A project log record as a terminal line: its message, a warning's or an error's led by
  'warning: ' or 'error: ' (as the commands' own lines are), without absl's prefix of
  level, time, thread and source line (the log file keeps that for library records)."""

  def format(self, record: logging.LogRecord) -> str:
    message = super().format(record)
    if record.levelno >= logging.WARNING:
      return f'{"error" if record.levelno >= logging.ERROR else "warning"}: {message}'
    return message


def _from_project(record: logging.LogRecord) -> bool:
  path = os.path.abspath(record.pathname)
  return path.startswith(_REPO + os.sep) and f'{os.sep}site-packages{os.sep}' not in path


def _append(path: str) -> TextIO:
  return open(path, 'a', buffering=1, encoding='utf-8')  # pylint: disable=consider-using-with


def _open(workdir: str, create: bool, process_id: int) -> _Log:
  """The log in ``workdir`` (created if ``create``), else the fallback."""
  name = LOG_NAME if process_id == 0 else f'errors.process{process_id}.log'
  if workdir:
    try:
      if create:
        os.makedirs(workdir, exist_ok=True)
      return _Log(_append(os.path.join(workdir, name)), os.path.join(workdir, name))
    except OSError:
      pass
  return _Log(_append(fallback_log()), fallback_log())


def set_up(workdir: str = '', create: bool = False, process_id: int = 0) -> None:
  """Sends the libraries' messages to the log (see the module docstring). ``create``: the
  command makes its workdir (a trainer), so the log may create it too."""
  global _log
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  _log = _open(workdir, create, process_id)
  _log.write(f'=== {datetime.datetime.now().isoformat(timespec="seconds")} pid {os.getpid()}: '
             f'{" ".join(sys.argv)}\n')
  sys.stdout.flush()
  sys.stderr.flush()
  out, terminal = (os.fdopen(os.dup(fd), 'w', buffering=1, encoding='utf-8',
                             errors='backslashreplace') for fd in (1, 2))
  for fd in (1, 2):  # Native writes (gloo prints to stdout).
    os.dup2(_log.stream.fileno(), fd)
  sys.stdout, sys.stderr = out, _Stderr(terminal)
  absl_logging.set_verbosity(absl_logging.INFO)
  handler = absl_logging.get_absl_handler()
  handler.python_handler.setStream(terminal)
  handler.python_handler.setFormatter(_ProjectLine())
  handler.addFilter(_from_project)
  libraries = _LibraryHandler(_log)
  libraries.setLevel(logging.WARNING)
  libraries.setFormatter(logging.Formatter(_FORMAT))
  libraries.addFilter(lambda record: not _from_project(record))
  logging.root.addHandler(libraries)
  for name in ('tensorflow', 'jax'):  # Their own stderr handlers: to the root's instead.
    logging.getLogger(name).handlers.clear()
    logging.getLogger(name).propagate = True
  logging.captureWarnings(True)
  tfds.disable_progress_bar()


@contextlib.contextmanager
def library_output() -> Iterator[None]:
  """What the libraries print to stdout in the block goes to the log (where there is one)."""
  if _log is None:
    yield
    return
  with contextlib.redirect_stdout(_log):  # type: ignore[type-var]
    yield


def say(message: str) -> None:
  """A line for the person running the command (process 0 only), above any progress bar.
  jax and tqdm are imported here: the TensorFlow-free core (checkpoints, the benchmark)
  imports this module without needing tqdm."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    tqdm.write(message)


def terminal() -> TextIO:
  """The terminal's stream, for a line printed from any thread (a lost peer's)."""
  return sys.stderr.terminal if isinstance(sys.stderr, _Stderr) else sys.stderr


def fail_line(error: BaseException) -> str:
  """The one line of a user error; with a log, the error's traceback is written there and
  the line names it."""
  if _log is None or not _log.write(''.join(traceback.format_exception(error))):
    return f'error: {error}'
  return f'error: {error} (library messages and the traceback: {_log.path})'
