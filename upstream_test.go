package main

// Tests of the upstream FHIR server store (upstream.go): faults and the translation against scripted
// httptest upstreams (always), and the interactions, replicas and an upstream restart against
// Medplum's FHIR engine (.ci/medplum-upstream.mjs; skipped, saying so, when CLINICALAPI_TEST_UPSTREAM
// is not set: .ci/run sets it).

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakePatient is a valid Patient as an upstream would send it.
func fakePatient(id, vid string) string {
	return `{"resourceType":"Patient","id":"` + id + `","meta":{"versionId":"` + vid + `","lastUpdated":"2026-12-01T10:00:00.123Z"},"gender":"female"}`
}

// fakeUpstream is an upstream whose answers the test scripts: GET /metadata is a CapabilityStatement,
// everything else goes to handle. It counts the requests handle gets.
func fakeUpstream(t *testing.T, handle http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fhir/metadata" {
			w.Header().Set("Content-Type", "application/fhir+json")
			io.WriteString(w, `{"resourceType":"CapabilityStatement","fhirVersion":"4.0.1"}`)
			return
		}
		n.Add(1)
		handle(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// fhirAnswer writes a FHIR JSON answer.
func fhirAnswer(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/fhir+json")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// upstreamHandler marks a service on an upstream store, whose answers do and doRaw check against the
// spec as served in that mode.
type upstreamHandler struct{ http.Handler }

// upstreamTestServer is the whole service over an upstream store on base (a FHIR base URL ending in
// "/"), with the given timeout and a log the test can read.
func upstreamTestServer(t *testing.T, base string, timeout time.Duration, log io.Writer) (http.Handler, *upstreamStore) {
	t.Helper()
	s, err := openUpstreamStore(upstreamConfig{base: base, timeout: timeout}, slog.New(slog.NewJSONHandler(log, nil)), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	cfg := testConfig(t)
	cfg.upstream.base = base
	return upstreamHandler{newServer(slog.New(slog.NewJSONHandler(log, nil)), cfg, testMetrics(), func() bool { return true }, openapiJSON, testDocs(t), s, testVerifier(t), time.Now)}, s
}

// upstreamOutcome is the diagnostics of the one issue in an OperationOutcome answer.
func upstreamOutcome(t *testing.T, res *http.Response) string {
	t.Helper()
	oo := decodeBody[operationOutcome](t, res)
	if len(oo.Issue) != 1 {
		t.Fatalf("want one issue, got %+v", oo.Issue)
	}
	return oo.Issue[0].Diagnostics
}

// TestUpstreamFaults: whatever goes wrong upstream, the client gets a 501/502/503/504 OperationOutcome
// (Retry-After on 503), soon, saying whether a write may have been stored; reads are retried, writes
// never; nothing the upstream sent is passed on.
func TestUpstreamFaults(t *testing.T) {
	slow := func(r *http.Request) { // until our client gives up (seen once the body is read)
		io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}
	const (
		read    = "GET /Patient/p1"
		create  = "POST /Patient"
		update  = "PUT /Patient/p1"
		search  = "GET /Patient?family=x&_offset=5"
		history = "GET /Patient/p1/_history"
		typeH   = "GET /Patient/_history"
	)
	const (
		unusable = "The upstream FHIR server this service stores Patients in gave an answer this service cannot use."
		unsure   = " The change may have been stored there: read the Patient before sending it again."
		down     = "The upstream FHIR server this service stores Patients in cannot be reached or is overloaded; nothing was changed. Retry later."
		late     = "The upstream FHIR server this service stores Patients in did not answer in time."
	)
	tests := []struct {
		name, req  string
		upstream   http.HandlerFunc
		wantStatus int
		wantRetry  string // Retry-After
		wantDiag   string
		wantCalls  int32 // requests the upstream got
	}{
		{"garbage", read, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>oops</html>") }, 502, "", unusable, 1},
		{"not json", read, func(w http.ResponseWriter, r *http.Request) { fhirAnswer(w, 200, `{"resourceType":"Patient",`) }, 502, "", unusable, 1},
		{"not a patient", read, func(w http.ResponseWriter, r *http.Request) {
			fhirAnswer(w, 200, `{"resourceType":"OperationOutcome","issue":[]}`)
		}, 502, "", unusable, 1},
		{"invalid patient", read, func(w http.ResponseWriter, r *http.Request) {
			fhirAnswer(w, 200, strings.Replace(fakePatient("p1", "v1"), `"gender":"female"`, `"gender":"dragon"`, 1))
		}, 502, "", unusable, 1},
		{"another patient", read, func(w http.ResponseWriter, r *http.Request) { fhirAnswer(w, 200, fakePatient("p2", "v1")) }, 502, "", unusable, 1},
		{"no version id", read, func(w http.ResponseWriter, r *http.Request) {
			fhirAnswer(w, 200, `{"resourceType":"Patient","id":"p1","meta":{"lastUpdated":"2026-12-01T10:00:00Z"}}`)
		}, 502, "", unusable, 1},
		{"duplicate key", read, func(w http.ResponseWriter, r *http.Request) {
			fhirAnswer(w, 200, `{"resourceType":"Patient","id":"p1","id":"p2","meta":{"versionId":"1","lastUpdated":"2026-12-01T10:00:00Z"}}`)
		}, 502, "", unusable, 1},
		{"too large", read, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/fhir+json")
			w.Header().Set("Content-Length", fmt.Sprint(maxUpstreamBody+1))
			w.Write(make([]byte, 1<<20)) // and then no more: refused before it is read
		}, 502, "", unusable, 1},
		{"500", read, func(w http.ResponseWriter, r *http.Request) { fhirAnswer(w, 500, `{"msg":"Internal Server Error"}`) }, 502, "", unusable, 1},
		{"credentials refused", read, func(w http.ResponseWriter, r *http.Request) { fhirAnswer(w, 401, `{}`) }, 502, "", unusable, 1},
		{"redirect not followed", read, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", http.StatusFound)
		}, 502, "", unusable, 1},
		{"503 retried, then its Retry-After", read, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "7")
			fhirAnswer(w, 503, `{}`)
		}, 503, "7", down, upstreamReadAttempts},
		{"429 with an absurd Retry-After", read, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "86400")
			fhirAnswer(w, 429, `{}`)
		}, 503, "5", down, 1},
		{"slow read", read, func(w http.ResponseWriter, r *http.Request) { slow(r) }, 504, "", late, 1},
		{"slow write", update, func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet {
				fhirAnswer(w, 200, fakePatient("p1", "v1"))
				return
			}
			slow(r)
		}, 504, "", late + unsure, 2},
		{"create answered with garbage", create, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/fhir+json")
			w.WriteHeader(201)
			io.WriteString(w, "created, I think")
		}, 502, "", unusable + unsure, 1},
		{"create answered 500", create, func(w http.ResponseWriter, r *http.Request) { fhirAnswer(w, 500, `{}`) }, 502, "", unusable + unsure, 1},
		{"create answered 503: never retried", create, func(w http.ResponseWriter, r *http.Request) { fhirAnswer(w, 503, `{}`) }, 503, "5", down, 1},
		{"create refused with 422", create, func(w http.ResponseWriter, r *http.Request) {
			fhirAnswer(w, 422, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing","diagnostics":"Jo Smith is not allowed"}]}`)
		}, 502, "", unusable, 1},
		{"search without total", search, func(w http.ResponseWriter, r *http.Request) {
			fhirAnswer(w, 200, `{"resourceType":"Bundle","type":"searchset"}`)
		}, 502, "", unusable, 1},
		{"search ignoring _offset", search, func(w http.ResponseWriter, r *http.Request) {
			fhirAnswer(w, 200, `{"resourceType":"Bundle","type":"searchset","total":9,"link":[{"relation":"self","url":"http://up/fhir/Patient?family=x"}]}`)
		}, 502, "", unusable, 1},
		{"search with an invalid patient", search, func(w http.ResponseWriter, r *http.Request) {
			fhirAnswer(w, 200, `{"resourceType":"Bundle","type":"searchset","total":6,"entry":[{"resource":{"resourceType":"Patient","id":"p1","birthDate":"1974-02-30","meta":{"versionId":"1","lastUpdated":"2026-12-01T10:00:00Z"}}}]}`)
		}, 502, "", unusable, 1},
		{"history link elsewhere", history, func(w http.ResponseWriter, r *http.Request) {
			fhirAnswer(w, 200, `{"resourceType":"Bundle","type":"history","link":[{"relation":"next","url":"http://evil.example/fhir/Patient/p1/_history?page=2"}],"entry":[{"resource":`+fakePatient("p1", "v1")+`}]}`)
		}, 502, "", unusable, 1},
		{"no type history", typeH, func(w http.ResponseWriter, r *http.Request) {
			fhirAnswer(w, 404, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found"}]}`)
		}, 501, "", "The upstream FHIR server this service stores Patients in does not offer this interaction.", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up, calls := fakeUpstream(t, tt.upstream)
			var log lockedBuffer
			h, _ := upstreamTestServer(t, up.URL+"/fhir/", 300*time.Millisecond, &log)
			method, path, _ := strings.Cut(tt.req, " ")
			body := ""
			switch method {
			case "POST":
				body = minimalPatient
			case "PUT":
				body = `{"resourceType":"Patient","id":"p1","gender":"male"}`
			}
			start := time.Now()
			res := do(t, h, fhirReq(method, path, body))
			if elapsed := time.Since(start); elapsed > 3*time.Second {
				t.Errorf("%s took %v: the upstream timeout is 300ms", tt.req, elapsed)
			}
			if res.StatusCode != tt.wantStatus || res.Header.Get("Retry-After") != tt.wantRetry {
				t.Errorf("%s: %d Retry-After %q, want %d %q", tt.req, res.StatusCode, res.Header.Get("Retry-After"), tt.wantStatus, tt.wantRetry)
			}
			if got := upstreamOutcome(t, res); got != tt.wantDiag {
				t.Errorf("diagnostics %q, want %q", got, tt.wantDiag)
			}
			if got := calls.Load(); got != tt.wantCalls {
				t.Errorf("the upstream got %d requests, want %d", got, tt.wantCalls)
			}
			if strings.Contains(log.String(), "Jo Smith") || strings.Contains(log.String(), "family=x") {
				t.Errorf("the log carries patient data: %s", log.String())
			}
		})
	}
}

