"""Sparsely traced videos end to end (issue 38): a frames-table folder converted with
``sparse_masks=True`` trains a clip model (with the mean teacher) and STPFNet, and the
evaluation scores exactly the annotated test frames (STPFNet: those after the first one,
whose mask it is given)."""
import csv
import os

import numpy as np
import pytest

import helpers
from test_builders import write_image
from test_sparse_layouts import _sparse_frames_table  # pylint: disable=protected-access

from usvjax.core import evaluate
from usvjax.core import run as run_lib
from usvjax.core import train


@pytest.fixture(scope='module')
def sparse_folder(tmp_path_factory):
  """The 2-of-5 table of test_sparse_layouts with the test video (frames 11-15) traced on
  its frames 2 and 4 instead of 0 and 2."""
  root = str(tmp_path_factory.mktemp('sparse') / 'cvc')
  _sparse_frames_table(root)
  os.remove(f'{root}/Ground Truth/11.png')
  mask = np.zeros((16, 16), np.uint8)
  mask[4:10, 5:12] = 255
  write_image(f'{root}/Ground Truth/15.png', mask)
  return root


def _config(name, root, data_dir, **overrides):
  return helpers.load_config(name, str(data_dir), total_steps=2, checkpoint_every=1,
                             eval_every=1, **{
      'dataset.name': 'usv_frames_table/sparse_masks=True', 'dataset.config': 'default',
      'dataset.manual_dir': root, 'dataset.eval_split': 'test', 'input.batch_size': 4,
      'input.eval_batch_size': 4, 'input.channels': 3, **overrides})


def _scored(workdir, config) -> tuple[dict, list[str]]:
  """The test report's metrics and the exported masks' names (one per scored frame)."""
  report = evaluate.evaluate_checkpoint(run_lib.resolve(config), workdir, 'latest', 'test')
  with open(os.path.join(report.directory, 'per_video.csv')) as f:
    rows = list(csv.DictReader(f))
  assert [int(r['scored_frames']) for r in rows] == [report.metrics['scored_frames']]
  return report.metrics, sorted(os.path.basename(p)
                                for p in report.evaluation.export(str(workdir)))


def test_a_clip_model_trains_with_the_teacher_and_scores_only_annotated_test_frames(
    sparse_folder, tmp_path):
  config = _config('unet', sparse_folder, tmp_path / 'tfds',
                   **{'task.consistency_weight': 0.5, 'optimizer.ema_decay': 0.9})
  workdir = tmp_path / 'unet'
  train.train_and_evaluate(run_lib.resolve(config), str(workdir))
  metrics, exported = _scored(workdir, config)
  assert metrics['scored_frames'] == 2 and exported == ['13.png', '15.png']
  assert 'train/consistency' in (workdir / 'metrics.jsonl').read_text()


def test_stpfnet_scores_the_annotated_test_frames_after_its_first(sparse_folder, tmp_path):
  """Evaluated from a step-0 checkpoint of initial weights: the protocol, not the weights,
  decides which frames are scored (the training clips: test_sparse_clips)."""
  config = helpers.from_initial_weights(_config('stpfnet', sparse_folder, tmp_path / 'tfds'),
                                        str(tmp_path / 'init'))
  workdir = tmp_path / 'stpfnet'
  train.train_and_evaluate(run_lib.resolve(config), str(workdir))
  metrics, exported = _scored(workdir, config)
  assert metrics['scored_frames'] == 1 and exported == ['15.png']
