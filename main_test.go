package main

// Tests of the program as a whole: run with a fake environment, start-up, shutdown, restarts and crashes.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestGracefulShutdown: when the context ends, /readyz turns 503 while the listener is still open,
// an in-flight request finishes with its 200, and serve returns nil.
func TestGracefulShutdown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	var up atomic.Bool
	started, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("GET /readyz", handleReadyz(up.Load))
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		writeJSON(w, 200, "application/json", health{"ok"})
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	up.Store(true)
	go func() { done <- serve(ctx, slog.New(slog.DiscardHandler), ln, mux, &up, 300*time.Millisecond) }()
	waitReady(t, base)

	slow := make(chan int, 1)
	go func() {
		res, err := http.Get(base + "/slow")
		if err != nil {
			slow <- 0
			return
		}
		res.Body.Close()
		slow <- res.StatusCode
	}()
	<-started
	cancel()
	deadline := time.Now().Add(2 * time.Second)
	for {
		res, err := http.Get(base + "/readyz")
		if err == nil && res.StatusCode == http.StatusServiceUnavailable {
			res.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never answered 503 during the drain (last %v %v)", res, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	if got := <-slow; got != 200 {
		t.Errorf("in-flight request: status %d, want 200", got)
	}
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// waitReady polls /readyz until it answers 200.
func waitReady(t *testing.T, base string) {
	t.Helper()
	for range 200 {
		res, err := http.Get(base + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s/readyz never became ready", base)
}

// startRun runs the whole program as main does, with a fake environment plus PORT=0, and returns
// its base URL once it listens, and a function that stops it and returns run's result.
func startRun(t *testing.T, env mapEnv) (base string, stop func() error) {
	t.Helper()
	base, _, stop = startRunWithMetrics(t, env)
	return base, stop
}

// startRunWithMetrics is startRun that also returns the metrics URL, when env sets METRICS_PORT.
func startRunWithMetrics(t *testing.T, env mapEnv) (base, metricsURL string, stop func() error) {
	t.Helper()
	env["PORT"] = "0"
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"clinicalapi"}, env.get, pw, io.Discard)
		pw.Close()
	}()
	for lines := bufio.NewScanner(pr); base == "" && lines.Scan(); {
		var l struct{ Msg, Addr string }
		json.Unmarshal(lines.Bytes(), &l)
		_, port, _ := net.SplitHostPort(l.Addr)
		switch l.Msg {
		case "listening": // the metrics listener, when there is one, is logged before
			base = "http://127.0.0.1:" + port
		case "metrics listening":
			metricsURL = "http://127.0.0.1:" + port + "/metrics"
		}
	}
	go io.Copy(io.Discard, pr)
	if base == "" {
		cancel()
		t.Fatalf("run never logged its address: %v", <-done)
	}
	return base, metricsURL, func() error { cancel(); return <-done }
}

// TestRun starts the whole program as main does, with a fake environment.
func TestRun(t *testing.T) {
	addr, stop := startRun(t, mapEnv{"DATA_DIR": t.TempDir()})
	waitReady(t, addr)
	res, err := http.Post(addr+"/egfr", "application/json", strings.NewReader(`{"sex": "male", "serum_creatinine_umol_l": 88, "age": 50}`))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("POST /egfr: %v %v", res, err)
	}
	if diff := cmp.Diff(egfrResult{92.2, ">90", "G1", formula2021}, decodeBody[egfrResult](t, res)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if err := stop(); err != nil {
		t.Errorf("run: %v", err)
	}
}

// TestLoadConfigOperations: MAX_IN_FLIGHT defaults to 64 per GOMAXPROCS and can be set; metrics are
// served only when METRICS_PORT is set.
func TestLoadConfigOperations(t *testing.T) {
	tests := []struct {
		name        string
		env         mapEnv
		wantLimit   int
		wantMetrics string
	}{
		{"defaults", mapEnv{}, 64 * runtime.GOMAXPROCS(0), ""},
		{"set", mapEnv{"MAX_IN_FLIGHT": "500", "METRICS_PORT": "9464"}, 500, ":9464"},
		{"one", mapEnv{"MAX_IN_FLIGHT": "1"}, 1, ""},
		{"both ports picked by the system", mapEnv{"PORT": "0", "METRICS_PORT": "0"}, 64 * runtime.GOMAXPROCS(0), ":0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadConfig(tt.env.get)
			if err != nil || cfg.maxInFlight != tt.wantLimit || cfg.metricsAddr != tt.wantMetrics {
				t.Errorf("loadConfig = %d, %q, %v; want %d, %q", cfg.maxInFlight, cfg.metricsAddr, err, tt.wantLimit, tt.wantMetrics)
			}
		})
	}
}