// TestUpstreamUnreachable: with nothing listening, reads and writes are a quick 503 with Retry-After
// (nothing was sent, so nothing changed), and the store is not ready.
func TestUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String() + "/fhir/"
	ln.Close() // the port now refuses connections
	h, s := upstreamTestServer(t, base, 2*time.Second, io.Discard)
	for _, req := range []*http.Request{fhirReq("GET", "/Patient/p1", ""), postPatient(minimalPatient), fhirReq("GET", "/Patient?family=x", "")} {
		res := do(t, h, req)
		if res.StatusCode != 503 || res.Header.Get("Retry-After") != "5" || !strings.Contains(upstreamOutcome(t, res), "nothing was changed") {
			t.Errorf("%s %s: %d Retry-After %q, want 503 5", req.Method, req.URL, res.StatusCode, res.Header.Get("Retry-After"))
		}
	}
	if s.Ready() {
		t.Error("Ready with the upstream down")
	}
}

// TestUpstreamTranslation checks what the upstream is sent for each interaction, and that nothing it
// answers with (its URLs in Location, fullUrl or links) reaches the client.
func TestUpstreamTranslation(t *testing.T) {
	var mu sync.Mutex
	var got []string
	var up *httptest.Server
	up, _ = fakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		line := r.Method + " " + strings.TrimPrefix(r.URL.RequestURI(), "/fhir/")
		for _, h := range []string{"If-None-Exist", "If-Match", "Prefer"} {
			if v := r.Header.Get(h); v != "" {
				line += " " + h + ": " + v
			}
		}
		if len(body) > 0 {
			line += " " + string(body)
		}
		mu.Lock()
		got = append(got, line)
		mu.Unlock()
		w.Header().Set("Location", up.URL+"/fhir/Patient/p1/_history/v2")
		switch {
		case r.URL.Path == "/fhir/Patient" && r.Method == "GET":
			fhirAnswer(w, 200, `{"resourceType":"Bundle","type":"searchset","total":1,"link":[{"relation":"self","url":"`+up.URL+`/fhir/Patient"}],"entry":[{"fullUrl":"`+up.URL+`/fhir/Patient/p1","search":{"mode":"match"},"resource":`+fakePatient("p1", "v2")+`},{"search":{"mode":"include"},"resource":`+fakePatient("p9", "v1")+`}]}`)
		case r.URL.Path == "/fhir/Patient/p1/_history" && r.URL.RawQuery == "":
			fhirAnswer(w, 200, `{"resourceType":"Bundle","type":"history","link":[{"relation":"next","url":"`+up.URL+`/fhir/Patient/p1/_history?page=2"}],"entry":[{"resource":`+fakePatient("p1", "v2")+`}]}`)
		case r.URL.Path == "/fhir/Patient/p1/_history":
			fhirAnswer(w, 200, `{"resourceType":"Bundle","type":"history","entry":[{"resource":`+strings.Replace(fakePatient("p1", "v1"), "10:00", "09:00", 1)+`}]}`)
		case r.Method == "DELETE":
			fhirAnswer(w, 200, `{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational"}]}`)
		case r.Method == "POST" || r.Method == "PUT":
			fhirAnswer(w, 201, fakePatient("p1", "v2"))
		default:
			fhirAnswer(w, 200, fakePatient("p1", "v2"))
		}
	})
	h, _ := upstreamTestServer(t, up.URL+"/fhir/", 2*time.Second, io.Discard)
	nhs := `{"resourceType":"Patient","id":"p1","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]}`
	steps := []struct {
		req  *http.Request
		want []string
	}{
		{postPatient(`{"resourceType":"Patient","id":"mine","meta":{"versionId":"7","tag":[{"code":"t"}]},"gender":"female"}`),
			[]string{`POST Patient Prefer: return=representation {"resourceType":"Patient","meta":{"tag":[{"code":"t"}]},"gender":"female"}`}},
		{postPatient(strings.Replace(nhs, `"id":"p1",`, "", 1)), []string{`POST Patient If-None-Exist: identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9434765919 Prefer: return=representation {"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]}`}},
		{fhirReq("GET", "/Patient/p1", ""), []string{"GET Patient/p1"}},
		{fhirReq("GET", "/Patient/p1/_history/v2", ""), []string{"GET Patient/p1/_history/v2"}},
		{fhirReq("PUT", "/Patient/p1", `{"resourceType":"Patient","id":"p1"}`, "If-Match", `W/"v1"`), []string{`PUT Patient/p1 If-Match: W/"v1" Prefer: return=representation {"resourceType":"Patient","id":"p1"}`}},
		{fhirReq("PUT", "/Patient/p1", `{"resourceType":"Patient","id":"p1"}`), []string{"GET Patient/p1", `PUT Patient/p1 Prefer: return=representation {"resourceType":"Patient","id":"p1"}`}},
		{fhirReq("PUT", "/Patient/p1", nhs), []string{"GET Patient?_count=2&_total=accurate&identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9434765919", "GET Patient/p1", `PUT Patient/p1 Prefer: return=representation ` + nhs}},
		{fhirReq("GET", "/Patient?family:exact=Zo%C3%AB&birthdate=ge1970&unknown=1&_count=5&_offset=0", ""), []string{"GET Patient?_count=5&_total=accurate&birthdate=ge1970&family%3Aexact=Zo%C3%AB"}},
		{fhirReq("GET", "/Patient/p1/_history", ""), []string{"GET Patient/p1/_history", "GET Patient/p1/_history?page=2"}},
		{fhirReq("DELETE", "/Patient/p1", ""), []string{"DELETE Patient/p1"}},
		{fhirReq("DELETE", "/Patient?identifier=urn:x|1", ""), []string{"GET Patient?_count=2&_total=accurate&identifier=urn%3Ax%7C1", "DELETE Patient?identifier=urn%3Ax%7C1"}},
	}
	for _, st := range steps {
		mu.Lock()
		got = nil
		mu.Unlock()
		st.req.Host = "api.example.nhs.uk"
		res := do(t, h, st.req)
		body := readAll(t, res.Body)
		if res.StatusCode >= 300 {
			t.Errorf("%s %s: %d %s", st.req.Method, st.req.URL, res.StatusCode, body)
		}
		mu.Lock()
		if diff := cmp.Diff(st.want, got); diff != "" {
			t.Errorf("%s %s: upstream requests (-want +got):\n%s", st.req.Method, st.req.URL, diff)
		}
		mu.Unlock()
		for k, vs := range res.Header {
			if strings.Contains(strings.Join(vs, " "), up.URL) {
				t.Errorf("%s %s: header %s %q names the upstream", st.req.Method, st.req.URL, k, vs)
			}
		}
		if bytes.Contains(body, []byte(up.URL)) || bytes.Contains(body, []byte(`"p9"`)) {
			t.Errorf("%s %s: the body names the upstream or an include: %s", st.req.Method, st.req.URL, body)
		}
	}
	// The history, both pages, newest first; the versions without request inferred.
	b := decodeBody[bundle](t, do(t, h, fhirReq("GET", "/Patient/p1/_history", "")))
	var entries []string
	for _, e := range b.Entry {
		entries = append(entries, e.Request.Method+" "+e.Response.Status+" "+e.Response.Etag)
	}
	if diff := cmp.Diff([]string{`PUT 200 OK W/"v2"`, `POST 201 Created W/"v1"`}, entries); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
}

