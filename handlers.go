package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"path"
	"runtime/debug"
	"slices"
	"strconv"
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
// when authentication is not configured (the Patient routes then refuse every request).
func routes(log *slog.Logger, cfg config, ready func() bool, spec []byte, docs fs.FS, store patientStore, v *verifier) []route {
	read := func(h http.Handler) http.Handler { return withFHIRFormat(requireToken(v, readPatients, h)) }
	write := func(h http.Handler) http.Handler { return withFHIRFormat(requireToken(v, writePatients, h)) }
	egfr := handleEGFR()
	if cfg.auth.EGFRRequired {
		egfr = requireToken(v, anyToken, egfr)
	}
	return []route{
		{"POST", "/egfr", egfr},
		{"GET", "/metadata", withFHIRFormat(handleMetadata(capabilityStatement()))},
		{"GET", "/Patient", read(handlePatientSearch(store, cfg.baseURL))},
		{"POST", "/Patient", write(handlePatientCreate(log, store))},
		{"POST", "/Patient/_search", read(handlePatientSearch(store, cfg.baseURL))},
		{"GET", "/Patient/{id}", read(handlePatientRead(store))},
		{"PUT", "/Patient/{id}", write(handlePatientUpdate(log, store))},
		{"DELETE", "/Patient/{id}", write(handlePatientDelete(log, store))},
		{"GET", "/Patient/{id}/_history", read(handlePatientHistory(store, cfg.baseURL))},
		{"GET", "/Patient/{id}/_history/{vid}", read(handlePatientVRead(store))},
		{"GET", "/livez", handleLivez()},
		{"GET", "/readyz", handleReadyz(ready)},
		{"GET", "/openapi.json", handleStatic(spec, "application/json", "no-cache")},
		{"GET", "/docs", http.RedirectHandler("/docs/", http.StatusMovedPermanently)},
		{"GET", "/docs/", handleDocs(docs)},
	}
}

// addRoutes registers rs, then a JSON 405 (with Allow) for each path's other methods and a JSON 404
// for everything else: the mux's own 404 and 405 bodies are text/plain.
func addRoutes(mux *http.ServeMux, rs []route) {
	allow := map[string][]string{}
	for _, rt := range rs {
		mux.Handle(rt.method+" "+rt.pattern, rt.h)
		allow[rt.pattern] = append(allow[rt.pattern], rt.method)
		if rt.method == http.MethodGet { // a GET pattern also serves HEAD
			allow[rt.pattern] = append(allow[rt.pattern], http.MethodHead)
		}
	}
	for p, methods := range allow {
		if matchedByWildcard(p, rs) {
			continue // the mux would refuse it as a conflict; see pathID
		}
		slices.Sort(methods)
		mux.Handle(p, handleMethodNotAllowed(strings.Join(methods, ", ")))
	}
	mux.Handle("/", handleNotFound())
}

// matchedByWildcard reports whether a literal path such as /Patient/_search is also matched by a
// wildcard route such as GET /Patient/{id}: a method-less 405 route for it would conflict with that
// one (neither is more specific), so its 405 is answered by the wildcard route's handler instead.
func matchedByWildcard(p string, rs []route) bool {
	for _, rt := range rs {
		if rt.pattern == p || !strings.Contains(rt.pattern, "{") {
			continue
		}
		ps, ws := strings.Split(p, "/"), strings.Split(rt.pattern, "/")
		if len(ps) != len(ws) {
			continue
		}
		match := true
		for i := range ws {
			if !strings.HasPrefix(ws[i], "{") && ws[i] != ps[i] {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

// newStartingServer answers while the service starts: alive, not ready, and 503 (with Retry-After)
// for every other route, in the route family's error format.
func newStartingServer(log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /livez", handleLivez())
	mux.Handle("GET /readyz", handleReadyz(func() bool { return false }))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		writeError(w, r, http.StatusServiceUnavailable, "The service is starting (replaying its journal); retry shortly.")
	})
	return withRequestContext(log, mux)
}

// newServer builds the service's handler: the routes behind the request middleware.
func newServer(log *slog.Logger, cfg config, ready func() bool, spec []byte, docs fs.FS, store patientStore, v *verifier) http.Handler {
	mux := http.NewServeMux()
	addRoutes(mux, routes(log, cfg, ready, spec, docs, store, v))
	return withRequestContext(log, mux)
}

// handleEGFR serves POST /egfr: decode, validate, compute, encode.
func handleEGFR() http.Handler {
	// Request bodies are read into pooled buffers: this is the hot path, and a body is under 200
	// bytes. The response is encoded into the same buffer once the body has been parsed.
	bufs := sync.Pool{New: func() any { return new(bytes.Buffer) }}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if msg := checkJSONContentType(r.Header.Get("Content-Type")); msg != "" {
			writeProblem(w, r, http.StatusUnsupportedMediaType, msg, nil)
			return
		}
		buf := bufs.Get().(*bytes.Buffer)
		defer bufs.Put(buf)
		buf.Reset()
		if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, maxEGFRBody)); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeProblem(w, r, http.StatusRequestEntityTooLarge,
					fmt.Sprintf("The request body is larger than %d bytes.", maxEGFRBody), nil)
				return
			}
			writeProblem(w, r, http.StatusBadRequest, "The request body could not be read.", nil)
			return
		}
		req, problems := parseEGFRRequest(buf.Bytes())
		if len(problems) > 0 {
			status := http.StatusUnprocessableEntity
			for _, p := range problems {
				if p.status == http.StatusBadRequest {
					status = http.StatusBadRequest
				}
			}
			writeProblem(w, r, status, problemDetail(problems), problems)
			return
		}
		out := req.compute().appendJSON(buf.AvailableBuffer()[:0])
		w.Header()["Content-Type"] = []string{"application/json"}
		w.WriteHeader(http.StatusOK)
		w.Write(out)
	})
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

