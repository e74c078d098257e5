#!/usr/bin/env bash
# Re-resolve constraints.txt: the newest versions pyproject.toml's ranges allow for the service with
# the chattts extra and the operator, installed into a fresh venv and frozen. Run it on CPython 3.11,
# Linux x86_64 (what the images run), after changing a range; then run ./dev test, which installs the
# new pins and fails on a dependency that drifted or warns of a removal.
#
#   scripts/update-constraints.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check ".[chattts,operator]"
{
  sed -n '/^#/p' constraints.txt
  # --all: torch needs setuptools at run time; pip itself is the installer, not a dependency.
  "$work/venv/bin/python" -m pip freeze --all --exclude kubetts --exclude pip | grep -v '^-e ' | sort -f
} > "$work/constraints.txt"
mv "$work/constraints.txt" constraints.txt
echo "update-constraints: $(grep -vc '^#' constraints.txt) pins written to constraints.txt" >&2
