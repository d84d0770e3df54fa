// Command clinicalapi is a clinical HTTP API built on Go's standard library: an eGFR calculator
// (CKD-EPI), FHIR R4 Patient endpoints and their live documentation.
package main

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
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
	"runtime"
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

// main runs the service with the process's arguments, environment and standard streams.
func main() {
	ctx := context.Background()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// config is the service's configuration, read once from the environment at start.
type config struct {
	addr        string // listen address, ":PORT"
	metricsAddr string // ":METRICS_PORT" for the Prometheus metrics, or "" for none
	maxInFlight int    // MAX_IN_FLIGHT: requests in flight beyond which new ones get a 503
	dataDir     string // where the Patient journal lives
	baseURL     string // absolute FHIR base for fullUrl and links; "" means from each request
	auth        authConfig
	upstream    upstreamConfig // an upstream FHIR server as the Patient store; base "" for the journal
}

// inFlightPerCPU times GOMAXPROCS is MAX_IN_FLIGHT's default. CPU-bound requests beyond GOMAXPROCS
// only wait for a CPU, so the cap is really about requests that wait on something else: durable
// writes sharing an fsync (group commit needs tens of writers in flight to pay), slow clients'
// bodies, a stalled disk. 64 per CPU leaves them that room while bounding what a flood can pin:
// at most 128 requests on 2 CPUs, each at most a 1 MiB body and its parse, a few hundred MB in all.
const inFlightPerCPU = 64

// loadConfig reads and validates the environment; an error is one line naming the variable.
// MAX_IN_FLIGHT's default follows GOMAXPROCS, which Go sets from the container's CPU limit.
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
	if mp := getenv("METRICS_PORT"); mp != "" {
		if n, err := strconv.Atoi(mp); err != nil || n < 0 || n > 65535 || mp != "0" && mp == port {
			return cfg, fmt.Errorf("config: METRICS_PORT must be a TCP port number from 0 to 65535 other than PORT, got %q", mp)
		}
		cfg.metricsAddr = ":" + mp
	}
	cfg.maxInFlight = inFlightPerCPU * runtime.GOMAXPROCS(0)
	if v := getenv("MAX_IN_FLIGHT"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1_000_000 {
			return cfg, fmt.Errorf("config: MAX_IN_FLIGHT must be a whole number of requests from 1 to 1000000, got %q", v)
		}
		cfg.maxInFlight = n
	}
	upstream, err := parseUpstreamConfig(getenv)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	cfg.upstream = upstream
	cfg.dataDir = getenv("DATA_DIR")
	switch {
	case cfg.dataDir != "" && upstream.base != "":
		return cfg, errors.New("config: DATA_DIR is for the embedded journal; with FHIR_UPSTREAM_URL the Patients are the upstream's: set one")
	case cfg.dataDir == "":
		cfg.dataDir = "data"
	}
	if b := getenv("BASE_URL"); b != "" {
		u, err := url.Parse(b)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return cfg, fmt.Errorf("config: BASE_URL must be an absolute http(s) URL without query, fragment or credentials, got %q", b)
		}
		cfg.baseURL = strings.TrimRight(b, "/")
	}
	auth, err := parseAuthConfig(getenv)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	cfg.auth = auth
	return cfg, nil
}

