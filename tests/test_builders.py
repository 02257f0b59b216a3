"""TFDS builders for the four real layouts, from small fixtures, and group-aware splits.

The writers here (``make_davis``, ``make_flanet``, ``make_frames_table``,
``make_video_table``) also serve ``test_data_checks.py``, which breaks what they write.
"""
import collections
import csv
import io
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
from input_pipeline.builders import splits

SIZE = 16


def frame(value: int, h: int = SIZE, w: int = SIZE) -> np.ndarray:
  """A uint8 RGB frame: ``value`` everywhere, a bright patch where the lesion is."""
  image = np.full((h, w, 3), value, np.uint8)
  image[4:10, 3:12, 1] = 200
  return image


def lesion(h: int = SIZE, w: int = SIZE) -> np.ndarray:
  """The lesion of ``frame`` as bool [h, w]."""
  mask = np.zeros((h, w), bool)
  mask[4:10, 3:12] = True
  return mask


def write_image(path, array: np.ndarray, palette: bool = False) -> None:
  """Writes ``array`` to ``path`` (str or bytes): JPEG by extension, else PNG (palette PNG
  if ``palette``; bool arrays as 1-bit, uint16 as 16-bit PNGs)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if os.fsdecode(path).endswith('.jpg'):
    data = cv2.imencode('.jpg', np.ascontiguousarray(array[..., ::-1]))[1].tobytes()
  else:
    image = Image.fromarray(array)
    if palette:
      image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0])
    buffer = io.BytesIO()
    image.save(buffer, 'PNG')
    data = buffer.getvalue()
  with open(path, 'wb') as f:
    f.write(data)


def write_csv(path, rows) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', newline='') as f:
    csv.writer(f).writerows(rows)


def make_davis(root: str, lengths=(('a', 3), ('b', 2), ('c', 4)),
               lists=(('train', 'a'), ('val', 'b'), ('val', 'c'))) -> None:
  """DAVIS layout: JPEG frames, palette masks (lesion id 2), ImageSets/2017 lists."""
  for name, length in lengths:
    for i in range(length):
      write_image(f'{root}/JPEGImages/480p/{name}/{i:05d}.jpg', frame(10 * i))
      write_image(f'{root}/Annotations/480p/{name}/{i:05d}.png',
                  lesion().astype(np.uint8) * 2, palette=True)
  os.makedirs(f'{root}/ImageSets/2017', exist_ok=True)
  for split, name in lists:
    with open(f'{root}/ImageSets/2017/{split}.txt', 'a') as f:
      f.write(name + '\n')


def make_flanet(root: str, lengths=(('v1', 3), ('v2', 2)), lists=(('train', 'v1'), ('test', 'v2')),
                mask=lambda: lesion().astype(np.uint8) * 255) -> None:
  """FLA-Net layout: PNG frames and masks (``mask()`` each), <split>_list.csv lists."""
  for name, length in lengths:
    for i in range(length):
      write_image(f'{root}/img_list/{name}/{i}.png', frame(i))
      write_image(f'{root}/mask_list/{name}/{i}.png', mask())
  for split, name in lists:
    with open(f'{root}/{split}_list.csv', 'a') as f:
      f.write(name + '\n')


def make_frames_table(root: str, sequences=(0, 0, 0, 1, 1, 2, 2, 2, 2), groups=None) -> None:
  """CVC-612 layout: frame N of sequence sequences[N-1], RGB 0/255 masks, sequences.csv."""
  header = ['frame', 'sequence'] + (['group'] if groups else [])
  rows = []
  for number, sequence in enumerate(sequences, start=1):
    rows.append([number, sequence] + ([groups[number - 1]] if groups else []))
    write_image(f'{root}/Original/{number}.png', frame(number))
    write_image(f'{root}/Ground Truth/{number}.png',
                np.repeat(lesion()[..., None], 3, -1).astype(np.uint8) * 255)
  write_csv(f'{root}/sequences.csv', [header] + rows)


def make_video_table(root: str, rows, header=('path', 'label'), table='labels.csv') -> None:
  """Video-table layout: every row's path is a folder of two PNG frames; ``table``."""
  for row in rows:
    for t in range(2):
      write_image(os.path.join(root, row[0], f'{t}.png'), frame(10 * t))
  write_csv(os.path.join(root, table), [list(header)] + [list(r) for r in rows])


def prepare(name: str, root, data_dir, **builder_kwargs):
  builder = tfds.builder(name, data_dir=str(data_dir), **builder_kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=root))
  return builder


def videos(builder, split: str) -> dict:
  return {ex['video_id'].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split=split))}


def all_videos(builder) -> dict:
  return {k: v for split in builder.info.splits for k, v in videos(builder, split).items()}


