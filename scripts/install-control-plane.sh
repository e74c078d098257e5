#!/usr/bin/env bash
# Build the Kubernetes control plane the tests run, from its Go modules, into .cache/control-plane/
# (never committed). ./dev test calls this; a second run with the same versions does nothing.
#
#   scripts/install-control-plane.sh        -> .cache/control-plane/bin/{etcd,kube-apiserver,...}
#
# What and why:
# - kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from k8s.io/kubernetes.
#   Its published go.mod lists its staging modules (k8s.io/api, k8s.io/client-go, ...) at v0.0.0,
#   so scripts/control-plane/kubernetes/go.mod requires k8s.io/kubernetes and replaces each
#   staging module with its matching v0.N release. The version is stamped in with -ldflags as
#   Kubernetes' own build does (Helm and kubectl read it from /version).
# - etcd from go.etcd.io/etcd/server/v3, kwok (fake nodes: scheduled pods become Running and
#   Ready) from sigs.k8s.io/kwok, each from a go.mod of its own (their dependencies differ).
# - kwok-stages.yaml: kwok's stock "fast" node and pod stages plus node leases, taken from the
#   kwok module being built (kustomize/stage/...), so kwok runs with its own defaults.
# - crds/: prometheus-operator's CRDs for ServiceMonitor, PrometheusRule and AlertmanagerConfig,
#   from the github.com/prometheus-operator/prometheus-operator module (example/prometheus-operator-crd),
#   so the test API server validates every monitoring object the operator writes; and KEDA's
#   ScaledObject CRD from github.com/kedacore/keda/v2 (config/crd/bases), for autoscaling.provider keda.
# Go modules and the build cache live under .cache/go, so removing .cache/ starts from scratch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KUBERNETES_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
KEDA_VERSION=v2.21.0
RECIPES=scripts/control-plane

command -v go >/dev/null || { echo "install-control-plane: go is not installed (Go >= 1.26 is needed)" >&2; exit 1; }
stamp="k8s-${KUBERNETES_VERSION}-etcd-${ETCD_VERSION}-kwok-${KWOK_VERSION}-po-${PROMETHEUS_OPERATOR_VERSION}-keda-${KEDA_VERSION}-$(cat "$0" "$RECIPES"/*/go.mod | sha256sum | cut -c1-12)"
cache="$PWD/.cache/control-plane"
dest="$cache/$stamp"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)
if [ -f "$dest/complete" ]; then
  ln -sfn "$stamp/bin" "$cache/bin"
  exit 0
fi

export GOPATH="$PWD/.cache/go" GOMODCACHE="$PWD/.cache/go/mod" GOCACHE="$PWD/.cache/go/build"
export GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
rm -rf "$dest"
mkdir -p "$dest/bin"
started=$(date +%s)
echo "install-control-plane: building Kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION (the first build takes minutes)" >&2

minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
version_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  version_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
(cd "$RECIPES/kubernetes" && go build -trimpath -ldflags="-s -w $version_ldflags" -o "$dest/bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
(cd "$RECIPES/etcd" && go build -trimpath -ldflags="-s -w" -o "$dest/bin/etcd" go.etcd.io/etcd/server/v3)
(cd "$RECIPES/kwok" && go build -trimpath -ldflags="-s -w" -o "$dest/bin/kwok" sigs.k8s.io/kwok/cmd/kwok)

stages="$(cd "$RECIPES/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
         pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
  echo "---"
  cat "$stages/$f"
done > "$dest/bin/kwok-stages.yaml"

mkdir -p "$dest/bin/crds"
go mod download github.com/prometheus-operator/prometheus-operator@"$PROMETHEUS_OPERATOR_VERSION"
crds="$GOMODCACHE/github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION/example/prometheus-operator-crd"
for kind in servicemonitors prometheusrules alertmanagerconfigs; do
  cp "$crds/monitoring.coreos.com_$kind.yaml" "$dest/bin/crds/"
done
go mod download github.com/kedacore/keda/v2@"$KEDA_VERSION"
cp "$GOMODCACHE/github.com/kedacore/keda/v2@$KEDA_VERSION/config/crd/bases/keda.sh_scaledobjects.yaml" "$dest/bin/crds/"

for b in "${binaries[@]}"; do
  [ -x "$dest/bin/$b" ] || { echo "install-control-plane: $b was not built" >&2; exit 1; }
done
seconds=$(( $(date +%s) - started ))
echo "$seconds" > "$dest/build-seconds"
touch "$dest/complete"
ln -sfn "$stamp/bin" "$cache/bin"
find "$cache" -mindepth 1 -maxdepth 1 -type d -name 'k8s-*' ! -name "$stamp" -exec rm -rf {} +  # superseded builds
echo "install-control-plane: built in ${seconds}s into $dest" >&2
