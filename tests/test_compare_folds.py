"""compare --folds: every (method, seed, fold) is one run and one results.csv row, every
video is held out exactly once, a rerun trains only what changed, and the paired tests
pair runs of the same fold and seed."""
import csv
import json
import os
import shutil
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds

from input_pipeline import pipeline
from usvjax import tasks
from usvjax.core import evaluate
from usvjax.core import train
from usvjax.errors import ConfigError
from usvjax.metrics import statistics
from usvjax.reporting import provenance
from usvjax.studies import compare
from usvjax.studies import compare_report
from usvjax.studies import cross_validation
from usvjax.studies import frame_sweep

SPLIT = 'train+validation'  # 12 + 4 synthetic videos.
REAL_TRAIN = train.train_and_evaluate
METHODS = ['a=configs/cnn_aver.py:tiny',
           'b=configs/cnn_aver.py:tiny;input.video_shuffle_buffer=2']  # Its data stream only.
# A fake run's metrics: every column of the classification table.
METRICS = {k: 0.5 for k in tasks.definition('classification').columns.values()}


def _compare(data_dir, workdir, methods, monkeypatch, folds=2, fake_training=False,
             **shared):
  """compare.run of the tiny methods over ``folds`` folds, seed 0; (results, run dirs
  trained, relative to ``workdir``). ``fake_training``: each run is recorded (config, data)
  as a real one is, and nothing trains."""
  trained = []

  def record(run, run_dir):
    trained.append(os.path.relpath(run_dir, workdir))
    return train.Trained(None, {}) if fake_training else REAL_TRAIN(run, run_dir)

  monkeypatch.setattr(train, 'train_and_evaluate', record)
  overrides = {'dataset.data_dir': data_dir, 'dataset.train_split': SPLIT, 'total_steps': '2',
               'eval_every': '2', 'checkpoint_every': '2', **shared}
  results = compare.run([compare.parse_method(m) for m in methods], overrides, [0],
                        str(workdir), folds=folds)
  return results, trained


def _csv(workdir) -> list[dict]:
  with open(os.path.join(workdir, 'results.csv'), newline='') as f:
    return list(csv.DictReader(f))


def test_each_fold_trains_once_and_holds_out_its_own_videos(data_dir, tmp_path, monkeypatch):
  method = METHODS[0]
  _, trained = _compare(data_dir, tmp_path, [method], monkeypatch)
  assert trained == [os.path.join('a', f'fold_{k}', 'seed0') for k in (0, 1)]
  rows = _csv(tmp_path)
  assert list(rows[0])[:8] == ['dataset', 'image_size', 'steps', 'method', 'variant', 'fold',
                               'seed', 'task']
  assert [(r['method'], r['fold'], r['seed']) for r in rows] == [('a', '0', '0'), ('a', '1', '0')]
  assert [float(r['num_videos']) for r in rows] == [8, 8]
  # Every video of the split is held out by exactly one fold.
  config = compare.method_config(compare.parse_method(method), {'dataset.data_dir': data_dir},
                                 0, str(tmp_path))
  builder = pipeline.get_builder(config.dataset)
  videos = sorted(ex['video_id'].decode() for ex in tfds.as_numpy(builder.as_dataset(SPLIT)))
  held_out = [json.loads((tmp_path / 'a' / f'fold_{k}' / 'seed0' / 'result.json').read_text())
              ['video_probs'] for k in (0, 1)]
  assert sorted([*held_out[0], *held_out[1]]) == videos  # Each once: no fold repeats one.
  assert (tmp_path / 'results.md').read_text().startswith(
      '2-fold cross-validation, seeds 0: mean ± std over the 2 (fold, seed) runs')
  before = (tmp_path / 'results.csv').read_text()
  _, trained = _compare(data_dir, tmp_path, [method], monkeypatch)
  assert trained == [] and (tmp_path / 'results.csv').read_text() == before
  _frame_sweep_scores_each_fold_on_its_held_out_videos(tmp_path / 'a', rows, config)


