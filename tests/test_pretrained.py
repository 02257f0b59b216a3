"""Whole-model pretrained weights (``config.init.target=''``), e.g. a converted released
FLA-Net, evaluated as they are (``total_steps=0``) or fine-tuned."""
import numpy as np
import pytest

from input_pipeline import pipeline
from tests import helpers
from usvjax.core import checkpoint
from usvjax.core import evaluate
from usvjax.core import run as run_lib
from usvjax.core import run_checks
from usvjax.core import train
from usvjax.errors import ConfigError


def test_whole_model_weights_are_evaluated_as_they_are_with_zero_steps(data_dir, tmp_path):
  config = helpers.load_config('unet', data_dir)
  weights = helpers.initial_state(config, seed=7)  # Stands for a converted released model.
  converted = helpers.save_whole_model(weights, str(tmp_path / 'converted'))
  with config.unlocked():
    config.total_steps = 0
  with pytest.raises(ConfigError, match=r'total_steps=0: .* \(or 0 with config.init.checkpoint'):
    run_checks.check_run(config, pipeline.get_builder(config.dataset))
  with config.unlocked():
    config.init.checkpoint, config.init.target = converted, ''
  workdir = str(tmp_path / 'as_released')
  state, metrics = train.train_and_evaluate(run_lib.resolve(config), workdir)
  manager = checkpoint.create_manager(workdir, 2, read_only=True)
  assert manager.all_steps() == [0] and int(state.step) == 0
  for tree in ('params', 'batch_stats'):
    want = helpers.flat_local(getattr(weights, tree))
    got = helpers.flat_local(getattr(state, tree))
    assert got.keys() == want.keys()
    for key in want:  # Every variable came from the file, none from the run's own seed.
      np.testing.assert_array_equal(got[key], want[key], err_msg=f'{tree} {key}')
  # The step-0 checkpoint is evaluated like any run's, with the same validation metrics.
  report = evaluate.evaluate_checkpoint(run_lib.resolve(config), workdir, 'latest',
                                        config.dataset.eval_split)
  assert report.metrics['step'] == 0
  assert report.metrics['mean_dice'] == pytest.approx(metrics['mean_dice'], abs=1e-6)
  manager.close()
