"""CLMAN: multi-meta attention against Eqs. 4-6 in NumPy, its degenerate average, padding
invariance of every aggregation, NT-Xent by hand (SimCLR's negatives), the contrastive views,
the classifiers' training frames (one random frame per segment, drawn anew every pass,
reproducible by seed and on resume; fixed centres in evaluation), and pretraining feeding
the classifier."""
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

import helpers
from configs import clman as clman_config
from input_pipeline import augment
from input_pipeline import pipeline
from input_pipeline import sequence_streams
from input_pipeline import view_pair_streams
from usvjax import losses
from usvjax import runners
from usvjax import tasks
from usvjax.core import checkpoint
from usvjax.errors import ConfigError
from usvjax.models import clman
from usvjax.studies import cross_validation
from usvjax.tasks.contrastive import ContrastiveTask


def test_multi_meta_attention_matches_equations_4_to_6():
  rng = np.random.default_rng(0)
  features = rng.standard_normal((2, 3, 4)).astype(np.float32)
  valid = np.ones((2, 3), bool)
  module = clman.MultiMetaAttention(layers=2)
  params = module.init(jax.random.key(0), features, valid)['params']
  e = features
  for i in range(2):  # Eq. 4: E_l = tanh(W_l E_{l-1} + b_l).
    e = np.tanh(e @ np.asarray(params[f'filter{i}']['kernel']) + np.asarray(params[f'filter{i}']['bias']))
  a = np.exp(e) / np.exp(e).sum(axis=1, keepdims=True)  # Eq. 5: softmax over frames t, per dim.
  expected = (a * features).sum(axis=1)                 # Eq. 6.
  pooled, frame_weights = module.apply({'params': params}, features, valid)
  np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(frame_weights, a.mean(axis=-1), rtol=1e-5)  # Shown per frame.


def test_equal_scores_give_the_average_of_the_valid_frames():
  features = jnp.arange(24.0).reshape(2, 3, 4)
  valid = jnp.array([[True, True, True], [True, True, False]])
  pooled, _ = clman.multi_meta_pool(features, jnp.full(features.shape, 0.7), valid)
  np.testing.assert_allclose(pooled[0], features[0].mean(axis=0), rtol=1e-6)
  np.testing.assert_allclose(pooled[1], features[1, :2].mean(axis=0), rtol=1e-6)


def test_a_small_temperature_takes_the_top_scored_frame_and_can_max_pool():
  rng = np.random.default_rng(2)
  features = rng.standard_normal((2, 5, 4)).astype(np.float32)
  valid = np.array([[True] * 5, [True] * 3 + [False] * 2])
  module = clman.MultiMetaAttention(layers=2, temperature=1e-4)
  params = module.init(jax.random.key(0), features, valid)['params']
  scores = features
  for i in range(2):
    scores = np.tanh(scores @ np.asarray(params[f'filter{i}']['kernel'])
                     + np.asarray(params[f'filter{i}']['bias']))
  scores = np.where(valid[..., None], scores, -np.inf)
  top = np.take_along_axis(features, scores.argmax(axis=1)[:, None], axis=1)[:, 0]
  np.testing.assert_allclose(module.apply({'params': params}, features, valid)[0], top,
                             atol=1e-4)
  # Identity filters: the scores rise with the features, so the pooling is max pooling.
  identity = {f'filter{i}': {'kernel': jnp.eye(4), 'bias': jnp.zeros(4)} for i in range(2)}
  expected = np.where(valid[..., None], features, -np.inf).max(axis=1)
  np.testing.assert_allclose(module.apply({'params': identity}, features, valid)[0], expected,
                             atol=1e-4)
  # The paper's temperature 1 cannot: tanh bounds the weights' ratio to e^2.
  paper = clman.MultiMetaAttention(layers=2).apply({'params': identity}, features, valid)[0]
  assert np.abs(paper - expected).max() > 0.1
  with pytest.raises(ConfigError, match='attention_temperature=0'):
    clman.MultiMetaAttention(temperature=0).apply({'params': identity}, features, valid)


