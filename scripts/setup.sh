#!/usr/bin/env bash
# Install what a fresh machine (Debian, Python >= 3.10) lacks and make ./.venv with the package and its test tools.
# Idempotent: a second run only checks. Torch is installed first and pinned to the CPU build that lies on this
# machine's disk (an unpinned torch resolved from scratch pulls a multi-GB CUDA build); the package itself
# accepts any recent torch.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ffmpeg >/dev/null 2>&1; then
  # ffmpeg: MUSDB18 .stem.mp4, mp3/mp4 input, and museval/musdb at import time
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg) >/dev/null
  else
    echo "setup: ffmpeg is missing; install it (sudo apt-get install ffmpeg) for mp3/mp4 input and MUSDB18" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    # Debian splits venv out of python3; a root setup can add it
    rm -rf .venv
    [ "$(id -u)" = 0 ] || { echo "setup: '$PY -m venv' failed; install python3-venv" >&2; exit 1; }
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv) >/dev/null
    "$PY" -m venv .venv
  fi
fi
.venv/bin/python -c "import torch" 2>/dev/null \
  || .venv/bin/python -m pip install -q --disable-pip-version-check "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