def _frame_sweep_scores_each_fold_on_its_held_out_videos(method_dir, rows, config):
  """frame_sweep of a --folds method: every fold's final checkpoint on its held-out videos,
  so at the training's frame count each row is the fold's comparison row."""
  most = config.input.max_frames
  unfinished = method_dir / 'fold_2' / 'seed0'  # A run compare has not scored yet.
  unfinished.mkdir(parents=True)
  shutil.copy(method_dir / 'fold_1' / 'seed0' / provenance.CONFIG_FILE, unfinished)
  swept = frame_sweep.run_folds(str(method_dir), [most, 1])
  assert [(r['fold'], r['seed'], r['frames']) for r in swept] == [
      (0, 0, 1), (0, 0, most), (1, 0, 1), (1, 0, most)]
  for fold, row in enumerate(rows):
    full = next(r for r in swept if r['fold'] == fold and r['frames'] == most)
    assert {k: str(full[k]) for k in ('dataset', 'image_size', 'steps', 'method')} == {
        k: row[k] for k in ('dataset', 'image_size', 'steps', 'method')}
    assert full['num_videos'] == float(row['num_videos']) == 8
    for key in ('accuracy', 'auc'):
      assert full[key] == pytest.approx(float(row[key]), abs=1e-9), (fold, key)
  with open(method_dir / 'frame_sweep' / 'frame_sweep.csv', newline='') as f:
    assert len(list(csv.DictReader(f))) == 4
  assert '| 1 frames |' in frame_sweep.table(swept)
  only_unfinished = method_dir.parent / 'c' / 'fold_0' / 'seed0'
  only_unfinished.mkdir(parents=True)
  shutil.copy(unfinished / provenance.CONFIG_FILE, only_unfinished)
  with pytest.raises(ConfigError, match='no finished fold_<k>/seed<s> run'):
    frame_sweep.run_folds(str(method_dir.parent / 'c'), [1])


def test_a_changed_override_reruns_only_that_methods_folds(data_dir, tmp_path, monkeypatch):
  """Training and scoring faked: which runs a rerun of the comparison trains again."""
  def fake_score(config, run_dir):
    del run_dir
    evaluation = types.SimpleNamespace(video_rows=list, paired_values=dict)
    return {config.model.name: evaluate.Report(METRICS, evaluation, '')}

  monkeypatch.setattr(cross_validation, 'score_fold', fake_score)
  methods = list(METHODS)
  runs = [os.path.join(m, f'fold_{k}', 'seed0') for m in 'ab' for k in (0, 1)]
  assert _compare(data_dir, tmp_path, methods, monkeypatch, fake_training=True)[1] == runs
  assert _compare(data_dir, tmp_path, methods, monkeypatch, fake_training=True)[1] == []
  methods[1] = methods[1].replace('=2', '=3')
  assert _compare(data_dir, tmp_path, methods, monkeypatch, fake_training=True)[1] == runs[2:]
  assert sorted(os.listdir(tmp_path / 'b' / 'fold_0')) == ['seed0', 'seed0.outdated']
  assert [(r['method'], r['fold']) for r in _csv(tmp_path)] == [
      ('a', '0'), ('a', '1'), ('b', '0'), ('b', '1')]


def test_bad_k_fold_settings_stop_before_anything_trains(data_dir, tmp_path, monkeypatch):
  with pytest.raises(ValueError, match="task.threshold_rule='youden'.*k-fold"):
    _compare(data_dir, tmp_path, METHODS[:1], monkeypatch,
             **{'task.threshold_rule': 'youden'})
  with pytest.raises(ValueError, match='frame_cnn.task.threshold_rule'):  # A stage's too.
    _compare(data_dir, tmp_path, ['a=configs/cnn_lstm.py:tiny'], monkeypatch,
             **{'frame_cnn.task.threshold_rule': 'sensitivity=0.9'})
  with pytest.raises(ValueError, match='at least 2'):
    _compare(data_dir, tmp_path, METHODS[:1], monkeypatch, folds=1)
  with pytest.raises(ValueError, match=r'names \{fold\}'):  # {fold} needs --folds.
    _compare(data_dir, tmp_path, ['a=configs/cnn_aver.py:tiny;init.checkpoint=x/{fold}'],
             monkeypatch, folds=0)
  assert os.listdir(tmp_path) == []


FOLD_VIDEOS = [['v0', 'v1', 'v2', 'v3'], ['v4', 'v5', 'v6', 'v7']]


