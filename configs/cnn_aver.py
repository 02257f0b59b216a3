"""Frame CNN with probability averaging ("CNN_Aver", Cui et al. Table 3).

Trained on frames with the video's label (frame-level cross-entropy), evaluated on videos
by averaging per-frame probabilities. Variants: ``demo``, ``tiny`` (tests), ``paper``
(ResNet-18 frame CNN on 224x224 frames, up to 30 frames per video, Adam 1e-5, as in
Cui et al.; convert ImageNet weights with experiments/convert_weights.py and pass them as
``--config.init.checkpoint``).
"""
from configs import common


def _paper(c):
  c.dataset.config = 'paper'
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = 20000, 100, 1000, 1000
  c.input.update(image_size=224, channels=3, batch_size=32, eval_batch_size=32,
                 max_frames=30, length_buckets=(8, 16, 30))
  c.model.backbone = 'resnet18'  # Initialise it from ImageNet: --config.init.checkpoint=DIR.
  c.optimizer.lr = 1e-5
  c.schedule.name = 'constant'


def get_config(arg: str | None = None):
  c = common.base_config('classification')
  c.model = common.ml_collections.ConfigDict(dict(
      name='cnn_aver', num_classes=2, backbone='conv', width=16, levels=4, backbone_width=1.0))
  c.task.frame_loss = True
  return common.finalize(c, arg, {'demo': common.classification_demo,
                                 'tiny': common.classification_tiny, 'paper': _paper})
