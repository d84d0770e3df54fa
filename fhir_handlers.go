package main

// The FHIR R4 Patient REST handlers (R4 http.html): the service root is the FHIR base, as in the
// handbook. Each reads its input, validates it (patient.go, search.go), calls the store (store.go)
// and writes the resource, Bundle or OperationOutcome (errors.go).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// fhirContentType is the media type of every FHIR response (R4 http.html: charset SHALL be utf-8).
const fhirContentType = "application/fhir+json; charset=utf-8"

// maxFHIRBody caps FHIR request bodies; the largest official Patient example is under 20 KiB.
const maxFHIRBody = 1 << 20

// handlePatientCreate serves POST /Patient: validate, assign an id and version 1, persist, return.
func handlePatientCreate(log *slog.Logger, store patientStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := readBody(w, r, nil, maxFHIRBody, "application/fhir+json", "application/json")
		if !ok {
			return
		}
		p, issues, status := parsePatient(body, true)
		if status != 0 {
			writeOutcome(w, status, issues...)
			return
		}
		id := newUUID()
		var v patientVersion
		var err error
		matches := 0
		if cond, conditional := r.Header["If-None-Exist"]; !conditional {
			v, err = store.Create(r.Context(), id, p.build)
		} else if c, ok := parseCriteria(w, "If-None-Exist", strings.Join(cond, "&")); !ok {
			return
		} else {
			v, matches, err = store.CreateIfNone(r.Context(), id, c, p.build)
		}
		switch {
		case err != nil:
			writeStoreError(w, r, log, err, fhirIssue{}, fhirIssue{})
		case matches > 1:
			writeOutcome(w, http.StatusPreconditionFailed, tooManyMatches("If-None-Exist", matches))
		case matches == 1: // R4 http.html#ccreate: the create is ignored, and the Patient that matched returned
			writeVersion(w, r, http.StatusOK, v)
		default:
			w.Header().Set("Location", versionPath(v))
			writeVersion(w, r, http.StatusCreated, v)
		}
	})
}

// handlePatientRead serves GET /Patient/{id}; a deleted Patient is 410.
func handlePatientRead(log *slog.Logger, store patientStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r)
		if !ok {
			return
		}
		v, err := store.Read(r.Context(), id)
		switch {
		case err != nil:
			writeStoreError(w, r, log, err, noPatient(id), fhirIssue{})
		case v.Deleted:
			writeOutcome(w, http.StatusGone, deletedPatient(v))
		default:
			writeVersion(w, r, http.StatusOK, v)
		}
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
		ifMatch, ok := ifMatchHeader(w, r, store.VersionIDs())
		if !ok {
			return
		}
		body, ok := readBody(w, r, nil, maxFHIRBody, "application/fhir+json", "application/json")
		if !ok {
			return
		}
		p, issues, status := parseUpdate(body, id)
		if status != 0 {
			writeOutcome(w, status, issues...)
			return
		}
		v, created, err := store.Update(r.Context(), id, ifMatch, http.MethodPut, p.build)
		if err != nil {
			writeStoreError(w, r, log, err, fhirIssue{}, staleIfMatch(ifMatch, id))
			return
		}
		status = http.StatusOK
		if created {
			status = http.StatusCreated
			w.Header().Set("Location", versionPath(v))
		}
		writeVersion(w, r, status, v)
	})
}

// parseCriteria reads a conditional interaction's search parameters (R4 http.html), from the query or
// the If-None-Exist header, answering 400 itself. It is strict: an unknown parameter would silently
// widen the match, so it is an error, as is having no parameter at all.
func parseCriteria(w http.ResponseWriter, from, raw string) (searchCriteria, bool) {
	raw = strings.TrimPrefix(strings.TrimPrefix(raw, "Patient"), "?") // the header may hold a whole search URL
	params, err := url.ParseQuery(raw)
	params.Del("_format")
	if err != nil || len(params) == 0 {
		writeOutcome(w, http.StatusBadRequest, fhirError("invalid", "", from+
			": a conditional interaction needs search parameters, such as identifier=https://fhir.nhs.uk/Id/nhs-number|9434765919."))
		return searchCriteria{}, false
	}
	for _, name := range []string{"_count", "_offset", "_sort", "_summary", "_total", "_elements"} {
		if params.Has(name) {
			writeOutcome(w, http.StatusBadRequest, fhirError("invalid", "", from+": "+name+
				" shapes a search's results; conditional criteria only select Patients, so leave it out."))
			return searchCriteria{}, false
		}
	}
	q, self, issues := parsePatientSearch(params, true)
	if issues != nil {
		for i := range issues {
			issues[i].Diagnostics = from + ": " + issues[i].Diagnostics
		}
		writeOutcome(w, http.StatusBadRequest, issues...)
		return searchCriteria{}, false
	}
	return newSearchCriteria(q, self), true
}

