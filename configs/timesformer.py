"""A small TimeSformer with divided space-time attention (``usvjax/models/timesformer.py``;
CLMAN Table 4).

  python -m experiments.train --config=configs/timesformer.py:paper --workdir=runs/timesformer

Variants:

* ``paper``: ViT-S/16 sizes (dim 384, depth 12, 6 heads), 8 frames per video sampled
  uniformly at 224x224 (the released TimeSformer's 8 x 224), in CLMAN Table 4's protocol
  (batch 8, 320 epochs: 6,720 steps; see ``configs/video_resnet.py``), with the released
  code's optimiser: SGD, momentum 0.9, weight decay 1e-4, learning rate 5e-3, here with
  cosine decay. The released model is ViT-B/16 (``--config.model.dim=768
  --config.model.heads=12``) from ImageNet-21k weights, which usvjax does not import.
* ``demo`` (dim 64, depth 4, 64x64), ``tiny`` (tests: dim 16, depth 2, patch 8, 32x32).
"""
import ml_collections

from configs import common
from configs import video_resnet


def _paper(c):
  video_resnet.clman_table4(c, frames=8, image_size=224)
  c.model.num_frames = 8
  c.optimizer.update(name='sgd', lr=5e-3, momentum=0.9, weight_decay=1e-4)


def _demo(c):
  common.classification_demo(c)
  c.model.update(dim=64, depth=4, heads=4)


def _tiny(c):
  common.classification_tiny(c)
  del c.model['width'], c.model['levels']  # classification_tiny's frame-CNN keys.
  c.model.update(patch=8, dim=16, depth=2, heads=2)


def get_config(arg: str | None = None):
  c = common.base_config('classification')
  c.model = ml_collections.ConfigDict(dict(
      name='timesformer', num_classes=2, patch=16, dim=384, depth=12, heads=6, mlp_ratio=4,
      num_frames=16))
  return common.finalize(c, arg, {'demo': _demo, 'tiny': _tiny, 'paper': _paper})
