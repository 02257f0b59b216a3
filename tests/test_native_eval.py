"""Segmentation scored at the frames' own size: the stored masks by (video, frame), exact
under any batching; bootstrap intervals over videos; overlays of the best, median and worst
videos; exported masks (tests/test_native_eval_studies.py: the studies and the pipeline)."""
import types

import cv2
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import preprocess
from input_pipeline import spec
from usvjax.reporting import plots
from usvjax.tasks import segmentation_evaluation


class StoredVideos:
  """A dataset builder holding ``videos`` {id: (frames uint8 [T, H, W, 1], masks [T, H, W],
  pixel spacing or None)}, encoded as TFDS stores them."""

  def __init__(self, videos, frame_names=False, hard=None):
    self.videos, self.frame_names, self.hard = videos, frame_names, hard
    self.spacing = any(spacing is not None for *_, spacing in videos.values())
    features = {'frames': types.SimpleNamespace(shape=(None, None, None, 1)), 'masks': None,
                'video_id': None}
    self.info = types.SimpleNamespace(features=features, full_name='stored_videos/1.0.0')

  def as_dataset(self, split, decoders, shuffle_files):
    assert split == 'test' and set(decoders) == {'frames', 'masks'} and not shuffle_files
    signature = {'frames': tf.TensorSpec([None], tf.string),
                 'masks': tf.TensorSpec([None], tf.string),
                 'video_id': tf.TensorSpec([], tf.string)}
    if self.spacing:
      signature['pixel_spacing_mm'] = tf.TensorSpec([2], tf.float32)
    if self.frame_names:
      signature['frame_names'] = tf.TensorSpec([None], tf.string)
    if self.hard:
      signature['hard_frame'] = tf.TensorSpec([None], tf.bool)

    def generate():
      for video_id, (frames, masks, spacing) in self.videos.items():
        out = {'frames': [cv2.imencode('.png', f)[1].tobytes() for f in frames],
               'masks': [cv2.imencode('.png', m.astype(np.uint8))[1].tobytes() for m in masks],
               'video_id': video_id}
        if self.spacing:
          out['pixel_spacing_mm'] = np.float32(spacing or (0, 0))
        if self.frame_names:
          out['frame_names'] = [f'img_{video_id}_{t}.jpg' for t in range(len(frames))]
        if self.hard:
          out['hard_frame'] = self.hard[video_id]
        yield out
    return tf.data.Dataset.from_generator(generate, output_signature=signature)


def _config(resolution='native', overlay_videos=3, image_size=8):
  return ml_collections.ConfigDict(dict(
      input=dict(eval_resolution=resolution, overlay_videos=overlay_videos,
                 image_size=image_size, channels=1),
      dataset=dict(folds=dict(num=0), train_split='train')))


def _evaluation(builder, resolution='native', overlay_videos=3, image_size=8):
  evaluation = segmentation_evaluation.SegmentationEvaluation(threshold=0.5)
  evaluation.use_split(_config(resolution, overlay_videos, image_size), builder, 'test')
  return evaluation


def _key(video_id):
  raw = np.frombuffer(video_id.encode(), np.uint8)
  return np.pad(raw, (0, spec.VIDEO_KEY_BYTES - len(raw)))


def _model_masks(masks, size):
  """The masks a batch carries: the stored ones resized as the input pipeline does."""
  return preprocess.resize(tf.constant(masks[..., None]), size, 'nearest').numpy()[..., 0]


def _outputs(examples, batch_size):
  """Batches of eval outputs of ``examples`` [(video, index, prob, model mask)], the last
  padded with invalid rows."""
  for start in range(0, len(examples), batch_size):
    chunk = examples[start:start + batch_size]
    pad = batch_size - len(chunk)
    size = chunk[0][2].shape
    yield {'probs': np.stack([c[2] for c in chunk] + [np.zeros(size, np.float32)] * pad),
           'masks': np.stack([c[3] for c in chunk] + [np.zeros(size, np.float32)] * pad),
           'valid': np.array([True] * len(chunk) + [False] * pad),
           'frame_index': np.array([c[1] for c in chunk] + [0] * pad, np.int32),
           'video_key': np.stack([_key(c[0]) for c in chunk] + [_key('')] * pad)}


