"""Features and file helpers shared by the TFDS builders.

One example is one video. Segmentation datasets carry ``frames``, ``masks``, ``boxes``,
``video_id`` and ``fps``; classification datasets carry ``frames``, ``label``, ``video_id``
and ``fps``; the synthetic dataset carries all of them. Frames are stored at their own size
(PNG per frame) and resized in the pipeline.

Masks are binarised with ``value > MASK_THRESHOLD`` on the brightest channel, so 0/255
masks (and near-binary compressed ones such as CVC-612's RGB masks) become {0, 1}; palette
PNGs (DAVIS) are object-id maps and every non-zero id is lesion.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from input_pipeline.simulator import mask_to_box

MASK_THRESHOLD = 127
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')


class DatasetError(ValueError):
  """A dataset on disk is missing files or is inconsistent; the message says which."""


def segmentation_features(channels: int, class_names: Sequence[str] | None = None
                         ) -> tfds.features.FeaturesDict:
  """Features of a video segmentation example (optionally with a video label)."""
  features = {
      'frames': tfds.features.Video(shape=(None, None, None, channels)),
      'masks': tfds.features.Video(shape=(None, None, None, 1)),
      'boxes': tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
      'video_id': tfds.features.Text(),
      'fps': tfds.features.Scalar(dtype=np.float32),
  }
  if class_names is not None:
    features['label'] = tfds.features.ClassLabel(names=list(class_names))
  return tfds.features.FeaturesDict(features)


def classification_features(channels: int, class_names: Sequence[str]
                           ) -> tfds.features.FeaturesDict:
  """Features of a video classification example."""
  return tfds.features.FeaturesDict({
      'frames': tfds.features.Video(shape=(None, None, None, channels)),
      'label': tfds.features.ClassLabel(names=list(class_names)),
      'video_id': tfds.features.Text(),
      'fps': tfds.features.Scalar(dtype=np.float32),
  })


def require_dir(path: str, what: str, instructions: str = '') -> str:
  """Returns ``path`` if it is a directory, else raises a DatasetError naming it."""
  if not os.path.isdir(path):
    raise DatasetError(f'{what} not found: {path!r} is not a directory. {instructions}'.strip())
  return path


def require_file(path: str, what: str) -> str:
  if not os.path.isfile(path):
    raise DatasetError(f'{what} not found: {path!r} does not exist.')
  return path


def list_images(directory: str) -> list[str]:
  """Image file names in ``directory``, in natural (numeric-aware) order."""
  names = [n for n in os.listdir(directory) if n.lower().endswith(IMAGE_EXTENSIONS)]
  return sorted(names, key=natural_key)


def natural_key(name: str) -> tuple:
  """Sort key that orders ``frame2`` before ``frame10``."""
  stem = os.path.splitext(name)[0]
  digits = ''.join(c if c.isdigit() else ' ' for c in stem).split()
  return (int(digits[-1]) if digits else -1, stem)


def frames_with_masks(frame_dir: str, mask_dir: str, video: str) -> tuple[list, list]:
  """Paths of a video's frames and of their masks (same stem, ``.png``), checked to exist."""
  require_dir(frame_dir, f'frames of video {video!r}')
  require_dir(mask_dir, f'masks of video {video!r}')
  frames, masks = [], []
  for name in list_images(frame_dir):
    frames.append(os.path.join(frame_dir, name))
    masks.append(require_file(os.path.join(mask_dir, os.path.splitext(name)[0] + '.png'),
                              f'mask of frame {frames[-1]!r}'))
  return frames, masks


def read_rgb(path: str) -> np.ndarray:
  """Reads an image as uint8 RGB [H, W, 3]; a missing or unreadable file is a DatasetError."""
  image = cv2.imread(path, cv2.IMREAD_COLOR)
  if image is None:
    raise DatasetError(f'cannot read image {path!r}: the file is missing or corrupt. '
                       'Replace or remove it (and its mask).')
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(path: str, frame_shape: tuple[int, ...]) -> np.ndarray:
  """Reads a mask as uint8 [H, W, 1] in {0, 1}; checks it matches its frame's size.

  Palette PNGs (DAVIS annotations) hold object ids: every non-zero id is lesion. Other
  masks are binarised with ``value > MASK_THRESHOLD`` on their brightest channel.
  """
  try:
    with Image.open(path) as image:
      palette = image.mode == 'P'
      mask = np.asarray(image)
  except (OSError, ValueError) as e:
    raise DatasetError(f'cannot read mask {path!r}: the file is missing or corrupt ({e}).')
  if mask.ndim == 3:
    mask = mask[..., :3].max(axis=-1)
  if mask.shape[:2] != tuple(frame_shape[:2]):
    raise DatasetError(f'mask {path!r} is {mask.shape[1]}x{mask.shape[0]} but its frame is '
                       f'{frame_shape[1]}x{frame_shape[0]}; masks must match their frames.')
  foreground = mask > 0 if palette else mask > MASK_THRESHOLD
  return foreground.astype(np.uint8)[..., None]


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
  """Normalised (ymin, xmin, ymax, xmax) per frame of [T, H, W, 1] masks; zeros if empty."""
  return np.stack([mask_to_box(m[..., 0]) for m in masks]).astype(np.float32)


def segmentation_example(frame_paths: Sequence[str], mask_paths: Sequence[str],
                         video_id: str, fps: float) -> dict:
  """Reads one video's frames and masks into a segmentation example, with checks."""
  if not frame_paths:
    raise DatasetError(f'video {video_id!r} has no frames; remove it or add its frames.')
  if len(frame_paths) != len(mask_paths):
    raise DatasetError(f'video {video_id!r} has {len(frame_paths)} frames but '
                       f'{len(mask_paths)} masks; every frame needs exactly one mask.')
  frames = [read_rgb(p) for p in frame_paths]
  shapes = {f.shape for f in frames}
  if len(shapes) != 1:
    raise DatasetError(f'video {video_id!r} has frames of different sizes {sorted(shapes)}.')
  masks = np.stack([read_mask(p, f.shape) for p, f in zip(mask_paths, frames)])
  return {'frames': np.stack(frames), 'masks': masks, 'boxes': boxes_from_masks(masks),
          'video_id': video_id, 'fps': float(fps)}
