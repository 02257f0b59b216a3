"""Segmentation scored at the frames' own size: the stored masks by (video, frame), exact
under any batching; bootstrap intervals over videos; overlays of the best, median and worst
videos; exported masks; distances in mm from a folder's pixel spacing, and the data
fingerprint in the robustness study's reports."""
import csv
import json
import types

import cv2
import jax
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import helpers
import test_builders
from input_pipeline import fingerprint
from input_pipeline import pipeline
from input_pipeline import preprocess
from input_pipeline import spec
from usvjax import tasks
from usvjax.core import evaluate
from usvjax.core import run as run_lib
from usvjax.core import state as state_lib
from usvjax.core import train_logs
from usvjax.reporting import plots
from usvjax.reporting import provenance
from usvjax.studies import compare_report
from usvjax.studies import robustness
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
      assert result['num_frames'] == len(examples)
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
  evaluation = _evaluation(StoredVideos(videos), image_size=6)
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
  evaluation.write_report(str(tmp_path), {'num_frames': len(examples)})
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
      assert caption == f'frame {t}: Dice {row["dice"]:.3f}'
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


def test_compare_pairs_each_method_with_the_first_over_the_test_videos(tmp_path):
  def run(seed, dice, method):
    columns = list(tasks.definition('segmentation').columns.values()) + list(
        compare_report.TIMING.values())
    return {**dict.fromkeys(columns, 0.5), 'seed': seed, 'task': 'segmentation',
            'log_dir': f'{method}/seed{seed}', 'video_dice': {
                f'v{i}': [d, 2 + i] for i, d in enumerate(dice)}}
  base = [0.5, 0.6, 0.7, 0.8]
  results = {'first': [run(0, base, 'first'), run(1, [d + 0.05 for d in base], 'first')],
             'better': [run(0, [d + 0.1 for d in base], 'better'),
                        run(1, [d + 0.3 for d in base], 'better')],
             'mixed': [run(0, [0.6, 0.5, 0.8, 0.7], 'mixed'), run(1, base, 'mixed')]}
  compare_report.write(results, str(tmp_path))
  better = results['better']
  assert better[0]['paired_dice_difference'] == pytest.approx(0.1)  # Against seed 0.
  assert better[1]['paired_dice_difference'] == pytest.approx(0.25)  # Against seed 1.
  assert better[0]['paired_dice_p'] == 0.0
  # Seed 0 of 'mixed': +0.1, -0.1, +0.1, -0.1 on videos of 2, 3, 4, 5 frames.
  assert results['mixed'][0]['paired_dice_difference'] == pytest.approx(-0.2 / 14)
  assert results['mixed'][0]['paired_dice_p'] > 0.5
  assert 'paired_dice_p' not in results['first'][0]
  table = (tmp_path / 'results.md').read_text()
  assert 'Dice against first (paired bootstrap' in table
  assert '| better | +0.1750 | [+0.1750, +0.1750] | 0.0000 |' in table  # Seeds pooled.
  header = (tmp_path / 'results.csv').read_text().splitlines()[0].split(',')
  assert {'paired_dice_difference', 'paired_dice_ci95_lo', 'paired_dice_p'} <= set(header)


def test_the_pipeline_scores_every_stored_frame_once_at_its_size(data_dir, tmp_path):
  """The synthetic test split (64-pixel frames, a 32-pixel model) on 4 devices, the last
  batch padded: every stored frame scored once against its 64-pixel mask (batching and
  order: ``test_every_frame_is_scored_once_whatever_the_batching_and_order``); exported
  masks at 64 pixels; TensorBoard gets the overlays."""
  config = helpers.load_config('unet', data_dir, **{'input.eval_batch_size': 8})
  run = run_lib.resolve(config)
  lengths = {ex['video_id'].decode(): len(ex['boxes'])
             for ex in tfds.as_numpy(run.builder.as_dataset(split='test'))}
  assert sum(lengths.values()) % 8 and config.input.image_size == 32
  variables = run.model.init(jax.random.key(0), state_lib.init_batch(config, run.fields(True)),
                             train=False)
  metrics, evaluation = evaluate.evaluate_split(run, 'test', variables)
  assert sorted((r['video_id'], r['frame_index']) for r in evaluation.rows) == sorted(
      (v, t) for v, n in lengths.items() for t in range(n))
  assert metrics['num_frames'] == sum(lengths.values())
  paths = evaluate.export_predictions(evaluate.Report(metrics, evaluation, str(tmp_path)))
  assert len(paths) == metrics['num_frames']
  assert cv2.imread(paths[0], cv2.IMREAD_UNCHANGED).shape == (64, 64)
  writer = train_logs.Writer(str(tmp_path))
  writer.images(3, {f'val_overlay/{k}': v for k, v in evaluate.pictures(evaluation).items()})
  writer.close()
  (events,) = (tmp_path / 'tensorboard').iterdir()
  tags = {value.tag for event in tf.compat.v1.train.summary_iterator(str(events))
          for value in event.summary.value}
  assert tags == {'val_overlay/best', 'val_overlay/median', 'val_overlay/worst'}


