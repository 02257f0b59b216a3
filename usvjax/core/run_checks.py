"""Run settings checked when a run starts, before anything trains or is evaluated.

``check_run(config, builder)`` reads the config and the prepared dataset's split table and
video lengths (frames are not decoded) and raises one ``ValueError`` listing every problem,
each naming its config key and what to do:

* batch sizes: ``input.batch_size`` and ``input.eval_batch_size`` > 0 and divisible by the
  number of devices (data parallelism splits a batch evenly over all devices of all
  processes; so also by the number of processes);
* splits: ``dataset.train_split``, ``eval_split`` and ``test_split`` name splits of the
  dataset (``+`` combinations and slices such as ``train[:80%]`` included) and are not
  empty; with k-fold cross-validation (``dataset.folds.num`` > 0) training and evaluation
  both draw from ``train_split``; each of ``config.evals`` (evaluations during training)
  names such a split, and none is called 'val' (the validation's own name);
* evaluation settings: ``total_steps``, ``log_every``, ``eval_every``, ``checkpoint_every``
  and ``keep_checkpoints`` > 0; ``best_metric`` one of the metrics the task's evaluation
  reports (``usvjax.tasks``: the registry entry's ``metrics``);
  ``best_mode`` 'max' or 'min';
* what the model takes, as its registry entry declares it (``models.capabilities``, an
  ``interfaces.Capabilities``; no model is named here):

  - ``input.image_size`` > 0 and a multiple of the model's ``output_stride``;
  - a clip's ``input.clip_length`` at least the model's ``min_frames``; the frames of one
    example (a clip's ``clip_length``, a sequence's longest ``input.length_buckets``) at
    most its ``max_frames``;
  - a model that ``needs_first_mask`` is evaluated with ``input.eval_protocol=
    'first_frame'``, and that protocol, which streams each video, needs a ``streaming``
    model;
* whether the data suits the method (segmentation; video lengths are read once per split
  with the frames left encoded):

  - a clip model (every segmentation model but a ``single_frame`` one) sees the target and
    its ``input.clip_length`` - 1 predecessors; at a video's start the missing predecessors
    are the first frame repeated (``input_pipeline/clips.py``; with
    ``input.train_clips='distinct_frames'`` training skips those clips). That padding is
    accepted for the first frames of a video, but a video shorter than ``clip_length`` would never
    give the model a full clip (a 1-frame video: a still image posing as a video), so such
    videos in the training, evaluation or test split are an error (in training, not with
    ``input.image_clips``, whose clips are one still frame deformed; the test split is
    checked when training starts too, so that no run trains for hours towards a test it
    cannot take; ``evaluate --split`` checks the split it scores);
  - ``input.eval_protocol='first_frame'`` (STPFNet) gives the first frame's mask and
    scores the later frames: a video of one frame in a split that is evaluated has nothing
    to score, so it is an error.

A sparsely annotated training split is checked too (``annotation_checks``).

A dataset without frames (the feature cache ``usv_features`` of a two-stage run's stage 2)
has no video lengths to check; its splits are checked like any other's.
"""
from __future__ import annotations

import jax
import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from usvjax import interfaces
from usvjax import models
from usvjax import tasks
from usvjax.core import annotation_checks
from usvjax.errors import ConfigError


def check_run(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder,
              test_split: str = '') -> None:
  """Raises ``ValueError`` listing every problem of ``config`` with ``builder``'s data.

  ``test_split`` is the split an evaluation scores when it is not
  ``config.dataset.test_split`` (``evaluate --split``).
  """
  capabilities = models.capabilities(config.model)
  problems = (_batch_problems(config) + _schedule_problems(config) +
              _image_problems(config, capabilities))
  splits = _splits(config, test_split)
  split_problems = _split_problems(splits, builder)
  problems += split_problems.values()
  problems += _evals_problems(config, builder)
  clips = tasks.example_source(config).clip_examples
  frame_problems = _frame_problems(config, capabilities, clips)
  problems += frame_problems
  if clips:
    problems += _protocol_problems(config, capabilities)
    splits = {k: v for k, v in splits.items() if k not in split_problems}
    problems += _length_problems(config, capabilities, builder, splits, not frame_problems)
    if 'train_split' in splits:
      problems += annotation_checks.annotation_problems(config, builder)
  if problems:
    raise ConfigError('the run settings have problems:\n' +
                      '\n'.join(f'  - {p}' for p in problems))


