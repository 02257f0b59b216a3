"""Two-stage training of Cui et al.: a frame CNN, its cached features, LSTMs on them.

A two-stage config (``configs/cnn_lstm.py``) is the sequence model's config (model,
optimizer, steps, input) plus

* ``runner = 'two_stage'`` (``usvjax.runners``);
* ``frame_cnn``: a frame-classifier config (``configs/cnn_aver.py``) for stage 1 without
  ``dataset`` and ``seed``: stage 1 uses the top level's (folds included);
* ``equal_frames``: if > 0, an equal-frame CNN-LSTM is trained as well, on exactly this
  many uniformly sampled frames per video (12 in the paper; frames of shorter videos
  repeat, so every row is scored on the same videos; the paper instead dropped videos
  with fewer frames from its equal-frame dataset).

Run directory::

  frame_cnn/   stage 1: the frame CNN trained on frames with the video's label
  features/    the feature cache (``usvjax.runners.feature_cache``) of every source split
  lstm/        stage 2: the variable-frame CNN-LSTM on the cached features
  lstm_equal/  the equal-frame CNN-LSTM (if ``equal_frames``)

Every stage resumes like any run; the cache is rebuilt only if the frame CNN's checkpoint
changed. ``evaluate`` scores the paper's Table 3/4 rows on one split:

* ``cnn_vote``, ``cnn_aver``: the frame CNN on every (up to ``frame_cnn.input.max_frames``)
  frame, majority vote / mean probability (``models.frame_classifier``);
* ``key_frame``: the frame CNN on one frame per video. No clinician picks exist here, so
  the key frame is the middle frame (uniform sampling of one frame); and it is the same
  stage-1 CNN, trained on all frames, not one trained on key frames only as in the paper;
* ``equal_frame_lstm``, ``variable_frame_lstm``: the two LSTMs.
"""
from __future__ import annotations

import os

import ml_collections

from usvjax import interfaces
from usvjax.core import evaluate as evaluate_lib
from usvjax.core import run as run_lib
from usvjax.core import train
from usvjax.errors import ConfigError
from usvjax.reporting import console
from usvjax.runners import feature_cache

ROWS = ('cnn_vote', 'cnn_aver', 'key_frame', 'equal_frame_lstm', 'variable_frame_lstm')


def frame_cnn_config(config: ml_collections.ConfigDict, aggregation: str = 'average',
                     max_frames: int = 0) -> ml_collections.ConfigDict:
  """Stage 1's config: ``config.frame_cnn`` with the top level's data and seed."""
  c = config.frame_cnn.copy_and_resolve_references()
  with c.unlocked():
    c.dataset = config.dataset.copy_and_resolve_references()
    c.seed = config.seed
  c.model.aggregation = aggregation
  if max_frames:
    c.input.max_frames = max_frames
  return c


def sequence_config(config: ml_collections.ConfigDict, workdir: str,
                    equal: bool = False) -> ml_collections.ConfigDict:
  """Stage 2's config: ``config`` reading the feature cache of ``workdir``."""
  c = config.copy_and_resolve_references()
  c.dataset.update(name=feature_cache.NAME, config='', manual_dir='',
                   data_dir=os.path.join(workdir, 'features'))
  if equal:
    c.input.update(max_frames=config.equal_frames, sampling='exact',
                   length_buckets=(config.equal_frames,))
  return c


def source_splits(config: ml_collections.ConfigDict) -> list[str]:
  """The dataset splits the cache must hold: every part of the train/eval/test splits."""
  names = []
  for split in (config.dataset.train_split, config.dataset.eval_split,
                config.dataset.test_split):
    for part in split.split('+'):
      if '[' in part:
        raise ConfigError(f'split {split!r}: a two-stage config needs whole splits (the cache '
                          'is stored per split); combine whole splits with + instead.')
      if part.strip() not in names:
        names.append(part.strip())
  return names


