"""Fingerprints of a local dataset folder, so that a changed folder is never read stale.

TFDS caches a conversion by builder, config and version, not by the files it was made
from. ``folder_fingerprint`` hashes the folder's file list with each file's size and
modification time (names as bytes: any file name works; contents are not read, so it
takes a directory walk, not a pass over the data). ``pipeline.get_builder`` stores it
beside the conversion (``SOURCE_FILE`` in the builder's data directory) and converts the
folder again when it no longer matches.
"""
from __future__ import annotations

import hashlib
import json
import os

SOURCE_FILE = 'source_fingerprint.json'


def folder_fingerprint(folder: str) -> dict:
  """{'folder', 'files', 'bytes', 'sha256'} of every file under ``folder`` (relative path,
  size and mtime in nanoseconds, in sorted order)."""
  root = os.fsencode(os.path.abspath(folder))
  entries = []
  for directory, _, names in os.walk(root):
    for name in names:
      path = os.path.join(directory, name)
      stat = os.stat(path)
      entries.append((os.path.relpath(path, root), stat.st_size, stat.st_mtime_ns))
  digest = hashlib.sha256()
  for relative, size, mtime in sorted(entries):
    digest.update(relative + b'\0' + f'{size} {mtime}\n'.encode())
  return {'folder': os.fsdecode(root), 'files': len(entries),
          'bytes': sum(size for _, size, _ in entries), 'sha256': digest.hexdigest()}


def read_json(path: str) -> dict | None:
  """The JSON object in ``path``, or None when there is no such file."""
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def write_atomically(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` through a temporary file: a kill leaves the old or the new."""
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(path + '.tmp', path)


def stored(data_dir: str) -> dict | None:
  """The fingerprint stored beside the conversion in ``data_dir``, if any."""
  return read_json(os.path.join(data_dir, SOURCE_FILE))


def store(data_dir: str, fingerprint: dict) -> None:
  write_atomically(os.path.join(data_dir, SOURCE_FILE), json.dumps(fingerprint, indent=2))