def test_davis_layout(tmp_path):
  root = str(tmp_path / 'davis')
  make_davis(root)
  builder = prepare('usv_davis/480p', root, tmp_path / 'tfds')
  assert builder.info.splits['train'].num_examples == 1
  val = videos(builder, 'validation')  # DAVIS's val.txt: config.dataset.eval_split's default.
  assert sorted(val) == ['b', 'c'] and sorted(builder.info.splits) == ['train', 'validation']
  c = val['c']
  assert c['frames'].shape == (4, SIZE, SIZE, 3) and c['masks'].shape == (4, SIZE, SIZE, 1)
  np.testing.assert_array_equal(c['masks'][2, ..., 0], lesion())  # Palette id 2 -> 1.
  np.testing.assert_allclose(c['boxes'][0], [4 / SIZE, 3 / SIZE, 10 / SIZE, 12 / SIZE])
  assert abs(int(c['frames'][3, 0, 0, 0]) - 30) <= 3  # Frames kept in order (JPEG).
  assert c['frame_names'].tolist() == [f'{i:05d}.jpg'.encode() for i in range(4)]


def test_flanet_layout(tmp_path):
  root = str(tmp_path / 'fla')
  make_flanet(root, lists=(('train', 'video'), ('train', 'v1'), ('test', 'v2')))  # Header.
  builder = prepare('usv_flanet', root, tmp_path / 'tfds')
  assert list(videos(builder, 'train')) == ['v1']
  test = videos(builder, 'test')['v2']
  assert test['frames'].shape == (2, SIZE, SIZE, 3)
  np.testing.assert_array_equal(test['frames'][1, 0, 0, 0], 1)  # PNG is lossless.
  np.testing.assert_array_equal(test['masks'][1, ..., 0], lesion())


def test_frames_table_layout_with_fixed_and_seeded_splits(tmp_path):
  root = str(tmp_path / 'cvc')
  make_frames_table(root, sequences=[0, 0, 0] + list(range(1, 29)))
  builder = prepare('usv_frames_table/cvc612', root, tmp_path / 'tfds')
  test = videos(builder, 'test')
  assert sorted(test, key=int) == ['0', '6', '7', '16', '24']  # CVC-612's suggested split.
  assert sorted(videos(builder, 'validation'), key=int) == ['2', '3', '4', '11', '15', '17']
  assert builder.info.splits['train'].num_examples == 29 - 11
  assert test['0']['frames'].shape[0] == 3
  assert [int(f[0, 0, 0]) for f in test['0']['frames']] == [1, 2, 3]  # Frame order.
  np.testing.assert_array_equal(test['0']['masks'][0, ..., 0], lesion())  # RGB 0/255 masks.
  assert test['0']['group'] == b'0'  # No group column: the video is its own group.
  seeded = prepare('usv_frames_table/default', root, tmp_path / 'seeded')
  ids = [set(videos(seeded, s)) for s in seeded.info.splits]
  assert sum(len(i) for i in ids) == 29 and not set.intersection(*ids)


def test_video_table_layout(tmp_path):
  root = tmp_path / 'pocus'
  (root / 'videos').mkdir(parents=True)
  rows = []
  for i in range(10):
    path = f'videos/clip{i}.avi'
    writer = cv2.VideoWriter(str(root / path), cv2.VideoWriter_fourcc(*'MJPG'), 10, (32, 24))
    for t in range(3 + i % 4):
      writer.write(frame(20 * t, 24, 32))
    writer.release()
    rows.append([path, 'regular' if i % 2 else 'COVID-19'])
  for t in range(2):
    write_image(str(root / 'videos' / 'folder_clip' / f'frame{t}.png'), frame(t))
  rows.append(['videos/folder_clip', 'Viral pneumonia'])
  write_csv(str(root / 'metadata.csv'), [['path', 'Label']] + rows)
  builder = prepare('usv_video_table/pocus_binary', str(root), tmp_path / 'tfds')
  clips = all_videos(builder)
  assert len(clips) == 11
  assert clips['videos/clip5.avi']['frames'].shape == (3 + 5 % 4, 24, 32, 3)
  assert clips['videos/clip5.avi']['label'] == 0  # regular
  assert clips['videos/clip4.avi']['label'] == 1  # COVID-19 -> pathological
  assert clips['videos/clip4.avi']['group'] == b'videos/clip4.avi'  # Its own group.
  assert clips['videos/folder_clip']['frames'].shape[0] == 2
  three = prepare('usv_video_table/pocus_3class', str(root), tmp_path / 'three')
  assert sum(s.num_examples for s in three.info.splits.values()) == 10  # Viral left out.


def test_missing_manual_dir_is_named(tmp_path):
  config = helpers.load_config('unet', str(tmp_path), **{
      'dataset.name': 'usv_frames_table', 'dataset.config': 'default',
      'dataset.manual_dir': str(tmp_path / 'nowhere')})
  with pytest.raises(common.DatasetError, match='nowhere'):
    pipeline.get_builder(config.dataset)


