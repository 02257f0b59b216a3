"""tf.data pipelines: per-process data, clips, variable-length sequences, exact eval.

Segmentation examples are **clips**: the target frame t and its K previous frames,
``frames[T=K+1, H, W, C]`` ordered in time, **the target last** (index T-1). At the start
of a video the missing previous frames are the first frame repeated (t-1 -> max(t-1, 0)),
so every frame of every video is a target exactly once. ``masks[T, H, W, 1]`` and
``boxes[T, 4]`` come with every clip frame. With ``input.eval_protocol='first_frame'``
(semi-supervised evaluation, see ``usvjax.streaming``) evaluation examples are whole
videos instead, padded in time to the longest of the batch (``valid`` False after the end).

Classification examples are **sequences** of ``frames`` (or of cached per-frame
``features`` [n, D], see ``usvjax.feature_cache``) sampled uniformly over the whole video:
frame i of n sampled from a video of N frames is the one at the centre of the i-th of n
equal segments, floor((i + 1/2) N / n), so one frame is the middle frame and the ends,
where the lesion is often out of view, are never favoured. ``input.sampling`` 'up_to'
takes n = min(N, max_frames) (all frames of a short video); 'exact' takes n = max_frames
(frames of a shorter video repeat: Cui et al.'s equal-frame datasets). Sequences are
padded to the smallest length bucket that holds the batch's longest one, with
``valid[B, T]`` marking real frames, so a step function compiles at most once per bucket.

Contrastive examples (SimCLR pretraining, ``input.task='contrastive'``) are pairs of
frames of one video, ``frames[2, H, W, C]``, each view augmented independently (also at
evaluation, with fixed seeds, so that the views differ): see ``_view_pairs``.

Training streams are infinite, shuffled with the run seed, and augmented with stateless
randomness keyed by the example's position in the stream. Every process walks the same
stream of still-encoded items and decodes only its own slots of each global batch, so the
global batches do not depend on the number of processes; resuming at step s skips
s * global_batch encoded (not yet decoded) items, so a resumed run sees exactly the data of
an uninterrupted one. Evaluation streams are exact: every clip or video once, the last
batch padded with examples whose ``valid`` is all False, and every process yields the same
number of batches.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from input_pipeline import augment
from input_pipeline import speckle
from input_pipeline import builders  # pylint: disable=unused-import  (registers builders)
from input_pipeline.builders import common
from input_pipeline.builders import splits as splits_lib

Batch = dict[str, np.ndarray]
_ENCODED = ('frames', 'masks')


def get_builder(dataset: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder named by ``config.dataset``; prepares it on first use.

  ``dataset.name`` is a registered builder (``usv_synthetic``, ``usv_frames_table``, ...),
  ``dataset.config`` its config name, ``dataset.manual_dir`` the folder of a local layout.
  """
  kwargs = {'data_dir': dataset.data_dir or None}
  if dataset.config:
    kwargs['config'] = dataset.config
  try:
    builder = tfds.builder(dataset.name, **kwargs)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f'config.dataset.name={dataset.name!r} is not a known dataset: '
                     f'use one of usv_synthetic, usv_davis, usv_flanet, usv_frames_table, '
                     f'usv_video_table.') from e
  if dataset.manual_dir:
    common.require_dir(dataset.manual_dir, 'config.dataset.manual_dir',
                       'Point config.dataset.manual_dir at the dataset folder.')
  download_config = tfds.download.DownloadConfig(manual_dir=dataset.manual_dir or None)
  builder.download_and_prepare(download_config=download_config)
  return builder


def _encoded_videos(builder, split: str, shard: bool) -> tf.data.Dataset:
  """The split's videos (this process's share if ``shard``), frames still PNG-encoded."""
  decoders = {k: tfds.decode.SkipDecoding() for k in _ENCODED if k in builder.info.features}
  unknown = [part for part in split.split('+')
             if part.split('[')[0].strip() not in builder.info.splits]
  if unknown:
    raise ValueError(f'split {unknown[0]!r} not in dataset {builder.info.full_name}: it has '
                     f'{sorted(builder.info.splits)} (combine them with +).')
  if shard:
    split = tfds.even_splits(split, n=jax.process_count(), drop_remainder=False)[
        jax.process_index()]
  return builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)


def _sequence_key(builder) -> str:
  """What a classification sequence is made of: cached 'features' if the dataset has them."""
  return 'features' if 'features' in builder.info.features else 'frames'


