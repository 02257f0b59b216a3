"""Videos whose masks cover only some frames (issue 38, data): the ``sparse_masks`` option,
the ``annotated`` feature, the clinic layout (``usv_cine_table``), the synthetic sparse
configs and ``scripts/sparsify_masks.py``."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

import helpers
from test_builders import frame, lesion, make_frames_table, prepare, videos, write_csv, write_image

from input_pipeline.builders import common
from input_pipeline.builders import sparse

TRACED = (0, 2)  # Of every 5 frames, these keep their masks.


def _sparse_frames_table(root: str) -> None:
  """Videos 0 and 1 (train) and 2 (test) of 5 frames each, masks on 2 of every 5 frames;
  frame 3 (video 0's third) has an all-zero mask file: annotated, no lesion."""
  make_frames_table(root, sequences=[0] * 5 + [1] * 5 + [2] * 5)
  for number in range(1, 16):
    if (number - 1) % 5 not in TRACED:
      os.remove(f'{root}/Ground Truth/{number}.png')
  write_image(f'{root}/Ground Truth/3.png', np.zeros((16, 16), np.uint8))
  write_csv(f'{root}/splits.csv', [['video', 'split'], ['0', 'train'], ['1', 'train'],
                                   ['2', 'test']])


def test_a_frames_table_with_masks_on_2_of_5_frames_converts_with_sparse_masks(tmp_path):
  root = str(tmp_path / 'cvc')
  _sparse_frames_table(root)
  builder = prepare('usv_frames_table/sparse_masks=True', root, tmp_path / 'tfds')
  assert builder.builder_config.name == 'default-sparse_masks'
  stored = {**videos(builder, 'train'), **videos(builder, 'test')}
  expected = np.isin(np.arange(5), TRACED)
  for video_id, example in stored.items():
    np.testing.assert_array_equal(example['annotated'], expected)
    masks, boxes = example['masks'][..., 0], example['boxes']
    assert not masks[~expected].any() and not boxes[~expected].any()  # Zero, not guessed.
    lesion_frames = [t for t in TRACED if not (video_id == '0' and t == 2)]
    for t in lesion_frames:
      np.testing.assert_array_equal(masks[t], lesion())
      assert boxes[t].any()
  assert not stored['0']['masks'][2].any()  # The empty mask file: annotated, no lesion.
  assert stored['0']['annotated'][2]


def test_without_the_option_a_sparse_layout_is_an_error_naming_it(tmp_path):
  root = str(tmp_path / 'cvc')
  _sparse_frames_table(root)
  with pytest.raises(common.DatasetError) as error:
    prepare('usv_frames_table/default', root, tmp_path / 'tfds')
  message = str(error.value)
  assert message.count('has no mask') == 9  # 3 of every 5 frames of 3 videos.
  assert ("add it, remove the frame, or convert with the builder option sparse_masks=True if "
          'only some frames are traced (--config.dataset.name=usv_frames_table/'
          'sparse_masks=True, docs/data.md)') in message


def test_a_training_video_or_a_split_without_an_annotated_frame_is_an_error(tmp_path):
  root = str(tmp_path / 'cvc')
  _sparse_frames_table(root)
  for number in (6, 8, 11, 13):  # Video 1's (train) and video 2's (test) only masks.
    os.remove(f'{root}/Ground Truth/{number}.png')
  with pytest.raises(common.DatasetError) as error:
    prepare('usv_frames_table/sparse_masks=True', root, tmp_path / 'tfds')
  message = str(error.value)
  assert "training video '1' has no mask on any of its frames" in message
  assert "split 'test' has no frame with a mask in any of its 1 video(s)" in message
  assert message.startswith('usv_frames_table/default-sparse_masks: 2 problem(s)')


def _avi(path: str, length: int, fps: float = 10.0) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'MJPG'), fps, (16, 16))
  for t in range(length):
    writer.write(frame(20 * t)[..., ::-1])
  writer.release()


