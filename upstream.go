package main

// The Patient store as an upstream FHIR R4 server (FHIR_UPSTREAM_URL): HAPI FHIR, Azure Health Data
// Services, Google Cloud Healthcare, AWS HealthLake, Medplum. Everything in front of the store stays this
// service's own (validation, NHS-number rules, auth, errors); each store call becomes FHIR REST requests
// over one keep-alive pool, and the upstream, an existing distributed engine, is what replicas share.
//
// What the upstream decides, and this file does not hide: its version ids (opaque FHIR ids), its search
// semantics (we send our canonical parameters; it matches them), what a delete leaves behind, and how
// atomic its conditional interactions are (NHS-number uniqueness rests on its conditional create).
// What it never decides: every Patient it answers goes through our strict reader and validator before
// it is served, and an answer we cannot use is a 502, never passed on. Its URLs never reach our clients.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Upstream limits. A read is tried up to upstreamReadAttempts times (a write once: it may have been
// applied); answers are capped at maxUpstreamBody (a page of 100 Patients of 300 KiB); instance history
// follows at most upstreamMaxPages next links.
const (
	upstreamDefaultTimeout = 10 * time.Second
	upstreamConnectTimeout = 3 * time.Second
	upstreamReadAttempts   = 3
	upstreamProbeEvery     = 2 * time.Second
	maxUpstreamBody        = 32 << 20
	upstreamMaxPages       = 50
	upstreamRetryAfter     = 5 // seconds, when the upstream gives none
)

// upstreamConfig is the FHIR_UPSTREAM_* configuration; base "" means the embedded journal.
type upstreamConfig struct {
	base      string        // absolute R4 base URL, ending in "/"
	timeout   time.Duration // bounds each store call, its retries and follow-up requests included
	tokenFile string        // a bearer token, re-read every minute
	oauth     *oauthConfig  // OAuth2 client credentials (RFC 6749 section 4.4)
}

// credentialsKind names how the service authenticates to the upstream, for the start-up log.
func (c upstreamConfig) credentialsKind() string {
	switch {
	case c.tokenFile != "":
		return "bearer token file"
	case c.oauth != nil:
		return "OAuth2 client credentials"
	}
	return "none"
}

// oauthConfig is where and as whom to get upstream tokens.
type oauthConfig struct {
	tokenURL, clientID, secretFile, scope string
}

// parseUpstreamConfig reads FHIR_UPSTREAM_URL, FHIR_UPSTREAM_TIMEOUT and the credentials; an error names
// the variable. Secret and token files must be readable now, so a bad path stops the start.
func parseUpstreamConfig(getenv func(string) string) (upstreamConfig, error) {
	var cfg upstreamConfig
	names := []string{"FHIR_UPSTREAM_TIMEOUT", "FHIR_UPSTREAM_TOKEN_FILE", "FHIR_UPSTREAM_TOKEN_URL",
		"FHIR_UPSTREAM_CLIENT_ID", "FHIR_UPSTREAM_CLIENT_SECRET_FILE", "FHIR_UPSTREAM_SCOPE"}
	raw := strings.TrimSpace(getenv("FHIR_UPSTREAM_URL"))
	if raw == "" {
		for _, name := range names {
			if getenv(name) != "" {
				return cfg, fmt.Errorf("%s is set but FHIR_UPSTREAM_URL is not", name)
			}
		}
		return cfg, nil
	}
	if err := checkIssuerURL(raw); err != nil {
		return cfg, fmt.Errorf("FHIR_UPSTREAM_URL: %w", err)
	}
	cfg.base = strings.TrimRight(raw, "/") + "/"
	cfg.timeout = upstreamDefaultTimeout
	if t := getenv("FHIR_UPSTREAM_TIMEOUT"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d < 100*time.Millisecond || d > 2*time.Minute {
			return cfg, fmt.Errorf("FHIR_UPSTREAM_TIMEOUT: %q is not a duration from 100ms to 2m, such as 10s", t)
		}
		cfg.timeout = d
	}
	return cfg, parseUpstreamCredentials(getenv, &cfg)
}

// upstreamError is a failure to get a usable answer from the upstream: errors.go answers status (502
// an answer we cannot use, 503 upstream unreachable or overloaded, 504 no answer in time, 501 an
// interaction it does not offer), with Retry-After when retryAfter > 0.
type upstreamError struct {
	status       int
	retryAfter   int
	maybeApplied bool   // a write may have been applied upstream before it failed
	transient    bool   // no answer for want of a connection: a read may try again
	reason       string // for the log: never a body, a token, a query string or patient data
}

// Error says what went wrong, for the log.
func (e *upstreamError) Error() string { return "upstream FHIR server: " + e.reason }

// badAnswer is the 502 of an answer we cannot use.
func badAnswer(format string, args ...any) *upstreamError {
	return &upstreamError{status: http.StatusBadGateway, reason: fmt.Sprintf(format, args...)}
}

// maybeApplied marks err, if an upstream failure other than "unreachable", as one a write may have
// survived: its request reached the upstream.
func maybeApplied(err error) error {
	var ue *upstreamError
	if errors.As(err, &ue) && ue.status != http.StatusServiceUnavailable {
		ue.maybeApplied = true
	}
	return err
}

// upstreamResponse is one upstream answer with its body read.
type upstreamResponse struct {
	status int
	header http.Header
	body   []byte
}

