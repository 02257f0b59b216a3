"""TFDS builders for the four real layouts, from small fixtures; broken data gives clear errors."""
import csv
import os

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import helpers

from input_pipeline import builders  # pylint: disable=unused-import
from input_pipeline import pipeline
from input_pipeline.builders import common


def _frame(value, h=24, w=32):
  image = np.zeros((h, w, 3), np.uint8)
  image[...] = value
  image[4:12, 6:20, 1] = 200
  return image


def _mask(h=24, w=32, scale=255):
  mask = np.zeros((h, w), np.uint8)
  mask[4:12, 6:20] = scale
  return mask


def _write(path, image):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  assert cv2.imwrite(path, image)


def _prepare(name, root, tmp_path):
  builder = tfds.builder(name, data_dir=str(tmp_path / 'tfds'))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=root))
  return builder


def _videos(builder, split):
  return {ex['video_id'].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split=split))}


def _make_davis(root, videos=(('a', 3, 'train'), ('b', 2, 'val'), ('c', 4, 'val'))):
  for name, length, split in videos:
    for i in range(length):
      _write(f'{root}/JPEGImages/480p/{name}/{i:05d}.jpg', _frame(10 * i))
      palette = Image.fromarray((_mask() > 0).astype(np.uint8) * 2, mode='P')
      palette.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
      os.makedirs(f'{root}/Annotations/480p/{name}', exist_ok=True)
      palette.save(f'{root}/Annotations/480p/{name}/{i:05d}.png')
    with open(f'{root}/ImageSets/2017/{split}.txt' if os.path.isdir(f'{root}/ImageSets/2017')
              else _mkdirs(f'{root}/ImageSets/2017') + f'/{split}.txt', 'a') as f:
      f.write(name + '\n')


def _mkdirs(path):
  os.makedirs(path, exist_ok=True)
  return path


def test_davis_layout(tmp_path):
  root = str(tmp_path / 'davis')
  _make_davis(root)
  builder = _prepare('usv_davis/480p', root, tmp_path)
  assert builder.info.splits['train'].num_examples == 1
  val = _videos(builder, 'val')
  assert sorted(val) == ['b', 'c']
  c = val['c']
  assert c['frames'].shape == (4, 24, 32, 3) and c['masks'].shape == (4, 24, 32, 1)
  np.testing.assert_array_equal(c['masks'][2, ..., 0], _mask() > 0)  # Palette id 2 -> 1.
  np.testing.assert_allclose(c['boxes'][0], [4 / 24, 6 / 32, 12 / 24, 20 / 32])
  assert abs(int(c['frames'][3, 0, 0, 0]) - 30) <= 3  # Frames kept in order (JPEG).


def test_flanet_layout(tmp_path):
  root = tmp_path / 'fla'
  for name, length in (('v1', 3), ('v2', 2)):
    for i in range(length):
      _write(f'{root}/img_list/{name}/{i}.png', _frame(i))
      _write(f'{root}/mask_list/{name}/{i}.png', _mask())
  (root / 'train_list.csv').write_text('video\nv1\n')
  (root / 'test_list.csv').write_text('v2\n')
  builder = _prepare('usv_flanet', str(root), tmp_path)
  assert list(_videos(builder, 'train')) == ['v1']
  test = _videos(builder, 'test')['v2']
  assert test['frames'].shape == (2, 24, 32, 3)
  np.testing.assert_array_equal(test['frames'][1, 0, 0, 0], 1)  # PNG is lossless.
  assert test['masks'].max() == 1


def _make_frames_table(root, sequences=(0, 0, 0, 1, 1, 2, 2, 2, 2)):
  with _open_csv(f'{root}/sequences.csv') as writer:
    writer.writerow(['frame', 'sequence'])
    for frame, sequence in enumerate(sequences, start=1):
      writer.writerow([frame, sequence])
      _write(f'{root}/Original/{frame}.png', _frame(frame))
      _write(f'{root}/Ground Truth/{frame}.png', np.repeat(_mask()[..., None], 3, -1))