// tooManyMatches is the 412 of a conditional interaction whose criteria match several Patients.
func tooManyMatches(from string, n int) fhirIssue {
	return fhirError("processing", "", fmt.Sprintf("%s: %d Patients match; the criteria must select one. Nothing was changed.", from, n))
}

// handlePatientConditionalUpdate serves PUT /Patient?<criteria> (R4 http.html#cond-update): no match
// creates the Patient (with the body's id, or a new one), one match updates it (the body's id, if any,
// must be its id), several are a 412.
func handlePatientConditionalUpdate(log *slog.Logger, store patientStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := parseCriteria(w, "PUT /Patient", r.URL.RawQuery)
		if !ok {
			return
		}
		if r.Header.Get("If-Match") != "" {
			writeOutcome(w, http.StatusBadRequest, fhirError("invalid", "", "A conditional update takes no If-Match; to update one version, PUT /Patient/{id} with If-Match."))
			return
		}
		body, ok := readBody(w, r, nil, maxFHIRBody, "application/fhir+json", "application/json")
		if !ok {
			return
		}
		p, issues, status := parsePatient(body, false)
		if status != 0 {
			writeOutcome(w, status, issues...)
			return
		}
		v, created, matches, err := store.UpdateWhere(r.Context(), c, p.bodyID, newUUID(), http.MethodPut, p.build)
		var mismatch *idMismatchError
		switch {
		case errors.As(err, &mismatch):
			writeOutcome(w, http.StatusBadRequest, fhirError("invalid", "Patient.id", fmt.Sprintf(
				"The criteria match Patient %q, but the resource's id is %q; send its id, or none.", mismatch.matched, p.bodyID)))
		case errors.Is(err, errExists):
			writeOutcome(w, http.StatusConflict, fhirError("conflict", "Patient.id", fmt.Sprintf(
				"No Patient matches the criteria, and the resource's id names Patient %q, which does not match them; nothing was changed.", p.bodyID)))
		case err != nil:
			writeStoreError(w, r, log, err, fhirIssue{}, fhirIssue{})
		case matches > 1:
			writeOutcome(w, http.StatusPreconditionFailed, tooManyMatches("PUT /Patient", matches))
		case created:
			w.Header().Set("Location", versionPath(v))
			writeVersion(w, r, http.StatusCreated, v)
		default:
			writeVersion(w, r, http.StatusOK, v)
		}
	})
}

// handlePatientConditionalDelete serves DELETE /Patient?<criteria> (R4 http.html, conditional delete;
// the CapabilityStatement says single): no match or one match (deleted) is a 204, several a 412.
func handlePatientConditionalDelete(log *slog.Logger, store patientStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := parseCriteria(w, "DELETE /Patient", r.URL.RawQuery)
		if !ok {
			return
		}
		v, matches, err := store.DeleteWhere(r.Context(), c)
		switch {
		case err != nil:
			writeStoreError(w, r, log, err, fhirIssue{}, fhirIssue{})
		case matches > 1:
			writeOutcome(w, http.StatusPreconditionFailed, tooManyMatches("DELETE /Patient", matches))
		default:
			if matches == 1 {
				setETag(w, v)
			}
			w.WriteHeader(http.StatusNoContent)
		}
	})
}

// parseUpdate validates body as the next version of Patient id (a PUT body, or a patched resource): a
// valid Patient whose id is the URL's. status is 0 when valid, else 400 or 422 as for parsePatient.
func parseUpdate(body []byte, id string) (*patientResource, []fhirIssue, int) {
	p, issues, status := parsePatient(body, false)
	if status == 0 && p.bodyID != id {
		msg := fmt.Sprintf("The resource's id must equal the id in the URL (%q).", id)
		if p.bodyID == "" {
			msg = fmt.Sprintf("The resource has no id; an update must carry the id in the URL (%q).", id)
		}
		return nil, []fhirIssue{fhirError("invalid", "Patient.id", msg)}, http.StatusBadRequest
	}
	return p, issues, status
}

