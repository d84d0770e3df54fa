package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
)

// route is one entry of the API surface: addRoutes registers it, and the contract test compares the
// list with openapi.json.
type route struct {
	method, pattern string
	h               http.Handler
}

// routes is the whole API surface in one table, with each route's access rule in view. v is nil
// when authentication is not configured (the Patient routes then refuse every request). The
// calculators are open unless EGFR_AUTH=required; a calculator request naming a patient_id needs a
// token that may read Patients whatever the setting (observationSubject).
func routes(log *slog.Logger, cfg config, ready func() bool, spec []byte, docs fs.FS, store patientStore, v *verifier, now func() time.Time) []route {
	read := func(h http.Handler) http.Handler { return withFHIRFormat(requireToken(v, readPatients, h)) }
	write := func(h http.Handler) http.Handler { return withFHIRFormat(requireToken(v, writePatients, h)) }
	calculator := func(h http.Handler) http.Handler {
		if cfg.auth.EGFRRequired {
			return requireToken(v, anyToken, h)
		}
		return h
	}
	return []route{
		{"POST", "/egfr", calculator(handleEGFR(log, store, v, now))},
		{"POST", "/crcl", calculator(handleCrCl(log, store, v, now))},
		{"GET", "/metadata", withFHIRFormat(handleMetadata(capabilityStatement(cfg.upstream.base != "")))},
		{"GET", "/Patient", read(handlePatientSearch(log, store, cfg.baseURL))},
		{"POST", "/Patient", write(handlePatientCreate(log, store))},
		{"PUT", "/Patient", write(handlePatientConditionalUpdate(log, store))},
		{"DELETE", "/Patient", write(handlePatientConditionalDelete(log, store))},
		{"POST", "/Patient/_search", read(handlePatientSearch(log, store, cfg.baseURL))},
		{"POST", "/Patient/$validate", read(handlePatientValidate(log, store))}, // never stores: read access suffices
		{"GET", "/Patient/{id}", read(handlePatientRead(log, store))},
		{"PUT", "/Patient/{id}", write(handlePatientUpdate(log, store))},
		{"PATCH", "/Patient/{id}", write(handlePatientPatch(log, store))},
		{"DELETE", "/Patient/{id}", write(handlePatientDelete(log, store))},
		{"GET", "/Patient/_history", read(handlePatientTypeHistory(log, store, cfg.baseURL))},
		{"GET", "/Patient/{id}/_history", read(handlePatientHistory(log, store, cfg.baseURL))},
		{"GET", "/Patient/{id}/_history/{vid}", read(handlePatientVRead(log, store))},
		{"GET", "/livez", handleLivez()},
		{"GET", "/readyz", handleReadyz(ready)},
		{"GET", "/openapi.json", handleStatic(spec, "application/json", "no-cache")},
		{"GET", "/docs", http.RedirectHandler("/docs/", http.StatusMovedPermanently)},
		{"GET", "/docs/", handleDocs(docs)},
	}
}

// addRoutes registers rs, and JSON answers for every request they do not take: the mux's own 404 and
// 405 bodies are text/plain. A path with routes under other methods gets a 405 listing them in Allow
// (GET implies HEAD); any other path a 404.
//
// The mux would send GET /Patient/_search to GET /Patient/{id} (it has no route of its own for that
// method), so such a literal path also gets a 405 under each method a wildcard route would take.
//
// Every route gets withRoute, with its metrics handle. Under load the probes are never refused, nor
// are the 404/405 answers (cheaper to give than a 503, and documented as the only answers there).
func addRoutes(mux *http.ServeMux, m *metrics, rs []route) {
	real := map[string]bool{} // the patterns of rs
	var methods []string      // every method rs use
	for _, rt := range rs {
		probe := rt.pattern == "/livez" || rt.pattern == "/readyz"
		mux.Handle(rt.method+" "+rt.pattern, withRoute(m.route(rt.pattern), !probe, rt.h))
		real[rt.method+" "+rt.pattern] = true
		if !slices.Contains(methods, rt.method) {
			methods = append(methods, rt.method)
		}
	}
	slices.Sort(methods)
	unrouted := handleUnrouted(mux, real, methods)
	for _, rt := range rs {
		for _, meth := range methods {
			if strings.Contains(rt.pattern, "{") || real[meth+" "+rt.pattern] {
				continue
			}
			if _, p := mux.Handler(&http.Request{Method: meth, Host: "h", URL: &url.URL{Path: rt.pattern}}); real[p] {
				mux.Handle(meth+" "+rt.pattern, withRoute(m.route(rt.pattern), false, unrouted))
			}
		}
	}
	mux.Handle("/", withRoute(m.route("/"), false, unrouted))
}