// TestUpstreamTypeHistory: type-level history pages by the upstream's next links when it gives them
// (kept, relative to its base, inside our opaque _before cursor), else by _offset; a cursor we did not
// make, or one leading outside the upstream's base, is a 400.
func TestUpstreamTypeHistory(t *testing.T) {
	entry := func(method, id, vid string) string {
		return `{"request":{"method":"` + method + `","url":"Patient/` + id + `"},"response":{"status":"200 OK"},"resource":` + fakePatient(id, vid) + `}`
	}
	page := entry("PUT", "a", "v2") + "," + entry("POST", "b", "v1")
	for _, tt := range []struct {
		name  string
		links bool
		want  []string // the queries the upstream gets, following our next links from _count=2
	}{
		{"by the upstream's links", true, []string{"_count=2", "page=2"}},
		{"by _offset", false, []string{"_count=2", "_count=2&_offset=2", "_count=2&_offset=4"}},
	} {
		var mu sync.Mutex
		var got []string
		var up *httptest.Server
		up, _ = fakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			got = append(got, r.URL.RawQuery)
			mu.Unlock()
			switch q := r.URL.Query(); {
			case tt.links && q.Get("page") == "":
				fhirAnswer(w, 200, `{"resourceType":"Bundle","type":"history","link":[{"relation":"next","url":"`+up.URL+`/fhir/Patient/_history?page=2"}],"entry":[`+page+`]}`)
			case q.Get("_offset") == "4":
				fhirAnswer(w, 200, `{"resourceType":"Bundle","type":"history"}`)
			default: // a full page, without links
				fhirAnswer(w, 200, `{"resourceType":"Bundle","type":"history","entry":[`+page+`]}`)
			}
		})
		h, _ := upstreamTestServer(t, up.URL+"/fhir/", 2*time.Second, io.Discard)
		var methods []string
		for next := "/Patient/_history?_count=2"; next != ""; {
			b := decodeBody[bundle](t, do(t, h, fhirReq("GET", next, "")))
			next = ""
			for _, l := range b.Link {
				if l.Relation == "next" {
					next = strings.TrimPrefix(l.URL, "http://example.com")
				}
			}
			for _, e := range b.Entry {
				methods = append(methods, e.Request.Method)
			}
			if len(methods) > 10 {
				t.Fatalf("%s: the pages never end", tt.name)
			}
		}
		mu.Lock()
		if diff := cmp.Diff(tt.want, got); diff != "" || len(methods) != 4 || methods[1] != "POST" {
			t.Errorf("%s: entries %v; upstream requests (-want +got):\n%s", tt.name, methods, diff)
		}
		mu.Unlock()
		for _, cursor := range []string{"nZZ%21", "n" + base64.RawURLEncoding.EncodeToString([]byte("http://evil.example/Patient/_history")),
			"n" + base64.RawURLEncoding.EncodeToString([]byte("../admin")), "o-1", "o", "x1"} {
			if res := do(t, h, fhirReq("GET", "/Patient/_history?_before="+cursor, "")); res.StatusCode != 400 {
				t.Errorf("_before=%s: %d, want 400", cursor, res.StatusCode)
			}
		}
	}
}

