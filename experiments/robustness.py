r"""Speckle robustness study of a segmentation checkpoint (DSANet, Table II).

  python -m experiments.robustness --workdir=runs/dsanet \
      [--looks=0,25,20] [--checkpoint=best] [--split=test] [--output_dir=DIR]

Evaluates the split clean (L=0) and with multiplicative Gamma speckle of each look number L,
added to every frame at its stored resolution before it is resized to the model's input
(see usvjax/studies/robustness.py), prints the MAE / IoU / Dice table with the change against clean
input, and writes it (robustness.md, robustness.json) with one report per condition into
OUTPUT_DIR (default WORKDIR/robustness).
"""
from absl import app
from absl import flags

from experiments import common
from usvjax.core import run as run_lib
from usvjax.studies import robustness

RUN = common.define_run_flags('Default: WORKDIR/robustness.')
LOOKS = flags.DEFINE_list('looks', ['0', '25', '20'], 'Look numbers; 0 = clean.')


def main(argv):
  del argv
  common.start_processes()
  try:
    config = common.run_config(RUN.config.value, RUN.workdir.value)
    results = robustness.run(run_lib.resolve(config, RUN.split.value), RUN.workdir.value,
                             [float(v) for v in LOOKS.value], RUN.checkpoint.value,
                             RUN.split.value, RUN.output_dir.value)
  except common.USER_ERRORS as e:
    common.fail(e)
  print(robustness.markdown_table(results))


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
