r"""Evaluates a checkpoint exactly on a split and writes a report.

  python -m experiments.evaluate --config=configs/unet.py:demo --workdir=runs/unet \
      [--checkpoint=best|latest|STEP] [--split=test] [--output_dir=DIR]

Writes metrics.json, per_video.csv and pictures (segmentation overlays; ROC, PR and a
confusion matrix for classification; training curves) and prints where. A two-stage run
(configs/cnn_lstm.py) gets one report per row (CNN_Vote, CNN_Aver, Key_Frame, equal- and
variable-frame CNN-LSTM) in OUTPUT_DIR/<row> and a comparison table.
"""
import json

from absl import app

from experiments import common
from usvjax import evaluate
from usvjax import tables
from usvjax import two_stage

RUN = common.define_run_flags('Default: WORKDIR/eval_SPLIT_stepN.')


def main(argv):
  del argv
  common.start_processes()
  try:
    if two_stage.is_two_stage(RUN.config.value):
      reports = two_stage.evaluate(RUN.config.value, RUN.workdir.value, RUN.split.value,
                                   RUN.checkpoint.value, RUN.output_dir.value)
      print(tables.metrics_table({row: r.metrics for row, r in reports.items()}))
      print(f'reports written to {", ".join(r.directory for r in reports.values())}')
      return
    report = evaluate.evaluate_checkpoint(RUN.config.value, RUN.workdir.value,
                                          RUN.checkpoint.value, RUN.split.value,
                                          RUN.output_dir.value)
  except common.USER_ERRORS as e:
    common.fail(e)
  print(json.dumps(report.metrics, indent=2, sort_keys=True))
  print(f'report written to {report.directory}')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
