"""Synthetic B-mode breast-ultrasound videos, formed the way a scanner forms them.

Every frame is made in four physical steps:

1. **Echogenicity map** ``E(z, x)`` (amplitude reflectivity): skin, subcutaneous fat with
   lobules and Cooper's ligaments, heterogeneous fibroglandular tissue, striated pectoral
   muscle and the chest wall, separated by smooth wavy boundaries. The tissue lives in a
   "world" larger than the field of view; the probe moves over it.
2. **Scatterers**: a zero-mean Gaussian field fixed to the tissue (so speckle moves with the
   tissue), partly renewed every frame (elevational motion decorrelates speckle):
   ``s_t = sqrt(1 - d) * warp(s_world) + sqrt(d) * n_t``.
3. **Point-spread function**: the radio-frequency image ``rf = (E * s_t) ** h`` with
   ``h(z, x) = cos(2 pi z / lambda) exp(-z^2 / 2 sigma_z^2) exp(-x^2 / 2 sigma_x^2)``
   (axial modulated pulse, lateral Gaussian beam), computed by FFT.
4. **Envelope detection and log compression**: the envelope is the magnitude of the
   analytic signal along depth (Hilbert transform by FFT); the image is
   ``clip((20 log10(g * env) - ref + DR) / DR, 0, 1)`` with a per-video gain ``g`` and
   dynamic range ``DR`` dB, so speckle is real fully developed speckle, not added noise.

Lesions are hypoechoic. Following the BI-RADS descriptors, **benign** lesions (label 0) are
oval, parallel to the skin (wider than tall), circumscribed, with a thin echogenic capsule
and posterior acoustic enhancement; **malignant** lesions (label 1) have irregular or
spiculated margins, are often taller than wide, have a thick echogenic halo and posterior
acoustic shadowing. Lesion size and internal echogenicity come from the same distribution
for both classes, and the per-video gain varies more than shadowing changes the mean
brightness, so the class is learnable from morphology but not from brightness or size.

Over a video the probe translates and rotates slightly, the lesion is compressed and
released, and the imaging plane sweeps through the lesion in elevation (its cross-section
shrinks, and in some videos it leaves the plane: empty masks). Some frames have low
lesion contrast. Every frame has its mask and box; every video its label and id.

Everything is a deterministic function of ``(seed, index)``.
"""
from __future__ import annotations

import dataclasses
import functools

import cv2
import numpy as np

CLASS_NAMES = ('benign', 'malignant')


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
  """Parameters of the simulator; lengths are in pixels of the output frame."""
  height: int = 128
  width: int = 128
  min_frames: int = 8
  max_frames: int = 16
  fps: float = 10.0
  wavelength: float = 3.5  # Carrier wavelength along depth.
  axial_sigma: float = 1.4  # Pulse envelope standard deviation.
  lateral_sigma: float = 2.2  # Beam width standard deviation.
  dynamic_range_db: float = 50.0
  gain_db_range: float = 6.0  # Per-video gain drawn from [-range, +range] dB.
  speckle_renewal: float = 0.15  # Fraction d of scatterer power renewed per frame.
  hard_frame_prob: float = 0.3  # Probability that a video has a low-contrast episode.
  malignant_prob: float = 0.5


@dataclasses.dataclass
class Video:
  """One simulated video.

  Attributes:
    frames: uint8 [T, H, W, 1] B-mode frames.
    masks: uint8 [T, H, W, 1] lesion masks in {0, 1}.
    boxes: float32 [T, 4] lesion boxes (ymin, xmin, ymax, xmax) normalised to [0, 1];
      all zeros where the mask is empty.
    label: 0 benign, 1 malignant.
    video_id: unique id, ``synthetic-<seed>-<index>``.
    fps: frame rate.
    hard: bool [T]: the frames of the video's low-contrast episode (the lesion fades into
      the tissue), where a model has to rely on the neighbouring frames.
  """
  frames: np.ndarray
  masks: np.ndarray
  boxes: np.ndarray
  label: int
  video_id: str
  fps: float
  hard: np.ndarray


def mask_to_box(mask: np.ndarray) -> np.ndarray:
  """Normalised box (ymin, xmin, ymax, xmax) of a [H, W] mask; zeros if it is empty."""
  ys, xs = np.nonzero(mask)
  if ys.size == 0:
    return np.zeros(4, np.float32)
  h, w = mask.shape
  return np.array([ys.min() / h, xs.min() / w, (ys.max() + 1) / h, (xs.max() + 1) / w],
                  np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int],
                  sigma: float) -> np.ndarray:
  """Gaussian random field with unit standard deviation and correlation length sigma."""
  field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
  return field / (field.std() + 1e-8)


