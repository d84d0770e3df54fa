package main

// The one error path. Every error response is written here, in the format of its route family:
// an R4 OperationOutcome (application/fhir+json) on the FHIR routes, RFC 9457 problem details
// (application/problem+json) with FastAPI-style errors[] everywhere else. Bodies never carry Go
// error text; a 5xx is logged with the request ID and answered generically.

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"syscall"
)

// problem is an RFC 9457 problem details body, with FastAPI-style errors and the request ID as extensions.
type problem struct {
	Type      string       `json:"type"`
	Title     string       `json:"title"`
	Status    int          `json:"status"`
	Detail    string       `json:"detail"`
	Errors    []fieldError `json:"errors,omitempty"`
	RequestID string       `json:"request_id"`
}

// fieldError is one problem with a request, in the shape FastAPI users know: loc names the field
// (["body", "age"]) or the header (["header", "Content-Type"]).
type fieldError struct {
	Loc    []string `json:"loc"`
	Msg    string   `json:"msg"`
	Type   string   `json:"type"`
	status int      // 400 for a body that is not the right JSON, 422 for a well-formed but invalid value
}

// operationOutcome is the FHIR R4 error body.
type operationOutcome struct {
	ResourceType string      `json:"resourceType"`
	Issue        []fhirIssue `json:"issue"`
}

// fhirIssue is one OperationOutcome.issue (R4).
type fhirIssue struct {
	Severity    string               `json:"severity"`             // "error" for validation problems
	Code        string               `json:"code"`                 // IssueType: structure, required, value, invariant, code-invalid, business-rule, extension, too-long ...
	Diagnostics string               `json:"diagnostics"`          // human sentence naming the element and the rule, for a developer
	Expression  []string             `json:"expression,omitempty"` // FHIRPath
	Details     *fhirCodeableConcept `json:"details,omitempty"`    // a coded reason, e.g. an NHS API error code
}

// fhirCodeableConcept and fhirCoding are the parts of those FHIR types an OperationOutcome and an
// Observation use.
type (
	fhirCodeableConcept struct {
		Coding []fhirCoding `json:"coding,omitempty"`
		Text   string       `json:"text,omitempty"`
	}
	fhirCoding struct {
		System  string `json:"system"`
		Code    string `json:"code"`
		Display string `json:"display,omitempty"`
	}
)

// nhsdErrorSystem is the NHS England API error code system (conventions.md section 2).
const nhsdErrorSystem = "https://fhir.nhs.uk/CodeSystem/NHSD-API-ErrorOrWarningCode"

// fhirError builds an error-severity issue; an empty path means the issue concerns the whole body.
func fhirError(code, path, diagnostics string) fhirIssue {
	is := fhirIssue{Severity: "error", Code: code, Diagnostics: diagnostics}
	if path != "" {
		is.Expression = []string{path}
	}
	return is
}

// writeError answers status in the route family's format: on the FHIR routes, one issue coded for
// the status; elsewhere problem details, where loc (if given) names the part of the request at fault
// (["header", "Content-Type"], ["body"]) as an errors[] item.
func writeError(w http.ResponseWriter, r *http.Request, status int, detail string, loc ...string) {
	if isFHIRPath(r.URL.Path) {
		writeOutcome(w, status, fhirError(issueTypeFor(status), "", detail))
		return
	}
	var errs []fieldError
	if loc != nil {
		errs = []fieldError{{Loc: loc, Msg: detail, Type: problemTypeFor(status)}}
	}
	writeProblem(w, r, status, detail, errs)
}