// checkJSONContentType returns why ct is not application/json (case-insensitive; charset utf-8 only),
// or "" when it is.
func checkJSONContentType(ct string) string {
	const want = "Content-Type must be application/json (charset utf-8)."
	if ct == "application/json" { // the common case, without parsing
		return ""
	}
	if ct == "" {
		return "The request has no Content-Type; " + want
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
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

// handleNotFound is the JSON 404 for every path no route matches.
func handleNotFound() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, http.StatusNotFound, "There is no resource at this path.")
	})
}

// handleMethodNotAllowed is the JSON 405 for a known path with another method.
func handleMethodNotAllowed(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, r, http.StatusMethodNotAllowed,
			fmt.Sprintf("This path does not support %s; it supports %s.", r.Method, allow))
	})
}

// writeJSON encodes v first, so an encoding failure can still become a clean 500. HTML escaping is
// off: ">90" stays ">90" rather than "\u003e90".
func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("encode response: %v", err)) // a programming error; the middleware answers 500
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// writeError writes an error in the format of the route family: an OperationOutcome on the FHIR routes,
// problem details elsewhere.
func writeError(w http.ResponseWriter, r *http.Request, status int, detail string) {
	if isFHIRPath(r.URL.Path) {
		writeOutcome(w, status, []fhirIssue{{Severity: "error", Code: issueTypeFor(status), Diagnostics: detail}})
		return
	}
	writeProblem(w, r, status, detail, nil)
}

// isFHIRPath reports whether p belongs to the FHIR API (the service root is the FHIR base).
func isFHIRPath(p string) bool {
	return p == "/metadata" || p == "/Patient" || strings.HasPrefix(p, "/Patient/")
}

// issueTypeFor is the FHIR IssueType for a generic error status.
func issueTypeFor(status int) string {
	switch status {
	case http.StatusNotFound:
		return "not-found"
	case http.StatusGone:
		return "deleted"
	case http.StatusMethodNotAllowed, http.StatusNotAcceptable, http.StatusUnsupportedMediaType:
		return "not-supported"
	case http.StatusPreconditionFailed, http.StatusConflict:
		return "conflict"
	case http.StatusRequestEntityTooLarge:
		return "too-long"
	case http.StatusUnprocessableEntity:
		return "business-rule"
	case http.StatusServiceUnavailable:
		return "transient"
	}
	if status >= 500 {
		return "exception"
	}
	return "invalid"
}

// operationOutcome is the FHIR R4 error body.
type operationOutcome struct {
	ResourceType string      `json:"resourceType"`
	Issue        []fhirIssue `json:"issue"`
}

// writeOutcome writes an OperationOutcome with the given issues.
func writeOutcome(w http.ResponseWriter, status int, issues []fhirIssue) {
	writeJSON(w, status, fhirContentType, operationOutcome{ResourceType: "OperationOutcome", Issue: issues})
}

// writeProblem writes an RFC 9457 problem details body.
func writeProblem(w http.ResponseWriter, r *http.Request, status int, detail string, errs []fieldError) {
	writeJSON(w, status, "application/problem+json", problem{
		Type:      "about:blank",
		Title:     http.StatusText(status),
		Status:    status,
		Detail:    detail,
		Errors:    errs,
		RequestID: requestIDFrom(r.Context()),
	})
}