// handlePatientPatch serves PATCH /Patient/{id}: a JSON Patch applied to the current version, whose
// result is stored as the next version exactly as a PUT of it would be (R4 http.html#patch). If-Match
// makes it conditional; without one, a write that lands first makes the patch start again from it.
func handlePatientPatch(log *slog.Logger, store patientStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r)
		if !ok {
			return
		}
		ifMatch, ok := ifMatchHeader(w, r, store.VersionIDs())
		if !ok {
			return
		}
		if checkMediaType(r.Header.Get("Content-Type"), jsonPatchType) != "" {
			w.Header().Set("Accept-Patch", jsonPatchType) // RFC 5789 section 2.2, with the 415 readBody sends
		}
		body, ok := readBody(w, r, nil, maxFHIRBody, jsonPatchType)
		if !ok {
			return
		}
		ops, issues := parseJSONPatch(body)
		if len(issues) > 0 {
			writeOutcome(w, http.StatusBadRequest, issues...)
			return
		}
		v, status, issues, err := patchPatient(r.Context(), store, id, ifMatch, ops)
		switch {
		case err != nil:
			writeStoreError(w, r, log, err, noPatient(id), staleIfMatch(ifMatch, id))
		case status != 0:
			writeOutcome(w, status, issues...)
		default:
			writeVersion(w, r, http.StatusOK, v)
		}
	})
}

// maxPatchAttempts bounds how often a PATCH without If-Match starts again after losing a race.
const maxPatchAttempts = 5

// patchPatient applies ops to the current version of Patient id and stores the result as the next
// version, conditional on the version it was applied to: so the patch applies whole to one version
// and never overwrites a write it did not see. With ifMatch the version must be that one (else
// errVersionConflict, a 412); without, a lost race starts again from the newer version. It returns
// the stored version; or a status and its issues (410 deleted, 409 still losing after
// maxPatchAttempts, 422 an operation that failed, 400/422 an invalid result); or a store error.
func patchPatient(ctx context.Context, store patientStore, id, ifMatch string, ops []patchOp) (patientVersion, int, []fhirIssue, error) {
	for attempt := 1; ; attempt++ {
		cur, err := store.Read(ctx, id)
		switch {
		case err != nil:
			return patientVersion{}, 0, nil, err
		case cur.Deleted:
			return patientVersion{}, http.StatusGone, []fhirIssue{deletedPatient(cur)}, nil
		case ifMatch != "" && ifMatch != cur.VersionID:
			return patientVersion{}, 0, nil, errVersionConflict
		}
		p, issues, status, err := applyPatientPatch(cur, ops)
		if err != nil || status != 0 {
			return patientVersion{}, status, issues, err
		}
		v, _, err := store.Update(ctx, id, cur.VersionID, http.MethodPatch, p.build)
		if !errors.Is(err, errVersionConflict) || ifMatch != "" {
			return v, 0, nil, err
		}
		if attempt == maxPatchAttempts {
			return patientVersion{}, http.StatusConflict, []fhirIssue{fhirError("conflict", "", fmt.Sprintf(
				"Patient %q changed %d times while this patch was being applied; send it again (or with If-Match).", id, attempt))}, nil
		}
	}
}

// applyPatientPatch applies ops to a stored version and validates the result as a PUT of it.
func applyPatientPatch(cur patientVersion, ops []patchOp) (*patientResource, []fhirIssue, int, error) {
	doc, _, jerr := readJSON(cur.Body, fhirMaxDepth) // a tree of our own: the patch changes it
	if jerr != nil {
		return nil, nil, 0, fmt.Errorf("stored Patient %s version %s does not parse (at byte %d)", cur.ID, cur.VersionID, jerr.offset)
	}
	doc, perr := applyJSONPatch(doc, ops)
	if perr != nil {
		return nil, []fhirIssue{perr.issue(ops)}, http.StatusUnprocessableEntity, nil
	}
	body := appendJSONNode(nil, doc)
	if len(body) > maxFHIRBody {
		return nil, []fhirIssue{fhirError("too-long", "", fmt.Sprintf(
			"The patched resource would be %d bytes; a Patient may be at most %d (as a request body).", len(body), maxFHIRBody))}, http.StatusUnprocessableEntity, nil
	}
	p, issues, status := parseUpdate(body, cur.ID)
	return p, issues, status, nil
}

