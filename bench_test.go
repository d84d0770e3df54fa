package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func BenchmarkEquations(b *testing.B) {
	for _, bm := range []struct {
		name string
		f    func() float64
	}{
		{"2021", func() float64 { return ckdEPI2021(88/umolPerMgDL, 50, male) }},
		{"2009", func() float64 { return ckdEPI2009(88/umolPerMgDL, 50, female) }},
		{"2021CrCys", func() float64 { return ckdEPI2021CrCys(88/umolPerMgDL, 0.9, 50, male) }},
	} {
		b.Run(bm.name, func(b *testing.B) {
			var sink float64
			for b.Loop() {
				sink += bm.f()
			}
			_ = sink
		})
	}
}

// BenchmarkEGFRHandler is POST /egfr through the whole middleware stack, logging JSON to io.Discard.
func BenchmarkEGFRHandler(b *testing.B) {
	h := newServer(slog.New(slog.NewJSONHandler(io.Discard, nil)), testConfig(b), func() bool { return true }, openapiJSON, testDocs(b), testStore(b), testVerifier(b))
	const body = `{"sex": "male", "serum_creatinine_umol_l": 88, "age": 50}`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/egfr", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("status %d", rec.Code)
		}
	}
}

// BenchmarkHarness is the httptest scaffolding of BenchmarkEGFRHandler around a handler that does
// nothing: subtract its allocations to get the handler's own.
func BenchmarkHarness(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	const body = `{"sex": "male", "serum_creatinine_umol_l": 88, "age": 50}`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/egfr", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
	}
}
