"""DICOM cine loops (input_pipeline/builders/dicom.py) on small files written here with
pydicom: pixels, frame rate and pixel spacing as stored, the video-table reader taking a
DICOM file like a video, and one clear error per file it cannot read."""
import shutil
import sys

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate

import input_pipeline.builders  # pylint: disable=unused-import  # Registers the builders.
from helpers import write_dicom
from input_pipeline.builders import common
from input_pipeline.builders import dicom
from input_pipeline.builders import video_table

RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 256, (5, 12, 20), dtype=np.uint8)  # [T, H, W]
COLOUR = RNG.integers(0, 256, (4, 12, 20, 3), dtype=np.uint8)  # [T, H, W, 3]


def _region(delta_x_cm: float, delta_y_cm: float, spatial_format: int = 1) -> Dataset:
  region = Dataset()
  region.RegionSpatialFormat = spatial_format
  region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
  region.PhysicalDeltaX, region.PhysicalDeltaY = delta_x_cm, delta_y_cm
  return region


def test_grey_cine_loop_frames_fps_and_region_spacing(tmp_path):
  # A Doppler-style 1D region comes first: the 2D region's deltas give the spacing, rows
  # (Y) first; 0.05 cm and 0.03 cm per pixel are 0.5 mm down, 0.3 mm across.
  path = write_dicom(str(tmp_path / 'loop.dcm'), GREY, 'MONOCHROME2', FrameTime=40.0,
                     SequenceOfUltrasoundRegions=[_region(0.9, 0.9, spatial_format=3),
                                                  _region(0.03, 0.05)])
  frames, info = dicom.read_dicom(path)
  assert frames.dtype == np.uint8 and frames.shape == (5, 12, 20, 3)
  np.testing.assert_array_equal(frames, np.repeat(GREY[..., None], 3, axis=-1))
  assert info.num_frames == 5 and info.fps == 25.0  # 40 ms per frame.
  assert info.pixel_spacing_mm == pytest.approx((0.5, 0.3))


def test_rgb_implicit_vr_cine_rate_and_pixel_spacing_first(tmp_path):
  path = write_dicom(str(tmp_path / 'rgb.dcm'), COLOUR, 'RGB', uid.ImplicitVRLittleEndian,
                     CineRate=30, PixelSpacing=[0.2, 0.1],
                     SequenceOfUltrasoundRegions=[_region(0.03, 0.05)])
  frames, info = dicom.read_dicom(path)
  np.testing.assert_array_equal(frames, COLOUR)
  assert info.fps == 30.0 and info.pixel_spacing_mm == (0.2, 0.1)
  assert info.transfer_syntax == 'Implicit VR Little Endian'


def test_monochrome1_is_inverted_and_no_timing_or_calibration_is_unknown(tmp_path):
  path = write_dicom(str(tmp_path / 'inverted.dcm'), GREY, 'MONOCHROME1')
  frames, info = dicom.read_dicom(path)
  np.testing.assert_array_equal(frames[..., 0], 255 - GREY)
  assert info.fps == 0.0 and info.pixel_spacing_mm is None


