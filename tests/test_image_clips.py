"""Clips from still images (STM's first stage, input_pipeline/image_clips.py): every frame
its own random affine, its mask following it; deterministic by seed; 1-frame training
videos accepted only with the option."""
import numpy as np
import pytest
import tensorflow as tf

import helpers
from input_pipeline import clip_streams
from input_pipeline import image_clips
from input_pipeline import simulator
from usvjax.core import run_checks
from usvjax import models


def _still_clip(length=3, size=48):
  mask = np.zeros((size, size, 1), np.float32)
  mask[12:30, 16:40] = 1.0
  mask[30:36, 20:26] = 1.0  # Not symmetric: a flip or a transpose would show.
  frames = np.repeat((0.2 + 0.6 * mask)[None], length, 0)
  return {'frames': tf.constant(frames), 'masks': tf.constant(np.repeat(mask[None], length, 0)),
          'boxes': tf.zeros([length, 4])}


def _deformed(seed):
  config = helpers.load_config('stpfnet', '')
  return image_clips.deform_clip(_still_clip(), tf.constant(seed, tf.int32),
                                 config.input.augment.affine)


def test_each_frame_is_deformed_by_its_own_affine_and_its_mask_follows_it():
  out = {k: v.numpy() for k, v in _deformed([3, 4]).items()}
  frames, masks = out['frames'][..., 0], out['masks'][..., 0]
  for t in range(3):
    agree = np.mean((frames[t] > 0.5) == (masks[t] > 0.5))
    assert agree > 0.97, t  # Bilinear frame vs nearest mask differ only at the edges.
    box = simulator.mask_to_box(masks[t] > 0.5)
    np.testing.assert_allclose(out['boxes'][t], box, atol=1e-6)
  assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
  assert 0.3 < masks.mean() / _still_clip()['masks'].numpy().mean() < 3  # Still in view.


def test_image_clips_are_deterministic_by_seed():
  np.testing.assert_array_equal(_deformed([3, 4])['frames'], _deformed([3, 4])['frames'])
  assert not np.array_equal(_deformed([3, 4])['frames'], _deformed([3, 5])['frames'])


def test_boxes_of_follow_the_simulators_convention():
  rng = np.random.default_rng(0)
  masks = (rng.uniform(size=(4, 16, 20, 1)) > 0.97).astype(np.float32)
  masks[2] = 0.0
  expected = np.stack([simulator.mask_to_box(m[..., 0]) for m in masks])
  np.testing.assert_allclose(image_clips.boxes_of(tf.constant(masks)).numpy(), expected,
                             atol=1e-6)


def test_training_clips_repeat_their_annotated_frame_and_evaluation_is_untouched():
  config = helpers.load_config('stpfnet', '', **{'input.image_clips': True})
  frames = tf.constant([b'f0', b'f1', b'f2', b'f3'])
  video = {'frames': frames, 'masks': frames, 'boxes': tf.zeros([4, 4]), 'video_id': 'v',
           'annotated': tf.constant([True, False, True, False])}
  source = clip_streams
  train = list(source.items(tf.data.Dataset.from_tensors(video), config, True)
               .as_numpy_iterator())
  assert [list(c['frames']) for c in train] == [[b'f0'] * 3, [b'f2'] * 3]
  still = {'frames': frames[:1], 'masks': frames[:1], 'boxes': tf.zeros([1, 4]),
           'video_id': 'still'}  # A 1-frame video (a still image) gives a clip.
  assert len(list(source.items(tf.data.Dataset.from_tensors(still), config, True))) == 1
  example = _still_clip()
  augmented = clip_streams.augment(example, tf.constant([1, 2]), config.input, train=False)
  np.testing.assert_array_equal(augmented['frames'], example['frames'])  # No deformation.


@pytest.mark.parametrize('image_clips', [False, True])
def test_one_frame_training_videos_are_refused_only_without_image_clips(
    monkeypatch, image_clips):
  config = helpers.load_config('flanet', '', **{'input.image_clips': image_clips})
  lengths = {'train_split': {'still': 1, 'video': 9}, 'eval_split': {'video': 9}}
  splits = {key: key for key in lengths}
  monkeypatch.setattr(run_checks, 'video_lengths', lambda builder, split: lengths[split])
  builder = type('Builder', (), {'info': type('Info', (), {'features': {'frames': None}})})
  problems = run_checks._length_problems(  # pylint: disable=protected-access
      config, models.capabilities(config.model), builder, splits, True)
  assert bool(problems) != image_clips
  if problems:
    assert 'config.input.image_clips=True' in problems[0]


def test_images_then_video_trains_on_image_clips_then_on_video_from_there(
    data_dir, tmp_path, monkeypatch):
  """The runner's two stages: stage 1 on image clips in <workdir>/images, stage 2 on video
  initialised from stage 1's last checkpoint (any segmenter: the U-Net keeps it cheap; the
  variant images_first of FLA-Net, DSANet and STPFNet sets the same keys)."""
  # pylint: disable=g-import-not-at-top
  from configs import common
  from configs import stpfnet
  from usvjax import runners
  from usvjax.core import checkpoint
  from usvjax.core import state as state_lib
  from usvjax.runners import images_then_video
  assert stpfnet.get_config('tiny,images_first').runner == 'images_then_video'
  config = helpers.load_config('unet', data_dir, total_steps=2, checkpoint_every=1,
                               eval_every=2)
  with config.unlocked():
    common.images_then_video(config, total_steps=1)
  stage1 = images_then_video.images_config(config)
  assert stage1.input.image_clips and stage1.total_steps == 1 and stage1.runner == 'single'
  stage2 = images_then_video.video_config(config, str(tmp_path))
  assert not stage2.input.image_clips and stage2.init.target == ''
  assert stage2.init.checkpoint == str(tmp_path / 'images')
  loaded, load = [], state_lib.load_pretrained

  def recording(state, checkpoint_dir, target):
    loaded.append((checkpoint_dir, target))
    return load(state, checkpoint_dir, target)
  monkeypatch.setattr(state_lib, 'load_pretrained', recording)
  results = runners.train(config, str(tmp_path))
  assert set(results) == {'images', 'unet'} and loaded == [(str(tmp_path / 'images'), '')]
  assert checkpoint.create_manager(str(tmp_path / 'images'), 2, read_only=True).all_steps() == [1]
  assert checkpoint.create_manager(str(tmp_path), 2, read_only=True).all_steps()[-1] == 2
