r"""Caches a trained frame CNN's per-frame features of every video (Cui et al. Sec. 3.2.2).

  python -m experiments.extract_features --config=configs/cnn_aver.py:paper \
      --workdir=runs/cnn --output_dir=runs/cnn/features [--checkpoint=best] \
      [--splits=train,validation,test]

Writes a TFDS dataset ``usv_features`` (format: usvjax/runners/feature_cache.py) that a CNN-LSTM
stage trains on with --config.dataset.name=usv_features --config.dataset.data_dir=DIR.
(``experiments/train.py`` with configs/cnn_lstm.py does this step itself.)
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from usvjax.runners import feature_cache

CONFIG = config_flags.DEFINE_config_file('config', None, 'Config of the frame-CNN run.',
                                         lock_config=True)
WORKDIR = flags.DEFINE_string('workdir', None, 'The frame-CNN run directory.')
OUTPUT_DIR = flags.DEFINE_string('output_dir', None, 'Directory of the cache.')
CHECKPOINT = flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step.")
SPLITS = flags.DEFINE_list('splits', ['train', 'validation', 'test'], 'Splits to cache.')
flags.mark_flags_as_required(['config', 'workdir', 'output_dir'])


def main(argv):
  del argv
  common.start_processes()
  try:
    info = feature_cache.extract(feature_cache.resolve(CONFIG.value), WORKDIR.value,
                                 CHECKPOINT.value, OUTPUT_DIR.value, SPLITS.value)
  except common.USER_ERRORS as e:
    common.fail(e)
  counts = ', '.join(f'{split} {len(n)} videos' for split, n in info['lengths'].items())
  print(f'{info["dim"]}-d features of step {info["source"]["step"]} ({counts}) '
        f'in {OUTPUT_DIR.value}')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
