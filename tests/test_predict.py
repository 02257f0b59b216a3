"""Batch prediction over a folder holding a folder of PNG frames and a tiny AVI: the
segmenter writes masks and overlays named after each source, the same from the run (the
command) and from its export, and the same masks segment_video writes; the classifier
writes per-video probabilities with the classes named, equal to classify_video's."""
import csv

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

import helpers
from input_pipeline import pipeline
from test_builders import write_image
from test_train import _run
from usvjax import export
from usvjax import runners
from usvjax.export import functions
from usvjax.export import predict
from usvjax.export import writer
from usvjax.tools import classify
from usvjax.tools import segment


@pytest.fixture(scope='module')
def folder(data_dir, tmp_path_factory) -> str:
  """``cases/``: ``case1/frame<i>.png`` (a test video's frames) and ``case2.avi``."""
  config = helpers.load_config('unet', data_dir)
  video = next(iter(tfds.as_numpy(
      pipeline.get_builder(config.dataset).as_dataset(split='test'))))['frames']
  root = tmp_path_factory.mktemp('inputs') / 'cases'
  for index, frame in enumerate(video[..., 0]):
    write_image(str(root / 'case1' / f'frame{index}.png'), frame)
  height, width = video.shape[1:3]
  avi = cv2.VideoWriter(str(root / 'case2.avi'), cv2.VideoWriter_fourcc(*'MJPG'), 10,
                        (width, height))
  for frame in video[:3]:
    avi.write(np.repeat(frame, 3, axis=-1))
  avi.release()
  return str(root)


def _trained(name, data_dir, tmp_path_factory):
  """(config, workdir, export folder) of a step-0 run of initial weights."""
  root = tmp_path_factory.mktemp(name)
  config = helpers.from_initial_weights(helpers.load_config(name, data_dir), str(root / 'init'))
  workdir = str(root / 'run')
  runners.train(config, workdir)
  exported = str(tmp_path_factory.mktemp(f'{name}_export'))
  writer.export_run(functions.prepare(functions.resolve(config), workdir, 'latest'), exported,
                    platforms=('cpu',), saved_model=False)
  return config, workdir, exported


def _rows(path) -> list[dict]:
  with open(path, newline='', encoding='utf-8') as f:
    return list(csv.DictReader(f))


def test_segmentation_masks_are_named_after_their_sources(data_dir, tmp_path_factory, folder,
                                                          tmp_path):
  config, workdir, exported = _trained('unet', data_dir, tmp_path_factory)
  process = _run(['-m', 'experiments.predict', f'--workdir={workdir}', '--checkpoint=latest',
                  f'--input={folder}', f'--output={tmp_path}/run', '--compilation_cache='])
  text, _ = process.communicate(timeout=300)
  assert process.returncode == 0, text
  predict.predict_folder(export.load(exported), folder, str(tmp_path / 'export'))
  frames = sorted((tmp_path / 'run' / 'case1' / 'masks').iterdir())
  assert [p.name for p in frames] == sorted(f'frame{i}.png' for i in range(len(frames)))
  assert sorted(p.name for p in (tmp_path / 'run' / 'case2' / 'masks').iterdir()) == [
      '00000.png', '00001.png', '00002.png']
  segment.segment_video(segment.resolve(config), workdir, 'latest', f'{folder}/case1', '',
                        str(tmp_path / 'single'))
  shape = cv2.imread(f'{folder}/case1/frame0.png').shape[:2]
  for source in ('case1', 'case2'):
    assert (tmp_path / 'run' / source / 'overlay.mp4').stat().st_size > 0
    for mask in (tmp_path / 'run' / source / 'masks').iterdir():
      ours = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
      assert ours.shape == shape and shape != (32, 32)  # The source's, not the model's.
      np.testing.assert_array_equal(
          ours, cv2.imread(str(tmp_path / 'export' / source / 'masks' / mask.name),
                           cv2.IMREAD_GRAYSCALE))
      if source == 'case1':
        np.testing.assert_array_equal(ours, cv2.imread(str(tmp_path / 'single' / 'masks' /
                                                           mask.name), cv2.IMREAD_GRAYSCALE))
  rows = _rows(tmp_path / 'run' / 'predictions.csv')
  assert [(r['source'], r['frames']) for r in rows] == [('case1', str(len(frames))),
                                                        ('case2.avi', '3')]
  assert rows == _rows(tmp_path / 'export' / 'predictions.csv')


def test_classification_writes_named_class_probabilities_per_video(data_dir, tmp_path_factory,
                                                                   folder, tmp_path):
  config, workdir, exported = _trained('cnn_aver', data_dir, tmp_path_factory)
  run = functions.resolve(config)
  in_process = functions.in_process(functions.prepare(run, workdir, 'latest'))
  rows = _rows(predict.predict_folder(in_process, folder, str(tmp_path / 'run')))
  assert list(rows[0]) == ['source', 'frames', 'prob_benign', 'prob_malignant',
                           'predicted_class']
  from_export = _rows(predict.predict_folder(export.load(exported), folder,
                                             str(tmp_path / 'export')))
  for ours, theirs in zip(rows, from_export, strict=True):
    assert [ours[k] for k in ('source', 'frames', 'predicted_class')] == [
        theirs[k] for k in ('source', 'frames', 'predicted_class')]
    np.testing.assert_allclose([float(ours['prob_malignant'])],
                               [float(theirs['prob_malignant'])], atol=1e-5, rtol=0)
  single = classify.classify_video(classify.resolve(config), workdir, 'latest',
                                   f'{folder}/case1', str(tmp_path / 'single'))
  assert rows[0]['source'] == 'case1' and int(rows[0]['frames']) == len(single.frames)
  np.testing.assert_allclose([float(rows[0]['prob_benign']), float(rows[0]['prob_malignant'])],
                             list(single.probabilities.values()), atol=1e-5, rtol=0)
  assert rows[0]['predicted_class'] == single.label
  assert rows[1]['source'] == 'case2.avi' and rows[1]['frames'] == '3'
