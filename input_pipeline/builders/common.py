"""Features and file readers shared by the TFDS builders.

One example is one video. Segmentation datasets carry ``frames``, ``masks``, ``boxes``,
``annotated`` (bool [T]: whether the frame has a mask; False only for the frames without a
mask file of a dataset converted with ``sparse_masks=True``, which store an all-zero mask
and box), ``video_id`` and ``fps``, the segmentation layouts also ``pixel_spacing_mm`` ((row, column)
mm per pixel from the folder's ``pixel_spacing.csv``, ``checks.spacing_file``; (0, 0) when
unknown) and ``frame_names`` (each frame's file name, so exported masks carry it);
classification datasets carry ``frames``, ``label``, ``video_id`` and ``fps``;
the table layouts add ``group`` (the patient: the table's group column, or the video id);
the synthetic dataset carries all but ``group`` and ``pixel_spacing_mm``. Frames are
stored at their own size (PNG per frame) and resized in the pipeline. The checks every
builder runs before it converts anything are in ``checks.py``.

Masks (``read_mask``): {0, 1}, {0, 255} and {0, 65535} masks (8 or 16 bits, grey or on the
brightest colour channel, alpha ignored) and 1-bit PNGs are binary, non-zero is lesion;
palette PNGs (DAVIS) are object-id maps, every non-zero id is lesion. Any other mask is an
error unless the builder option ``mask_threshold`` is set: then such a mask's lesion is
``value > mask_threshold`` on the mask's own scale (0..255 or 0..65535), while binary masks
stay binary.

Frames (``read_rgb``) are read at their full depth and stored as 8-bit RGB (``to_uint8``):
8-bit frames as they are; 16-bit ones (grey or colour PNG, TIFF) by their bit depth, which
their values tell: a frame whose largest value is at most 4095 holds 12-bit data (a common
scanner export, e.g. values 32..1840) and is scaled by 255 / 4095, any other by
255 / 65535 (so a 16-bit frame is never cut to its top 8 bits, which would leave 12-bit
data nearly black). The segmentation layouts' builder options ``pixel_min`` and
``pixel_max`` set a window instead (value ``pixel_min`` -> 0, ``pixel_max`` -> 255, clipped
outside), for every frame of the dataset, whatever its depth; floating-point frames (TIFF)
are read only with a window. A frame with NaN or infinite values is an error naming it.

File names are used as the operating system gives them (bytes that are not UTF-8 as
surrogate escapes), shown in messages with ``\\x`` escapes (``shown``) and stored with them
(``text_id``). Images are read as bytes and decoded in memory, so no name reaches OpenCV's
file functions (which crash on such names), and truncated files are caught
(``check_complete``).
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence

import cv2
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from input_pipeline import tf_setup  # pylint: disable=unused-import  (configures TensorFlow)
from input_pipeline.simulator import mask_to_box

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
BINARY_MASK_VALUES = ({0, 1}, {0, 255}, {0, 65535})
_JPEG_START, _JPEG_SCAN, _JPEG_END = b'\xff\xd8', b'\xff\xda', b'\xff\xd9'
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_12_BIT_MAX, _16_BIT_MAX = 4095, 65535


class DatasetError(ValueError):
  """A dataset on disk is missing files or is inconsistent; the message says which."""


def shown(path: str) -> str:
  """``path`` quoted for messages: bytes that are not UTF-8, and control characters, as
  ``\\xNN`` escapes."""
  text = os.fsencode(path).decode('utf-8', 'backslashreplace')
  return "'" + ''.join(c if c.isprintable() else f'\\x{ord(c):02x}' for c in text) + "'"


def text_id(name: str) -> str:
  """A name as storable text (TFDS keys and Text features): undecodable bytes escaped."""
  return os.fsencode(name).decode('utf-8', 'backslashreplace')


def segmentation_features(channels: int, class_names: Sequence[str] | None = None,
                          with_group: bool = False, with_spacing: bool = False,
                          with_frame_names: bool = False) -> tfds.features.FeaturesDict:
  """Features of a video segmentation example (optionally with a label, a group, the
  pixel spacing: float32 [2], (row, column) mm per pixel, (0, 0) when unknown, and the
  source frames' file names, ``frame_names``, which exported predictions are named after)."""
  features = {
      'frames': tfds.features.Video(shape=(None, None, None, channels)),
      'masks': tfds.features.Video(shape=(None, None, None, 1)),
      'boxes': tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
      'annotated': tfds.features.Tensor(shape=(None,), dtype=np.bool_),
      'video_id': tfds.features.Text(),
      'fps': tfds.features.Scalar(dtype=np.float32),
  }
  if class_names is not None:
    features['label'] = tfds.features.ClassLabel(names=list(class_names))
  if with_group:
    features['group'] = tfds.features.Text()
  if with_spacing:
    features['pixel_spacing_mm'] = tfds.features.Tensor(shape=(2,), dtype=np.float32)
  if with_frame_names:
    features['frame_names'] = tfds.features.Sequence(tfds.features.Text())
  return tfds.features.FeaturesDict(features)


def classification_features(channels: int, class_names: Sequence[str]
                           ) -> tfds.features.FeaturesDict:
  """Features of a video classification example (with the video's group)."""
  return tfds.features.FeaturesDict({
      'frames': tfds.features.Video(shape=(None, None, None, channels)),
      'label': tfds.features.ClassLabel(names=list(class_names)),
      'video_id': tfds.features.Text(),
      'group': tfds.features.Text(),
      'fps': tfds.features.Scalar(dtype=np.float32),
  })


def require_dir(path: str, what: str, instructions: str = '') -> str:
  """Returns ``path`` if it is a directory, else raises a DatasetError naming it."""
  if not os.path.isdir(path):
    raise DatasetError(f'{what} not found: {shown(path)} is not a directory. '
                       f'{instructions}'.strip())
  return path


def require_file(path: str, what: str) -> str:
  """Returns ``path`` if it is a file, else raises a DatasetError naming it."""
  if not os.path.isfile(path):
    raise DatasetError(f'{what} not found: {shown(path)} does not exist.')
  return path


def read_rows(path: str) -> list[tuple[int, list[str]]]:
  """Non-blank rows of a CSV (or one-name-per-line) file as (line number, stripped cells).

  A UTF-8 byte-order mark is ignored; bytes that are not UTF-8 are kept as surrogate
  escapes, like file names; a malformed file is a DatasetError naming the line.
  """
  with open(path, newline='', encoding='utf-8-sig', errors='surrogateescape') as f:
    reader = csv.reader(f)
    try:
      return [(reader.line_num, [cell.strip() for cell in row])
              for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as e:
      raise DatasetError(f'{shown(path)} line {reader.line_num} is not valid CSV ({e}): '
                         'fix the file.') from e


def read_table(path: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
  """The columns of a CSV file with a header row, and its other rows as (line number,
  {column: cell}) (``read_rows``; a missing cell is blank)."""
  rows = read_rows(path)
  columns = rows[0][1] if rows else []
  return columns, [(line, {c: cells[i] if i < len(cells) else '' for i, c in enumerate(columns)})
                   for line, cells in rows[1:]]


def list_images(directory: str) -> list[str]:
  """Image file names in ``directory``, in natural (numeric-aware) order."""
  names = [n for n in os.listdir(directory) if n.lower().endswith(IMAGE_EXTENSIONS)]
  return sorted(names, key=natural_key)


def natural_key(name: str) -> tuple:
  """Sort key that orders ``frame2`` before ``frame10``."""
  stem = os.path.splitext(name)[0]
  digits = ''.join(c if c.isdigit() else ' ' for c in stem).split()
  return (int(digits[-1]) if digits else -1, stem)


def read_bytes(path: str) -> bytes:
  """The bytes of ``path``; a missing or unreadable file is a DatasetError naming it."""
  try:
    with open(path, 'rb') as f:
      return f.read()
  except OSError as e:
    raise DatasetError(f'cannot read {shown(path)}: {e.strerror}.') from e


def check_complete(path: str, data: bytes) -> None:
  """Raises a DatasetError if a JPEG or PNG file is truncated.

  Decoders fill a truncated image's missing part and warn on stderr (OpenCV's ``imread``
  returns the partial image), so the file structure is checked too: a JPEG must end its
  last scan with the end-of-image marker (scan data cannot contain it: 0xFF is stuffed),
  a PNG must hold its IEND chunk.
  """
  truncated = ((data[:2] == _JPEG_START and data.rfind(_JPEG_END) < data.rfind(_JPEG_SCAN))
               or (data[:8] == _PNG_SIGNATURE and data.rfind(b'IEND') < 0))
  if truncated or not data:
    raise DatasetError(f'{shown(path)} is {"empty" if not data else "truncated"}: '
                       'replace it with a complete copy or remove it (and its mask).')


def read_rgb(path: str, window: tuple[float, float] | None = None) -> np.ndarray:
  """Reads an image at its full depth as uint8 RGB [H, W, 3] (``to_uint8``, ``window``:
  (value -> 0, value -> 255) or None); a missing, truncated or undecodable file, or one with
  NaN or infinite values, is a DatasetError naming it."""
  data = read_bytes(path)
  check_complete(path, data)
  image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
  if image is None or not image.size:
    raise DatasetError(f'cannot decode image {shown(path)}: the file is corrupt or not an '
                       'image. Replace or remove it (and its mask).')
  image = to_uint8(image, path, window)
  if image.ndim == 2:
    return np.repeat(image[..., None], 3, axis=-1)
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def to_uint8(values: np.ndarray, path: str, window: tuple[float, float] | None = None
             ) -> np.ndarray:
  """A frame's values on 0..255 by the rule of the module docstring: 8-bit as they are,
  16-bit by their bit depth (12 when no value exceeds 4095, else 16), or mapped from
  ``window`` = (low, high) when given."""
  if values.dtype.kind == 'f' and not np.isfinite(values).all():
    bad = int(values.size - np.isfinite(values).sum())
    raise DatasetError(f'image {shown(path)} holds NaN or infinite pixel values ({bad} of '
                       f'{values.size}): fix or replace the file, or remove it (and its mask).')
  if window is not None:
    low, high = window
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)
  if values.dtype == np.uint8:
    return values
  if values.dtype.kind == 'f':
    raise DatasetError(f'image {shown(path)} has floating-point pixels, which have no bit '
                       'depth: set the builder options pixel_min and pixel_max (the values '
                       'shown black and white, docs/data.md), or export 8- or 16-bit frames.')
  top = _12_BIT_MAX if values.max() <= _12_BIT_MAX else _16_BIT_MAX
  scaled = np.round(values.astype(np.float64) * (255.0 / top))
  return np.clip(scaled, 0, 255).astype(np.uint8)


def read_mask(path: str, frame_shape: tuple[int, ...], threshold: float | None = None
              ) -> np.ndarray:
  """Reads a mask as uint8 [H, W, 1] in {0, 1} (conventions: module docstring); checks it is
  binary (or ``threshold`` is set) and matches its frame's size."""
  data = read_bytes(path)
  check_complete(path, data)
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      palette = image.mode in ('P', 'PA')
      bands = image.getbands()
      values = np.asarray(image)
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise DatasetError(f'cannot decode mask {shown(path)} ({e}): replace or remove it.') from e
  if values.ndim == 3:
    values = values[..., [i for i, band in enumerate(bands) if band != 'A']].max(axis=-1)
  if values.shape[:2] != tuple(frame_shape[:2]):
    raise DatasetError(f'mask {shown(path)} is {values.shape[1]}x{values.shape[0]} but its '
                       f'frame is {frame_shape[1]}x{frame_shape[0]}: masks must match their '
                       'frames.')
  return binarize_mask(values, palette, threshold, path)[..., None].astype(np.uint8)


def binarize_mask(values: np.ndarray, palette: bool, threshold: float | None,
                  path: str) -> np.ndarray:
  """Lesion (bool [H, W]) of a mask's values by the conventions of the module docstring."""
  if palette or values.dtype == bool:
    return values > 0
  present = set(np.unique(values).tolist())
  if any(present <= binary for binary in BINARY_MASK_VALUES):
    return values > 0
  if threshold is not None:
    return values > threshold
  listed = sorted(present)
  values_text = (', '.join(f'{v:g}' for v in listed) if len(listed) <= 6 else
                 f'{len(listed)} values from {listed[0]:g} to {listed[-1]:g}')
  raise DatasetError(f'mask {shown(path)} is not binary ({values_text}): masks must hold '
                     '{0, 1}, {0, 255} or {0, 65535} (or be 1-bit or palette PNGs). Fix the '
                     'masks, or set the builder option mask_threshold to count value > '
                     'mask_threshold as lesion (--config.dataset.name=<name>/mask_threshold=127'
                     ', docs/data.md).')


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
  """Normalised (ymin, xmin, ymax, xmax) per frame of [T, H, W, 1] masks; zeros if empty."""
  return np.stack([mask_to_box(m[..., 0]) for m in masks]).astype(np.float32)
