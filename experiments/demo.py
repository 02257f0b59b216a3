r"""The README quick start: train, evaluate from the checkpoint, write metrics and pictures.

  bash usv.sh demo            (or: python -m experiments.demo [--outdir=runs/demo])

1. Generates the synthetic B-mode dataset (``usv_synthetic/small``) if it is not there.
2. Trains the image U-Net (``configs/unet.py:demo``), resuming if interrupted.
3. Restores the best checkpoint and evaluates the test split exactly.
4. Scores two trivial predictors on the same split (all background; the mean training
   mask) so the U-Net's Dice has a reference.
5. Writes everything into ``<outdir>/report`` and prints where.
"""
import json
import os

import numpy as np
from absl import app
from absl import flags

from configs import unet
from experiments import common
from usvjax import runners
from usvjax.core import evaluate
from usvjax.core import run as run_lib
from usvjax.metrics import segmentation as segmentation_metrics
from usvjax.reporting import plots

OUTDIR = flags.DEFINE_string('outdir', 'runs/demo', 'Where the run and its report go.')
DATA_DIR = flags.DEFINE_string('data_dir', 'runs/tensorflow_datasets',
                               'TFDS data_dir for the generated synthetic dataset.')


def trivial_baselines(run: run_lib.Run) -> dict[str, float]:
  """Lesion-frame Dice (the runs' ``best_metric``) of an all-background predictor and of
  the mean training mask."""
  splits = run.config.dataset
  masks = [batch['masks'][i, -1, ..., 0]
           for batch in run.eval_batches(splits.train_split)[0]
           for i in np.flatnonzero(batch['valid'][:, -1])]
  mean_mask = np.mean(masks, axis=0)
  scores = {'all_background': segmentation_metrics.SegmentationEvaluator(),
            'mean_training_mask': segmentation_metrics.SegmentationEvaluator()}
  for batch in run.eval_batches(splits.test_split)[0]:
    for i in np.flatnonzero(batch['valid'][:, -1]):
      gt = batch['masks'][i, -1, ..., 0]
      scores['all_background'].update(np.zeros_like(gt), gt)
      scores['mean_training_mask'].update(mean_mask, gt)
  return {name: s.result()['lesion_dice'] for name, s in scores.items()}


def main(argv):
  del argv
  workdir = os.path.abspath(OUTDIR.value)
  common.start_processes(workdir, creates_workdir=True)
  config = unet.get_config('demo')
  config.dataset.data_dir = os.path.abspath(DATA_DIR.value)
  report = os.path.join(workdir, 'report')
  try:
    print(f'Training the image U-Net on synthetic ultrasound video in {workdir} ...')
    with run_lib.prepared_once():
      runners.train(config, workdir)
      run = run_lib.resolve(config)
      test_metrics = evaluate.evaluate_checkpoint(run, workdir, 'best', '', report).metrics
      baselines = trivial_baselines(run)
  except common.USER_ERRORS as e:
    common.fail(e)
  summary = {'unet_test_lesion_dice': test_metrics['lesion_dice'],
             'unet_test_pooled_dice': test_metrics['pooled_dice'],
             **{f'{k}_test_lesion_dice': v for k, v in baselines.items()}}
  with open(os.path.join(report, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  plots.training_curves(workdir, report)
  print('\nTest split (every frame once), Dice over the frames with a lesion:')
  print(f"  U-Net (checkpoint step {test_metrics['step']}): {test_metrics['lesion_dice']:.3f}")
  for name, value in baselines.items():
    print(f'  {name.replace("_", " ")}: {value:.3f}')
  print(f'\nMetrics and pictures are in {report}:')
  for name in sorted(os.listdir(report)):
    print(f'  {name}')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
