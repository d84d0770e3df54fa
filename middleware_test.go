package main

// Tests of what every request passes through: request IDs, panic recovery, the request log line.

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRequestIDs(t *testing.T) {
	h := newTestServer(t)
	uuidV4 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	long := strings.Repeat("a", 128)
	tests := []struct {
		name                   string
		reqID, corrID          []string
		wantStatus             int
		wantReqID, wantCorrID  string // "uuid" means a generated one
		wantDetailMentionsName string
	}{
		{"absent", nil, nil, 200, "uuid", "", ""},
		{"empty", []string{""}, nil, 200, "uuid", "", ""},
		{"echoed", []string{"abc-123_X.y:z"}, []string{"corr-1"}, 200, "abc-123_X.y:z", "corr-1", ""},
		{"128 characters", []string{long}, []string{long}, 200, long, long, ""},
		{"129 characters", []string{long + "a"}, nil, 400, "uuid", "", "X-Request-ID"},
		{"space", []string{"a b"}, nil, 400, "uuid", "", "X-Request-ID"},
		{"html", []string{"<script>"}, nil, 400, "uuid", "", "X-Request-ID"},
		{"non-ASCII", []string{"é"}, nil, 400, "uuid", "", "X-Request-ID"},
		{"sent twice", []string{"a", "b"}, nil, 400, "uuid", "", "X-Request-ID"},
		{"bad correlation", []string{"ok"}, []string{"a/b"}, 400, "ok", "", "X-Correlation-ID"},
		{"empty correlation", nil, []string{""}, 200, "uuid", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/livez", nil)
			for _, v := range tt.reqID {
				req.Header.Add("X-Request-ID", v)
			}
			for _, v := range tt.corrID {
				req.Header.Add("X-Correlation-ID", v)
			}
			res := do(t, h, req)
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d", res.StatusCode, tt.wantStatus)
			}
			got := res.Header.Get("X-Request-ID")
			if tt.wantReqID == "uuid" && !uuidV4.MatchString(got) || tt.wantReqID != "uuid" && got != tt.wantReqID {
				t.Errorf("X-Request-ID %q, want %s", got, tt.wantReqID)
			}
			if got := res.Header.Get("X-Correlation-ID"); got != tt.wantCorrID {
				t.Errorf("X-Correlation-ID %q, want %q", got, tt.wantCorrID)
			}
			if tt.wantStatus == 400 {
				p := decodeBody[problem](t, res)
				if !strings.Contains(p.Detail, tt.wantDetailMentionsName) || p.RequestID != got {
					t.Errorf("problem %+v does not name %s or carry request id %q", p, tt.wantDetailMentionsName, got)
				}
			}
		})
	}
	a := do(t, h, httptest.NewRequest("GET", "/livez", nil)).Header.Get("X-Request-ID")
	b := do(t, h, httptest.NewRequest("GET", "/livez", nil)).Header.Get("X-Request-ID")
	if a == b {
		t.Errorf("two generated request IDs are equal: %s", a)
	}
}

// TestPanicRecovery: a panicking handler yields a generic 500 problem and a log line, and the
// server goes on serving.
func TestPanicRecovery(t *testing.T) {
	var logs bytes.Buffer
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) { panic("patient 9434765919 broke it") })
	mux.Handle("GET /livez", handleLivez())
	srv := httptest.NewServer(withRequestContext(slog.New(slog.NewJSONHandler(&logs, nil)), testMetrics(), mux))
	defer srv.Close()

	res, err := http.Get(srv.URL + "/boom")
	if err != nil {
		t.Fatal(err)
	}
	got := decodeBody[problem](t, res)
	want := problem{Type: "about:blank", Title: "Internal Server Error", Status: 500,
		Detail: "The server could not complete the request.", RequestID: res.Header.Get("X-Request-ID")}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(fieldError{})); diff != "" {
		t.Errorf("500 body (-want +got):\n%s", diff)
	}
	if res, err := http.Get(srv.URL + "/livez"); err != nil || res.StatusCode != 200 {
		t.Errorf("after a panic: %v %v", res, err)
	}
	if !strings.Contains(logs.String(), `"msg":"panic"`) {
		t.Errorf("no panic log line in %s", logs.String())
	}
}

