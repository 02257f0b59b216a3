"""Markdown tables of metrics: one row per method (or fold), one column per metric."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from usvjax.metrics import keys as metric_keys


def markdown(rows: dict[str, Sequence[str]], columns: Sequence[str], first: str) -> str:
  """A markdown table: header ``first | columns``, then ``name | cells`` per row."""
  lines = [f'| {first} | ' + ' | '.join(columns) + ' |', '|' + '---|' * (len(columns) + 1)]
  lines += [f'| {name} | ' + ' | '.join(cells) + ' |' for name, cells in rows.items()]
  return '\n'.join(lines) + '\n'


def mean_std(values: Sequence[float], digits: int = 3) -> str:
  """'mean ± std' (standard deviation with ddof 1) of ``values``; the mean alone for one.

  Undefined values (NaN: e.g. ``empty_fp_rate`` on a split without a lesion-free frame)
  are left out, the count of the others said ('0.100 (2 of 3 runs)'); 'n/a' when none is
  defined."""
  values = np.asarray(values, float)
  defined = values[~np.isnan(values)]
  if not defined.size:
    return 'n/a'
  text = f'{defined.mean():.{digits}f}' + (
      f' ± {defined.std(ddof=1):.{digits}f}' if len(defined) > 1 else '')
  if len(defined) < len(values):
    text += f' ({len(defined)} of {len(values)} runs)'
  return text


def metrics_table(rows: dict[str, dict[str, float]],
                  keys: Sequence[str] = metric_keys.CLASSIFICATION_KEYS,
                  first: str = 'method') -> str:
  """``markdown`` of {name: metrics}, values to 3 decimals."""
  return markdown({name: [f'{m[k]:.3f}' for k in keys] for name, m in rows.items()}, keys,
                  first)