// ifMatchHeader reads If-Match (see parseIfMatch), answering 400 itself when it is malformed.
func ifMatchHeader(w http.ResponseWriter, r *http.Request, rule versionIDRule) (string, bool) {
	vid, ok := parseIfMatch(r.Header.Values("If-Match"), rule)
	if !ok {
		writeOutcome(w, http.StatusBadRequest, fhirError("value", "", fmt.Sprintf(`If-Match must be one version ETag such as W/"%s".`, rule.example)))
	}
	return vid, ok
}

// staleIfMatch is the 412 issue for an If-Match that names a version that is not the current one.
func staleIfMatch(ifMatch, id string) fhirIssue {
	return fhirError("conflict", "", fmt.Sprintf(`If-Match W/"%s" is not the current version of Patient %q; read it again and retry.`, ifMatch, id))
}

// deletedPatient is the 410 issue for a Patient whose current version records its deletion.
func deletedPatient(v patientVersion) fhirIssue {
	version := "" // an upstream server's 410 may not say which version records the deletion
	if v.VersionID != "" {
		version = " (version " + v.VersionID + ")"
	}
	return fhirError("deleted", "", fmt.Sprintf("Patient %q was deleted%s; earlier versions remain readable in its history.", v.ID, version))
}

// parseIfMatch reads an If-Match version ETag (W/"v", or "v") whose v the rule allows; "" when absent.
func parseIfMatch(values []string, rule versionIDRule) (string, bool) {
	if len(values) == 0 {
		return "", true
	}
	if len(values) > 1 {
		return "", false
	}
	tag := strings.TrimPrefix(strings.TrimSpace(values[0]), "W/")
	if len(tag) < 3 || tag[0] != '"' || tag[len(tag)-1] != '"' || !rule.valid(tag[1:len(tag)-1]) {
		return "", false
	}
	return tag[1 : len(tag)-1], true
}

// setETag sets the ETag of version v (R4 http.html: W/"versionId"), unless the store does not know its id.
func setETag(w http.ResponseWriter, v patientVersion) {
	if v.VersionID != "" {
		w.Header().Set("ETag", `W/"`+v.VersionID+`"`)
	}
}

// versionPath is the service-relative URL of version v: the Location of a write that created it.
func versionPath(v patientVersion) string {
	return "/Patient/" + v.ID + "/_history/" + v.VersionID
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
			writeStoreError(w, r, log, err, fhirIssue{}, fhirIssue{})
			return
		}
		if existed {
			setETag(w, v)
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// handlePatientVRead serves GET /Patient/{id}/_history/{vid}; a deleted version is 410.
func handlePatientVRead(log *slog.Logger, store patientStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r)
		if !ok {
			return
		}
		vid, rule := r.PathValue("vid"), store.VersionIDs()
		if !rule.valid(vid) {
			writeOutcome(w, http.StatusBadRequest, fhirError("value", "Patient.meta.versionId", "The version in the URL must be "+rule.text+"."))
			return
		}
		v, err := store.VRead(r.Context(), id, vid)
		switch {
		case err != nil:
			writeStoreError(w, r, log, err, fhirError("not-found", "Patient.meta.versionId", fmt.Sprintf("Patient %q has no version %s.", id, vid)), fhirIssue{})
		case v.Deleted:
			setETag(w, v)
			writeOutcome(w, http.StatusGone, fhirError("deleted", "", fmt.Sprintf("Version %s of Patient %q records its deletion.", vid, id)))
		default:
			writeVersion(w, r, http.StatusOK, v)
		}
	})
}