// TestRequestLog checks the one log line per request and that it carries no body or query data.
func TestRequestLog(t *testing.T) {
	var logs bytes.Buffer
	h := newServer(slog.New(slog.NewJSONHandler(&logs, nil)), testConfig(t), testMetrics(), func() bool { return true }, openapiJSON, testDocs(t), testStore(t), testVerifier(t), time.Now)
	req := postEGFR(`{"sex":"female","serum_creatinine_umol_l":77.7,"age":63}`)
	req.Header.Set("X-Correlation-ID", "corr-9")
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	req.URL.RawQuery = "nhs=9434765919"
	h.ServeHTTP(httptest.NewRecorder(), req)
	var line map[string]any
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("log is not one JSON line: %v\n%s", err, logs.String())
	}
	delete(line, "time")
	if _, ok := line["duration_us"].(float64); !ok {
		t.Errorf("no duration_us in %v", line)
	}
	delete(line, "duration_us")
	want := map[string]any{"level": "INFO", "msg": "request", "method": "POST", "route": "POST /egfr",
		"status": float64(200), "request_id": testRequestID, "correlation_id": "corr-9", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}
	if diff := cmp.Diff(want, line); diff != "" {
		t.Errorf("log line (-want +got):\n%s", diff)
	}
	for _, secret := range []string{"77.7", "female", "9434765919"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("log line leaks %q: %s", secret, logs.String())
		}
	}
}

func TestRequestLogHashesSubject(t *testing.T) {
	var logs bytes.Buffer
	h := newServer(slog.New(slog.NewJSONHandler(&logs, nil)), testConfig(t), testMetrics(), func() bool { return true }, openapiJSON, testDocs(t), testStore(t), testVerifier(t), time.Now)
	tok := localTestIssuer(t).token(t, allScopes)
	req := fhirReq("GET", "/Patient/unknown-1", "", "Authorization", "Bearer "+tok)
	h.ServeHTTP(httptest.NewRecorder(), req)
	var line struct {
		SubHash string `json:"sub_hash"`
	}
	json.Unmarshal(logs.Bytes(), &line)
	if line.SubHash != subjectHash("clinician-1") || strings.Contains(logs.String(), tok) || strings.Contains(logs.String(), "clinician-1") {
		t.Errorf("log line %s: want the subject's hash and neither token nor subject", logs.String())
	}
}

func TestEGFRAuthRequired(t *testing.T) {
	cfg := testConfig(t)
	cfg.auth.EGFRRequired = true
	h := newServer(slog.New(slog.DiscardHandler), cfg, testMetrics(), func() bool { return true }, openapiJSON, testDocs(t), testStore(t), testVerifier(t), time.Now)
	for path, body := range map[string]string{
		"/egfr": `{"sex":"male","serum_creatinine_umol_l":88,"age":50}`,
		"/crcl": `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"weight_kg":70}`,
	} {
		req := postEGFR(body)
		req.URL.Path = path
		res := doRaw(t, h, req)
		p := decodeBody[problem](t, res)
		if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") != "Bearer" || p.Status != 401 || res.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s no token: %d %q %+v, want a 401 problem", path, res.StatusCode, res.Header.Get("WWW-Authenticate"), p)
		}
		req = postEGFR(body)
		req.URL.Path = path
		req.Header.Set("Authorization", "Bearer "+localTestIssuer(t).token(t, "")) // any valid token, no scope needed
		if res := doRaw(t, h, req); res.StatusCode != 200 {
			t.Errorf("%s valid token without scopes: %d, want 200", path, res.StatusCode)
		}
	}
}

