// Only here so `go mod tidy` keeps the binaries' modules; scripts/install-control-plane.sh builds them.
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
