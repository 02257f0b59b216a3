"""What the converter checks (docs/data.md): one test per class of broken data, each case a
tiny dataset written here and broken one way; the error names the file, row or key."""
import glob
import logging
import os

import cv2
import numpy as np
import pytest

from test_builders import (all_videos, frame, lesion, make_davis, make_flanet,
                           make_frames_table, make_video_table, prepare, write_csv,
                           write_image)

from input_pipeline.builders import common


def _error(name: str, root: str, tmp_path, **builder_kwargs) -> str:
  """The DatasetError message of converting ``root`` with builder ``name``."""
  with pytest.raises(common.DatasetError) as error:
    prepare(name, root, tmp_path / 'tfds', **builder_kwargs)
  return str(error.value)


def _append(path, text) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'ab') as f:
    f.write(text if isinstance(text, bytes) else text.encode())


def _truncate(path: str, keep) -> None:
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:keep(len(data))])


def _write_avi(path, num_frames: int) -> None:
  """An MJPG AVI at ``path`` (str or bytes), written under a plain name then renamed:
  OpenCV's writer needs the extension, and crashes on names that are not UTF-8."""
  plain = os.path.join(os.path.dirname(os.fsdecode(path)), 'plain.avi')
  writer = cv2.VideoWriter(plain, cv2.VideoWriter_fourcc(*'MJPG'), 10, (32, 24))
  for t in range(num_frames):
    writer.write(frame(8 * t, 24, 32))
  writer.release()
  os.rename(plain, path)


_LESION = lesion()
_GRADIENT = np.arange(256, dtype=np.uint8).reshape(16, 16)
# Mask cases: (how the mask is written, builder kwargs, the stored mask or the error).
MASKS = {
    '0/1 8-bit': (lambda p: write_image(p, _LESION.astype(np.uint8)), {}, _LESION),
    '0/255 8-bit': (lambda p: write_image(p, _LESION.astype(np.uint8) * 255), {}, _LESION),
    '0/65535 16-bit': (lambda p: write_image(p, _LESION.astype(np.uint16) * 65535), {}, _LESION),
    '0/1 16-bit': (lambda p: write_image(p, _LESION.astype(np.uint16)), {}, _LESION),
    '1-bit': (lambda p: write_image(p, _LESION), {}, _LESION),
    'palette ids': (lambda p: write_image(p, _LESION.astype(np.uint8) * 2, palette=True), {},
                    _LESION),
    'RGBA, opaque alpha': (lambda p: write_image(p, np.dstack(
        [np.repeat(_LESION[..., None], 3, -1) * 255, np.full(_LESION.shape, 255)]
    ).astype(np.uint8)), {}, _LESION),
    'grey 0..255': (lambda p: write_image(p, _GRADIENT), {},
                    ["mask_list/v2/1.png' is not binary (256 values from 0 to 255)",
                     'mask_threshold']),
    'grey with mask_threshold': (lambda p: write_image(p, _GRADIENT), {'mask_threshold': 127},
                                 _GRADIENT > 127),
    '0/1/255 mixed': (lambda p: write_image(p, np.where(_LESION, 255, _GRADIENT % 2).astype(
        np.uint8)), {}, ["mask_list/v2/1.png' is not binary (0, 1, 255)"]),
    'JPEG (lossy) mask': (lambda p: write_image(p[:-4] + '.jpg', np.repeat(
        _GRADIENT[..., None], 3, -1)) or os.remove(p), {}, ["mask_list/v2/1.jpg' is not binary"]),
}


@pytest.mark.parametrize('case', MASKS)
def test_mask_conventions(case, tmp_path):
  write, builder_kwargs, expected = MASKS[case]
  root = str(tmp_path / 'fla')
  make_flanet(root)
  for path in glob.glob(f'{root}/mask_list/*/*.png'):
    write(path)
  if isinstance(expected, list):
    message = _error('usv_flanet', root, tmp_path, **builder_kwargs)
    assert all(text in message for text in expected), message
  else:
    builder = prepare('usv_flanet', root, tmp_path / 'tfds', **builder_kwargs)
    masks = all_videos(builder)['v2']['masks'][..., 0]
    np.testing.assert_array_equal(masks, np.broadcast_to(expected, masks.shape))


FOREGROUND = {  # Masks of (train video v1, test video v2); what the log or error says.
    'both splits have lesions': (_LESION, _LESION, [
        'all splits: lesion in 21.09% of mask pixels, 0 of 5 masks empty',
        'test: lesion in 21.09% of mask pixels, 0 of 2 masks empty'], []),
    'test masks all empty': (_LESION, ~np.ones_like(_LESION), [], [
        "2 of 2 masks of split 'test' are empty"]),
    'inverted masks': (~_LESION, ~_LESION, [], ['are the masks inverted']),
    'no lesion anywhere': (~np.ones_like(_LESION), ~np.ones_like(_LESION), None,
                           'no mask of the 5 masks has a lesion pixel'),
}


