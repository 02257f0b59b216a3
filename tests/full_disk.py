"""Runs an entry point on a disk that fills up during its first checkpoint save.

  python tests/full_disk.py experiments.train --config=... --workdir=...

Orbax writes each array's metadata (``array_metadatas/``) with ``etils.epath`` from its own
worker threads; here those writes fail with ENOSPC, as they do on a full disk, so Orbax logs
its threads' tracebacks and the save fails, as in a real run (a full tmpfs gives the same).
"""
import errno
import os
import runpy
import sys

from etils import epath

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_write_text = epath.Path.write_text


def _full_disk(path, *args, **kwargs):
  if 'array_metadatas' in os.fspath(path):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
  return _write_text(path, *args, **kwargs)


if __name__ == '__main__':
  epath.Path.write_text = _full_disk
  sys.argv = sys.argv[1:]
  runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
