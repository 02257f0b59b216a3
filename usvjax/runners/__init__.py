"""Runner registry: how a config is trained and evaluated, picked by ``config.runner``.

* ``single``: one model trained in the workdir (``usvjax.runners.single``), one report
  row named after the model;
* ``two_stage``: Cui et al.'s frame CNN, feature cache and sequence models
  (``usvjax.runners.two_stage``), five report rows;
* ``pretrain_finetune``: contrastive pretraining (``config.pretrain``, a contrastive config
  without ``dataset`` and ``seed``: it uses the top level's, folds included, so a
  cross-validation fold pretrains on that fold's training videos only) in
  ``<workdir>/pretrain``, then the model in the workdir, its ``init.target`` initialised
  from the pretraining run (CLMAN);
* ``images_then_video``: a video segmenter trained on clips made from still images, then
  on video from there (STM's stages; ``usvjax.runners.images_then_video``, needs
  ``config.image_stage``).

``train``, ``evaluate``, ``cross_validate`` and ``compare`` look the runner up here; none of
them asks what kind of run it is. Each runner is an ``interfaces.Runner``. Every run starts
with ``train`` below, which records the run's config and data in its workdir
(``usvjax.reporting.provenance``) before its runner trains it; its runner's start-up
checks (``run.resolve``) come later, stage by stage, so a refused run's config is replaced
by the next one as long as no stage has saved a checkpoint (``provenance.record``).
"""
from __future__ import annotations

import os

import ml_collections

from usvjax import interfaces
from usvjax.core import evaluate as evaluate_lib
from usvjax.core import run as run_lib
from usvjax.core import train as train_lib
from usvjax.core import workdir as workdir_lib
from usvjax.errors import ConfigError
from usvjax.reporting import console
from usvjax.reporting import provenance
from usvjax.runners import images_then_video
from usvjax.runners import single
from usvjax.runners import two_stage


PRETRAIN_DIR = 'pretrain'


def pretrain_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The pretraining run's config: ``config.pretrain`` with the top level's data and seed."""
  c = config.pretrain.copy_and_resolve_references()
  with c.unlocked():
    c.dataset = config.dataset.copy_and_resolve_references()
    c.seed = config.seed
  return c


def finetune_config(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """The model's config: ``config`` initialised from the pretraining run in ``workdir``."""
  if config.init.checkpoint:
    raise ConfigError(f'config.init.checkpoint={config.init.checkpoint!r}: a pretrain_finetune '
                      'run initialises from its own pretraining; to start from another run, '
                      'set config.runner=single.')
  c = config.copy_and_resolve_references()
  with c.unlocked():
    del c['pretrain']
    c.runner = 'single'
  c.init.checkpoint = os.path.join(workdir, PRETRAIN_DIR)
  return c


class PretrainFinetune:
  """Contrastive pretraining, then the model initialised from it (CLMAN)."""

  def train(self, config: ml_collections.ConfigDict, workdir: str,
            which: str = 'best') -> dict[str, dict]:
    del which
    pretrain_dir = os.path.join(workdir, PRETRAIN_DIR)
    console.say(f'contrastive pretraining in {pretrain_dir}')
    results = {PRETRAIN_DIR: train_lib.train_and_evaluate(
        run_lib.resolve(pretrain_config(config)), pretrain_dir).metrics}
    console.say(f'training {config.model.name} in {workdir}')
    results[config.model.name] = train_lib.train_and_evaluate(
        run_lib.resolve(finetune_config(config, workdir)), workdir).metrics
    return results

  def evaluate(self, config: ml_collections.ConfigDict, workdir: str, split: str = '',
               which: str = 'best', output_dir: str = '') -> dict[str, evaluate_lib.Report]:
    return single.Single().evaluate(finetune_config(config, workdir), workdir, split, which,
                                    output_dir)

  def headline(self, config: ml_collections.ConfigDict, workdir: str = ''
               ) -> interfaces.Headline:
    return interfaces.Headline(config.model.name, finetune_config(config, workdir), '')


RUNNERS: dict[str, interfaces.Runner] = {
    'single': single.Single(),
    'two_stage': two_stage.TwoStage(),
    'pretrain_finetune': PretrainFinetune(),
    'images_then_video': images_then_video.ImagesThenVideo(),
}


def get(config: ml_collections.ConfigDict) -> interfaces.Runner:
  if config.runner not in RUNNERS:
    raise ConfigError(f'config.runner={config.runner!r}: use one of {sorted(RUNNERS)}.')
  return RUNNERS[config.runner]


def train(config: ml_collections.ConfigDict, workdir: str, which: str = 'best'
          ) -> dict[str, dict]:
  """Records the run (``provenance.record``) and trains it with its runner; {row: the
  validation metrics at the end}. ``which`` checkpoint the runner's later stages use.
  One command: its dataset is prepared once for every stage (``run.prepared_once``).

  A workdir that cannot be written (``workdir.create_writable``) or that a running trainer
  holds (``workdir.check_free``) stops it first, before the dataset is prepared or a config
  recorded over that trainer's. The prepared data is summarised in one line."""
  runner = get(config)
  workdir_lib.create_writable(workdir)
  workdir_lib.check_free(workdir)
  with run_lib.prepared_once():
    with console.library_output():
      builder = run_lib.prepare_dataset(config.dataset)
    console.say(data_summary(builder))
    provenance.record(config, workdir, builder)
    return runner.train(config, workdir, which)


def data_summary(builder) -> str:
  """'data: <name/config/version> in <folder>: <n> <split> videos, ...' of a prepared
  TFDS builder."""
  splits = ', '.join(f'{split.num_examples} {name}'
                     for name, split in builder.info.splits.items())
  return f'data: {builder.info.full_name} in {builder.data_dir}: {splits} videos'


def evaluate(config: ml_collections.ConfigDict, workdir: str, split: str = '',
             which: str = 'best', output_dir: str = '') -> dict[str, evaluate_lib.Report]:
  """{row: report} of every row the run in ``workdir`` scores on ``split``, its dataset
  prepared once for every row (a first conversion, e.g. of an external test set, with the
  libraries' output sent to the log, as in training)."""
  with run_lib.prepared_once():
    with console.library_output():
      run_lib.prepare_dataset(config.dataset)
    return get(config).evaluate(config, workdir, split, which, output_dir)
