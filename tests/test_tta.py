"""Test-time augmentation: evaluate --tta=flip un-flips the flipped pass before averaging
(a model whose output depends on where in the frame it looks), is recorded in
metrics.json and refused where it does not apply; --clips=K averages a classifier's
probabilities over K frame samplings."""
import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from input_pipeline import sequences
from usvjax import runners
from usvjax.core import evaluate
from usvjax.core import run as run_lib
from usvjax.core import tta
from usvjax.errors import ConfigError


class _LeftHalf:
  """Lesion probability = the last frame's intensity on the left half of the frame, 0 on
  the right: f(x) differs from flip(f(flip(x))) for any frame that is not symmetric."""

  def apply(self, variables, batch, train=False):
    del variables, train
    frame = batch['frames'][:, -1]  # [B, H, W, C]
    left = (jnp.arange(frame.shape[2]) < frame.shape[2] // 2)[None, None, :, None]
    prob = jnp.clip(jnp.where(left, frame, 0.0), 1e-4, 1 - 1e-4)
    return {'logits': jnp.log(prob) - jnp.log1p(-prob)}


def test_flip_tta_averages_with_the_unflipped_prediction_of_the_flipped_frames():
  frames = np.random.default_rng(0).uniform(0.1, 0.9, (2, 3, 8, 6, 1)).astype(np.float32)
  model = _LeftHalf()
  f = lambda x: np.asarray(jax.nn.sigmoid(model.apply({}, {'frames': x})['logits']))
  expected = (f(frames) + f(frames[..., ::-1, :])[..., ::-1, :]) / 2
  got = jax.nn.sigmoid(tta.FlipAveraged(model).apply({}, {'frames': frames})['logits'])
  np.testing.assert_allclose(got, expected, atol=1e-5)
  np.testing.assert_allclose(got, frames[:, -1] / 2, atol=1e-4)  # Each half seen once.


def test_flip_tta_and_weights_are_recorded_and_refused_where_they_do_not_apply(data_dir, tmp_path):
  config = helpers.load_config('unet', data_dir, total_steps=2, eval_every=2,
                               checkpoint_every=2)
  runners.train(config, str(tmp_path / 'run'))
  scores = {}
  for mode in ('none', 'flip'):
    evaluated = config.copy_and_resolve_references()
    evaluated.evaluation.tta = mode
    report = evaluate.evaluate_checkpoint(run_lib.resolve(evaluated), str(tmp_path / 'run'),
                                          'latest', 'test', str(tmp_path / mode))
    with open(tmp_path / mode / 'metrics.json') as f:
      recorded = json.load(f)
    assert (recorded['tta'], recorded['weights']) == (mode, 'ema')
    scores[mode] = report.metrics['mean_dice']
  assert scores['flip'] != scores['none']
  config.evaluation.weights = 'best'
  with pytest.raises(ConfigError, match=r"--weights='best' \(config.evaluation.weights\)"):
    evaluate.options(config)
  with config.unlocked():
    config.input.eval_protocol = 'first_frame'
  with pytest.raises(ConfigError, match="--tta=flip: config.input.eval_protocol='first_frame'"):
    tta.with_tta(run_lib.resolve(config, data=False), 'flip')


def test_sampling_offsets_start_at_the_centre_and_cover_the_segment_evenly():
  assert sequences.sampling_offsets(1) == [0.5]
  assert sequences.sampling_offsets(4) == [0.5, 0.75, 0.0, 0.25]


def _per_video(report):
  with open(f'{report.directory}/per_video.csv', newline='') as f:
    return {r['video_id']: float(r['prob_malignant']) for r in csv.DictReader(f)}


def test_clips_average_the_probabilities_of_k_frame_samplings(data_dir, tmp_path):
  config = helpers.load_config('cnn_aver', data_dir)
  runners.train(config, str(tmp_path / 'run'))
  with config.unlocked():
    config.input.max_frames = 3  # Fewer than the videos' frames: the samplings differ.
  single = {}
  for k, offset in enumerate(sequences.sampling_offsets(2)):
    sampled = config.copy_and_resolve_references()
    with sampled.unlocked():
      sampled.input.eval_offset = offset
    single[k] = _per_video(evaluate.evaluate_checkpoint(
        run_lib.resolve(sampled), str(tmp_path / 'run'), 'latest', 'test', str(tmp_path / str(k))))
  assert single[0] != single[1]
  config.evaluation.clips = 2
  report = evaluate.evaluate_checkpoint(run_lib.resolve(config), str(tmp_path / 'run'), 'latest',
                                        'test', str(tmp_path / 'clips'))
  assert report.metrics['clips'] == 2
  averaged = _per_video(report)
  assert averaged.keys() == single[0].keys()
  for video, prob in averaged.items():
    assert prob == pytest.approx((single[0][video] + single[1][video]) / 2, abs=1e-6)
  with pytest.raises(ConfigError, match='--tta=flip is for segmentation'):
    tta.with_tta(run_lib.resolve(config, data=False), 'flip')
