// Added by devstack/provision/go_tools.sh to its copy of FerretDB's cmd/ferretdb (v2.5.0):
// FerretDB's main.go calls setGOMAXPROCS, which its gomaxprocs.go defines for Go < 1.25 only
// (`//go:build !go1.25`), so the command does not compile with a newer Go.  From Go 1.25 on,
// the runtime sets GOMAXPROCS from the container's CPU limit itself: nothing is left to do.

//go:build go1.25

package main

import "log/slog"

func setGOMAXPROCS(*slog.Logger) {}
