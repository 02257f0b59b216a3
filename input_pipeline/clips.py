"""Segmentation examples: clips of consecutive frames, or whole videos for streaming eval.

A **clip** is the target frame t and its ``input.clip_length`` - 1 previous frames,
``frames[T, H, W, C]`` ordered in time, **the target last** (index T-1).
``masks[T, H, W, 1]``, ``boxes[T, 4]``, ``annotated[T]`` (and ``heatmaps[T, H, W, 1]``
with ``input.heatmap_sigma`` > 0) come with every clip frame; ``frame_index`` is the
target's index in its video.

**Sparse annotations.** ``annotated`` says which frames have a traced mask (the dataset's
``annotated`` feature: a segmentation layout converted with the builder option
``sparse_masks=True``, docs/data.md; all True for datasets without it). An unannotated
frame's stored mask is all zeros and is never a target of a loss: the losses weight each
frame by ``valid & annotated``, and evaluation scores only annotated frames. Which frames
are targets (``input.train_clips`` in training; evaluation makes every frame the target of
one clip and scores the annotated ones):

* ``'every_frame'``: every annotated frame of every video is a target exactly once; its
  previous frames, annotated or not, are its clip (they feed the temporal modules); at a
  video's start the missing previous frames are the first frame repeated
  (t-1 -> max(t-1, 0)). FLA-Net's released loader makes a clip ending at every frame this
  way; the default.
* ``'distinct_frames'``: clips of clip_length distinct frames whose first frame and target
  are annotated (STM's training clips: the first frame's mask is STPFNet's memory).
  Fully annotated videos give the clips of consecutive frames ending at every frame with
  clip_length - 1 predecessors; in sparsely annotated ones the first frame is the latest
  annotated frame at least clip_length - 1 before the target and the frames between are
  spread evenly over the gap (STM samples its training frames with gaps).

With ``input.image_clips`` (STM's stage on still images, ``input_pipeline/image_clips.py``)
a training clip is its annotated target frame repeated, each copy then deformed by a random
affine transform of its own, whatever ``train_clips`` says; 1-frame videos (still images)
then train any video segmenter.

With the mean teacher (``config.task.consistency_weight`` > 0, ``usvjax.tasks``) the
training stream also makes clips whose target is unannotated (their only loss is the
consistency term): for each video as many as it has annotated targets, drawn anew on each
pass over the video (seeded), so about half of a batch is annotated targets, as in the
supervised run.

Videos shorter than a clip are refused before training (``usvjax.core.run_checks``).

With ``input.eval_protocol='first_frame'`` (semi-supervised evaluation, see
``usvjax.core.streaming``) evaluation examples are **whole videos** instead, padded in time to
the longest of the batch (``valid`` False after the end), each starting at its first
annotated frame (whose mask a propagating model is given; ``frame_offset`` is its index
in the video).

This module declares the examples (no TensorFlow); ``clip_streams`` makes them with tf.data.
"""
from __future__ import annotations

from collections.abc import Mapping

import ml_collections
import numpy as np

from input_pipeline import spec as spec_lib
from usvjax.errors import ConfigError

EVAL_PROTOCOLS = ('clip', 'first_frame')
TRAIN_CLIPS = ('every_frame', 'distinct_frames')


def whole_videos(config: ml_collections.ConfigDict, train: bool) -> bool:
  """Whether examples are whole videos (evaluation with ``input.eval_protocol='first_frame'``)."""
  protocol = config.input.eval_protocol
  if protocol not in EVAL_PROTOCOLS:
    raise ConfigError(f'config.input.eval_protocol={protocol!r}: use one of {EVAL_PROTOCOLS}.')
  return not train and protocol == 'first_frame'


def distinct_clips(config: ml_collections.ConfigDict, train: bool) -> bool:
  """Whether only clips of distinct frames are examples (training, ``'distinct_frames'``)."""
  if not train:  # Evaluation scores every frame (and reads runs saved before the key).
    return False
  choice = config.input.train_clips
  if choice not in TRAIN_CLIPS:
    raise ConfigError(f'config.input.train_clips={choice!r}: use one of {TRAIN_CLIPS}.')
  return choice == 'distinct_frames'


class Clips(spec_lib.StreamsInModule):
  """The example source of segmentation (``spec.ExampleSource``)."""

  STREAMS = 'input_pipeline.clip_streams'
  clip_examples = True

  def required_features(self, features: Mapping) -> tuple[str, ...]:
    del features
    return ('frames', 'masks')

  def fields(self, config: ml_collections.ConfigDict, train: bool,
             features: Mapping | None) -> spec_lib.Spec:
    del features
    length = None if whole_videos(config, train) else config.input.clip_length
    size = config.input.image_size
    mask = spec_lib.Field((length, size, size, 1), np.dtype(np.float32), time=True)
    out = {'frames': spec_lib.image_field(config, length), 'masks': mask,
           'boxes': spec_lib.Field((length, 4), np.dtype(np.float32), time=True),
           'annotated': spec_lib.Field((length,), np.dtype(bool), time=True)}
    if config.input.heatmap_sigma > 0:
      out['heatmaps'] = mask
    index = 'frame_index' if length is not None else 'frame_offset'
    out[index] = spec_lib.Field((), np.dtype(np.int32))
    return {**out, **spec_lib.common_fields(train, length)}