def _labels(videos) -> list[int]:
  return [int(v[1:]) % 2 for v in videos]


def _fake_row(rng, videos) -> dict:
  """A fake row's result: {video: [p(class 1), label]} random, the label alternating."""
  probs = {v: [float(rng.uniform()), label] for v, label in zip(videos, _labels(videos))}
  return dict(METRICS, video_probs=probs, train_seconds=1.0, eval_frames_per_second=1.0)


def _probs(runs, videos) -> list[float]:
  """Each video's p(class 1) averaged over the runs that scored it."""
  return [np.mean([r['video_probs'][v][0] for r in runs if v in r['video_probs']])
          for v in videos]


def test_multi_row_runs_report_every_row_and_pair_by_fold_and_seed(tmp_path, monkeypatch):
  """Fake runs (no training): a two-stage run's rows are methods of their own, and the
  pooled test averages each video over seeds across every fold's held-out videos."""
  rng = np.random.default_rng(0)
  made = {}

  def fake_run_one(config, run_dir):
    videos = FOLD_VIDEOS[config.dataset.folds.index]
    made[os.path.relpath(run_dir, tmp_path)] = config.dataset.folds.num
    return dict(_fake_row(rng, videos), rows={'cnn_vote': _fake_row(rng, videos),
                                              'cnn_aver': _fake_row(rng, videos)})

  monkeypatch.setattr(compare, 'run_one', fake_run_one)
  results = compare.run([compare.parse_method('lstm=configs/cnn_lstm.py:tiny')], {}, [0, 1],
                        str(tmp_path), folds=2)
  assert list(results) == ['lstm', 'lstm/cnn_vote', 'lstm/cnn_aver']
  assert made == {f'lstm/fold_{k}/seed{s}': 2 for s in (0, 1) for k in (0, 1)}
  assert [(r['seed'], r['fold']) for r in results['lstm/cnn_aver']] == [
      (0, 0), (0, 1), (1, 0), (1, 1)]
  assert all('log_dir' not in r for r in results['lstm/cnn_vote'])
  assert results['lstm'][0]['log_dir'] == os.path.join('lstm', 'fold_0', 'seed0', 'lstm')
  rows = _csv(tmp_path)
  assert len(rows) == 12 and {r['method'] for r in rows} == set(results)

  paired = compare_report.paired_tests(results)  # Against 'lstm'.
  reference, method = results['lstm'], results['lstm/cnn_aver']
  run, videos = method[3], FOLD_VIDEOS[1]  # Seed 1, fold 1: paired with seed 1, fold 1 only.
  expected = statistics.paired_auc_bootstrap(_probs([run], videos),
                                              _probs([reference[3]], videos), _labels(videos))
  assert run['paired_auc_difference'] == pytest.approx(expected['difference'])
  videos = FOLD_VIDEOS[0] + FOLD_VIDEOS[1]  # Pooled: all 8, each averaged over the seeds.
  expected = statistics.paired_auc_bootstrap(_probs(method, videos),
                                              _probs(reference, videos), _labels(videos))
  assert paired['lstm/cnn_aver']['difference'] == pytest.approx(expected['difference'])
  assert paired['lstm/cnn_aver']['p'] == pytest.approx(expected['p'])

  # --reference: the tables against a row of a run go beside the default ones, unchanged.
  with open(os.path.join(tmp_path, 'results.csv')) as f:
    default_table = f.read()
  compare.run([compare.parse_method('lstm=configs/cnn_lstm.py:tiny')], {}, [0, 1],
              str(tmp_path), folds=2, reference='lstm/cnn_vote')
  with open(os.path.join(tmp_path, 'results.csv')) as f:
    assert f.read() == default_table
  with open(os.path.join(tmp_path, 'results_vs_lstm_cnn_vote.csv'), newline='') as f:
    against = list(csv.DictReader(f))
  assert {r['method'] for r in against if r['paired_auc_difference']} == {'lstm', 'lstm/cnn_aver'}
  with open(os.path.join(tmp_path, 'results_vs_lstm_cnn_vote.md')) as f:
    assert 'AUC against lstm/cnn_vote' in f.read()
