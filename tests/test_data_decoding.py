"""Conversion failures that name their file: frames that do not decode (truncated, empty,
of two sizes) and file names that are bytes; and every problem of a folder in one error."""
import glob
import os

import numpy as np
import pytest

from input_pipeline.builders import checks
from test_builders import (all_videos, frame, make_davis, make_frames_table, make_video_table,
                           prepare, write_image)
from test_data_checks import _GRADIENT, _append, _error, _remove, _truncate, _write_avi


def _make(layout: str, root: str) -> str:
  """Writes a DAVIS ('davis') or video-table dataset (videos/0..3, folders of two frames)
  at ``root``; returns its builder's name."""
  if layout == 'davis':
    make_davis(root)
    return 'usv_davis/480p'
  make_video_table(root, [[f'videos/{i}', 'benign' if i % 2 else 'malignant']
                          for i in range(4)])
  return 'usv_video_table/default'


def _frames_of_two_sizes(root):
  write_image(f'{root}/videos/1/1.png', frame(1, 8, 8))


DECODE = {  # (layout, breakage, what the error says)
    'truncated JPEG frame': ('davis', lambda r: _truncate(
        f'{r}/JPEGImages/480p/a/00001.jpg', lambda n: n * 7 // 10), ["a/00001.jpg' is"]),
    'JPEG frame without its end marker': ('davis', lambda r: _truncate(
        f'{r}/JPEGImages/480p/a/00002.jpg', lambda n: n - 2), ["a/00002.jpg' is truncated"]),
    'PNG mask without IEND': ('davis', lambda r: _truncate(
        f'{r}/Annotations/480p/c/00003.png', lambda n: n - 12), ["c/00003.png' is truncated"]),
    'empty frame file': ('davis', lambda r: _truncate(f'{r}/JPEGImages/480p/b/00000.jpg',
                                                      lambda n: 0), ["b/00000.jpg' is empty"]),
    'not an image': ('davis', lambda r: _truncate(f'{r}/JPEGImages/480p/c/00001.jpg',
                                                  lambda n: 0) or _append(
        f'{r}/JPEGImages/480p/c/00001.jpg', 'text'), ["cannot decode image '", "c/00001.jpg'"]),
    'corrupt mask': ('davis', lambda r: _truncate(f'{r}/Annotations/480p/b/00001.png',
                                                  lambda n: n // 2),
                     ["b/00001.png' is truncated"]),
    'mask of another size': ('davis', lambda r: write_image(
        f'{r}/Annotations/480p/c/00000.png', np.zeros((10, 16), np.uint8)),
                             ["c/00000.png' is 16x10 but its frame is 16x16"]),
    'frames of two sizes': ('davis', lambda r: write_image(f'{r}/JPEGImages/480p/c/00001.jpg',
                                                           frame(1, 16, 20)),
                            ["video 'c' has frames of different sizes [(16, 16), (16, 20)]"]),
    'truncated video file': ('table', lambda r: _write_avi(f'{r}/videos/0', 30) or _truncate(
        f'{r}/videos/0', lambda n: n * 6 // 10), ["videos/0' decodes to", 'of the 30 frames']),
    'garbage video file': ('table', lambda r: _append(f'{r}/videos/0', b'\0' * 100),
                           ["videos/0' has no readable frames"]),
    'missing video': ('table', lambda r: _append(f'{r}/labels.csv', 'videos/9,benign\n'),
                      ["video not found: '", "videos/9' does not exist"]),
    'empty frame folder': ('table', lambda r: _remove('videos/1/0.png', 'videos/1/1.png')(r),
                           ["videos/1' has no readable frames"]),
    'frame folder of two sizes': ('table', _frames_of_two_sizes,
                                  ["videos/1' has frames of different sizes (16x16, then 8x8"]),
}


@pytest.mark.parametrize('case', DECODE)
def test_decode_failures_name_the_file(case, tmp_path):
  layout, breakage, expected = DECODE[case]
  root = str(tmp_path / layout)
  name = _make(layout, root)
  if case in ('truncated video file', 'garbage video file'):
    _remove('videos/0/0.png', 'videos/0/1.png')(root)
    os.rmdir(f'{root}/videos/0')
  breakage(root)
  message = _error(name, root, tmp_path)
  assert all(text in message for text in expected), message


_E9 = b'\xe9'  # Latin-1 'é': not valid UTF-8 on its own.


def _davis_with_bytes_name(root):
  os.rename(f'{root}/JPEGImages/480p/b'.encode(), f'{root}/JPEGImages/480p/b'.encode() + _E9)
  os.rename(f'{root}/Annotations/480p/b'.encode(), f'{root}/Annotations/480p/b'.encode() + _E9)
  with open(f'{root}/ImageSets/2017/val.txt', 'wb') as f:
    f.write(b'b' + _E9 + b'\nc\n')


def _truncated_bytes_name(root):
  for folder, ext in (('JPEGImages', 'jpg'), ('Annotations', 'png')):
    os.rename(f'{root}/{folder}/480p/c/00001.{ext}',
              f'{root}/{folder}/480p/c/'.encode() + _E9 + b'.' + ext.encode())
  _truncate(f'{root}/JPEGImages/480p/c/'.encode() + _E9 + b'.jpg', lambda n: n - 2)


def _table_with_bytes_names(root):
  for i in range(2):
    _write_avi(f'{root}/videos/clip'.encode() + _E9 + str(i).encode(), 3)
  with open(f'{root}/labels.csv', 'ab') as f:
    f.write(b'videos/clip\xe90,benign\nvideos/clip\xe91,malignant\n')


BYTES = {  # (layout, breakage, the stored id or the error)
    'folder name not UTF-8': ('davis', _davis_with_bytes_name, ('b\\xe9', 2)),
    'video file name not UTF-8': ('table', _table_with_bytes_names, ('videos/clip\\xe91', 3)),
    'truncated frame, name not UTF-8': ('davis', _truncated_bytes_name,
                                        "c/\\xe9.jpg' is truncated"),
    'NUL in a table cell': ('table', lambda r: _append(f'{r}/labels.csv', b'videos/\x001,benign\n'),
                            "videos/\\x001' does not exist"),
    'table not UTF-8 (Latin-1 label)': ('table', lambda r: _append(
        f'{r}/labels.csv', b'videos/0,b' + _E9 + b'nin\n'),
                                        "label 'b\\xe9nin' of 'videos/0' is not one of"),
}


@pytest.mark.parametrize('case', BYTES)
def test_file_names_are_bytes(case, tmp_path):
  layout, breakage, expected = BYTES[case]
  root = str(tmp_path / layout)
  name = _make(layout, root)
  breakage(root)
  if isinstance(expected, str):
    assert expected in _error(name, root, tmp_path)
    return
  video_id, num_frames = expected
  stored = all_videos(prepare(name, root, tmp_path / 'tfds'))
  assert stored[video_id]['frames'].shape[0] == num_frames


def test_every_problem_is_reported_in_one_error(tmp_path, monkeypatch):
  root = str(tmp_path / 'cvc')
  make_frames_table(root)
  os.remove(f'{root}/Ground Truth/2.png')
  _append(f'{root}/sequences.csv', '5,2\n')
  write_image(f'{root}/Ground Truth/7.png', _GRADIENT)
  message = _error('usv_frames_table/default', root, tmp_path)
  assert message.startswith('usv_frames_table/default: 3 problem(s) in ')
  assert "Original/2.png' has no mask" in message
  assert "frame '5' is listed in video '1' and in video '2'" in message
  assert "Ground Truth/7.png' is not binary" in message
  monkeypatch.setattr(checks, 'MAX_LISTED_PROBLEMS', 1)
  message = _error('usv_frames_table/default', root, tmp_path)
  assert message.count('\n  - ') == 1
  assert message.endswith('... and 2 more: 1 x frame in two videos, 1 x bad mask')
  assert not glob.glob(f'{tmp_path}/tfds/**/dataset_info.json', recursive=True)