def test_hard_frames_are_scored_apart_where_the_dataset_flags_them():
  mask = np.zeros((8, 8), bool)
  mask[2:6, 2:6] = True
  frames = np.zeros((2, 8, 8, 1), np.uint8)
  videos = {'a': (frames, np.stack([mask, mask]), None), 'b': (frames[:1], mask[None], None)}
  hard = {'a': np.array([False, True]), 'b': np.array([False])}
  found, missed = mask.astype(np.float32), np.zeros((8, 8), np.float32)
  examples = [('a', 0, found, mask), ('a', 1, missed, mask), ('b', 0, found, mask)]
  evaluation = _evaluation(StoredVideos(videos, hard=hard))
  for batch in _outputs(examples, 2):
    evaluation.update(batch)
  result = evaluation.result()
  assert result['num_hard_frames'] == 1 and result['hard_frame_dice'] == 0.0
  assert result['other_frame_dice'] == 1.0 and result['mean_dice'] == pytest.approx(2 / 3)
  unflagged = _evaluation(StoredVideos(videos))
  for batch in _outputs(examples, 2):
    unflagged.update(batch)
  assert 'hard_frame_dice' not in unflagged.result()


def test_a_folders_pixel_spacing_gives_mm_distances_in_every_robustness_report(
    tmp_path, monkeypatch):
  """A FLA-Net folder whose test video has a 0.25 mm spacing (pixel_spacing.csv), scored by
  the robustness study (one speckled condition: the clean one runs the same code) with an
  untrained U-Net (the checkpoint's restore replaced by the initialisation: no training)
  at threshold 0, so every frame's prediction is the whole frame and its distances are
  defined. The report gives hd95_mm = 0.25 hd95 and assd_mm = 0.25 assd, per video too,
  and every output names the folder's fingerprint."""
  root = str(tmp_path / 'fla')
  test_builders.make_flanet(root, lengths=(('v1', 1), ('v2', 1), ('v3', 2)), lists=(
      ('train', 'v1'), ('validation', 'v2'), ('test', 'v3')))
  test_builders.write_csv(f'{root}/pixel_spacing.csv',
                          [['video', 'pixel_spacing_mm'], ['v3', '0.25']])
  config = helpers.load_config('unet', str(tmp_path / 'tfds'), **{
      'dataset.name': 'usv_flanet', 'dataset.config': 'default', 'dataset.manual_dir': root,
      'task.threshold': 0.0, 'input.overlay_videos': 0, 'model.levels': 2})

  def initialised(run, workdir, which):
    del workdir, which
    batch = state_lib.init_batch(run.config, run.fields(True))
    return run_lib.Restored(jax.jit(run.model.init, static_argnames='train')(
        jax.random.key(0), batch, train=False), 7)
  monkeypatch.setattr(run_lib.Run, 'restore', initialised)
  out = tmp_path / 'robustness'
  results = robustness.run(run_lib.resolve(config), str(tmp_path / 'run'), looks=(4,),
                           output_dir=str(out))
  dataset = provenance.data_fingerprint(pipeline.get_builder(config.dataset))
  expected = fingerprint.folder_fingerprint(root, fingerprint.file_hashes(root))
  assert dataset['source']['content_sha256'] == expected['content_sha256']
  assert json.loads((out / 'robustness.json').read_text()) == json.loads(json.dumps(results))
  assert (f'content sha256 `{expected["content_sha256"]}`' in
          (out / 'robustness.md').read_text())
  metrics = json.loads((out / 'L=4' / 'metrics.json').read_text())
  assert metrics['dataset'] == results['L=4']['dataset'] == json.loads(json.dumps(dataset))
  assert metrics['num_frames'] == 2 and metrics['distance_penalised_frames'] == 0
  assert metrics['hd95'] > 0
  with open(out / 'L=4' / 'per_video.csv', newline='') as f:
    (row,) = list(csv.DictReader(f))
  for key in ('hd95', 'assd'):
    assert metrics[f'{key}_mm'] == pytest.approx(0.25 * metrics[key])
    assert float(row[f'{key}_mm']) == pytest.approx(0.25 * float(row[key]))