def _check_features(builder, task: str) -> None:
  needed = {'segmentation': ('frames', 'masks'), 'contrastive': ('frames',),
            'classification': (_sequence_key(builder), 'label')}[task]
  missing = [k for k in needed if k not in builder.info.features]
  if missing:
    raise ValueError(f'dataset {builder.info.full_name} has no {missing}: a {task} config '
                     f'needs a dataset with {list(needed)}.')


def _clips(video: dict, clip_length: int) -> tf.data.Dataset:
  """All clips of a video: target t last, previous frames clamped at the first frame."""
  num = tf.shape(video['frames'])[0]
  target = tf.range(num)
  index = tf.maximum(target[:, None] + tf.range(1 - clip_length, 1)[None, :], 0)
  clips = {k: tf.gather(video[k], index) for k in ('frames', 'masks', 'boxes')}
  clips['video_id'] = tf.fill([num], video['video_id'])
  clips['frame_index'] = target
  return tf.data.Dataset.from_tensor_slices(clips)


POSITIVES = ('same_frame', 'same_video')


def _view_pairs(video: dict, position: tf.Tensor, input_config, seed: int
                ) -> tf.data.Dataset:
  """Contrastive examples of a video: ``max_frames`` frames drawn at random (seeded by the
  run seed and the video's position in the stream), each paired with itself ('same_frame')
  or with another random frame of the video ('same_video'; itself if the video has one
  frame)."""
  if input_config.positives not in POSITIVES:
    raise ValueError(f'config.input.positives={input_config.positives!r}: use one of '
                     f'{POSITIVES}.')
  num = tf.shape(video['frames'])[0]
  count = input_config.max_frames
  seed_anchor, seed_partner = tf.unstack(tf.random.experimental.stateless_split(
      tf.stack([tf.constant(seed, tf.int64), tf.cast(position, tf.int64)]), 2))
  anchors = tf.random.stateless_uniform([count], seed_anchor, 0, num, dtype=tf.int32)
  partners = anchors
  if input_config.positives == 'same_video':
    offsets = tf.random.stateless_uniform([count], seed_partner, 1, tf.maximum(num, 2),
                                          dtype=tf.int32)
    partners = tf.where(num > 1, (anchors + offsets) % num, anchors)
  pairs = tf.stack([anchors, partners], axis=1)
  return tf.data.Dataset.from_tensor_slices(
      {'frames': tf.gather(video['frames'], pairs), 'video_id': tf.fill([count], video['video_id'])})


SAMPLINGS = ('up_to', 'exact')


