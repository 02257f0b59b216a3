"""DICOM cine loops (multi-frame ultrasound) as videos: frames, frame rate and pixel spacing.

Clinical ultrasound video is stored as multi-frame DICOM (Ultrasound Multi-frame Image
Storage); a single-frame file is a 1-frame video. Reading needs ``pydicom``, the optional
DICOM extra (``pip install -r requirements-dicom.txt``); without it, reading a DICOM file is
one error saying so. What is read:

* Pixels: 8-bit unsigned samples (``BitsAllocated`` 8), grey (``MONOCHROME2``;
  ``MONOCHROME1`` is inverted to it) or colour (``RGB``, ``YBR_FULL``, ``YBR_FULL_422``,
  converted to RGB by pydicom), returned as uint8 RGB [T, H, W, 3] like every video.
  Uncompressed transfer syntaxes (implicit or explicit VR, deflated) are always read; a
  compressed one is decoded by whichever pydicom decoding plugin is installed (JPEG
  baseline and JPEG 2000 through Pillow, which the runtime requirements include, RLE by
  pydicom itself). A compressed syntax no installed plugin decodes (JPEG lossless, JPEG-LS,
  HTJ2K without pylibjpeg or GDCM) is an error naming the file, the transfer syntax and the
  packages that would decode it. Palette colour and 16-bit files are errors that say so;
  so is floating-point pixel data (``FloatPixelData``, ``DoubleFloatPixelData``), naming
  NaN or infinite values when it holds any.
* Frame rate: ``1000 / FrameTime`` (ms per frame), else ``CineRate``, else
  ``RecommendedDisplayFrameRate``, else 0 (unknown, as for a folder of frames).
* Pixel spacing in mm, (down the rows, across the columns): ``PixelSpacing`` when present,
  else the first region of ``SequenceOfUltrasoundRegions`` that is 2D
  (``RegionSpatialFormat`` 1) with both physical units in cm (code 3): its
  ``PhysicalDeltaY``, ``PhysicalDeltaX`` times 10. None when neither gives it (the image
  then has no calibrated size). A file whose regions have different spacings (a dual view)
  gets the first such region's.

Files are recognised by the extension ``.dcm`` or ``.dicom`` or by the ``DICM`` marker after
the 128-byte preamble (``is_dicom``); frames are decoded one at a time (``iter_frames``), so
long loops are checked without holding them in memory.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

from input_pipeline.builders import common

EXTENSIONS = ('.dcm', '.dicom')
_MARKER_OFFSET, _MARKER = 128, b'DICM'
_GREY = ('MONOCHROME1', 'MONOCHROME2')
_COLOUR = ('RGB', 'YBR_FULL', 'YBR_FULL_422')
_CENTIMETRES = 3  # PhysicalUnitsX/YDirection code for cm.
_REGION_2D = 1  # RegionSpatialFormat code for a 2D (tissue or flow) region.
_DEFER_BYTES = 1024  # Header values larger than this (the pixel data) are read when used.
_FLOAT_PIXELS = {'FloatPixelData': '<f4', 'DoubleFloatPixelData': '<f8'}


@dataclasses.dataclass(frozen=True)
class CineInfo:
  """What a DICOM file says about its video besides the pixels.

  Attributes:
    num_frames: T, ``NumberOfFrames`` (1 when absent).
    fps: frames per second; 0 when the file gives no frame timing.
    pixel_spacing_mm: (row spacing, column spacing) in mm per pixel, or None.
    transfer_syntax: the transfer syntax's name, e.g. 'Explicit VR Little Endian'.
  """
  num_frames: int
  fps: float
  pixel_spacing_mm: tuple[float, float] | None
  transfer_syntax: str


def is_dicom(path: str) -> bool:
  """Whether ``path`` is a DICOM file: a ``.dcm``/``.dicom`` name, or a file with the
  ``DICM`` marker after its 128-byte preamble."""
  if path.lower().endswith(EXTENSIONS):
    return True
  try:
    with open(path, 'rb') as f:
      f.seek(_MARKER_OFFSET)
      return f.read(len(_MARKER)) == _MARKER
  except (OSError, ValueError):  # Missing, unreadable, or a name with a NUL byte.
    return False


def read_dicom(path: str) -> tuple[np.ndarray, CineInfo]:
  """All frames of a DICOM file as uint8 RGB [T, H, W, 3], and its ``CineInfo``.

  Raises a DatasetError naming the file for anything it cannot read (module docstring).
  """
  frames, info = iter_frames(path)
  return np.stack(list(frames)), info


def iter_frames(path: str) -> tuple[Iterator[np.ndarray], CineInfo]:
  """The frames of a DICOM file (uint8 RGB [H, W, 3], decoded one at a time while iterating)
  and its ``CineInfo``, read from the header at once.

  The header is checked before any frame is decoded: a missing or non-DICOM file, no pixel
  data, pixels other than 8-bit unsigned grey or colour, or a compressed transfer syntax that
  no installed decoder reads is a DatasetError naming the file; so is pixel data that fails to
  decode (raised while iterating).
  """
  common.require_file(path, 'DICOM file')
  pydicom = _import_pydicom(path)
  from pydicom import pixels  # pylint: disable=g-import-not-at-top
  try:
    with open(path, 'rb') as f:
      header = pydicom.dcmread(f, defer_size=_DEFER_BYTES)  # Pixel data is not read.
  except (pydicom.errors.InvalidDicomError, EOFError, ValueError) as e:
    raise common.DatasetError(f'cannot read DICOM file {common.shown(path)}: '
                              f'{str(e).rstrip(".")}. It is not '
                              'a DICOM file (or is damaged): replace or remove it.') from e
  syntax = header.file_meta.get('TransferSyntaxUID', pydicom.uid.ImplicitVRLittleEndian)
  _check_pixels(path, header, syntax, pixels)
  info = CineInfo(num_frames=int(header.get('NumberOfFrames') or 1), fps=_fps(header),
                  pixel_spacing_mm=_pixel_spacing(header), transfer_syntax=syntax.name)
  invert = header.PhotometricInterpretation == 'MONOCHROME1'

  def frames() -> Iterator[np.ndarray]:
    with open(path, 'rb') as f:
      try:
        for frame in pixels.iter_pixels(f):
          frame = 255 - frame if invert else frame
          yield np.repeat(frame[..., None], 3, axis=-1) if frame.ndim == 2 else frame
      except (ValueError, RuntimeError, EOFError) as e:
        raise common.DatasetError(f'cannot decode the pixel data of DICOM file '
                                  f'{common.shown(path)} ({syntax.name}): '
                                  f'{str(e).rstrip(".")}. The file is '
                                  'damaged: replace or remove it.') from e
  return frames(), info


def _import_pydicom(path: str) -> Any:
  try:
    import pydicom  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise common.DatasetError(
        f'{common.shown(path)} is a DICOM file and reading DICOM needs pydicom, the optional '
        'DICOM extra: install it with `.venv/bin/pip install -r requirements-dicom.txt`.') from e
  return pydicom


def _check_pixels(path: str, header: Any, syntax: Any, pixels: Any) -> None:
  """Raises a DatasetError naming ``path`` if its pixels are not readable here."""
  where = f'DICOM file {common.shown(path)}'
  for keyword, dtype in _FLOAT_PIXELS.items():
    if keyword in header:
      with open(path, 'rb') as f:
        values = np.frombuffer(_import_pydicom(path).dcmread(f)[keyword].value, dtype)
      bad = int(values.size - np.isfinite(values).sum())
      if bad:
        raise common.DatasetError(f'{where} holds NaN or infinite pixel values ({bad} of '
                                  f'{values.size}, {keyword}): fix the export or remove it.')
      raise common.DatasetError(f'{where} has floating-point pixel data ({keyword}): only '
                                '8-bit unsigned samples are read. Export it with 8 bits per '
                                'sample.')
  if 'PixelData' not in header:
    raise common.DatasetError(f'{where} holds no image (no pixel data): remove it.')
  photometric = header.get('PhotometricInterpretation', '')
  if photometric not in _GREY + _COLOUR:
    raise common.DatasetError(f'{where} has photometric interpretation {photometric!r}: only '
                              f'{", ".join(_GREY + _COLOUR)} are read. Export it as RGB.')
  bits, signed = header.get('BitsAllocated'), header.get('PixelRepresentation', 0)
  if bits != 8 or signed:
    raise common.DatasetError(f'{where} has {bits}-bit {"signed" if signed else "unsigned"} '
                              'samples: only 8-bit unsigned ones are read. Export it with '
                              '8 bits per sample.')
  if not syntax.is_compressed:
    return
  try:
    decoder = pixels.get_decoder(syntax)
  except NotImplementedError as e:
    raise common.DatasetError(f'{where} is compressed as {syntax.name} ({syntax}), which '
                              'pydicom cannot decode: convert it to an uncompressed transfer '
                              'syntax (e.g. `gdcmconv --raw`).') from e
  if not decoder.is_available:
    raise common.DatasetError(
        f'{where} is compressed as {syntax.name} ({syntax}) and no decoder for it is '
        f'installed; pydicom decodes it with one of these plugins: '
        f'{"; ".join(decoder.missing_dependencies)}. Install '
        'one, or convert the file to an uncompressed transfer syntax.')


def _fps(header: Any) -> float:
  """Frames per second from the frame time (ms) or the cine rates; 0 if none is given."""
  frame_time = float(header.get('FrameTime') or 0)
  if frame_time > 0:
    return 1000.0 / frame_time
  for keyword in ('CineRate', 'RecommendedDisplayFrameRate'):
    rate = float(header.get(keyword) or 0)
    if rate > 0:
      return rate
  return 0.0


def _pixel_spacing(header: Any) -> tuple[float, float] | None:
  """(row, column) spacing in mm from PixelSpacing or the first 2D ultrasound region
  calibrated in cm (module docstring); None if neither gives it."""
  spacing = header.get('PixelSpacing')
  if spacing is not None and len(spacing) == 2 and all(float(s) > 0 for s in spacing):
    return float(spacing[0]), float(spacing[1])
  for region in header.get('SequenceOfUltrasoundRegions') or []:
    if (region.get('RegionSpatialFormat') == _REGION_2D
        and region.get('PhysicalUnitsXDirection') == _CENTIMETRES
        and region.get('PhysicalUnitsYDirection') == _CENTIMETRES):
      return 10 * abs(float(region.PhysicalDeltaY)), 10 * abs(float(region.PhysicalDeltaX))
  return None
