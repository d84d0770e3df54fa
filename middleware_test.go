package main

// Tests of what every request passes through: request IDs, panic recovery, the request log line.

import (
	"bytes"
	"encoding/json"
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
	srv := httptest.NewServer(withRequestContext(slog.New(slog.NewJSONHandler(&logs, nil)), mux))
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
	h := newServer(slog.New(slog.NewJSONHandler(&logs, nil)), testConfig(t), func() bool { return true }, openapiJSON, testDocs(t), testStore(t), testVerifier(t), time.Now)
	req := postEGFR(`{"sex":"female","serum_creatinine_umol_l":77.7,"age":63}`)
	req.Header.Set("X-Correlation-ID", "corr-9")
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
		"status": float64(200), "request_id": testRequestID, "correlation_id": "corr-9"}
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
	h := newServer(slog.New(slog.NewJSONHandler(&logs, nil)), testConfig(t), func() bool { return true }, openapiJSON, testDocs(t), testStore(t), testVerifier(t), time.Now)
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
	h := newServer(slog.New(slog.DiscardHandler), cfg, func() bool { return true }, openapiJSON, testDocs(t), testStore(t), testVerifier(t), time.Now)
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