def _thin_line_frame():
  """A model-size probability (8x8) whose bilinear upsampling to 16x16, thresholded at 0.5,
  is a line one pixel wide (column 6): the stored mask, which the nearest-neighbour resize
  to 8x8 of the input pipeline loses (it samples the odd columns)."""
  prob = np.zeros((8, 8), np.float32)
  prob[:, :3] = 0.4
  prob[:, 3] = 0.6
  mask = cv2.resize(prob, (16, 16), interpolation=cv2.INTER_LINEAR) > 0.5
  return prob, mask


def test_a_thin_structure_lost_by_resizing_scores_differently_at_the_two_resolutions():
  prob, mask = _thin_line_frame()
  assert mask.sum() == 16 and mask[:, 6].all()  # The premise: a one-pixel line.
  model_mask = _model_masks(mask[None].astype(np.uint8), 8)[0]
  assert not model_mask.any()
  frames = np.zeros((1, 16, 16, 1), np.uint8)
  builder = StoredVideos({'v': (frames, mask[None], None)})
  examples = [('v', 0, prob, model_mask)]
  results = {}
  for resolution in ('native', 'model'):
    evaluation = _evaluation(builder, resolution)
    for batch in _outputs(examples, 2):
      evaluation.update(batch)
    results[resolution] = evaluation.result()
  assert results['native']['mean_dice'] == 1.0 and results['native']['hd95'] == 0.0
  # At the model's size the line is gone from the mask while the prediction keeps it.
  assert results['model']['mean_dice'] == 0.0
  assert results['model']['hd95'] == pytest.approx(8 * 2 ** 0.5)  # Penalty: the diagonal.
  assert results['model']['distance_penalised_frames'] == 1


def test_native_dice_and_distances_of_an_upsampled_prediction_by_hand():
  # One 4x4 model pixel at 1: upsampled bilinearly to 8x8, the values along an axis are
  # 0.25, 0.75, 0.75, 0.25 around it, so the 2x2 block rows/cols 2-3 passes 0.5.
  prob = np.zeros((4, 4), np.float32)
  prob[1, 1] = 1.0
  mask = np.zeros((8, 8), bool)
  mask[2:6, 2:6] = True  # 16 pixels, holding the 4 predicted ones.
  builder = StoredVideos({'v': (np.zeros((1, 8, 8, 1), np.uint8), mask[None], (0.5, 0.5))})
  evaluation = _evaluation(builder, image_size=4)
  evaluation.update(next(_outputs([('v', 0, prob, np.zeros((4, 4)))], 1)))
  result = evaluation.result()
  assert result['mean_dice'] == pytest.approx(2 * 4 / (4 + 16))
  assert result['mean_iou'] == pytest.approx(4 / 16)
  # Surface distances: the 2x2 block's border to the 4x4 ring: 0, 0, 0, 1; the ring's 12
  # pixels to the block: 0 x3, 1 x2, 2 x4, sqrt(5) x2, sqrt(8). 95th percentile of the 16
  # (numpy's linear rule): position 14.25 between sqrt(5) and sqrt(8).
  distances = sorted([0, 0, 0, 1] + [0] * 3 + [1] * 2 + [2] * 4 + [5 ** 0.5] * 2 + [8 ** 0.5])
  assert result['assd'] == pytest.approx(np.mean(distances))
  assert result['hd95_pooled'] == pytest.approx(5 ** 0.5 + 0.25 * (8 ** 0.5 - 5 ** 0.5))
  assert result['hd95_mm'] == pytest.approx(0.5 * result['hd95'])
  assert result['assd_mm'] == pytest.approx(0.5 * result['assd'])


def _random_split(rng, num_videos=5, size=12, model_size=6):
  videos, examples = {}, []
  for v in range(num_videos):
    length = int(rng.integers(1, 5))
    masks = np.zeros((length, size, size), np.uint8)
    for t in range(length):
      y, x = rng.integers(0, size - 4, 2)
      masks[t, y:y + rng.integers(2, 5), x:x + rng.integers(2, 5)] = 1
    frames = rng.integers(0, 255, (length, size, size, 1), dtype=np.uint8)
    videos[f'video{v}'] = (frames, masks, None)
    model = _model_masks(masks, model_size)
    for t in range(length):
      prob = np.clip(model[t] * (0.3 + 0.1 * v) + rng.uniform(0, 0.6, model[t].shape), 0, 1)
      examples.append((f'video{v}', t, prob.astype(np.float32), model[t]))
  return videos, examples


