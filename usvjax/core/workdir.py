"""The run directory: created writable, held by one trainer at a time, written with clear
errors.

``hold(workdir)`` creates the directory (a read-only, missing or full filesystem is one
clear error naming the path) and, on process 0, takes an exclusive ``fcntl.flock`` on
``<workdir>/.lock`` for the whole training, writing its host and process id into it. A
second trainer on the same directory stops at once and says which process holds it. The
kernel releases a flock when its process dies, however it dies, so the lock file a killed
trainer leaves behind is stale by construction and the next trainer takes it over. (flock
is reliable on local filesystems; on NFS, start one trainer per workdir yourself.)

Before each checkpoint the trainer calls ``check_space(workdir, bytes, what, then)``: a
read-only filesystem, a directory it may not write, or less free space than the checkpoint
needs stops the run there, with one error and before Orbax starts writing (whose own
failure would log a page of asynchronous tracebacks). ``writing(workdir, what, then)`` turns a filesystem failure while the run writes (disk full,
quota exceeded, filesystem remounted read-only, permissions changed) into one
``WorkdirError`` naming the directory, what was being written and what to do, whether the
failure comes from Python (``OSError``) or from TensorStore under Orbax (a ``ValueError``
whose message carries ``os_error_code``).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import socket
from collections.abc import Iterator

import jax

LOCK_FILE = '.lock'
# What the person running the job can do something about, by errno.
_HINTS = {errno.EROFS: 'the filesystem is read-only', errno.ENOSPC: 'the disk is full',
          errno.EDQUOT: 'the disk quota is exceeded', errno.EACCES: 'permission denied',
          errno.EPERM: 'permission denied'}
_TENSORSTORE_ERRNO = re.compile(r"os_error_code='?(\d+)")


class WorkdirError(OSError):
  """The run directory cannot be used: not writable, or held by another trainer."""

  def __str__(self) -> str:
    return self.strerror


def _create(workdir: str) -> None:
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(errno.ENOTDIR, f'the run directory {workdir!r} is a file, not a '
                       'directory. Pass another --workdir (a directory, or a path to create), '
                       'or move the file away.')
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise WorkdirError(e.errno, f'cannot create the run directory {workdir!r}: {e.strerror}. '
                       'Pass a --workdir on a writable filesystem with free space.') from e


def create_writable(workdir: str) -> None:
  """Creates ``workdir`` and checks that files can be written in it: a path that is a file,
  cannot be created, or lies on a read-only or full filesystem is one ``WorkdirError``."""
  _create(workdir)
  check_space(workdir, 1, 'the run\'s files', 'Pass a --workdir on a writable filesystem '
              'with free space.')


def _filesystem_errno(error: Exception) -> int | None:
  """The errno of a filesystem failure the user can fix, else None."""
  if isinstance(error, OSError) and not isinstance(error, WorkdirError):
    code = error.errno
  else:
    match = _TENSORSTORE_ERRNO.search(str(error)) if isinstance(error, ValueError) else None
    code = int(match.group(1)) if match else None
  return code if code in _HINTS else None


@contextlib.contextmanager
def writing(workdir: str, what: str, then: str) -> Iterator[None]:
  """Runs the block; a disk-full, read-only or permission failure in it becomes one
  ``WorkdirError``: 'cannot write <what> in the run directory <workdir> (<cause>). <then>'."""
  try:
    yield
  except (OSError, ValueError) as e:
    code = _filesystem_errno(e)
    if code is None:
      raise
    raise WorkdirError(code, f'cannot write {what} in the run directory {workdir!r} '
                       f'({_HINTS[code]}). {then}') from e


def free_bytes(path: str) -> int:
  """Bytes an unprivileged user may still write on the filesystem of ``path``."""
  stats = os.statvfs(path)
  return stats.f_bavail * stats.f_frsize


def check_space(workdir: str, needed: int, what: str, then: str) -> None:
  """Raises ``WorkdirError`` if ``needed`` bytes of ``what`` cannot be written in
  ``workdir`` now: read-only, not writable, or not enough free space."""
  free = free_bytes(workdir)
  if os.statvfs(workdir).f_flag & os.ST_RDONLY:
    code, detail = errno.EROFS, ''
  elif not os.access(workdir, os.W_OK):
    code, detail = errno.EACCES, ''
  elif free < needed:
    code, detail = errno.ENOSPC, f': {free / 1e6:.1f} MB free, {needed / 1e6:.1f} MB needed'
  else:
    return
  raise WorkdirError(code, f'cannot write {what} in the run directory {workdir!r} '
                     f'({_HINTS[code]}{detail}). {then}')


def _open_lock(workdir: str):
  with writing(workdir, 'its lock file', 'Pass a --workdir on a writable filesystem with '
               'free space.'):
    return open(os.path.join(workdir, LOCK_FILE), 'a+', encoding='utf-8')  # pylint: disable=consider-using-with


def _in_use(workdir: str, lock) -> WorkdirError:
  lock.seek(0)
  holder = lock.read().strip() or 'another process'
  return WorkdirError(errno.EBUSY, f'the run directory {workdir!r} is in use by a running '
                      f'trainer ({holder}). Wait for it to finish, stop it, or pass another '
                      '--workdir.')


def check_free(workdir: str) -> None:
  """Raises the ``WorkdirError`` of ``hold`` if a running trainer holds ``workdir`` (on
  process 0, the one that takes the lock)."""
  path = os.path.join(workdir, LOCK_FILE)
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  with open(path, encoding='utf-8') as lock:  # flock needs no write access.
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      raise _in_use(workdir, lock) from e


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Creates ``workdir`` and holds its lock (process 0) while the block runs."""
  _create(workdir)
  if jax.process_index() != 0:
    yield
    return
  lock = _open_lock(workdir)
  try:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      raise _in_use(workdir, lock) from e
    lock.seek(0)
    lock.truncate()
    lock.write(f'host {socket.gethostname()}, pid {os.getpid()}\n')
    lock.flush()
    yield
  finally:
    lock.close()  # Releases the flock.
