"""The tf.data side of the segmentation examples (``clips.Clips``): clips of each video, or
whole videos, and their batches (see ``input_pipeline/clips.py`` for what a clip is, which
frames are targets, and how unannotated frames are treated)."""
from __future__ import annotations

import ml_collections
import tensorflow as tf

from input_pipeline import tf_setup  # (configures TensorFlow on import)
from input_pipeline import clips
from input_pipeline import image_clips
from input_pipeline import preprocess
from input_pipeline import spec as spec_lib


def augment(example: dict, seed: tf.Tensor, input_config: ml_collections.ConfigDict,
            train: bool) -> dict:
  """``preprocess.augment_frames``, after each frame of a training clip made from a still
  image (``input.image_clips``) is deformed by its own random affine (``image_clips``)."""
  if train and input_config.image_clips:
    deform_seed, seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    example = image_clips.deform_clip(example, deform_seed, input_config.augment.affine)
  return preprocess.augment_frames(example, seed, input_config, train)


def annotated_of(video: dict) -> tf.Tensor:
  """bool [T]: the video's ``annotated`` flags (all True for a dataset without them)."""
  if 'annotated' in video:
    return tf.cast(video['annotated'], tf.bool)
  return tf.ones(tf.shape(video['frames'])[:1], tf.bool)


def clip_indices(annotated: tf.Tensor, clip_length: int, distinct: bool, still: bool = False
                 ) -> tuple[tf.Tensor, tf.Tensor]:
  """(frames [N, clip_length] of the clip ending at each target, targets [N]) for every
  frame of a video that can be a target (``clips`` docstring): all frames, previous frames
  clamped at the first; or, ``distinct``, those with an annotated frame at least
  clip_length - 1 before them, which starts their clip, the frames between spread evenly;
  or, ``still``, all frames, each clip its target frame repeated (``image_clips``)."""
  num = tf.shape(annotated)[0]
  targets = tf.range(num)
  if still:
    return tf.tile(targets[:, None], [1, clip_length]), targets
  if not distinct:
    return tf.maximum(targets[:, None] + tf.range(1 - clip_length, 1)[None, :], 0), targets
  if clip_length == 1:
    return targets[:, None], targets
  marks = tf.where(annotated, targets, -1)
  latest = tf.scan(tf.maximum, marks, initializer=tf.constant(-1))  # Last annotated <= i.
  targets = tf.range(clip_length - 1, num)
  first = tf.gather(latest, targets - (clip_length - 1))
  targets, first = targets[first >= 0], first[first >= 0]
  steps = tf.cast(tf.range(clip_length), tf.float64) / (clip_length - 1)
  gap = tf.cast(targets - first, tf.float64)
  offsets = tf.cast(tf.round(gap[:, None] * steps[None, :]), tf.int32)
  return first[:, None] + offsets, targets


def training_targets(is_target_annotated: tf.Tensor, unannotated_too: bool,
                     seed: tf.Tensor) -> tf.Tensor:
  """Positions (into the candidate targets) of a training pass's targets: the annotated
  ones and, with ``unannotated_too``, as many unannotated ones, drawn with ``seed``."""
  annotated = tf.where(is_target_annotated)[:, 0]
  if not unannotated_too:
    return annotated
  others = tf.random.experimental.stateless_shuffle(tf.where(~is_target_annotated)[:, 0], seed)
  return tf.concat([annotated, others[:tf.shape(annotated)[0]]], axis=0)


def clips_of(video: dict, clip_length: int, distinct: bool = False, train: bool = False,
             unannotated_too: bool = False, seed: tf.Tensor | None = None,
             still: bool = False) -> tf.data.Dataset:
  """The clips of a video, target t last (``clip_indices``); in training only the targets
  of ``training_targets`` (``seed``: int32 [2], needed with ``unannotated_too``)."""
  annotated = annotated_of(video)
  index, target = clip_indices(annotated, clip_length, distinct, still)
  if train:
    keep = training_targets(tf.gather(annotated, target), unannotated_too, seed)
    index, target = tf.gather(index, keep), tf.gather(target, keep)
  examples = {k: tf.gather(video[k], index) for k in ('frames', 'masks', 'boxes')}
  examples['annotated'] = tf.gather(annotated, index)
  examples['video_id'] = tf.fill(tf.shape(target), video['video_id'])
  examples['frame_index'] = target
  return tf.data.Dataset.from_tensor_slices(examples)


def from_first_annotated(video: dict) -> dict:
  """A whole video from its first annotated frame on, with that frame's index
  (``frame_offset``)."""
  annotated = annotated_of(video)
  first = tf.cast(tf.argmax(tf.cast(annotated, tf.int32)), tf.int32)
  out = {k: video[k][first:] for k in ('frames', 'masks', 'boxes')}
  return dict(out, annotated=annotated[first:], video_id=video['video_id'], frame_offset=first)


def items(videos: tf.data.Dataset, config: ml_collections.ConfigDict,
          train: bool) -> tf.data.Dataset:
  """Encoded clips (or whole videos) from a stream of encoded videos."""
  if clips.whole_videos(config, train):
    return videos.map(tf_setup.as_written(from_first_annotated))
  distinct = clips.distinct_clips(config, train)
  length = config.input.clip_length
  if not train:
    return videos.flat_map(tf_setup.as_written(lambda v: clips_of(v, length, distinct)))
  unannotated_too = config.task.consistency_weight > 0
  still = config.input.image_clips
  return videos.enumerate().flat_map(tf_setup.as_written(lambda i, v: clips_of(
      v, length, distinct, train=True, unannotated_too=unannotated_too,
      seed=tf.cast(tf.stack([tf.cast(config.seed, tf.int64), i]), tf.int32), still=still)))


def batch(ds: tf.data.Dataset, config: ml_collections.ConfigDict, fields: spec_lib.Spec,
          batch_size: int, drop_remainder: bool, train: bool) -> tf.data.Dataset:
  """Batches of clips; whole videos of different lengths are padded (``valid`` False)."""
  del fields
  if clips.whole_videos(config, train):
    return ds.padded_batch(batch_size, drop_remainder=drop_remainder)
  return ds.batch(batch_size, drop_remainder=drop_remainder)