// handlePatientHistory serves GET /Patient/{id}/_history: every version, newest first.
func handlePatientHistory(log *slog.Logger, store patientStore, baseURL string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r)
		if !ok {
			return
		}
		versions, err := store.History(r.Context(), id)
		if err != nil {
			writeStoreError(w, r, log, err, noPatient(id), fhirIssue{})
			return
		}
		base := requestBase(r, baseURL)
		total := len(versions)
		b := bundle{ResourceType: "Bundle", Type: "history", Total: &total, Link: []bundleLink{{"self", base + "/Patient/" + id + "/_history"}}}
		for _, v := range versions {
			b.Entry = append(b.Entry, historyEntry(base, v))
		}
		writeJSON(w, http.StatusOK, fhirContentType, b)
	})
}

// historyEntry is a version as a history Bundle entry: the journal records the interaction that made
// it, and whether it created the id, so request and response say what really happened.
func historyEntry(base string, v patientVersion) bundleEntry {
	e := bundleEntry{FullURL: base + "/Patient/" + v.ID, Resource: v.Body,
		Request: &bundleRequest{v.Method, "Patient/" + v.ID},
		Response: &bundleResponse{Status: "200 OK", Etag: `W/"` + v.VersionID + `"`,
			LastModified: v.LastUpdated.UTC().Format("2006-01-02T15:04:05.000Z07:00")}}
	switch {
	case v.Method == http.MethodPost:
		e.Request.URL, e.Response.Status = "Patient", "201 Created"
	case v.Deleted:
		e.Response.Status = "204 No Content"
	case v.Created:
		e.Response.Status = "201 Created"
	}
	return e
}

// handlePatientTypeHistory serves GET /Patient/_history (R4 http.html#history): every version of every
// Patient, deletions included, newest first, from _since (an instant) on, _count a page (default 20,
// at most 100), with a next link while there is more. A downstream copy syncs by asking from the
// lastUpdated it last saw. There is no total: counting would read the whole journal.
func handlePatientTypeHistory(log *slog.Logger, store patientStore, baseURL string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		params := r.URL.Query()
		since, count, cursor, issues := parseHistoryParams(params, preference(r.Header.Values("Prefer"), "handling") == "strict")
		if issues != nil {
			writeOutcome(w, http.StatusBadRequest, issues...)
			return
		}
		versions, next, err := store.TypeHistory(r.Context(), since, cursor, count)
		if errors.Is(err, errBadCursor) {
			writeOutcome(w, http.StatusBadRequest, fhirError("value", "", "_before: not a page of this history; follow the Bundle's next link."))
			return
		} else if err != nil {
			writeStoreError(w, r, log, err, fhirIssue{}, fhirIssue{})
			return
		}
		base := requestBase(r, baseURL)
		link := func(rel, cursor string) bundleLink {
			v := url.Values{"_count": {strconv.Itoa(count)}}
			if !since.IsZero() {
				v.Set("_since", params.Get("_since"))
			}
			if cursor != "" {
				v.Set("_before", cursor)
			}
			return bundleLink{rel, base + "/Patient/_history?" + v.Encode()}
		}
		b := bundle{ResourceType: "Bundle", Type: "history", Link: []bundleLink{link("self", cursor)}}
		if next != "" {
			b.Link = append(b.Link, link("next", next))
		}
		for _, v := range versions {
			b.Entry = append(b.Entry, historyEntry(base, v))
		}
		writeJSON(w, http.StatusOK, fhirContentType, b)
	})
}

// parseHistoryParams reads type-level history's parameters: _since (an instant: a date and time with
// seconds and a zone), _count (1..; capped at searchMaxCount), _before (a page cursor from a next
// link), each at most once; others are ignored, or 400 under Prefer: handling=strict.
func parseHistoryParams(params url.Values, strict bool) (since time.Time, count int, cursor string, issues []fhirIssue) {
	bad := func(format string, args ...any) {
		issues = append(issues, fhirError("value", "", fmt.Sprintf(format, args...)))
	}
	count = searchDefaultCount
	for _, key := range slices.Sorted(maps.Keys(params)) {
		vals := params[key]
		switch {
		case key == "_format":
			continue
		case key != "_since" && key != "_count" && key != "_before":
			if strict {
				bad("%s: unknown parameter (Prefer: handling=strict); history takes _since, _count and _before.", key)
			}
			continue
		case len(vals) != 1:
			bad("%s: the parameter may appear only once.", key)
			continue
		}
		v := vals[0]
		switch key {
		case "_since":
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil || fhirDatePrecision(v, true) != 4 {
				bad("_since: %q is not an instant; give a date and time with seconds and a zone, such as 2026-12-01T09:00:00Z.", v)
			}
			since = t
		case "_count":
			n, err := strconv.Atoi(v)
			if !fhirDigits(v) || n < 1 && err == nil {
				bad("_count: %q is not a whole number of at least 1.", v)
			}
			count = min(max(n, 1), searchMaxCount) // all digits and too large for int means large: capped
			if err != nil {
				count = searchMaxCount
			}
		case "_before":
			cursor = v
		}
	}
	return since, count, cursor, issues
}