// TestUpstreamReadiness: readiness follows the upstream's /metadata, checked on a cadence (so /readyz
// costs the upstream nothing), and refuses a server that is not R4.
func TestUpstreamReadiness(t *testing.T) {
	var status atomic.Int32
	var probes atomic.Int32
	status.Store(200)
	capability := atomic.Value{}
	capability.Store(`{"resourceType":"CapabilityStatement","fhirVersion":"4.0.1"}`)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probes.Add(1)
		fhirAnswer(w, int(status.Load()), capability.Load().(string))
	}))
	defer up.Close()
	s, err := openUpstreamStore(upstreamConfig{base: up.URL + "/", timeout: time.Second}, slog.New(slog.DiscardHandler), nil, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h := upstreamHandler{newServer(slog.New(slog.DiscardHandler), testConfig(t), testMetrics(), s.Ready, openapiJSON, testDocs(t), s, testVerifier(t), time.Now)}
	wait := func(want bool) {
		t.Helper()
		pollUntil(t, fmt.Sprintf("Ready() == %v", want), func() bool { return s.Ready() == want })
		if got := do(t, h, httptest.NewRequest("GET", "/readyz", nil)).StatusCode == 200; got != want {
			t.Errorf("/readyz ready %v, want %v", got, want)
		}
	}
	wait(true)
	status.Store(503)
	wait(false)
	status.Store(200)
	wait(true)
	capability.Store(`{"resourceType":"CapabilityStatement","fhirVersion":"5.0.0"}`)
	wait(false)
	capability.Store(`{"resourceType":"Bundle","type":"searchset","total":0}`) // Medplum's router at /metadata
	wait(true)
	before := probes.Load()
	for range 200 {
		do(t, h, httptest.NewRequest("GET", "/readyz", nil))
	}
	if n := probes.Load() - before; n > 100 {
		t.Errorf("200 /readyz requests made %d upstream requests: readiness must be checked on a cadence", n)
	}
}

// Credentials of the tests: a token in a file, and a client's secret and the token it gets.
const testSecret, testFileToken, testOAuthToken = "s3cret-client-secret", "token-from-file-AAAA", "oauth-token-BBBB"

// credentialsFixture is an upstream that records the Authorization it is sent, a token endpoint that
// gives testOAuthToken (600 s) to client "client 1" with testSecret and scope system/Patient.*, and
// the files holding testFileToken and testSecret.
type credentialsFixture struct {
	env                 mapEnv // FHIR_UPSTREAM_URL
	tokenURL, tokenPath string
	secretPath          string
	fetches             atomic.Int32
	clock               atomic.Int64 // Unix nanoseconds; 0 is time.Now
	mu                  sync.Mutex
	lastAuth            string
	log                 lockedBuffer
}

// now is the fixture's clock.
func (f *credentialsFixture) now() time.Time {
	if n := f.clock.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Now()
}

// newCredentialsFixture starts the fixture's upstream and token endpoint and writes its files.
func newCredentialsFixture(t *testing.T) *credentialsFixture {
	f := &credentialsFixture{}
	up, _ := fakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.lastAuth = r.Header.Get("Authorization")
		f.mu.Unlock()
		fhirAnswer(w, 200, fakePatient("p1", "v1"))
	})
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, pw, ok := r.BasicAuth()
		r.ParseForm()
		if !ok || id != "client+1" || pw != testSecret || r.PostForm.Get("grant_type") != "client_credentials" || r.PostForm.Get("scope") != "system/Patient.*" {
			w.WriteHeader(401)
			io.WriteString(w, `{"error":"invalid_client","error_description":"the secret `+pw+` is wrong"}`)
			return
		}
		f.fetches.Add(1)
		io.WriteString(w, `{"access_token":"`+testOAuthToken+`","token_type":"bearer","expires_in":600}`)
	}))
	t.Cleanup(tokens.Close)
	dir := t.TempDir()
	f.env, f.tokenURL = mapEnv{"FHIR_UPSTREAM_URL": up.URL + "/fhir"}, tokens.URL+"/token"
	f.tokenPath, f.secretPath = filepath.Join(dir, "token"), filepath.Join(dir, "secret")
	os.WriteFile(f.tokenPath, []byte(testFileToken+"\n"), 0o600)
	os.WriteFile(f.secretPath, []byte(testSecret+"\n"), 0o600)
	return f
}