@pytest.mark.parametrize('resolution', ['native', 'model'])
def test_every_frame_is_scored_once_whatever_the_batching_and_order(resolution):
  rng = np.random.default_rng(0)
  videos, examples = _random_split(rng)
  builder = StoredVideos(videos)
  reference = None
  for batch_size, order in ((1, None), (4, rng.permutation(len(examples))), (32, None)):
    evaluation = _evaluation(builder, resolution, image_size=6)
    shuffled = examples if order is None else [examples[i] for i in order]
    for batch in _outputs(shuffled, batch_size):
      evaluation.update(batch)
    result = evaluation.result()
    rows = {r.pop('video_id'): r for r in evaluation.video_rows()}
    if reference is None:
      reference = result, rows
      assert result['scored_frames'] == len(examples)
      continue
    assert result == pytest.approx(reference[0], nan_ok=True)
    assert rows.keys() == reference[1].keys()
    for video, row in rows.items():
      assert row == pytest.approx(reference[1][video], nan_ok=True)


def test_native_scores_need_the_frame_in_the_stored_split():
  mask = np.zeros((1, 4, 4), np.uint8)
  evaluation = _evaluation(StoredVideos({'v': (np.zeros((1, 4, 4, 1), np.uint8), mask, None)}))
  with pytest.raises(ValueError, match="video 'w' was evaluated but is not in split 'test'"):
    evaluation.update(next(_outputs([('w', 0, np.zeros((8, 8), np.float32), mask[0])], 1)))
  with pytest.raises(ValueError, match="frame 3 of video 'v' was evaluated; the video has 1"):
    evaluation.update(next(_outputs([('v', 3, np.zeros((8, 8), np.float32), mask[0])], 1)))
  with pytest.raises(ValueError, match="eval_resolution='full'"):
    _evaluation(StoredVideos({}), 'full')


def test_overlays_show_the_best_median_and_worst_videos_with_each_frames_dice(
    tmp_path, monkeypatch):
  rng = np.random.default_rng(1)
  videos, examples = _random_split(rng, num_videos=5)
  evaluation = _evaluation(StoredVideos(videos, frame_names=True), image_size=6)
  for batch in _outputs(examples, 8):
    evaluation.update(batch)
  dice = {r['video_id']: r['dice'] for r in evaluation.video_rows()}
  ranked = sorted(dice, key=lambda v: -dice[v])
  drawn = []
  figure = plots.overlay_figure

  def recording(title, panels):
    drawn.append((title, panels))
    return figure(title, panels)
  monkeypatch.setattr(plots, 'overlay_figure', recording)
  evaluation.write_report(str(tmp_path), {'scored_frames': len(examples)})
  expected = {'best': ranked[0], 'median': ranked[2], 'worst': ranked[4]}
  written = sorted(p.name for p in tmp_path.glob('overlay_*.png'))
  assert written == sorted(f'overlay_{tag}_{video}.png' for tag, video in expected.items())
  for (title, panels), (tag, video) in zip(drawn, expected.items()):
    assert title.startswith(f'{tag}: {video}, Dice {dice[video]:.3f}')
    frames, masks, _ = videos[video]
    assert len(panels) == len(frames)  # Short videos: every frame.
    for t, (frame, truth, _, caption) in enumerate(panels):
      assert frame.shape == frames[t].shape  # The stored frame, at its own size.
      np.testing.assert_array_equal(truth, masks[t])
      row = next(r for r in evaluation.rows if (r['video_id'], r['frame_index']) == (video, t))
      assert caption == f'img_{video}_{t}.jpg (frame {t}): Dice {row["dice"]:.3f}'
  image = cv2.imread(str(tmp_path / written[0]))[..., ::-1]
  for colour in (plots.GROUND_TRUTH_RGB, plots.PREDICTION_RGB):  # The legend's patches.
    assert (np.abs(image.astype(int) - colour).sum(-1) < 30).sum() > 50
  assert list(evaluation.pictures()) == ['best', 'median', 'worst']


