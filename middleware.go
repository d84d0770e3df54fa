package main

// Middleware: what every request passes through (request IDs, panic recovery, the request log line)
// and what guards routes (bearer tokens and scopes; FHIR content negotiation).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ctxKey is the private type of this package's context keys.
type ctxKey int

// requestInfoKey holds the request's *statusWriter, which carries its ID and token subject hash.
const requestInfoKey ctxKey = iota

// canReadPatients reports whether the request's token may read Patients.
func canReadPatients(ctx context.Context) bool {
	ri, ok := ctx.Value(requestInfoKey).(*statusWriter)
	return ok && ri.canReadPatients
}

// requestIDFrom returns the request ID the middleware assigned, "" outside a request.
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
		if reqErr != "" || corrErr != "" {
			header := "X-Request-ID"
			if reqErr == "" {
				header = "X-Correlation-ID"
			}
			writeError(sw, r, http.StatusBadRequest, strings.TrimSpace(reqErr+" "+corrErr), "header", header)
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
	status          int
	id              string
	subHash         string
	canReadPatients bool // the token may read Patients, so an answer may name another Patient's id
}

// WriteHeader records the first status written.
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200.
func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// access is what a route needs from the caller's token.
type access int

const (
	anyToken access = iota // a valid token, whatever its scopes (/egfr under EGFR_AUTH=required)
	readPatients
	writePatients
)

// requireToken lets a request through only with a valid bearer token carrying the access needed
// (authorize).
func requireToken(v *verifier, need access, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if authorize(w, r, v, need) {
			next.ServeHTTP(w, r)
		}
	})
}

// authorize reports whether the request carries a valid bearer token with the access needed, and
// answers it itself when not. With auth not configured it refuses everything: protected routes never
// run open by accident. Failures are 401 (no or bad token, with WWW-Authenticate per RFC 6750) or 403
// (valid token, missing scope), as an OperationOutcome on FHIR routes carrying the NHS API error code.
func authorize(w http.ResponseWriter, r *http.Request, v *verifier, need access) bool {
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
			ri.subHash, ri.canReadPatients = subjectHash(claims.Subject), hasScope(claims, false)
		}
		if need == anyToken || hasScope(claims, need == writePatients) {
			return true
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
		writeError(w, r, status, aerr.Description, "header", "Authorization")
		return false
	}
	code := map[string]string{authCodeMissing: "login", authCodeInvalid: "unknown", authCodeExpired: "expired", authCodeDenied: "forbidden"}[aerr.Code]
	writeOutcome(w, status, fhirIssue{Severity: "error", Code: code, Diagnostics: aerr.Description,
		Details: &fhirCodeableConcept{Coding: []fhirCoding{{System: nhsdErrorSystem, Code: aerr.Code}}}})
	return false
}

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
	return acceptQ(accept, func(mt string) bool {
		switch mt {
		case "application/fhir+json", "application/json", "application/json+fhir", "application/*", "*/*":
			return true
		}
		return false
	}) > 0
}

// wantsFHIR reports whether Accept headers ask the calculators for a FHIR Observation: they name
// application/fhir+json with q > 0, and application/json with no higher q. Wildcards mean the default,
// plain JSON. Headers that do not mention fhir are answered without parsing (the hot path).
func wantsFHIR(accept []string) bool {
	if !slices.ContainsFunc(accept, func(h string) bool { return strings.Contains(h, "fhir") }) {
		return false
	}
	fhir := acceptQ(accept, func(mt string) bool { return mt == "application/fhir+json" })
	return fhir > 0 && fhir >= acceptQ(accept, func(mt string) bool { return mt == "application/json" })
}

// acceptQ returns the highest q (default 1) with which Accept headers list a media range for which
// match is true, or -1 when none does; a malformed range or q is skipped.
func acceptQ(accept []string, match func(mediaRange string) bool) float64 {
	best := -1.0
	for _, h := range accept {
		for rng := range strings.SplitSeq(h, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(rng))
			if err != nil || !match(mt) {
				continue
			}
			q := 1.0
			if s, ok := params["q"]; ok {
				if q, err = strconv.ParseFloat(s, 64); err != nil {
					continue
				}
			}
			best = max(best, q)
		}
	}
	return best
}