// servedSpec is the embedded openapi.json with the deployment's OpenID Connect discovery URL filled
// in (or that scheme removed when auth is not configured), and the calculators' security made mandatory
// under EGFR_AUTH=required, so Swagger UI's Authorize matches what the server enforces.
func servedSpec(spec []byte, auth authConfig, upstream bool) ([]byte, error) {
	var doc map[string]any
	if err := json.Unmarshal(spec, &doc); err != nil {
		return nil, err
	}
	schemes, ok := doc["components"].(map[string]any)["securitySchemes"].(map[string]any)
	if !ok {
		return nil, errors.New("no components.securitySchemes")
	}
	if auth.Enabled {
		oidc, ok := schemes["openIdConnect"].(map[string]any)
		if !ok {
			return nil, errors.New("no openIdConnect security scheme")
		}
		oidc["openIdConnectUrl"] = strings.TrimRight(auth.Issuer, "/") + "/.well-known/openid-configuration"
	} else {
		delete(schemes, "openIdConnect")
	}
	for _, p := range []string{"/egfr", "/crcl"} {
		if !auth.EGFRRequired {
			break
		}
		op, ok := doc["paths"].(map[string]any)[p].(map[string]any)["post"].(map[string]any)
		if !ok {
			return nil, errors.New("no POST " + p)
		}
		op["security"] = []any{map[string]any{"bearerAuth": []any{}}}
	}
	if upstream && upstreamVersionPatterns(doc) == 0 {
		return nil, errors.New("no version id patterns")
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // keep ">90" readable
	enc.SetIndent("", "  ")
	err := enc.Encode(doc)
	return b.Bytes(), err
}

// journalVersionPattern is the spec's regular expression of a journal version id; upstreamVersionPattern
// the FHIR id, whatever an upstream server makes.
const (
	journalVersionPattern  = "[1-9][0-9]*"
	upstreamVersionPattern = "[A-Za-z0-9.-]{1,64}"
)

// upstreamVersionPatterns makes the version ids in every pattern of the spec (vid, If-Match, ETag,
// Location) FHIR ids, as they are with FHIR_UPSTREAM_URL, and returns how many it changed.
func upstreamVersionPatterns(v any) int {
	n := 0
	switch v := v.(type) {
	case map[string]any:
		for k, item := range v {
			if p, ok := item.(string); ok && k == "pattern" && strings.Contains(p, journalVersionPattern) {
				v[k] = strings.ReplaceAll(p, journalVersionPattern, upstreamVersionPattern)
				n++
			} else {
				n += upstreamVersionPatterns(item)
			}
		}
	case []any:
		for _, item := range v {
			n += upstreamVersionPatterns(item)
		}
	}
	return n
}

// shutdownDrain is how long /readyz answers 503 before the server stops accepting connections, so a
// load balancer stops sending traffic first.
const shutdownDrain = 2 * time.Second

// run starts the service and blocks until ctx is cancelled or SIGINT/SIGTERM arrives.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); stop() }() // a second Ctrl-C stops at once
	if len(args) > 1 && args[1] == "dev-issuer" {
		return runDevIssuer(ctx, devIssuerAddr, devIssuerAudience, stdout)
	}
	if len(args) > 1 {
		return fmt.Errorf("unexpected argument %q: configuration is read from environment variables only (the one subcommand is dev-issuer)", args[1])
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	logOut := newBufferedLog(stdout, logFlushEvery)
	defer logOut.Close()
	log := slog.New(newLogHandler(logOut))
	docs, err := fs.Sub(docsFiles, "docs")
	if err != nil {
		return fmt.Errorf("docs: %w", err)
	}
	// Listen first and answer probes while the journal replays: /livez 200, /readyz 503 and every
	// other route 503 until the store is open. Nothing is served from a partial store.
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	m := newMetrics(cfg.maxInFlight)
	if cfg.metricsAddr != "" {
		stopMetrics, err := startMetrics(log, cfg.metricsAddr, m)
		if err != nil {
			ln.Close()
			return err
		}
		defer stopMetrics() // after the API server has stopped: a last scrape sees the drain
	}
	var h swapHandler
	h.set(newStartingServer(log, m))
	var up atomic.Bool
	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	served := make(chan error, 1)
	go func() { served <- serve(serveCtx, log, ln, &h, &up, shutdownDrain) }()

	store, err := openStore(cfg, log)
	if err != nil {
		stopServing()
		<-served
		return err
	}
	defer store.Close()
	spec, err := servedSpec(openapiJSON, cfg.auth, cfg.upstream.base != "")
	if err != nil {
		stopServing()
		<-served
		return fmt.Errorf("openapi.json: %w", err)
	}
	v := startVerifier(ctx, cfg.auth, log)
	ready := func() bool { return up.Load() && store.Ready() && (v == nil || v.ready()) }
	m.attach(store, v)
	h.set(newServer(log, cfg, m, ready, spec, docs, store, v, time.Now))
	up.Store(true)
	return <-served
}

// openStore opens the Patient store: the journal in DATA_DIR, or the upstream FHIR server.
func openStore(cfg config, log *slog.Logger) (patientStore, error) {
	if cfg.upstream.base == "" {
		s, err := openJournalStore(cfg.dataDir, log, time.Now, false)
		if err != nil {
			return nil, fmt.Errorf("open patient store in DATA_DIR %s: %w", cfg.dataDir, err)
		}
		return s, nil
	}
	s, err := openUpstreamStore(cfg.upstream, log, nil, 0)
	if err != nil {
		return nil, fmt.Errorf("FHIR_UPSTREAM_URL: %w", err)
	}
	log.Info("patient store: upstream FHIR server", "base", s.base.Redacted(), "timeout", cfg.upstream.timeout.String(),
		"credentials", cfg.upstream.credentialsKind())
	return s, nil
}

// startVerifier starts fetching the issuer's keys in the background and returns the verifier, or nil
// when auth is not configured (the Patient routes then refuse every request).
func startVerifier(ctx context.Context, auth authConfig, log *slog.Logger) *verifier {
	if !auth.Enabled {
		log.Warn("auth: not configured; /Patient routes answer 401 until OIDC_ISSUER and OIDC_AUDIENCE are set")
		return nil
	}
	v := newVerifier(auth, nil, time.Now, log)
	go v.start(ctx)
	log.Info("auth: OIDC bearer tokens required on /Patient", "issuer", auth.Issuer, "audience", auth.Audience,
		"algorithms", auth.Algorithms, "egfr_auth_required", auth.EGFRRequired)
	return v
}

// startMetrics listens on addr and serves GET /metrics there until the returned stop is called. The
// port is separate from the API's so that what the metrics tell (how many Patients are stored, how
// token checks fare) reaches only those who can reach that port: the scraper, not API callers.
func startMetrics(log *slog.Logger, addr string, m *metrics) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on METRICS_PORT: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", handleMetrics(m))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())
	return func() { srv.Close(); <-done }, nil
}

// swapHandler serves whichever handler was set last: the start-up handler while the journal
// replays, then the service.
type swapHandler struct{ h atomic.Pointer[http.Handler] }

// set makes h the handler for every request from now on.
func (s *swapHandler) set(h http.Handler) { s.h.Store(&h) }

// ServeHTTP passes the request to the current handler.
func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
}

// serve runs h on ln until ctx ends, then shuts down gracefully: readiness (up) turns 503 at once,
// the listener closes after drain (skipped if the service never became ready), and in-flight requests
// get up to 20 seconds to finish.
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
	log.Info("listening", "addr", ln.Addr().String())

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	if !up.Swap(false) {
		drain = 0 // never in a load balancer's rotation
	}
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