// upstreamStore is the patientStore backed by an upstream FHIR R4 server.
type upstreamStore struct {
	base    *url.URL // ends in "/"
	client  *http.Client
	creds   upstreamCredentials // nil: none
	timeout time.Duration
	log     *slog.Logger
	ready   atomic.Bool
	stop    context.CancelFunc
	done    chan struct{}
}

// upstreamStore must satisfy the interface the handlers are written against.
var _ patientStore = (*upstreamStore)(nil)

// openUpstreamStore makes the store and starts checking, every probeEvery (upstreamProbeEvery if 0),
// whether the upstream answers; Ready is false until it first does. now (time.Now if nil) is the
// clock token lifetimes are measured by.
func openUpstreamStore(cfg upstreamConfig, log *slog.Logger, now func() time.Time, probeEvery time.Duration) (*upstreamStore, error) {
	base, err := url.Parse(cfg.base)
	if err != nil {
		return nil, fmt.Errorf("upstream base: %w", err)
	}
	client := newUpstreamClient(cfg.timeout)
	if now == nil {
		now = time.Now
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &upstreamStore{base: base, client: client, timeout: cfg.timeout, log: log, stop: stop, done: make(chan struct{})}
	switch {
	case cfg.tokenFile != "":
		s.creds = &tokenFile{path: cfg.tokenFile, now: now}
	case cfg.oauth != nil:
		s.creds = &clientCredentials{cfg: *cfg.oauth, client: client, now: now}
	}
	go s.watch(ctx, cmp.Or(probeEvery, upstreamProbeEvery))
	return s, nil
}

// newUpstreamClient is the keep-alive pool to the upstream: bounded connect, TLS and response-header
// waits, many idle connections per host (every request goes to one), and no redirects (a FHIR server
// has no reason to send one, and following it could carry our credentials elsewhere).
func newUpstreamClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: upstreamConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   upstreamConnectTimeout,
			ResponseHeaderTimeout: timeout,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   128,
			IdleConnTimeout:       60 * time.Second,
			ForceAttemptHTTP2:     true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// bound gives one store call its deadline: the upstream timeout, over every request it makes.
func (s *upstreamStore) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// send makes one upstream request to ref (relative to the base) and reads the answer. A GET is tried
// again, after a short pause, when the upstream could not be reached or answered 502, 503 or 504, or
// refused a token it has since been given a new one for; nothing else is ever repeated.
func (s *upstreamStore) send(ctx context.Context, method, ref string, header http.Header, body []byte) (*upstreamResponse, error) {
	attempts := 1
	if method == http.MethodGet {
		attempts = upstreamReadAttempts
	}
	for attempt := 1; ; attempt++ {
		res, err := s.attempt(ctx, method, ref, header, body)
		var ue *upstreamError
		retry := errors.As(err, &ue) && ue.transient ||
			res != nil && (res.status == http.StatusUnauthorized && s.creds != nil ||
				res.status == http.StatusBadGateway || res.status == http.StatusServiceUnavailable || res.status == http.StatusGatewayTimeout)
		if attempt == attempts || !retry {
			return res, err
		}
		select {
		case <-time.After(time.Duration(attempt*attempt) * 50 * time.Millisecond):
		case <-ctx.Done():
			return res, err
		}
	}
}

// attempt is one try of send.
func (s *upstreamStore) attempt(ctx context.Context, method, ref string, header http.Header, body []byte) (*upstreamResponse, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.base.String()+ref, rd)
	if err != nil {
		return nil, badAnswer("cannot make a request for %s %s", method, pathOnly(ref)) // err would quote the URL
	}
	maps.Copy(req.Header, header)
	req.Header.Set("Accept", "application/fhir+json")
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json; charset=utf-8")
	}
	if s.creds != nil {
		auth, err := s.creds.authorization(ctx)
		if err != nil {
			return nil, transportError(ctx, method, err)
		}
		req.Header.Set("Authorization", auth)
	}
	res, err := s.client.Do(req)
	if err != nil {
		return nil, transportError(ctx, method, err)
	}
	defer res.Body.Close()
	if res.ContentLength > maxUpstreamBody {
		return nil, badAnswer("%s %s: the answer is over %d bytes", method, pathOnly(ref), maxUpstreamBody)
	}
	data, err := io.ReadAll(io.LimitReader(res.Body, maxUpstreamBody+1))
	switch {
	case err != nil:
		return nil, transportError(ctx, method, err)
	case len(data) > maxUpstreamBody:
		return nil, badAnswer("%s %s: the answer is over %d bytes", method, pathOnly(ref), maxUpstreamBody)
	case res.StatusCode == http.StatusUnauthorized && s.creds != nil:
		s.creds.refused()
	}
	return &upstreamResponse{status: res.StatusCode, header: res.Header, body: data}, nil
}

// pathOnly is ref without its query, which may hold patient data and is never logged.
func pathOnly(ref string) string {
	p, _, _ := strings.Cut(ref, "?")
	return p
}

// transportError classifies a request that got no answer: the caller gone (its own error, returned
// as is), no answer in time (504), no connection (503: nothing was sent), or a connection that failed
// on the way (502). The reason leaves out the URL, which may hold patient data.
func transportError(ctx context.Context, method string, err error) error {
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return ctx.Err()
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	var nerr net.Error
	var op *net.OpError
	var ce *credentialsError
	write := method != http.MethodGet
	switch {
	case errors.As(err, &ce):
		return &upstreamError{status: http.StatusServiceUnavailable, retryAfter: upstreamRetryAfter, reason: err.Error()}
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &nerr) && nerr.Timeout():
		return &upstreamError{status: http.StatusGatewayTimeout, maybeApplied: write, reason: "no answer in time: " + err.Error()}
	case errors.As(err, &op) && op.Op == "dial":
		return &upstreamError{status: http.StatusServiceUnavailable, retryAfter: upstreamRetryAfter, transient: true, reason: "unreachable: " + err.Error()}
	}
	return &upstreamError{status: http.StatusBadGateway, maybeApplied: write, transient: true, reason: "connection failed: " + err.Error()}
}

