"""The variable-frame CNN-LSTM: padding never changes a real step or the prediction; the
frame CNN's video rules; the two-stage run with its feature cache and cross-validation."""
import csv
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

import helpers
from configs import common
from input_pipeline import folds as folds_lib
from input_pipeline import pipeline
from usvjax.core import evaluate
from usvjax.errors import ConfigError
from usvjax.metrics import classification as classification_metrics
from usvjax.models import clman
from usvjax.models import cnn_lstm
from usvjax.models import frame_classifier
from usvjax.runners import two_stage
from usvjax.studies import cross_validation
from usvjax.studies import frame_sweep
from usvjax.tasks import classification


def test_padded_batch_equals_each_sequence_run_alone():
  rng = np.random.default_rng(0)
  lengths = [1, 4, 7]
  padded = np.zeros((3, 8, 5), np.float32)
  sequences = [rng.standard_normal((n, 5)).astype(np.float32) for n in lengths]
  for i, seq in enumerate(sequences):
    padded[i, :len(seq)] = seq
    padded[i, len(seq):] = 100.0  # Garbage in the padding must not matter.
  valid = np.arange(8)[None] < np.array(lengths)[:, None]
  model = cnn_lstm.CNNLSTM(num_classes=3, hidden=6)
  variables = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(
      {'features': padded, 'valid': valid})
  apply = jax.jit(lambda batch: model.apply(variables, batch, train=False))
  batch_out = apply({'features': padded, 'valid': valid})
  for i, seq in enumerate(sequences):
    alone = apply({'features': seq[None], 'valid': np.ones((1, len(seq)), bool)})
    n = len(seq)
    np.testing.assert_allclose(batch_out['frame_logits'][i, :n], alone['frame_logits'][0],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch_out['final_hidden'][i], alone['final_hidden'][0],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch_out['logits'][i], alone['logits'][0], rtol=1e-5, atol=1e-6)


def test_every_frame_and_their_order_change_the_video_and_every_parameter_trains():
  """Sec. 3.3's LSTM reads the frames in order: each frame's features change the video's
  logits, so does swapping the first two frames (an average of per-frame outputs without
  the recurrence would not), and the loss's gradient reaches every parameter."""
  rng = np.random.default_rng(4)
  sequence = rng.standard_normal((4, 5)).astype(np.float32)
  variants = [sequence, sequence[[1, 0, 2, 3]]] + [sequence.copy() for _ in range(4)]
  for t in range(4):
    variants[2 + t][t] += 1.0
  batch = {'features': np.stack(variants), 'valid': np.ones((len(variants), 4), bool)}
  model = cnn_lstm.CNNLSTM(num_classes=2, hidden=6)
  params = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(batch)['params']
  run = jax.jit(lambda p: model.apply({'params': p}, batch, train=False)['logits'])
  logits = np.asarray(run(params))
  change = np.abs(logits[1:] - logits[0]).max(axis=-1)  # Swapped, then frame 0, 1, 2, 3.
  assert (change > 1e-4).all(), change
  labels = np.arange(len(variants)) % 2
  grads = jax.jit(jax.grad(lambda p: -jnp.mean(jnp.take_along_axis(
      jax.nn.log_softmax(run(p)), labels[:, None], axis=1))))(params)
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    assert float(jnp.abs(grad).max()) > 0, jax.tree_util.keystr(path)


_PADDED_MODELS = {
    'cnn_aver_conv': (frame_classifier.FrameClassifier(width=4, levels=2), True),
    'cnn_vote_resnet18': (frame_classifier.FrameClassifier(
        backbone='resnet18', backbone_width=1 / 16, aggregation='vote'), True),
    'clman_table1_vanilla': (clman.CLMAN(backbone='resnet18', backbone_width=1 / 16,
                                         norm='batch', nonlocal_stages=()), False),
}


