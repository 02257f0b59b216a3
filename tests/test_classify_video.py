"""One trained CNN_Aver run, three uses: classify_video (folder, DICOM) gives exactly the
probability and label the evaluation gives the same video (threshold chosen on validation),
with per-frame scores; the evaluation's per-video table holds numbers, names and the
decision; frame_sweep evaluates with at most n frames per video."""
import csv
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

import helpers
from input_pipeline import pipeline
from test_builders import write_image
from test_train import _run
from usvjax import runners
from usvjax.core import evaluate
from usvjax.core import run as run_lib
from usvjax.studies import frame_sweep
from usvjax.tools import classify

pytest.importorskip('pydicom')


@pytest.fixture(scope='module')
def trained(data_dir, tmp_path_factory):
  """(config, workdir) of a CNN_Aver run (up to 8 frames per video) with a Youden threshold:
  a step-0 checkpoint of initial weights, the probabilities of any model do."""
  root = tmp_path_factory.mktemp('cnn_aver')
  config = helpers.from_initial_weights(
      helpers.load_config('cnn_aver', data_dir, **{'task.threshold_rule': 'youden'}),
      str(root / 'init'))
  workdir = str(root / 'run')
  runners.train(config, workdir)
  return config, workdir


def test_one_video_gets_the_probability_the_evaluation_gives_it(trained, tmp_path):
  config, workdir = trained
  report = evaluate.evaluate_checkpoint(run_lib.resolve(config), workdir, 'latest', 'test',
                                        str(tmp_path / 'report'))
  threshold = report.metrics['threshold']
  assert report.metrics['threshold_split'] == 'validation'
  assert report.metrics['threshold_rule'] == 'youden'
  with open(tmp_path / 'report' / 'per_video.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  exported = evaluate.export_predictions(report)  # evaluate --export: per-frame scores.
  with open(exported[0], newline='') as f:
    frames = list(csv.DictReader(f))
  assert len(frames) == sum(int(row['num_frames']) for row in rows)
  for row in rows:  # CNN_Aver's video probability is the mean of its frames'.
    mine = [float(r['frame_prob_malignant']) for r in frames if r['video_id'] == row['video_id']]
    assert np.mean(mine) == pytest.approx(float(row['prob_malignant']), abs=1e-5)
  assert len(rows) == report.metrics['num_videos']
  for row in rows:
    p = float(row['prob_malignant'])
    assert float(row['prob_benign']) + p == pytest.approx(1, abs=1e-5)
    assert row['predicted_class'] == ('malignant' if p >= threshold else 'benign')
    assert row['correct'] == str(int(row['predicted_class'] == row['true_class']))
  video = next(iter(tfds.as_numpy(
      pipeline.get_builder(config.dataset).as_dataset(split='test'))))
  name = video['video_id'].decode()
  expected = next(r['probs'] for r in report.evaluation.rows if r['video_id'] == name)
  grey = video['frames'][..., 0]  # The synthetic frames are grey: [T, H, W].
  folder = tmp_path / 'frames'
  for index, frame in enumerate(grey):
    write_image(str(folder / f'frame{index}.png'), frame)  # PNG: lossless.
  dicom = helpers.write_dicom(str(tmp_path / 'loop.dcm'), grey, 'MONOCHROME2')
  classify.classify_video(classify.resolve(config), workdir, 'latest', str(folder),
                          str(tmp_path / 'out_frames'))
  process = _run(['-m', 'experiments.classify_video', f'--workdir={workdir}',  # Own config.
                  f'--video={dicom}', '--checkpoint=latest', f'--output_dir={tmp_path}/out_dcm'])
  output, _ = process.communicate(timeout=300)
  assert process.returncode == 0, output
  assert 'loop.dcm: ' in output
  for out in (tmp_path / 'out_frames', tmp_path / 'out_dcm'):
    result = json.loads((out / 'result.json').read_text())
    names = list(result['probabilities'])
    assert names == ['benign', 'malignant']
    np.testing.assert_allclose(list(result['probabilities'].values()), expected, atol=1e-5)
    assert result['threshold'] == threshold
    assert result['label'] == names[int(expected[1] >= threshold)]
    assert result['frames'] == list(range(len(video['frames'])))  # Fewer than max_frames.
    column = f"frame_probability_{result['label']}"  # Names the class of its probability.
    assert len(result['frame_scores'][column]) == len(result['frames'])
    assert (out / 'frames.png').exists()
    assert (out / 'frames.csv').read_text().splitlines()[0] == f'frame,{column}'


def test_frame_sweep_evaluates_the_videos_with_at_most_n_frames(trained, tmp_path):
  config, workdir = trained
  rows = frame_sweep.run(config, workdir, [12, 2], which='latest', output_dir=str(tmp_path))
  assert [r['frames'] for r in rows] == [2, 12]
  assert len({r['num_videos'] for r in rows}) == 1  # Every video, every time.
  for count in (2, 12):
    with open(tmp_path / f'frames_{count}' / 'per_video.csv') as f:
      seen = [int(row['num_frames']) for row in csv.DictReader(f)]
    assert max(seen) == min(count, 8) and all(n <= count for n in seen)
  assert (tmp_path / 'frame_sweep.png').exists()
