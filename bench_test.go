package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkEGFRHandler is POST /egfr through the whole middleware stack, logging JSON to io.Discard
// through the service's log handler.
func BenchmarkEGFRHandler(b *testing.B) {
	h := newServer(slog.New(newLogHandler(io.Discard)), testConfig(b), testMetrics(), func() bool { return true }, openapiJSON, testDocs(b), testStore(b), testVerifier(b), time.Now)
	benchPostEGFR(b, h, 200)
}

// BenchmarkHarness is the httptest scaffolding of BenchmarkEGFRHandler around a handler that does
// nothing: subtract its allocations to get the handler's own.
func BenchmarkHarness(b *testing.B) {
	benchPostEGFR(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }), 204)
}

// benchPostEGFR sends the handbook's POST /egfr to h in a loop, the same way for both benchmarks
// above, so that their allocation counts can be subtracted.
func benchPostEGFR(b *testing.B, h http.Handler, want int) {
	const body = `{"sex": "male", "serum_creatinine_umol_l": 88, "age": 50}`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/egfr", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			b.Fatalf("status %d, want %d", rec.Code, want)
		}
	}
}

// benchPatientServer is the full handler over a journal store in a temporary directory, holding n
// patients, with a read-write token; it returns the handler, the token and some ids.
func benchPatientServer(b *testing.B, n int, fsyncPerWrite bool) (http.Handler, string, []string) {
	b.Helper()
	store, err := openJournalStore(b.TempDir(), slog.New(slog.DiscardHandler), time.Now, fsyncPerWrite)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	h := newServer(slog.New(slog.DiscardHandler), testConfig(b), testMetrics(), func() bool { return true }, openapiJSON, testDocs(b), store, testVerifier(b), time.Now)
	var ids []string
	for i := range n {
		id := fmt.Sprintf("p%d", i)
		_, err := store.Create(context.Background(), id, func(_, v string, t time.Time) ([]byte, error) {
			return fmt.Appendf(nil, `{"resourceType":"Patient","id":%q,"meta":{"versionId":%q,"lastUpdated":%q},"identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"%010d"}],"name":[{"family":"Family%d","given":["Given%d"]}],"gender":"female","birthDate":"1970-01-01"}`,
				id, v, t.Format("2006-01-02T15:04:05.000Z07:00"), i, i%1000, i), nil
		})
		if err != nil {
			b.Fatal(err)
		}
		if i%(n/10+1) == 0 {
			ids = append(ids, id)
		}
	}
	return h, localTestIssuer(b).token(b, allScopes), ids
}

// BenchmarkPatientRead is GET /Patient/{id} through the whole stack, token check included.
func BenchmarkPatientRead(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			h, tok, ids := benchPatientServer(b, n, false)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				req := httptest.NewRequest(http.MethodGet, "/Patient/"+ids[i%len(ids)], nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("status %d", rec.Code)
				}
				i++
			}
		})
	}
}

// BenchmarkPatientCreate is POST /Patient from 16 concurrent clients, each 201 on disk: group
// commit (concurrent creates share an fsync) against one fsync per create, in the same run.
func BenchmarkPatientCreate(b *testing.B) {
	for _, mode := range []struct {
		name          string
		fsyncPerWrite bool
	}{{"GroupCommit", false}, {"FsyncPerWrite", true}} {
		b.Run(mode.name, func(b *testing.B) {
			h, tok, _ := benchPatientServer(b, 0, mode.fsyncPerWrite)
			b.SetParallelism(16 / runtime.GOMAXPROCS(0))
			start := time.Now()
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					body := strings.Replace(benchPatientBody, "9991234578", testNHSNumber(int(next.Add(1))), 1) // NHS numbers are unique
					req := httptest.NewRequest(http.MethodPost, "/Patient", strings.NewReader(body))
					req.Header.Set("Content-Type", "application/fhir+json")
					req.Header.Set("Authorization", "Bearer "+tok)
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != 201 {
						b.Errorf("status %d", rec.Code)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "creates/s")
		})
	}
}

const benchPatientBody = `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9991234578"}],"name":[{"use":"official","family":"Smith","given":["Jo"]}],"telecom":[{"system":"phone","value":"01632 960587","use":"home"}],"gender":"female","birthDate":"1974-12-25","address":[{"use":"home","line":["1 Trevelyan Square"],"city":"Leeds","postalCode":"LS1 6AE"}]}`

// BenchmarkPatientValidate parses and validates each official example (no HTTP, no store).
func BenchmarkPatientValidate(b *testing.B) {
	examples := patientExamples(b, "valid")
	b.ReportAllocs()
	for b.Loop() {
		for _, body := range examples {
			if _, _, status := parsePatient(body, true); status != 0 {
				b.Fatalf("status %d", status)
			}
		}
	}
	b.ReportMetric(float64(len(examples)), "examples/op")
}

// testNHSNumber is the n-th valid NHS number (NHS Data Dictionary Modulus 11) from 4000000000 up: tests
// that store many Patients give each its own, since a live Patient's NHS number is unique.
func testNHSNumber(n int) string {
	for stem := 400000000 + n; ; stem += 1 << 20 { // a stem whose check digit would be 10 is skipped
		d := fmt.Sprintf("%09d", stem)
		sum := 0
		for i := range 9 {
			sum += int(d[i]-'0') * (10 - i)
		}
		if check := (11 - sum%11) % 11; check != 10 {
			return d + fmt.Sprint(check)
		}
	}
}
