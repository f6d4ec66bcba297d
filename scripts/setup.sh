#!/usr/bin/env bash
# Install what a fresh machine (Debian, Python >= 3.10) lacks and make ./.venv with the package and its test tools.
# Idempotent: a second run only checks. Torch is installed first and pinned to the CPU build that lies on this
# machine's disk (an unpinned torch resolved from scratch pulls a multi-GB CUDA build); the package itself
# accepts any recent torch.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_UPDATED=
apt_install() {  # as root: one apt-get update per run, then the packages (no recommends: they would pull in GUIs)
  [ -n "$APT_UPDATED" ] || { apt-get update -qq >/dev/null; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v ffmpeg >/dev/null 2>&1; then
  # ffmpeg: MUSDB18 .stem.mp4, mp3/mp4 input, and museval/musdb at import time
  if [ "$(id -u)" = 0 ]; then
    apt_install ffmpeg
  else
    echo "setup: ffmpeg is missing; install it (sudo apt-get install ffmpeg) for mp3/mp4 input and MUSDB18" >&2
  fi
fi

# chromium: the test that opens evaluate.py's listening page (results/index.html) in a real headless browser
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt_install chromium
  else
    echo "setup: chromium is missing; install it (sudo apt-get install chromium) for the listening page's browser test" >&2
  fi
fi

# the rendered default dataset: FluidSynth, the GM soundfonts and AVL drum kits, MMA's grooves, Festival's
# diphone voices and espeak-ng (see conditioned_sep/data/render/tools.py); hydrogen-drumkits: the real kits of the
# --hydrogen-kits variant (python -m conditioned_sep.data.render ROOT --hydrogen-kits 0.5) and their tests
RENDER_PACKAGES="fluidsynth timgm6mb-soundfont csound-soundfont avldrums.lv2-soundfont mma festival festvox-kdlpc16k \
festvox-itapc16k festvox-italp16k espeak-ng hydrogen-drumkits"
MISSING=$(for p in $RENDER_PACKAGES; do dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
if [ -n "$MISSING" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt_install $MISSING
  else
    echo "setup: the default dataset needs:" $MISSING "; install them (sudo apt-get install" $MISSING ")" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    # Debian splits venv out of python3; a root setup can add it
    rm -rf .venv
    [ "$(id -u)" = 0 ] || { echo "setup: '$PY -m venv' failed; install python3-venv" >&2; exit 1; }
    apt_install python3-venv
    "$PY" -m venv .venv
  fi
fi
.venv/bin/python -c "import torch" 2>/dev/null \
  || .venv/bin/python -m pip install -q --disable-pip-version-check "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
