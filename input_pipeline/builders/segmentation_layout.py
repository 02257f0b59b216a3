"""What the segmentation layouts share: the ``mask_threshold`` and ``sparse_masks`` options,
the optional split and pixel-spacing files, and read -> check -> convert.

A layout builder (DAVIS, FLA-Net, frames table) reads its files into ``checks.Video`` lists
per split (``_read_layout``, which records inconsistencies), the whole dataset is decoded
and checked (``checks.check_segmentation``), and only a dataset without problems is
converted.

``mask_threshold`` (a number >= 0; the mask conventions are in ``common``) is a builder
keyword argument, and so are ``pixel_min`` and ``pixel_max`` (the window of frame values
shown black and white; without them a frame is scaled by its bit depth: ``common``). Each
makes a config of its own, ``<config>-mask_threshold-<value>`` (``-pixel_min-<value>``,
``-pixel_max-<value>``), so that datasets converted with different options never share a
folder. ``sparse_masks=True`` (config ``<config>-sparse_masks``) accepts videos whose masks
cover only some frames: a frame without a mask file is unannotated (stored with an all-zero
mask and box and ``annotated`` False), while an all-zero mask file is annotated, with no
lesion; without it every frame needs a mask (``checks.pair_masks``). Pass an option as
``tfds.builder('usv_frames_table', config='default', mask_threshold=64)`` or, in a
config, in the dataset name: ``--config.dataset.name=usv_frames_table/mask_threshold=64``
(TFDS's ``name/key=value`` syntax) with ``--config.dataset.config=default``.

Beside its own files, a layout's folder may hold ``splits.csv`` (columns ``video,split``:
assigns every video a split) and ``pixel_spacing.csv`` (columns ``video,pixel_spacing_mm``:
the pixel spacing of the videos it lists, stored as ``pixel_spacing_mm``, so that
evaluation reports boundary distances in mm); both are read by ``checks``.
"""
from __future__ import annotations

import abc
import dataclasses
import math
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from input_pipeline import tf_setup  # pylint: disable=unused-import  (configures TensorFlow)
from input_pipeline.builders import checks
from input_pipeline.builders import common
from input_pipeline.builders import sparse
from usvjax.errors import ConfigError


@dataclasses.dataclass
class SegmentationConfig(tfds.core.BuilderConfig):
  """``mask_threshold``: None (masks must be binary) or value > threshold is lesion;
  ``pixel_min``, ``pixel_max``: None (frames scaled by their bit depth) or the window of
  frame values shown black and white (``common.to_uint8``); ``sparse_masks``: whether a
  frame may lack its mask file (it is then unannotated)."""
  mask_threshold: float | None = None
  pixel_min: float | None = None
  pixel_max: float | None = None
  sparse_masks: bool = False
  fps: float = 25.0

  @property
  def window(self) -> tuple[float, float] | None:
    """(value -> 0, value -> 255) of the frames, or None (their bit depth decides)."""
    return None if self.pixel_max is None else (self.pixel_min or 0.0, self.pixel_max)


_OPTIONS = ('mask_threshold', 'pixel_min', 'pixel_max')