// TestTraceContext: a valid traceparent (Trace Context Level 1) is continued under a new span ID,
// anything else starts a new trace and is never an error, and tracestate comes back as received
// only with a valid traceparent.
func TestTraceContext(t *testing.T) {
	h := newTestServer(t)
	const id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	tests := []struct {
		name        string
		traceparent []string
		tracestate  []string
		wantTraceID string // "" means a new trace
		wantFlags   string
		wantState   string
	}{
		{"absent", nil, nil, "", "00", ""},
		{"sampled", []string{"00-" + id + "-" + parent + "-01"}, nil, id, "01", ""},
		{"not sampled", []string{"00-" + id + "-" + parent + "-00"}, nil, id, "00", ""},
		{"unknown flags zeroed", []string{"00-" + id + "-" + parent + "-09"}, nil, id, "01", ""},
		{"unknown flag only", []string{"00-" + id + "-" + parent + "-02"}, nil, id, "00", ""},
		{"sampled bit in hex letter", []string{"00-" + id + "-" + parent + "-0b"}, nil, id, "01", ""},
		{"tracestate", []string{"00-" + id + "-" + parent + "-01"}, []string{"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"}, id, "01", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"},
		{"two tracestate fields", []string{"00-" + id + "-" + parent + "-01"}, []string{"rojo=1", "congo=2"}, id, "01", "rojo=1,congo=2"},
		{"empty tracestate", []string{"00-" + id + "-" + parent + "-01"}, []string{""}, id, "01", ""},
		{"future version", []string{"cc-" + id + "-" + parent + "-01-what-the-future-holds"}, nil, id, "01", ""},
		{"future version exactly 55", []string{"cc-" + id + "-" + parent + "-01"}, nil, id, "01", ""},
		{"future version no dash after flags", []string{"cc-" + id + "-" + parent + "-01x"}, nil, "", "00", ""},
		{"version ff", []string{"ff-" + id + "-" + parent + "-01"}, nil, "", "00", ""},
		{"version 00 with more fields", []string{"00-" + id + "-" + parent + "-01-extra"}, nil, "", "00", ""},
		{"uppercase", []string{"00-" + strings.ToUpper(id) + "-" + parent + "-01"}, nil, "", "00", ""},
		{"uppercase version", []string{"0A-" + id + "-" + parent + "-01"}, nil, "", "00", ""},
		{"zero trace id", []string{"00-" + strings.Repeat("0", 32) + "-" + parent + "-01"}, nil, "", "00", ""},
		{"zero parent id", []string{"00-" + id + "-" + strings.Repeat("0", 16) + "-01"}, nil, "", "00", ""},
		{"short trace id", []string{"00-" + id[1:] + "-" + parent + "-01"}, nil, "", "00", ""},
		{"wrong separator", []string{"00_" + id + "-" + parent + "-01"}, nil, "", "00", ""},
		{"non-hex", []string{"00-" + id[:31] + "g-" + parent + "-01"}, nil, "", "00", ""},
		{"sent twice", []string{"00-" + id + "-" + parent + "-01", "00-" + id + "-" + parent + "-01"}, nil, "", "00", ""},
		{"tracestate without traceparent", nil, []string{"congo=t61rcWkgMzE"}, "", "00", ""},
		{"tracestate with invalid traceparent", []string{"00-xyz"}, []string{"congo=t61rcWkgMzE"}, "", "00", ""},
	}
	valid := regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$`)
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/metadata", nil)
			req.Header["Traceparent"] = tt.traceparent
			req.Header["Tracestate"] = tt.tracestate
			res := do(t, h, req)
			if res.StatusCode != 200 {
				t.Errorf("status %d, want 200: a bad traceparent is never an error", res.StatusCode)
			}
			got := valid.FindStringSubmatch(res.Header.Get("traceparent"))
			if got == nil {
				t.Fatalf("traceparent %q is not version 00 with lowercase non-zero IDs", res.Header.Get("traceparent"))
			}
			traceID, span, flags := got[1], got[2], got[3]
			if tt.wantTraceID != "" && traceID != tt.wantTraceID || tt.wantTraceID == "" && (traceID == id || seen[traceID]) {
				t.Errorf("trace ID %s, want %s", traceID, tt.wantTraceID+" (\"\" means a new one)")
			}
			seen[traceID] = true
			if span == parent || strings.Trim(span, "0") == "" || strings.Trim(traceID, "0") == "" {
				t.Errorf("span ID %s: want a new, non-zero one", span)
			}
			if flags != tt.wantFlags {
				t.Errorf("flags %s, want %s", flags, tt.wantFlags)
			}
			if got := res.Header.Values("tracestate"); tt.wantState == "" && len(got) > 0 || tt.wantState != "" && (len(got) != 1 || got[0] != tt.wantState) {
				t.Errorf("tracestate %q, want %q", got, tt.wantState)
			}
		})
	}
}

// TestTraceIDInEveryLogLine: the request line and the lines a request causes (here a store failure,
// logged by writeStoreError) carry the request's trace ID.
func TestTraceIDInEveryLogLine(t *testing.T) {
	var logs bytes.Buffer
	store := testJournalStore(t)
	store.Close() // every write now fails: a 503, logged
	h := newServer(slog.New(slog.NewJSONHandler(&logs, nil)), testConfig(t), testMetrics(), func() bool { return true }, openapiJSON, testDocs(t), store, testVerifier(t), time.Now)
	req := postPatient(`{"resourceType":"Patient","gender":"female"}`)
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if res := do(t, h, req); res.StatusCode != 503 {
		t.Fatalf("status %d, want 503 from a closed store", res.StatusCode)
	}
	var msgs []string
	for line := range strings.Lines(logs.String()) {
		var l struct {
			Msg     string
			TraceID string `json:"trace_id"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		msgs = append(msgs, l.Msg)
		if l.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" {
			t.Errorf("log line without the trace ID: %s", line)
		}
	}
	if diff := cmp.Diff([]string{"patient store", "request"}, msgs); diff != "" {
		t.Errorf("log lines (-want +got):\n%s", diff)
	}
}

