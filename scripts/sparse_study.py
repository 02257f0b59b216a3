r"""The sparse-annotation study's table (issue 38): runs of ``experiments.compare`` in several
workdirs (all masks; sparse masks; sparse masks + the mean teacher) in one CSV, each run
tested against a reference setting by the comparison's paired bootstrap over the test
videos (per-video lesion Dice; ``usvjax.studies.compare_report.paired_tests``), per seed
and with the seeds pooled (``seed`` = 'pooled').

  python scripts/sparse_study.py --reference=unet_sparse \
      --run=unet:1.0:all_masks:runs/sparse_a/unet \
      --run=unet_sparse:0.1:sparse:runs/sparse_bc/unet_sparse \
      --run=unet_sparse_mt:0.1:sparse+mean_teacher:runs/sparse_bc/unet_sparse_mt \
      --dataset=usv_frames_table/cvc612 --image_size=128 --steps=600 \
      --output=docs/results/cvc612_128px_sparse.csv

``--run`` is NAME:LABEL_FRACTION:VARIANT:METHOD_DIR (the compare workdir's method folder,
holding seed<N>/result.json). Prints the table and the share of the reference-to-first
gap each other setting closes.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from usvjax.studies import compare_report

METRICS = ('lesion_dice', 'pooled_dice', 'lesion_iou', 'lesion_recall', 'hd95', 'nsd',
           'mean_dice', 'scored_frames', 'step')
PAIRED = ('paired_dice_difference', 'paired_dice_ci95_lo', 'paired_dice_ci95_hi',
          'paired_dice_p')


def load_runs(method_dir: str) -> list[dict]:
  """The finished runs (seed<N>/result.json) of one method of a compare workdir."""
  runs = []
  for path in sorted(glob.glob(os.path.join(method_dir, 'seed*', 'result.json'))):
    with open(path) as f:
      run = json.load(f)
    run['seed'] = int(re.search(r'seed(\d+)', path).group(1))
    runs.append(run)
  if not runs:
    raise SystemExit(f'{method_dir}: no finished run (seed*/result.json).')
  return runs


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--run', action='append', required=True)
  parser.add_argument('--reference', required=True)
  parser.add_argument('--dataset', required=True)
  parser.add_argument('--image_size', type=int, required=True)
  parser.add_argument('--steps', type=int, required=True)
  parser.add_argument('--output', required=True)
  args = parser.parse_args()
  specs = [spec.split(':', 3) for spec in args.run]
  results = {name: load_runs(path) for name, _, _, path in specs}
  pooled = compare_report.paired_tests(results, args.reference)
  rows = []
  for name, fraction, variant, _ in specs:
    common = dict(dataset=args.dataset, image_size=args.image_size, steps=args.steps,
                  method=name, variant=variant, label_fraction=fraction)
    for run in results[name]:
      rows.append(dict(common, seed=run['seed'], **{k: run.get(k, '') for k in METRICS + PAIRED}))
    if name in pooled:
      test = pooled[name]
      means = {k: float(np.mean([r[k] for r in results[name]])) for k in METRICS}
      rows.append(dict(common, seed='pooled', **means, **{
          k: test[k.removeprefix('paired_dice_')] for k in PAIRED}))
  with open(args.output, 'w', newline='') as f:
    writer = csv.DictWriter(f, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  mean = {name: np.mean([r['lesion_dice'] for r in results[name]]) for name in results}
  first, reference = specs[0][0], args.reference
  for name, fraction, variant, _ in specs:
    print(f'{name} ({variant}, {fraction}): lesion Dice {mean[name]:.3f} over '
          f'{len(results[name])} seed(s)' + (
              f', minus {reference} {pooled[name]["difference"]:+.3f} '
              f'[{pooled[name]["ci95_lo"]:+.3f}, {pooled[name]["ci95_hi"]:+.3f}], '
              f'p {pooled[name]["p"]:.2f}' if name in pooled else ''))
  gap = mean[first] - mean[reference]
  for name in results:
    if name not in (first, reference):
      print(f'{name} closes {(mean[name] - mean[reference]) / gap:.0%} of the '
            f'{reference} -> {first} gap ({gap:+.3f})')
  print(f'wrote {args.output}')


if __name__ == '__main__':
  main()