def uniform_indices(num: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
  """int32 [count]: the centre frame of each of ``count`` equal segments of ``num`` frames."""
  centres = (tf.range(count, dtype=tf.float64) + 0.5) * tf.cast(num, tf.float64)
  return tf.cast(tf.math.floor(centres / tf.cast(count, tf.float64)), tf.int32)


def _sequence(video: dict, key: str, max_frames: int, sampling: str) -> dict:
  """``max_frames`` frames (``sampling`` 'exact') or up to that many ('up_to') of ``key``."""
  num = tf.shape(video[key])[0]
  count = max_frames if sampling == 'exact' else tf.minimum(num, max_frames)
  return {key: tf.gather(video[key], uniform_indices(num, count)), 'label': video['label'],
          'video_id': video['video_id']}


def _decode(encoded: tf.Tensor, channels_stored: int) -> tf.Tensor:
  return tf.map_fn(
      lambda s: tf.io.decode_image(s, channels=channels_stored, expand_animations=False),
      encoded, fn_output_signature=tf.TensorSpec([None, None, channels_stored], tf.uint8))


def _resize(images: tf.Tensor, size: int, method: str) -> tf.Tensor:
  """Resizes [T, h, w, c] to [T, size, size, c] (antialiased when shrinking); a no-op when
  the images already have that size."""
  same = tf.reduce_all(tf.shape(images)[1:3] == size)
  return tf.cond(same, lambda: images,
                 lambda: tf.image.resize(images, [size, size], method=method,
                                         antialias=method == 'bilinear'))


def frames_to_model(frames: tf.Tensor, size: int, channels: int) -> tf.Tensor:
  """uint8 [T, h, w, c] -> float32 [T, size, size, channels] in [0, 1]."""
  frames = _resize(tf.cast(frames, tf.float32) / 255.0, size, 'bilinear')
  have = frames.shape[-1]
  if have == 3 and channels == 1:
    frames = tf.image.rgb_to_grayscale(frames)
  elif have == 1 and channels == 3:
    frames = tf.image.grayscale_to_rgb(frames)
  return tf.clip_by_value(frames, 0.0, 1.0)


def gaussian_heatmaps(boxes: tf.Tensor, size: int, sigma: float) -> tf.Tensor:
  """FLA-Net's location target: a Gaussian (peak 1, std ``sigma`` pixels) at each box centre.

  Args:
    boxes: [T, 4] normalised (ymin, xmin, ymax, xmax); an all-zero box means no lesion.
  Returns:
    float32 [T, size, size, 1]; all zeros where the box is empty.
  """
  cy = (boxes[:, 0] + boxes[:, 2]) / 2 * size
  cx = (boxes[:, 1] + boxes[:, 3]) / 2 * size
  grid = tf.range(size, dtype=tf.float32) + 0.5
  dy = (grid[None, :] - cy[:, None]) ** 2
  dx = (grid[None, :] - cx[:, None]) ** 2
  heat = tf.exp(-(dy[:, :, None] + dx[:, None, :]) / (2 * sigma**2))
  present = tf.cast(tf.reduce_any(boxes > 0, axis=1), tf.float32)
  return (heat * present[:, None, None])[..., None]


VIDEO_KEY_BYTES = 128


def encode_key(video_id: tf.Tensor) -> tf.Tensor:
  """A video id as uint8 [VIDEO_KEY_BYTES], zero-padded, so that it can travel with the
  batch through device computations and cross-process gathers (longer ids are cut)."""
  raw = tf.io.decode_raw(video_id, tf.uint8)[:VIDEO_KEY_BYTES]
  return tf.pad(raw, [[0, VIDEO_KEY_BYTES - tf.shape(raw)[0]]])


class _Preprocessor:
  """Decodes, resizes and (for training) augments one clip or sequence."""

  def __init__(self, config: ml_collections.ConfigDict, builder, train: bool):
    self.input = config.input
    self.train = train
    self.seed = config.seed
    self.key = _sequence_key(builder)
    if self.key == 'frames':
      self.channels_stored = builder.info.features['frames'].shape[-1]

  def __call__(self, position: tf.Tensor, item: dict) -> dict:
    cfg = self.input
    if self.key == 'features':  # Cached CNN features: nothing to decode or augment.
      out = {'features': item['features'], 'label': item['label']}
      return self._finish(out, item)
    out = {'frames': frames_to_model(_decode(item['frames'], self.channels_stored),
                                      cfg.image_size, cfg.channels)}
    if 'masks' in item:
      masks = _resize(_decode(item['masks'], 1), cfg.image_size, 'nearest')
      out.update(masks=tf.cast(masks > 0, tf.float32), boxes=item['boxes'])
    seed = tf.cast(tf.stack([tf.cast(self.seed, tf.int64), tf.cast(position, tf.int64)]),
                   tf.int32)
    if cfg.task == 'contrastive':  # Two independently augmented views, eval views fixed.
      views = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
      out['frames'] = tf.concat([augment.augment_clip(
          {'frames': out['frames'][k:k + 1]}, views[k], cfg.augment)['frames']
                                 for k in range(2)], axis=0)
    elif self.train:
      out = augment.augment_clip(out, seed, cfg.augment)
    elif cfg.eval_speckle_looks > 0:  # Robustness studies: fixed speckle on every frame.
      out['frames'] = speckle.add_speckle(out['frames'], cfg.eval_speckle_looks, seed)
    if cfg.heatmap_sigma > 0 and 'boxes' in out:
      out['heatmaps'] = gaussian_heatmaps(out['boxes'], cfg.image_size, cfg.heatmap_sigma)
    for key in ('label', 'frame_index'):
      if key in item:
        out[key] = item[key]
    return self._finish(out, item)

  def _finish(self, out: dict, item: dict) -> dict:
    if not self.train:
      out['video_key'] = encode_key(item['video_id'])
    # Tells examples of different videos apart inside a step (contrastive negatives).
    out['video_hash'] = tf.cast(tf.strings.to_hash_bucket_fast(item['video_id'], 2**31 - 1),
                                tf.int32)
    out['valid'] = tf.ones([tf.shape(out[self.key])[0]], tf.bool)
    return out


def _items(builder, config, split: str, train: bool) -> tf.data.Dataset:
  """Encoded clips (segmentation) or sequences (classification).

  Training streams hold every video of the split (each process then keeps its slots of
  every global batch); evaluation streams hold this process's share of the videos. With
  ``config.dataset.folds.num`` = k > 0 (k-fold cross-validation) both come from
  ``train_split``: training uses the videos outside fold ``folds.index``, evaluation the
  videos inside it, whatever split is asked for.
  """
  task = config.input.task
  _check_features(builder, task)
  folds = config.dataset.folds
  if folds.num:
    split = config.dataset.train_split
  videos = _encoded_videos(builder, split, shard=not train)
  if folds.num:
    table = _fold_table(builder, split, folds.num, folds.seed)
    in_fold = lambda v: tf.equal(table.lookup(v['video_id']), folds.index)  # pylint: disable=unnecessary-lambda-assignment
    videos = videos.filter(lambda v: tf.logical_not(in_fold(v)) if train else in_fold(v))
  if train:
    videos = videos.repeat().shuffle(config.input.video_shuffle_buffer, seed=config.seed)
  if task == 'contrastive':
    return videos.enumerate().flat_map(
        lambda position, v: _view_pairs(v, position, config.input, config.seed))
  if task == 'segmentation':
    if _whole_videos(config, train):
      return videos.map(lambda v: {k: v[k] for k in ('frames', 'masks', 'boxes', 'video_id')})
    return videos.flat_map(lambda v: _clips(v, config.input.clip_length))
  cfg = config.input
  if max(cfg.length_buckets) < cfg.max_frames:
    raise ValueError(f'config.input.length_buckets {list(cfg.length_buckets)} must '
                     f'include a bucket >= config.input.max_frames={cfg.max_frames}.')
  if cfg.sampling not in SAMPLINGS:
    raise ValueError(f'config.input.sampling={cfg.sampling!r}: use one of {SAMPLINGS}.')
  key = _sequence_key(builder)
  return videos.map(lambda v: _sequence(v, key, cfg.max_frames, cfg.sampling))


EVAL_PROTOCOLS = ('clip', 'first_frame')


def _whole_videos(config: ml_collections.ConfigDict, train: bool) -> bool:
  """Whether evaluation items are whole videos (``input.eval_protocol='first_frame'``)."""
  protocol = config.input.eval_protocol
  if protocol not in EVAL_PROTOCOLS:
    raise ValueError(f'config.input.eval_protocol={protocol!r}: use one of {EVAL_PROTOCOLS}.')
  return not train and protocol == 'first_frame'


_FOLDS_CACHE: dict[tuple, dict[str, int]] = {}


def fold_assignment(builder, split: str, num_folds: int, seed: int) -> dict[str, int]:
  """{video_id: fold} for k-fold cross-validation: folds by video (never by frame),
  stratified by label when the dataset has labels, fixed by ``seed``.

  Computed once per (dataset, split, folds, seed) and process: every training stream,
  count and evaluation of a fold needs it, and it reads the whole split.
  """
  key = (str(builder.data_path), split, num_folds, seed)
  if key not in _FOLDS_CACHE:
    _FOLDS_CACHE[key] = _assign_folds(builder, split, num_folds, seed)
  return _FOLDS_CACHE[key]


def _assign_folds(builder, split: str, num_folds: int, seed: int) -> dict[str, int]:
  decoders = {k: tfds.decode.SkipDecoding() for k in _ENCODED if k in builder.info.features}
  has_label = 'label' in builder.info.features
  ids, labels = [], []
  for video in builder.as_dataset(split=split, decoders=decoders).as_numpy_iterator():
    ids.append(video['video_id'].decode())
    labels.append(int(video['label']) if has_label else 0)
  if len(ids) < num_folds:
    raise ValueError(f'{len(ids)} videos in {split!r} cannot make {num_folds} folds.')
  folds = splits_lib.split_videos(ids, [(str(k), 1.0) for k in range(num_folds)], seed,
                                  labels=labels)
  return {video: int(fold) for video, fold in folds.items()}


def _fold_table(builder, split: str, num_folds: int, seed: int) -> tf.lookup.StaticHashTable:
  folds = fold_assignment(builder, split, num_folds, seed)
  return tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(list(folds), list(folds.values()),
                                          key_dtype=tf.string, value_dtype=tf.int64), -1)


