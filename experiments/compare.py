r"""Compares methods on one dataset with one command (``usvjax/studies/compare.py``).

  python -m experiments.compare --workdir=runs/compare_cvc \
      --method=unet=configs/unet.py:demo --method=flanet=configs/flanet.py:demo \
      --set=dataset.name=usv_frames_table --set=dataset.config=cvc612 \
      --set=dataset.manual_dir=../shared/data/cvc612 --set=input.channels=3 \
      --set=input.image_size=64 --set=total_steps=300 [--seeds=0,1,2] [--folds=5]

``--method`` (repeatable) is ``NAME=configs/<method>.py:<variant>[;key=value;...]`` (its
own overrides); ``--set`` (repeatable) overrides every method alike. Every (method, seed)
trains, its best checkpoint is scored on the test split, and the tables go to
``WORKDIR/results.md`` and ``results.csv`` with ``curves.png``. Rerunning the same command
skips finished runs and resumes an interrupted one from its last checkpoint.

``--folds=K`` (K > 1) replaces the fixed split with K-fold cross-validation over
``dataset.train_split`` (add ``--set=dataset.train_split=train+validation+test`` for the
whole dataset): every (method, seed, fold) trains on the other folds and its final
checkpoint is scored on the held-out fold; folds by patient where the data has a group
column, else by video, stratified by label, the same for every method and seed
(``--fold_seed``). results.csv gains a ``fold`` column and results.md gives mean ± std over
folds and seeds; the paired tests pair runs of the same fold and seed.

Every method is tested against the first one (a paired bootstrap of the Dice or AUC
difference); ``--reference=NAME`` tests against another row instead (e.g. an ablation's
baseline, or a two-stage run's ``cnn_lstm/cnn_vote``), in ``results_vs_NAME.md`` and
``.csv`` beside the default tables. Rerunning the command with another reference retrains
nothing.
"""
from absl import app
from absl import flags

from experiments import common
from usvjax.studies import compare
from usvjax.studies import compare_report

WORKDIR = flags.DEFINE_string('workdir', None, 'Where the runs and tables go.')
METHODS = flags.DEFINE_multi_string('method', None, 'NAME=configs/<m>.py:<variant>[;key=value]')
SETS = flags.DEFINE_multi_string('set', [], 'key=value override for every method.')
SEEDS = flags.DEFINE_list('seeds', ['0'], 'Seeds; with several, tables show mean ± std.')
FOLDS = flags.DEFINE_integer('folds', 0, 'k-fold cross-validation with this many folds (0: '
                             'the dataset\'s fixed split).')
FOLD_SEED = flags.DEFINE_integer('fold_seed', 0, 'Seed of the fold assignment (with --folds).')
REFERENCE = flags.DEFINE_string('reference', None, 'The row every method is tested against '
                                '(paired bootstrap); default: the first method.')
flags.mark_flags_as_required(['workdir', 'method'])


def main(argv):
  del argv
  common.start_processes(creates_workdir=True)
  try:
    methods = [compare.parse_method(m) for m in METHODS.value]
    results = compare.run(methods, compare.parse_overrides(SETS.value),
                          [int(s) for s in SEEDS.value], WORKDIR.value, FOLDS.value,
                          FOLD_SEED.value, REFERENCE.value)
  except common.USER_ERRORS as e:
    common.fail(e)
  tables = f'{WORKDIR.value}/{compare_report.tables_name(REFERENCE.value)}'
  if results:
    with open(tables + '.md') as f:
      print(f.read())
  print(f'results in {tables}.md, {tables}.csv and {WORKDIR.value}/curves.png')


if __name__ == '__main__':
  app.run(main, flags_parser=common.parse_flags)
