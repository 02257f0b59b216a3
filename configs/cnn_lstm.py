"""Variable-frame CNN-LSTM (Cui et al.): per-frame CNN features, masked LSTM, averaged
per-frame probabilities.

This config trains the model end to end from frames in the common trainer (stage 1 and the
feature cache of the paper's two-stage recipe are a separate step; see issue 9). Variants:
``demo``, ``tiny`` (tests), ``paper`` (ResNet-18 frames at 224x224, up to 30 frames, LSTM
hidden 256, Adam 1e-5).
"""
from configs import common


def _tiny(c):
  common.classification_tiny(c)
  c.total_steps, c.eval_every, c.checkpoint_every = 4, 4, 4
  c.model.hidden = 8


def _paper(c):
  c.dataset.config = 'paper'
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 20000, 100, 1000, 1000
  c.input.update(image_size=224, channels=3, batch_size=32, eval_batch_size=32,
                 max_frames=30, length_buckets=(8, 16, 30))
  c.model.backbone = 'resnet18'
  c.optimizer.lr = 1e-5
  c.schedule.name = 'constant'


def get_config(arg: str | None = None):
  c = common.base_config('classification')
  c.model = common.ml_collections.ConfigDict(dict(
      name='cnn_lstm', num_classes=2, hidden=256, backbone='conv', width=16, levels=4,
      backbone_width=1.0))
  return common.finalize(c, arg, {'demo': common.classification_demo,
                                 'tiny': _tiny, 'paper': _paper})