def _batch(ds: tf.data.Dataset, config, batch_size: int, drop_remainder: bool,
           train: bool = False):
  if config.input.task == 'contrastive':
    return ds.batch(batch_size, drop_remainder=drop_remainder)
  if config.input.task == 'segmentation':
    if _whole_videos(config, train):  # Videos of different lengths: pad, valid False.
      return ds.padded_batch(batch_size, drop_remainder=drop_remainder)
    return ds.batch(batch_size, drop_remainder=drop_remainder)
  buckets = sorted(config.input.length_buckets)
  ds = ds.padded_batch(batch_size, drop_remainder=drop_remainder)
  return ds.map(lambda b: _pad_to_bucket(b, buckets))


def _pad_to_bucket(batch: dict, buckets: list[int]) -> dict:
  """Pads the time axis of a padded batch to the smallest bucket >= its length."""
  length = tf.shape(batch['valid'])[1]
  bucket = tf.reduce_min(tf.boolean_mask(buckets, tf.constant(buckets) >= length))
  out = dict(batch)
  for key in ({'frames', 'features', 'valid'} & set(batch)):
    pad = [[0, 0], [0, bucket - length]] + [[0, 0]] * (len(batch[key].shape) - 2)
    out[key] = tf.pad(batch[key], pad)
  return out


