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
	"path"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

// route is one entry of the API surface: addRoutes registers it, and the contract test compares the
// list with openapi.json.
type route struct {
	method, pattern string
	h               http.Handler
}

// routes is the whole API surface in one table.
func routes(log *slog.Logger, ready func() bool, spec []byte, docs fs.FS) []route {
	return []route{
		{"POST", "/egfr", handleEGFR()},
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
		slices.Sort(methods)
		mux.Handle(p, handleMethodNotAllowed(strings.Join(methods, ", ")))
	}
	mux.Handle("/", handleNotFound())
}

// newServer builds the service's handler: the routes behind the request middleware.
func newServer(log *slog.Logger, ready func() bool, spec []byte, docs fs.FS) http.Handler {
	mux := http.NewServeMux()
	addRoutes(mux, routes(log, ready, spec, docs))
	return withRequestContext(log, mux)
}

// handleEGFR serves POST /egfr: decode, validate, compute, encode.
func handleEGFR() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if msg := checkJSONContentType(r.Header.Get("Content-Type")); msg != "" {
			writeProblem(w, r, http.StatusUnsupportedMediaType, msg, nil)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEGFRBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeProblem(w, r, http.StatusRequestEntityTooLarge,
					fmt.Sprintf("The request body is larger than %d bytes.", maxEGFRBody), nil)
				return
			}
			writeProblem(w, r, http.StatusBadRequest, "The request body could not be read.", nil)
			return
		}
		req, problems := parseEGFRRequest(body)
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
		writeJSON(w, http.StatusOK, "application/json", req.compute())
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
func handleDocs(docs fs.FS) http.Handler {
	files := map[string]http.Handler{}
	fs.WalkDir(docs, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(docs, p)
		if err != nil {
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
		files[p] = handleStatic(b, ct, cache)
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
		h.ServeHTTP(w, r)
	})
}

// handleNotFound is the JSON 404 for every path no route matches.
func handleNotFound() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, r, http.StatusNotFound, "There is no resource at this path.", nil)
	})
}

// handleMethodNotAllowed is the JSON 405 for a known path with another method.
func handleMethodNotAllowed(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeProblem(w, r, http.StatusMethodNotAllowed,
			fmt.Sprintf("This path does not support %s; it supports %s.", r.Method, allow), nil)
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

const requestIDKey ctxKey = iota

func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// withRequestContext is the middleware every request passes through, in this order: request and
// correlation IDs (NHS API convention: accepted when well-formed, echoed, a UUID v4 made when absent),
// panic recovery (a generic 500, the server keeps serving), and one log line per request with the
// route pattern, never the path, query, body or headers, which may hold patient data or tokens.
func withRequestContext(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		reqID, reqErr := headerID(r.Header, "X-Request-ID")
		corrID, corrErr := headerID(r.Header, "X-Correlation-ID")
		if reqID == "" { // absent, empty or malformed: a malformed value is never echoed
			reqID = newUUID()
		}
		w.Header().Set("X-Request-ID", reqID)
		if corrID != "" && corrErr == "" {
			w.Header().Set("X-Correlation-ID", corrID)
		}
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey, reqID))
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("panic", "route", r.Pattern, "request_id", reqID, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if sw.status == 0 {
					writeProblem(sw, r, http.StatusInternalServerError, "The server could not complete the request.", nil)
				}
			}
			log.Info("request", "method", r.Method, "route", r.Pattern, "status", sw.status,
				"duration_ms", float64(time.Since(start).Microseconds())/1000, "request_id", reqID, "correlation_id", corrID)
		}()
		if msg := reqErr + corrErr; msg != "" {
			writeProblem(sw, r, http.StatusBadRequest, msg, nil)
			return
		}
		next.ServeHTTP(sw, r)
	})
}

// headerID reads an ID header: "" when absent or empty, else the value if it is 1–128 characters from
// A-Z a-z 0-9 . _ : - (anything else could forge log lines or smuggle markup), else a problem message.
func headerID(h http.Header, name string) (id, problem string) {
	vs := h.Values(name)
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

// statusWriter records the status a handler writes, for the log line and panic recovery.
type statusWriter struct {
	http.ResponseWriter
	status int
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