@pytest.mark.parametrize('name', _PADDED_MODELS)
def test_train_mode_batch_statistics_and_loss_ignore_padding(name):
  """Two videos (5 and 8 frames) padded to 8 or to 32 zero frames: one train step's loss
  and updated BatchNorm statistics are the same (BatchNorm never sees padding). The
  CNN-LSTM's frame CNN is the FrameClassifier (its LSTM trains on cached features)."""
  model, frame_loss = _PADDED_MODELS[name]
  task = classification.ClassificationTask(
      ml_collections.ConfigDict(dict(common.TASKS['classification'].task,
                                     frame_loss=frame_loss)), 2)
  frames = np.random.default_rng(0).uniform(size=(2, 8, 16, 16, 1)).astype(np.float32)
  lengths = np.array([5, 8])
  def batch(t):
    valid = np.arange(t)[None] < lengths[:, None]
    padded = np.zeros((2, t, 16, 16, 1), np.float32)
    padded[:, :8] = frames * valid[:, :8, None, None, None]
    return {'frames': padded, 'valid': valid, 'label': np.array([0, 1])}
  variables = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(batch(8))
  @jax.jit
  def step(batch):
    outputs, updated = model.apply(variables, batch, train=True, mutable=['batch_stats'])
    return task.loss(outputs, batch)[0], updated['batch_stats']
  (loss8, stats8), (loss32, stats32) = step(batch(8)), step(batch(32))
  np.testing.assert_allclose(loss32, loss8, rtol=1e-5)
  assert jax.tree.leaves(stats8)
  for a, b in zip(jax.tree.leaves(stats8), jax.tree.leaves(stats32), strict=True):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_video_probability_is_the_mean_of_the_real_frames_only():
  frame_logits = jnp.array([[[2.0, 0.0], [0.0, 2.0], [50.0, -50.0]]])
  valid = jnp.array([[True, True, False]])
  probs = jnp.exp(frame_classifier.average_frame_probabilities(frame_logits, valid))
  p = jax.nn.softmax(jnp.array([2.0, 0.0]))
  np.testing.assert_allclose(probs[0], (p + p[::-1]) / 2, rtol=1e-6)


def test_votes_count_real_frames_and_the_evaluation_calls_a_tie_malignant():
  """CNN_Vote on the evaluation's path: model -> task.eval_outputs -> evaluation metrics.
  The frame logits are the given features (no head, identity classifier)."""
  model = frame_classifier.FrameClassifier(aggregation='vote')
  features = jnp.array([[[0.0, 1.0], [0.0, 2.0], [3.0, 0.0], [9.0, 0.0]],   # 1 of 3 benign.
                        [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]],   # A 1:1 tie.
                        [[2.0, 0.0], [2.0, 1.0], [0.0, 1.0], [5.0, -5.0]]])  # 2 of 3 benign.
  batch = {'features': features, 'valid': jnp.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0]],
                                                    bool),
           'label': jnp.array([1, 1, 0]), 'video_key': jnp.zeros((3, 8), jnp.uint8)}
  params = {'classifier': {'kernel': jnp.eye(2), 'bias': jnp.zeros(2)}}
  task = classification.ClassificationTask(
      ml_collections.ConfigDict(dict(common.TASKS['classification'].task,
                                     frame_loss=True)), 3)
  evaluation = task.evaluator()
  evaluation.update(jax.device_get(task.eval_outputs(
      model.apply({'params': params}, batch, train=False), batch)))
  probs, _ = evaluation.arrays()
  np.testing.assert_allclose(probs, [[1 / 3, 2 / 3], [0.5, 0.5], [2 / 3, 1 / 3]], rtol=1e-6)
  assert classification_metrics.class_predictions(probs).tolist() == [1, 1, 0]
  assert evaluation.result()['accuracy'] == 1.0


def test_paper_frame_cnn_is_resnet18_then_three_fully_connected_layers():
  top = helpers.load_config('cnn_lstm', '')
  assert 'dataset' not in top.frame_cnn and 'seed' not in top.frame_cnn  # No second source.
  config = two_stage.frame_cnn_config(top)
  assert config.dataset == top.dataset and config.seed == top.seed
  config.model.update(backbone='resnet18', head=(256, 128))
  model = frame_classifier.FrameClassifier(**{k: v for k, v in config.model.items()
                                              if k != 'name'})
  batch = {'frames': jnp.zeros((1, 2, 224, 224, 3)), 'valid': jnp.ones((1, 2), bool)}
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False))
  dense = {name: variables['params'][name]['kernel'].shape
           for name in ('head_0', 'head_1', 'classifier')}
  assert dense == {'head_0': (512, 256), 'head_1': (256, 128), 'classifier': (128, 2)}
  out = jax.eval_shape(lambda v: model.apply(v, batch, train=False), variables)
  assert out['features'].shape == (1, 2, 512) and out['logits'].shape == (1, 2)


def _source_lengths(data_dir, split):
  builder = tfds.builder('usv_synthetic/variable', data_dir=data_dir)
  return {ex['video_id'].decode(): (len(ex['frames']), int(ex['label']))
          for ex in tfds.as_numpy(builder.as_dataset(split=split))}


def _train_losses(metrics_file):
  with open(metrics_file) as f:
    return [row['train/loss'] for row in map(json.loads, f) if 'train/loss' in row]