def test_jpeg_baseline_frames_decode_close_to_the_originals(tmp_path):
  smooth = np.stack([cv2.GaussianBlur(f, (0, 0), 2) for f in COLOUR])
  jpegs = [cv2.imencode('.jpg', cv2.cvtColor(f, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for f in smooth]
  path = write_dicom(str(tmp_path / 'jpeg.dcm'), smooth, 'YBR_FULL_422', uid.JPEGBaseline8Bit,
                     jpegs)
  frames, info = dicom.read_dicom(path)
  assert frames.shape == smooth.shape and info.transfer_syntax == 'JPEG Baseline (Process 1)'
  assert np.abs(frames.astype(int) - smooth).mean() < 3  # Lossy, colour-converted, in RGB.


def test_video_table_reads_dicom_like_a_video(tmp_path):
  path = write_dicom(str(tmp_path / 'loop.dcm'), COLOUR, 'RGB', FrameTime=50.0)
  frames, fps = video_table.read_video(path)
  np.testing.assert_array_equal(frames, COLOUR)
  assert fps == 20.0
  # Clinical exports often have no extension: the DICM marker says what the file is.
  bare = shutil.copy(path, str(tmp_path / 'IM_0001'))
  assert dicom.is_dicom(bare) and not dicom.is_dicom(str(tmp_path / 'missing.mp4'))
  np.testing.assert_array_equal(video_table.read_video(bare)[0], COLOUR)


def test_a_label_table_of_dicom_loops_converts(tmp_path):
  root = tmp_path / 'us'
  root.mkdir()
  write_dicom(str(root / 'a.dcm'), GREY, 'MONOCHROME2', FrameTime=40.0)
  write_dicom(str(root / 'IM_0002'), COLOUR, 'RGB', CineRate=30)
  (root / 'labels.csv').write_text('path,label,split\na.dcm,benign,train\nIM_0002,1,train\n')
  builder = tfds.builder('usv_video_table/default', data_dir=str(tmp_path / 'tfds'))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=root))
  videos = {ex['video_id'].decode(): ex for ex in tfds.as_numpy(builder.as_dataset('train'))}
  np.testing.assert_array_equal(videos['a.dcm']['frames'], np.repeat(GREY[..., None], 3, -1))
  np.testing.assert_array_equal(videos['IM_0002']['frames'], COLOUR)
  assert (videos['a.dcm']['fps'], videos['IM_0002']['fps']) == (25.0, 30.0)
  assert (videos['a.dcm']['label'], videos['IM_0002']['label']) == (0, 1)


def test_compressed_syntax_without_decoder_names_file_and_plugins(tmp_path):
  from pydicom import pixels  # pylint: disable=g-import-not-at-top
  decoder = pixels.get_decoder(uid.JPEGLSLossless)
  assert not decoder.is_available, 'a JPEG-LS decoder is installed: pick another syntax'
  path = write_dicom(str(tmp_path / 'jpegls.dcm'), COLOUR, 'RGB', uid.JPEGLSLossless,
                     [f.tobytes() for f in COLOUR])
  with pytest.raises(common.DatasetError) as error:
    video_table.iter_video(path)  # From the header, before any frame is decoded.
  message = str(error.value)
  assert common.shown(path) in message and 'JPEG-LS Lossless' in message
  assert 'no decoder for it is installed' in message
  assert all(plugin in message for plugin in decoder.missing_dependencies)


def test_corrupt_jpeg_truncated_and_non_dicom_files_are_errors_naming_them(tmp_path):
  claimed = write_dicom(str(tmp_path / 'claimed.dcm'), COLOUR, 'YBR_FULL_422',
                        uid.JPEGBaseline8Bit, [f.tobytes() for f in COLOUR])  # Not JPEG data.
  with pytest.raises(common.DatasetError, match='claimed.dcm.*JPEG Baseline'):
    video_table.check_video(claimed)
  whole = write_dicom(str(tmp_path / 'whole.dcm'), GREY, 'MONOCHROME2')
  with open(whole, 'rb') as f:
    data = f.read()
  truncated = str(tmp_path / 'truncated.dcm')
  with open(truncated, 'wb') as f:
    f.write(data[:-100])  # Part of the last frame is missing.
  with pytest.raises(common.DatasetError, match="truncated.dcm'.*damaged"):
    video_table.check_video(truncated)
  text = str(tmp_path / 'notes.dcm')
  with open(text, 'w') as f:
    f.write('not an image\n' * 20)
  with pytest.raises(common.DatasetError, match="notes.dcm'.*not a DICOM file"):
    video_table.check_video(text)


def test_16_bit_files_are_refused_with_the_reason(tmp_path):
  path = write_dicom(str(tmp_path / 'deep.dcm'), GREY.astype(np.uint16) * 200, 'MONOCHROME2',
                     bits=16)
  with pytest.raises(common.DatasetError, match='deep.dcm.*16-bit unsigned.*8-bit'):
    dicom.read_dicom(path)


def test_without_pydicom_the_error_names_the_extra(tmp_path, monkeypatch):
  path = write_dicom(str(tmp_path / 'loop.dcm'), GREY, 'MONOCHROME2')
  monkeypatch.setitem(sys.modules, 'pydicom', None)  # import pydicom raises ImportError.
  with pytest.raises(common.DatasetError, match='loop.dcm.*requirements-dicom.txt'):
    video_table.read_video(path)