// unexpected is the error for an answer whose status the caller has no meaning for: the upstream
// refusing our credentials, overloaded (503 with its Retry-After), failing (502/504), or answering
// something this service never asks for (502).
func unexpected(res *upstreamResponse, method, ref string) error {
	write := method != http.MethodGet
	what := fmt.Sprintf("%s %s answered HTTP %d", method, pathOnly(ref), res.status)
	switch st := res.status; {
	case st == http.StatusUnauthorized || st == http.StatusForbidden:
		return badAnswer("%s: it refused this service's credentials", what)
	case st == http.StatusTooManyRequests || st == http.StatusServiceUnavailable:
		return &upstreamError{status: http.StatusServiceUnavailable, retryAfter: retryAfter(res.header), reason: what}
	case st == http.StatusGatewayTimeout:
		return &upstreamError{status: http.StatusGatewayTimeout, maybeApplied: write, reason: what}
	case st >= 500 || st < 400:
		return &upstreamError{status: http.StatusBadGateway, maybeApplied: write, reason: what}
	}
	return badAnswer("%s (%s)", what, outcomeCodes(res.body))
}

// retryAfter is the upstream's Retry-After in seconds when it gives a sensible one, else ours.
func retryAfter(h http.Header) int {
	if n, err := strconv.Atoi(h.Get("Retry-After")); err == nil && n >= 1 && n <= 300 {
		return n
	}
	return upstreamRetryAfter
}

// outcomeCodes lists the issue codes of an OperationOutcome body, for the log: the codes, never the
// diagnostics, which may quote patient data.
func outcomeCodes(body []byte) string {
	root, _, _ := readJSON(body, fhirMaxDepth)
	if root.member("resourceType").str() != "OperationOutcome" {
		return "no OperationOutcome"
	}
	var codes []string
	for _, is := range root.member("issue").elems() {
		if c := is.member("code").str(); validFHIRCode(c) {
			codes = append(codes, c)
		}
	}
	return "issues: " + strings.Join(codes, ", ")
}

// validFHIRCode reports whether c looks like an IssueType code (lower-case letters and '-').
func validFHIRCode(c string) bool {
	return c != "" && len(c) <= 32 && strings.Trim(c, "abcdefghijklmnopqrstuvwxyz-") == ""
}

// fhirBody reads an answer that must be one FHIR JSON resource of type want ("" for any).
func fhirBody(res *upstreamResponse, want string) (*jsonNode, error) {
	mt, _, _ := mime.ParseMediaType(res.header.Get("Content-Type"))
	if mt != "application/fhir+json" && mt != "application/json" {
		return nil, badAnswer("HTTP %d answer is not FHIR JSON (Content-Type %q)", res.status, mt)
	}
	root, dups, jerr := readJSON(res.body, fhirMaxDepth+4) // a Bundle holds resources 3 levels down
	switch rt := root.member("resourceType").str(); {
	case jerr != nil || len(dups) > 0:
		return nil, badAnswer("HTTP %d answer is not valid JSON (or repeats a key)", res.status)
	case want != "" && rt != want:
		return nil, badAnswer("HTTP %d answer is a %q, not a %s", res.status, rt, want)
	case rt == "":
		return nil, badAnswer("HTTP %d answer is not a FHIR resource", res.status)
	}
	return root, nil
}

// patientFrom checks a Patient the upstream sent as strictly as one a client sends (R4, the NHS
// number), and that it is Patient wantID (any id if "") with a version id and a lastUpdated; its
// body is what we serve, written by our own writer.
func patientFrom(root *jsonNode, size int, wantID string) (patientVersion, error) {
	if _, issues, status := checkPatient(root, size, false); status != 0 {
		var where []string
		for _, is := range issues {
			where = append(where, is.Code+" at "+strings.Join(is.Expression, ","))
		}
		return patientVersion{}, badAnswer("a Patient it sent fails validation (%s)", strings.Join(where, "; "))
	}
	id := root.member("id").str()
	meta := root.member("meta")
	vid, lu := meta.member("versionId").str(), meta.member("lastUpdated").str()
	at, err := time.Parse(time.RFC3339Nano, lu)
	switch {
	case wantID != "" && id != wantID:
		return patientVersion{}, badAnswer("it sent Patient %q where %q was asked for", id, wantID)
	case !validFHIRID(vid):
		return patientVersion{}, badAnswer("Patient %q came without a valid meta.versionId", id)
	case err != nil:
		return patientVersion{}, badAnswer("Patient %q came without a valid meta.lastUpdated", id)
	}
	return patientVersion{ID: id, VersionID: vid, LastUpdated: at.UTC().Truncate(time.Millisecond),
		Body: appendJSONNode(nil, root)}, nil
}

// patient reads an answer that must be Patient wantID (any if "").
func (s *upstreamStore) patient(res *upstreamResponse, wantID string) (patientVersion, error) {
	root, err := fhirBody(res, "Patient")
	if err != nil {
		return patientVersion{}, err
	}
	return patientFrom(root, len(res.body), wantID)
}