// handleUnrouted answers a request no route takes: 405 with Allow when the path has routes under other
// methods (found by asking mux which pattern each of methods would reach), else 404.
func handleUnrouted(mux *http.ServeMux, real map[string]bool, methods []string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range methods {
			if _, p := mux.Handler(&http.Request{Method: m, Host: r.Host, URL: r.URL}); real[p] {
				allow = append(allow, m)
				if m == http.MethodGet {
					allow = append(allow, http.MethodHead)
				}
			}
		}
		if allow == nil {
			writeError(w, r, http.StatusNotFound, "There is no resource at this path.")
			return
		}
		slices.Sort(allow)
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, r, http.StatusMethodNotAllowed, fmt.Sprintf("This path does not support %s; it supports %s.", r.Method, strings.Join(allow, ", ")))
	})
}

// newStartingServer answers while the service starts: alive, not ready, and 503 (with Retry-After)
// for every other route, in the route family's error format.
func newStartingServer(log *slog.Logger, m *metrics) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /livez", withRoute(m.route("/livez"), false, handleLivez()))
	mux.Handle("GET /readyz", withRoute(m.route("/readyz"), false, handleReadyz(func() bool { return false })))
	mux.Handle("/", withRoute(m.route("/"), false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		writeError(w, r, http.StatusServiceUnavailable, "The service is starting (replaying its journal); retry shortly.")
	})))
	return withRequestContext(log, m, mux)
}

// newServer builds the service's handler: the routes behind the request middleware, counted in m.
// now is the clock of calculated Observations.
func newServer(log *slog.Logger, cfg config, m *metrics, ready func() bool, spec []byte, docs fs.FS, store patientStore, v *verifier, now func() time.Time) http.Handler {
	mux := http.NewServeMux()
	addRoutes(mux, m, routes(log, cfg, ready, spec, docs, store, v, now))
	return withRequestContext(log, m, mux)
}

// handleEGFR serves POST /egfr: decode, validate, compute, encode as JSON or, for Accept:
// application/fhir+json, as a FHIR Observation.
func handleEGFR(log *slog.Logger, store patientStore, v *verifier, now func() time.Time) http.Handler {
	// This is the hot path: the buffer a body is read into (then the response encoded into) and the
	// JSON reader are pooled, and the header values are shared (net/http only reads them), so a request
	// allocates almost nothing of its own.
	type scratch struct {
		buf  bytes.Buffer
		json jsonReader
	}
	pool := sync.Pool{New: func() any { return new(scratch) }}
	contentType, vary := []string{"application/json"}, []string{"Accept"}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := pool.Get().(*scratch)
		defer pool.Put(s)
		body, ok := readBody(w, r, &s.buf, maxEGFRBody, "application/json")
		if !ok {
			return
		}
		fhir := wantsFHIR(r.Header["Accept"])
		req, problems := parseEGFRRequest(&s.json, body, fhir)
		if len(problems) > 0 {
			writeFieldProblems(w, r, problems)
			return
		}
		res := req.compute()
		if fhir {
			writeObservation(w, r, log, store, v, req.PatientID, egfrObservation(res, now()))
			return
		}
		h := w.Header()
		h["Content-Type"], h["Vary"] = contentType, vary
		w.WriteHeader(http.StatusOK)
		w.Write(res.appendJSON(s.buf.AvailableBuffer()[:0]))
	})
}

