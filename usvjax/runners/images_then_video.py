"""The ``images_then_video`` runner: STM's two training stages for a video segmenter.

Stage 1 (in ``<workdir>/images``) trains the model on clips made from still images
(``config.input.image_clips``: each annotated frame becomes a clip of randomly deformed
copies, ``input_pipeline/image_clips.py``) for ``config.image_stage.total_steps`` steps,
on the run's dataset or on ``config.image_stage.dataset_name`` / ``dataset_config`` /
``dataset_manual_dir`` (a dataset of stills, e.g. 1-frame videos) where given. Stage 2
(the workdir) trains the whole model on video clips from stage 1's last checkpoint
(``init.target=''``), for the run's own ``total_steps``; it is the row a comparison
scores. Oh et al. (STM, ICCV 2019, Sec. 4.1) pre-train on images, then train on video.
``configs/common.images_then_video`` adds the stage's keys to a method config.
"""
from __future__ import annotations

import os

import ml_collections

from usvjax import interfaces
from usvjax.core import evaluate as evaluate_lib
from usvjax.core import run as run_lib
from usvjax.core import train as train_lib
from usvjax.errors import ConfigError
from usvjax.reporting import console
from usvjax.runners import single

IMAGES_DIR = 'images'


def _without_stage(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  c = config.copy_and_resolve_references()
  with c.unlocked():
    del c['image_stage']
    c.runner = 'single'
  return c


def images_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Stage 1's config: ``config`` on image clips for ``image_stage.total_steps``."""
  stage = config.image_stage
  c = _without_stage(config)
  c.input.image_clips = True
  c.total_steps = stage.total_steps
  for key in ('name', 'config', 'manual_dir'):
    if stage[f'dataset_{key}']:
      c.dataset[key] = stage[f'dataset_{key}']
  return c


def video_config(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """Stage 2's config: ``config`` on video, the whole model initialised from stage 1."""
  if config.init.checkpoint:
    raise ConfigError(f'config.init.checkpoint={config.init.checkpoint!r}: an '
                      'images_then_video run initialises stage 2 from its image stage; '
                      'initialise the image stage instead (config.runner=single with '
                      'config.input.image_clips=True), or set config.runner=single.')
  c = _without_stage(config)
  c.input.image_clips = False
  c.init.checkpoint, c.init.target = os.path.join(workdir, IMAGES_DIR), ''
  return c


class ImagesThenVideo:
  """Image clips first, then video (``interfaces.Runner``)."""

  def train(self, config: ml_collections.ConfigDict, workdir: str,
            which: str = 'best') -> dict[str, dict]:
    del which
    images_dir = os.path.join(workdir, IMAGES_DIR)
    console.say(f'stage 1: {config.model.name} on clips from still images in {images_dir}')
    results = {IMAGES_DIR: train_lib.train_and_evaluate(
        run_lib.resolve(images_config(config)), images_dir).metrics}
    console.say(f'stage 2: {config.model.name} on video in {workdir}')
    results[config.model.name] = train_lib.train_and_evaluate(
        run_lib.resolve(video_config(config, workdir)), workdir).metrics
    return results

  def evaluate(self, config: ml_collections.ConfigDict, workdir: str, split: str = '',
               which: str = 'best', output_dir: str = '') -> dict[str, evaluate_lib.Report]:
    return single.Single().evaluate(video_config(config, workdir), workdir, split, which,
                                    output_dir)

  def headline(self, config: ml_collections.ConfigDict, workdir: str = ''
               ) -> interfaces.Headline:
    return interfaces.Headline(config.model.name, video_config(config, workdir), '')