// etagVersion is the version id in an ETag (W/"v" or "v"), "" when there is none.
func etagVersion(h http.Header) string {
	v := strings.Trim(strings.TrimPrefix(h.Get("ETag"), "W/"), `"`)
	if !validFHIRID(v) {
		return ""
	}
	return v
}

// Read implements patientStore. An upstream that answers 410 for a deleted Patient gives a Deleted
// version; one that answers 404 (Medplum) makes it unknown.
func (s *upstreamStore) Read(ctx context.Context, id string) (patientVersion, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.read(ctx, "Patient/"+id, id, "")
}

// VRead implements patientStore.
func (s *upstreamStore) VRead(ctx context.Context, id, versionID string) (patientVersion, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	v, err := s.read(ctx, "Patient/"+id+"/_history/"+versionID, id, versionID)
	if err == nil && v.VersionID != versionID {
		return patientVersion{}, badAnswer("asked for version %q of Patient %q, it sent version %q", versionID, id, v.VersionID)
	}
	return v, err
}

// read GETs ref, a version of Patient id (versionID, or the current one if "").
func (s *upstreamStore) read(ctx context.Context, ref, id, versionID string) (patientVersion, error) {
	res, err := s.send(ctx, http.MethodGet, ref, nil, nil)
	if err != nil {
		return patientVersion{}, err
	}
	switch res.status {
	case http.StatusOK:
		return s.patient(res, id)
	case http.StatusNotFound:
		return patientVersion{}, errNotFound
	case http.StatusGone:
		return patientVersion{ID: id, VersionID: cmp.Or(versionID, etagVersion(res.header)), Deleted: true, Method: http.MethodDelete}, nil
	}
	return patientVersion{}, unexpected(res, http.MethodGet, ref)
}

// written reads the answer to a write that stored Patient wantID (any if ""): the Patient in the body,
// or, for an upstream that sends none, the one its Location names, read back. Any failure is one the
// write may have survived.
func (s *upstreamStore) written(ctx context.Context, res *upstreamResponse, wantID string) (patientVersion, error) {
	if len(bytes.TrimSpace(res.body)) > 0 {
		v, err := s.patient(res, wantID)
		return v, maybeApplied(err)
	}
	id := wantID
	if loc, err := url.Parse(res.header.Get("Location")); err == nil {
		if _, rest, ok := strings.Cut(loc.Path, "/Patient/"); ok {
			id, _, _ = strings.Cut(rest, "/")
		}
	}
	if !validFHIRID(id) {
		return patientVersion{}, maybeApplied(badAnswer("HTTP %d to a write came with neither a Patient nor a Location", res.status))
	}
	v, err := s.read(ctx, "Patient/"+id, id, "")
	if err == nil && v.Deleted {
		err = badAnswer("the Patient just written reads as deleted")
	}
	return v, maybeApplied(err)
}

// Create implements patientStore: a POST. A Patient with an NHS number is a conditional create on
// that number (one live Patient per NHS number), as atomic as the upstream's conditional create is.
func (s *upstreamStore) Create(ctx context.Context, _ string, build buildFunc) (patientVersion, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	v, _, err := s.create(ctx, nil, build)
	return v, err
}

// CreateIfNone implements patientStore with the upstream's If-None-Exist. With an NHS number too, the
// number is checked by a search first: If-None-Exist can carry only the client's criteria, so that
// check can race another create of the number.
func (s *upstreamStore) CreateIfNone(ctx context.Context, _ string, c searchCriteria, build buildFunc) (patientVersion, int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.create(ctx, &c, build)
}

// create POSTs a new Patient, conditional on c (the client's criteria) or, without them, on its NHS
// number. It returns the created Patient, or the one that matched (matches 1), or how many did.
func (s *upstreamStore) create(ctx context.Context, c *searchCriteria, build buildFunc) (patientVersion, int, error) {
	body, err := build("", "", time.Time{})
	if err != nil {
		return patientVersion{}, 0, err
	}
	nhs := nhsNumberIn(body)
	header := http.Header{"Prefer": {"return=representation"}}
	switch {
	case c != nil:
		// The client's criteria decide first (a retried create finds its Patient, NHS number and all);
		// the upstream's own If-None-Exist then covers a create racing this one.
		switch matches, found, err := s.matching(ctx, *c); {
		case err != nil:
			return patientVersion{}, 0, err
		case matches == 1:
			return found[0], 1, nil
		case matches > 1:
			return patientVersion{}, matches, nil
		}
		if err := s.checkNHSNumber(ctx, nhs, ""); err != nil {
			return patientVersion{}, 0, err
		}
		header.Set("If-None-Exist", c.text)
	case nhs != "":
		header.Set("If-None-Exist", nhsNumberCriteria(nhs).text)
	}
	res, err := s.send(ctx, http.MethodPost, "Patient", header, body)
	if err != nil {
		return patientVersion{}, 0, err
	}
	switch {
	case res.status == http.StatusCreated || res.status == http.StatusOK && header.Get("If-None-Exist") == "":
		v, err := s.written(ctx, res, "")
		v.Method, v.Created = http.MethodPost, true
		return v, 0, err
	case res.status == http.StatusOK: // R4 http.html#ccreate: one match, nothing created
		found, err := s.written(ctx, res, "")
		switch {
		case err != nil:
			return patientVersion{}, 0, err
		case c == nil:
			return patientVersion{}, 0, nhsDuplicate(nhs, found.ID)
		}
		return found, 1, nil
	case res.status == http.StatusPreconditionFailed && c == nil: // several already hold the number
		return patientVersion{}, 0, nhsDuplicate(nhs, "")
	case res.status == http.StatusPreconditionFailed:
		n, err := s.count(ctx, *c)
		return patientVersion{}, max(n, 2), err
	}
	return patientVersion{}, 0, unexpected(res, http.MethodPost, "Patient")
}