@pytest.mark.parametrize('aggregation', [a for a in clman.AGGREGATIONS  # Others: below.
                                         if a not in ('external_attention', 'efficient_mhsa')])
def test_padding_never_changes_the_output(aggregation):
  model = clman.CLMAN(aggregation=aggregation, hidden=8)
  rng = np.random.default_rng(1)
  features = jnp.asarray(rng.standard_normal((1, 3, 8)), jnp.float32)
  alone = {'features': features, 'valid': jnp.ones((1, 3), bool)}
  garbage = 1e3 * rng.standard_normal((1, 5, 8)).astype(np.float32)  # LayerNorm-proof.
  padded = {'features': jnp.concatenate([features, garbage], axis=1),
            'valid': jnp.arange(8)[None] < 3}
  variables = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(alone)
  run = jax.jit(lambda batch: model.apply(variables, batch, train=False)['logits'])
  np.testing.assert_allclose(run(padded), run(alone), rtol=1e-5, atol=1e-6)
  # The classification loss trains every parameter of the aggregation and the classifier.
  grads = jax.jit(jax.grad(lambda p: -jax.nn.log_softmax(
      model.apply({'params': p}, padded, train=False)['logits'])[0, 1]))(variables['params'])
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    assert float(jnp.abs(grad).max()) > 0, jax.tree_util.keystr(path)


@pytest.mark.parametrize('aggregation, reduction', [
    ('external_attention', 2), ('efficient_mhsa', 1), ('efficient_mhsa', 3)])
def test_table3_attention_aggregators(aggregation, reduction):
  """Gradients reach every parameter; padding (of 1- and 4-frame videos) changes nothing;
  frame order matters only through the efficient MHSA's temporal reduction."""
  model = clman.CLMAN(aggregation=aggregation, memory_units=6, attention_heads=2,
                      attention_reduction=reduction)
  rng = np.random.default_rng(3)
  features = jnp.asarray(rng.standard_normal((2, 9, 8)), jnp.float32)
  valid = jnp.arange(9)[None] < jnp.array([[4], [1]])
  garbage = 1e3 * rng.standard_normal(features.shape).astype(np.float32)  # Not constant.
  padded = {'features': jnp.where(valid[..., None], features, garbage), 'valid': valid}
  params = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(padded)['params']
  run = jax.jit(lambda p, batch: model.apply({'params': p}, batch, train=False)['logits'])
  logits = run(params, padded)
  for i, n in enumerate((4, 1)):
    alone = {'features': features[i:i + 1, :n], 'valid': jnp.ones((1, n), bool)}
    np.testing.assert_allclose(run(params, alone)[0], logits[i], rtol=1e-5, atol=1e-5)
  weights = jnp.asarray(rng.standard_normal(logits.shape), jnp.float32)
  grads = jax.jit(jax.grad(lambda p: jnp.sum(weights * run(p, padded))))(params)
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    assert float(jnp.abs(grad).max()) > 0, jax.tree_util.keystr(path)
  reversed_ = dict(padded, features=padded['features'].at[0, :4].set(features[0, 3::-1]))
  moved = np.abs(run(params, reversed_)[0] - logits[0]).max()
  if aggregation == 'efficient_mhsa' and reduction > 1:
    assert moved > 1e-4
  else:
    assert moved < 1e-5


def test_nt_xent_by_hand():
  """Two examples, 2-d projections, tau = 1: view i's candidates are the three others, the
  other example's views negatives also when both come from one video (SimCLR; CLMAN Sec. 3.2:
  "negative samples composed of other images")."""
  z = np.array([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [-1.0, 0.0]]], np.float32)
  logits, positive = losses.nt_xent_logits(jnp.asarray(z), 1.0, jnp.ones(2, bool))
  per_example = losses.nt_xent(logits, positive, jnp.ones(2, bool))
  # Views in order a1=(1,0), b1=(1,0), a2=(0,1), b2=(-1,0); cosines between them:
  s = np.array([[1, 1, 0, -1], [1, 1, 0, -1], [0, 0, 1, 0], [-1, -1, 0, 1]], np.float32)
  positive = [2, 3, 0, 1]
  view = [-s[i, positive[i]] + np.log(sum(np.exp(s[i, k]) for k in range(4) if k != i))
          for i in range(4)]
  expected = [(view[0] + view[2]) / 2, (view[1] + view[3]) / 2]
  np.testing.assert_allclose(per_example, expected, rtol=1e-5)
  task = ContrastiveTask(ml_collections.ConfigDict({'temperature': 1.0}), 2)
  for videos in ([3, 4], [3, 3]):  # Two videos; one video: the same negatives.
    batch = {'valid': np.ones((2, 2), bool), 'video_hash': np.array(videos, np.int32)}
    loss, _ = task.loss({'projections': jnp.asarray(z)}, batch)
    np.testing.assert_allclose(loss, np.mean(expected), rtol=1e-5)