// ctxKey is the private type of this package's context keys.
type ctxKey int

const requestInfoKey ctxKey = iota

func requestIDFrom(ctx context.Context) string {
	if ri, ok := ctx.Value(requestInfoKey).(*statusWriter); ok {
		return ri.id
	}
	return ""
}

// withRequestContext is the middleware every request passes through, in this order: request and
// correlation IDs (NHS API convention: accepted when well-formed, echoed, a UUID v4 made when absent),
// panic recovery (a generic 500, the server keeps serving), and one log line per request with the
// route pattern, never the path, query, body or headers, which may hold patient data or tokens.
func withRequestContext(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		reqID, reqErr := headerID(r.Header, "X-Request-Id", "X-Request-ID")
		corrID, corrErr := headerID(r.Header, "X-Correlation-Id", "X-Correlation-ID")
		if reqID == "" { // absent, empty or malformed: a malformed value is never echoed
			reqID = newUUID()
		}
		w.Header()["X-Request-Id"] = []string{reqID} // canonical key: no allocation to canonicalise it
		if corrID != "" && corrErr == "" {
			w.Header().Set("X-Correlation-ID", corrID)
		}
		sw := &statusWriter{ResponseWriter: w, id: reqID}
		r = r.WithContext(context.WithValue(r.Context(), requestInfoKey, sw))
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("panic", "route", r.Pattern, "request_id", reqID, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if sw.status == 0 {
					writeError(sw, r, http.StatusInternalServerError, "The server could not complete the request.")
				}
			}
			// Five attributes fit in a slog.Record without allocating; the optional ones are rare.
			attrs := append(make([]slog.Attr, 0, 7), slog.String("method", r.Method), slog.String("route", r.Pattern),
				slog.Int("status", sw.status), slog.Int64("duration_us", time.Since(start).Microseconds()),
				slog.String("request_id", reqID))
			if corrID != "" {
				attrs = append(attrs, slog.String("correlation_id", corrID))
			}
			if sw.subHash != "" { // the token's subject, hashed: traceable, not identifying
				attrs = append(attrs, slog.String("sub_hash", sw.subHash))
			}
			log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
		}()
		if msg := reqErr + corrErr; msg != "" {
			writeError(sw, r, http.StatusBadRequest, msg)
			return
		}
		next.ServeHTTP(sw, r)
	})
}

// headerID reads an ID header (by its canonical key, so the lookup does not allocate): "" when absent
// or empty, else the value if it is 1–128 characters from A-Z a-z 0-9 . _ : - (anything else could
// forge log lines or smuggle markup), else a problem message naming the header as the docs do.
func headerID(h http.Header, key, name string) (id, problem string) {
	vs := h[key]
	if len(vs) == 0 || (len(vs) == 1 && vs[0] == "") {
		return "", ""
	}
	bad := name + " must be 1 to 128 characters from A-Z, a-z, 0-9, '.', '_', ':' and '-', sent once."
	if len(vs) > 1 || len(vs[0]) > 128 {
		return "", bad
	}
	for _, c := range []byte(vs[0]) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return "", bad
		}
	}
	return vs[0], ""
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// statusWriter records the status a handler writes, for the log line and panic recovery, and is
// what the middleware knows about the request (the context carries it): its ID, and the hash of the
// token's subject once the auth check has run.
type statusWriter struct {
	http.ResponseWriter
	status  int
	id      string
	subHash string
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ---- Authentication: OIDC bearer tokens (auth.go verifies them) ----

// access is what a route needs from the caller's token.
type access int

const (
	anyToken access = iota // a valid token, whatever its scopes (/egfr under EGFR_AUTH=required)
	readPatients
	writePatients
)

// requireToken lets a request through only with a valid bearer token carrying the access needed.
// With auth not configured it refuses everything: protected routes never run open by accident.
// Failures are 401 (no or bad token, with WWW-Authenticate per RFC 6750) or 403 (valid token,
// missing scope), as an OperationOutcome on FHIR routes carrying the NHS API error code.
func requireToken(v *verifier, need access, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var aerr *authError
		var claims tokenClaims
		if v == nil {
			aerr = &authError{Code: authCodeInvalid, Description: "Authentication is not configured on this server: " +
				"its operator must set OIDC_ISSUER and OIDC_AUDIENCE before these routes can be used."}
		} else {
			claims, aerr = v.verify(r.Context(), r.Header.Get("Authorization"))
		}
		if aerr == nil {
			if ri, ok := r.Context().Value(requestInfoKey).(*statusWriter); ok {
				ri.subHash = subjectHash(claims.Subject)
			}
			if need == anyToken || hasScope(claims, need == writePatients) {
				next.ServeHTTP(w, r)
				return
			}
			scopes := "user/Patient.read or system/Patient.read (or Patient.*)"
			if need == writePatients {
				scopes = "user/Patient.write or system/Patient.write (or Patient.*)"
			}
			aerr = &authError{Code: authCodeDenied, Description: "The token is valid but lacks the scope this interaction needs: " + scopes + "."}
		}
		w.Header().Set("WWW-Authenticate", aerr.challenge())
		status := http.StatusUnauthorized
		if aerr.Code == authCodeDenied {
			status = http.StatusForbidden
		}
		if !isFHIRPath(r.URL.Path) {
			writeProblem(w, r, status, aerr.Description, nil)
			return
		}
		code := map[string]string{authCodeMissing: "login", authCodeInvalid: "unknown", authCodeExpired: "expired", authCodeDenied: "forbidden"}[aerr.Code]
		writeOutcome(w, status, []fhirIssue{{Severity: "error", Code: code, Diagnostics: aerr.Description,
			Details: &fhirCodeableConcept{Coding: []fhirCoding{{System: nhsdErrorSystem, Code: aerr.Code}}}}})
	})
}

