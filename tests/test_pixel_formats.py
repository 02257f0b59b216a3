"""Raw pixel formats (docs/data.md, ``common.to_uint8``): 16-bit and 12-bit-in-16 grey and
colour frames read at full depth and scaled by their bit depth or the user's window; NaN or
infinite pixels (float TIFF, float DICOM) an error naming the file. Fixtures written here."""
import os

import cv2
import numpy as np
import pydicom
import pytest
import tensorflow_datasets as tfds

from helpers import write_dicom
from test_builders import lesion, make_flanet, videos

from input_pipeline.builders import common
from input_pipeline.builders import dicom

RNG = np.random.default_rng(0)
TWELVE_BIT = RNG.integers(32, 1841, (16, 16)).astype(np.uint16)  # A scanner's 12-bit export,
TWELVE_BIT[0, :2] = 32, 1840  # from 32 to 1840.


def _write(path: str, image: np.ndarray) -> str:
  """``image`` as the file ``path`` names (PNG or TIFF, any depth OpenCV writes)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  ok, data = cv2.imencode(os.path.splitext(path)[1], image)
  assert ok
  with open(path, 'wb') as f:
    f.write(data.tobytes())
  return path


def _expected(values: np.ndarray, top: float, low: float = 0.0) -> np.ndarray:
  return np.clip(np.round((values.astype(np.float64) - low) * 255 / (top - low)), 0, 255)


@pytest.mark.parametrize('extension', ['.png', '.tif'])
def test_12_bit_grey_frames_are_scaled_by_their_depth_not_cut_to_their_top_byte(tmp_path,
                                                                                 extension):
  path = _write(str(tmp_path / f'frame{extension}'), TWELVE_BIT)
  image = common.read_rgb(path)
  assert image.dtype == np.uint8 and image.shape == (16, 16, 3)
  np.testing.assert_array_equal(image[..., 0], _expected(TWELVE_BIT, 4095))
  np.testing.assert_array_equal(image[..., 0], image[..., 2])
  assert image.mean() > 50  # Divided by 256 (IMREAD_COLOR) it would average about 3.


def test_16_bit_frames_use_the_full_range_and_keep_their_colours(tmp_path):
  grey = RNG.integers(0, 65536, (16, 16)).astype(np.uint16)
  grey[0, 0] = 65535
  np.testing.assert_array_equal(common.read_rgb(_write(str(tmp_path / 'g.tif'), grey))[..., 1],
                                _expected(grey, 65535))
  rgb = np.zeros((16, 16, 3), np.uint16)
  rgb[..., 0] = 60000  # Red, written by OpenCV as BGR.
  image = common.read_rgb(_write(str(tmp_path / 'c.png'), rgb[..., ::-1].copy()))
  assert image[0, 0].tolist() == [233, 0, 0]


def test_a_window_maps_its_ends_to_black_and_white(tmp_path):
  path = _write(str(tmp_path / 'frame.png'), TWELVE_BIT)
  image = common.read_rgb(path, (32, 1840))
  np.testing.assert_array_equal(image[..., 0], _expected(TWELVE_BIT, 1840, 32))
  assert image.min() == 0 and image.max() == 255


def test_nan_or_infinite_pixels_are_an_error_naming_the_file(tmp_path):
  values = np.full((8, 8), 0.5, np.float32)
  values[0, :3] = [np.nan, np.inf, -np.inf]
  path = _write(str(tmp_path / 'scan.tif'), values)
  for window in (None, (0.0, 1.0)):
    with pytest.raises(common.DatasetError, match=r"image '.*scan.tif' holds NaN or infinite "
                                                  r'pixel values \(3 of 64\)'):
      common.read_rgb(path, window)
  finite = _write(str(tmp_path / 'finite.tif'), np.full((8, 8), 0.5, np.float32))
  with pytest.raises(common.DatasetError, match='floating-point pixels.*pixel_min and pixel_max'):
    common.read_rgb(finite)
  assert common.read_rgb(finite, (0.0, 1.0)).max() == 128


def _flanet_16_bit(root: str) -> None:
  """The FLA-Net fixture with its frames replaced by 12-bit data in 16-bit grey PNGs."""
  make_flanet(root)
  for video in ('v1', 'v2'):
    folder = os.path.join(root, 'img_list', video)
    for name in os.listdir(folder):
      _write(os.path.join(folder, name), TWELVE_BIT)


def test_a_dataset_of_16_bit_frames_is_stored_by_its_depth_or_the_given_window(tmp_path):
  root = str(tmp_path / 'fla16')
  _flanet_16_bit(root)
  builder = tfds.builder('usv_flanet', data_dir=str(tmp_path / 'tfds'))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=root))
  stored = videos(builder, 'test')['v2']
  np.testing.assert_array_equal(stored['frames'][1, ..., 0], _expected(TWELVE_BIT, 4095))
  np.testing.assert_array_equal(stored['masks'][1, ..., 0], lesion())
  windowed = tfds.builder('usv_flanet/pixel_min=32,pixel_max=1840',
                          data_dir=str(tmp_path / 'tfds'))
  assert windowed.builder_config.name == 'default-pixel_min-32-pixel_max-1840'
  windowed.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=root))
  np.testing.assert_array_equal(videos(windowed, 'test')['v2']['frames'][0, ..., 0],
                                _expected(TWELVE_BIT, 1840, 32))


@pytest.mark.parametrize('options, message', [
    ({'pixel_min': 10}, 'pixel_min=10 needs pixel_max'),
    ({'pixel_min': 100, 'pixel_max': 100}, 'pixel_max=100 must exceed pixel_min=100'),
    ({'pixel_max': -1}, 'pixel_max=-1 must be a number >= 0')])
def test_bad_windows_are_one_clear_error(options, message):
  with pytest.raises(ValueError, match=message):
    tfds.builder('usv_flanet', **options)


def test_a_nan_frame_stops_the_conversion_naming_it(tmp_path):
  root = str(tmp_path / 'fla')
  make_flanet(root)
  os.remove(os.path.join(root, 'img_list', 'v1', '2.png'))
  _write(os.path.join(root, 'img_list', 'v1', '2.tif'), np.full((16, 16), np.nan, np.float32))
  builder = tfds.builder('usv_flanet', data_dir=str(tmp_path / 'tfds'))
  with pytest.raises(common.DatasetError, match=r"v1/2.tif' holds NaN or infinite pixel values"):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=root))


def _float_dicom(path: str, values: np.ndarray) -> str:
  """A DICOM file whose pixels are 32-bit floats (FloatPixelData), as some exports write."""
  write_dicom(path, np.zeros(values.shape, np.uint8), 'MONOCHROME2')
  ds = pydicom.dcmread(path)
  del ds.PixelData
  ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
  ds.FloatPixelData = values.astype('<f4').tobytes()
  ds.save_as(path)
  return path


def test_float_dicom_pixels_name_their_nans(tmp_path):
  values = np.zeros((2, 4, 4), np.float32)
  values[1, 0, 0] = np.nan
  path = _float_dicom(str(tmp_path / 'float.dcm'), values)
  with pytest.raises(common.DatasetError, match=r"float.dcm' holds NaN or infinite pixel values "
                                                r'\(1 of 32, FloatPixelData\)'):
    dicom.read_dicom(path)
  finite = _float_dicom(str(tmp_path / 'finite.dcm'), np.ones((2, 4, 4), np.float32))
  with pytest.raises(common.DatasetError, match='has floating-point pixel data'):
    dicom.read_dicom(finite)
