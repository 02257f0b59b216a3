"""The validation pass every builder of files on disk runs before it converts anything.

A builder reads its layout (tables, lists, folders) into videos and splits, recording each
inconsistency in a ``Problems``; ``check_segmentation`` (or the video table's own pass)
then decodes every file. Nothing is converted unless the whole dataset passes: otherwise
one ``DatasetError`` lists every problem with its file and what to do. docs/data.md,
"What the converter checks", lists the checks and what the user sees.
"""
from __future__ import annotations

import collections
import dataclasses
import difflib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from absl import logging

from input_pipeline.builders.common import (DatasetError, list_images, natural_key,
                                            read_mask, read_rgb, read_rows, shown)

EMPTY_MASK_WARNING_SHARE = 0.5  # A split with a larger share of empty masks is logged.
MAX_LISTED_PROBLEMS = 100  # The error lists this many; the rest are counted by kind.


class Problems:
  """Every problem found in a dataset, raised together as one DatasetError.

  ``add(kind, message)`` records one problem (the message names the file and says what to
  do); ``check(kind, fn, *args)`` runs a reader and records its DatasetError instead.
  """

  def __init__(self, dataset: str, root: str):
    self.dataset, self.root = dataset, root
    self.items: list[tuple[str, str]] = []

  def add(self, kind: str, message: str) -> None:
    self.items.append((kind, message))

  def check(self, kind: str, fn: Callable[..., Any], *args) -> Any:
    """``fn(*args)``, or None after recording its DatasetError as a problem of ``kind``."""
    try:
      return fn(*args)
    except DatasetError as e:
      self.add(kind, str(e))
      return None

  def raise_if_any(self) -> None:
    """Raises one DatasetError listing every problem (the first MAX_LISTED_PROBLEMS in
    full, the rest counted by kind)."""
    if not self.items:
      return
    lines = [f'  - {message}' for _, message in self.items[:MAX_LISTED_PROBLEMS]]
    rest = collections.Counter(kind for kind, _ in self.items[MAX_LISTED_PROBLEMS:])
    if rest:
      lines.append(f'  ... and {sum(rest.values())} more: ' +
                   ', '.join(f'{n} x {kind}' for kind, n in rest.most_common()))
    raise DatasetError(
        f'{self.dataset}: {len(self.items)} problem(s) in {shown(self.root)}; nothing was '
        'converted. Fix them and run again (docs/data.md lists the checks):\n' +
        '\n'.join(lines))


@dataclasses.dataclass
class Video:
  """One video of a segmentation layout: frame and mask paths in frame order (mask None:
  no mask file, the frame is unannotated), group, pixel spacing ((row, column) mm per
  pixel; None: unknown); a video decoded from one file (cine table) has ``source``,
  ``frame_names`` (default: the frames' file names) and ``fps`` (None: the config's)."""
  video_id: str
  frames: list[str]
  masks: list[str | None]
  group: str = ''
  spacing: tuple[float, float] | None = None
  source: str = ''
  frame_names: list[str] = dataclasses.field(default_factory=list)
  fps: float | None = None


def sparse_hint(problems: Problems) -> str:
  """How to convert a dataset whose masks cover only some frames (for messages)."""
  return ('convert with the builder option sparse_masks=True if only some frames are traced '
          f'(--config.dataset.name={problems.dataset.split("/")[0]}/sparse_masks=True, '
          'docs/data.md)')


def images_by_stem(directory: str, problems: Problems) -> dict[str, str]:
  """{name stem: path} of the images in ``directory``; two files of one stem are a problem."""
  paths: dict[str, str] = {}
  for name in list_images(directory):
    stem, path = os.path.splitext(name)[0], os.path.join(directory, name)
    if stem in paths:
      problems.add('two files for one frame', f'{shown(paths[stem])} and {shown(path)} are '
                   f'both frame {shown(stem)}: remove one.')
    else:
      paths[stem] = path
  return paths


