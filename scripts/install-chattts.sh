#!/usr/bin/env bash
# Install the project with the chattts extra into a venv, at the exact versions the container image
# ships (constraints.txt), for tests and benchmarks.
#
#   scripts/install-chattts.sh [VENV]      (default .venv)
#
# torch is PyPI's default Linux build: it carries CUDA 13.0 libraries (nvidia-* wheels, a few GB)
# and runs on a machine without a GPU as well, so CI and the image use the same wheels.
# ChatTTS imports requests without declaring it; the extra lists it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${1:-.venv}"

"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  --constraint constraints.txt -e ".[chattts]"
"$VENV/bin/python" -c 'import ChatTTS, torch, torchaudio' \
  || { echo "install-chattts: ChatTTS does not import in $VENV" >&2; exit 1; }