def _retrained_sweep_trains_an_equal_frame_lstm_per_count(config, run_dir, held_out):
  """Fig. 7: an LSTM trained on exactly n frames per video and scored on n, beside the
  run's own equal-frame LSTM, which stays as it was."""
  own = run_dir / 'lstm_equal' / 'checkpoints'
  mtime = os.path.getmtime(own)
  swept = frame_sweep.run(config, str(run_dir), [3], which='latest', retrain=True)
  assert [r['frames'] for r in swept] == [3] and swept[0]['num_videos'] == len(held_out)
  count_dir = run_dir / 'equal_frame_sweep' / 'frames_3'
  trained = frame_sweep.retrained_config(config, str(run_dir), 3)
  assert (trained.input.max_frames, trained.input.sampling) == (3, 'exact')
  assert trained.dataset.data_dir == str(run_dir / 'features')
  assert (count_dir / 'lstm_equal' / 'checkpoints' / str(config.total_steps)).is_dir()
  # Same seed and initialisation as the run's 12-frame LSTM, other inputs: another loss.
  losses = [_train_losses(d / 'metrics.jsonl') for d in (own.parent, count_dir / 'lstm_equal')]
  assert len(losses[1]) == len(losses[0]) > 0 and losses[1] != losses[0]
  with open(count_dir / 'per_video.csv', newline='') as f:
    assert {r['video_id']: int(r['num_frames']) for r in csv.DictReader(f)} == {
        v: 3 for v in held_out}
  assert os.path.getmtime(own) == mtime
  with pytest.raises(ConfigError, match='two-stage'):
    frame_sweep.retrained_config(config.frame_cnn, str(run_dir), 3)


def test_rows_scoring_one_checkpoint_store_their_temperatures_apart():
  """The frame CNN's folder holds three rows (vote, mean, key frame), each fitting its own
  temperature with --calibrate: one file each, the mean row's where the readers look."""
  stage_dirs = {'cnn_vote': 'frame_cnn', 'cnn_aver': 'frame_cnn', 'key_frame': 'frame_cnn',
                'equal_frame_lstm': 'lstm_equal', 'variable_frame_lstm': 'lstm'}
  stored = {(stage_dirs[row], two_stage.calibration_file(row)) for row in two_stage.ROWS}
  assert len(stored) == len(two_stage.ROWS)
  assert two_stage.calibration_file('cnn_aver') == evaluate.CALIBRATION_FILE


def test_a_two_stage_fold_trains_caches_and_scores_every_row(data_dir, tmp_path):
  """One fold of a 2-fold cross-validation, exactly as ``cross_validation.run`` runs it."""
  config = helpers.load_config('cnn_lstm', data_dir, total_steps=2, eval_every=2,
                               checkpoint_every=2,
                               **{'dataset.train_split': 'train+validation',
                                  'dataset.folds.num': 2, 'dataset.folds.index': 0,
                                  'frame_cnn.total_steps': 2, 'frame_cnn.eval_every': 2,
                                  'frame_cnn.checkpoint_every': 2})
  reports = cross_validation.fold_reports(config, str(tmp_path))
  assert list(reports) == list(two_stage.ROWS)
  # Every row scores exactly the held-out fold's videos, with its own frames per video.
  source = {**_source_lengths(data_dir, 'train'), **_source_lengths(data_dir, 'validation')}
  builder = pipeline.get_builder(config.dataset)
  folds = folds_lib.fold_assignment(builder, 'train+validation', 2, 0)
  held_out = {v for v, fold in folds.items() if fold == 0}
  frames = {row: {r['video_id']: r['num_frames'] for r in report.evaluation.video_rows()}
            for row, report in reports.items()}
  for row, per_video in frames.items():
    assert set(per_video) == held_out, row
  assert set(frames['key_frame'].values()) == {1}
  assert set(frames['equal_frame_lstm'].values()) == {config.equal_frames}
  assert frames['variable_frame_lstm'] == {v: min(source[v][0], 30) for v in held_out}
  assert os.path.exists(tmp_path / 'held_out' / 'cnn_vote' / 'roc.png')
  # The cache: every video of every split, its length and label, from the frame CNN's
  # final checkpoint (trained without the held-out fold).
  cache_dir = tmp_path / 'features'
  info = json.loads((cache_dir / 'cache.json').read_text())
  assert info['source']['step'] == 2 and info['dim'] == 16
  cache = tfds.builder('usv_features', data_dir=str(cache_dir))
  cached = {ex['video_id'].decode(): (len(ex['features']), int(ex['label']))
            for ex in tfds.as_numpy(cache.as_dataset(split='train'))}
  assert cached == _source_lengths(data_dir, 'train')
  # frame_sweep reads the headline row's cache from the run, wherever the command runs.
  swept = frame_sweep.run(config, str(tmp_path), [2], which='latest')
  assert swept[0]['num_videos'] == len(held_out)
  _retrained_sweep_trains_an_equal_frame_lstm_per_count(config, tmp_path, held_out)
  # A second run resumes every stage and keeps the cache.
  mtime = os.path.getmtime(cache_dir / 'cache.json')
  two_stage.train_and_evaluate(config, str(tmp_path), which='latest')
  assert os.path.getmtime(cache_dir / 'cache.json') == mtime
