"""Fingerprints of a local dataset folder, so that a changed folder is never read stale.

TFDS caches a conversion by builder, config and version, not by the files it was made
from. ``folder_fingerprint`` hashes what the folder holds: each file's path relative to the
folder (names as bytes: any file name works), size and contents (sha256). Contents, not
modification times: a folder copied to another disk or machine, or restored from an
archive, has new times but is the same data, and must neither be converted again nor make
``compare`` rerun finished runs.

Reading every file costs one pass over the data, so the per-file hashes are kept beside the
conversion (``HASHES_FILE``) with each file's size and modification time; a file whose size
and time match its entry is not read again, so a run on an unchanged folder costs a
directory walk. ``pipeline.get_builder`` stores the fingerprint beside the conversion
(``SOURCE_FILE`` in the builder's data directory) and converts the folder again when it no
longer matches. Records made before contents were hashed (a ``sha256`` of sizes and times,
no ``content_sha256``) cannot be compared: a conversion with one is converted again once,
and ``same_source`` treats a run recorded with one as made from today's files when their
number and total size agree.
"""
from __future__ import annotations

import hashlib
import json
import os

SOURCE_FILE = 'source_fingerprint.json'
HASHES_FILE = 'source_file_hashes.json'
_CHUNK = 1 << 20


def _file_sha256(path: bytes) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def file_hashes(folder: str, known: dict | None = None) -> dict[str, list]:
  """{relative path: [size, mtime in ns, sha256 of the contents]} of every file under
  ``folder``; files listed in ``known`` with the same size and time keep their hash unread.
  """
  root = os.fsencode(os.path.abspath(folder))
  known = known or {}
  out = {}
  for directory, _, names in os.walk(root):
    for name in names:
      path = os.path.join(directory, name)
      stat = os.stat(path)
      relative = os.fsdecode(os.path.relpath(path, root))
      entry = known.get(relative)
      if entry is None or entry[:2] != [stat.st_size, stat.st_mtime_ns]:
        entry = [stat.st_size, stat.st_mtime_ns, _file_sha256(path)]
      out[relative] = entry
  return out


def folder_fingerprint(folder: str, hashes: dict[str, list]) -> dict:
  """{'folder', 'files', 'bytes', 'content_sha256'} of the folder whose ``file_hashes`` are
  ``hashes`` (a sha256 over each file's relative path, size and contents' sha256, in sorted
  order; modification times do not enter it)."""
  digest = hashlib.sha256()
  for relative in sorted(hashes, key=os.fsencode):
    size, _, content = hashes[relative]
    digest.update(os.fsencode(relative) + b'\0' + f'{size} {content}\n'.encode())
  return {'folder': os.path.abspath(folder), 'files': len(hashes),
          'bytes': sum(size for size, _, _ in hashes.values()),
          'content_sha256': digest.hexdigest()}


def same_source(a: dict | None, b: dict | None) -> bool:
  """Whether two fingerprints describe the same files, wherever the folder lies (records
  without ``content_sha256``: the same number of files and bytes)."""
  if a is None or b is None:
    return a is b
  if 'content_sha256' in a and 'content_sha256' in b:
    return a['content_sha256'] == b['content_sha256']
  return (a['files'], a['bytes']) == (b['files'], b['bytes'])


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


def stored_hashes(data_dir: str) -> dict[str, list]:
  """The per-file hashes kept beside the conversion in ``data_dir`` ({} if none)."""
  return read_json(os.path.join(data_dir, HASHES_FILE)) or {}


def store_hashes(data_dir: str, hashes: dict[str, list]) -> None:
  write_atomically(os.path.join(data_dir, HASHES_FILE), json.dumps(hashes))
