"""One dataset, one conversion (docs/data.md): each local folder is converted into a data
directory of its own (``pipeline.source_data_dir``), so two folders of one layout never
share or overwrite a converted copy, and reusing either converts nothing; a killed
conversion's ``incomplete.*`` folders are removed at the next start."""
import logging
import os

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from test_builders import all_videos, frame, make_frames_table, write_image

from input_pipeline import pipeline


def _dataset(root, data_dir) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'name': 'usv_frames_table', 'config': 'default',
                                    'data_dir': str(data_dir), 'manual_dir': str(root)})


def _first_frames(builder) -> dict:
  return {video: example['frames'][0] for video, example in all_videos(builder).items()}


def test_two_folders_of_one_layout_keep_a_converted_copy_each(tmp_path, caplog, monkeypatch):
  first, second = tmp_path / 'hospital_a' / 'cvc', tmp_path / 'hospital_b' / 'cvc'
  make_frames_table(str(first))
  make_frames_table(str(second))
  for number in range(1, 10):  # Same layout and names, other pixels.
    write_image(str(second / 'Original' / f'{number}.png'), frame(100 + number))
  a = pipeline.get_builder(_dataset(first, tmp_path / 'tfds'))
  b = pipeline.get_builder(_dataset(second, tmp_path / 'tfds'))
  assert a.data_dir != b.data_dir
  assert os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(a.data_dir)))
                          ).startswith('cvc-')
  frames_a, frames_b = _first_frames(a), _first_frames(b)
  assert frames_a['0'][0, 0, 0] == 1 and frames_b['0'][0, 0, 0] == 101
  assert 'converting it again' not in caplog.text and 'changed since' not in caplog.text
  monkeypatch.setattr(tfds.core.DatasetBuilder, '_download_and_prepare',
                      lambda *args, **kwargs: (_ for _ in ()).throw(AssertionError('converted')))
  for root, frames in ((first, frames_a), (second, frames_b)):  # Reused, not converted.
    again = pipeline.get_builder(_dataset(root, tmp_path / 'tfds'))
    for video, image in _first_frames(again).items():
      np.testing.assert_array_equal(image, frames[video])


def test_a_killed_conversions_incomplete_folder_is_removed_at_the_next_start(tmp_path,
                                                                            caplog):
  root = tmp_path / 'cvc'
  make_frames_table(str(root))
  dataset = _dataset(root, tmp_path / 'tfds')
  config_dir = os.path.dirname(pipeline._builder(dataset).data_dir)  # pylint: disable=protected-access
  leftover = os.path.join(config_dir, 'incomplete.K1LLED_1.2.0')
  os.makedirs(os.path.join(leftover, 'half'))
  with caplog.at_level(logging.WARNING):
    builder = pipeline.get_builder(dataset)
  assert not os.path.exists(leftover)
  assert f'removed {leftover}' in caplog.text
  assert len(all_videos(builder)) == 3