@pytest.mark.parametrize('case', FOREGROUND)
def test_foreground_is_logged_per_split_and_checked(case, tmp_path, caplog):
  train_mask, test_mask, infos, warnings = FOREGROUND[case]
  root = str(tmp_path / 'fla')
  make_flanet(root)
  for video, mask in (('v1', train_mask), ('v2', test_mask)):
    for path in glob.glob(f'{root}/mask_list/{video}/*.png'):
      write_image(path, mask.astype(np.uint8) * 255)
  if infos is None:
    assert warnings in _error('usv_flanet', root, tmp_path)
    return
  caplog.set_level(logging.INFO, logger='absl')
  prepare('usv_flanet', root, tmp_path / 'tfds')
  logged = {level: ' '.join(r.getMessage() for r in caplog.records if r.levelno == level)
            for level in (logging.INFO, logging.WARNING)}
  assert all(text in logged[logging.INFO] for text in infos), logged
  assert all(text in logged[logging.WARNING] for text in warnings), logged
  assert bool(warnings) == ('usv_flanet' in logged[logging.WARNING])


def _remove(*paths):
  return lambda root: [os.remove(f'{root}/{p}') for p in paths]


def _with_groups(root):
  make_frames_table(root, groups=['p0', 'p0', 'p1', 'p2', 'p2', 'p3', 'p3', 'p3', 'p3'])


TABLE = {  # CVC-612 layout, frames 1..9 in videos 0 (1-3), 1 (4-5), 2 (6-9).
    'frame listed twice': (lambda r: _append(f'{r}/sequences.csv', '2,0\n'),
                           ["frame '2' is listed twice for video '0' (sequences.csv lines 3 "
                            'and 11)']),
    'frame in two videos': (lambda r: _append(f'{r}/sequences.csv', '2,1\n'),
                            ["frame '2' is listed in video '0' and in video '1'"]),
    'mask without frame': (lambda r: write_image(f'{r}/Ground Truth/99.png', _LESION),
                           ["Ground Truth/99.png' has no frame"]),
    'frame without row': (lambda r: [write_image(f'{r}/{d}/99.png', _LESION)
                                     for d in ('Original', 'Ground Truth')],
                          ["Original/99.png' has no row in sequences.csv"]),
    'row without file': (_remove('Original/2.png', 'Ground Truth/2.png'),
                         ["frame '2' (sequences.csv line 3) has no image"]),
    'frame without mask': (_remove('Ground Truth/2.png'), ["Original/2.png' has no mask"]),
    'two files for a frame': (lambda r: write_image(f'{r}/Original/2.jpg', frame(2)),
                              ["Original/2.png' and ", "Original/2.jpg' are both frame '2'"]),
    'blank cell': (lambda r: _append(f'{r}/sequences.csv', ',3\n10,\n'),
                   ['sequences.csv line 11 has a blank frame cell',
                    'sequences.csv line 12 has a blank sequence cell']),
    'frame listed again, other group': (lambda r: _with_groups(r) or _append(
        f'{r}/sequences.csv', '1,0,p9\n'), ["frame '1' is listed twice"]),
    'group changes in a video': (lambda r: make_frames_table(r, groups=[
        'p0', 'p1', 'p0', 'p2', 'p2', 'p3', 'p3', 'p3', 'p3']),
                                 ["video '0' is in group 'p0' and in group 'p1' "
                                  '(sequences.csv line 3)']),
    'blank group cell': (lambda r: make_frames_table(r, groups=[
        'p0', 'p0', 'p0', '', 'p2', 'p3', 'p3', 'p3', 'p3']),
                         ['sequences.csv line 5 has a blank group cell']),
    'wrong column names': (lambda r: write_csv(f'{r}/sequences.csv', [['frame', 'video']]),
                           ["sequences.csv' lacks the column(s) ['sequence']"]),
}


@pytest.mark.parametrize('case', TABLE)
def test_frame_table_and_folders_must_agree(case, tmp_path):
  breakage, expected = TABLE[case]
  root = str(tmp_path / 'cvc')
  make_frames_table(root)
  breakage(root)
  message = _error('usv_frames_table/default', root, tmp_path)
  assert all(text in message for text in expected), message


