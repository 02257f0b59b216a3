r"""Accuracy and AUC of a trained video classifier against the frames it sees per video.

  python -m experiments.frame_sweep --workdir=runs/lstm [--frames=1,2,4,8,16,30] \
      [--checkpoint=best] [--split=test] [--output_dir=DIR]
  python -m experiments.frame_sweep --workdir=runs/lstm --retrain --frames=10,12,14,16,18,20
  python -m experiments.frame_sweep --workdir=runs/cv_pocus/cnn_lstm [--retrain] [--frames=...]

By default evaluates the run's headline model (usvjax/studies/frame_sweep.py) exactly on the split
once per frame count, with up to that many frames per video sampled uniformly (a test-time
frame budget; nothing is retrained), and writes frame_sweep.csv, frame_sweep.png and one
report per count into OUTPUT_DIR (default WORKDIR/frame_sweep).

With --retrain (two-stage CNN-LSTM runs: configs/cnn_lstm.py), Cui et al.'s Fig. 7: per
count an equal-frame LSTM is trained on exactly that many frames per video of the run's
feature cache (resumable; rerun after an interruption) and scored on as many; OUTPUT_DIR
defaults to WORKDIR/equal_frame_sweep.

A method directory of ``compare --folds`` (WORKDIR/fold_<k>/seed<s>) is swept run by run,
each fold's final checkpoint on its held-out videos (so --config, --checkpoint and --split
do not apply); frame_sweep.csv has one row per fold, seed and count, and the printed table
the mean ± std over the runs.
"""
from absl import app
from absl import flags

from experiments import common
from usvjax.errors import ConfigError
from usvjax.studies import frame_sweep

RUN = common.define_run_flags('Default: WORKDIR/frame_sweep (WORKDIR/equal_frame_sweep with '
                              '--retrain).')
FRAMES = flags.DEFINE_list('frames', ['1', '2', '4', '8', '16', '30'], 'Frame counts.')
RETRAIN = flags.DEFINE_bool('retrain', False, 'Train an equal-frame LSTM per count on the '
                            "two-stage run's feature cache (Cui et al.'s Fig. 7) instead of "
                            'evaluating the trained model with fewer frames.')


def _sweep(counts: list[int]) -> list[dict]:
  workdir = RUN.workdir.value
  if frame_sweep.fold_runs(workdir):
    given = [f'--{f.name}' for f in (RUN.config, RUN.checkpoint, RUN.split) if f.present]
    if given:
      raise ConfigError(f'{workdir} is a method of compare --folds: each fold is swept on its '
                        f'held-out videos with its final checkpoint; drop {", ".join(given)}.')
    return frame_sweep.run_folds(workdir, counts, RUN.output_dir.value, RETRAIN.value)
  config = common.run_config(RUN.config.value, workdir)
  return frame_sweep.run(config, workdir, counts, RUN.checkpoint.value, RUN.split.value,
                         RUN.output_dir.value, RETRAIN.value)


def main(argv):
  del argv
  common.start_processes()
  try:
    rows = _sweep([int(n) for n in FRAMES.value])
  except common.USER_ERRORS as e:
    common.fail(e)
  print(frame_sweep.table(rows))


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