def _sequence_config(seed=0):
  config = clman_config.get_config('tiny')
  config.seed = seed
  config.input.update(max_frames=4, sampling='up_to')
  return config


def _drawn_frames(config, train, passes=4, num=40):
  """The frame numbers of each sequence ``items`` makes from ``passes`` passes over one
  video of ``num`` frames (frames are their numbers, still encoded)."""
  video = {'frames': tf.constant([str(i).encode() for i in range(num)]),
           'label': tf.constant(1, tf.int64), 'video_id': tf.constant(b'v')}
  videos = tf.data.Dataset.from_tensors(video).repeat(passes)
  return [[int(f) for f in item['frames'].numpy()]
          for item in sequence_streams.items(videos, config, train)]


def test_training_frames_are_drawn_anew_every_pass_and_reproducibly_by_seed():
  """Training: each pass over the video draws other frames, the same ones for the same run
  seed, others for another; evaluation: the segment centres, every pass."""
  drawn = _drawn_frames(_sequence_config(), train=True)
  assert len({tuple(d) for d in drawn}) == len(drawn) == 4
  assert _drawn_frames(_sequence_config(), train=True) == drawn
  assert _drawn_frames(_sequence_config(seed=1), train=True) != drawn
  assert _drawn_frames(_sequence_config(), train=False) == [[5, 15, 25, 35]] * 4


@pytest.mark.parametrize('num, count', [(40, 4), (7, 4), (30, 16), (16, 16), (5, 8)])
def test_each_training_frame_lies_in_its_own_segment(num, count):
  """Frame i of ``count`` lies in segment [i num / count, (i + 1) num / count); over many
  seeds every frame of a segment occurs (a uniform draw, not a fixed offset)."""
  seen = [set() for _ in range(count)]
  for seed in range(200):
    indices = sequence_streams.random_indices(num, count, tf.constant([seed, 7])).numpy()
    for i, index in enumerate(indices):
      assert math.floor(i * num / count) <= index <= math.ceil((i + 1) * num / count) - 1
      seen[i].add(int(index))
  for i in range(count):
    assert seen[i] == set(range(math.floor(i * num / count),
                                math.ceil((i + 1) * num / count)))
  # An offset that rounds up to 1 stays in its segment (8 / 4: segments of two frames).
  below_one = tf.fill([4], tf.constant(np.nextafter(1.0, 0.0), tf.float64))
  assert sequence_streams.segment_indices(8, 4, below_one).numpy().tolist() == [1, 3, 5, 7]


def test_resumed_classification_stream_equals_the_uninterrupted_one(data_dir):
  """The frame draws depend on the stream position only: a run resumed at step 2 sees the
  batches of the uninterrupted run, frames included."""
  config = helpers.load_config('clman', data_dir)
  builder, source = pipeline.get_builder(config.dataset), tasks.example_source(config)
  fresh = pipeline.train_batches(config, builder, source)
  expected = [next(fresh) for _ in range(3)][2]
  resumed = next(pipeline.train_batches(config, builder, source, start_step=2))
  for key in expected:
    np.testing.assert_array_equal(resumed[key], expected[key])