// nhsNumberIn is the NHS number of a Patient body we built (validated: at most one), or "".
func nhsNumberIn(body []byte) string {
	root, _, _ := readJSON(body, fhirMaxDepth)
	return nhsNumberOf(root)
}

// nhsDuplicate is the error for an NHS number already held by holder ("" when not one Patient).
func nhsDuplicate(nhs, holder string) error {
	return &duplicateError{identifier: patientIdentifier{System: fhirNHSNumberSystem, Value: nhs}, holder: holder}
}

// checkNHSNumber refuses nhs (if not "") when a live Patient other than self holds it (nhsNumberHolder).
func (s *upstreamStore) checkNHSNumber(ctx context.Context, nhs, self string) error {
	holder, err := nhsNumberHolder(ctx, s, nhs, self)
	if err == nil && holder != "" {
		err = nhsDuplicate(nhs, holder)
	}
	return err
}

// Update implements patientStore: a PUT, with If-Match when ifMatch is set. Whether it created the
// Patient (201) is the upstream's word, or, where the upstream answers 200 to an update-as-create
// (Medplum), what a read just before found; a concurrent create of the same id can make that wrong.
func (s *upstreamStore) Update(ctx context.Context, id, ifMatch, method string, build buildFunc) (patientVersion, bool, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	body, err := build(id, "", time.Time{})
	if err != nil {
		return patientVersion{}, false, err
	}
	if err := s.checkNHSNumber(ctx, nhsNumberIn(body), id); err != nil {
		return patientVersion{}, false, err
	}
	existed, header := true, http.Header{"Prefer": {"return=representation"}}
	if ifMatch != "" {
		header.Set("If-Match", `W/"`+ifMatch+`"`)
	} else if cur, err := s.read(ctx, "Patient/"+id, id, ""); err == nil || errors.Is(err, errNotFound) {
		existed = err == nil && !cur.Deleted
	} else {
		return patientVersion{}, false, err
	}
	res, err := s.send(ctx, http.MethodPut, "Patient/"+id, header, body)
	if err != nil {
		return patientVersion{}, false, err
	}
	switch {
	case res.status == http.StatusOK || res.status == http.StatusCreated:
		v, err := s.written(ctx, res, id)
		v.Method, v.Created = method, res.status == http.StatusCreated || !existed
		return v, v.Created, err
	case res.status == http.StatusPreconditionFailed || ifMatch != "" && (res.status == http.StatusNotFound || res.status == http.StatusConflict):
		return patientVersion{}, false, errVersionConflict // Medplum answers If-Match on an unknown id with 404
	}
	return patientVersion{}, false, unexpected(res, http.MethodPut, "Patient/"+id)
}

// Delete implements patientStore. The upstream decides what a delete leaves (HAPI: a deleted version
// and 410 after; Medplum: nothing readable, 404 after); 404 and 410 mean there was nothing to delete.
func (s *upstreamStore) Delete(ctx context.Context, id string) (patientVersion, bool, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	res, err := s.send(ctx, http.MethodDelete, "Patient/"+id, nil, nil)
	if err != nil {
		return patientVersion{}, false, err
	}
	switch res.status {
	case http.StatusOK, http.StatusAccepted, http.StatusNoContent:
		return patientVersion{ID: id, VersionID: etagVersion(res.header), Deleted: true, Method: http.MethodDelete}, true, nil
	case http.StatusNotFound, http.StatusGone:
		return patientVersion{}, false, nil
	}
	return patientVersion{}, false, unexpected(res, http.MethodDelete, "Patient/"+id)
}

// UpdateWhere implements patientStore with the upstream's conditional update (PUT /Patient?criteria),
// after a search of its own that gives this service's answers where R4 leaves servers a choice: several
// matches 412 without a write; the body's id must be the one match's; with no match, a body id names
// the Patient to create (a PUT of it: Medplum's conditional update refuses a body id) and may not be
// a live Patient's. A search and the write that follows can race other writes; the upstream's
// conditional update is as atomic as it is, and a change it reports (412) is errRaced.
func (s *upstreamStore) UpdateWhere(ctx context.Context, c searchCriteria, bodyID, _, method string, build buildFunc) (patientVersion, bool, int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	matches, found, err := s.matching(ctx, c)
	switch {
	case err != nil || matches > 1:
		return patientVersion{}, false, matches, err
	case matches == 1 && bodyID != "" && bodyID != found[0].ID:
		return patientVersion{}, false, 1, &idMismatchError{matched: found[0].ID}
	case matches == 0 && bodyID != "":
		if cur, err := s.read(ctx, "Patient/"+bodyID, bodyID, ""); err == nil && !cur.Deleted {
			return patientVersion{}, false, 0, errExists
		} else if err != nil && !errors.Is(err, errNotFound) {
			return patientVersion{}, false, 0, err
		}
		v, created, err := s.Update(ctx, bodyID, "", method, build)
		return v, created, 0, err
	}
	body, err := build(bodyID, "", time.Time{})
	if err == nil {
		err = s.checkNHSNumber(ctx, nhsNumberIn(body), cmp.Or(bodyID, idOf(found)))
	}
	if err != nil {
		return patientVersion{}, false, matches, err
	}
	ref := "Patient?" + c.text
	res, err := s.send(ctx, http.MethodPut, ref, http.Header{"Prefer": {"return=representation"}}, body)
	switch {
	case err != nil:
		return patientVersion{}, false, matches, err
	case res.status == http.StatusOK || res.status == http.StatusCreated:
		v, err := s.written(ctx, res, cmp.Or(bodyID, idOf(found)))
		v.Method, v.Created = method, res.status == http.StatusCreated
		return v, v.Created, matches, err
	case res.status == http.StatusPreconditionFailed:
		return patientVersion{}, false, matches, errRaced
	}
	return patientVersion{}, false, matches, unexpected(res, http.MethodPut, "Patient")
}

