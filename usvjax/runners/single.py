"""The ``single`` runner: one model trained in the workdir, one report row named after it.

The other runners train their stages with ``train.train_and_evaluate`` and score their
last stage with ``Single.evaluate`` on that stage's config."""
from __future__ import annotations

import ml_collections

from usvjax import interfaces
from usvjax.core import evaluate as evaluate_lib
from usvjax.core import run as run_lib
from usvjax.core import train as train_lib


class Single:
  """One model, one run directory."""

  def train(self, config: ml_collections.ConfigDict, workdir: str,
            which: str = 'best') -> dict[str, dict]:
    del which
    return {config.model.name: train_lib.train_and_evaluate(run_lib.resolve(config),
                                                            workdir).metrics}

  def evaluate(self, config: ml_collections.ConfigDict, workdir: str, split: str = '',
               which: str = 'best', output_dir: str = '') -> dict[str, evaluate_lib.Report]:
    run = run_lib.resolve(config, split or config.dataset.test_split)
    return {config.model.name: evaluate_lib.evaluate_checkpoint(run, workdir, which, split,
                                                                output_dir)}

  def headline(self, config: ml_collections.ConfigDict, workdir: str = ''
               ) -> interfaces.Headline:
    del workdir  # The config reads nothing of the run.
    return interfaces.Headline(config.model.name, config, '')