@pytest.mark.parametrize('positives', ['same_frame', 'same_video'])
def test_view_pairs_come_from_one_video(positives):
  video = {'frames': tf.constant([b'f0', b'f1', b'f2', b'f3']), 'video_id': tf.constant(b'v')}
  config = clman_config.get_config('tiny,pretrain').input
  config.unlock()
  config.update(positives=positives, max_frames=16)
  stream = view_pair_streams.view_pairs(video, tf.constant(3, tf.int64), config, 0)
  pairs = [p['frames'] for p in stream]
  assert len(pairs) == 16
  same = [a == b for a, b in (tuple(p.numpy()) for p in pairs)]
  assert all(same) if positives == 'same_frame' else not any(same)


def test_elastic_deformation_is_smooth_and_keeps_masks_binary():
  frames = tf.random.stateless_uniform([2, 32, 32, 1], [0, 1])
  masks = tf.cast(tf.random.stateless_uniform([2, 32, 32, 1], [0, 2]) > 0.5, tf.float32)
  same, same_masks = augment._elastic(frames, masks, tf.constant([1, 2]), 0.0)  # pylint: disable=protected-access
  np.testing.assert_allclose(same, frames, atol=1e-6)
  np.testing.assert_array_equal(same_masks, masks)
  warped, warped_masks = augment._elastic(frames, masks, tf.constant([1, 2]), 0.1)  # pylint: disable=protected-access
  assert not np.allclose(warped, frames)
  assert set(np.unique(warped_masks)) <= {0.0, 1.0}


def test_each_cross_validation_fold_pretrains_on_its_own_training_videos():
  """Issue 20's leak: one pretraining on every fold's videos initialised all folds. The
  pretraining has no dataset of its own; a fold's inherits the fold (which videos train)."""
  config = helpers.load_config('clman', '/data')
  assert 'dataset' not in config.pretrain and 'seed' not in config.pretrain
  for index in range(3):
    fold = cross_validation.fold_config(config, 3, index, seed=4)
    pretrain = runners.pretrain_config(fold)
    assert pretrain.dataset == fold.dataset and pretrain.seed == fold.seed
    assert (pretrain.dataset.folds.num, pretrain.dataset.folds.index) == (3, index)
    assert runners.finetune_config(fold, f'/runs/fold_{index}').init.checkpoint == (
        f'/runs/fold_{index}/pretrain')  # The fold's classifier starts from the fold's.


def test_pretraining_initialises_the_classifier(data_dir, tmp_path):
  """CLMAN's runner pretrains with the same trainer in <workdir>/pretrain, then trains the
  classifier from its extractor (the classifier's report is the classification one, tested
  with CNN_Aver in test_train); the pretraining run has a report of its own."""
  steps = {'total_steps': 2, 'eval_every': 2, 'checkpoint_every': 2}
  config = helpers.load_config('clman', data_dir, **steps, **{'optimizer.lr': 0.0})
  config.pretrain.update(steps)
  results = runners.get(config).train(config, str(tmp_path))
  assert list(results) == ['pretrain', 'clman']
  pretrained = results['pretrain']
  assert 0.0 <= pretrained['contrastive_accuracy'] <= 1.0 and np.isfinite(pretrained['nt_xent'])
  assert {'accuracy', 'ap', 'sensitivity', 'specificity', 'f1', 'auc'} <= set(results['clman'])
  ours = checkpoint.restore_latest_raw(str(tmp_path))['params']['encoder']
  theirs = checkpoint.restore_latest_raw(str(tmp_path / 'pretrain'))['params']['encoder']
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
    np.testing.assert_array_equal(a, b)  # lr 0: still the pretrained extractor.
  pretrain = runners.pretrain_config(config)
  report = runners.get(pretrain).evaluate(pretrain, str(tmp_path / 'pretrain'),
                                          pretrain.dataset.eval_split)['simclr']
  assert report.metrics['contrastive_accuracy'] == pretrained['contrastive_accuracy']
  assert os.path.exists(os.path.join(report.directory, 'metrics.json'))
  # What compare and frame_sweep score: the classifier initialised from this run's own
  # pretraining, wherever the command runs.
  row, headline, sub_dir = runners.get(config).headline(config, str(tmp_path))
  assert (row, sub_dir) == ('clman', '')
  assert headline.init.checkpoint == str(tmp_path / 'pretrain')