def _cine_table(root: str, masks: dict[str, tuple[int, ...]]) -> None:
  """A clinic export: ``a.avi`` (6 frames, train), ``b.dcm`` (4 frames, 0.2 x 0.3 mm pixels,
  test), masks on the frames ``masks`` names (``{video: frame numbers}``)."""
  _avi(f'{root}/clips/a.avi', 6)
  os.makedirs(f'{root}/dicom')
  helpers.write_dicom(f'{root}/dicom/b.dcm', np.stack([frame(30 * t)[..., 0] for t in range(4)]),
                      'MONOCHROME2', PixelSpacing=[0.2, 0.3], FrameTime=40.0)
  for video, numbers in masks.items():
    os.makedirs(f'{root}/masks/{video}', exist_ok=True)
    for n in numbers:
      write_image(f'{root}/masks/{video}/{n:03d}.png', lesion().astype(np.uint8) * 255)
  write_csv(f'{root}/videos.csv', [['path', 'video', 'split'], ['clips/a.avi', 'a', 'train'],
                                   ['dicom/b.dcm', 'b', 'test']])


def test_the_clinic_layout_reads_videos_and_dicom_cine_loops_with_masks_by_frame_number(
    tmp_path):
  pytest.importorskip('pydicom')
  root = str(tmp_path / 'clinic')
  _cine_table(root, {'a': (1, 4), 'b': (0, 1, 2, 3)})
  builder = prepare('usv_cine_table/sparse_masks=True', root, tmp_path / 'tfds')
  a, b = videos(builder, 'train')['a'], videos(builder, 'test')['b']
  assert a['frames'].shape == (6, 16, 16, 3) and b['frames'].shape == (4, 16, 16, 3)
  np.testing.assert_array_equal(a['annotated'], [False, True, False, False, True, False])
  np.testing.assert_array_equal(a['masks'][4, ..., 0], lesion())  # 004.png is frame 4.
  assert not a['masks'][[0, 2, 3, 5]].any() and b['annotated'].all()
  assert abs(int(a['frames'][4, 0, 0, 0]) - 80) <= 8  # Frames in order (MJPG is lossy).
  assert a['frame_names'].tolist() == [f'a#{n}'.encode() for n in range(6)]
  assert a['fps'] == pytest.approx(10) and b['fps'] == pytest.approx(25)
  np.testing.assert_allclose(b['pixel_spacing_mm'], [0.2, 0.3])  # From the DICOM header.
  np.testing.assert_array_equal(a['pixel_spacing_mm'], [0, 0])  # Unknown.
  assert a['group'] == b'a'


def test_the_clinic_layouts_missing_masks_and_frame_numbers_past_the_video_are_errors(
    tmp_path):
  pytest.importorskip('pydicom')
  root = str(tmp_path / 'clinic')
  _cine_table(root, {'a': (1, 4, 6), 'b': (0, 1, 2, 3), 'c': (0,)})
  write_image(f'{root}/masks/b/first.png', lesion().astype(np.uint8) * 255)
  with pytest.raises(common.DatasetError) as error:
    prepare('usv_cine_table', root, tmp_path / 'tfds')
  message = str(error.value)
  assert message.startswith('usv_cine_table/default: 4 problem(s) in ')
  for part in ("masks/a/006.png' is frame 6 but", "has 6 frames (0 to 5; masks are numbered "
               'from 0)', "video 'a' (videos.csv line 2) has masks on 2 of its 6 frames; "
               'frames 0, 2, 3, 5 have no mask', '--config.dataset.name=usv_cine_table/'
               'sparse_masks=True', "masks/b/first.png' is not named by a frame number",
               "masks/c' is of no video in videos.csv"):
    assert part in message


