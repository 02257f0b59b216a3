r"""k-fold cross-validation (by video, stratified by label) of a classification config.

  python -m experiments.cross_validate --config=configs/cnn_aver.py:demo --workdir=runs/cv \
      --folds=5 [--seed=0] [--config.dataset.train_split=train+validation+test]

Prints the comparison of the rows (one per model; five for the two-stage
configs/cnn_lstm.py: cnn_vote, cnn_aver, key_frame, equal_frame_lstm,
variable_frame_lstm) and each row's per-fold table with mean ± std, and writes
cv_results.json, cv_table.md and per-row pooled ROC / PR / confusion-matrix PNGs into the
workdir. Rerunning resumes unfinished folds.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from usvjax.studies import cross_validation

CONFIG = config_flags.DEFINE_config_file('config', None, 'Classification config.',
                                         lock_config=True)
WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for the folds and the results.')
FOLDS = flags.DEFINE_integer('folds', 5, 'Number of folds.')
SEED = flags.DEFINE_integer('seed', 0, 'Seed of the fold assignment.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  common.start_processes(creates_workdir=True)
  try:
    summary = cross_validation.run(CONFIG.value, WORKDIR.value, FOLDS.value, SEED.value)
  except common.USER_ERRORS as e:
    common.fail(e)
  print(cross_validation.markdown_table(summary))
  print(f'results written to {WORKDIR.value}')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