// store opens an upstream store with the fixture's environment plus env, and the fixture's clock.
func (f *credentialsFixture) store(t *testing.T, env mapEnv) *upstreamStore {
	t.Helper()
	maps.Copy(env, f.env)
	cfg, err := parseUpstreamConfig(env.get)
	if err != nil {
		t.Fatal(err)
	}
	s, err := openUpstreamStore(cfg, slog.New(slog.NewJSONHandler(&f.log, nil)), f.now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// read reads through s and returns the Authorization the upstream got.
func (f *credentialsFixture) read(t *testing.T, s *upstreamStore) string {
	t.Helper()
	if _, err := s.Read(t.Context(), "p1"); err != nil {
		t.Errorf("Read = %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastAuth
}

// checkLog fails if the log carries a credential.
func (f *credentialsFixture) checkLog(t *testing.T, secrets ...string) {
	t.Helper()
	for _, s := range append(secrets, testSecret, testFileToken, testOAuthToken) {
		if strings.Contains(f.log.String(), s) {
			t.Errorf("the log carries a credential (%q): %s", s, f.log.String())
		}
	}
}

// TestUpstreamTokenFile: the bearer token in FHIR_UPSTREAM_TOKEN_FILE is sent, and a rotated file is
// used once the upstream refuses the old token.
func TestUpstreamTokenFile(t *testing.T) {
	f := newCredentialsFixture(t)
	s := f.store(t, mapEnv{"FHIR_UPSTREAM_TOKEN_FILE": f.tokenPath})
	if got := f.read(t, s); got != "Bearer "+testFileToken {
		t.Errorf("Authorization %q, want the file's token", got)
	}
	os.WriteFile(f.tokenPath, []byte("rotated-token-CCCC\n"), 0o600)
	s.creds.refused()
	if got := f.read(t, s); got != "Bearer rotated-token-CCCC" {
		t.Errorf("after a 401 and a rotation: Authorization %q, want the new token", got)
	}
	f.checkLog(t, "rotated-token-CCCC")
}

// TestUpstreamClientCredentials: the token is fetched once, kept until shortly before it expires,
// dropped on a 401; a token endpoint refusing the client makes a 503 whose log says why without the
// secret.
func TestUpstreamClientCredentials(t *testing.T) {
	f := newCredentialsFixture(t)
	s := f.store(t, mapEnv{"FHIR_UPSTREAM_TOKEN_URL": f.tokenURL, "FHIR_UPSTREAM_CLIENT_ID": "client 1",
		"FHIR_UPSTREAM_CLIENT_SECRET_FILE": f.secretPath, "FHIR_UPSTREAM_SCOPE": "system/Patient.*"})
	f.clock.Store(time.Now().UnixNano())
	advance := func(d time.Duration) { f.clock.Add(int64(d)) }
	cc := s.creds.(*clientCredentials)
	for range 3 {
		if got := f.read(t, s); got != "Bearer "+testOAuthToken {
			t.Fatalf("Authorization %q, want the token endpoint's", got)
		}
	}
	for _, st := range []struct {
		name        string
		step        func()
		wantFetches int32
	}{
		{"3 reads", func() {}, 1},
		{"still fresh", func() { advance(600*time.Second - time.Minute - time.Second) }, 1},
		{"within a minute of expiry", func() { advance(2 * time.Second) }, 2},
		{"after a 401", cc.refused, 3},
	} {
		st.step()
		f.read(t, s)
		if got := f.fetches.Load(); got != st.wantFetches {
			t.Errorf("%s: %d token fetches, want %d", st.name, got, st.wantFetches)
		}
	}
	os.WriteFile(f.secretPath, []byte("wrong-secret-XYZ\n"), 0o600) // re-read at the next fetch
	cc.refused()
	h := upstreamHandler{newServer(slog.New(slog.NewJSONHandler(&f.log, nil)), testConfig(t), testMetrics(), func() bool { return true }, openapiJSON, testDocs(t), s, testVerifier(t), time.Now)}
	if res := do(t, h, fhirReq("GET", "/Patient/p1", "")); res.StatusCode != 503 || res.Header.Get("Retry-After") == "" {
		t.Errorf("token endpoint refusing: %d, want 503 with Retry-After", res.StatusCode)
	}
	if !strings.Contains(f.log.String(), "token endpoint answered HTTP 401 (error: invalid_client)") {
		t.Errorf("the log does not say why: %s", f.log.String())
	}
	f.checkLog(t, "wrong-secret-XYZ")
}

// TestUpstreamConfig: each bad FHIR_UPSTREAM_* setting stops the start with one line naming it.
func TestUpstreamConfig(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600)
	tests := []struct {
		name string
		env  mapEnv
		want string
	}{
		{"plain http", mapEnv{"FHIR_UPSTREAM_URL": "http://fhir.example.nhs.uk/R4"}, "config: FHIR_UPSTREAM_URL: must use https (http is allowed only for loopback hosts)"},
		{"not a URL", mapEnv{"FHIR_UPSTREAM_URL": "fhir.example.nhs.uk"}, "config: FHIR_UPSTREAM_URL: must be an absolute URL with a host and no user info, query or fragment"},
		{"query", mapEnv{"FHIR_UPSTREAM_URL": "https://fhir.example.nhs.uk/R4?x=1"}, "config: FHIR_UPSTREAM_URL: must be an absolute URL with a host and no user info, query or fragment"},
		{"credentials in URL", mapEnv{"FHIR_UPSTREAM_URL": "https://u:p@fhir.example.nhs.uk/R4"}, "config: FHIR_UPSTREAM_URL: must be an absolute URL with a host and no user info, query or fragment"},
		{"timeout", mapEnv{"FHIR_UPSTREAM_URL": "https://f.example", "FHIR_UPSTREAM_TIMEOUT": "10"}, `config: FHIR_UPSTREAM_TIMEOUT: "10" is not a duration from 100ms to 2m, such as 10s`},
		{"timeout too long", mapEnv{"FHIR_UPSTREAM_URL": "https://f.example", "FHIR_UPSTREAM_TIMEOUT": "1h"}, `config: FHIR_UPSTREAM_TIMEOUT: "1h" is not a duration from 100ms to 2m, such as 10s`},
		{"setting without URL", mapEnv{"FHIR_UPSTREAM_TOKEN_FILE": secret}, "config: FHIR_UPSTREAM_TOKEN_FILE is set but FHIR_UPSTREAM_URL is not"},
		{"with DATA_DIR", mapEnv{"FHIR_UPSTREAM_URL": "https://f.example", "DATA_DIR": dir}, "config: DATA_DIR is for the embedded journal; with FHIR_UPSTREAM_URL the Patients are the upstream's: set one"},
		{"missing token file", mapEnv{"FHIR_UPSTREAM_URL": "https://f.example", "FHIR_UPSTREAM_TOKEN_FILE": dir + "/none"}, "config: FHIR_UPSTREAM_TOKEN_FILE: cannot read " + dir + "/none: no such file or directory"},
		{"empty token file", mapEnv{"FHIR_UPSTREAM_URL": "https://f.example", "FHIR_UPSTREAM_TOKEN_FILE": dir + "/empty"}, "config: FHIR_UPSTREAM_TOKEN_FILE: " + dir + "/empty must hold one line, 1 to 16384 characters"},
		{"both credentials", mapEnv{"FHIR_UPSTREAM_URL": "https://f.example", "FHIR_UPSTREAM_TOKEN_FILE": secret, "FHIR_UPSTREAM_TOKEN_URL": "https://t.example"},
			"config: FHIR_UPSTREAM_TOKEN_FILE and FHIR_UPSTREAM_TOKEN_URL (client credentials) are alternatives: set one"},
		{"client id missing", mapEnv{"FHIR_UPSTREAM_URL": "https://f.example", "FHIR_UPSTREAM_TOKEN_URL": "https://t.example", "FHIR_UPSTREAM_CLIENT_SECRET_FILE": secret},
			"config: FHIR_UPSTREAM_TOKEN_URL, FHIR_UPSTREAM_CLIENT_ID and FHIR_UPSTREAM_CLIENT_SECRET_FILE go together: set all three"},
		{"token URL http", mapEnv{"FHIR_UPSTREAM_URL": "https://f.example", "FHIR_UPSTREAM_TOKEN_URL": "http://t.example", "FHIR_UPSTREAM_CLIENT_ID": "c", "FHIR_UPSTREAM_CLIENT_SECRET_FILE": secret},
			"config: FHIR_UPSTREAM_TOKEN_URL: must use https (http is allowed only for loopback hosts)"},
		{"missing secret", mapEnv{"FHIR_UPSTREAM_URL": "https://f.example", "FHIR_UPSTREAM_TOKEN_URL": "https://t.example", "FHIR_UPSTREAM_CLIENT_ID": "c", "FHIR_UPSTREAM_CLIENT_SECRET_FILE": dir + "/none"},
			"config: FHIR_UPSTREAM_CLIENT_SECRET_FILE: cannot read " + dir + "/none: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := loadConfig(tt.env.get); err == nil || err.Error() != tt.want {
				t.Errorf("loadConfig() = %v, want %s", err, tt.want)
			}
		})
	}
	cfg, err := loadConfig(mapEnv{"FHIR_UPSTREAM_URL": "https://fhir.example.nhs.uk/R4/", "FHIR_UPSTREAM_TIMEOUT": "2500ms"}.get)
	if err != nil || cfg.upstream.base != "https://fhir.example.nhs.uk/R4/" || cfg.upstream.timeout != 2500*time.Millisecond {
		t.Errorf("loadConfig() = %+v, %v", cfg.upstream, err)
	}
}

// medplumBase is the Medplum adapter's base URL (CLINICALAPI_TEST_UPSTREAM), or the test is skipped.
func medplumBase(t *testing.T) string {
	t.Helper()
	base := os.Getenv(testUpstreamEnv)
	if base == "" {
		t.Skip("needs Medplum's FHIR engine: set CLINICALAPI_TEST_UPSTREAM to the base of .ci/medplum-upstream.mjs (.ci/run does)")
	}
	return strings.TrimRight(base, "/")
}

// etagOf is a response's ETag as a version id.
func etagOf(res *http.Response) string { return etagVersion(res.Header) }

// TestUpstreamLifecycle walks one Patient through every interaction against Medplum, with the
// upstream's version ids: what TestPatientLifecycle and TestPatientPatch check of the journal, as far
// as it holds for an upstream (README: what is guaranteed in each mode).
func TestUpstreamLifecycle(t *testing.T) {
	h, _ := upstreamTestServer(t, upstreamTenant(t, medplumBase(t)), 10*time.Second, io.Discard)
	created := do(t, h, postPatient(minimalPatient))
	p := decodeAnyBody(t, created)
	id, v1 := p["id"].(string), etagOf(created)
	if created.StatusCode != 201 || v1 == "" || created.Header.Get("Location") != "/Patient/"+id+"/_history/"+v1 || p["meta"].(map[string]any)["versionId"] != v1 {
		t.Fatalf("create: %d ETag %q Location %q", created.StatusCode, v1, created.Header.Get("Location"))
	}
	body := `{"resourceType":"Patient","id":"` + id + `","gender":"male"}`
	upd := do(t, h, fhirReq("PUT", "/Patient/"+id, body, "If-Match", `W/"`+v1+`"`))
	v2 := etagOf(upd)
	if upd.StatusCode != 200 || v2 == "" || v2 == v1 {
		t.Fatalf("update with If-Match: %d %q", upd.StatusCode, v2)
	}
	patch := do(t, h, patchReq(id, `[{"op":"add","path":"/active","value":true}]`, "If-Match", `W/"`+v2+`"`))
	v3 := etagOf(patch)
	for _, st := range []struct {
		name       string
		req        *http.Request
		wantStatus int
		wantETag   string
	}{
		{"stale If-Match", fhirReq("PUT", "/Patient/"+id, body, "If-Match", `W/"`+v1+`"`), 412, ""},
		{"If-Match not a FHIR id", fhirReq("PUT", "/Patient/"+id, body, "If-Match", `W/"a_b"`), 400, ""},
		{"If-Match on an unknown id", fhirReq("PUT", "/Patient/nobody-1", `{"resourceType":"Patient","id":"nobody-1"}`, "If-Match", `W/"x"`), 412, ""},
		{"stale patch", patchReq(id, `[{"op":"remove","path":"/active"}]`, "If-Match", `W/"`+v1+`"`), 412, ""},
		{"failed patch test", patchReq(id, `[{"op":"test","path":"/gender","value":"female"}]`), 422, ""},
		{"read", fhirReq("GET", "/Patient/"+id, ""), 200, v3},
		{"vread", fhirReq("GET", "/Patient/"+id+"/_history/"+v1, ""), 200, v1},
		{"vread unknown", fhirReq("GET", "/Patient/"+id+"/_history/no-such-version", ""), 404, ""},
		{"vread not a FHIR id", fhirReq("GET", "/Patient/"+id+"/_history/a_b", ""), 400, ""},
		{"update-as-create", fhirReq("PUT", "/Patient/chosen-1", `{"resourceType":"Patient","id":"chosen-1"}`), 201, "*"},
		{"search by id", fhirReq("GET", "/Patient?_id="+id+"&gender=male", ""), 200, ""},
		{"delete", fhirReq("DELETE", "/Patient/"+id, ""), 204, ""},
		{"read deleted", fhirReq("GET", "/Patient/"+id, ""), goneStatus(), ""},
		{"delete again", fhirReq("DELETE", "/Patient/"+id, ""), 204, ""},
	} {
		res := do(t, h, st.req)
		if got := etagOf(res); res.StatusCode != st.wantStatus || got != st.wantETag && !(st.wantETag == "*" && got != "") {
			t.Errorf("%s: %d ETag %q, want %d %q: %s", st.name, res.StatusCode, got, st.wantStatus, st.wantETag, readAll(t, res.Body))
		}
	}
	if patch.StatusCode != 200 || v3 == "" || v3 == v2 {
		t.Errorf("patch with If-Match: %d %q", patch.StatusCode, v3)
	}
}

// TestUpstreamHistory: instance history through Medplum, whose order flips between calls and whose
// entries carry no request: always newest first, interactions inferred.
func TestUpstreamHistory(t *testing.T) {
	h, _ := upstreamTestServer(t, upstreamTenant(t, medplumBase(t)), 10*time.Second, io.Discard)
	created := do(t, h, postPatient(minimalPatient))
	id := decodeAnyBody(t, created)["id"].(string)
	want := []string{`POST 201 Created W/"` + etagOf(created) + `"`}
	for i := range 3 {
		time.Sleep(2 * time.Millisecond) // distinct lastUpdated, which orders the upstream's versions
		res := do(t, h, fhirReq("PUT", "/Patient/"+id, fmt.Sprintf(`{"resourceType":"Patient","id":%q,"birthDate":"197%d"}`, id, i)))
		want = append([]string{`PUT 200 OK W/"` + etagOf(res) + `"`}, want...)
	}
	for range 3 { // Medplum answers in the other order every other call
		b := decodeBody[bundle](t, do(t, h, fhirReq("GET", "/Patient/"+id+"/_history", "")))
		var got []string
		for _, e := range b.Entry {
			got = append(got, e.Request.Method+" "+e.Response.Status+" "+e.Response.Etag)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("history (-want +got):\n%s", diff)
		}
	}
}

// callService sends a request to a running service (run), with a read-write token and headers as name,
// value pairs; the body is closed when the test ends.
func callService(t *testing.T, base, method, path, body string, headers ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+localTestIssuer(t).token(t, allScopes))
	if body != "" {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

// TestUpstreamReplicas runs two replicas of the whole service (run, as main does) on one Medplum
// tenant: a Patient created through one is read, searched and updated through the other, and two
// concurrent If-Match updates of one version through different replicas give exactly one 200 and
// one 412.
func TestUpstreamReplicas(t *testing.T) {
	tenant := upstreamTenant(t, medplumBase(t))
	li := localTestIssuer(t)
	env := func() mapEnv {
		return mapEnv{"FHIR_UPSTREAM_URL": tenant, "OIDC_ISSUER": li.url, "OIDC_AUDIENCE": testIssuerAudience}
	}
	a, stopA := startRun(t, env())
	b, stopB := startRun(t, env())
	waitReady(t, a)
	waitReady(t, b)
	call := func(base, method, path, body string, headers ...string) *http.Response {
		return callService(t, base, method, path, body, headers...)
	}
	created := call(a, "POST", "/Patient", minimalPatient)
	id := decodeAnyBody(t, created)["id"].(string)
	if read := call(b, "GET", "/Patient/"+id, ""); read.StatusCode != 200 || etagOf(read) != etagOf(created) {
		t.Errorf("read through the other replica: %d %q, want 200 %q", read.StatusCode, etagOf(read), etagOf(created))
	}
	found := decodeBody[bundle](t, call(b, "GET", "/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9991234578", ""))
	if bundleTotal(found) != 1 || !strings.HasSuffix(found.Entry[0].FullURL, "/Patient/"+id) {
		t.Errorf("search through the other replica: %+v", found)
	}
	if dup := call(b, "POST", "/Patient", minimalPatient); dup.StatusCode != 409 {
		t.Errorf("the same NHS number through the other replica: %d, want 409", dup.StatusCode)
	}
	v1 := etagOf(created)
	results := make(chan int, 2)
	var wg sync.WaitGroup
	for i, base := range []string{a, b} {
		wg.Go(func() {
			body := fmt.Sprintf(`{"resourceType":"Patient","id":%q,"birthDate":"198%d"}`, id, i)
			results <- call(base, "PUT", "/Patient/"+id, body, "If-Match", `W/"`+v1+`"`).StatusCode
		})
	}
	wg.Wait()
	close(results)
	statuses := map[int]int{}
	for st := range results {
		statuses[st]++
	}
	if diff := cmp.Diff(map[int]int{200: 1, 412: 1}, statuses); diff != "" {
		t.Errorf("two If-Match updates of one version through two replicas (-want +got):\n%s", diff)
	}
	var stops sync.WaitGroup // each takes the shutdown drain: together
	for _, stop := range []func() error{stopA, stopB} {
		stops.Go(func() {
			if err := stop(); err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	stops.Wait()
}

// TestUpstreamRestart kills the Medplum upstream under a running service and starts it again: reads
// get a quick 503 (never a hang), /readyz turns 503 within the check cadence, and both recover once
// it is back. It starts a Medplum of its own (node and CLINICALAPI_TEST_MEDPLUM_NODE_PATH, the
// node_modules .ci/run installed), since the shared one must live on.
func TestUpstreamRestart(t *testing.T) {
	modules := os.Getenv("CLINICALAPI_TEST_MEDPLUM_NODE_PATH")
	if modules == "" {
		t.Skip("needs Medplum's FHIR engine: set CLINICALAPI_TEST_MEDPLUM_NODE_PATH to the node_modules holding @medplum/fhir-router (.ci/run does)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	startMedplum := func() *exec.Cmd { return startMedplum(t, modules, port) }
	medplum := startMedplum()
	li := localTestIssuer(t)
	base, stop := startRun(t, mapEnv{"FHIR_UPSTREAM_URL": "http://127.0.0.1:" + port + "/", "FHIR_UPSTREAM_TIMEOUT": "2s",
		"OIDC_ISSUER": li.url, "OIDC_AUDIENCE": testIssuerAudience})
	defer stop()
	waitReady(t, base)
	get := func(path string) *http.Response { return callService(t, base, "GET", path, "") }
	if res := get("/Patient?_count=1"); res.StatusCode != 200 {
		t.Fatalf("search with the upstream up: %d", res.StatusCode)
	}
	medplum.Process.Kill()
	medplum.Wait()
	start := time.Now()
	if res := get("/Patient?_count=1"); res.StatusCode != 503 && res.StatusCode != 502 || time.Since(start) > 2*time.Second {
		t.Errorf("search with the upstream killed: %d after %v, want a quick 502 or 503", res.StatusCode, time.Since(start))
	}
	pollUntil(t, "/readyz 503 with the upstream down", func() bool { return get("/readyz").StatusCode == 503 })
	medplum = startMedplum()
	defer func() { medplum.Process.Kill(); medplum.Wait() }()
	pollUntil(t, "/readyz 200 with the upstream back", func() bool { return get("/readyz").StatusCode == 200 })
	if res := get("/Patient?_count=1"); res.StatusCode != 200 {
		t.Errorf("search with the upstream back: %d", res.StatusCode)
	}
}

// startMedplum starts .ci/medplum-upstream.mjs on port with the packages in modules, once it listens.
func startMedplum(t *testing.T, modules, port string) *exec.Cmd {
	t.Helper()
	args := []string{".ci/medplum-upstream.mjs", port}
	if major, err := exec.Command("node", "-p", "process.versions.node.split('.')[0]").Output(); err != nil {
		t.Fatalf("node: %v", err)
	} else if n, _ := strconv.Atoi(strings.TrimSpace(string(major))); n < 22 {
		args = append([]string{"--experimental-websocket"}, args...) // @medplum/core reads the global WebSocket
	}
	cmd := exec.Command("node", args...)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 64)
	if n, _ := io.ReadAtLeast(out, line, len("listening")); !strings.HasPrefix(string(line[:n]), "listening") {
		t.Fatalf("medplum-upstream.mjs: %q", line[:n])
	}
	return cmd
}

// TestUpstreamContextCancel: a client that goes away cancels the upstream request too.
func TestUpstreamContextCancel(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	gone := make(chan struct{})
	up, _ := fakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			close(gone)
		case <-release:
		}
	})
	_, s := upstreamTestServer(t, up.URL+"/fhir/", 10*time.Second, io.Discard)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	if _, err := s.Read(ctx, "p1"); err != context.Canceled {
		t.Errorf("Read with the caller gone = %v, want context.Canceled", err)
	}
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Error("the upstream request was not cancelled")
	}
}

// TestUpstreamTokenResponse: what a token endpoint may answer.
func TestUpstreamTokenResponse(t *testing.T) {
	for _, tt := range []struct {
		status   int
		body     string
		wantTok  string
		wantLife time.Duration
		wantErr  string
	}{
		{200, `{"access_token":"a","token_type":"Bearer","expires_in":3600}`, "a", time.Hour, ""},
		{200, `{"access_token":"a","token_type":"bearer"}`, "a", 5 * time.Minute, ""},
		{200, `{"access_token":"a","token_type":"mac"}`, "", 0, "upstream credentials: token endpoint's answer has no Bearer access_token"},
		{200, `{"token_type":"Bearer"}`, "", 0, "upstream credentials: token endpoint's answer has no Bearer access_token"},
		{200, `{"access_token":"a","token_type":"Bearer","expires_in":"60"}`, "", 0, "upstream credentials: token endpoint's expires_in is not a positive whole number"},
		{400, `{"error":"invalid_scope"}`, "", 0, "upstream credentials: token endpoint answered HTTP 400 (error: invalid_scope)"},
		{500, `<html>`, "", 0, "upstream credentials: token endpoint answered HTTP 500 (error: none given)"},
		{401, `{"error":"the secret is hunter2"}`, "", 0, "upstream credentials: token endpoint answered HTTP 401 (error: none given)"},
	} {
		tok, life, err := parseTokenResponse(tt.status, []byte(tt.body))
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if tok != tt.wantTok || life != tt.wantLife || gotErr != tt.wantErr {
			t.Errorf("parseTokenResponse(%d, %s) = %q, %v, %q; want %q, %v, %q", tt.status, tt.body, tok, life, gotErr, tt.wantTok, tt.wantLife, tt.wantErr)
		}
	}
}

// TestUpstreamPatientFromJSON: a Patient the upstream sends is served in this service's compact
// form, exactly the elements it sent.
func TestUpstreamPatientFromJSON(t *testing.T) {
	in := "{\n  \"resourceType\": \"Patient\",\n  \"birthDate\": \"1974\",\n  \"id\": \"p1\",\n  \"meta\": {\"versionId\": \"v1\", \"lastUpdated\": \"2026-12-01T10:00:00.123456+01:00\", \"source\": \"#x\"},\n  \"multipleBirthInteger\": 2\n}"
	root, _, _ := readJSON([]byte(in), fhirMaxDepth)
	v, err := patientFrom(root, len(in), "p1")
	want := patientVersion{ID: "p1", VersionID: "v1", LastUpdated: time.Date(2026, 12, 1, 9, 0, 0, 123000000, time.UTC),
		Body: []byte(`{"resourceType":"Patient","birthDate":"1974","id":"p1","meta":{"versionId":"v1","lastUpdated":"2026-12-01T10:00:00.123456+01:00","source":"#x"},"multipleBirthInteger":2}`)}
	if diff := cmp.Diff(want, v, ignoreLoc); diff != "" || err != nil {
		t.Errorf("patientFrom = %v (-want +got):\n%s", err, diff)
	}
	var decoded map[string]any
	if err := json.Unmarshal(v.Body, &decoded); err != nil {
		t.Error(err)
	}
}
