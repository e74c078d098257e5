// Only here so `go mod tidy` keeps the binaries' modules; scripts/install-control-plane.sh builds them.
//go:build tools

package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
