// Command ferretdb is a tiny wrapper around the embeddable FerretDB v2 package
// (github.com/FerretDB/FerretDB/v2/ferretdb) for the local dev stack.
//
// It serves the MongoDB wire protocol on -listen-addr and stores data in the
// PostgreSQL (with the DocumentDB extension) at -postgresql-url. FerretDB's
// own cmd/ferretdb@v2.5.0 does not compile with Go >= 1.25 (its
// gomaxprocs.go is `//go:build !go1.25`, but main.go calls it anyway); the
// embeddable package builds with any Go >= 1.24.
//
// The embeddable package always runs without authentication (any client may
// connect) and this wrapper switches telemetry off.
//
// Usage:
//
//	ferretdb -listen-addr 127.0.0.1:27017 \
//	    -postgresql-url postgres://postgres@127.0.0.1:5433/postgres -state-dir /tmp/ferretdb-state
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"github.com/FerretDB/FerretDB/v2/ferretdb"
)

const ferretModule = "github.com/FerretDB/FerretDB/v2"

func ferretVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == ferretModule {
				if d.Replace != nil {
					return d.Replace.Version
				}
				return d.Version
			}
		}
	}
	return "unknown"
}

func main() {
	listenAddr := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to serve the MongoDB wire protocol on (host:port; port 0 picks a free one)")
	pgURL := flag.String("postgresql-url", "", "URL of the PostgreSQL with the DocumentDB extension (required)")
	stateDir := flag.String("state-dir", "", "directory for FerretDB's state.json (created if missing; required)")
	logLevel := flag.String("log-level", "warn", "log level: debug, info, warn or error")
	showVersion := flag.Bool("version", false, "print the FerretDB module version and exit")
	flag.Parse()

	if *showVersion {
		fmt.Println(ferretVersion())
		return
	}

	if *pgURL == "" || *stateDir == "" {
		fmt.Fprintln(os.Stderr, "ferretdb: -postgresql-url and -state-dir are required")
		flag.Usage()
		os.Exit(2)
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: bad -log-level %q: %v\n", *logLevel, err)
		os.Exit(2)
	}

	dir, err := filepath.Abs(*stateDir)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: bad -state-dir %q: %v\n", *stateDir, err)
		os.Exit(1)
	}

	telemetry := false
	f, err := ferretdb.New(&ferretdb.Config{
		PostgreSQLURL: *pgURL,
		ListenAddr:    *listenAddr,
		StateDir:      dir,
		LogLevel:      level,
		LogOutput:     os.Stderr,
		Telemetry:     &telemetry,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: cannot start: %v\n", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	done := make(chan struct{})
	go func() {
		f.Run(ctx)
		close(done)
	}()

	// New has bound the listener already, so this line doubles as a readiness signal
	// (FerretDB connects to PostgreSQL lazily, on the first client request).
	fmt.Fprintf(os.Stderr, "ferretdb %s (postgresql) listening: %s\n", ferretVersion(), f.MongoDBURI())

	<-done
	if ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "ferretdb: stopped unexpectedly")
		os.Exit(1)
	}
}