def _positive(config: ml_collections.ConfigDict, key: str) -> list[str]:
  node = config
  for part in key.split('.'):
    node = node[part]
  if isinstance(node, bool) or not isinstance(node, int) or node <= 0:
    return [f'config.{key}={node!r}: set it to a positive integer.']
  return []


def _batch_problems(config: ml_collections.ConfigDict) -> list[str]:
  devices = jax.device_count()
  out = []
  for key in ('input.batch_size', 'input.eval_batch_size'):
    bad = _positive(config, key)
    size = config.input[key.split('.')[1]]
    if not bad and size % devices:
      bad = [f'config.{key}={size} is not divisible by the number of devices {devices} '
             f'({jax.process_count()} process(es)): use a multiple of {devices}, e.g. '
             f'{-(-size // devices) * devices}.']
    out += bad
  return out


def _schedule_problems(config: ml_collections.ConfigDict) -> list[str]:
  out = []
  evaluate_pretrained = config.total_steps == 0 and bool(config.init.checkpoint)
  for key in ('total_steps', 'log_every', 'eval_every', 'checkpoint_every',
              'keep_checkpoints'):
    if key != 'total_steps':
      out += _positive(config, key)
    elif not evaluate_pretrained and _positive(config, key):
      out.append(f'config.total_steps={config.total_steps!r}: set it to a positive integer '
                 '(or 0 with config.init.checkpoint to evaluate pretrained weights as they '
                 'are).')
  entry = tasks.definition(config.input.task)
  metrics = sorted(entry.metrics)
  if config.best_metric not in metrics:
    out.append(f'config.best_metric={config.best_metric!r} is not a metric of task '
               f'{config.input.task!r}: use one of {metrics}.')
  if config.best_mode not in ('max', 'min'):
    out.append(f"config.best_mode={config.best_mode!r}: use 'max' or 'min'.")
  return out


def _image_problems(config: ml_collections.ConfigDict,
                    capabilities: interfaces.Capabilities) -> list[str]:
  bad = _positive(config, 'input.image_size')
  if bad:
    return bad
  size, stride = config.input.image_size, capabilities.output_stride
  if size % stride:
    return [f'config.input.image_size={size}: model {config.model.name!r} needs a multiple '
            f'of {stride}, e.g. {-(-size // stride) * stride}.']
  return []


def _frame_problems(config: ml_collections.ConfigDict, capabilities: interfaces.Capabilities,
                    clips: bool) -> list[str]:
  """The frames of one example (a clip's ``clip_length`` where ``clips``, else the longest
  length bucket of a sequence) against the model's ``min_frames`` (clips) and
  ``max_frames``."""
  name, most = config.model.name, capabilities.max_frames
  if not clips:
    buckets = tuple(config.input.length_buckets)
    if most is None or max(buckets) <= most:
      return []
    return [f'config.input.length_buckets={buckets} reach {max(buckets)} frames but model '
            f'{name!r} takes at most {most} (config.model sets it): cap the buckets (and '
            f'input.max_frames) at {most}, or let the model take {max(buckets)}.']
  bad = _positive(config, 'input.clip_length')
  length, fewest = config.input.clip_length, capabilities.min_frames
  if not bad and length < fewest:
    bad = [f'config.input.clip_length={length}: model {name!r} reads clips of at least '
           f'{fewest} frames (the target and its predecessors): set it to {fewest} or more.']
  if not bad and most is not None and length > most:
    bad = [f'config.input.clip_length={length}: model {name!r} takes at most {most} frames '
           f'per clip (config.model sets it): set it to {most} or fewer.']
  return bad


def _protocol_problems(config: ml_collections.ConfigDict,
                       capabilities: interfaces.Capabilities) -> list[str]:
  """The evaluation protocol against the model: 'first_frame' streams each video from its
  first frame's mask, which a model that propagates that mask needs and a model without
  ``start``/``step`` cannot do."""
  protocol, name = config.input.eval_protocol, config.model.name
  if capabilities.needs_first_mask and protocol != 'first_frame':
    return [f'config.input.eval_protocol={protocol!r}: model {name!r} propagates the first '
            "frame's given mask, so it is evaluated from it: set it to 'first_frame'."]
  if protocol == 'first_frame' and not capabilities.streaming:
    return [f"config.input.eval_protocol='first_frame' streams each video from its first "
            f"frame, but model {name!r} does not stream (no start and step): set it to "
            "'clip'."]
  return []


