"""Speckle robustness study (DSANet, Table II) of any segmentation checkpoint.

The test split is evaluated clean and with multiplicative Gamma speckle of look number L
(``input_pipeline.speckle``, the noise model of the data pipeline: smaller L, stronger
speckle) on every frame of every clip; the noise of each clip is fixed by the run seed and
the clip's position, so a study is reproducible and every model sees the same noise.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

import jax
import ml_collections

from input_pipeline import pipeline
from usvjax import evaluate
from usvjax import tables

COLUMNS = (('MAE', 'mean_mae'), ('IoU', 'mean_iou'), ('Dice', 'mean_dice'))


def condition_name(looks: float) -> str:
  return 'clean' if looks <= 0 else f'L={looks:g}'


def run(config: ml_collections.ConfigDict, workdir: str, looks: Sequence[float] = (0, 25, 20),
        which: str = 'best', split: str = '', output_dir: str = '') -> dict[str, dict]:
  """Evaluates checkpoint ``which`` of ``workdir`` once per look number (0 = clean).

  Writes a report per condition and ``robustness.md`` / ``robustness.json`` into
  ``output_dir`` (default ``<workdir>/robustness``). Returns {condition: metrics}.
  """
  if 'masks' not in pipeline.batch_spec(config, train=False):
    raise ValueError('the robustness study is for segmentation configs (its batches have no '
                     'masks to score).')
  output_dir = output_dir or os.path.join(workdir, 'robustness')
  results = {}
  for value in looks:
    noisy = config.copy_and_resolve_references()
    noisy.input.eval_speckle_looks = float(value)
    name = condition_name(value)
    results[name] = evaluate.evaluate_checkpoint(noisy, workdir, which, split,
                                                 os.path.join(output_dir, name)).metrics
  if jax.process_index() == 0:
    with open(os.path.join(output_dir, 'robustness.json'), 'w') as f:
      json.dump(results, f, indent=2)
    with open(os.path.join(output_dir, 'robustness.md'), 'w') as f:
      f.write(markdown_table(results))
  return results


def markdown_table(results: dict[str, dict]) -> str:
  """MAE, IoU, Dice per condition, with the change against the first (clean) row."""
  reference = next(iter(results.values()))
  rows = {}
  for name, m in results.items():
    cells = []
    for _, key in COLUMNS:
      change = m[key] - reference[key]
      cells.append(f'{m[key]:.4f}' if m is reference else f'{m[key]:.4f} ({change:+.4f})')
    rows[name] = cells
  return tables.markdown(rows, [label for label, _ in COLUMNS], 'condition')
