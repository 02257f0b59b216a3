"""One clear line for a config override of a key the config lacks (issue 37's catalogue,
scripts/failure_catalogue.py): it names the flag and the key, not only the key's name."""
import subprocess
import sys

import pytest

import helpers


@pytest.mark.parametrize('override,hint', [
    ('--config.nope=1', ''),
    ('--config.modle.width=3', 'Did you mean "model" instead of "modle"? '),
])
def test_an_unknown_config_key_is_one_line_naming_the_flag(tmp_path, override, hint):
  key = override.split('.')[1].split('=')[0]
  process = subprocess.run(
      [sys.executable, '-m', 'experiments.train', '--config=configs/unet.py:tiny', override,
       f'--workdir={tmp_path / "run"}'], cwd=helpers.REPO, env=helpers.subprocess_env(1),
      text=True, capture_output=True, timeout=300, check=False)
  output = (process.stdout + process.stderr).strip()
  assert process.returncode == 2 and '\n' not in output, output
  assert output == (f"error: bad flag or config override: {override}: the config has no key "
                    f"'{key}'. {hint}Check the spelling against the config file "
                    '(configs/common.py holds the keys every config shares).')
