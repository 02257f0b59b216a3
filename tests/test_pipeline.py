"""tf.data pipelines: clips, augmentation consistency, exact eval, buckets, resume, speckle."""
import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import helpers
from input_pipeline import augment
from input_pipeline import clip_streams
from input_pipeline import clips
from input_pipeline import pipeline
from input_pipeline import preprocess
from input_pipeline import sequence_streams
from input_pipeline import speckle
from usvjax.errors import ConfigError
from usvjax.tasks.video_keys import decode_key
from usvjax import tasks


@pytest.fixture(scope='module')
def seg_config(data_dir):
  return helpers.load_config('unet', data_dir)


@pytest.fixture(scope='module')
def builder(seg_config):
  return pipeline.get_builder(seg_config.dataset)


def _lengths(builder, split):
  return {ex['video_id'].decode(): len(ex['boxes'])
          for ex in tfds.as_numpy(builder.as_dataset(split=split))}


def test_clips_hold_the_target_last_and_clamp_at_the_start():
  frames = tf.constant([b'f0', b'f1', b'f2', b'f3'])
  video = {'frames': frames, 'masks': frames, 'boxes': tf.zeros([4, 4]), 'video_id': 'v'}
  examples = list(clip_streams.clips_of(video, 3).as_numpy_iterator())
  assert [list(c['frames']) for c in examples] == [
      [b'f0', b'f0', b'f0'], [b'f0', b'f0', b'f1'], [b'f0', b'f1', b'f2'], [b'f1', b'f2', b'f3']]
  assert [c['frame_index'] for c in examples] == [0, 1, 2, 3]


def _videos(num_frames: int) -> tf.data.Dataset:
  """Videos 'a' and 'b' whose frames are their names: b'a0', b'a1', ..."""
  frames = tf.constant([[f'{v}{t}'.encode() for t in range(num_frames)] for v in 'ab'])
  return tf.data.Dataset.from_tensor_slices(
      {'frames': frames, 'masks': frames, 'boxes': tf.zeros([2, num_frames, 4]),
       'video_id': tf.constant([b'a', b'b'])})


@pytest.mark.parametrize('model', ['flanet', 'dsanet', 'stpfnet'])
def test_training_clips_of_stpfnet_hold_distinct_frames_and_evaluation_every_frame(model):
  """STPFNet trains on clips of distinct frames (its memory frame is never the target);
  the others on a clip ending at every frame; evaluation scores every frame of every model."""
  config = helpers.load_config(model, '')
  length, num_frames = config.input.clip_length, 5
  source = clips.Clips()
  train = list(source.items(_videos(num_frames), config, train=True).as_numpy_iterator())
  distinct = [c for c in train if len(set(c['frames'])) == length]
  assert [(c['video_id'], c['frame_index']) for c in distinct] == [
      (v, t) for v in (b'a', b'b') for t in range(length - 1, num_frames)]
  assert len(train) == len(distinct) if model == 'stpfnet' else len(train) == 2 * num_frames
  if config.input.eval_protocol == 'clip':
    evaluated = source.items(_videos(num_frames), config, train=False).as_numpy_iterator()
    assert [c['frame_index'] for c in evaluated] == list(range(num_frames)) * 2


def test_an_unknown_train_clips_choice_names_its_key():
  config = helpers.load_config('stpfnet', '', **{'input.train_clips': 'distinct'})
  with pytest.raises(ConfigError, match=r"config.input.train_clips='distinct': use one of"):
    clips.distinct_clips(config, train=True)


