#!/usr/bin/env bash
# Install the chattts extra into a venv for CPU work (tests, benchmarks) on machines without a GPU.
#
#   scripts/install-chattts-cpu.sh [VENV]      (default .venv)
#
# Why it is not just `pip install -e .[chattts]`:
# - torch: a plain `torch` requirement resolves to a CUDA build of several GB. torch==2.13.0 is
#   installed first and explicitly; on the development/CI machines pip takes a local CPU wheel
#   of it (~750 MB installed), and the extra's range is then already satisfied.
# - torchaudio: PyPI's torchaudio ships native libraries built against CUDA; beside a CPU torch
#   they fail to load and `import torchaudio` raises. ChatTTS and vocos use only torchaudio's
#   pure-Python mel-spectrogram code, and torchaudio skips its extension when the .so files are
#   absent, so this script deletes them. That is done ONLY here, for the CPU test environment;
#   the container image (service/Dockerfile) installs matching CUDA builds and keeps them.
# - requests: imported by ChatTTS but not declared by it (the extra lists it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${1:-.venv}"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

"${PIP[@]}" "torch==2.13.0" "torchaudio==2.11.0"
"${PIP[@]}" -e ".[chattts]"
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -f "$site"/torchaudio/lib/*.so
"$VENV/bin/python" -c 'import ChatTTS, torch, torchaudio' \
  || { echo "install-chattts-cpu: ChatTTS does not import in $VENV" >&2; exit 1; }