def local_batch_size(global_batch_size: int) -> int:
  if global_batch_size % jax.process_count():
    raise ValueError(f'batch size {global_batch_size} is not divisible by the number of '
                     f'processes {jax.process_count()}.')
  return global_batch_size // jax.process_count()


def train_batches(config: ml_collections.ConfigDict, builder, start_step: int = 0
                  ) -> Iterator[Batch]:
  """Infinite iterator of this process's training batches, starting at ``start_step``.

  Every process walks the same shuffled stream of encoded items; item i belongs to global
  batch i // B at slot i % B, and process p decodes only the slots
  [p * B_local, (p + 1) * B_local). The global batches, and so training, are therefore
  identical for any number of processes and devices.
  """
  global_size = config.input.batch_size
  batch_size = local_batch_size(global_size)
  process = jax.process_index()
  items = _items(builder, config, config.dataset.train_split, train=True)
  items = items.shuffle(config.input.shuffle_buffer, seed=config.seed + 1)
  items = items.enumerate().skip(start_step * global_size)
  items = items.filter(lambda i, _: (i % global_size) // batch_size == process)
  ds = items.map(_Preprocessor(config, builder, train=True),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = _batch(ds, config, batch_size, drop_remainder=True, train=True)
  return ds.prefetch(2).as_numpy_iterator()


def count_items(config: ml_collections.ConfigDict, builder, split: str) -> int:
  """Clips or sequences of ``split`` on this process (cheap: frames are not decoded)."""
  items = _items(builder, config, split, train=False)
  return int(items.reduce(np.int64(0), lambda n, _: n + 1).numpy())


def eval_batches(config: ml_collections.ConfigDict, builder, split: str
                 ) -> tuple[Iterator[Batch], int]:
  """Exact evaluation batches of this process and how many there are.

  Every clip/video of the split appears exactly once over all processes; padding examples
  (and whole padding batches, so that every process runs the same number of steps) have
  ``valid`` all False.
  """
  batch_size = local_batch_size(config.input.eval_batch_size)
  count = count_items(config, builder, split)
  local_batches = math.ceil(count / batch_size)
  num_batches = local_batches
  if jax.process_count() > 1:
    num_batches = int(np.max(multihost_utils.process_allgather(np.int64(local_batches))))
  ds = _items(builder, config, split, train=False).enumerate()
  ds = ds.map(_Preprocessor(config, builder, train=False),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = _batch(ds, config, batch_size, drop_remainder=False).prefetch(2)

  def generate():
    template = None
    for batch in ds.as_numpy_iterator():
      template = batch
      yield pad_batch(batch, batch_size)
    for _ in range(num_batches - local_batches):
      yield empty_batch(template, batch_size)
  return generate(), num_batches


def pad_batch(batch: Batch, batch_size: int) -> Batch:
  """Pads the leading axis to ``batch_size`` with zeros (``valid`` False, ids empty)."""
  have = len(batch['valid'])
  if have == batch_size:
    return batch
  return {k: np.concatenate([v, np.zeros((batch_size - have,) + v.shape[1:], v.dtype)])
          for k, v in batch.items()}


def empty_batch(template: Batch | None, batch_size: int) -> Batch:
  """A batch of padding only, shaped like ``template`` (a real batch of this split)."""
  if template is None:
    raise ValueError('this process has no evaluation examples: the split has fewer videos '
                     'than there are processes; evaluate with fewer processes.')
  return {k: np.zeros((batch_size,) + v.shape[1:], v.dtype) for k, v in template.items()}