@pytest.mark.parametrize('videos, shown, expected', [
    (5, 3, {0: 'best', 2: 'median', 4: 'worst'}),
    (4, 3, {0: 'best', 2: 'median', 3: 'worst'}),
    (7, 4, {0: 'best', 2: 'rank3', 4: 'rank5', 6: 'worst'}),
    (2, 3, {0: 'best', 1: 'worst'}),
    (6, 1, {0: 'best'}),
])
def test_shown_videos_spread_over_the_ranking(videos, shown, expected):
  assert segmentation_evaluation.ranked_positions(videos, shown) == expected


def test_export_writes_native_masks_named_after_the_frames(tmp_path):
  prob, mask = _thin_line_frame()
  frames = np.zeros((2, 16, 16, 1), np.uint8)
  builder = StoredVideos({'a/b': (frames, np.stack([mask, mask]), None)}, frame_names=True)
  evaluation = _evaluation(builder)
  for batch in _outputs([('a/b', 1, prob, mask[::2, ::2]), ('a/b', 0, 1 - prob, mask[::2, ::2])],
                        2):
    evaluation.update(batch)
  paths = evaluation.export(str(tmp_path))
  folder = tmp_path / 'predicted_masks' / 'a_b'
  assert sorted(paths) == [str(folder / 'img_a_b_0.png'), str(folder / 'img_a_b_1.png')]
  written = cv2.imread(str(folder / 'img_a_b_1.png'), cv2.IMREAD_UNCHANGED)
  assert written.shape == (16, 16) and set(np.unique(written)) == {0, 255}
  np.testing.assert_array_equal(written > 0, mask)
  inverse = cv2.imread(str(folder / 'img_a_b_0.png'), cv2.IMREAD_UNCHANGED)
  expected = cv2.resize(1 - prob, (16, 16), interpolation=cv2.INTER_LINEAR) > 0.5
  np.testing.assert_array_equal(inverse > 0, expected)


def test_report_holds_bootstrap_intervals_over_videos(tmp_path):
  # Video a: 10 perfect frames; video b: 1 frame predicted 2 pixels to the right of its
  # lesion (Dice 0, HD95 2). Resampling the two videos gives Dice 1 (a, a), 0 (b, b) or
  # 10/11: the interval spans [0, 1] (frames resampled as if independent would give a
  # narrow one around 10/11), and HD95 spans [0, 2].
  truth = np.zeros((6, 6), np.uint8)
  truth[1:3, 1:3] = 1
  hit, miss = truth.astype(np.float32), np.roll(truth, 2, axis=1).astype(np.float32)
  videos = {'a': (np.zeros((10, 6, 6, 1), np.uint8), np.stack([truth] * 10), None),
            'b': (np.zeros((1, 6, 6, 1), np.uint8), truth[None], None)}
  evaluation = _evaluation(StoredVideos(videos), image_size=6)
  examples = [('a', t, hit, truth) for t in range(10)] + [('b', 0, miss, truth)]
  for batch in _outputs(examples, 4):
    evaluation.update(batch)
  metrics = evaluation.result()
  assert metrics['mean_dice'] == pytest.approx(10 / 11)
  assert metrics['hd95'] == pytest.approx(2 / 11)
  intervals = evaluation.metrics.confidence_intervals()
  assert intervals['mean_dice_ci95'] == [0.0, 1.0]
  assert intervals['hd95_ci95'] == [0.0, 2.0]
  assert 'hd95_mm_ci95' not in intervals  # No pixel spacing stored.
  evaluation.write_report(str(tmp_path), dict(metrics))
  written = (tmp_path / 'metrics.json').read_text()
  assert '"mean_dice_ci95": [\n    0.0,\n    1.0\n  ]' in written
  assert '"eval_resolution": "native"' in written


def test_a_split_is_read_once_per_builder_however_often_it_is_evaluated():
  frames, masks = np.zeros((2, 4, 4, 1), np.uint8), np.zeros((2, 4, 4), bool)
  builder = StoredVideos({'a': (frames, masks, None)})
  reads = []
  as_dataset = builder.as_dataset
  builder.as_dataset = lambda *args, **kwargs: reads.append(1) or as_dataset(*args, **kwargs)
  first, second = _evaluation(builder), _evaluation(builder)
  assert first.stored is second.stored
  assert first.stored.video('a').masks == second.stored.video('a').masks and len(reads) == 1
  other = StoredVideos({'a': (frames, masks, None)})  # Another builder: read on its own.
  assert _evaluation(other).stored is not first.stored