def _splits(config: ml_collections.ConfigDict, test_split: str) -> dict[str, str]:
  """{config key: split} the run reads (with k-fold cross-validation, train_split serves
  training and evaluation). Scoring a given ``test_split`` reads only it (an external,
  test-only dataset needs no training splits), and the validation split where the task
  picks its threshold there."""
  if test_split and not config.dataset.folds.num:
    calibrates = config.task.get('threshold_rule', 'fixed') != 'fixed'
    return {'test_split': test_split,
            **({'eval_split': config.dataset.eval_split} if calibrates else {})}
  keys = ('train_split', 'test_split') if config.dataset.folds.num else (
      'train_split', 'eval_split', 'test_split')
  splits = {key: config.dataset[key] for key in keys}
  splits['test_split'] = test_split or splits['test_split']
  return splits


def _split_problems(splits: dict[str, str], builder, prefix: str = 'config.dataset.'
                    ) -> dict[str, str]:
  """{split key: its problem} of the splits the run reads (keys under ``prefix``)."""
  out = {}
  for key, split in splits.items():
    try:
      count = builder.info.splits[split].num_examples
    except (ValueError, KeyError) as e:
      out[key] = (f'{prefix}{key}={split!r}: {e} (dataset {builder.info.full_name} has '
                  f'splits {sorted(builder.info.splits)}; combine them with +, slice them as '
                  f"'train[:80%]').")
      continue
    if not count:
      out[key] = (f'{prefix}{key}={split!r} holds no videos in dataset '
                  f'{builder.info.full_name}: choose a non-empty split or slice.')
  return out


def _evals_problems(config: ml_collections.ConfigDict, builder) -> list[str]:
  """Problems of ``config.evals`` (the evaluations during training): a name that takes the
  validation's own ('val'), a split the dataset lacks or that holds no videos."""
  out = ["config.evals.val: 'val' names the validation of config.dataset.eval_split; "
         'give this evaluation another name.'] if 'val' in config.evals else []
  splits = {f'{name}.split': spec.split for name, spec in config.evals.items()}
  return out + list(_split_problems(splits, builder, 'config.evals.').values())


def video_lengths(builder, split: str) -> dict[str, int]:
  """{video id: number of frames} of ``split``, read without decoding a frame."""
  decoders = {k: tfds.decode.SkipDecoding() for k in ('frames', 'masks')
              if k in builder.info.features}
  ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
  ds = ds.map(lambda v: (v['video_id'], tf.shape(v['frames'])[0]))
  return {key.decode(): int(n) for key, n in ds.as_numpy_iterator()}


def _shortest(lengths: dict[str, int], below: int) -> str:
  short = sorted((n, v) for v, n in lengths.items() if n < below)
  listed = ', '.join(f'{v!r} ({n})' for n, v in short[:3])
  return f"{len(short)} video(s) of fewer frames, e.g. {listed}"


def _length_problems(config: ml_collections.ConfigDict, capabilities: interfaces.Capabilities,
                     builder, splits: dict[str, str], clips_fit: bool) -> list[str]:
  """Videos of ``splits`` ({config key: split}) too short for the method; the clip length
  is checked against them where ``clips_fit`` (it suits the model, ``_frame_problems``)."""
  if 'frames' not in builder.info.features:
    return []
  lengths = {key: video_lengths(builder, split) for key, split in splits.items()}
  out = []
  clip_length = config.input.clip_length
  if clips_fit and not capabilities.single_frame and clip_length > 1:
    for key, videos in lengths.items():
      still = key == 'train_split' and config.input.image_clips  # Clips of one frame each.
      if videos and not still and min(videos.values()) < clip_length:
        out.append(
            f'config.input.clip_length={clip_length} (model {config.model.name!r}) but '
            f'config.dataset.{key}={splits[key]!r} has '
            f'{_shortest(videos, clip_length)}: their clips would repeat the first frame '
            f'in place of every missing one. Remove the videos shorter than {clip_length} '
            f'frames from the split, train on clips made from still images '
            f'(config.input.image_clips=True, training splits only), or train a '
            f'single-frame model (configs/unet.py).')
  if config.input.eval_protocol != 'first_frame':
    return out
  for key, videos in lengths.items():
    evaluated = key != 'train_split' or config.dataset.folds.num  # Folds evaluate on it.
    if evaluated and min(videos.values(), default=2) < 2:
      out.append(
          f"config.input.eval_protocol='first_frame' gives each video's first mask and "
          f'scores the later frames, but config.dataset.{key}={splits[key]!r} has '
          f'{_shortest(videos, 2)}: nothing of them can be scored. Remove 1-frame '
          f"videos from the split, or set config.input.eval_protocol='clip'.")
  return out