// nhsdErrorSystem is the NHS England API error code system (conventions.md section 2).
const nhsdErrorSystem = "https://fhir.nhs.uk/CodeSystem/NHSD-API-ErrorOrWarningCode"

// fhirCodeableConcept and fhirCoding are the parts of those FHIR types an OperationOutcome uses.
type fhirCodeableConcept struct {
	Coding []fhirCoding `json:"coding"`
}

type fhirCoding struct {
	System string `json:"system"`
	Code   string `json:"code"`
}

// ---- FHIR R4 Patient (the service root is the FHIR base, as in the handbook) ----

// fhirContentType is the media type of every FHIR response (R4 http.html: charset SHALL be utf-8).
const fhirContentType = "application/fhir+json; charset=utf-8"

// maxFHIRBody caps FHIR request bodies; the largest official Patient example is under 20 KiB.
const maxFHIRBody = 1 << 20

// withFHIRFormat answers 406 when neither Accept nor _format allows FHIR JSON, before the handler runs.
func withFHIRFormat(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := r.URL.Query()["_format"]; len(f) > 0 {
			switch f[0] {
			case "json", "application/json", "application/fhir+json", "application/json+fhir":
			default:
				writeError(w, r, http.StatusNotAcceptable, "_format must be json, application/json or application/fhir+json: this server speaks FHIR JSON only.")
				return
			}
		} else if !acceptsFHIRJSON(r.Header.Values("Accept")) {
			writeError(w, r, http.StatusNotAcceptable, "Accept must allow application/fhir+json or application/json: this server speaks FHIR JSON only.")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// acceptsFHIRJSON reports whether Accept headers allow a JSON response (no header allows anything).
func acceptsFHIRJSON(accept []string) bool {
	if len(accept) == 0 {
		return true
	}
	for _, h := range accept {
		for rng := range strings.SplitSeq(h, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(rng))
			if err != nil {
				continue
			}
			if q := params["q"]; q != "" {
				if f, err := strconv.ParseFloat(q, 64); err != nil || f <= 0 {
					continue
				}
			}
			switch mt {
			case "application/fhir+json", "application/json", "application/json+fhir", "application/*", "*/*":
				return true
			}
		}
	}
	return false
}

// checkFHIRContentType returns why ct is not FHIR JSON, or "" when it is.
func checkFHIRContentType(ct string) string {
	const want = "Content-Type must be application/fhir+json or application/json (charset utf-8)."
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || (mt != "application/fhir+json" && mt != "application/json") {
		return want
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return want
		}
	}
	return ""
}

// readFHIRBody reads a FHIR request body, answering 415 or 413 itself; ok is false when it did.
func readFHIRBody(w http.ResponseWriter, r *http.Request) (body []byte, ok bool) {
	if msg := checkFHIRContentType(r.Header.Get("Content-Type")); msg != "" {
		writeError(w, r, http.StatusUnsupportedMediaType, msg)
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFHIRBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("The request body is larger than %d bytes.", maxFHIRBody))
		return nil, false
	case err != nil:
		writeError(w, r, http.StatusBadRequest, "The request body could not be read.")
		return nil, false
	}
	return body, true
}

