"""Sparse annotations in the clip pipeline, the losses and the evaluation outputs: only
annotated frames are targets of a loss or scored, unannotated ones still feed the clips."""
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

import helpers
from input_pipeline import clip_streams
from input_pipeline import clips
from usvjax.loss_terms import auxiliary_frames
from usvjax.loss_terms import flanet as flanet_terms
from usvjax.tasks.segmentation import SegmentationTask

# Frames 0, 4 and 7 of an 8-frame video are traced.
ANNOTATED = [True, False, False, False, True, False, False, True]


def _video(annotated=ANNOTATED, name=b'v'):
  frames = tf.constant([b'f%d' % t for t in range(len(annotated))])
  return {'frames': frames, 'masks': frames, 'boxes': tf.zeros([len(annotated), 4]),
          'video_id': tf.constant(name), 'annotated': tf.constant(annotated)}


def _frames(example) -> list[int]:
  return [int(f[1:]) for f in example['frames']]


def _train_clips(video, length, distinct, unannotated_too=False, seed=(0, 0)):
  ds = clip_streams.clips_of(video, length, distinct, train=True,
                             unannotated_too=unannotated_too, seed=tf.constant(seed, tf.int32))
  return list(ds.as_numpy_iterator())


def test_every_frame_training_targets_are_the_annotated_frames_with_any_context():
  examples = _train_clips(_video(), 3, distinct=False)
  assert [e['frame_index'] for e in examples] == [0, 4, 7]
  assert [_frames(e) for e in examples] == [[0, 0, 0], [2, 3, 4], [5, 6, 7]]
  assert [list(e['annotated']) for e in examples] == [
      [True] * 3, [False, False, True], [False, False, True]]


def test_distinct_clips_start_and_end_on_annotated_frames_with_the_gap_spread_evenly():
  examples = _train_clips(_video(), 3, distinct=True)
  # Target 4: the latest annotated frame <= 2 is 0; target 7: <= 5 is 4 (4, 5.5 -> 6, 7).
  assert [(e['frame_index'], _frames(e)) for e in examples] == [(4, [0, 2, 4]), (7, [4, 6, 7])]
  assert all(e['annotated'][0] and e['annotated'][-1] for e in examples)


def test_dense_videos_keep_the_clips_of_consecutive_frames():
  dense = _video([True] * 5)
  assert [_frames(e) for e in _train_clips(dense, 3, distinct=True)] == [
      [0, 1, 2], [1, 2, 3], [2, 3, 4]]
  assert [_frames(e) for e in _train_clips(dense, 3, distinct=False)] == [
      [0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4]]
  without_flags = {k: v for k, v in dense.items() if k != 'annotated'}
  assert [_frames(e) for e in _train_clips(without_flags, 3, distinct=False)] == [
      [0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4]]


def test_the_mean_teacher_stream_adds_as_many_unannotated_targets_drawn_per_pass():
  drawn = []
  for seed in [(0, 0), (0, 1), (0, 2), (0, 0)]:
    examples = _train_clips(_video(), 3, distinct=False, unannotated_too=True, seed=seed)
    targets = [int(e['frame_index']) for e in examples]
    assert targets[:3] == [0, 4, 7] and len(targets) == 6
    assert not any(ANNOTATED[t] for t in targets[3:]) and len(set(targets)) == 6
    drawn.append(sorted(targets[3:]))
  assert drawn[0] == drawn[3]  # Seeded: the same pass draws the same frames.
  assert len({tuple(d) for d in drawn[:3]}) > 1  # Other passes draw others.


def test_evaluation_makes_every_frame_a_target_and_whole_videos_start_at_the_first_trace():
  config = helpers.load_config('unet', '')
  evaluated = list(clip_streams.clips_of(_video(), 3).as_numpy_iterator())
  assert [e['frame_index'] for e in evaluated] == list(range(8))
  late = _video([False, False, True, False, True])
  whole = clip_streams.from_first_annotated({k: v for k, v in late.items()})
  assert int(whole['frame_offset']) == 2 and list(whole['frames'].numpy()) == [b'f2', b'f3', b'f4']
  assert list(whole['annotated'].numpy()) == [True, False, True]
  assert 'annotated' in clips.Clips().fields(config, True, None)