FRACTIONS = {'70/15/15': (('train', 0.7), ('validation', 0.15), ('test', 0.15)),
             '5-fold': tuple((str(k), 1.0) for k in range(5)),
             '50/50': (('a', 1.0), ('b', 1.0))}


@pytest.mark.parametrize('fractions', FRACTIONS, ids=str)
@pytest.mark.parametrize('seed', [0, 7])
def test_split_videos_keeps_groups_together_and_stratifies(fractions, seed):
  fractions = FRACTIONS[fractions]
  rng = np.random.default_rng(seed)
  sizes = rng.integers(1, 5, 40)  # 40 patients with 1 to 4 videos, one label each.
  groups = np.repeat(np.arange(40), sizes)
  labels = np.repeat(rng.permutation(np.arange(40) % 3 == 0), sizes)
  ids = [f'v{i}' for i in range(len(groups))]
  assignment = splits.split_videos(ids, fractions, seed, labels=list(labels),
                                   groups=list(groups))
  split_of_group = collections.defaultdict(set)
  for video, group in zip(ids, groups):
    split_of_group[group].add(assignment[video])
  assert all(len(s) == 1 for s in split_of_group.values())  # A patient in one split.
  total = sum(w for _, w in fractions)
  for name, weight in fractions:
    members = [i for i, v in enumerate(ids) if assignment[v] == name]
    assert abs(len(members) - weight / total * len(ids)) <= 6  # Share of videos.
    positive = np.mean(labels[members])
    assert abs(positive - labels.mean()) < 0.2  # Stratified by label.
  shuffled = [ids[i] for i in rng.permutation(len(ids))]
  order = {v: i for i, v in enumerate(ids)}
  again = splits.split_videos(shuffled, fractions, seed,
                              labels=[labels[order[v]] for v in shuffled],
                              groups=[groups[order[v]] for v in shuffled])
  assert again == assignment  # The input order does not matter.


def test_split_videos_without_groups_keeps_counts_and_accepts_mixed_groups(caplog):
  ids = [str(i) for i in range(29)]
  assignment = splits.split_videos(ids, FRACTIONS['70/15/15'], 0)
  counts = collections.Counter(assignment.values())  # 1/7 of 29, then 1/6 of the 25 left.
  assert (counts['validation'], counts['test'], counts['train']) == (4, 4, 21)
  folds = splits.split_videos(ids, FRACTIONS['5-fold'], 3, labels=[i % 2 for i in range(29)])
  assert sorted(collections.Counter(folds.values()).values()) == [5, 6, 6, 6, 6]
  mixed = splits.split_videos(['a1', 'a2', 'b1', 'b2', 'c1', 'c2'], FRACTIONS['50/50'], 0,
                              labels=[0, 1, 0, 0, 1, 1], groups=['a', 'a', 'b', 'b', 'c', 'c'])
  assert mixed['a1'] == mixed['a2'] and mixed['b1'] == mixed['b2']
  assert "different labels" in caplog.text and ': a' in caplog.text


@pytest.mark.parametrize('layout', ['frames_table', 'video_table'])
def test_group_column_is_stored_and_keeps_a_patients_videos_in_one_split(layout, tmp_path):
  root = str(tmp_path / layout)
  group_of = {str(v): f'p{v // 3}' for v in range(12)}  # Four patients, three videos each.
  if layout == 'frames_table':
    sequences = [v for v in range(12) for _ in range(2)]
    make_frames_table(root, sequences, groups=[group_of[str(v)] for v in sequences])
    builder = prepare('usv_frames_table/default', root, tmp_path / 'tfds')
  else:
    make_video_table(root, [[f'videos/{v}', 'benign' if v < 6 else 'malignant', group_of[str(v)]]
                            for v in range(12)], header=('path', 'label', 'group'))
    builder = prepare('usv_video_table/default', root, tmp_path / 'tfds')
  split_of_group = collections.defaultdict(set)
  for split in builder.info.splits:
    for video_id, example in videos(builder, split).items():
      assert example['group'].decode() == group_of[video_id.split('/')[-1]]
      split_of_group[example['group']].add(split)
  assert len(split_of_group) == 4 and all(len(s) == 1 for s in split_of_group.values())


def test_mask_threshold_option_has_its_own_config_and_dataset_name_syntax(tmp_path):
  root = str(tmp_path / 'fla')
  gray = (lesion() * 200 + 50 * ~lesion()).astype(np.uint8)  # 50 outside, 250 inside.
  make_flanet(root, mask=lambda: gray)
  builder = tfds.builder('usv_flanet/mask_threshold=100', data_dir=str(tmp_path / 'tfds'))
  assert builder.builder_config.name == 'default-mask_threshold-100'
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=root))
  np.testing.assert_array_equal(videos(builder, 'test')['v2']['masks'][0, ..., 0], lesion())
  with pytest.raises(ValueError, match='mask_threshold=-1'):
    tfds.builder('usv_flanet', mask_threshold=-1)