// idOf is the id of the one Patient in found, "" if there is not one.
func idOf(found []patientVersion) string {
	if len(found) != 1 {
		return ""
	}
	return found[0].ID
}

// DeleteWhere implements patientStore with the upstream's conditional delete, after a search of its
// own: no match is a 204 without a write, several a 412 without one; one is deleted by the upstream's
// DELETE /Patient?criteria, and a 412 from it (the matches changed) is errRaced.
func (s *upstreamStore) DeleteWhere(ctx context.Context, c searchCriteria) (patientVersion, int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	matches, found, err := s.matching(ctx, c)
	if err != nil || matches != 1 {
		return patientVersion{}, matches, err
	}
	ref := "Patient?" + c.text
	res, err := s.send(ctx, http.MethodDelete, ref, nil, nil)
	switch {
	case err != nil:
		return patientVersion{}, 1, err
	case res.status == http.StatusOK || res.status == http.StatusAccepted || res.status == http.StatusNoContent:
		return patientVersion{ID: found[0].ID, VersionID: etagVersion(res.header), Deleted: true, Method: http.MethodDelete}, 1, nil
	case res.status == http.StatusPreconditionFailed:
		return patientVersion{}, 1, errRaced
	}
	return patientVersion{}, 1, unexpected(res, http.MethodDelete, "Patient")
}

// matching runs c for up to two matches.
func (s *upstreamStore) matching(ctx context.Context, c searchCriteria) (int, []patientVersion, error) {
	c.q.Offset, c.q.Count = 0, 2
	return s.search(ctx, c)
}

// count is how many Patients match c.
func (s *upstreamStore) count(ctx context.Context, c searchCriteria) (int, error) {
	c.q.Offset, c.q.Count = 0, 0
	n, _, err := s.search(ctx, c)
	return n, err
}

// upstreamSearchQuery translates a search for the upstream: our canonical parameters (as the client
// sent them: matching is the upstream's), our paging as _count and _offset (which HAPI FHIR and Medplum
// honour), and _total=accurate, since our Bundle always has a total. The one place a search is
// translated.
func upstreamSearchQuery(c searchCriteria) string {
	params, _ := url.ParseQuery(c.text) // our own encoding
	params.Set("_count", strconv.Itoa(c.q.Count))
	params.Del("_offset")
	if c.q.Offset > 0 {
		params.Set("_offset", strconv.Itoa(c.q.Offset))
	}
	// _elements and _summary are applied here, to Patients validated whole, and _total=none only
	// drops the total from our Bundle: the upstream always counts.
	params.Del("_elements")
	params.Del("_summary")
	params.Set("_total", "accurate")
	return params.Encode()
}

// Search implements patientStore.
func (s *upstreamStore) Search(ctx context.Context, c searchCriteria) (int, []patientVersion, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.search(ctx, c)
}

// search is Search within a store call's deadline. Only entries with search.mode match are results;
// a page longer than asked for is cut to _count.
func (s *upstreamStore) search(ctx context.Context, c searchCriteria) (int, []patientVersion, error) {
	ref := "Patient?" + upstreamSearchQuery(c)
	res, err := s.send(ctx, http.MethodGet, ref, nil, nil)
	if err != nil {
		return 0, nil, err
	}
	if res.status != http.StatusOK {
		return 0, nil, unexpected(res, http.MethodGet, "Patient")
	}
	b, err := readBundle(res, "searchset")
	switch {
	case err != nil:
		return 0, nil, err
	case b.total < 0:
		return 0, nil, badAnswer("its searchset Bundle has no total (asked with _total=accurate)")
	case c.q.Offset > 0 && b.self != "" && queryValue(b.self, "_offset") != strconv.Itoa(c.q.Offset):
		return 0, nil, badAnswer("it does not page by _offset (its self link leaves it out)")
	}
	var page []patientVersion
	for _, e := range b.entries {
		if mode := e.member("search").member("mode").str(); mode != "" && mode != "match" {
			continue // include or outcome: not a result
		}
		v, err := patientFrom(e.member("resource"), b.size, "")
		if err != nil {
			return 0, nil, err
		}
		page = append(page, v)
	}
	return b.total, page[:min(len(page), c.q.Count)], nil
}

// queryValue is the value of parameter name in the query of link, "" if none.
func queryValue(link, name string) string {
	u, err := url.Parse(link)
	if err != nil {
		return ""
	}
	return u.Query().Get(name)
}