// handleCrCl serves POST /crcl, the Cockcroft-Gault creatinine clearance for drug dosing, with the
// same rules and representations as POST /egfr.
func handleCrCl(log *slog.Logger, store patientStore, v *verifier, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := readBody(w, r, nil, maxEGFRBody, "application/json")
		if !ok {
			return
		}
		fhir := wantsFHIR(r.Header["Accept"])
		req, problems := parseCrClRequest(body, fhir)
		if len(problems) > 0 {
			writeFieldProblems(w, r, problems)
			return
		}
		res := req.compute()
		if fhir {
			writeObservation(w, r, log, store, v, req.PatientID, crclObservation(res, now()))
			return
		}
		w.Header().Set("Vary", "Accept")
		writeJSON(w, http.StatusOK, "application/json", res)
	})
}

// observationSubject returns the reference an Observation's subject gets: none without patient_id.
// With one, it first needs a token that may read Patients (401 or 403 otherwise, as on the Patient
// routes), so the answer never tells a caller who may not read Patients whether one exists; then a
// stored Patient that is not deleted (422 otherwise). ok is false when it has answered the request.
func observationSubject(w http.ResponseWriter, r *http.Request, log *slog.Logger, store patientStore, v *verifier, id string) (subject string, ok bool) {
	if id == "" {
		return "", true
	}
	if !authorize(w, r, v, readPatients) {
		return "", false
	}
	p, err := store.Read(r.Context(), id)
	switch {
	case errors.Is(err, errNotFound) || err == nil && p.Deleted:
		writeFieldProblems(w, r, []fieldError{*badValue(loc("patient_id"), "not_found",
			"There is no Patient with this id on this server (or it was deleted); omit patient_id, or send the id of a stored Patient.")})
		return "", false
	case errors.As(err, new(*upstreamError)): // a calculator answers problem details, not FHIR errors
		log.Error("upstream FHIR server", "route", r.Pattern, "err", err, "request_id", requestIDFrom(r.Context()), "trace_id", traceIDFrom(r.Context()))
		w.Header().Set("Retry-After", "5")
		writeError(w, r, http.StatusServiceUnavailable, "The Patient store cannot be reached to check patient_id; retry shortly, or omit patient_id.",
			"body", "patient_id")
		return "", false
	case err != nil:
		writeStoreError(w, r, log, err, fhirIssue{}, fhirIssue{})
		return "", false
	}
	return "Patient/" + id, true
}

// writeObservation answers 200 with a calculated Observation, about patientID's Patient when one is
// named (observationSubject answers otherwise).
func writeObservation(w http.ResponseWriter, r *http.Request, log *slog.Logger, store patientStore, v *verifier, patientID string, o observation) {
	subject, ok := observationSubject(w, r, log, store, v, patientID)
	if !ok {
		return
	}
	if subject != "" {
		o.Subject = &fhirReference{Reference: subject}
	}
	w.Header().Set("Vary", "Accept")
	writeJSON(w, http.StatusOK, fhirContentType, o)
}

// writeFieldProblems answers the problems with a request body: 400 when any is about the JSON
// itself, else 422.
func writeFieldProblems(w http.ResponseWriter, r *http.Request, problems []fieldError) {
	status := http.StatusUnprocessableEntity
	for _, p := range problems {
		if p.status == http.StatusBadRequest {
			status = http.StatusBadRequest
		}
	}
	writeProblem(w, r, status, problemDetail(problems), problems)
}

// problemDetail sums problems up in one sentence per problem, each naming its field.
func problemDetail(problems []fieldError) string {
	var b strings.Builder
	for i, p := range problems {
		if i > 0 {
			b.WriteByte(' ')
		}
		if len(p.Loc) > 1 {
			b.WriteString(strings.Join(p.Loc[1:], ".") + ": ")
		}
		b.WriteString(p.Msg)
	}
	return b.String()
}

// maxEGFRBody caps POST /egfr bodies; a valid body is under 200 bytes.
const maxEGFRBody = 64 << 10

