package main

// Tests of the metrics: histogram buckets, the exposition's content and labels, and the real promtool
// on it (.ci/metrics-check.sh also reads a live scrape back through a real Prometheus server).

import (
	"bytes"
	"log/slog"
	"math"
	"net/http/httptest"
	"os/exec"
	rtmetrics "runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestHistogramBuckets: a duration equal to a bound counts in that bound's bucket (le is "at most"),
// one above the last bound only in +Inf.
func TestHistogramBuckets(t *testing.T) {
	var h histogram
	for _, d := range []time.Duration{0, 10 * time.Microsecond, 10*time.Microsecond + 1, time.Second, 10 * time.Second, 11 * time.Second} {
		h.observe(d)
	}
	s := h.snapshot()
	want := histSnap{sum: (22*time.Second + 20*time.Microsecond + 1).Seconds()}
	want.counts[0], want.counts[1], want.counts[15], want.counts[18], want.counts[19] = 2, 1, 1, 1, 1
	if diff := cmp.Diff(want, s, cmp.AllowUnexported(histSnap{})); diff != "" {
		t.Errorf("snapshot (-want +got):\n%s", diff)
	}
	if s.total() != 6 {
		t.Errorf("total %d, want 6", s.total())
	}
}

// TestRebucket: runtime buckets move to the first bound at or above their upper edge, and the sum
// takes their midpoints.
func TestRebucket(t *testing.T) {
	h := &rtmetrics.Float64Histogram{
		Buckets: []float64{math.Inf(-1), 0.000004, 0.00001, 0.00002, 20, math.Inf(1)},
		Counts:  []uint64{1, 2, 3, 0, 4},
	}
	got := rebucket(h)
	var want histSnap
	want.counts[0], want.counts[1], want.counts[19] = 1+2, 3, 4
	want.sum = 1*0.000002 + 2*0.000007 + 3*0.000015 + 4*20
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(histSnap{}), cmp.Comparer(func(a, b float64) bool { return math.Abs(a-b) < 1e-12 })); diff != "" {
		t.Errorf("rebucket (-want +got):\n%s", diff)
	}
}

// scrapeAfterTraffic sends a mix of requests through the whole server and returns the exposition.
func scrapeAfterTraffic(t *testing.T) string {
	t.Helper()
	m := testMetrics()
	store, v := testJournalStore(t), testVerifier(t) // the journal: its figures are part of the exposition
	m.attach(store, v)
	h := newServer(slog.New(slog.DiscardHandler), testConfig(t), m, func() bool { return true }, openapiJSON, testDocs(t), store, v, time.Now)
	do(t, h, postEGFR(`{"sex":"male","serum_creatinine_umol_l":88,"age":50}`))
	do(t, h, postEGFR(`{"sex":"male","serum_creatinine_umol_l":88,"age":5}`))
	do(t, h, postPatient(`{"resourceType":"Patient","gender":"female"}`))
	do(t, h, fhirReq("GET", "/Patient/nhs-9434765919", ""))
	do(t, h, httptest.NewRequest("BREW", "/egfr", nil))
	bad := httptest.NewRequest("GET", "/livez", nil)
	bad.Header.Set("X-Request-ID", "not an id")
	do(t, h, bad)
	rec := httptest.NewRecorder()
	handleMetrics(m).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if ct := rec.Header().Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	return rec.Body.String()
}

// TestMetricsExposition: the counts per route pattern, method and status class, the store's and the
// verifier's figures and the runtime's are there, and no label carries a raw path or a token.
func TestMetricsExposition(t *testing.T) {
	out := scrapeAfterTraffic(t)
	for _, line := range []string{
		`http_requests_total{route="/egfr",method="POST",status_class="2xx"} 1`,
		`http_requests_total{route="/egfr",method="POST",status_class="4xx"} 1`,
		`http_requests_total{route="/Patient",method="POST",status_class="2xx"} 1`,
		`http_requests_total{route="/Patient/{id}",method="GET",status_class="4xx"} 1`,
		`http_requests_total{route="/",method="_OTHER",status_class="4xx"} 1`,
		`http_requests_total{route="none",method="GET",status_class="4xx"} 1`,
		`http_request_duration_seconds_bucket{route="/egfr",method="POST",status_class="2xx",le="+Inf"} 1`,
		`http_request_duration_seconds_count{route="/egfr",method="POST",status_class="2xx"} 1`,
		`http_requests_in_flight 0`,
		`http_requests_in_flight_limit 1000`,
		`http_requests_refused_total 0`,
		`clinicalapi_patients 1`,
		`clinicalapi_journal_fsync_duration_seconds_count 1`,
		`clinicalapi_token_verifications_total{outcome="valid"} 2`,
		`clinicalapi_token_verifications_total{outcome="missing"} 0`,
		`# TYPE go_gc_pauses_seconds histogram`,
	} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("exposition lacks %q", line)
		}
	}
	for _, family := range []string{"go_goroutines", "go_sched_gomaxprocs_threads", "go_memory_classes_heap_objects_bytes",
		"go_memory_classes_total_bytes", "go_gc_heap_goal_bytes", "go_gc_cycles_total", "clinicalapi_journal_bytes",
		"clinicalapi_jwks_fetches_total", "clinicalapi_jwks_fetch_failures_total"} {
		if !strings.Contains(out, "\n"+family+" ") {
			t.Errorf("exposition lacks a %s sample", family)
		}
	}
	for _, leak := range []string{"9434765919", "eyJ", "BREW", "not an id"} {
		if strings.Contains(out, leak) {
			t.Errorf("exposition carries %q", leak)
		}
	}
}

// TestMetricsPromtool runs the real promtool's checker (Debian's prometheus package) on the
// exposition: the parser Prometheus itself uses, and its naming lint.
func TestMetricsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not found (apt-get install prometheus); .ci/run installs it and checks a live scrape with it")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(scrapeAfterTraffic(t))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || out.Len() > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out.String())
	}
}

// TestStoreStats: the journal store counts current Patients, not deleted ones, and reports its
// checkpoint's age once one exists (Close writes one).
func TestStoreStats(t *testing.T) {
	dir := t.TempDir()
	s, err := openJournalStore(dir, slog.New(slog.DiscardHandler), time.Now, false)
	if err != nil {
		t.Fatal(err)
	}
	build := func(string, string, time.Time) ([]byte, error) { return []byte(`{"resourceType":"Patient"}`), nil }
	for _, id := range []string{"a", "b"} {
		if _, err := s.Create(t.Context(), id, build); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Delete(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Patients != 1 || st.JournalBytes == 0 || st.CheckpointAge >= 0 || st.Fsyncs.snapshot().total() != 3 {
		t.Errorf("Stats() = %+v (%d fsyncs), want 1 Patient, a journal, no checkpoint, 3 fsyncs", st, st.Fsyncs.snapshot().total())
	}
	s.Close()
	s, err = openJournalStore(dir, slog.New(slog.DiscardHandler), time.Now, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.Stats(); st.Patients != 1 || st.CheckpointAge < 0 || st.CheckpointAge > time.Minute {
		t.Errorf("after a restart Stats() = %+v, want 1 Patient and a fresh checkpoint", st)
	}
}
