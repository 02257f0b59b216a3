"""docs/results.md quotes no interval that is not a row of a CSV under docs/results/: every
'difference [lo, hi]' it prints is some row's paired_*_difference and paired_*_ci95_lo /
_hi, rounded to the digits shown."""
import csv
import glob
import os
import re

DOCS = os.path.join(os.path.dirname(__file__), os.pardir, 'docs')
QUOTED = re.compile(r'([+-]\d\.\d{3}) (?:AUC )?\[([+-]\d\.\d{3}), ([+-]\d\.\d{3})\]')


def _csv_intervals() -> set[tuple[str, str, str]]:
  found = set()
  for path in glob.glob(os.path.join(DOCS, 'results', '*.csv')):
    with open(path, newline='') as f:
      for row in csv.DictReader(f):
        for key in row:
          if key.startswith('paired_') and key.endswith('_difference') and row[key]:
            prefix = key.removesuffix('_difference')
            values = (row[key], row[f'{prefix}_ci95_lo'], row[f'{prefix}_ci95_hi'])
            found.add(tuple(f'{float(v):+.3f}' for v in values))
  return found


def test_every_quoted_interval_is_a_csv_row():
  with open(os.path.join(DOCS, 'results.md')) as f:
    text = ' '.join(f.read().split())  # An interval may be wrapped over two lines.
  quoted = QUOTED.findall(text)
  assert len(quoted) >= 20  # The tables and the hard-frame study.
  missing = sorted(set(quoted) - _csv_intervals())
  assert not missing, f'intervals in docs/results.md without a CSV row: {missing}'