def test_augmentation_is_identical_for_every_frame_and_its_mask(seg_config):
  mask = np.zeros((3, 32, 32, 1), np.float32)
  mask[:, 5:20, 8:28] = 1.0
  # Each frame is its mask (plus a frame-specific constant), so a geometric transform that
  # differed between frames or between frame and mask would break the equalities below.
  frames = mask + np.arange(3, dtype=np.float32)[:, None, None, None] * 0.01
  boxes = np.tile([[5 / 32, 8 / 32, 20 / 32, 28 / 32]], (3, 1)).astype(np.float32)
  cfg = seg_config.input.augment.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.update(brightness=0.0, contrast=0.0, speckle_prob=0.0, crop_scale=0.5)
  changed = 0
  for seed in range(8):
    out = augment.augment_clip({'frames': tf.constant(frames), 'masks': tf.constant(mask),
                                'boxes': tf.constant(boxes)}, tf.constant([seed, 1]), cfg)
    f, m = out['frames'].numpy(), out['masks'].numpy()
    for t in range(3):
      np.testing.assert_array_equal(m[t], m[0])
      np.testing.assert_allclose(f[t] - f[0], 0.01 * t * np.ones_like(f[t]), atol=1e-5)
      # Frames are resampled bilinearly, masks by nearest neighbour: they agree up to
      # boundary pixels.
      agree = (f[t] > 0.5) == (m[t] > 0.5)
      assert agree.mean() > 0.98
    ys, xs = np.nonzero(m[0, ..., 0])
    np.testing.assert_allclose(out['boxes'].numpy()[0],
                               [ys.min() / 32, xs.min() / 32, (ys.max() + 1) / 32,
                                (xs.max() + 1) / 32], atol=2 / 32)
    changed += not np.array_equal(m, mask)
  assert changed >= 4


def test_photometric_augmentation_is_shared_by_frames(seg_config):
  cfg = seg_config.input.augment.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.update(flip=False, crop_scale=1.0, brightness=0.2, contrast=0.3, speckle_prob=0.0)
  frames = tf.fill([3, 8, 8, 1], 0.5) + tf.reshape(tf.range(8, dtype=tf.float32), [1, 1, 8, 1]) / 40
  out = augment.augment_clip({'frames': frames}, tf.constant([3, 4]), cfg)['frames'].numpy()
  np.testing.assert_allclose(out[1], out[0], atol=1e-6)
  np.testing.assert_allclose(out[2], out[0], atol=1e-6)
  assert not np.allclose(out[0], frames.numpy()[0])


def test_tf_data_augments_bitwise_like_eager_tensorflow(seg_config):
  # A run is reproducible only if an example comes out the same every time. Grappler's
  # arithmetic optimizer regrouped the contrast change's float sums inside tf.data map
  # functions (for some calls only): the same example then differed in the last bit from
  # run to run. input_pipeline turns it off; eager TensorFlow is what the code says.
  cfg = seg_config.input.augment.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.update(flip=True, crop_scale=0.8, brightness=0.1, contrast=0.1, elastic_prob=0.5,
               speckle_prob=0.5)
  rng = np.random.default_rng(0)
  frames = tf.constant(rng.uniform(size=(8, 3, 96, 96, 1)).astype(np.float32))
  masks = tf.constant((rng.uniform(size=(8, 3, 96, 96, 1)) > 0.5).astype(np.float32))
  boxes = tf.constant(rng.uniform(size=(8, 3, 4)).astype(np.float32))

  def augmented(i):
    example = {'frames': frames[i], 'masks': masks[i], 'boxes': boxes[i]}
    return augment.augment_clip(example, tf.stack([7, tf.cast(i, tf.int32)]), cfg)
  in_tf_data = tf.data.Dataset.range(8).map(augmented, num_parallel_calls=2)
  for i, got in enumerate(in_tf_data.as_numpy_iterator()):
    want = augmented(tf.constant(i, tf.int64))
    for key, value in want.items():
      np.testing.assert_array_equal(got[key], value.numpy(), err_msg=f'example {i} {key}')


