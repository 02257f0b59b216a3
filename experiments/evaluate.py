r"""Evaluates a checkpoint exactly on a split and writes a report.

  python -m experiments.evaluate --workdir=runs/unet \
      [--checkpoint=best|latest|STEP] [--split=test] [--output_dir=DIR] [--export] \
      [--tta=flip] [--clips=K] [--calibrate] [--weights=raw]

The run's own config (``<workdir>/config.py``, saved when it started) is used; a --config
that differs from it is an error listing the keys, unless --allow_config_changes.

Writes metrics.json, per_video.csv and pictures (segmentation overlays; ROC, PR and a
confusion matrix for classification; training curves) and prints where. The config's
runner (usvjax/runners/__init__.py) names the rows: a two-stage run (configs/cnn_lstm.py) gets one
report per row (CNN_Vote, CNN_Aver, Key_Frame, equal- and variable-frame CNN-LSTM) in
OUTPUT_DIR/<row> and a comparison table; a contrastive pretraining run reports its
NT-Xent and retrieval accuracy. --export also writes the predictions of every frame into
the report (segmentation: predicted_masks/<video>/<frame>.png, 0/255, at the frames' own size).

--tta=flip (segmentation) averages each prediction with the un-flipped prediction of the
width-flipped frames (usvjax/core/tta.py). --clips=K (classification) averages each
video's class probabilities over K frame samplings (offsets (1/2 + k/K) mod 1 in each
segment; K = 1 is the usual centre frames). --calibrate (classification) fits a
temperature on the validation split (dataset.eval_split), applies it to the scored split
and stores it in WORKDIR/calibration.json, where classify_video, export and predict read
it (docs/classification.md). --weights=raw scores a run's trained parameters where it keeps
EMA weights (optimizer.ema_decay > 0), which it otherwise scores. They set
config.evaluation; metrics.json records tta, clips and weights.
"""
import json

from absl import app
from absl import flags
import ml_collections

from experiments import common
from usvjax import runners
from usvjax.core import evaluate
from usvjax.reporting import tables

RUN = common.define_run_flags('Default: WORKDIR/eval_SPLIT_stepN.')
EXPORT = flags.DEFINE_bool('export', False, 'Also write every frame\'s prediction into the '
                           'report (segmentation: predicted masks as PNG; classification: '
                           'frame_scores.csv, per-frame probabilities and attention weights).')
TTA = flags.DEFINE_enum('tta', 'none', ['none', 'flip'], 'Test-time augmentation of a '
                        'segmenter: flip averages with the un-flipped flipped-frame prediction.')
CLIPS = flags.DEFINE_integer('clips', 1, 'A classifier: average the class probabilities '
                             'over this many frame samplings of each video.', lower_bound=1)
CALIBRATE = flags.DEFINE_bool('calibrate', False, 'A classifier: fit a temperature on the '
                              'validation split, apply it, store it in WORKDIR/calibration.json.')
WEIGHTS = flags.DEFINE_enum('weights', 'ema', list(evaluate.WEIGHTS), 'ema: the EMA weights '
                            'of a run that keeps them (optimizer.ema_decay > 0), else its '
                            'parameters; raw: its trained parameters.')


def main(argv):
  del argv
  common.start_processes()
  try:
    config = common.run_config(RUN.config.value, RUN.workdir.value)
    with config.unlocked():  # A run saved before config.evaluation existed lacks it.
      config.evaluation = ml_collections.ConfigDict(
          dict(tta=TTA.value, clips=CLIPS.value, calibrate=CALIBRATE.value,
               weights=WEIGHTS.value))
    reports = runners.evaluate(config, RUN.workdir.value, RUN.split.value,
                               RUN.checkpoint.value, RUN.output_dir.value)
    exported = [path for report in reports.values() if EXPORT.value
                for path in evaluate.export_predictions(report)]
  except common.USER_ERRORS as e:
    common.fail(e)
  if len(reports) == 1:
    print(json.dumps(next(iter(reports.values())).metrics, indent=2, sort_keys=True))
  else:
    print(tables.metrics_table({row: r.metrics for row, r in reports.items()}))
  print(f'reports written to {", ".join(r.directory for r in reports.values())}')
  if EXPORT.value:
    print(f'{len(exported)} prediction files exported')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
