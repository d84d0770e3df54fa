package main

// Middleware: what every request passes through (request IDs, panic recovery, the request log line)
// and what guards routes (bearer tokens and scopes; FHIR content negotiation).

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
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

// traceIDFrom returns the request's W3C trace ID (32 hex digits), "" outside a request; every log
// line a request causes carries it as trace_id.
func traceIDFrom(ctx context.Context) string {
	if ri, ok := ctx.Value(requestInfoKey).(*statusWriter); ok {
		return ri.traceID()
	}
	return ""
}

// withRequestContext is the middleware every request passes through, in this order: request and
// correlation IDs (NHS API convention: accepted when well-formed, echoed, a UUID v4 made when absent),
// W3C trace context (startTrace), the in-flight count behind MAX_IN_FLIGHT (withRoute refuses over
// it), panic recovery (a generic 500, the server keeps serving), the route's metrics, and one log
// line per request with the route pattern, never the path, query, body or headers, which may hold
// patient data or tokens.
func withRequestContext(log *slog.Logger, m *metrics, next http.Handler) http.Handler {
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
		sw := &statusWriter{ResponseWriter: w, id: reqID, traceparent: startTrace(w.Header(), r.Header)}
		sw.overloaded = m.inFlight.Add(1) > m.limit && m.limit > 0
		r = r.WithContext(context.WithValue(r.Context(), requestInfoKey, sw))
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					m.inFlight.Add(-1)
					panic(v)
				}
				log.Error("panic", "route", r.Pattern, "request_id", reqID, "trace_id", sw.traceID(), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if sw.status == 0 {
					writeError(sw, r, http.StatusInternalServerError, "The server could not complete the request.")
				}
			}
			end := time.Now()
			d := end.Sub(start)
			m.inFlight.Add(-1)
			rm := sw.route
			if rm == nil {
				rm = m.none
			}
			rm.observe(r.Method, sw.status, d)
			if sw.shed {
				m.refused.Add(1)
			}
			logRequest(log, r, sw, corrID, end, d)
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

// logRequest writes the one log line of a request that ended at end, d after it started. It gives the
// record to the handler itself: log.LogAttrs would also walk the stack (runtime.Callers) for a source
// location this line never shows, a quarter of what the line costs.
func logRequest(log *slog.Logger, r *http.Request, sw *statusWriter, corrID string, end time.Time, d time.Duration) {
	ctx, h := r.Context(), log.Handler()
	if !h.Enabled(ctx, slog.LevelInfo) {
		return
	}
	// Five attributes fit in a slog.Record without allocating; the sixth costs one small allocation.
	attrs := append(make([]slog.Attr, 0, 8), slog.String("method", r.Method), slog.String("route", r.Pattern),
		slog.Int("status", sw.status), slog.Int64("duration_us", d.Microseconds()),
		slog.String("request_id", sw.id), slog.String("trace_id", sw.traceID()))
	if corrID != "" {
		attrs = append(attrs, slog.String("correlation_id", corrID))
	}
	if sw.subHash != "" { // the token's subject, hashed: traceable, not identifying
		attrs = append(attrs, slog.String("sub_hash", sw.subHash))
	}
	rec := slog.NewRecord(end, slog.LevelInfo, "request", 0) // pc 0: no source
	rec.AddAttrs(attrs...)
	h.Handle(ctx, rec)
}