// TestOverloadCap: with MAX_IN_FLIGHT requests in flight, the next is answered 503 at once with
// Retry-After in its route family's format, the probes are still answered, and once the request in
// flight finishes, requests are served again.
func TestOverloadCap(t *testing.T) {
	m := newMetrics(1)
	h := newServer(slog.New(slog.DiscardHandler), testConfig(t), m, func() bool { return true }, openapiJSON, testDocs(t), testStore(t), testVerifier(t), time.Now)
	// A create whose body has not arrived yet holds the one place.
	body, send := io.Pipe()
	held := postPatient("")
	held.Body = body
	held.Header.Set("Authorization", "Bearer "+localTestIssuer(t).token(t, allScopes))
	done := make(chan int)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, held)
		done <- rec.Code
	}()
	for m.inFlight.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	egfr := do(t, h, postEGFR(`{"sex":"male","serum_creatinine_umol_l":88,"age":50}`))
	if egfr.StatusCode != 503 || egfr.Header.Get("Retry-After") != "1" {
		t.Errorf("POST /egfr over the cap: %d, Retry-After %q; want 503 and 1", egfr.StatusCode, egfr.Header.Get("Retry-After"))
	}
	want := problem{Type: "about:blank", Title: "Service Unavailable", Status: 503,
		Detail: "The service is at capacity (too many requests in flight); retry shortly.", RequestID: egfr.Header.Get("X-Request-ID")}
	if diff := cmp.Diff(want, decodeBody[problem](t, egfr), cmp.AllowUnexported(fieldError{})); diff != "" {
		t.Errorf("503 body (-want +got):\n%s", diff)
	}
	read := do(t, h, fhirReq("GET", "/Patient/abc", ""))
	if oo := decodeBody[operationOutcome](t, read); read.StatusCode != 503 || len(oo.Issue) != 1 || oo.Issue[0].Code != "transient" {
		t.Errorf("GET /Patient/abc over the cap: %d %+v, want 503 with a transient issue", read.StatusCode, oo)
	}
	for _, probe := range []string{"/livez", "/readyz"} {
		if res := do(t, h, httptest.NewRequest("GET", probe, nil)); res.StatusCode != 200 {
			t.Errorf("%s over the cap: %d, want 200 (probes are never refused)", probe, res.StatusCode)
		}
	}
	if got := m.refused.Load(); got != 2 {
		t.Errorf("refused %d requests, want 2", got)
	}
	send.CloseWithError(io.ErrUnexpectedEOF)
	<-done
	if res := do(t, h, postEGFR(`{"sex":"male","serum_creatinine_umol_l":88,"age":50}`)); res.StatusCode != 200 {
		t.Errorf("POST /egfr under the cap again: %d, want 200", res.StatusCode)
	}
}