def _batch(masks, annotated, valid=None):
  """A batch of clips of [B, T, 8, 8, 1] ``masks`` with per-frame flags."""
  masks = jnp.asarray(masks, jnp.float32)
  annotated = jnp.asarray(annotated)
  valid = jnp.ones(annotated.shape, bool) if valid is None else jnp.asarray(valid)
  return {'masks': masks, 'annotated': annotated, 'valid': valid,
          'video_hash': jnp.arange(masks.shape[0], dtype=jnp.int32)}


def _task():
  return SegmentationTask(helpers.load_config('unet', '').task, 2)


def test_an_unannotated_targets_hidden_mask_changes_no_loss_and_all_unannotated_adds_zero():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 8, 8, 1)), jnp.float32)
  masks = (rng.uniform(size=(2, 3, 8, 8, 1)) > 0.5).astype(np.float32)
  annotated = [[True, True, True], [True, True, False]]
  loss, _ = _task().loss({'logits': logits}, _batch(masks, annotated))
  hidden = masks.copy()
  hidden[1, -1] = 1 - hidden[1, -1]  # Example 1's target is unannotated.
  assert float(_task().loss({'logits': logits}, _batch(hidden, annotated))[0]) == float(loss)
  alone, _ = _task().loss({'logits': logits[:1]}, _batch(masks[:1], annotated[:1]))
  np.testing.assert_allclose(float(loss), float(alone), rtol=1e-6)  # Normalised by 1 frame.
  none, parts = _task().loss({'logits': logits}, _batch(masks, [[True, True, False]] * 2))
  assert float(none) == 0.0 and np.isfinite(float(parts['dice']))


def test_auxiliary_and_heatmap_terms_skip_unannotated_frames():
  rng = np.random.default_rng(1)
  config = helpers.load_config('dsanet', '').task
  term = auxiliary_frames.AuxiliaryFrames(config, 1.0)
  outputs = {'aux_logits': jnp.asarray(rng.normal(size=(2, 2, 8, 8, 1)), jnp.float32)}
  masks = (rng.uniform(size=(2, 3, 8, 8, 1)) > 0.5).astype(np.float32)
  annotated = [[False, True, True], [True, False, True]]  # Example 1's frame t-1 is not.
  value, _ = term(outputs, _batch(masks, annotated))
  hidden = masks.copy()
  hidden[0, 0], hidden[1, 1] = 1 - hidden[0, 0], 1 - hidden[1, 1]
  assert float(term(outputs, _batch(hidden, annotated))[0]) == float(value)
  changed = masks.copy()
  changed[0, 1] = 1 - changed[0, 1]  # An annotated auxiliary frame does count.
  assert float(term(outputs, _batch(changed, annotated))[0]) != float(value)
  heat = flanet_terms.HeatmapMSE(1.0)
  batch = dict(_batch(masks, annotated=[[True, True, False], [True, True, True]]),
               heatmaps=jnp.asarray(rng.uniform(size=(2, 3, 8, 8, 1)), jnp.float32))
  heatmap = jnp.asarray(rng.uniform(size=(2, 8, 8, 1)), jnp.float32)
  _, parts = heat({'heatmap': heatmap}, batch)
  expected = float(jnp.mean((heatmap[1] - batch['heatmaps'][1, -1]) ** 2))
  np.testing.assert_allclose(float(parts['heatmap_mse']), expected, rtol=1e-6)


def test_evaluation_outputs_score_only_annotated_targets():
  masks = np.zeros((3, 3, 8, 8, 1), np.float32)
  batch = dict(_batch(masks, [[True, False, True], [True, True, False], [False] * 3],
                      valid=[[True] * 3, [True] * 3, [True, True, False]]),
               frame_index=jnp.arange(3), video_key=jnp.zeros((3, 4), jnp.uint8))
  out = _task().eval_outputs({'logits': jnp.zeros((3, 8, 8, 1))}, batch)
  assert out['valid'].tolist() == [True, False, False]


@pytest.mark.parametrize('protocol', ['clip', 'first_frame'])
def test_the_batch_spec_carries_the_flags(protocol):
  config = helpers.load_config('stpfnet', '', **{'input.eval_protocol': protocol})
  fields = clips.Clips().fields(config, False, None)
  assert fields['annotated'].time and fields['annotated'].dtype == bool
  assert ('frame_offset' in fields) == (protocol == 'first_frame')