// handlePatientCreate serves POST /Patient: validate, assign an id and version 1, persist, return.
func handlePatientCreate(log *slog.Logger, store patientStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := readFHIRBody(w, r)
		if !ok {
			return
		}
		p, issues, status := parsePatient(body, true)
		if status != 0 {
			writeOutcome(w, status, issues)
			return
		}
		id := newUUID()
		v, err := store.Create(r.Context(), id, func(version int, t time.Time) ([]byte, error) {
			return p.withMeta(id, strconv.Itoa(version), t), nil
		})
		if err != nil {
			log.Error("create patient", "err", err, "request_id", requestIDFrom(r.Context()))
			writeError(w, r, http.StatusInternalServerError, "The server could not store the resource.")
			return
		}
		w.Header().Set("Location", fmt.Sprintf("/Patient/%s/_history/%d", v.ID, v.Version))
		writeVersion(w, r, http.StatusCreated, v)
	})
}

// handlePatientRead serves GET /Patient/{id}.
func handlePatientRead(store patientStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r)
		if !ok {
			return
		}
		v, err := store.Read(r.Context(), id)
		switch {
		case errors.Is(err, errNotFound):
			writeNoPatient(w, id)
			return
		case err != nil:
			writeError(w, r, http.StatusInternalServerError, "The server could not read the resource.")
			return
		case v.Deleted:
			writeOutcome(w, http.StatusGone, []fhirIssue{{Severity: "error", Code: "deleted",
				Diagnostics: fmt.Sprintf("Patient %q was deleted (version %d); earlier versions remain readable in its history.", id, v.Version)}})
			return
		}
		writeVersion(w, r, http.StatusOK, v)
	})
}

// writeNoPatient is the 404 for an id that never existed.
func writeNoPatient(w http.ResponseWriter, id string) {
	writeOutcome(w, http.StatusNotFound, []fhirIssue{{Severity: "error", Code: "not-found",
		Diagnostics: fmt.Sprintf("There is no Patient with id %q.", id), Expression: []string{"Patient.id"}}})
}

// pathID returns the {id} path value, answering 400 itself when it is not a valid FHIR id.
func pathID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if id == "_search" && r.URL.Path == "/Patient/_search" {
		// The mux cannot have both GET /Patient/{id} and a catch-all /Patient/_search (neither is
		// more specific), so the 405 for POST-only /Patient/_search is answered here.
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, r, http.StatusMethodNotAllowed, fmt.Sprintf("This path does not support %s; it supports POST.", r.Method))
		return "", false
	}
	if !validFHIRID(id) {
		writeOutcome(w, http.StatusBadRequest, []fhirIssue{{Severity: "error", Code: "value",
			Diagnostics: "The id in the URL must be 1 to 64 characters from A-Z, a-z, 0-9, '-' and '.'.", Expression: []string{"Patient.id"}}})
		return "", false
	}
	return id, true
}

// writeVersion writes a stored version with its ETag and Last-Modified, honouring
// Prefer: return=minimal|representation|OperationOutcome (default representation).
func writeVersion(w http.ResponseWriter, r *http.Request, status int, v patientVersion) {
	h := w.Header()
	h.Set("ETag", fmt.Sprintf(`W/"%d"`, v.Version))
	h.Set("Last-Modified", v.LastUpdated.UTC().Format(http.TimeFormat))
	if status != http.StatusOK || r.Method != http.MethodGet {
		switch preferReturn(r.Header.Values("Prefer")) {
		case "minimal":
			w.WriteHeader(status)
			return
		case "OperationOutcome":
			writeOutcome(w, status, []fhirIssue{{Severity: "information", Code: "informational",
				Diagnostics: fmt.Sprintf("Patient/%s version %d stored.", v.ID, v.Version)}})
			return
		}
	}
	h.Set("Content-Type", fhirContentType)
	w.WriteHeader(status)
	w.Write(v.Body)
}

// preferReturn is the return preference of the Prefer headers (RFC 7240), "" if none.
func preferReturn(prefer []string) string { return preference(prefer, "return") }

// preference is the value of one preference in the Prefer headers (RFC 7240), "" if absent.
func preference(prefer []string, name string) string {
	for _, h := range prefer {
		for pref := range strings.SplitSeq(h, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(pref), "=")
			if strings.EqualFold(strings.TrimSpace(k), name) {
				return strings.Trim(strings.TrimSpace(v), `"`)
			}
		}
	}
	return ""
}

