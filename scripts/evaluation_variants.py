r"""One checkpoint per run scored four ways (issue 39): raw or EMA weights (``evaluate
--weights``), without or with flip test-time augmentation (``evaluate --tta=flip``), each
tested against the raw weights without TTA by the comparison's paired bootstrap over the
test videos (per-video lesion Dice; ``usvjax.studies.compare_report.paired_tests``), per
seed and with the seeds pooled (``seed`` = 'pooled').

  python scripts/evaluation_variants.py --method_dir=runs/ema_cvc/unet_ema \
      --checkpoint=latest --output=docs/results/cvc612_128px_ema_tta_unet.csv

``--method_dir`` is a compare workdir's method folder (``seed<N>/`` runs trained with
``optimizer.ema_decay`` > 0, so that each checkpoint holds both weights). The same
checkpoint scores every variant, so the EMA's effect is measured on one training; the
default ``latest`` keeps the step fixed too ('best' is chosen by the EMA weights'
validation). Reports go to ``seed<N>/eval_<variant>_<checkpoint>/``.
"""
from __future__ import annotations

import argparse
import csv
import glob
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from usvjax.reporting import console

console.quiet_native(sys.argv)

import ml_collections

from usvjax.core import evaluate
from usvjax.core import run as run_lib
from usvjax.reporting import provenance
from usvjax.studies import compare_report

VARIANTS = {'raw': ('raw', 'none'), 'ema': ('ema', 'none'), 'raw+flip': ('raw', 'flip'),
            'ema+flip': ('ema', 'flip')}
REFERENCE = 'raw'
METRICS = ('lesion_dice', 'pooled_dice', 'lesion_iou', 'lesion_recall', 'lesion_precision',
           'hd95', 'nsd', 'mean_dice', 'empty_fp_rate', 'scored_frames', 'step')
PAIRED = ('paired_dice_difference', 'paired_dice_ci95_lo', 'paired_dice_ci95_hi',
          'paired_dice_p')


def score(run_dir: str, checkpoint: str) -> tuple[dict, dict[str, dict]]:
  """(the run's setting columns, {variant: its metrics and per-video values})."""
  config = provenance.load_config(run_dir)
  results = {}
  for variant, (weights, tta) in VARIANTS.items():
    with config.unlocked():
      config.evaluation = ml_collections.ConfigDict(
          dict(tta=tta, clips=1, calibrate=False, weights=weights))
    split = config.dataset.test_split
    report = evaluate.evaluate_checkpoint(
        run_lib.resolve(config, split), run_dir, checkpoint, split,
        os.path.join(run_dir, f'eval_{variant}_{checkpoint}'))
    print(f'{run_dir} {variant}: lesion Dice {report.metrics["lesion_dice"]:.3f}', flush=True)
    results[variant] = dict({k: report.metrics.get(k, np.nan) for k in METRICS},
                            **report.evaluation.paired_values())
  return provenance.setting(config), results


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--method_dir', required=True)
  parser.add_argument('--checkpoint', default='latest')
  parser.add_argument('--output', required=True)
  args = parser.parse_args()
  console.set_up(args.method_dir)
  run_dirs = sorted(glob.glob(os.path.join(args.method_dir, 'seed*', 'config.py')))
  if not run_dirs:
    raise SystemExit(f'{args.method_dir}: no run (seed*/config.py).')
  results: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
  for path in run_dirs:
    run_dir = os.path.dirname(path)
    setting, scored = score(run_dir, args.checkpoint)
    for variant, result in scored.items():
      seed = int(re.search(r'seed(\d+)$', run_dir).group(1))
      results[variant].append(dict(result, seed=seed))
  pooled = compare_report.paired_tests(results, REFERENCE)
  method = os.path.basename(os.path.normpath(args.method_dir))
  rows = []
  for variant, (weights, tta) in VARIANTS.items():
    common = dict(setting, method=method, variant=variant, weights=weights, tta=tta,
                  checkpoint=args.checkpoint)
    rows += [dict(common, seed=run['seed'], **{k: run.get(k, '') for k in METRICS + PAIRED})
             for run in results[variant]]
    means = {k: float(np.mean([r[k] for r in results[variant]])) for k in METRICS}
    test = pooled.get(variant, {})
    rows.append(dict(common, seed='pooled', **means,
                     **{k: test.get(k.removeprefix('paired_dice_'), '') for k in PAIRED}))
  with open(args.output, 'w', newline='') as f:
    writer = csv.DictWriter(f, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  for row in rows:
    if row['seed'] == 'pooled':
      print(f"{method} {row['variant']}: lesion Dice {row['lesion_dice']:.3f}" + (
          f", minus raw {row['paired_dice_difference']:+.3f} [{row['paired_dice_ci95_lo']:+.3f}, "
          f"{row['paired_dice_ci95_hi']:+.3f}], p {row['paired_dice_p']:.2f}"
          if row['paired_dice_difference'] != '' else ''))
  print(f'wrote {args.output}')


if __name__ == '__main__':
  main()