// handlePatientSearch serves GET /Patient and POST /Patient/_search (form-encoded parameters,
// merged with any in the URL): a searchset Bundle of the current matches, paged by _count and
// _offset, with absolute self, next and previous links; _elements subsets the Patients.
func handlePatientSearch(log *slog.Logger, store patientStore, baseURL string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		params := r.URL.Query()
		if r.Method == http.MethodPost {
			body, ok := readBody(w, r, nil, maxFHIRBody, "application/x-www-form-urlencoded")
			if !ok {
				return
			}
			form, err := url.ParseQuery(string(body))
			if err != nil {
				writeOutcome(w, http.StatusBadRequest, fhirError("invalid", "", "The form body is not valid application/x-www-form-urlencoded."))
				return
			}
			for k, vs := range form {
				params[k] = append(params[k], vs...)
			}
		}
		q, self, issues := parsePatientSearch(params, preference(r.Header.Values("Prefer"), "handling") == "strict")
		if len(issues) > 0 {
			writeOutcome(w, http.StatusBadRequest, issues...)
			return
		}
		q.Base = requestBase(r, baseURL)
		total, page, err := store.Search(r.Context(), newSearchCriteria(q, self))
		for i := 0; err == nil && q.Elements != nil && i < len(page); i++ {
			page[i].Body, err = subsetElements(page[i].Body, q.Elements)
		}
		if err != nil {
			writeStoreError(w, r, log, err, fhirIssue{}, fhirIssue{})
			return
		}
		writeJSON(w, http.StatusOK, fhirContentType, searchBundle(q.Base, q, self, total, page))
	})
}

// searchBundle is the searchset Bundle of one page of results: self, next and previous links that
// repeat the parameters actually used, and the page's Patients. _count=0 and _summary=count give the
// total and the self link only (R4 search.html#count: "no entries, and no prev/next/last links");
// _total=none leaves the total out otherwise.
func searchBundle(base string, q patientQuery, self url.Values, total int, page []patientVersion) bundle {
	link := func(rel string, offset int) bundleLink {
		v := maps.Clone(self)
		v.Del("_offset")
		if offset > 0 {
			v.Set("_offset", strconv.Itoa(offset))
		}
		return bundleLink{rel, base + "/Patient?" + v.Encode()}
	}
	b := bundle{ResourceType: "Bundle", Type: "searchset", Link: []bundleLink{link("self", q.Offset)}}
	if !q.NoTotal || q.Count == 0 {
		b.Total = &total
	}
	if q.Count > 0 && q.Offset+q.Count < total {
		b.Link = append(b.Link, link("next", q.Offset+q.Count))
	}
	if q.Count > 0 && q.Offset > 0 {
		b.Link = append(b.Link, link("previous", max(0, q.Offset-q.Count)))
	}
	for _, v := range page {
		b.Entry = append(b.Entry, bundleEntry{FullURL: base + "/Patient/" + v.ID, Resource: v.Body, Search: &bundleSearch{"match"}})
	}
	return b
}

// pathID returns the {id} path value, answering 400 itself when it is not a valid FHIR id.
func pathID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !validFHIRID(id) {
		writeOutcome(w, http.StatusBadRequest, fhirError("value", "Patient.id", "The id in the URL must be 1 to 64 characters from A-Z, a-z, 0-9, '-' and '.'."))
		return "", false
	}
	return id, true
}