// readBody reads a request body of one of the media types into buf (a new buffer if nil), answering
// 415, 413 or 400 itself; ok is false when it did.
func readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer, limit int64, mediaTypes ...string) (body []byte, ok bool) {
	if msg := checkMediaType(r.Header.Get("Content-Type"), mediaTypes...); msg != "" {
		writeError(w, r, http.StatusUnsupportedMediaType, msg, "header", "Content-Type")
		return nil, false
	}
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	buf.Reset()
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit)); err != nil {
		if tooBig := new(http.MaxBytesError); errors.As(err, &tooBig) {
			writeError(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("The request body is larger than %d bytes.", limit), "body")
		} else {
			writeError(w, r, http.StatusBadRequest, "The request body could not be read.", "body")
		}
		return nil, false
	}
	return buf.Bytes(), true
}

// checkMediaType returns why the Content-Type ct is not one of mediaTypes (compared case-insensitively;
// the only parameter allowed is charset=utf-8), or "" when it is one of them.
func checkMediaType(ct string, mediaTypes ...string) string {
	if slices.Contains(mediaTypes, ct) { // the common case, without parsing
		return ""
	}
	want := "Content-Type must be " + strings.Join(mediaTypes, " or ") + " (charset utf-8)."
	if ct == "" {
		return "The request has no Content-Type; " + want
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || !slices.Contains(mediaTypes, mt) {
		return want
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return want
		}
	}
	return ""
}

// handleLivez answers whether the process is alive; it checks no dependency, so a restart never helps it.
func handleLivez() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, "application/json", health{Status: "ok"})
	})
}

// health is the body of /livez and /readyz.
type health struct {
	Status string `json:"status"`
}

// handleReadyz answers whether to send traffic: 503 before start-up finishes and once shutdown begins.
func handleReadyz(ready func() bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ready() {
			writeJSON(w, http.StatusServiceUnavailable, "application/json", health{Status: "unavailable"})
			return
		}
		writeJSON(w, http.StatusOK, "application/json", health{Status: "ready"})
	})
}

// docsCSP is the strictest policy Swagger UI's default layout works under (shared/reference/swagger-ui.md).
const docsCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// handleStatic serves fixed bytes with a content-derived ETag, so clients revalidate cheaply.
func handleStatic(b []byte, contentType, cacheControl string) http.Handler {
	sum := sha256.Sum256(b)
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Set("Cache-Control", cacheControl)
		h.Set("ETag", etag)
		h.Set("X-Content-Type-Options", "nosniff")
		if match := r.Header.Get("If-None-Match"); match != "" && etagMatches(match, etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			w.Write(b)
		}
	})
}

// etagMatches implements If-None-Match's weak comparison over a list of tags.
func etagMatches(header, etag string) bool {
	for t := range strings.SplitSeq(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

// handleDocs serves the embedded Swagger UI under /docs/ with a strict CSP. The page and our init
// script must be revalidated on each load; the vendored, version-pinned assets may be cached for a day.
// Each file is read and hashed on its first request, so the 1.9 MB bundle costs no memory until the
// docs are opened.
func handleDocs(docs fs.FS) http.Handler {
	files := map[string]func() http.Handler{}
	fs.WalkDir(docs, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" {
			ct = "text/plain; charset=utf-8"
		}
		cache := "public, max-age=86400"
		if p == "index.html" || p == "init.js" {
			cache = "no-cache"
		}
		files[p] = sync.OnceValue(func() http.Handler {
			b, err := fs.ReadFile(docs, p)
			if err != nil { // embedded files are always readable
				panic(fmt.Sprintf("read embedded %s: %v", p, err))
			}
			return handleStatic(b, ct, cache)
		})
		return nil
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/docs/")
		if name == "" {
			name = "index.html"
		}
		h, ok := files[name]
		if !ok {
			writeProblem(w, r, http.StatusNotFound, "There is no documentation file at this path.", nil)
			return
		}
		w.Header().Set("Content-Security-Policy", docsCSP)
		h().ServeHTTP(w, r)
	})
}