// capabilityStatement declares exactly the interactions this server supports (R4 capabilitystatement.html).
func capabilityStatement() []byte {
	b, err := json.Marshal(map[string]any{
		"resourceType": "CapabilityStatement",
		"status":       "active",
		"date":         "2026-11-26",
		"publisher":    "Clinical API maintainers",
		"kind":         "instance",
		"software":     map[string]any{"name": "clinicalapi", "version": "0.1.0"},
		"implementation": map[string]any{
			"description": "Clinical API: FHIR R4 Patient server (JSON only)",
		},
		"fhirVersion": "4.0.1",
		"format":      []string{"application/fhir+json", "json"},
		"rest": []any{map[string]any{
			"mode": "server",
			"resource": []any{map[string]any{
				"type":    "Patient",
				"profile": "http://hl7.org/fhir/StructureDefinition/Patient",
				"interaction": []any{
					map[string]any{"code": "create"}, map[string]any{"code": "read"}, map[string]any{"code": "vread"},
					map[string]any{"code": "update"}, map[string]any{"code": "delete"}, map[string]any{"code": "history-instance"},
					map[string]any{"code": "search-type"},
				},
				"searchParam": []any{
					map[string]any{"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"},
					map[string]any{"name": "identifier", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Patient-identifier",
						"documentation": "system|value, value, |value or system|"},
					map[string]any{"name": "family", "type": "string", "definition": "http://hl7.org/fhir/SearchParameter/individual-family",
						"documentation": "Case- and accent-insensitive prefix; :exact and :contains supported"},
					map[string]any{"name": "given", "type": "string", "definition": "http://hl7.org/fhir/SearchParameter/individual-given",
						"documentation": "Case- and accent-insensitive prefix; :exact and :contains supported"},
					map[string]any{"name": "name", "type": "string", "definition": "http://hl7.org/fhir/SearchParameter/Patient-name",
						"documentation": "Family, given, prefix, suffix or text; case- and accent-insensitive prefix; :exact and :contains supported"},
					map[string]any{"name": "birthdate", "type": "date", "definition": "http://hl7.org/fhir/SearchParameter/individual-birthdate",
						"documentation": "Prefixes eq ne gt lt ge le sa eb ap; year, month or day precision"},
					map[string]any{"name": "gender", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/individual-gender"},
				},
				"versioning":        "versioned",
				"readHistory":       true,
				"updateCreate":      true,
				"conditionalCreate": false,
				"conditionalUpdate": false,
				"conditionalDelete": "not-supported",
			}},
		}},
	})
	if err != nil {
		panic(err) // a literal that always encodes
	}
	return b
}

// handleMetadata serves the CapabilityStatement: what this server really supports, and nothing else.
func handleMetadata(capability []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", fhirContentType)
		w.Write(capability)
	})
}

// handlePatientUpdate serves PUT /Patient/{id}: a new version, or version 1 of a client-chosen id
// (update-as-create, declared in the CapabilityStatement). If-Match makes it conditional.
func handlePatientUpdate(log *slog.Logger, store patientStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r)
		if !ok {
			return
		}
		ifMatch, ok := parseIfMatch(r.Header.Values("If-Match"))
		if !ok {
			writeOutcome(w, http.StatusBadRequest, []fhirIssue{{Severity: "error", Code: "value",
				Diagnostics: `If-Match must be one version ETag such as W/"3".`}})
			return
		}
		body, ok := readFHIRBody(w, r)
		if !ok {
			return
		}
		p, issues, status := parsePatient(body, false)
		if status != 0 {
			writeOutcome(w, status, issues)
			return
		}
		if p.id() != id {
			msg := fmt.Sprintf("The resource's id must equal the id in the URL (%q).", id)
			if p.id() == "" {
				msg = fmt.Sprintf("The resource has no id; an update must carry the id in the URL (%q).", id)
			}
			writeOutcome(w, http.StatusBadRequest, []fhirIssue{{Severity: "error", Code: "invalid", Diagnostics: msg, Expression: []string{"Patient.id"}}})
			return
		}
		v, created, err := store.Update(r.Context(), id, ifMatch, func(version int, t time.Time) ([]byte, error) {
			return p.withMeta(id, strconv.Itoa(version), t), nil
		})
		switch {
		case errors.Is(err, errVersionConflict):
			writeOutcome(w, http.StatusPreconditionFailed, []fhirIssue{{Severity: "error", Code: "conflict",
				Diagnostics: fmt.Sprintf(`If-Match W/"%d" is not the current version of Patient %q; read it again and retry.`, ifMatch, id)}})
			return
		case err != nil:
			log.Error("update patient", "err", err, "request_id", requestIDFrom(r.Context()))
			writeError(w, r, http.StatusInternalServerError, "The server could not store the resource.")
			return
		}
		status = http.StatusOK
		if created {
			status = http.StatusCreated
			w.Header().Set("Location", fmt.Sprintf("/Patient/%s/_history/%d", v.ID, v.Version))
		}
		writeVersion(w, r, status, v)
	})
}

