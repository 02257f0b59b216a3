#!/bin/bash
# XLA:CPU options of the pinned jaxlib, each measured side by side with PyTorch in one run
# of experiments/benchmark_torch.py (issue 24.3); rows go to docs/results/xla_cpu_flags.csv.
#   bash scripts/xla_flag_sweep.sh [extra benchmark_torch flags]
set -e
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CSV=${CSV:-docs/results/xla_cpu_flags.csv}
while IFS='|' read -r label flags; do
  echo "== $label: $flags"
  XLA_FLAGS="$flags" TF_CPP_MIN_LOG_LEVEL=2 $PY -m experiments.benchmark_torch \
    --cases=resnet50,res2net50_26w_4s --modes=training,inference --csv="$CSV" \
    --label="$label" "$@"
done <<'VARIANTS'
default|
fast_math|--xla_cpu_enable_fast_math=true
vector_width_512|--xla_cpu_prefer_vector_width=512
classic_runtime|--xla_cpu_use_thunk_runtime=false
onednn_custom_call|--xla_cpu_experimental_onednn_custom_call=true
onednn_fusion_conv|--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION
xnn_greedy|--xla_cpu_use_xnnpack=true --xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY
ynn_conv|--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION
concurrency_scheduler|--xla_cpu_enable_concurrency_optimized_scheduler=true
VARIANTS
