// Command ferretdb is a tiny wrapper around the embeddable FerretDB v1 package
// (github.com/FerretDB/FerretDB/ferretdb) for the local dev stack.
//
// It serves the MongoDB wire protocol on -listen-addr and stores data with the
// SQLite backend in -data-dir (no PostgreSQL needed). Building FerretDB's own
// cmd/ferretdb with a plain `go install` panics at start-up because the module
// zip lacks build/version/version.txt; the embeddable package does not need it.
//
// Usage:
//
//	ferretdb -listen-addr 127.0.0.1:27017 -data-dir /tmp/ferretdb-data
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

	"github.com/FerretDB/FerretDB/ferretdb"
)

const ferretModule = "github.com/FerretDB/FerretDB"

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
	dataDir := flag.String("data-dir", "", "directory for the SQLite backend's files (created if missing; required)")
	logLevel := flag.String("log-level", "warn", "log level: debug, info, warn or error")
	showVersion := flag.Bool("version", false, "print the FerretDB module version and exit")
	flag.Parse()

	if *showVersion {
		fmt.Println(ferretVersion())
		return
	}

	if *dataDir == "" {
		fmt.Fprintln(os.Stderr, "ferretdb: -data-dir is required")
		flag.Usage()
		os.Exit(2)
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: bad -log-level %q: %v\n", *logLevel, err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		logger.Error("bad -data-dir", "error", err)
		os.Exit(1)
	}
	if err = os.MkdirAll(dir, 0o755); err != nil {
		logger.Error("cannot create -data-dir", "error", err)
		os.Exit(1)
	}

	// The SQLite backend wants a "file:" URI naming an existing directory, ending with "/".
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listenAddr},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + filepath.ToSlash(dir) + "/",
	})
	if err != nil {
		logger.Error("cannot start FerretDB", "error", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The listener is already bound here, so this line doubles as a readiness signal.
	fmt.Fprintf(os.Stderr, "ferretdb %s (sqlite, %s) listening: %s\n", ferretVersion(), dir, f.MongoDBURI())

	if err = f.Run(ctx); err != nil {
		logger.Error("FerretDB stopped with an error", "error", err)
		os.Exit(1)
	}
}
