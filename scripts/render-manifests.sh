#!/usr/bin/env bash
# Regenerate manifests/crd.yaml and manifests/operator.yaml from the Helm chart.
# tests/test_chart.py fails when the committed files differ from a fresh render.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
helm="${HELM:-$(scripts/install-helm.sh)}"
python3 scripts/manifests.py "$helm"