def test_a_split_file_assigns_the_videos_of_every_layout(tmp_path):
  frames_root, videos_root = str(tmp_path / 'frames'), str(tmp_path / 'videos')
  make_frames_table(frames_root)  # Sequences 0, 1, 2.
  write_csv(f'{frames_root}/splits.csv', [['video', 'split'], ['0', 'test'], ['1', 'train'],
                                          ['2', 'train']])
  frames = prepare('usv_frames_table/default', frames_root, tmp_path / 'a')
  assert {s: sorted(videos(frames, s)) for s in frames.info.splits} == {
      'train': ['1', '2'], 'test': ['0']}
  make_video_table(videos_root, [('v1', 'benign'), ('v2', 'malignant'), ('v3', 'benign')])
  write_csv(f'{videos_root}/splits.csv', [['video', 'split'], ['v1', 'validation'],
                                          ['v2', 'train'], ['v3', 'train']])
  table = prepare('usv_video_table/default', videos_root, tmp_path / 'b')
  assert {s: sorted(videos(table, s)) for s in table.info.splits} == {
      'train': ['v2', 'v3'], 'validation': ['v1']}


def test_a_split_file_with_problems_lists_each(tmp_path):
  root = str(tmp_path / 'frames')
  make_frames_table(root)
  write_csv(f'{root}/splits.csv', [['video', 'split'], ['0', 'test'], ['0', 'train'],
                                   ['7', 'train'], ['1', 'tset']])
  with pytest.raises(common.DatasetError) as error:
    prepare('usv_frames_table/default', root, tmp_path / 'tfds')
  message = str(error.value)
  for part in ("splits.csv line 3: video '0' is listed again",
               "splits.csv line 4: video '7' is not in the dataset",
               "split 'tset' of '1' is not one of ['train', 'validation', 'test'] (did you mean "
               "'test'?)", "does not list 1 video(s) of the dataset, e.g. '2'"):
    assert part in message


def test_a_pixel_spacing_file_gives_videos_their_spacing_and_leaves_the_others_unknown(
    tmp_path):
  root = str(tmp_path / 'frames')
  make_frames_table(root)  # Sequences 0, 1, 2.
  write_csv(f'{root}/pixel_spacing.csv', [['video', 'pixel_spacing_mm'], ['0', '0.5'],
                                          ['1', ' 0.2  0.4 '], ['2', '']])
  builder = prepare('usv_frames_table/default', root, tmp_path / 'tfds')
  assert str(builder.info.version) >= '1.2.0'  # The feature is new: a conversion of its own.
  stored = {v: tuple(ex['pixel_spacing_mm']) for v, ex in all_videos(builder).items()}
  assert stored == {'0': (0.5, 0.5), '1': pytest.approx((0.2, 0.4)), '2': (0.0, 0.0)}


def test_bad_pixel_spacings_are_listed_each_with_its_line(tmp_path):
  root = str(tmp_path / 'frames')
  make_frames_table(root, sequences=range(1, 10))
  write_csv(f'{root}/pixel_spacing.csv', [
      ['video', 'pixel_spacing_mm'], ['1', '0'], ['2', '-0.1'], ['3', '0.1mm'], ['4', 'nan'],
      ['5', '0.1', '0.2'], ['6', '0.1 0.2 0.3'], ['7', '0.1'], ['7', '0.1'], ['70', '0.1']])
  with pytest.raises(common.DatasetError) as error:
    prepare('usv_frames_table/default', root, tmp_path / 'tfds')
  message = str(error.value)
  assert message.startswith('usv_frames_table/default: 8 problem(s) in ')
  advice = ("is not one number > 0 or two separated by a space: write the video's mm per "
            "pixel ('0.1', or '0.1 0.12' for rows, columns) or leave the cell blank if it is "
            'unknown.')
  for line, (video, value) in enumerate([('1', '0'), ('2', '-0.1'), ('3', '0.1mm'),
                                         ('4', 'nan'), ('6', '0.1 0.2 0.3')], start=2):
    line += line == 6  # Line 6 (video 5) has an extra cell.
    assert (f"pixel_spacing.csv line {line}: pixel spacing '{value}' of video '{video}' "
            + advice) in message
  for part in ('pixel_spacing.csv line 6 has 3 cells, its header 2: quote a cell that holds a '
               'comma', "pixel_spacing.csv line 9: video '7' is listed again",
               "pixel_spacing.csv line 10: video '70' is not in the dataset (did you mean "
               "'7'?)"):
    assert part in message