// TestRunServesMetrics: with METRICS_PORT set, run serves the exposition on that port, with the
// store's figures once it is open, and the API port has no /metrics.
func TestRunServesMetrics(t *testing.T) {
	api, metricsURL, stop := startRunWithMetrics(t, mapEnv{"DATA_DIR": t.TempDir(), "METRICS_PORT": "0"})
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	if metricsURL == "" {
		t.Fatal("run did not log the metrics address")
	}
	waitReady(t, api)
	res, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body := string(readAll(t, res.Body))
	if res.StatusCode != 200 || !strings.Contains(body, "\nclinicalapi_patients 0\n") || !strings.Contains(body, `route="/readyz",method="GET",status_class="2xx"`) {
		t.Errorf("GET /metrics: %d\n%s", res.StatusCode, body)
	}
	if res, err := http.Get(api + "/metrics"); err != nil || res.StatusCode != 404 {
		t.Errorf("GET /metrics on the API port: %v %v, want 404", res, err)
	}
}

// mapEnv is a fake environment for run.
type mapEnv map[string]string

func (m mapEnv) get(k string) string { return m[k] }

func TestRunRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  mapEnv
		want string
	}{
		{"port not a number", nil, mapEnv{"PORT": "http"}, `config: PORT must be a TCP port number from 0 to 65535, got "http"`},
		{"port too big", nil, mapEnv{"PORT": "65536"}, `config: PORT must be a TCP port number from 0 to 65535, got "65536"`},
		{"port negative", nil, mapEnv{"PORT": "-1"}, `config: PORT must be a TCP port number from 0 to 65535, got "-1"`},
		{"max in flight zero", nil, mapEnv{"MAX_IN_FLIGHT": "0"}, `config: MAX_IN_FLIGHT must be a whole number of requests from 1 to 1000000, got "0"`},
		{"max in flight not a number", nil, mapEnv{"MAX_IN_FLIGHT": "lots"}, `config: MAX_IN_FLIGHT must be a whole number of requests from 1 to 1000000, got "lots"`},
		{"max in flight too big", nil, mapEnv{"MAX_IN_FLIGHT": "1000001"}, `config: MAX_IN_FLIGHT must be a whole number of requests from 1 to 1000000, got "1000001"`},
		{"metrics port not a number", nil, mapEnv{"METRICS_PORT": "prom"}, `config: METRICS_PORT must be a TCP port number from 0 to 65535 other than PORT, got "prom"`},
		{"metrics port is PORT", nil, mapEnv{"PORT": "18700", "METRICS_PORT": "18700"}, `config: METRICS_PORT must be a TCP port number from 0 to 65535 other than PORT, got "18700"`},
		{"metrics port too big", nil, mapEnv{"METRICS_PORT": "70000"}, `config: METRICS_PORT must be a TCP port number from 0 to 65535 other than PORT, got "70000"`},
		{"argument", []string{"x", "--port=1"}, mapEnv{}, `unexpected argument "--port=1": configuration is read from environment variables only (the one subcommand is dev-issuer)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if args == nil {
				args = []string{"clinicalapi"}
			}
			err := run(t.Context(), args, tt.env.get, io.Discard, io.Discard)
			if err == nil || err.Error() != tt.want {
				t.Errorf("run() = %v, want %s", err, tt.want)
			}
		})
	}
}

// TestPatientsSurviveRestart writes through one store, reopens the directory as a restart does, and
// reads everything back byte for byte.
func TestPatientsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	open := func() (http.Handler, *journalStore) {
		s, err := openJournalStore(dir, slog.New(slog.DiscardHandler), time.Now, false)
		if err != nil {
			t.Fatal(err)
		}
		return newServer(slog.New(slog.DiscardHandler), testConfig(t), testMetrics(), func() bool { return true }, openapiJSON, testDocs(t), s, testVerifier(t), time.Now), s
	}
	h, s := open()
	bodies := map[string][]byte{}
	for name, b := range patientExamples(t, "valid") {
		res := do(t, h, postPatient(string(b)))
		if res.StatusCode != 201 {
			t.Fatalf("%s: %d", name, res.StatusCode)
		}
		bodies[strings.Split(res.Header.Get("Location"), "/")[2]] = readAll(t, res.Body)
	}
	s.Close()
	h, s = open()
	defer s.Close()
	for id, want := range bodies {
		res := do(t, h, httptest.NewRequest("GET", "/Patient/"+id, nil))
		if got := readAll(t, res.Body); !bytes.Equal(got, want) {
			t.Errorf("after restart %s:\n got %s\nwant %s", id, got, want)
		}
	}
}

// TestHelperProcess is not a test: it runs the service when TestCrashLosesNoAcknowledgedWrite starts
// this test binary as a child process.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("CLINICALAPI_CHILD") != "1" {
		t.Skip("run as a child process only")
	}
	if err := run(context.Background(), []string{"clinicalapi"}, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// startChild runs the service in a child process on dataDir and returns its base URL.
func startChild(t *testing.T, dataDir string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	li := localTestIssuer(t)
	cmd.Env = append(os.Environ(), "CLINICALAPI_CHILD=1", "PORT=0", "DATA_DIR="+dataDir,
		"OIDC_ISSUER="+li.url, "OIDC_AUDIENCE="+testIssuerAudience)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		var l struct{ Msg, Addr string }
		json.Unmarshal(lines.Bytes(), &l)
		if l.Msg == "listening" {
			go io.Copy(io.Discard, out)
			_, port, _ := net.SplitHostPort(l.Addr)
			base := "http://127.0.0.1:" + port
			waitReady(t, base)
			return cmd, base
		}
	}
	t.Fatalf("child never logged its address")
	return nil, ""
}

// TestCrashLosesNoAcknowledgedWrite kills the service with SIGKILL in the middle of a burst of
// creates and updates from 16 clients, restarts it on the same DATA_DIR, and checks that every write
// that was acknowledged with a 2xx is there, at its version, byte for byte.
func TestCrashLosesNoAcknowledgedWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	cmd, base := startChild(t, dir)
	type ack struct {
		id      string
		version string
		body    []byte
	}
	var (
		mu    sync.Mutex
		acks  []ack
		count atomic.Int64
	)
	client := &http.Client{Timeout: 5 * time.Second}
	token := localTestIssuer(t).token(t, allScopes)
	send := func(method, url, body string) (*http.Response, []byte, error) {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/fhir+json")
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return res, b, err
	}
	var wg sync.WaitGroup
	for c := range 16 {
		wg.Go(func() {
			id := ""
			for i := 0; ; i++ {
				var res *http.Response
				var b []byte
				var err error
				if id == "" || i%3 == 0 {
					res, b, err = send("POST", base+"/Patient", fmt.Sprintf(`{"resourceType":"Patient","name":[{"family":"Client%d","given":["N%d"]}]}`, c, i))
				} else {
					res, b, err = send("PUT", base+"/Patient/"+id, fmt.Sprintf(`{"resourceType":"Patient","id":%q,"name":[{"family":"Client%d","given":["U%d"]}]}`, id, c, i))
				}
				if err != nil {
					return // the server is gone
				}
				if res.StatusCode != 200 && res.StatusCode != 201 {
					t.Errorf("status %d: %s", res.StatusCode, b)
					return
				}
				var p struct {
					ID   string
					Meta struct{ VersionID string }
				}
				if err := json.Unmarshal(b, &p); err != nil {
					t.Errorf("acknowledged body %s: %v", b, err)
					return
				}
				id = p.ID
				mu.Lock()
				acks = append(acks, ack{p.ID, p.Meta.VersionID, b})
				mu.Unlock()
				count.Add(1)
			}
		})
	}
	deadline := time.Now().Add(20 * time.Second)
	for count.Load() < 300 && time.Now().Before(deadline) && !t.Failed() {
		time.Sleep(time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	cmd.Wait()

	_, base = startChild(t, dir)
	for _, a := range acks {
		res, b, err := send("GET", base+"/Patient/"+a.id+"/_history/"+a.version, "")
		if err != nil || res.StatusCode != 200 || !bytes.Equal(b, a.body) {
			t.Errorf("acknowledged Patient/%s version %s after restart: %v %v\n got %s\nwant %s", a.id, a.version, res, err, b, a.body)
		}
	}
	t.Logf("%d acknowledged writes before SIGKILL, all present after restart", len(acks))
}

// TestRunRefusesCorruptJournal: a journal damaged in the middle stops the start with an error that
// names the file and offset (main then exits non-zero), rather than serving partial data.
func TestRunRefusesCorruptJournal(t *testing.T) {
	dir := t.TempDir()
	s, err := openJournalStore(dir, slog.New(slog.DiscardHandler), time.Now, false)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		id := fmt.Sprintf("p%d", i)
		if _, err := s.Create(t.Context(), id, func(_, _ string, _ time.Time) ([]byte, error) {
			return []byte(`{"resourceType":"Patient","id":"` + id + `"}`), nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	path := dir + "/" + journalFileName
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff // a byte inside the second record
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	err = run(t.Context(), []string{"clinicalapi"}, mapEnv{"PORT": "0", "DATA_DIR": dir}.get, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "offset") {
		t.Errorf("run() = %v, want an error naming %s and the offset", err, path)
	}
}

func TestServedSpec(t *testing.T) {
	schemes := func(b []byte) map[string]any {
		var doc map[string]any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		return doc["components"].(map[string]any)["securitySchemes"].(map[string]any)
	}
	on, err := servedSpec(openapiJSON, authConfig{Enabled: true, Issuer: "https://auth.login.nhs.uk", Audience: "a"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := schemes(on)["openIdConnect"].(map[string]any)["openIdConnectUrl"]; got != "https://auth.login.nhs.uk/.well-known/openid-configuration" {
		t.Errorf("openIdConnectUrl %v", got)
	}
	off, err := servedSpec(openapiJSON, authConfig{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := schemes(off)["openIdConnect"]; ok || schemes(off)["bearerAuth"] == nil {
		t.Errorf("without auth: schemes %v, want bearerAuth only", schemes(off))
	}
	if bytes.Contains(off, []byte(`\u003e`)) {
		t.Errorf("served spec escapes HTML characters")
	}
	req, _ := servedSpec(openapiJSON, authConfig{Enabled: true, Issuer: "https://x", EGFRRequired: true}, false)
	var doc struct {
		Paths map[string]map[string]struct{ Security []map[string][]string }
	}
	json.Unmarshal(req, &doc)
	for _, p := range []string{"/egfr", "/crcl"} {
		if diff := cmp.Diff([]map[string][]string{{"bearerAuth": {}}}, doc.Paths[p]["post"].Security); diff != "" {
			t.Errorf("EGFR_AUTH=required: %s security (-want +got):\n%s", p, diff)
		}
	}

	// With an upstream, version ids are FHIR ids wherever the spec has one: the vid path parameter,
	// both If-Match headers, the ETag header (twice more inline) and Location.
	up, err := servedSpec(openapiJSON, authConfig{}, true)
	if err != nil {
		t.Fatal(err)
	}
	var spec any
	json.Unmarshal(up, &spec)
	added := bytes.Count(up, []byte(upstreamVersionPattern)) - bytes.Count(openapiJSON, []byte(upstreamVersionPattern))
	if n := upstreamVersionPatterns(spec); n != 0 || added != 7 {
		t.Errorf("upstream spec: %d journal version patterns left, %d made FHIR ids; want 0 and 7", n, added)
	}
}

// TestReadinessWaitsForKeys: with an issuer that cannot be reached, the service is alive but not
// ready, so no traffic is routed to a server that would reject every token.
func TestReadinessWaitsForKeys(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	base, stop := startRun(t, mapEnv{"DATA_DIR": t.TempDir(), "OIDC_ISSUER": dead, "OIDC_AUDIENCE": "x"})
	for path, want := range map[string]int{"/livez": 200, "/readyz": 503} {
		res, err := http.Get(base + path)
		if err != nil || res.StatusCode != want {
			t.Errorf("GET %s: %v %v, want %d", path, res, err, want)
		}
	}
	stop()
}

// TestStartingServer: while the journal replays, the service is alive but not ready, and every
// other route answers 503 with Retry-After in its family's error format.
func TestStartingServer(t *testing.T) {
	h := newStartingServer(slog.New(slog.DiscardHandler), testMetrics())
	for _, tt := range []struct {
		req    *http.Request
		status int
		ctype  string
	}{
		{httptest.NewRequest("GET", "/livez", nil), 200, "application/json"},
		{httptest.NewRequest("GET", "/readyz", nil), 503, "application/json"},
		{postEGFR(`{"sex":"male","serum_creatinine_umol_l":88,"age":50}`), 503, "application/problem+json"},
		{fhirReq("GET", "/Patient/abc", ""), 503, fhirContentType},
		{fhirReq("GET", "/metadata", ""), 503, fhirContentType},
	} {
		res := do(t, h, tt.req)
		if res.StatusCode != tt.status || res.Header.Get("Content-Type") != tt.ctype {
			t.Errorf("%s %s: %d %s, want %d %s", tt.req.Method, tt.req.URL.Path, res.StatusCode, res.Header.Get("Content-Type"), tt.status, tt.ctype)
		}
		if tt.status == 503 && tt.req.URL.Path != "/readyz" && res.Header.Get("Retry-After") != "1" {
			t.Errorf("%s: no Retry-After", tt.req.URL.Path)
		}
	}
}

// TestSecondProcessOnDataDirRefused starts the service twice on one DATA_DIR: the second process
// exits non-zero saying the directory is in use, and the first keeps serving.
func TestSecondProcessOnDataDirRefused(t *testing.T) {
	dir := t.TempDir()
	_, base := startChild(t, dir)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "CLINICALAPI_CHILD=1", "PORT=0", "DATA_DIR="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err == nil || !strings.Contains(stderr.String(), dir) || !strings.Contains(stderr.String(), "in use") {
		t.Fatalf("second process on %s: %v, stderr %q; want a non-zero exit naming the directory as in use", dir, err, stderr.String())
	}
	token := localTestIssuer(t).token(t, allScopes)
	req, _ := http.NewRequest("POST", base+"/Patient", strings.NewReader(minimalPatient))
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("POST /Patient to the first process after the refused second = %v, %v; want 201", res, err)
	}
	res.Body.Close()
}