LISTS = {  # DAVIS: a (3 frames) in train, b (2) and c (4) in val; FLA-Net: v1 train, v2 test.
    'video in two splits': ('davis', lambda r: _append(f'{r}/ImageSets/2017/train.txt', 'b\n'),
                            ["video 'b' is in split 'train' (ImageSets/2017/train.txt line 2) "
                             "and in split 'validation' (ImageSets/2017/val.txt line 1)", 'leaks']),
    'video listed twice': ('davis', lambda r: _append(f'{r}/ImageSets/2017/val.txt', 'c\n'),
                           ["video 'c' is listed twice in split 'validation' (ImageSets/2017/val.txt "
                            'line 2; ImageSets/2017/val.txt line 3)']),
    'listed video without folder': ('davis', lambda r: _append(
        f'{r}/ImageSets/2017/val.txt', 'zz\n'), ["video 'zz' (ImageSets/2017/val.txt line 3) "
                                                 "has no folder", "JPEGImages/480p/zz'"]),
    'masks folder without frames': ('davis', lambda r: write_image(
        f'{r}/Annotations/480p/ghost/00000.png', _LESION),
                                    ["masks folder '", "Annotations/480p/ghost' has no frames"]),
    'two lists for one split': ('davis', lambda r: _append(f'{r}/ImageSets/2016/val.txt', 'b\n'),
                                ["'ImageSets/2016/val.txt' and 'ImageSets/2017/val.txt' both "
                                 "list split 'validation'"]),
    'frame without mask': ('davis', _remove('Annotations/480p/a/00001.png'),
                           ["JPEGImages/480p/a/00001.jpg' has no mask"]),
    'mask without frame': ('davis', lambda r: write_image(f'{r}/Annotations/480p/a/00009.png',
                                                          _LESION), ["a/00009.png' has no frame"]),
    'one frame file in two videos': ('davis', lambda r: [os.symlink(
        f'{r}/{d}/480p/a/00000.{ext}', f'{r}/{d}/480p/b/00007.{ext}')
        for d, ext in (('JPEGImages', 'jpg'), ('Annotations', 'png'))],
                                     ["b/00007.jpg' is in video 'a' and in video 'b'"]),
    'video without frames': ('davis', _remove(*[f'JPEGImages/480p/b/{i:05d}.jpg'
                                                for i in range(2)]),
                             ["video 'b' has no frames"]),
    'typo in the first row': ('flanet', lambda r: os.replace(f'{r}/img_list/v1',
                                                             f'{r}/img_list/v1x'),
                              ["video 'v1' (train_list.csv line 1) has no folder"]),
    'blank name': ('flanet', lambda r: _append(f'{r}/test_list.csv', ',x\n'),
                   ['test_list.csv line 2 names no video']),
}


@pytest.mark.parametrize('case', LISTS)
def test_split_lists_and_folders_must_agree(case, tmp_path):
  layout, breakage, expected = LISTS[case]
  root = str(tmp_path / layout)
  (make_davis if layout == 'davis' else make_flanet)(root)
  breakage(root)
  message = _error('usv_davis/480p' if layout == 'davis' else 'usv_flanet', root, tmp_path)
  assert all(text in message for text in expected), message


_ROWS = [[f'videos/{i}', 'benign' if i % 2 else 'malignant', split]
         for i, split in enumerate(['train'] * 4 + ['validation', 'test'])]


def _rows(**changes):
  """The video table rows with cells replaced: changes[f'r{row}c{column}'] = value."""
  rows = [list(r) for r in _ROWS]
  for key, value in changes.items():
    row, column = map(int, key[1:].split('c'))
    rows[row][column] = value
  return rows


CELLS = {  # labels.csv: path,label,split[,group]; line 2 is videos/0.
    'label typo': (_rows(r1c1='malignent'), ['labels.csv line 3: label', "'malignent' of "
                                             "'videos/1' is not one of", "(did you mean "
                                             "'malignant'?)"]),
    'label in other case': (_rows(r1c1='Benign'), ["(did you mean 'benign'?)"]),
    'blank label': (_rows(r1c1=''), ['labels.csv line 3 has a blank label cell']),
    'blank split cell': (_rows(r2c2=''), ["labels.csv line 4: the 'split' cell of 'videos/2' "
                                          'is blank while other rows give a split']),
    'unknown split': (_rows(r4c2='val'), ["split 'val' of 'videos/4' is not one of ['train', "
                                          "'validation', 'test'] (did you mean 'validation'?)"]),
    'video listed twice': (_ROWS + [_ROWS[0]], ["video 'videos/0' is listed twice (labels.csv "
                                                'line 2; labels.csv line 8)']),
    'same video, two spellings': (_ROWS + [['./videos//0', 'malignant', 'train']],
                                  ["video './videos//0' is listed twice"]),
    'video in two splits': (_ROWS + [['videos/0', 'malignant', 'test']],
                            ["video 'videos/0' is listed in splits 'train' and 'test'",
                             'leak']),
    'patient in two splits': ([r + [f'p{i}'] for i, r in enumerate(_ROWS)]
                              + [['videos/6', 'benign', 'test', 'p0']],
                              ["group 'p0' has videos in splits ['test', 'train']"]),
    'blank group cell': ([r + ['p'] for r in _rows()[:-1]] + [_ROWS[-1] + ['']],
                         ['labels.csv line 7 has a blank group cell']),
    'missing label column': ([['videos/0', 'x']], ["lacks the column(s) ['label']"]),
}


@pytest.mark.parametrize('case', CELLS)
def test_video_table_cells(case, tmp_path):
  rows, expected = CELLS[case]
  root = str(tmp_path / 'table')
  header = (['path', 'diagnosis'] if case == 'missing label column' else
            ['path', 'label', 'split', 'group'][:len(max(rows, key=len))])
  make_video_table(root, [r for r in rows if not r[0].startswith('.')], header)
  write_csv(f'{root}/labels.csv', [header] + rows)
  message = _error('usv_video_table/default', root, tmp_path)
  assert all(text in message for text in expected), message