// withRoute is the part of the request middleware that needs to know the route, so addRoutes puts it
// on every route: it hands withRequestContext the route's metrics handle, and applies the in-flight
// cap. Over MAX_IN_FLIGHT a request is refused at once, before its body is read, with a 503 and
// Retry-After in the route family's error format, instead of queueing without bound; a route with
// shed false (the probes: a refused liveness probe would get a busy pod restarted) is never refused.
func withRoute(rm *routeMetrics, shed bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sw, ok := w.(*statusWriter); ok {
			sw.route = rm
			if shed && sw.overloaded {
				sw.shed = true
				w.Header().Set("Retry-After", "1")
				writeError(w, r, http.StatusServiceUnavailable, "The service is at capacity (too many requests in flight); retry shortly.")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// startTrace implements W3C Trace Context Level 1 for one request: a valid traceparent in req is
// continued (its trace ID and sampled flag kept), anything else (absent, malformed, sent twice)
// starts a new trace, never an error. Either way the request gets a new span ID of its own, and res
// gets the traceparent naming it (the header a Level 2 server would call traceresponse), plus the
// request's tracestate as received when its traceparent was valid (section 3.3: a tracestate is
// meaningless without one). It returns the response traceparent.
func startTrace(res, req http.Header) string {
	traceID, sampled, ok := parseTraceparent(req["Traceparent"])
	var b [55]byte
	copy(b[:], "00-")
	if ok {
		copy(b[3:35], traceID)
	} else {
		// A new trace: random, never all zero (section 3.2.2.3), unsampled, as the spec's default for
		// a trace this component starts (3.2.2.5.1). math/rand/v2's generator is seeded by the
		// runtime and costs no system call; trace IDs are identifiers, not secrets.
		var id [16]byte
		binary.BigEndian.PutUint64(id[:8], mrand.Uint64())
		binary.BigEndian.PutUint64(id[8:], mrand.Uint64()|1)
		hex.Encode(b[3:35], id[:])
	}
	b[35] = '-'
	var span [8]byte
	binary.BigEndian.PutUint64(span[:], mrand.Uint64()|1<<63) // never all zero (3.2.2.4)
	hex.Encode(b[36:52], span[:])
	b[52], b[53], b[54] = '-', '0', '0'
	if sampled {
		b[54] = '1' // the only flag defined; the others must be sent as zero (3.2.2.5)
	}
	tp := string(b[:])
	res["Traceparent"] = []string{tp}
	if ts := req["Tracestate"]; ok && len(ts) > 0 {
		if v := strings.Join(ts, ","); strings.Trim(v, " \t,") != "" { // multiple fields combine as one list (RFC 9110 5.3)
			res["Tracestate"] = []string{v}
		}
	}
	return tp
}

// parseTraceparent validates a request's traceparent header fields (Trace Context Level 1, section
// 3.2): exactly one field; version two lowercase hex digits and not ff; for version 00 exactly 55
// characters, for a later version at least 55 with a '-' after them (its further fields ignored);
// trace-id 32 and parent-id 16 lowercase hex digits, neither all zero; trace-flags two lowercase hex
// digits, of which only the sampled bit is kept.
func parseTraceparent(fields []string) (traceID string, sampled, ok bool) {
	if len(fields) != 1 || len(fields[0]) < 55 {
		return "", false, false
	}
	v := fields[0]
	if !lowerHex(v[0:2]) || v[0:2] == "ff" || v[2] != '-' || v[35] != '-' || v[52] != '-' ||
		v[0:2] == "00" && len(v) != 55 || len(v) > 55 && v[55] != '-' {
		return "", false, false
	}
	traceID, parentID, flags := v[3:35], v[36:52], v[53:55]
	if !lowerHex(traceID) || !lowerHex(parentID) || !lowerHex(flags) ||
		strings.Trim(traceID, "0") == "" || strings.Trim(parentID, "0") == "" {
		return "", false, false
	}
	low := flags[1] - '0' // the sampled bit is the low bit of the last digit's value
	if flags[1] >= 'a' {
		low = flags[1] - 'a' + 10
	}
	return traceID, low&1 == 1, true
}

// lowerHex reports whether s is all lowercase hex digits (W3C's HEXDIGLC).
func lowerHex(s string) bool {
	return strings.Trim(s, "0123456789abcdef") == "" // Trim leaves "" only when every byte is in the set
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
	traceparent     string // the response's: version, trace ID, this request's span ID, flags
	subHash         string
	canReadPatients bool          // the token may read Patients, so an answer may name another Patient's id
	route           *routeMetrics // set by withRoute; nil when no route took the request
	overloaded      bool          // the request arrived with MAX_IN_FLIGHT requests already in flight
	shed            bool          // withRoute refused it for that
}

// traceID is the request's trace ID, from its traceparent.
func (w *statusWriter) traceID() string { return w.traceparent[3:35] }

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