class _open_csv:  # pylint: disable=invalid-name
  def __init__(self, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    self.file = open(path, 'w', newline='')  # pylint: disable=consider-using-with

  def __enter__(self):
    return csv.writer(self.file)

  def __exit__(self, *args):
    self.file.close()


def test_frames_table_layout_with_fixed_and_seeded_splits(tmp_path):
  root = str(tmp_path / 'cvc')
  _make_frames_table(root, sequences=[0, 0, 0] + list(range(1, 29)))
  builder = _prepare('usv_frames_table/cvc612', root, tmp_path)
  test = _videos(builder, 'test')
  assert sorted(test, key=int) == ['0', '6', '7', '16', '24']  # CVC-612's suggested split.
  assert sorted(_videos(builder, 'validation'), key=int) == ['2', '3', '4', '11', '15', '17']
  assert builder.info.splits['train'].num_examples == 29 - 11
  assert test['0']['frames'].shape[0] == 3
  assert [int(f[0, 0, 0]) for f in test['0']['frames']] == [1, 2, 3]  # Frame order.
  assert test['0']['masks'].max() == 1  # RGB 0/255 masks binarised.
  seeded = _prepare('usv_frames_table/default', root, tmp_path / 'seeded')
  ids = [set(_videos(seeded, s)) for s in seeded.info.splits]
  assert sum(len(i) for i in ids) == 29 and not set.intersection(*ids)


def test_video_table_layout(tmp_path):
  root = tmp_path / 'pocus'
  (root / 'videos').mkdir(parents=True)
  rows = []
  for i in range(10):
    path = f'videos/clip{i}.avi'
    writer = cv2.VideoWriter(str(root / path), cv2.VideoWriter_fourcc(*'MJPG'), 10, (32, 24))
    for t in range(3 + i % 4):
      writer.write(_frame(20 * t))
    writer.release()
    rows.append([path, 'regular' if i % 2 else 'COVID-19'])
  folder = root / 'videos' / 'folder_clip'
  for t in range(2):
    _write(str(folder / f'frame{t}.png'), _frame(t))
  rows.append(['videos/folder_clip', 'Viral pneumonia'])
  with _open_csv(str(root / 'metadata.csv')) as writer:
    writer.writerow(['path', 'Label'])
    writer.writerows(rows)
  builder = _prepare('usv_video_table/pocus_binary', str(root), tmp_path)
  videos = {}
  for split in builder.info.splits:
    videos.update(_videos(builder, split))
  assert len(videos) == 11
  assert videos['videos/clip5.avi']['frames'].shape == (3 + 5 % 4, 24, 32, 3)
  assert videos['videos/clip5.avi']['label'] == 0  # regular
  assert videos['videos/clip4.avi']['label'] == 1  # COVID-19 -> pathological
  assert videos['videos/folder_clip']['frames'].shape[0] == 2
  three = _prepare('usv_video_table/pocus_3class', str(root), tmp_path / 'three')
  assert sum(s.num_examples for s in three.info.splits.values()) == 10  # Viral left out.


@pytest.mark.parametrize('breakage, message', [
    ('missing_mask', 'has no mask'),
    ('corrupt_frame', 'cannot read image'),
    ('mask_size', 'masks must match their frames'),
    ('unknown_frame', 'has no file'),
])
def test_broken_frames_table_names_the_file(tmp_path, breakage, message):
  root = str(tmp_path / 'broken')
  _make_frames_table(root)
  if breakage == 'missing_mask':
    os.remove(f'{root}/Ground Truth/2.png')
  elif breakage == 'corrupt_frame':
    with open(f'{root}/Original/2.png', 'wb') as f:
      f.write(b'not a png')
  elif breakage == 'mask_size':
    _write(f'{root}/Ground Truth/2.png', _mask(h=10))
  else:
    os.remove(f'{root}/Original/2.png')
  with pytest.raises(common.DatasetError, match=message) as error:
    _prepare('usv_frames_table/default', root, tmp_path)
  assert '2' in str(error.value)


def test_davis_frame_count_mismatch_and_empty_video(tmp_path):
  root = str(tmp_path / 'davis')
  _make_davis(root, videos=(('a', 3, 'train'),))
  os.remove(f'{root}/Annotations/480p/a/00001.png')
  with pytest.raises(common.DatasetError, match=r'mask of frame .*00001\.jpg'):
    _prepare('usv_davis/480p', root, tmp_path)
  empty = str(tmp_path / 'empty')
  _make_davis(empty, videos=(('a', 1, 'train'),))
  for name in os.listdir(f'{empty}/JPEGImages/480p/a'):
    os.remove(f'{empty}/JPEGImages/480p/a/{name}')
  with pytest.raises(common.DatasetError, match="video 'a' has no frames"):
    _prepare('usv_davis/480p', empty, tmp_path / 'e')


def test_unreadable_video_file(tmp_path):
  root = tmp_path / 'bad'
  (root / 'videos').mkdir(parents=True)
  (root / 'videos' / 'broken.mp4').write_bytes(b'\x00' * 100)
  (root / 'labels.csv').write_text('path,label,split\nvideos/broken.mp4,benign,train\n')
  with pytest.raises(common.DatasetError, match='broken.mp4'):
    _prepare('usv_video_table/default', str(root), tmp_path)


def test_missing_manual_dir_is_named(tmp_path):
  config = helpers.load_config('unet', str(tmp_path), **{
      'dataset.name': 'usv_frames_table', 'dataset.config': 'default',
      'dataset.manual_dir': str(tmp_path / 'nowhere')})
  with pytest.raises(common.DatasetError, match='nowhere'):
    pipeline.get_builder(config.dataset)
