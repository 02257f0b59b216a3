"""The evaluated videos as the dataset stores them (their own size, masks still encoded),
read on the host by video key and frame index: what segmentation is scored against at native
resolution, and the frames its overlays show (``segmentation_evaluation``)."""
from __future__ import annotations

import weakref
from typing import NamedTuple

import cv2
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline import preprocess
from input_pipeline import spec
from usvjax.errors import ConfigError
from usvjax.tasks.video_keys import key_text


class StoredVideo(NamedTuple):
  """What the dataset stores of one video besides its frames."""
  masks: list[bytes]  # PNG-encoded [H, W, 1] masks in {0, 1}, at the frames' size.
  spacing: tuple[float, float] | None  # (row, column) mm per pixel, if stored.
  frame_names: list[str] | None  # The source frames' names, if stored.
  hard: np.ndarray | None  # bool [T]: frames the dataset flags as hard (synthetic data).


class StoredSplit:
  """The evaluated videos as the dataset stores them (their own size), read on the host.

  Every process reads all of them (evaluation outputs are gathered on every process).
  Videos are keyed as the batches' ``video_key`` decodes (``video_keys.decode_key``).
  """

  def __init__(self, builder: tfds.core.DatasetBuilder, split: str):
    self.builder, self.split = builder, split
    self._videos: dict[str, StoredVideo] | None = None

  def _dataset(self) -> tf.data.Dataset:
    decoders = {k: tfds.decode.SkipDecoding() for k in ('frames', 'masks')
                if k in self.builder.info.features}
    return self.builder.as_dataset(split=self.split, decoders=decoders, shuffle_files=False)

  @property
  def videos(self) -> dict[str, StoredVideo]:
    """{video key: its stored masks, pixel spacing and frame names}, read once."""
    if self._videos is None:
      self._videos = {}
      for video in self._dataset().as_numpy_iterator():
        key = key_text(video['video_id'])
        if key in self._videos:
          raise ConfigError(f'two videos of split {self.split!r} share the id {key!r} (or its '
                            f'first {spec.VIDEO_KEY_BYTES} bytes): give them distinct ids.')
        spacing = tuple(float(s) for s in video.get('pixel_spacing_mm', ()))
        names = video.get('frame_names')
        self._videos[key] = StoredVideo(
            list(video['masks']), spacing if spacing and min(spacing) > 0 else None,
            None if names is None else [n.decode('utf-8', 'replace') for n in names],
            video.get('hard_frame'))
    return self._videos

  def video(self, key: str) -> StoredVideo:
    if key not in self.videos:
      raise ValueError(f'video {key!r} was evaluated but is not in split {self.split!r} of '
                       f'{self.builder.info.full_name}.')
    return self.videos[key]

  def mask(self, key: str, index: int) -> np.ndarray:
    """bool [H, W]: frame ``index`` of video ``key``'s stored mask."""
    masks = self.video(key).masks
    if not 0 <= index < len(masks):
      raise ValueError(f'frame {index} of video {key!r} was evaluated; the video has '
                       f'{len(masks)} frames.')
    return cv2.imdecode(np.frombuffer(masks[index], np.uint8), cv2.IMREAD_GRAYSCALE) > 0

  def frames(self, wanted: dict[str, list[int]]) -> dict[str, dict[int, np.ndarray]]:
    """{video: {index: uint8 [H, W, C] stored frame}} of the ``wanted`` frame indices."""
    channels = self.builder.info.features['frames'].shape[-1]
    out = {}
    for video in self._dataset().as_numpy_iterator():
      key = key_text(video['video_id'])
      if key in wanted:
        decoded = preprocess.decode(tf.constant([video['frames'][i] for i in wanted[key]]),
                                    channels).numpy()
        out[key] = dict(zip(wanted[key], decoded))
    return out


# {builder: {split: StoredSplit}}: a split's stored videos are read once per prepared builder,
# however often a run evaluates it (each validation, each checkpoint a study scores).
_read: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def stored_split(builder: tfds.core.DatasetBuilder, split: str) -> StoredSplit:
  """The ``StoredSplit`` of ``split`` of ``builder``, one per builder and split."""
  splits = _read.setdefault(builder, {})
  if split not in splits:
    splits[split] = StoredSplit(builder, split)
  return splits[split]