def _stages(config: ml_collections.ConfigDict, workdir: str) -> dict[str, tuple]:
  """{row: (config, run directory)} of the rows that are trained runs of their own."""
  stages = {'variable_frame_lstm': (sequence_config(config, workdir),
                                    os.path.join(workdir, 'lstm'))}
  if config.equal_frames:
    stages['equal_frame_lstm'] = (sequence_config(config, workdir, equal=True),
                                  os.path.join(workdir, 'lstm_equal'))
  return stages


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       which: str = 'best') -> dict[str, dict]:
  """Trains the frame CNN, caches features from its ``which`` checkpoint, trains the LSTMs.

  Returns:
    {stage: validation metrics at its last step}.
  """
  cnn_config = frame_cnn_config(config)
  cnn_dir = os.path.join(workdir, 'frame_cnn')
  results = {'frame_cnn': train.train_and_evaluate(run_lib.resolve(cnn_config), cnn_dir).metrics}
  console.say(f'caching frame features of {cnn_dir} ({which} checkpoint)')
  feature_cache.extract(feature_cache.resolve(cnn_config), cnn_dir, which,
                        os.path.join(workdir, 'features'), source_splits(config))
  for row, (stage_config, stage_dir) in _stages(config, workdir).items():
    console.say(f'training {row} in {stage_dir}')
    results[row] = train.train_and_evaluate(run_lib.resolve(stage_config), stage_dir).metrics
  return results


def evaluate(config: ml_collections.ConfigDict, workdir: str, split: str = '',
             which: str = 'best', output_dir: str = '') -> dict[str, evaluate_lib.Report]:
  """Exact reports of every row of ``ROWS`` on ``split``, in ``<output_dir>/<row>``.

  ``output_dir`` defaults to ``<workdir>/eval_<split>``.
  """
  split = split or config.dataset.test_split
  output_dir = output_dir or os.path.join(workdir, f'eval_{split}')
  cnn_dir = os.path.join(workdir, 'frame_cnn')
  runs = {'cnn_vote': (frame_cnn_config(config, 'vote'), cnn_dir),
          'cnn_aver': (frame_cnn_config(config), cnn_dir),
          'key_frame': (frame_cnn_config(config, max_frames=1), cnn_dir),
          **_stages(config, workdir)}
  return {row: evaluate_lib.evaluate_checkpoint(
              run_lib.resolve(run_config, split), run_dir, which, split,
              os.path.join(output_dir, row), calibration_file(row))
          for row, (run_config, run_dir) in sorted(runs.items(), key=lambda r: ROWS.index(r[0]))}


def calibration_file(row: str) -> str:
  """Where ``evaluate --calibrate`` stores ``row``'s temperature in its stage's folder: the
  frame CNN's folder holds three rows; ``cnn_aver`` (the frame CNN as ``configs/cnn_aver``
  scores it, as ``classify_video`` and export read it) keeps the usual name."""
  if row in ('cnn_vote', 'key_frame'):
    return f'calibration_{row}.json'
  return evaluate_lib.CALIBRATION_FILE


class TwoStage:
  """The ``interfaces.Runner`` of two-stage configs; its headline row is the variable-frame
  CNN-LSTM."""

  def train(self, config: ml_collections.ConfigDict, workdir: str,
            which: str = 'best') -> dict[str, dict]:
    return train_and_evaluate(config, workdir, which)

  def evaluate(self, config: ml_collections.ConfigDict, workdir: str, split: str = '',
               which: str = 'best', output_dir: str = '') -> dict[str, evaluate_lib.Report]:
    return evaluate(config, workdir, split, which, output_dir)

  def headline(self, config: ml_collections.ConfigDict, workdir: str = ''
               ) -> interfaces.Headline:
    stage_config, stage_dir = _stages(config, workdir)['variable_frame_lstm']
    return interfaces.Headline('variable_frame_lstm', stage_config,
                               os.path.relpath(stage_dir, workdir or '.'))