def test_the_synthetic_sparse_config_keeps_seeded_masks_in_train_and_all_in_test(tmp_path):
  builder = tfds.builder('usv_synthetic/tiny_sparse', data_dir=str(tmp_path))
  builder.download_and_prepare()
  dense = tfds.builder('usv_synthetic/tiny', data_dir=str(tmp_path))
  dense.download_and_prepare()
  full = videos(dense, 'train')
  for video_id, example in videos(builder, 'train').items():
    annotated, length = example['annotated'], len(example['frames'])
    np.testing.assert_array_equal(
        annotated, sparse.keep_frames(length, video_id, 0, per_video=2))
    assert annotated.sum() == min(2, length)
    np.testing.assert_array_equal(example['masks'][annotated], full[video_id]['masks'][annotated])
    assert not example['masks'][~annotated].any() and not example['boxes'][~annotated].any()
  test, full_test = videos(builder, 'test'), videos(dense, 'test')
  assert all(ex['annotated'].all() for ex in test.values())
  assert all(ex['annotated'].all() for ex in full.values())  # Dense configs: all annotated.
  for video_id, example in test.items():
    np.testing.assert_array_equal(example['masks'], full_test[video_id]['masks'])


def test_keep_frames_rules():
  every = sparse.keep_frames(23, 'v', 3, every=10)
  assert every.sum() in (2, 3) and np.diff(np.flatnonzero(every)).tolist() in ([10], [10, 10])
  assert sparse.keep_frames(4, 'v', 3, every=10).sum() == 1  # Shorter than N: one frame.
  assert sparse.keep_frames(1, 'v', 0, per_video=2).tolist() == [True]
  picks = {tuple(np.flatnonzero(sparse.keep_frames(50, f'v{i}', 0, per_video=2)))
           for i in range(20)}
  assert len(picks) > 10  # Drawn per video, not one pattern.
  np.testing.assert_array_equal(sparse.keep_frames(50, 'v', 0, per_video=2),
                                sparse.keep_frames(50, 'v', 0, per_video=2))


@pytest.mark.parametrize('rule', [{'every': 3}, {'per_video': 2}], ids=str)
def test_sparsify_masks_keeps_exactly_the_chosen_frames_of_the_training_videos(rule, tmp_path):
  src, dst = str(tmp_path / 'cvc'), str(tmp_path / 'sparse')
  make_frames_table(src, sequences=[0] * 7 + [1] * 6 + [2] * 5)
  write_csv(f'{src}/splits.csv', [['video', 'split'], ['0', 'train'], ['1', 'train'],
                                  ['2', 'test']])
  kept = helpers.load_script('sparsify_masks').sparsify(src, dst, 'usv_frames_table/default',
                                                        seed=4, **rule)
  assert sorted(kept) == ['0', '1']  # The test video keeps every mask.
  first = {'0': 1, '1': 8, '2': 14}  # File number of each video's frame 0.
  for video, length in (('0', 7), ('1', 6)):
    expected = np.flatnonzero(sparse.keep_frames(length, video, 4, **rule)).tolist()
    assert kept[video] == expected
    present = [n for n in range(length)
               if os.path.exists(f'{dst}/Ground Truth/{first[video] + n}.png')]
    assert present == expected
  assert all(os.path.exists(f'{dst}/Ground Truth/{n}.png') for n in range(14, 19))
  assert len(os.listdir(f'{dst}/Original')) == 18 and os.path.exists(f'{dst}/splits.csv')
  converted = prepare('usv_frames_table/sparse_masks=True', dst, tmp_path / 'tfds')
  assert videos(converted, 'train')['0']['annotated'].tolist() == [
      n in kept['0'] for n in range(7)]


def test_the_sparsify_command_prints_its_summary_and_no_library_line(tmp_path):
  src, dst = str(tmp_path / 'cvc'), str(tmp_path / 'sparse')
  make_frames_table(src, sequences=[0] * 4 + [1] * 3)
  write_csv(f'{src}/splits.csv', [['video', 'split'], ['0', 'train'], ['1', 'test']])
  done = subprocess.run(
      [sys.executable, 'scripts/sparsify_masks.py', f'--src={src}', f'--dst={dst}',
       '--dataset=usv_frames_table/default', '--per_video=2'], cwd=helpers.REPO,
      env=helpers.subprocess_env(1), capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr
  lines = (done.stdout + done.stderr).strip().splitlines()
  assert lines[0] == f'{dst}: kept 2 masks in 1 video(s); other videos unchanged.', lines
  assert len(lines) == 2 and lines[1].startswith('  0: frames ['), lines
