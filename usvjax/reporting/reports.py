"""The files every evaluation report has: metrics.json and per_video.csv."""
from __future__ import annotations

from collections.abc import Sequence
import csv
import json
import os


def write_tables(directory: str, metrics: dict, rows: list[dict],
                 warnings: Sequence[str] = ()) -> None:
  """Writes ``metrics`` to metrics.json (keys sorted; any ``warnings``, lines a reader must
  see first, as its first key ``warnings``) and ``rows`` (one dict per video) to
  per_video.csv."""
  os.makedirs(directory, exist_ok=True)
  ordered = json.loads(json.dumps(metrics, sort_keys=True))  # Nested keys sorted too.
  if warnings:
    ordered = {'warnings': list(warnings), **ordered}
  with open(os.path.join(directory, 'metrics.json'), 'w') as f:
    json.dump(ordered, f, indent=2)
  with open(os.path.join(directory, 'per_video.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def file_name(text: str) -> str:
  """``text`` as one safe file name: characters other than letters, digits, '-' and '_'
  become '_'."""
  return ''.join(c if c.isalnum() or c in '-_' else '_' for c in text)
