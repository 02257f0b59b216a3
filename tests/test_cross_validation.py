"""k-fold cross-validation: folds by video or patient, stratified, and the end-to-end run."""
import collections
import json
import os

import tensorflow_datasets as tfds

import helpers
import pytest
from test_builders import make_video_table, prepare
from input_pipeline import folds as folds_lib
from input_pipeline import pipeline
from usvjax.studies import cross_validation


def test_folds_never_share_a_video_and_keep_label_ratios(data_dir):
  config = helpers.load_config('cnn_aver', data_dir)
  builder = pipeline.get_builder(config.dataset)
  split = 'train+validation+test'
  folds = folds_lib.fold_assignment(builder, split, 4, seed=3)
  labels = {ex['video_id'].decode(): int(ex['label'])
            for ex in tfds.as_numpy(builder.as_dataset(split=split))}
  assert set(folds) == set(labels) and set(folds.values()) == {0, 1, 2, 3}
  per_fold = collections.Counter((folds[v], labels[v]) for v in labels)
  totals = collections.Counter(labels.values())
  for fold in range(4):
    for label, total in totals.items():
      assert abs(per_fold[(fold, label)] - total / 4) <= 1  # Stratified.
  assert folds_lib.fold_assignment(builder, split, 4, seed=3) == folds  # Fixed by the seed.
  assert folds_lib.fold_assignment(builder, split, 4, seed=4) != folds


def test_folds_keep_a_patients_videos_together(tmp_path):
  root = str(tmp_path / 'table')
  patient = {v: f'p{v // 3}' for v in range(12)}  # Four patients, three videos each.
  make_video_table(root, [[f'videos/{v}', 'benign' if v < 6 else 'malignant', patient[v]]
                          for v in range(12)], header=('path', 'label', 'group'))
  builder = prepare('usv_video_table/default', root, tmp_path / 'tfds')
  split = '+'.join(builder.info.splits)
  folds = folds_lib.fold_assignment(builder, split, 2, seed=0)
  folds_of_patient = collections.defaultdict(set)
  for video, fold in folds.items():
    folds_of_patient[patient[int(video.split('/')[-1])]].add(fold)
  assert len(folds) == 12 and set(folds.values()) == {0, 1}
  assert all(len(f) == 1 for f in folds_of_patient.values())
  with pytest.raises(ValueError, match='4 patients'):
    folds_lib.fold_assignment(builder, split, 5, seed=0)


def test_two_fold_cross_validation_runs_end_to_end(data_dir, tmp_path):
  config = helpers.load_config('cnn_aver', data_dir, total_steps=2, eval_every=2,
                               checkpoint_every=2, **{'dataset.train_split': 'train+validation'})
  summary = cross_validation.run(config, str(tmp_path), num_folds=2, seed=0)
  result = summary['methods']['cnn_aver']
  assert [int(f['num_videos']) for f in result['folds']] == [8, 8]  # 12 + 4 videos.
  assert result['pooled']['num_videos'] == 16 and len(summary['fold_seconds']) == 2
  lo, hi = result['pooled']['auc_ci95']  # Bootstrap over the 16 pooled videos.
  assert lo <= result['pooled']['auc'] <= hi
  assert (result['pooled']['bootstrap_unit'], result['pooled']['bootstrap_units']) == ('video', 16)
  assert {'cv_results.json', 'cv_table.md'} <= set(os.listdir(tmp_path))
  assert {'roc.png', 'pr.png', 'confusion_matrix.png'} <= set(os.listdir(tmp_path / 'cnn_aver'))
  with open(tmp_path / 'cv_results.json') as f:
    assert json.load(f)['num_folds'] == 2
  table = (tmp_path / 'cv_table.md').read_text()
  assert 'mean ± std' in table and 'Pooled held-out videos, 95% CI (bootstrap by video)' in table
  with open(tmp_path / 'fold_0' / 'held_out' / 'metrics.json') as f:
    assert len(json.load(f)['f1_ci95']) == 2  # Each fold's report has its own intervals.