def _wavy_boundary(rng: np.random.Generator, width: int, base: float,
                   amplitude: float) -> np.ndarray:
  """A smooth depth profile z(x) = base + a sum of three random sinusoids."""
  x = np.arange(width) / width
  z = np.full(width, base, np.float32)
  for k in (1, 2, 3):
    z += amplitude / k * np.sin(2 * np.pi * (k * x + rng.uniform()))
  return z


def _tissue_map(rng: np.random.Generator, height: int,
                width: int) -> tuple[np.ndarray, tuple[float, float]]:
  """Echogenicity of layered breast tissue.

  Returns the map, float32 [height, width], and the mean depth range (z0, z1) of the
  fibroglandular layer, where lesions are placed.
  """
  z = np.arange(height, dtype=np.float32)[:, None]
  skin = _wavy_boundary(rng, width, rng.uniform(0.03, 0.06) * height, 0.01 * height)
  fat = _wavy_boundary(rng, width, rng.uniform(0.15, 0.28) * height, 0.04 * height)
  gland = _wavy_boundary(rng, width, rng.uniform(0.62, 0.75) * height, 0.05 * height)
  muscle = _wavy_boundary(rng, width, rng.uniform(0.82, 0.9) * height, 0.02 * height)

  lobules = _smooth_noise(rng, (height, width), 0.03 * width)
  ligaments = np.exp(-(lobules / 0.15) ** 2)  # Bright thin septa between lobules.
  fat_tissue = 0.3 + 0.08 * lobules + 0.6 * ligaments
  gland_tissue = 0.85 * np.clip(1.0 + 0.35 * _smooth_noise(rng, (height, width), 0.02 * width),
                                0.2, None)
  gland_tissue = np.where(lobules > 1.2, fat_tissue, gland_tissue)  # Fat islands.
  wobble = 0.03 * height * _smooth_noise(rng, (1, width), 0.1 * width)
  striations = 0.5 + 0.5 * np.sin(2 * np.pi * (z + wobble) / (0.025 * height))
  muscle_tissue = 0.35 + 0.35 * striations
  echo = np.select(
      [z < skin, z < fat, z < gland, z < muscle],
      [np.full_like(fat_tissue, 1.3), fat_tissue, gland_tissue, muscle_tissue],
      default=0.12)
  chest_wall = np.exp(-((z - muscle - 0.02 * height) / (0.006 * height)) ** 2)
  echo = echo + 1.2 * chest_wall
  return echo.astype(np.float32), (float(fat.mean()), float(gland.mean()))


@dataclasses.dataclass(frozen=True)
class _Lesion:
  """Lesion geometry in world coordinates and its acoustic properties."""
  center: np.ndarray  # (x, z) in world pixels.
  outline: np.ndarray  # [K, 2] (x, z) offsets from the centre at unit scale.
  echo_level: float
  posterior_gain: float  # > 1 enhancement, < 1 shadowing.
  rim_strength: float  # Thin capsule (benign) or thick halo (malignant).
  rim_sigma: float
  edge_sigma: float


def _lesion_outline(rng: np.random.Generator, malignant: bool, radius: float) -> np.ndarray:
  """Outline points r(phi) of a benign oval or a malignant irregular/spiculated lesion."""
  phi = np.linspace(0, 2 * np.pi, 256, endpoint=False)
  if malignant:
    taller = rng.uniform() < 0.6
    aspect = rng.uniform(0.65, 0.95) if taller else rng.uniform(1.0, 1.35)
    r = np.ones_like(phi)
    for k in range(2, 8):
      r += rng.uniform(0.03, 0.12) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    if rng.uniform() < 0.6:  # Spiculated.
      for centre in rng.uniform(0, 2 * np.pi, rng.integers(5, 11)):
        dist = np.angle(np.exp(1j * (phi - centre)))
        r += rng.uniform(0.3, 0.6) * np.exp(-(dist / 0.05) ** 2)
    tilt = rng.uniform(-0.5, 0.5)
  else:
    aspect = rng.uniform(1.35, 2.1)
    r = 1.0 + 0.03 * np.cos(2 * phi + rng.uniform(0, 2 * np.pi))
    tilt = rng.uniform(-0.15, 0.15)  # Parallel to the skin.
  half_width = radius * np.sqrt(aspect)
  half_height = radius / np.sqrt(aspect)
  x, z = r * half_width * np.cos(phi), r * half_height * np.sin(phi)
  c, s = np.cos(tilt), np.sin(tilt)
  return np.stack([c * x - s * z, s * x + c * z], axis=1).astype(np.float32)


