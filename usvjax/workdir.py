"""The run directory: created writable, and held by one trainer at a time.

``hold(workdir)`` creates the directory (a read-only, missing or full filesystem is one
clear error naming the path) and, on process 0, takes an exclusive ``fcntl.flock`` on
``<workdir>/.lock`` for the whole training, writing its host and process id into it. A
second trainer on the same directory stops at once and says which process holds it. The
kernel releases a flock when its process dies, however it dies, so the lock file a killed
trainer leaves behind is stale by construction and the next trainer takes it over. (flock
is reliable on local filesystems; on NFS, start one trainer per workdir yourself.)
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Iterator

import jax

LOCK_FILE = '.lock'


class WorkdirError(OSError):
  """The run directory cannot be used: not writable, or held by another trainer."""


def _create(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise WorkdirError(e.errno, f'cannot create the run directory {workdir!r}: {e.strerror}. '
                       'Pass a --workdir on a writable filesystem with free space.') from e


def _open_lock(workdir: str):
  path = os.path.join(workdir, LOCK_FILE)
  try:
    return open(path, 'a+', encoding='utf-8')  # pylint: disable=consider-using-with
  except OSError as e:
    hint = {errno.EROFS: 'the filesystem is read-only', errno.ENOSPC: 'the disk is full',
            errno.EACCES: 'permission denied'}.get(e.errno, e.strerror)
    raise WorkdirError(e.errno, f'cannot write to the run directory {workdir!r} ({hint}). '
                       'Pass a --workdir on a writable filesystem with free space.') from e


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
      lock.seek(0)
      holder = lock.read().strip() or 'another process'
      raise WorkdirError(errno.EBUSY, f'the run directory {workdir!r} is in use by a running '
                         f'trainer ({holder}). Wait for it to finish, stop it, or pass another '
                         '--workdir.') from e
    lock.seek(0)
    lock.truncate()
    lock.write(f'host {socket.gethostname()}, pid {os.getpid()}\n')
    lock.flush()
    yield
  finally:
    lock.close()  # Releases the flock.
