"""TFDS builder ``usv_synthetic``: videos from the B-mode simulator (the embedded default).

Configs differ in frame size, video length and the number of videos per split:
``tiny`` (64x64, for tests), ``small`` (128x128, the README demo), ``paper`` (352x352),
``variable`` (64x64 videos of 1 to 30 frames, the lengths of Cui et al.'s variable-frame
dataset), ``hard`` (``small`` with a low-contrast episode of 2 to 4 frames in every video).
Every video stores per-frame ``hard_frame`` flags (the frames of its low-contrast
episode, if any), so a report can score them apart. Any :class:`SyntheticConfig` can be passed as ``config=`` for other sizes. Splits use
disjoint simulator seeds, so no video appears in two splits.

Sparse configs ``tiny_sparse`` and ``small_sparse`` are ``tiny`` and ``small`` traced as a
clinic would: each training video keeps its masks on ``sparse_per_video`` = 2 frames
(``min(2, T)``, at least 1), drawn by ``sparse.keep_frames(T, video_id, seed,
per_video=2)``; its other frames store an all-zero mask and box and ``annotated`` False.
Validation and test videos keep every mask (all ``annotated``), so they are scored against
the full ground truth. Every other config stores ``annotated`` all True.
"""
from __future__ import annotations

import dataclasses

import numpy as np

import tensorflow_datasets as tfds

from input_pipeline import tf_setup  # pylint: disable=unused-import  (configures TensorFlow)
from input_pipeline import simulator
from input_pipeline.builders import common
from input_pipeline.builders import sparse


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  """Frame size, video lengths and videos per split of the synthetic dataset."""
  height: int = 128
  width: int = 128
  min_frames: int = 8
  max_frames: int = 16
  num_videos: tuple[tuple[str, int], ...] = (('train', 64), ('validation', 16), ('test', 24))
  seed: int = 0
  hard_frame_prob: float = 0.3  # Share of videos with a low-contrast episode.
  sparse_per_video: int = 0  # > 0: training videos keep masks on this many frames.


_TINY = dict(height=64, width=64, min_frames=4, max_frames=8,
             num_videos=(('train', 12), ('validation', 4), ('test', 6)))
_SPLIT_SEED_OFFSET = {'train': 0, 'validation': 1_000_003, 'test': 2_000_003}


class UsvSynthetic(tfds.core.GeneratorBasedBuilder):
  """Synthetic breast-ultrasound videos with masks, boxes and benign/malignant labels."""

  VERSION = tfds.core.Version('1.2.0')
  RELEASE_NOTES = {'1.1.0': "Per-frame 'hard_frame' flags; the 'hard' config.",
                   '1.2.0': "Per-frame 'annotated' flags; the sparse configs."}
  BUILDER_CONFIGS = [
      SyntheticConfig(name='tiny', **_TINY),
      SyntheticConfig(name='small'),
      SyntheticConfig(name='tiny_sparse', sparse_per_video=2, **_TINY),
      SyntheticConfig(name='small_sparse', sparse_per_video=2),
      # Every video has 2-4 low-contrast frames: the hard-frame study (docs/results.md).
      SyntheticConfig(name='hard', hard_frame_prob=1.0),
      SyntheticConfig(name='paper', height=352, width=352, min_frames=10, max_frames=30,
                      num_videos=(('train', 160), ('validation', 20), ('test', 40))),
      SyntheticConfig(name='variable', height=64, width=64, min_frames=1, max_frames=30,
                      num_videos=(('train', 60), ('validation', 12), ('test', 24))),
  ]
  DEFAULT_CONFIG_NAME = 'small'

  def _info(self) -> tfds.core.DatasetInfo:
    features = dict(common.segmentation_features(1, simulator.CLASS_NAMES))
    features['hard_frame'] = tfds.features.Tensor(shape=(None,), dtype=np.bool_)
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features),
                                          description=__doc__)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split, n)
            for split, n in self.builder_config.num_videos}

  def _generate_examples(self, split: str, num_videos: int):
    cfg = self.builder_config
    sim = simulator.Simulator(simulator.SimulatorConfig(
        height=cfg.height, width=cfg.width, min_frames=cfg.min_frames,
        max_frames=cfg.max_frames, hard_frame_prob=cfg.hard_frame_prob))
    seed = cfg.seed + _SPLIT_SEED_OFFSET.get(split, hash(split) % 1_000_000_007)
    for index in range(num_videos):
      video = sim.video(seed, index)
      annotated = np.ones(len(video.frames), bool)
      if cfg.sparse_per_video and split == 'train':
        annotated = sparse.keep_frames(len(annotated), video.video_id, cfg.seed,
                                       per_video=cfg.sparse_per_video)
      yield video.video_id, {
          'frames': video.frames, 'masks': video.masks * annotated[:, None, None, None],
          'boxes': video.boxes * annotated[:, None], 'annotated': annotated,
          'label': video.label, 'video_id': video.video_id, 'fps': video.fps,
          'hard_frame': video.hard}