// parseIfMatch reads an If-Match version ETag (W/"n", or "n"); 0 when absent.
func parseIfMatch(values []string) (int, bool) {
	if len(values) == 0 {
		return 0, true
	}
	if len(values) > 1 {
		return 0, false
	}
	tag := strings.TrimPrefix(strings.TrimSpace(values[0]), "W/")
	if len(tag) < 3 || tag[0] != '"' || tag[len(tag)-1] != '"' {
		return 0, false
	}
	n, err := strconv.Atoi(tag[1 : len(tag)-1])
	if err != nil || n < 1 || tag[1] == '0' || tag[1] == '+' {
		return 0, false
	}
	return n, true
}

// handlePatientDelete serves DELETE /Patient/{id}: it records a deleted version (history is kept) and
// answers 204, also for an unknown or already deleted id, as FHIR allows.
func handlePatientDelete(log *slog.Logger, store patientStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r)
		if !ok {
			return
		}
		v, existed, err := store.Delete(r.Context(), id)
		if err != nil {
			log.Error("delete patient", "err", err, "request_id", requestIDFrom(r.Context()))
			writeError(w, r, http.StatusInternalServerError, "The server could not delete the resource.")
			return
		}
		if existed {
			w.Header().Set("ETag", fmt.Sprintf(`W/"%d"`, v.Version))
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// handlePatientVRead serves GET /Patient/{id}/_history/{vid}; a deleted version is 410.
func handlePatientVRead(store patientStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r)
		if !ok {
			return
		}
		vid, err := strconv.Atoi(r.PathValue("vid"))
		if err != nil || vid < 1 || strconv.Itoa(vid) != r.PathValue("vid") {
			writeOutcome(w, http.StatusBadRequest, []fhirIssue{{Severity: "error", Code: "value",
				Diagnostics: "The version in the URL must be a positive whole number such as 1.", Expression: []string{"Patient.meta.versionId"}}})
			return
		}
		v, err := store.VRead(r.Context(), id, vid)
		switch {
		case errors.Is(err, errNotFound):
			writeOutcome(w, http.StatusNotFound, []fhirIssue{{Severity: "error", Code: "not-found",
				Diagnostics: fmt.Sprintf("Patient %q has no version %d.", id, vid), Expression: []string{"Patient.meta.versionId"}}})
		case err != nil:
			writeError(w, r, http.StatusInternalServerError, "The server could not read the resource.")
		case v.Deleted:
			w.Header().Set("ETag", fmt.Sprintf(`W/"%d"`, v.Version))
			writeOutcome(w, http.StatusGone, []fhirIssue{{Severity: "error", Code: "deleted",
				Diagnostics: fmt.Sprintf("Version %d of Patient %q records its deletion.", vid, id)}})
		default:
			writeVersion(w, r, http.StatusOK, v)
		}
	})
}

