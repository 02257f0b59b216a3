r"""Accuracy and AUC of a trained video classifier against the frames it sees per video.

  python -m experiments.frame_sweep --workdir=runs/lstm [--frames=1,2,4,8,16,30] \
      [--checkpoint=best] [--split=test] [--output_dir=DIR]

Evaluates the run's headline model (usvjax/frame_sweep.py) exactly on the split once per
frame count, with up to that many frames per video sampled uniformly, and writes
frame_sweep.csv, frame_sweep.png and one report per count into OUTPUT_DIR (default
WORKDIR/frame_sweep). Cui et al.'s Fig. 7 is this curve for their CNN-LSTM.
"""
from absl import app
from absl import flags

from experiments import common
from usvjax import frame_sweep
from usvjax import tables

RUN = common.define_run_flags('Default: WORKDIR/frame_sweep.')
FRAMES = flags.DEFINE_list('frames', ['1', '2', '4', '8', '16', '30'], 'Frame counts.')


def main(argv):
  del argv
  common.start_processes()
  try:
    config = common.run_config(RUN.config.value, RUN.workdir.value)
    rows = frame_sweep.run(config, RUN.workdir.value, [int(n) for n in FRAMES.value],
                           RUN.checkpoint.value, RUN.split.value, RUN.output_dir.value)
  except common.USER_ERRORS as e:
    common.fail(e)
  print(tables.metrics_table({f'{r["frames"]} frames': r for r in rows},
                             frame_sweep.KEYS, 'frames'))


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
