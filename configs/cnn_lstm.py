"""Variable-frame CNN-LSTM of Cui et al., trained in two stages (``usvjax.runners.two_stage``).

Stage 1 (``frame_cnn``, a ``configs/cnn_aver.py`` config) trains the frame CNN on frames;
its pooled features of every video are cached to disk; stage 2 (the top level) trains the
LSTM (input D, hidden 256) on the cached feature sequences of 1 to ``max_frames`` frames,
and, with ``equal_frames`` > 0, an equal-frame CNN-LSTM on exactly that many. The frame
CNN has no dataset or seed of its own: it uses the top level's. ``experiments/train.py`` runs both stages;
``experiments/evaluate.py`` and ``experiments/cross_validate.py`` score all of the paper's
rows (CNN_Vote, CNN_Aver, Key_Frame, equal- and variable-frame CNN-LSTM).

Variants: ``demo`` (minutes on a CPU), ``tiny`` (tests: synthetic videos of 1 to 30
frames at 32x32), ``paper``: Adam 1e-5 in both stages; frame CNN as ``cnn_aver.py:paper``;
LSTM batch 32 for 300 epochs with validation every 20, which for the paper's 649 training
videos per fold (5-fold CV of 811) is 21 steps per epoch: 6,300 steps, validation every
420; equal-frame length 12. The LSTM's loss is the cross-entropy of the video's averaged
probability (``task.frame_loss`` False; see ``usvjax/models/cnn_lstm.py``); the frame CNN
is frozen in stage 2 (the LSTM reads cached features).
"""
import ml_collections

from configs import cnn_aver
from configs import common

_VARIABLE_LENGTHS = dict(max_frames=30, length_buckets=(30,))


def _demo(c):
  common.classification_demo(c)
  c.dataset.config = 'variable'
  c.input.update(_VARIABLE_LENGTHS, batch_size=16, eval_batch_size=16)
  c.frame_cnn.total_steps = 300
  c.frame_cnn.input.update(_VARIABLE_LENGTHS, batch_size=4, eval_batch_size=4)


def _tiny(c):
  c.dataset.config = 'variable'
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 4, 2, 4, 4
  c.input.update(_VARIABLE_LENGTHS, image_size=32, batch_size=4, eval_batch_size=4,
                 shuffle_buffer=8, video_shuffle_buffer=4)
  c.model.hidden = 8
  c.frame_cnn.input.update(_VARIABLE_LENGTHS)


def _paper(c):
  c.dataset.config = 'paper'
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 6300, 20, 420, 420
  c.input.update(image_size=224, channels=3, batch_size=32, eval_batch_size=32,
                 max_frames=30, length_buckets=(8, 16, 30))
  c.optimizer.lr = 1e-5
  c.schedule.name = 'constant'


def get_config(arg: str | None = None):
  variant = arg or 'demo'
  c = common.base_config('classification')
  c.model = ml_collections.ConfigDict(dict(name='cnn_lstm', num_classes=2, hidden=256))
  c.runner = 'two_stage'
  c.frame_cnn = cnn_aver.get_config(variant)
  with c.frame_cnn.unlocked():  # One source of truth: stage 1 uses the top level's.
    del c.frame_cnn['dataset'], c.frame_cnn['seed']
  c.equal_frames = 12
  return common.finalize(c, variant, {'demo': _demo, 'tiny': _tiny, 'paper': _paper})