def pair_masks(frames: dict[str, str], masks: dict[str, str], frame_dir: str, mask_dir: str,
               problems: Problems, sparse: bool = False) -> list[str]:
  """Stems of the frames with a mask (``sparse``: of all frames) in frame order, of
  ``{stem: path}`` maps; a mask without a frame, and unless ``sparse`` a frame without a
  mask, are problems."""
  if not sparse:
    for stem in sorted(frames.keys() - masks.keys(), key=natural_key):
      problems.add('missing mask', f'frame {shown(frames[stem])} has no mask (an image named '
                   f'{shown(stem)}) in {shown(mask_dir)}: add it, remove the frame, or '
                   f'{sparse_hint(problems)}.')
  for stem in sorted(masks.keys() - frames.keys(), key=natural_key):
    problems.add('orphan mask', f'mask {shown(masks[stem])} has no frame in '
                 f'{shown(frame_dir)}: add the frame or remove the mask.')
  return sorted(frames.keys() if sparse else frames.keys() & masks.keys(), key=natural_key)


def check_unique_videos(problems: Problems, lists: dict[str, list[tuple[str, str]]]) -> None:
  """Each video once, in one split: ``lists`` is {split: [(video, where it is listed)]}."""
  seen: dict[str, tuple[str, str]] = {}
  for split, entries in lists.items():
    for video, where in entries:
      if video not in seen:
        seen[video] = (split, where)
      elif seen[video][0] == split:
        problems.add('duplicate video', f'video {shown(video)} is listed twice in split '
                     f'{split!r} ({seen[video][1]}; {where}): list it once.')
      else:
        problems.add('video in two splits', f'video {shown(video)} is in split '
                     f'{seen[video][0]!r} ({seen[video][1]}) and in split {split!r} ({where}):'
                     ' a video must be in one split only, or it leaks between them.')


def check_groups_in_one_split(problems: Problems, assignment: dict[str, str],
                              groups: dict[str, str], where: str) -> None:
  """Every group's (patient's) videos in one split (``assignment``: video -> split,
  ``groups``: video -> group)."""
  splits_of: dict[str, set[str]] = collections.defaultdict(set)
  for video, split in assignment.items():
    splits_of[groups[video]].add(split)
  for group, splits in sorted(splits_of.items()):
    if len(splits) > 1:
      problems.add('group in two splits', f'group {shown(group)} has videos in splits '
                   f'{sorted(splits)} ({where}): a patient\'s videos must be in one split; '
                   'move them, or leave every split cell blank to split by group.')


def has_blank_cells(problems: Problems, where: str, row: dict[str, str],
                    columns: Sequence[str]) -> bool:
  """Whether any of ``columns`` is blank in ``row`` (a table row, found ``where``); a
  blank cell is a problem."""
  blank = [c for c in columns if not row[c]]
  if blank:
    problems.add('blank cell', f'{where} has a blank {" and ".join(blank)} cell: fill it or '
                 'delete the row.')
  return bool(blank)


def suggestion(value: str, known: Sequence[str]) -> str:
  """' (did you mean X?)' for the known value ``value`` most likely means: the same in
  another case, else the only one it abbreviates ('val'), else the closest by difflib."""
  lower = value.lower()
  same_case = [k for k in known if k.lower() == lower]
  prefixed = [k for k in known if lower and k.lower().startswith(lower)]
  close = (same_case or (prefixed if len(prefixed) == 1 else []) or
           difflib.get_close_matches(value, list(known), n=1, cutoff=0.6))
  return f' (did you mean {close[0]!r}?)' if close else ''