class SegmentationLayout(tfds.core.GeneratorBasedBuilder):
  """Base of the segmentation layout builders (abstract, so TFDS does not register it)."""

  VERSION = tfds.core.Version('1.4.0')
  RELEASE_NOTES = {'1.1.0': 'The whole dataset is checked before conversion; binary mask '
                            'conventions and the mask_threshold option.',
                   '1.2.0': "Each video's pixel_spacing_mm from the folder's "
                            'pixel_spacing.csv ((0, 0) when unknown).',
                   '1.3.0': "Each video's frame_names (its frames' file names); 16-bit "
                            'frames scaled by their bit depth, the pixel_min/pixel_max '
                            'options.',
                   '1.4.0': "Each frame's annotated flag; the sparse_masks option."}
  WITH_GROUP = False  # Whether examples carry 'group' (the table layouts).
  ONE_FILE_PER_VIDEO = False  # Whether a video's frames are decoded from one file.

  def __init__(self, *, mask_threshold: float | None = None, pixel_min: float | None = None,
               pixel_max: float | None = None, sparse_masks: bool = False, config=None,
               **kwargs):
    options = {k: v for k, v in zip(_OPTIONS, (mask_threshold, pixel_min, pixel_max))
               if v is not None}
    if not isinstance(sparse_masks, bool):
      raise ConfigError(f'{self.name}: sparse_masks={sparse_masks!r} must be True or False.')
    if options or sparse_masks:
      config = self._config_with_options(config, options, sparse_masks)
    super().__init__(config=config, **kwargs)

  def _config_with_options(self, config, options: dict[str, float],
                           sparse_masks: bool) -> SegmentationConfig:
    """``config`` (a name, a config or None: the first) with the builder ``options``, named
    ``<config>-<option>-<value>...[-sparse_masks]`` so that each choice gets a converted
    copy of its own."""
    for key, value in options.items():
      if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f'{self.name}: {key}={value!r} must be a number >= 0.')
    if 'pixel_min' in options and 'pixel_max' not in options:
      raise ConfigError(f'{self.name}: pixel_min={options["pixel_min"]:g} needs pixel_max '
                        '(the value shown white) too.')
    if options.get('pixel_max', 1) <= options.get('pixel_min', 0):
      raise ConfigError(f'{self.name}: pixel_max={options["pixel_max"]:g} must exceed '
                        f'pixel_min={options.get("pixel_min", 0):g}.')
    if config is None or isinstance(config, str):
      name = config or self.BUILDER_CONFIGS[0].name
      known = {c.name: c for c in self.BUILDER_CONFIGS}
      if name not in known:
        raise ConfigError(f'{self.name} has no config {name!r}: use one of {sorted(known)}.')
      config = known[name]
    suffix = ''.join(f'-{k}-{options[k]:g}' for k in _OPTIONS if k in options)
    if sparse_masks:
      suffix, options = suffix + '-sparse_masks', dict(options, sparse_masks=True)
    return dataclasses.replace(config, name=config.name + suffix, **options)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=common.segmentation_features(3, with_group=self.WITH_GROUP,
                                              with_spacing=True, with_frame_names=True),
        description=self.MANUAL_DOWNLOAD_INSTRUCTIONS)

  @abc.abstractmethod
  def _read_layout(self, root: str, problems: checks.Problems
                   ) -> dict[str, list[checks.Video]]:
    """{split: videos} of the dataset in ``root``; inconsistencies go to ``problems``."""

  def read_splits(self, root: str) -> tuple[dict[str, list[checks.Video]], checks.Problems]:
    """{split: videos} of the dataset in ``root`` as conversion reads them (the layout,
    ``pixel_spacing.csv``, ``splits.csv``; nothing decoded), and the problems found."""
    problems = checks.Problems(f'{self.name}/{self.builder_config.name}', root)
    splits = self._read_layout(root, problems)
    videos = [v for members in splits.values() for v in members]
    spacing = checks.spacing_file(root, [v.video_id for v in videos], problems)
    for video in videos:
      video.spacing = spacing.get(video.video_id, video.spacing)
    return _with_split_file(root, splits, problems), problems

  def _split_generators(self, dl_manager):
    root = common.require_dir(str(dl_manager.manual_dir), f'{self.name} dataset folder',
                              self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    splits, problems = self.read_splits(root)
    checks.check_segmentation(problems, splits, self.builder_config.mask_threshold,
                              self.builder_config.window,
                              self._read_frames if self.ONE_FILE_PER_VIDEO else None)
    sparse.check_annotated(problems, splits)
    problems.raise_if_any()
    return {split: self._generate_examples(videos) for split, videos in splits.items()}

  def _read_frames(self, video: checks.Video) -> Iterator[np.ndarray]:
    """The frames of ``video``, uint8 RGB [H, W, 3] each (here: its image files)."""
    return (common.read_rgb(p, self.builder_config.window) for p in video.frames)

  def _generate_examples(self, videos: list[checks.Video]) -> Iterator[tuple[str, dict]]:
    cfg = self.builder_config
    for video in videos:
      frames = np.stack(list(self._read_frames(video)))
      empty = np.zeros(frames.shape[1:3] + (1,), np.uint8)
      masks = np.stack([empty if p is None else
                        common.read_mask(p, frames.shape[1:], cfg.mask_threshold)
                        for p in video.masks])
      names = video.frame_names or [os.path.basename(p) for p in video.frames]
      example = {'frames': frames, 'masks': masks, 'boxes': common.boxes_from_masks(masks),
                 'annotated': np.array([p is not None for p in video.masks]),
                 'video_id': video.video_id, 'fps': float(cfg.fps if video.fps is None else video.fps),
                 'pixel_spacing_mm': np.array(video.spacing or (0, 0), np.float32),
                 'frame_names': [common.text_id(n) for n in names]}
      if self.WITH_GROUP:
        example['group'] = video.group or video.video_id
      yield video.video_id, example


def _with_split_file(root: str, splits: dict[str, list[checks.Video]],
                     problems: checks.Problems) -> dict[str, list[checks.Video]]:
  """``splits`` as ``<root>/splits.csv`` assigns the videos, if the folder has one."""
  videos = [v for members in splits.values() for v in members]
  assignment = checks.split_file(root, [v.video_id for v in videos], problems)
  if assignment is None:
    return splits
  checks.check_groups_in_one_split(problems, assignment, {
      v.video_id: v.group or v.video_id for v in videos if v.video_id in assignment},
                                   checks.SPLIT_FILE)
  out: dict[str, list[checks.Video]] = {}
  for video in videos:
    if video.video_id in assignment:
      out.setdefault(assignment[video.video_id], []).append(video)
  return out


def videos_in_folders(frames_root: str, masks_root: str,
                      lists: dict[str, list[tuple[str, str]]], problems: checks.Problems,
                      sparse: bool = False) -> dict[str, list[checks.Video]]:
  """Videos stored as one frames folder and one masks folder each (DAVIS, FLA-Net).

  ``lists`` is {split: [(video folder name, where it is listed)]}. A video listed twice or
  in two splits, a listed video without its folders, a frame without a mask (unless
  ``sparse``: it is then unannotated), a mask (or masks folder) without a frame are
  problems; folders that no list names are logged.
  """
  checks.check_unique_videos(problems, lists)
  listed: set[str] = set()
  splits = {}
  for split, entries in lists.items():
    splits[split] = []
    for name, where in entries:
      if not name:
        problems.add('blank cell', f'{where} names no video: delete the line or fill it in.')
        continue
      if name in listed:
        continue
      listed.add(name)
      frame_dir, mask_dir = os.path.join(frames_root, name), os.path.join(masks_root, name)
      missing = [common.shown(d) for d in (frame_dir, mask_dir) if not os.path.isdir(d)]
      if missing:
        problems.add('missing file', f'video {common.shown(name)} ({where}) has no folder '
                     f'{" or ".join(missing)}: add it or remove the video from the list.')
        continue
      frames = checks.images_by_stem(frame_dir, problems)
      masks = checks.images_by_stem(mask_dir, problems)
      stems = checks.pair_masks(frames, masks, frame_dir, mask_dir, problems, sparse)
      splits[split].append(checks.Video(common.text_id(name), [frames[s] for s in stems],
                                        [masks.get(s) for s in stems]))
  folders = {root: {n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n))}
             for root in (frames_root, masks_root)}
  for name in sorted(folders[masks_root] - folders[frames_root], key=common.natural_key):
    problems.add('orphan mask', f'masks folder {common.shown(os.path.join(masks_root, name))} '
                 f'has no frames folder in {common.shown(frames_root)}: add the frames or '
                 'remove the masks.')
  unlisted = sorted(folders[frames_root] - listed, key=common.natural_key)
  if unlisted:
    logging.warning('%s: %d video folder(s) in %s are in no split list and are not '
                    'converted: %s', problems.dataset, len(unlisted), common.shown(frames_root),
                    ', '.join(common.shown(n) for n in unlisted[:20]))
  return splits
