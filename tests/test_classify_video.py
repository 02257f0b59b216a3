"""classify_video: one video (folder, DICOM) gives exactly the probability the evaluation
gives the same video, with its label and per-frame scores."""
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

import helpers
from input_pipeline import pipeline
from test_builders import write_image
from test_train import _run
from usvjax import classify
from usvjax import evaluate
from usvjax import runners

pytest.importorskip('pydicom')
from test_dicom import write_dicom  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_one_video_gets_the_probability_the_evaluation_gives_it(data_dir, tmp_path):
  config = helpers.load_config('cnn_aver', data_dir)
  workdir = str(tmp_path / 'run')
  runners.train(config, workdir)
  report = evaluate.evaluate_checkpoint(config, workdir, 'latest', 'test',
                                        str(tmp_path / 'report'))
  video = next(iter(tfds.as_numpy(
      pipeline.get_builder(config.dataset).as_dataset(split='test'))))
  name = video['video_id'].decode()
  expected = next(r['probs'] for r in report.evaluation.rows if r['video_id'] == name)
  grey = video['frames'][..., 0]  # The synthetic frames are grey: [T, H, W].
  folder = tmp_path / 'frames'
  for index, frame in enumerate(grey):
    write_image(str(folder / f'frame{index}.png'), frame)  # PNG: lossless.
  dicom = write_dicom(str(tmp_path / 'loop.dcm'), grey, 'MONOCHROME2')
  classify.classify_video(config, workdir, 'latest', str(folder), str(tmp_path / 'out_frames'))
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
    assert result['label'] == names[int(expected[1] >= config.task.threshold)]
    assert result['frames'] == list(range(len(video['frames'])))  # Fewer than max_frames.
    assert len(result['frame_scores']['frame_probability']) == len(result['frames'])
    assert (out / 'frames.png').exists() and (out / 'frames.csv').exists()