// writeOutcome writes an OperationOutcome with the given issues.
func writeOutcome(w http.ResponseWriter, status int, issues ...fhirIssue) {
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

// writeStoreError answers a failed store call: errNotFound is a 404 with notFound, errVersionConflict
// a 412 with conflict (the caller words both for its interaction), a duplicate NHS number a 409 naming
// the Patient that holds it only to a caller who may read Patients; a full disk is a 507 and a store
// not taking writes a 503, both with Retry-After (reads still work); any other error is a 500. The
// last three are logged with the request and trace IDs, and their cause is never shown to the client.
func writeStoreError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error, notFound, conflict fhirIssue) {
	var dup *duplicateError
	var up *upstreamError
	switch {
	case errors.Is(err, errNotFound) && notFound.Code != "":
		writeOutcome(w, http.StatusNotFound, notFound)
	case errors.Is(err, errVersionConflict) && conflict.Code != "":
		writeOutcome(w, http.StatusPreconditionFailed, conflict)
	case errors.As(err, &dup):
		msg := fmt.Sprintf("The NHS number %s already belongs to another Patient; a live Patient's NHS number belongs to no other (UK Core Patient.identifier:nhsNumber). Nothing was stored.", dup.identifier.Value)
		if canReadPatients(r.Context()) { // the caller may read Patients, so may learn which one
			msg = fmt.Sprintf("The NHS number %s already belongs to Patient %q; a live Patient's NHS number belongs to no other (UK Core Patient.identifier:nhsNumber). Nothing was stored.", dup.identifier.Value, dup.holder)
		}
		writeOutcome(w, http.StatusConflict, fhirError("duplicate", "Patient.identifier", msg))
	case errors.As(err, &up):
		writeUpstreamError(w, r, log, up)
	case errors.Is(err, errRaced):
		writeOutcome(w, http.StatusConflict, fhirError("conflict", "", "Other writes kept changing which Patients match the criteria; nothing was changed. Send the request again."))
	case errors.Is(err, errStoreFull) || errors.Is(err, syscall.ENOSPC):
		log.Error("patient store", "route", r.Pattern, "err", err, "request_id", requestIDFrom(r.Context()), "trace_id", traceIDFrom(r.Context()))
		w.Header().Set("Retry-After", "60")
		writeOutcome(w, http.StatusInsufficientStorage, fhirError("exception", "",
			"The server has no disk space left to store the change; nothing was stored. Reads still work; retry later."))
	case errors.Is(err, errStoreUnavailable):
		log.Error("patient store", "route", r.Pattern, "err", err, "request_id", requestIDFrom(r.Context()), "trace_id", traceIDFrom(r.Context()))
		w.Header().Set("Retry-After", "60")
		writeOutcome(w, http.StatusServiceUnavailable, fhirError("transient", "",
			"The server cannot store changes at the moment; nothing was stored. Reads still work; retry later."))
	default:
		log.Error("patient store", "route", r.Pattern, "err", err, "request_id", requestIDFrom(r.Context()), "trace_id", traceIDFrom(r.Context()))
		writeError(w, r, http.StatusInternalServerError, "The server could not complete the request.")
	}
}

// writeUpstreamError answers a failure of the upstream FHIR server (upstream.go): 503 unreachable or
// overloaded, with Retry-After; 504 no answer in time; 502 an answer this service cannot use; 501 an
// interaction it does not offer. A write that may have reached it says so: the client must read before
// sending it again. The cause is logged, never shown.
func writeUpstreamError(w http.ResponseWriter, r *http.Request, log *slog.Logger, up *upstreamError) {
	log.Error("upstream FHIR server", "route", r.Pattern, "status", up.status, "err", up, "request_id", requestIDFrom(r.Context()), "trace_id", traceIDFrom(r.Context()))
	msg := map[int]string{
		http.StatusNotImplemented:     "The upstream FHIR server this service stores Patients in does not offer this interaction.",
		http.StatusBadGateway:         "The upstream FHIR server this service stores Patients in gave an answer this service cannot use.",
		http.StatusServiceUnavailable: "The upstream FHIR server this service stores Patients in cannot be reached or is overloaded; nothing was changed. Retry later.",
		http.StatusGatewayTimeout:     "The upstream FHIR server this service stores Patients in did not answer in time.",
	}[up.status]
	if up.maybeApplied {
		msg += " The change may have been stored there: read the Patient before sending it again."
	}
	if up.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(up.retryAfter))
	}
	code := map[int]string{http.StatusNotImplemented: "not-supported", http.StatusServiceUnavailable: "transient", http.StatusGatewayTimeout: "timeout"}[up.status]
	writeOutcome(w, up.status, fhirError(cmp.Or(code, "exception"), "", msg))
}

// noPatient is the 404 issue for an id that never existed.
func noPatient(id string) fhirIssue {
	return fhirError("not-found", "Patient.id", fmt.Sprintf("There is no Patient with id %q.", id))
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

// problemTypeFor is the errors[] type of a request-level problem with the given status.
func problemTypeFor(status int) string {
	switch status {
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusUnsupportedMediaType:
		return "unsupported_media_type"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	}
	return "invalid"
}