class _ForegroundStats:
  """Lesion pixels and empty masks per split, for the conversion log."""

  def __init__(self):
    self.counts: dict[str, np.ndarray] = collections.defaultdict(
        lambda: np.zeros(4, np.int64))  # Lesion pixels, pixels, empty masks, masks.

  def add(self, split: str, mask: np.ndarray) -> None:
    lesion = int(mask.sum())
    self.counts[split] += (lesion, mask.size, lesion == 0, 1)

  def report(self, problems: Problems) -> None:
    """Logs the fractions; no lesion at all is a problem, many empty masks a warning."""
    total = sum(self.counts.values(), np.zeros(4, np.int64))
    if not total[3]:
      return
    logging.info('%s: %s', problems.dataset, '; '.join(
        f'{name}: lesion in {c[0] / c[1]:.2%} of mask pixels, {c[2]} of {c[3]} masks empty'
        for name, c in [('all splits', total)] + sorted(self.counts.items())))
    if not total[0]:
      problems.add('no foreground', f'no mask of the {int(total[3])} masks has a lesion pixel: '
                   'check the mask convention (lesion is the non-zero value) or '
                   'mask_threshold.')
    elif total[0] > total[1] / 2:
      logging.warning('%s: lesion covers %.0f%% of all mask pixels: are the masks inverted '
                      '(lesion must be the non-zero value)?', problems.dataset,
                      100 * total[0] / total[1])
    for split, c in sorted(self.counts.items()):
      if c[2] > EMPTY_MASK_WARNING_SHARE * c[3]:
        logging.warning('%s: %d of %d masks of split %r are empty: an empty prediction on an '
                        'empty mask scores Dice 1, so that split\'s mean Dice says little '
                        '(read its pooled Dice).', problems.dataset, c[2], c[3], split)


def check_segmentation(problems: Problems, splits: dict[str, list[Video]],
                       threshold: float | None, window: tuple[float, float] | None = None,
                       decode: Callable[[Video], Iterator[np.ndarray]] | None = None) -> None:
  """Decodes every frame (``read_rgb`` with ``window``, or a video's one file with
  ``decode``) and mask (None: none) and checks: each frame in one video once, readable
  pixel values, frames of one size per video, masks binary (or ``threshold`` set) and of
  their frame's size, some lesion in the dataset. Logs the lesion fractions per split."""
  owner: dict[str, str] = {}
  stats = _ForegroundStats()
  for split, videos in splits.items():
    for video in videos:
      if not video.frames:
        problems.add('empty video', f'video {shown(video.video_id)} has no frames: remove it '
                     'from its split or add its frames.')
      shapes = set()
      for frame, mask_path in zip(_frames(problems, owner, video, window, decode),
                                  video.masks):
        if frame is not None:
          shapes.add(frame.shape[:2])
        mask = (None if frame is None or mask_path is None else
                problems.check('bad mask', read_mask, mask_path, frame.shape, threshold))
        if mask is not None:
          stats.add(split, mask)
      if len(shapes) > 1:
        problems.add('frame sizes differ', f'video {shown(video.video_id)} has frames of '
                     f'different sizes {sorted(shapes)} (height, width): resize them to one.')
  stats.report(problems)


def _frames(problems: Problems, owner: dict[str, str], video: Video,
            window: tuple[float, float] | None,
            decode: Callable[[Video], Iterator[np.ndarray]] | None
            ) -> Iterator[np.ndarray | None]:
  """The frames of ``video`` one at a time: an image that cannot be read is None (a
  problem), a video file that cannot be decoded ends there (a problem); a frame file that
  ``owner`` (real path -> video id) already holds is a problem."""
  if decode is not None:
    try:
      yield from decode(video)
    except DatasetError as e:
      problems.add('unreadable file', str(e))
    return
  for path in video.frames:
    key = os.path.realpath(path)
    if key in owner:
      where = ('twice in video' if owner[key] == video.video_id else
               f'in video {shown(owner[key])} and in video')
      problems.add('frame in two videos', f'frame {shown(path)} is {where} '
                   f'{shown(video.video_id)}: a frame belongs to one video, once.')
    owner[key] = video.video_id
    yield problems.check('unreadable file', read_rgb, path, window)


SPLIT_FILE = 'splits.csv'  # Optional, in any layout's folder: columns video,split.
SPLIT_NAMES = ('train', 'validation', 'test')
SPACING_FILE = 'pixel_spacing.csv'  # Optional, segmentation layouts: video,pixel_spacing_mm.