// handlePatientSearch serves GET /Patient and POST /Patient/_search (form-encoded parameters,
// merged with any in the URL): a searchset Bundle of the current matches, paged by _count and
// _offset, with absolute self, next and previous links.
func handlePatientSearch(store patientStore, baseURL string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		params := r.URL.Query()
		if r.Method == http.MethodPost {
			if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
				writeError(w, r, http.StatusUnsupportedMediaType, "POST /Patient/_search takes its parameters as application/x-www-form-urlencoded.")
				return
			}
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFHIRBody))
			var tooBig *http.MaxBytesError
			switch {
			case errors.As(err, &tooBig):
				writeError(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("The request body is larger than %d bytes.", maxFHIRBody))
				return
			case err != nil:
				writeError(w, r, http.StatusBadRequest, "The request body could not be read.")
				return
			}
			form, err := url.ParseQuery(string(body))
			if err != nil {
				writeOutcome(w, http.StatusBadRequest, []fhirIssue{{Severity: "error", Code: "invalid", Diagnostics: "The form body is not valid application/x-www-form-urlencoded."}})
				return
			}
			for k, vs := range form {
				params[k] = append(params[k], vs...)
			}
		}
		q, self, issues := parsePatientSearch(params, preference(r.Header.Values("Prefer"), "handling") == "strict")
		if len(issues) > 0 {
			writeOutcome(w, http.StatusBadRequest, issues)
			return
		}
		total, page, err := store.Search(r.Context(), q)
		if err != nil {
			writeError(w, r, http.StatusInternalServerError, "The server could not run the search.")
			return
		}
		base := requestBase(r, baseURL)
		link := func(rel string, offset int) bundleLink {
			v := url.Values{}
			for k, vs := range self {
				v[k] = vs
			}
			v.Del("_offset")
			if offset > 0 {
				v.Set("_offset", strconv.Itoa(offset))
			}
			return bundleLink{rel, base + "/Patient?" + v.Encode()}
		}
		b := bundle{ResourceType: "Bundle", Type: "searchset", Total: total, Link: []bundleLink{link("self", q.Offset)}}
		if q.Count > 0 && q.Offset+q.Count < total {
			b.Link = append(b.Link, link("next", q.Offset+q.Count))
		}
		if q.Offset > 0 {
			b.Link = append(b.Link, link("previous", max(0, q.Offset-max(q.Count, 1))))
		}
		for _, v := range page {
			b.Entry = append(b.Entry, bundleEntry{FullURL: base + "/Patient/" + v.ID, Resource: v.Body, Search: &bundleSearch{"match"}})
		}
		writeJSON(w, http.StatusOK, fhirContentType, b)
	})
}

// bundle is a FHIR R4 Bundle (history and searchset).
type bundle struct {
	ResourceType string        `json:"resourceType"`
	Type         string        `json:"type"`
	Total        int           `json:"total"`
	Link         []bundleLink  `json:"link"`
	Entry        []bundleEntry `json:"entry,omitempty"`
}

type bundleLink struct {
	Relation string `json:"relation"`
	URL      string `json:"url"`
}

type bundleEntry struct {
	FullURL  string          `json:"fullUrl"`
	Resource json.RawMessage `json:"resource,omitempty"`
	Search   *bundleSearch   `json:"search,omitempty"`
	Request  *bundleRequest  `json:"request,omitempty"`
	Response *bundleResponse `json:"response,omitempty"`
}

type bundleSearch struct {
	Mode string `json:"mode"`
}

type bundleRequest struct {
	Method string `json:"method"`
	URL    string `json:"url"`
}

type bundleResponse struct {
	Status       string `json:"status"`
	Etag         string `json:"etag"`
	LastModified string `json:"lastModified"`
}

// handlePatientHistory serves GET /Patient/{id}/_history: every version, newest first.
func handlePatientHistory(store patientStore, baseURL string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r)
		if !ok {
			return
		}
		versions, err := store.History(r.Context(), id)
		switch {
		case errors.Is(err, errNotFound):
			writeNoPatient(w, id)
			return
		case err != nil:
			writeError(w, r, http.StatusInternalServerError, "The server could not read the history.")
			return
		}
		base := requestBase(r, baseURL)
		b := bundle{ResourceType: "Bundle", Type: "history", Total: len(versions),
			Link: []bundleLink{{"self", base + "/Patient/" + id + "/_history"}}}
		for _, v := range versions {
			e := bundleEntry{FullURL: base + "/Patient/" + id, Resource: v.Body,
				Response: &bundleResponse{Status: "200 OK", Etag: fmt.Sprintf(`W/"%d"`, v.Version),
					LastModified: v.LastUpdated.UTC().Format("2006-01-02T15:04:05.000Z07:00")}}
			// The journal does not record the method; this is the one each version implies.
			switch {
			case v.Deleted:
				e.Request, e.Response.Status = &bundleRequest{"DELETE", "Patient/" + id}, "204 No Content"
			case v.Version == 1:
				e.Request, e.Response.Status = &bundleRequest{"POST", "Patient"}, "201 Created"
			default:
				e.Request = &bundleRequest{"PUT", "Patient/" + id}
			}
			b.Entry = append(b.Entry, e)
		}
		writeJSON(w, http.StatusOK, fhirContentType, b)
	})
}

// requestBase is the absolute FHIR base for fullUrl and links: BASE_URL when set, else the
// request's own scheme and host (behind a proxy, set BASE_URL).
func requestBase(r *http.Request, baseURL string) string {
	if baseURL != "" {
		return baseURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