// upstreamBundle is what we use of a Bundle the upstream sent.
type upstreamBundle struct {
	total      int // -1 when absent
	entries    []*jsonNode
	self, next string // link URLs, "" when absent
	size       int    // of the whole answer, to size what checkPatient writes
}

// readBundle reads an answer that must be a Bundle of type typ.
func readBundle(res *upstreamResponse, typ string) (upstreamBundle, error) {
	root, err := fhirBody(res, "Bundle")
	if err != nil {
		return upstreamBundle{}, err
	}
	if t := root.member("type").str(); t != typ {
		return upstreamBundle{}, badAnswer("it sent a %q Bundle where a %s was expected", t, typ)
	}
	b := upstreamBundle{total: -1, entries: root.member("entry").elems(), size: len(res.body)}
	if t := root.member("total"); t != nil {
		n, err := strconv.Atoi(t.text)
		if t.kind != jsonNumber || err != nil || n < 0 {
			return upstreamBundle{}, badAnswer("its Bundle.total is not a whole number")
		}
		b.total = n
	}
	for _, l := range root.member("link").elems() {
		switch l.member("relation").str() {
		case "self":
			b.self = l.member("url").str()
		case "next":
			b.next = l.member("url").str()
		}
	}
	for _, e := range b.entries {
		if e.kind != jsonObject {
			return upstreamBundle{}, badAnswer("a Bundle entry is not an object")
		}
	}
	return b, nil
}