def _video_file(root: str, name: str, column: str, videos: Sequence[str],
                problems: Problems) -> list[tuple[str, str, str]] | None:
  """(where, video, its ``column`` cell) of each row of ``<root>/<name>`` (columns
  ``video,<column>[,...]``) that names a video of the dataset (``videos``: its ids) for
  the first time; None when the folder has no such file. A wrong header, a row with more
  cells than the header, an unknown video and a video listed again are problems."""
  path = os.path.join(root, name)
  if not os.path.exists(path):
    return None
  rows = read_rows(path)
  header = rows[0][1] if rows else []
  if header[:2] != ['video', column]:
    problems.add(name, f'{shown(path)} must start with the columns video,{column} (it has '
                 f'{header}): fix its header.')
    return None
  known, out, listed = set(videos), [], set()
  for line, cells in rows[1:]:
    video, where = cells[0], f'{name} line {line}'
    if any(cells[len(header):]):
      problems.add(name, f'{where} has {len(cells)} cells, its header {len(header)}: quote a '
                   'cell that holds a comma, or name the extra column in the header.')
    elif video not in known:
      problems.add(name, f'{where}: video {shown(video)} is not in the dataset'
                   f'{suggestion(video, sorted(known))}: fix or remove the row.')
    elif video in listed:
      problems.add(name, f'{where}: video {shown(video)} is listed again: list it once.')
    else:
      listed.add(video)
      out.append((where, video, cells[1] if len(cells) > 1 else ''))
  return out


def split_file(root: str, videos: Sequence[str], problems: Problems) -> dict[str, str] | None:
  """{video id: split} from ``<root>/splits.csv`` (columns ``video,split``), or None when
  the folder has none. Every video of the dataset (``videos``: its ids) must be listed
  once, with a split of ``SPLIT_NAMES``, and no other video; anything else is a problem."""
  rows = _video_file(root, SPLIT_FILE, 'split', videos, problems)
  if rows is None:
    return None
  out = {}
  for where, video, split in rows:
    if split not in SPLIT_NAMES:
      problems.add(SPLIT_FILE, f'{where}: split {shown(split)} of {shown(video)} is not one '
                   f'of {list(SPLIT_NAMES)}{suggestion(split, SPLIT_NAMES)}: fix the cell.')
    else:
      out[video] = split
  missing = sorted(set(videos) - {video for _, video, _ in rows})
  if missing:
    problems.add(SPLIT_FILE, f'{shown(os.path.join(root, SPLIT_FILE))} does not list '
                 f'{len(missing)} video(s) of the dataset, e.g. '
                 f'{", ".join(shown(v) for v in missing[:3])}: give every video a split.')
  return out


def spacing_file(root: str, videos: Sequence[str], problems: Problems
                 ) -> dict[str, tuple[float, float]]:
  """{video id: (row, column) mm per pixel} from ``<root>/pixel_spacing.csv`` (columns
  ``video,pixel_spacing_mm``), {} when the folder has none. A cell holds one number (the
  same spacing down the rows and across the columns) or two separated by a space (rows,
  columns); a blank cell, like an unlisted video, leaves the spacing unknown. Any other
  value, an unknown video or a video listed twice is a problem."""
  out = {}
  for where, video, cell in _video_file(root, SPACING_FILE, 'pixel_spacing_mm', videos,
                                        problems) or ():
    if not cell:
      continue
    spacing = _spacing(cell)
    if spacing is None:
      problems.add(SPACING_FILE, f'{where}: pixel spacing {shown(cell)} of video '
                   f'{shown(video)} is not one number > 0 or two separated by a space: write '
                   "the video's mm per pixel ('0.1', or '0.1 0.12' for rows, columns) or leave "
                   'the cell blank if it is unknown.')
    else:
      out[video] = spacing
  return out


def _spacing(cell: str) -> tuple[float, float] | None:
  """(row, column) mm per pixel of a pixel_spacing_mm cell; None unless it holds one or
  two finite numbers > 0."""
  try:
    values = [float(v) for v in cell.split()]
  except ValueError:
    return None
  if len(values) not in (1, 2) or not all(0 < v < math.inf for v in values):
    return None
  return values[0], values[-1]