// writeVersion writes a stored version with its ETag and Last-Modified, honouring
// Prefer: return=minimal|representation|OperationOutcome (default representation).
func writeVersion(w http.ResponseWriter, r *http.Request, status int, v patientVersion) {
	h := w.Header()
	setETag(w, v)
	h.Set("Last-Modified", v.LastUpdated.UTC().Format(http.TimeFormat))
	if status != http.StatusOK || r.Method != http.MethodGet {
		switch preference(r.Header.Values("Prefer"), "return") {
		case "minimal":
			w.WriteHeader(status)
			return
		case "OperationOutcome":
			writeOutcome(w, status, fhirIssue{Severity: "information", Code: "informational",
				Diagnostics: fmt.Sprintf("Patient/%s version %s stored.", v.ID, v.VersionID)})
			return
		}
	}
	h.Set("Content-Type", fhirContentType)
	w.WriteHeader(status)
	w.Write(v.Body)
}

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

// bundle and its parts are a FHIR R4 Bundle (history and searchset), with the elements this server
// fills in.
type (
	bundle struct {
		ResourceType string        `json:"resourceType"`
		Type         string        `json:"type"`
		Total        *int          `json:"total,omitempty"` // nil under _total=none, and in a type-level history (counting would read every record)
		Link         []bundleLink  `json:"link"`
		Entry        []bundleEntry `json:"entry,omitempty"`
	}
	bundleLink struct {
		Relation string `json:"relation"`
		URL      string `json:"url"`
	}
	bundleEntry struct {
		FullURL  string          `json:"fullUrl"`
		Resource json.RawMessage `json:"resource,omitempty"`
		Search   *bundleSearch   `json:"search,omitempty"`
		Request  *bundleRequest  `json:"request,omitempty"`
		Response *bundleResponse `json:"response,omitempty"`
	}
	bundleSearch struct {
		Mode string `json:"mode"`
	}
	bundleRequest struct {
		Method string `json:"method"`
		URL    string `json:"url"`
	}
	bundleResponse struct {
		Status       string `json:"status"`
		Etag         string `json:"etag"`
		LastModified string `json:"lastModified"`
	}
)

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

// handleMetadata serves the CapabilityStatement: what this server really supports, and nothing else.
func handleMetadata(capability []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", fhirContentType)
		w.Write(capability)
	})
}

// capabilityStatement declares exactly the interactions this server supports (R4 capabilitystatement.html).
// With an upstream FHIR server as the store, string matching is the upstream's, and says so.
func capabilityStatement(upstream bool) []byte {
	description := "Clinical API: FHIR R4 Patient server (JSON only)"
	if upstream {
		description = "Clinical API: FHIR R4 Patient server (JSON only), in front of an upstream FHIR server"
	}
	b, err := json.Marshal(map[string]any{
		"resourceType": "CapabilityStatement",
		"status":       "active",
		"date":         "2026-11-26",
		"publisher":    "Clinical API maintainers",
		"kind":         "instance",
		"software":     map[string]any{"name": "clinicalapi", "version": "0.1.0"},
		"implementation": map[string]any{
			"description": description,
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
					map[string]any{"code": "update"},
					map[string]any{"code": "patch", "documentation": "JSON Patch (application/json-patch+json): an RFC 6902 array, or PDS's {\"patches\": [...]}"},
					map[string]any{"code": "delete"}, map[string]any{"code": "history-instance"}, map[string]any{"code": "history-type"}, map[string]any{"code": "search-type"},
				},
				"operation": []any{map[string]any{"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
					"documentation": "POST /Patient/$validate: a Patient, or a Parameters with resource, mode (create or update) and profile (base Patient only)"}},
				"searchParam":       capabilitySearchParams(upstream),
				"versioning":        "versioned",
				"readHistory":       true,
				"updateCreate":      true,
				"conditionalCreate": true,
				"conditionalUpdate": true,
				"conditionalDelete": "single",
			}},
		}},
	})
	if err != nil {
		panic(err) // a literal that always encodes
	}
	return b
}

// capabilitySearchParams declares every search parameter with its R4 type and definition, and what
// this server supports of it.
func capabilitySearchParams(upstream bool) []any {
	var out []any
	for _, p := range patientSearchParams {
		if p.typ == "" { // the result parameters are not SearchParameters
			continue
		}
		doc := p.doc
		if upstream { // validated here, matched there
			doc = "Matched by the upstream FHIR server, as it matches (with the embedded store: " + doc + ")"
		}
		out = append(out, map[string]any{"name": p.name, "type": p.typ, "definition": p.definition, "documentation": doc})
	}
	return out
}
