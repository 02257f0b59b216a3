"""The simulator: deterministic, consistent labels, and the BI-RADS cues it promises."""
import numpy as np
import pytest

from input_pipeline import simulator

CONFIG = simulator.SimulatorConfig(height=64, width=64, min_frames=4, max_frames=6)


@pytest.fixture(scope='module')
def videos():
  sim = simulator.Simulator(CONFIG)
  return [sim.video(7, i) for i in range(24)]


def test_same_seed_and_index_give_the_same_video():
  sim = simulator.Simulator(CONFIG)
  a, b, c = sim.video(3, 1), sim.video(3, 1), sim.video(3, 2)
  np.testing.assert_array_equal(a.frames, b.frames)
  np.testing.assert_array_equal(a.masks, b.masks)
  assert a.video_id == b.video_id != c.video_id
  assert not np.array_equal(a.frames[0], c.frames[0])


def test_shapes_masks_and_boxes_agree(videos):
  for v in videos:
    t = len(v.frames)
    assert CONFIG.min_frames <= t <= CONFIG.max_frames
    assert v.frames.shape == v.masks.shape == (t, 64, 64, 1)
    assert v.frames.dtype == v.masks.dtype == np.uint8
    assert set(np.unique(v.masks)) <= {0, 1}
    for mask, box in zip(v.masks[..., 0], v.boxes):
      ys, xs = np.nonzero(mask)
      if ys.size == 0:
        np.testing.assert_array_equal(box, 0)
      else:
        np.testing.assert_allclose(box, [ys.min() / 64, xs.min() / 64, (ys.max() + 1) / 64,
                                         (xs.max() + 1) / 64])
  assert {v.label for v in videos} == {0, 1}


def test_lesions_are_hypoechoic(videos):
  darker = []
  for v in videos:
    for frame, mask in zip(v.frames[..., 0], v.masks[..., 0]):
      if mask.sum() > 20:
        rows = np.nonzero(mask.any(axis=1))[0]
        band = frame[rows.min():rows.max() + 1].astype(float)
        inside = frame[mask > 0].mean()
        outside = band[mask[rows.min():rows.max() + 1] == 0].mean()
        darker.append(inside < outside)
  assert np.mean(darker) > 0.9


def test_benign_wider_than_tall_and_malignant_more_irregular(videos):
  """BI-RADS cues: benign parallel ovals; malignant taller/irregular (lower solidity)."""
  import cv2  # pylint: disable=g-import-not-at-top
  aspect = {0: [], 1: []}
  solidity = {0: [], 1: []}
  for v in videos:
    areas = v.masks[..., 0].sum(axis=(1, 2))
    mask = v.masks[int(np.argmax(areas)), ..., 0]
    if mask.sum() < 30:
      continue
    ys, xs = np.nonzero(mask)
    aspect[v.label].append((np.ptp(xs) + 1) / (np.ptp(ys) + 1))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    hull = cv2.convexHull(max(contours, key=cv2.contourArea))
    solidity[v.label].append(mask.sum() / max(cv2.contourArea(hull), 1))
  assert np.mean(aspect[0]) > 1.2 > np.mean(aspect[1])
  assert np.mean(solidity[0]) > np.mean(solidity[1])


def test_posterior_enhancement_for_benign_and_shadowing_for_malignant(videos):
  """Mean intensity just behind the lesion relative to the same depth beside it."""
  ratio = {0: [], 1: []}
  for v in videos:
    for frame, mask in zip(v.frames[..., 0].astype(float), v.masks[..., 0]):
      if mask.sum() < 30:
        continue
      ys, xs = np.nonzero(mask)
      top, bottom = ys.max() + 2, min(ys.max() + 12, 63)
      if bottom <= top:
        continue
      cols = np.unique(xs)
      behind = frame[top:bottom][:, cols].mean()
      beside = np.delete(frame[top:bottom], cols, axis=1).mean()
      ratio[v.label].append(behind / beside)
  assert np.median(ratio[0]) > np.median(ratio[1])
  assert np.median(ratio[1]) < 1.0


def test_speckle_is_fully_developed():
  """On homogeneous tissue the envelope is Rayleigh: std/mean of intensity near 1."""
  sim = simulator.Simulator(simulator.SimulatorConfig(height=128, width=128,
                                                      dynamic_range_db=200.0,
                                                      gain_db_range=0.0))
  rng = np.random.default_rng(0)
  reflectivity = rng.standard_normal((128, 128)).astype(np.float32)
  image = sim._b_mode(reflectivity, 0.0).astype(float) / 255  # pylint: disable=protected-access
  level_db = (image - 1) * 200.0 + 14.0  # Undo the display mapping (dB above reference).
  intensity = 10 ** (level_db / 10)
  assert 0.8 < intensity.std() / intensity.mean() < 1.2


def test_hard_frames_are_the_low_contrast_episode():
  sim = simulator.Simulator(simulator.SimulatorConfig(height=64, width=64, min_frames=8,
                                                      max_frames=8, hard_frame_prob=1.0))
  gaps = {True: [], False: []}
  for index in range(6):
    video = sim.video(0, index)
    hard = np.flatnonzero(video.hard)
    assert 1 <= len(hard) <= 4 and np.all(np.diff(hard) == 1)  # One episode (may hit the end).
    for frame, mask, is_hard in zip(video.frames[..., 0], video.masks[..., 0], video.hard):
      if mask.sum() > 20:
        inside, outside = frame[mask > 0].mean(), frame[mask == 0].mean()
        gaps[bool(is_hard)].append(abs(float(inside) - float(outside)))
  # The lesion stands out less from the tissue on hard frames.
  assert np.mean(gaps[True]) < 0.8 * np.mean(gaps[False])
  never = simulator.Simulator(simulator.SimulatorConfig(height=64, width=64, hard_frame_prob=0.0))
  assert not never.video(0, 0).hard.any()