def _make_lesion(rng: np.random.Generator, malignant: bool, world_hw: tuple[int, int],
                 gland_range: tuple[float, float], frame_width: int) -> _Lesion:
  radius = rng.uniform(0.08, 0.15) * frame_width
  z0, z1 = gland_range
  center = np.array([world_hw[1] / 2 + rng.uniform(-0.1, 0.1) * frame_width,
                     rng.uniform(z0 + radius, max(z0 + radius, z1 - radius))], np.float32)
  if malignant:
    posterior = rng.uniform(0.3, 0.65) if rng.uniform() < 0.8 else rng.uniform(0.9, 1.1)
    rim, rim_sigma, edge = rng.uniform(0.3, 0.8), 0.03 * frame_width, 1.5
  else:
    posterior = rng.uniform(1.3, 1.8) if rng.uniform() < 0.8 else rng.uniform(0.9, 1.1)
    rim, rim_sigma, edge = rng.uniform(0.5, 1.2), 0.006 * frame_width, 0.6
  return _Lesion(center=center, outline=_lesion_outline(rng, malignant, radius),
                 echo_level=rng.uniform(0.05, 0.3), posterior_gain=posterior,
                 rim_strength=rim, rim_sigma=rim_sigma, edge_sigma=edge)


@functools.lru_cache(maxsize=8)
def _analytic_psf_fft(height: int, width: int, wavelength: float, axial_sigma: float,
                      lateral_sigma: float) -> tuple[np.ndarray, float]:
  """FFT of the RF PSF times the one-sided (Hilbert) filter along depth.

  Returns the filter and the reference level in dB: the RMS envelope of echogenicity 1.
  """
  z = np.fft.fftfreq(height, 1.0 / height)[:, None]
  x = np.fft.fftfreq(width, 1.0 / width)[None, :]
  psf = (np.cos(2 * np.pi * z / wavelength) * np.exp(-z**2 / (2 * axial_sigma**2)) *
         np.exp(-x**2 / (2 * lateral_sigma**2)))
  one_sided = np.zeros(height)
  one_sided[0] = 1.0
  one_sided[1:(height + 1) // 2] = 2.0
  if height % 2 == 0:
    one_sided[height // 2] = 1.0
  reference_db = 10 * np.log10(2 * np.sum(psf**2))
  return np.fft.fft2(psf) * one_sided[:, None], reference_db


def _probe_pose(t: np.ndarray, rng: np.random.Generator, width: int,
                height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Smooth lateral/axial probe offsets (pixels) and rotation (radians) per frame.

  The axial offset is a small pressure change; it is used as |dz| so the probe stays on
  the skin.
  """
  def wave(amplitude):
    period = rng.uniform(12, 40)
    return amplitude * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
  dx = wave(rng.uniform(0.03, 0.12) * width) + rng.uniform(-0.005, 0.005) * width * t
  dz = wave(rng.uniform(0.0, 0.02) * height)
  angle = wave(np.deg2rad(rng.uniform(0, 4)))
  return dx, dz, angle


def _frame_to_world(dx: float, dz: float, angle: float, frame_hw: tuple[int, int],
                    world_hw: tuple[int, int]) -> np.ndarray:
  """2x3 affine map from frame pixel (x, z) to world pixel (x, z)."""
  c, s = np.cos(angle), np.sin(angle)
  rot = np.array([[c, -s], [s, c]], np.float32)
  frame_centre = np.array([frame_hw[1] / 2, 0.0], np.float32)  # Probe face centre.
  world_centre = np.array([world_hw[1] / 2 + dx, abs(dz)], np.float32)  # Probe on the skin.
  return np.concatenate([rot, (world_centre - rot @ frame_centre)[:, None]], axis=1)


def _posterior_factor(mask: np.ndarray, gain: float) -> np.ndarray:
  """Multiplicative enhancement/shadow below the lesion, along the beam (depth) axis."""
  height = mask.shape[0]
  below = np.maximum.accumulate(mask, axis=0) - mask  # Behind the lesion in each column.
  depth_behind = np.cumsum(below, axis=0)
  decay = np.exp(-depth_behind / (0.35 * height))
  profile = cv2.GaussianBlur(below * decay, (0, 0), 2.0)
  return 1.0 + (gain - 1.0) * np.clip(profile, 0, 1)


class Simulator:
  """Deterministic generator of synthetic videos: ``Simulator(config).video(seed, index)``."""

  def __init__(self, config: SimulatorConfig = SimulatorConfig()):
    self.config = config

  def video(self, seed: int, index: int) -> Video:
    """Simulates video ``index`` of the dataset with root ``seed``."""
    cfg = self.config
    rng = np.random.default_rng([seed, index])
    h, w = cfg.height, cfg.width
    world_hw = (int(h * 1.1), int(w * 1.5))
    tissue, gland_range = _tissue_map(rng, *world_hw)
    malignant = bool(rng.uniform() < cfg.malignant_prob)
    lesion = _make_lesion(rng, malignant, world_hw, gland_range, w)
    scatterers = rng.standard_normal(world_hw).astype(np.float32)
    num_frames = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
    t = np.arange(num_frames, dtype=np.float32)
    dx, dz, angle = _probe_pose(t, rng, w, h)
    elevation = rng.uniform(-0.3, 0.3) + rng.uniform(0.1, 0.95) * np.sin(
        2 * np.pi * t / rng.uniform(15, 40) + rng.uniform(0, 2 * np.pi))
    compression = 1.0 + rng.uniform(0, 0.08) * np.sin(2 * np.pi * t / rng.uniform(6, 15))
    contrast_dip = np.zeros(num_frames, np.float32)
    if rng.uniform() < cfg.hard_frame_prob:
      start = rng.integers(0, num_frames)
      contrast_dip[start:start + rng.integers(2, 5)] = rng.uniform(0.4, 0.8)
    gain_db = rng.uniform(-cfg.gain_db_range, cfg.gain_db_range)
    inside_texture = _smooth_noise(rng, (h, w), 0.02 * w)

    frames = np.empty((num_frames, h, w, 1), np.uint8)
    masks = np.empty((num_frames, h, w, 1), np.uint8)
    for i in range(num_frames):
      to_world = _frame_to_world(dx[i], dz[i], angle[i], (h, w), world_hw)
      echo = cv2.warpAffine(tissue, to_world, (w, h),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REFLECT)
      scale = np.sqrt(max(0.0, 1.0 - elevation[i] ** 2))
      mask = self._lesion_mask(lesion, scale, compression[i], to_world, (h, w))
      echo = self._insert_lesion(echo, mask, lesion, contrast_dip[i], inside_texture)
      speckle = cv2.warpAffine(scatterers, to_world, (w, h),
                               flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)
      fresh = rng.standard_normal((h, w)).astype(np.float32)
      speckle = np.sqrt(1 - cfg.speckle_renewal) * speckle + np.sqrt(
          cfg.speckle_renewal) * fresh
      frames[i, ..., 0] = self._b_mode(echo * speckle, gain_db)
      masks[i, ..., 0] = mask
    boxes = np.stack([mask_to_box(m[..., 0]) for m in masks])
    return Video(frames=frames, masks=masks, boxes=boxes, label=int(malignant),
                 video_id=f'synthetic-{seed}-{index}', fps=cfg.fps, hard=contrast_dip > 0)

  @staticmethod
  def _lesion_mask(lesion: _Lesion, scale: float, compression: float,
                   to_world: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Rasterises the lesion cross-section in frame coordinates, uint8 [H, W] in {0, 1}."""
    mask = np.zeros(frame_hw, np.uint8)
    outline = lesion.outline * np.array([scale * compression, scale / compression])
    if np.ptp(outline[:, 1]) < 2.0:
      return mask  # The imaging plane has left the lesion.
    world_points = lesion.center + outline
    frame_points = cv2.transform(world_points[None], cv2.invertAffineTransform(to_world))[0]
    cv2.fillPoly(mask, [np.round(frame_points * 4).astype(np.int32)], 1,
                 lineType=cv2.LINE_8, shift=2)
    return mask

  @staticmethod
  def _insert_lesion(echo: np.ndarray, mask: np.ndarray, lesion: _Lesion,
                     contrast_dip: float, texture: np.ndarray) -> np.ndarray:
    """Blends the hypoechoic lesion, its rim and its posterior feature into the tissue."""
    if not mask.any():
      return echo
    mask_f = mask.astype(np.float32)
    soft = cv2.GaussianBlur(mask_f, (0, 0), lesion.edge_sigma)
    level = lesion.echo_level * (1 + 0.3 * texture)
    level = level + contrast_dip * (echo - level)  # Hard frames: lesion fades into tissue.
    echo = echo * (1 - soft) + np.clip(level, 0.01, None) * soft
    outer = cv2.GaussianBlur(mask_f, (0, 0), lesion.rim_sigma)
    rim = np.clip(outer - mask_f, 0, None) / max(float(outer.max()), 1e-6)
    echo = echo * (1 + lesion.rim_strength * (1 - contrast_dip) * 2 * rim)
    return echo * _posterior_factor(mask_f, lesion.posterior_gain)

  def _b_mode(self, reflectivity: np.ndarray, gain_db: float) -> np.ndarray:
    """PSF convolution, envelope detection and log compression to uint8 [H, W]."""
    cfg = self.config
    psf_fft, reference_db = _analytic_psf_fft(*reflectivity.shape, cfg.wavelength,
                                              cfg.axial_sigma, cfg.lateral_sigma)
    envelope = np.abs(np.fft.ifft2(np.fft.fft2(reflectivity) * psf_fft))
    level_db = 20 * np.log10(envelope + 1e-6) + gain_db
    top_db = reference_db + 14.0  # Headroom above the RMS level of tissue.
    image = (level_db - top_db + cfg.dynamic_range_db) / cfg.dynamic_range_db
    return np.round(255 * np.clip(image, 0, 1)).astype(np.uint8)
