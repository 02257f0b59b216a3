"""Speckle robustness study (DSANet, Table II) of any segmentation checkpoint.

The test split is evaluated clean and with multiplicative Gamma speckle of look number L
(``input_pipeline.speckle``, the noise model of the data pipeline: y = clip(x n, 0, 1),
n ~ Gamma(L, L), mean 1, variance 1 / L; smaller L, stronger speckle).

**Where the noise goes.** As in the paper, speckle corrupts the image as acquired: each
frame gets it at its stored (native) resolution, is stored again as an 8-bit PNG, and only
then goes through the usual evaluation pipeline (decoding, resizing to
``input.image_size``). Resizing averages the speckle of neighbouring pixels, so a frame
shrunk from 384 to 64 pixels keeps a fraction of its noise variance, as a model that sees
downsized acquisitions would. (Adding the noise after resizing, as an earlier version did,
puts the full variance 1 / L on every model pixel: far harsher than the paper's L.)

The noise of a video is fixed by the run seed and the video id, so a study is
reproducible, every model sees the same noisy frames, and a frame carries the same noise
in every clip that contains it. The checkpoint is restored and compiled once for all
conditions, with the eval step training validates with (``usvjax.core.run``).

Every report names the data it scored as ``evaluate`` does: each condition's metrics (its
metrics.json and its entry in robustness.json) hold ``dataset``, the data fingerprint
(``provenance.data_fingerprint``: builder, version, split counts and the source folder's
fingerprint), and robustness.md says it under its table.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

import jax

from input_pipeline import speckled
from usvjax.core import evaluate
from usvjax.core import run as run_lib
from usvjax.errors import ConfigError
from usvjax.reporting import tables

# Lesion-frame overlaps (a model predicting nothing scores 0), the pooled Dice and the MAE.
COLUMNS = (('MAE', 'mean_mae'), ('lesion IoU', 'lesion_iou'), ('lesion Dice', 'lesion_dice'),
           ('pooled Dice', 'pooled_dice'))


def condition_name(looks: float) -> str:
  return 'clean' if looks <= 0 else f'L={looks:g}'


def run(run: run_lib.Run, workdir: str, looks: Sequence[float] = (0, 25, 20),
        which: str = 'best', split: str = '', output_dir: str = '') -> dict[str, dict]:
  """Evaluates checkpoint ``which`` of ``workdir`` (the resolved ``run``, ``usvjax.core.run``) on
  ``split`` (default the test split) once per look number (0 = clean).

  Writes a report per condition and ``robustness.md`` / ``robustness.json`` into
  ``output_dir`` (default ``<workdir>/robustness``). Returns {condition: metrics}.
  """
  if 'masks' not in run.fields(train=False):
    raise ConfigError('the robustness study is for segmentation configs (its batches have no '
                      'masks to score).')
  config, builder = run.config, run.builder
  output_dir = output_dir or os.path.join(workdir, 'robustness')
  split = split or config.dataset.test_split
  variables, step = run.restore(workdir, which)
  dataset = evaluate.dataset_record(builder, workdir)
  results = {}
  for value in looks:
    noisy = speckled.SpeckledBuilder(builder, float(value), config.seed) if value > 0 else None
    metrics, evaluation = evaluate.evaluate_split(run, split, variables, noisy)
    name = condition_name(value)
    results[name] = dict(metrics, step=step, split=split, checkpoint=which,
                         speckle_looks=float(value), dataset=dataset)
    evaluate.write_report(os.path.join(output_dir, name), results[name], evaluation)
  if jax.process_index() == 0:
    with open(os.path.join(output_dir, 'robustness.json'), 'w') as f:
      json.dump(results, f, indent=2)
    with open(os.path.join(output_dir, 'robustness.md'), 'w') as f:
      f.write(markdown_table(results) + '\n' + data_note(dataset, split, which, step) + '\n')
  return results


def data_note(dataset: dict, split: str, which: str, step: int) -> str:
  """What the study scored: the checkpoint, the split and ``dataset`` (a
  ``provenance.data_fingerprint``), as a markdown sentence."""
  source = dataset['source']
  origin = ('generated, no source folder' if source is None else
            f'converted from `{source["folder"]}`: {source["files"]} files, {source["bytes"]} '
            f'bytes, content sha256 `{source["content_sha256"]}`')
  return (f'Checkpoint {which} (step {step}) on split `{split}` of `{dataset["builder"]}` '
          f'({origin}).')


def markdown_table(results: dict[str, dict]) -> str:
  """MAE, lesion IoU, lesion Dice and pooled Dice per condition, with the change against
  the first (clean) row."""
  reference = next(iter(results.values()))
  rows = {}
  for name, m in results.items():
    cells = []
    for _, key in COLUMNS:
      change = m[key] - reference[key]
      cells.append(f'{m[key]:.4f}' if m is reference else f'{m[key]:.4f} ({change:+.4f})')
    rows[name] = cells
  return tables.markdown(rows, [label for label, _ in COLUMNS], 'condition')