def test_eval_counts_every_frame_exactly_once(seg_config, builder):
  lengths = _lengths(builder, 'test')
  total = sum(lengths.values())
  config = seg_config.copy_and_resolve_references()
  config.input.eval_batch_size = 8
  assert total % 8  # The split is not a multiple of the batch size.
  batches, num_batches = pipeline.eval_batches(config, builder, tasks.example_source(config),
                                               'test')
  seen = []
  for batch in batches:
    assert batch['frames'].shape[0] == 8
    for i in np.flatnonzero(batch['valid'][:, -1]):
      seen.append((decode_key(batch['video_key'][i]), int(batch['frame_index'][i])))
  assert num_batches == -(-total // 8)
  assert len(seen) == len(set(seen)) == total
  assert {v: sum(1 for s in seen if s[0] == v) for v in lengths} == lengths


def test_classification_eval_is_exact_and_padded_to_buckets(data_dir, builder):
  config = helpers.load_config('cnn_aver', data_dir)
  config.input.eval_batch_size = 4
  batches, num_batches = pipeline.eval_batches(config, builder, tasks.example_source(config),
                                               'test')
  lengths = _lengths(builder, 'test')
  videos = {}
  for batch in batches:
    assert batch['valid'].shape[1] in config.input.length_buckets
    for i in np.flatnonzero(batch['valid'].any(axis=1)):
      videos[decode_key(batch['video_key'][i])] = int(batch['valid'][i].sum())
  assert num_batches == -(-len(lengths) // 4)
  assert videos == {v: min(n, config.input.max_frames) for v, n in lengths.items()}


@pytest.mark.parametrize('num,count,expected', [
    (9, 1, [4]),  # One frame: the middle one (Key_Frame).
    (5, 5, [0, 1, 2, 3, 4]),  # All frames.
    (10, 4, [1, 3, 6, 8]),  # Segment centres: the ends are not favoured.
    (3, 6, [0, 0, 1, 1, 2, 2]),  # 'exact' sampling of a short video repeats frames.
])
def test_uniform_sampling_takes_segment_centres(num, count, expected):
  assert sequence_streams.uniform_indices(num, count).numpy().tolist() == expected


def test_train_step_compiles_once_per_bucket(data_dir, builder):
  config = helpers.load_config('cnn_aver', data_dir, **{
      'input.max_frames': 8, 'input.length_buckets': (4, 6, 8), 'input.batch_size': 1})
  traces = []

  @jax.jit
  def step(frames, valid):
    traces.append(frames.shape)
    return (frames * valid[..., None, None, None]).sum()

  batches = pipeline.train_batches(config, builder, tasks.example_source(config))
  epoch = builder.info.splits['train'].num_examples * 3  # Three epochs.
  shapes = set()
  for _ in range(epoch):
    batch = next(batches)
    shapes.add(batch['frames'].shape[1])
    step(batch['frames'], batch['valid'])
  # Lengths 4..8 in the tiny data: several buckets occur, each compiled exactly once.
  assert len(shapes) >= 2 and shapes <= {4, 6, 8}
  assert len(traces) == len(shapes)


def test_resumed_stream_equals_the_uninterrupted_one(seg_config, builder):
  fresh = pipeline.train_batches(seg_config, builder, tasks.example_source(seg_config))
  expected = [next(fresh) for _ in range(5)][3:]
  resumed = pipeline.train_batches(seg_config, builder, tasks.example_source(seg_config),
                                   start_step=3)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_heatmap_peaks_at_the_box_centre():
  boxes = tf.constant([[0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.0, 0.0]])
  heat = preprocess.gaussian_heatmaps(boxes, 16, sigma=2.0).numpy()
  assert heat.shape == (2, 16, 16, 1)
  assert np.unravel_index(np.argmax(heat[0, ..., 0]), (16, 16)) in {(7, 11), (8, 12), (7, 12),
                                                                    (8, 11)}
  assert heat[0].max() == pytest.approx(np.exp(-0.25 / 8 * 2), rel=1e-3)
  assert heat[1].max() == 0.0


@pytest.mark.parametrize('looks', [5.0, 25.0])
def test_speckle_has_mean_one_and_variance_one_over_looks(looks):
  level = tf.fill([200, 200, 1], 0.05)  # Low enough that clipping at 1 never happens.
  noisy = speckle.add_speckle(level, looks, tf.constant([1, 2])).numpy() / 0.05
  assert noisy.mean() == pytest.approx(1.0, abs=0.01)
  assert noisy.var() == pytest.approx(1 / looks, rel=0.05)
  rgb = speckle.add_speckle(tf.fill([8, 8, 3], 0.05), looks, tf.constant([1, 2])).numpy()
  np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])  # One speckle field per pixel.
