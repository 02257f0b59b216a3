"""scripts/evaluation_variants.py: each variant's rows and its paired test against the raw
weights without TTA (the scoring itself, --weights and --tta, is tested in test_tta and
test_mean_teacher)."""
import csv
import sys

import numpy as np
import pytest

import helpers


def test_every_variant_is_paired_with_the_raw_weights_of_its_own_seed(tmp_path, monkeypatch):
  script = helpers.load_script('evaluation_variants')
  frames = {'a': 10, 'b': 30, 'c': 20}
  # Lesion Dice per (seed, variant, video): the EMA adds 0.1 on every video of seed 0 only.
  dice = {(seed, variant): {v: 0.3 + 0.1 * i + (0.1 if variant.startswith('ema') and
                                                  seed == 0 else 0.0)
                            for i, v in enumerate(frames)}
          for seed in (0, 1) for variant in script.VARIANTS}

  def score(run_dir, checkpoint):
    assert checkpoint == 'latest'
    seed = int(run_dir[-1])
    return ({'dataset': 'd', 'image_size': 64, 'steps': 9},
            {variant: dict({k: float(np.mean(list(dice[seed, variant].values())))
                            for k in script.METRICS},
                           video_dice={v: [d, frames[v]] for v, d in dice[seed, variant].items()})
             for variant in script.VARIANTS})
  monkeypatch.setattr(script, 'score', score)
  for seed in (0, 1):
    (tmp_path / 'm' / f'seed{seed}').mkdir(parents=True)
    (tmp_path / 'm' / f'seed{seed}' / 'config.py').write_text('')
  output = tmp_path / 'rows.csv'
  monkeypatch.setattr(sys, 'argv', ['x', f'--method_dir={tmp_path / "m"}',
                                    f'--output={output}'])
  monkeypatch.setattr(script.console, 'set_up', lambda *args: None)
  script.main()
  with open(output, newline='') as f:
    rows = {(r['variant'], r['seed']): r for r in csv.DictReader(f)}
  assert set(rows) == {(v, s) for v in script.VARIANTS for s in ('0', '1', 'pooled')}
  assert float(rows['ema', '0']['paired_dice_difference']) == pytest.approx(0.1)
  assert float(rows['ema', '1']['paired_dice_difference']) == pytest.approx(0.0)
  # Pooled: each video's difference averaged over the seeds (0.05), frame-weighted.
  assert float(rows['ema', 'pooled']['paired_dice_difference']) == pytest.approx(0.05)
  assert float(rows['raw+flip', 'pooled']['paired_dice_difference']) == pytest.approx(0.0)
  assert rows['raw', 'pooled']['paired_dice_difference'] == ''
  assert (rows['ema+flip', '0']['weights'], rows['ema+flip', '0']['tta']) == ('ema', 'flip')
  assert rows['ema', '0']['dataset'] == 'd'
