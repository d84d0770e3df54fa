// Command clinicalapi is a clinical HTTP API built on Go's standard library: an eGFR calculator
// (CKD-EPI), FHIR R4 Patient endpoints and their live documentation.
package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// openapiJSON is the hand-written contract, served at /openapi.json and checked against the handlers
// by the tests. (go:embed needs package-level variables; these are never written.)
//
//go:embed openapi.json
var openapiJSON []byte

// docsFiles is the documentation page: vendored Swagger UI (see docs/SWAGGER-UI-VERSION) and our
// own index.html and init.js. Only what the page needs is embedded.
//
//go:embed docs/index.html docs/init.js docs/swagger-ui-bundle.js docs/swagger-ui.css docs/favicon-16x16.png docs/favicon-32x32.png docs/LICENSE docs/NOTICE docs/swagger-ui-bundle.js.LICENSE.txt
var docsFiles embed.FS

func main() {
	ctx := context.Background()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// config is the service's configuration, read once from the environment at start.
type config struct {
	addr    string // listen address, ":PORT"
	dataDir string // where the Patient journal lives
	baseURL string // absolute FHIR base for fullUrl and links; "" means from each request
}

// loadConfig reads and validates the environment; an error is one line naming the variable.
func loadConfig(getenv func(string) string) (config, error) {
	var cfg config
	port := getenv("PORT")
	if port == "" {
		port = "8080"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return cfg, fmt.Errorf("config: PORT must be a TCP port number from 0 to 65535, got %q", port)
	}
	cfg.addr = ":" + port
	cfg.dataDir = getenv("DATA_DIR")
	if cfg.dataDir == "" {
		cfg.dataDir = "data"
	}
	if b := getenv("BASE_URL"); b != "" {
		u, err := url.Parse(b)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return cfg, fmt.Errorf("config: BASE_URL must be an absolute http(s) URL without query, fragment or credentials, got %q", b)
		}
		cfg.baseURL = strings.TrimRight(b, "/")
	}
	return cfg, nil
}

// shutdownDrain is how long /readyz answers 503 before the server stops accepting connections, so a
// load balancer stops sending traffic first.
const shutdownDrain = 2 * time.Second

// run starts the service and blocks until ctx is cancelled or SIGINT/SIGTERM arrives.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); stop() }() // a second Ctrl-C stops at once
	if len(args) > 1 {
		return fmt.Errorf("unexpected argument %q: configuration is read from environment variables only", args[1])
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stdout, nil))
	docs, err := fs.Sub(docsFiles, "docs")
	if err != nil {
		return fmt.Errorf("docs: %w", err)
	}
	// Replay happens here, before the listener opens: nothing is served from a partial store.
	store, err := openJournalStore(cfg.dataDir, log, time.Now, false)
	if err != nil {
		return fmt.Errorf("open patient store in DATA_DIR %s: %w", cfg.dataDir, err)
	}
	defer store.Close()
	var up atomic.Bool
	ready := func() bool { return up.Load() && store.Ready() }
	h := newServer(log, ready, openapiJSON, docs, store, cfg.baseURL)

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return serve(ctx, log, ln, h, &up, shutdownDrain)
}

// serve runs h on ln until ctx ends, then shuts down gracefully: readiness turns 503 at once, the
// listener closes after drain, and in-flight requests get up to 20 seconds to finish.
func serve(ctx context.Context, log *slog.Logger, ln net.Listener, h http.Handler, up *atomic.Bool, drain time.Duration) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second, // without it, a slow client can hold a connection forever
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	up.Store(true)
	log.Info("listening", "addr", ln.Addr().String())

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	up.Store(false)
	log.Info("shutting down", "drain_seconds", drain.Seconds())
	time.Sleep(drain)
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("stopped")
	return nil
}
