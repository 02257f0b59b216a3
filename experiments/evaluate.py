r"""Evaluates a checkpoint exactly on a split and writes a report.

  python -m experiments.evaluate --workdir=runs/unet \
      [--checkpoint=best|latest|STEP] [--split=test] [--output_dir=DIR] [--export]

The run's own config (``<workdir>/config.py``, saved when it started) is used; a --config
that differs from it is an error listing the keys, unless --allow_config_changes.

Writes metrics.json, per_video.csv and pictures (segmentation overlays; ROC, PR and a
confusion matrix for classification; training curves) and prints where. The config's
runner (usvjax/runners/__init__.py) names the rows: a two-stage run (configs/cnn_lstm.py) gets one
report per row (CNN_Vote, CNN_Aver, Key_Frame, equal- and variable-frame CNN-LSTM) in
OUTPUT_DIR/<row> and a comparison table; a contrastive pretraining run reports its
NT-Xent and retrieval accuracy. --export also writes the predictions of every frame into
the report (segmentation: predicted_masks/<video>/<frame>.png, 0/255, at the frames' own size).
"""
import json

from absl import app
from absl import flags

from experiments import common
from usvjax import runners
from usvjax.core import evaluate
from usvjax.reporting import tables

RUN = common.define_run_flags('Default: WORKDIR/eval_SPLIT_stepN.')
EXPORT = flags.DEFINE_bool('export', False, 'Also write every frame\'s prediction into the '
                           'report (segmentation: predicted masks as PNG; classification: '
                           'frame_scores.csv, per-frame probabilities and attention weights).')


def main(argv):
  del argv
  common.start_processes()
  try:
    config = common.run_config(RUN.config.value, RUN.workdir.value)
    reports = runners.get(config).evaluate(config, RUN.workdir.value, RUN.split.value,
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