// History implements patientStore: the upstream's instance history, every page of it, newest first
// by lastUpdated (Medplum's order flips between calls). Where an entry has no request (Medplum), the
// interaction is inferred as the journal's format 1 upgrade does: the first version a POST, one after a
// deletion a PUT that created, any other a PUT.
func (s *upstreamStore) History(ctx context.Context, id string) ([]patientVersion, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var out []patientVersion
	for ref, page := "Patient/"+id+"/_history", 0; ref != ""; page++ {
		if page == upstreamMaxPages {
			return nil, badAnswer("the history of Patient %q runs over %d pages", id, upstreamMaxPages)
		}
		res, err := s.send(ctx, http.MethodGet, ref, nil, nil)
		switch {
		case err != nil:
			return nil, err
		case res.status == http.StatusNotFound && page == 0:
			return nil, errNotFound
		case res.status != http.StatusOK:
			return nil, unexpected(res, http.MethodGet, ref)
		}
		b, err := readBundle(res, "history")
		if err != nil {
			return nil, err
		}
		for _, e := range b.entries {
			v, err := historyVersion(e, b.size, id, false)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		if ref = ""; b.next != "" {
			if ref, err = s.relativeRef(b.next); err != nil {
				return nil, err
			}
		}
	}
	if len(out) == 0 {
		return nil, errNotFound
	}
	slices.SortStableFunc(out, func(a, b patientVersion) int { return b.LastUpdated.Compare(a.LastUpdated) })
	inferMethods(out)
	return out, nil
}

// inferMethods fills in the interaction of versions (newest first, of one Patient) that came without one.
func inferMethods(versions []patientVersion) {
	for i := len(versions) - 1; i >= 0; i-- {
		v := &versions[i]
		if v.Method != "" {
			continue
		}
		switch {
		case i == len(versions)-1:
			v.Method, v.Created = http.MethodPost, true
		default:
			v.Method, v.Created = http.MethodPut, versions[i+1].Deleted
		}
	}
}

// historyVersion reads one history entry of Patient wantID (any if ""): a version with its resource,
// or a deletion (request DELETE, no resource). needRequest refuses an entry without request (R4
// bdl-3), which only instance history can do without: its order tells what the interactions were.
func historyVersion(e *jsonNode, size int, wantID string, needRequest bool) (patientVersion, error) {
	method := e.member("request").member("method").str()
	status := e.member("response").member("status").str()
	if !slices.Contains([]string{"", http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}, method) || needRequest && method == "" {
		return patientVersion{}, badAnswer("a history entry has request.method %q", method)
	}
	if res := e.member("resource"); res != nil {
		v, err := patientFrom(res, size, wantID)
		v.Method, v.Created = method, method == http.MethodPost || strings.HasPrefix(status, "201")
		return v, err
	}
	if method != http.MethodDelete {
		return patientVersion{}, badAnswer("a history entry has no resource and is not a deletion")
	}
	_, id, _ := strings.Cut(e.member("request").member("url").str(), "Patient/")
	id, _, _ = strings.Cut(id, "/")
	vid := etagVersion(http.Header{"Etag": {e.member("response").member("etag").str()}})
	at, err := time.Parse(time.RFC3339Nano, e.member("response").member("lastModified").str())
	if !validFHIRID(id) || wantID != "" && id != wantID || vid == "" || err != nil {
		return patientVersion{}, badAnswer("a deletion in the history lacks its Patient, etag or lastModified")
	}
	return patientVersion{ID: id, VersionID: vid, LastUpdated: at.UTC().Truncate(time.Millisecond), Deleted: true, Method: http.MethodDelete}, nil
}

// relativeRef turns a link the upstream sent into a reference relative to its base, refusing one that
// is not under the base: following it would send our credentials elsewhere.
func (s *upstreamStore) relativeRef(link string) (string, error) {
	u, err := s.base.Parse(link) // resolves a relative link and removes dot segments
	if err != nil || u.Scheme != s.base.Scheme || u.Host != s.base.Host || u.User != nil ||
		!strings.HasPrefix(u.EscapedPath(), s.base.EscapedPath()) {
		return "", badAnswer("it sent a link outside its base URL")
	}
	ref := strings.TrimPrefix(u.EscapedPath(), s.base.EscapedPath())
	if u.RawQuery != "" {
		ref += "?" + u.RawQuery
	}
	return ref, nil
}

// TypeHistory implements patientStore: the upstream's GET /Patient/_history. A page cursor is the
// upstream's next link (made relative to its base), or, where it gives none, the _offset of the next
// page; either way clients see only our own links. An upstream without type history (Medplum answers
// 404) makes it a 501.
func (s *upstreamStore) TypeHistory(ctx context.Context, since time.Time, cursor string, count int) ([]patientVersion, string, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	ref, offset, err := s.historyPage(since, cursor, count)
	if err != nil {
		return nil, "", err
	}
	res, err := s.send(ctx, http.MethodGet, ref, nil, nil)
	switch {
	case err != nil:
		return nil, "", err
	case res.status == http.StatusNotFound:
		return nil, "", &upstreamError{status: http.StatusNotImplemented, reason: "it has no type-level history (GET Patient/_history answered 404)"}
	case res.status != http.StatusOK:
		return nil, "", unexpected(res, http.MethodGet, "Patient/_history")
	}
	b, err := readBundle(res, "history")
	if err != nil {
		return nil, "", err
	}
	var out []patientVersion
	for _, e := range b.entries[:min(len(b.entries), count)] {
		v, err := historyVersion(e, b.size, "", true)
		if err != nil {
			return nil, "", err
		}
		out = append(out, v)
	}
	switch {
	case b.next != "" && len(b.entries) <= count:
		next, err := s.relativeRef(b.next)
		return out, "n" + base64.RawURLEncoding.EncodeToString([]byte(next)), err
	case offset >= 0 && len(b.entries) >= count: // an upstream that gives no links: perhaps more
		return out, "o" + strconv.Itoa(offset+count), nil
	}
	return out, "", nil // the end (an upstream that pages by links says so by giving none)
}

// historyPage is the upstream reference of a type-history page: the cursor's (see TypeHistory), or the
// first page of count from since, with the page's offset (-1 for a page the upstream linked to);
// errBadCursor for a cursor we did not make.
func (s *upstreamStore) historyPage(since time.Time, cursor string, count int) (string, int, error) {
	q := url.Values{"_count": {strconv.Itoa(count)}}
	if !since.IsZero() {
		q.Set("_since", since.UTC().Format(time.RFC3339Nano))
	}
	switch {
	case cursor == "":
		return "Patient/_history?" + q.Encode(), 0, nil
	case cursor[0] == 'n':
		ref, err := base64.RawURLEncoding.DecodeString(cursor[1:])
		if err != nil {
			return "", 0, errBadCursor
		}
		if rel, err := s.relativeRef(string(ref)); err == nil && rel == string(ref) {
			return rel, -1, nil
		}
	case cursor[0] == 'o':
		if n, err := strconv.Atoi(cursor[1:]); err == nil && n > 0 && fhirDigits(cursor[1:]) {
			q.Set("_offset", cursor[1:])
			return "Patient/_history?" + q.Encode(), n, nil
		}
	}
	return "", 0, errBadCursor
}

// VersionIDs implements patientStore: an upstream's version ids are whatever FHIR ids it makes.
func (s *upstreamStore) VersionIDs() versionIDRule {
	return versionIDRule{valid: validFHIRID, text: "a FHIR id (1 to 64 characters from A-Z, a-z, 0-9, '-' and '.')", example: "3"}
}

// Ready implements patientStore: whether the upstream answered its last check.
func (s *upstreamStore) Ready() bool { return s.ready.Load() }

// Close stops the checks and closes idle connections.
func (s *upstreamStore) Close() error {
	s.stop()
	<-s.done
	s.client.CloseIdleConnections()
	return nil
}

// watch checks every interval whether the upstream answers (see probe), keeping Ready current and
// logging each change; /readyz reads the result, so probes of it never reach the upstream.
func (s *upstreamStore) watch(ctx context.Context, every time.Duration) {
	defer close(s.done)
	for {
		err := s.probe(ctx)
		if ctx.Err() != nil {
			return
		}
		if up := err == nil; s.ready.Swap(up) != up {
			if up {
				s.log.Info("upstream FHIR server answers: ready", "base", s.base.Redacted())
			} else {
				s.log.Warn("upstream FHIR server does not answer: not ready", "base", s.base.Redacted(), "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// probe asks the upstream for its CapabilityStatement (GET [base]/metadata, with our credentials): it
// answers when that is a 200 with a FHIR resource, and a CapabilityStatement in it must say R4
// (4.0.x). Medplum's FHIR router has no /metadata handler and answers a searchset Bundle there: a
// FHIR answer, so it counts.
func (s *upstreamStore) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, min(s.timeout, upstreamConnectTimeout+2*time.Second))
	defer cancel()
	res, err := s.attempt(ctx, http.MethodGet, "metadata", nil, nil)
	if err != nil {
		return err
	}
	if res.status != http.StatusOK {
		return unexpected(res, http.MethodGet, "metadata")
	}
	root, err := fhirBody(res, "")
	if err != nil {
		return err
	}
	if v := root.member("fhirVersion").str(); root.member("resourceType").str() == "CapabilityStatement" && !strings.HasPrefix(v, "4.0.") {
		return badAnswer("it is not an R4 server (CapabilityStatement.fhirVersion %q)", v)
	}
	return nil
}
