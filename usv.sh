#!/usr/bin/env bash
# usvjax in two commands (see README.md):
#   bash usv.sh demo   set up .venv, train the U-Net on synthetic ultrasound video, evaluate it
#   bash usv.sh test   set up .venv (plus the PyTorch references of the parity tests) and
#                      run the whole test suite (two pytest workers: one per core)
#   bash usv.sh lock   regenerate requirements.lock and requirements-test.lock (with hashes,
#                      for Python 3.11 on linux x86_64) after a change to requirements*.txt
# Needs only Python 3.11. Packages come from the locks (every package pinned, with hashes);
# nothing else is downloaded at run time. USV_DEVICE=gpu bash usv.sh demo|test also installs
# JAX's CUDA 12 plugin (requirements-gpu.txt) on top.
set -euo pipefail
cd "$(dirname "$0")"

python311() {
  local python="${PYTHON:-}"
  if [ -z "$python" ]; then
    for candidate in python3.11 python3; do
      if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        python="$candidate"; break
      fi
    done
  fi
  [ -n "$python" ] || { echo "error: Python 3.11 not found (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
  echo "$python"
}

setup() {
  local lock="$1"
  if [ ! -x .venv/bin/python ]; then
    local python
    python=$(python311)
    "$python" -m venv .venv
  fi
  # One line per installed lock file: "<hash of all lock files> <file>".
  local stamp=.venv/.installed hash
  hash=$(cat requirements*.lock | sha256sum | cut -d' ' -f1)
  if ! grep -qx "$hash $lock" "$stamp" 2>/dev/null; then
    echo "Installing $lock into .venv (once) ..."
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet --require-hashes -r "$lock"
    echo "$hash $lock" >> "$stamp"
    if [ "$lock" = requirements-test.lock ]; then
      echo "$hash requirements.lock" >> "$stamp"  # It includes the runtime packages.
    fi
  fi
  case "${USV_DEVICE:-cpu}" in
    cpu) ;;
    gpu)
      local gpu
      gpu="$(sha256sum requirements-gpu.txt | cut -d' ' -f1) requirements-gpu.txt"
      if ! grep -qx "$gpu" "$stamp" 2>/dev/null; then
        echo "Installing requirements-gpu.txt (JAX's CUDA 12 plugin) into .venv (once) ..."
        .venv/bin/python -m pip install --quiet -r requirements-gpu.txt
        echo "$gpu" >> "$stamp"
      fi ;;
    *) echo "error: USV_DEVICE=$USV_DEVICE: use cpu or gpu" >&2; exit 2 ;;
  esac
  export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
}

# Resolves requirements.txt and requirements-test.txt on PyPI (uv's default index) into the
# locks, for Python 3.11 on linux x86_64 whatever machine runs it, with a pinned uv in a
# throwaway venv. Versions already in a lock are kept unless requirements*.txt asks for others.
lock() {
  local python tool
  python=$(python311)
  tool=$(mktemp -d)
  trap "rm -rf '$tool'" EXIT
  "$python" -m venv "$tool"
  "$tool/bin/python" -m pip install --quiet uv==0.13.9
  for name in requirements requirements-test; do
    "$tool/bin/uv" pip compile --quiet --generate-hashes --python-version 3.11 \
      --python-platform x86_64-manylinux_2_28 \
      --custom-compile-command "bash usv.sh lock" --output-file "$name.lock" "$name.txt"
  done
  echo "Wrote requirements.lock and requirements-test.lock; commit them with requirements*.txt."
}

case "${1:-}" in
  demo) shift; setup requirements.lock; exec .venv/bin/python -m experiments.demo "$@" ;;
  test) shift; setup requirements-test.lock; exec .venv/bin/python -m pytest -q -n 2 --dist worksteal tests "$@" ;;
  lock) lock ;;
  *) echo "usage: bash usv.sh demo|test|lock [args]" >&2; exit 2 ;;
esac
