"""Segmentation scored at the frames' own size in the studies and the pipeline: paired
comparisons over the test videos, every stored frame scored once at its size, hard frames
apart, and a folder's pixel spacing and data fingerprint in every robustness report."""
import csv
import json

import cv2
import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import helpers
import test_builders
from input_pipeline import fingerprint
from input_pipeline import pipeline
from usvjax import tasks
from usvjax.core import evaluate
from usvjax.core import run as run_lib
from usvjax.core import state as state_lib
from usvjax.core import train_logs
from usvjax.reporting import provenance
from usvjax.studies import compare_report
from usvjax.studies import robustness
from test_native_eval import StoredVideos, _evaluation, _outputs


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
  assert metrics['scored_frames'] == sum(lengths.values())
  paths = evaluate.export_predictions(evaluate.Report(metrics, evaluation, str(tmp_path)))
  assert len(paths) == metrics['scored_frames']
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
  assert metrics['scored_frames'] == 2 and metrics['distance_penalised_frames'] == 0
  assert metrics['hd95'] > 0
  with open(out / 'L=4' / 'per_video.csv', newline='') as f:
    (row,) = list(csv.DictReader(f))
  for key in ('hd95', 'assd'):
    assert metrics[f'{key}_mm'] == pytest.approx(0.25 * metrics[key])
    assert float(row[f'{key}_mm']) == pytest.approx(0.25 * float(row[key]))
