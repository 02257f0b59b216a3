#!/usr/bin/env bash
# usvjax in two commands (see README.md):
#   bash usv.sh demo   set up .venv, train the U-Net on synthetic ultrasound video, evaluate it
#   bash usv.sh test   set up .venv (plus the PyTorch references of the parity tests) and
#                      run the whole test suite (two pytest workers: one per core)
# Needs only Python 3.11. Packages come from requirements.txt (pinned); nothing else is
# downloaded at run time.
set -euo pipefail
cd "$(dirname "$0")"

setup() {
  local requirements="$1"
  local python="${PYTHON:-}"
  if [ -z "$python" ]; then
    for candidate in python3.11 python3; do
      if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        python="$candidate"; break
      fi
    done
  fi
  [ -n "$python" ] || { echo "error: Python 3.11 not found (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  # One line per installed requirements file: "<hash of all requirements files> <file>".
  local stamp=.venv/.installed hash
  hash=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
  if ! grep -qx "$hash $requirements" "$stamp" 2>/dev/null; then
    echo "Installing pinned $requirements into .venv (once) ..."
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r "$requirements"
    echo "$hash $requirements" >> "$stamp"
    if [ "$requirements" = requirements-test.txt ]; then
      echo "$hash requirements.txt" >> "$stamp"  # It includes the runtime requirements.
    fi
  fi
  export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
}

case "${1:-}" in
  demo) shift; setup requirements.txt; exec .venv/bin/python -m experiments.demo "$@" ;;
  test) shift; setup requirements-test.txt; exec .venv/bin/python -m pytest -q -n 2 --dist worksteal tests "$@" ;;
  *) echo "usage: bash usv.sh demo|test [args]" >&2; exit 2 ;;
esac
