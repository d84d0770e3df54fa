package main

// Tests of the FHIR Patient REST interactions through the whole handler (newServer), with tokens from
// the test issuer; validation details are in patient_test.go, search semantics in search_test.go.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const minimalPatient = `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9991234578"}],"name":[{"family":"Smith","given":["Jo"]}],"gender":"female","birthDate":"1974-12-25"}`

// withNHSNumber is body with its NHS number 9991234578 replaced by the n-th test number, for tests
// that create several Patients in one store (a live Patient's NHS number is unique).
func withNHSNumber(body string, n int) string {
	return strings.Replace(body, "9991234578", testNHSNumber(n), 1)
}

// firstVersion is the version id a new Patient must get: "1" from the journal; from an upstream FHIR
// server whatever valid id it gave (got), which the test then checks is used consistently.
func firstVersion(got any) string {
	if s, ok := got.(string); ok && testingUpstream() && validFHIRID(s) {
		return s
	}
	return "1"
}

// goneStatus is the status of a read of a deleted Patient: 410, and 404 from the Medplum upstream the
// tests use, after which a deleted Patient is unknown (README, upstream deviations).
func goneStatus() int {
	if testingUpstream() {
		return http.StatusNotFound
	}
	return http.StatusGone
}

func postPatient(body string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/Patient", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("X-Request-ID", testRequestID)
	return req
}

func TestPatientCreateAndRead(t *testing.T) {
	h := newTestServer(t)
	before := time.Now().UTC().Truncate(time.Second)
	res := do(t, h, postPatient(`{"resourceType":"Patient","id":"not a valid id!","meta":{"versionId":"7","lastUpdated":"2001-01-01T00:00:00Z","security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}],"tag":[{"code":"t"}],"profile":["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]},"gender":"male","birthDate":"1974"}`))
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("create: status %d: %s", res.StatusCode, readAll(t, res.Body))
	}
	created := decodeAnyBody(t, res)
	id, _ := created["id"].(string)
	if !validFHIRID(id) || id == "not a valid id!" {
		t.Fatalf("server id %q", id)
	}
	meta := created["meta"].(map[string]any)
	lastUpdated, err := time.Parse(time.RFC3339Nano, meta["lastUpdated"].(string))
	vid := firstVersion(meta["versionId"])
	if err != nil || lastUpdated.Before(before) || meta["versionId"] != vid {
		t.Errorf("meta %v: want versionId %s and a fresh lastUpdated", meta, vid)
	}
	wantHeaders := map[string]string{
		"Location":      "/Patient/" + id + "/_history/" + vid,
		"ETag":          `W/"` + vid + `"`,
		"Last-Modified": lastUpdated.Format(http.TimeFormat),
		"Content-Type":  fhirContentType,
	}
	for k, want := range wantHeaders {
		if got := res.Header.Get(k); got != want {
			t.Errorf("create: %s %q, want %q", k, got, want)
		}
	}
	wantBody := map[string]any{"resourceType": "Patient", "gender": "male", "birthDate": "1974", "meta": map[string]any{
		"security": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}},
		"tag":      []any{map[string]any{"code": "t"}},
		"profile":  []any{"https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"},
	}}
	if diff := cmp.Diff(wantBody, withoutServerMeta(created)); diff != "" {
		t.Errorf("created body (-want +got):\n%s", diff)
	}

	read := do(t, h, httptest.NewRequest("GET", "/Patient/"+id, nil))
	if read.StatusCode != 200 || read.Header.Get("ETag") != `W/"`+vid+`"` || read.Header.Get("Last-Modified") != wantHeaders["Last-Modified"] {
		t.Errorf("read: %d %v", read.StatusCode, read.Header)
	}
	if diff := cmp.Diff(wantBody, withoutServerMeta(decodeAnyBody(t, read))); diff != "" {
		t.Errorf("read body (-want +got):\n%s", diff)
	}
}

func decodeAnyBody(t testing.TB, res *http.Response) map[string]any {
	t.Helper()
	d := json.NewDecoder(res.Body)
	d.UseNumber()
	var v map[string]any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode %d body: %v", res.StatusCode, err)
	}
	return v
}

func TestPatientPrefer(t *testing.T) {
	h := newTestServer(t)
	for _, tt := range []struct {
		prefer   string
		wantBody string // "", "Patient" or "OperationOutcome"
	}{
		{"", "Patient"}, {"return=representation", "Patient"}, {"return=minimal", ""},
		{"return=OperationOutcome", "OperationOutcome"}, {`handling=strict, return="minimal"`, ""},
	} {
		req := postPatient(withNHSNumber(minimalPatient, len(tt.prefer)))
		if tt.prefer != "" {
			req.Header.Set("Prefer", tt.prefer)
		}
		res := do(t, h, req)
		body := readAll(t, res.Body)
		vid := firstVersion(strings.Trim(strings.TrimPrefix(res.Header.Get("ETag"), "W/"), `"`))
		if res.StatusCode != 201 || !strings.HasSuffix(res.Header.Get("Location"), "/_history/"+vid) || res.Header.Get("ETag") != `W/"`+vid+`"` {
			t.Errorf("Prefer %q: %d %v", tt.prefer, res.StatusCode, res.Header)
		}
		var got struct{ ResourceType string }
		json.Unmarshal(body, &got)
		if got.ResourceType != tt.wantBody || (tt.wantBody == "") != (len(body) == 0) {
			t.Errorf("Prefer %q: body %s, want %q", tt.prefer, body, tt.wantBody)
		}
	}
}

// TestPatientExamplesRoundTrip: every official example is accepted over HTTP and read back equal to
// what was sent, apart from the server-owned id and meta fields.
func TestPatientExamplesRoundTrip(t *testing.T) {
	h := newTestServer(t)
	examples := patientExamples(t, "valid")
	for name, b := range examples {
		res := do(t, h, postPatient(string(b)))
		if res.StatusCode != http.StatusCreated {
			t.Errorf("%s: status %d: %s", name, res.StatusCode, readAll(t, res.Body))
			continue
		}
		id := strings.Split(res.Header.Get("Location"), "/")[2]
		read := do(t, h, httptest.NewRequest("GET", "/Patient/"+id, nil))
		var sent map[string]any
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		if err := d.Decode(&sent); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(withoutServerMeta(sent), withoutServerMeta(decodeAnyBody(t, read))); diff != "" {
			t.Errorf("%s: read back differs (-sent +read):\n%s", name, diff)
		}
	}
	if len(examples) != 37 {
		t.Errorf("%d examples, want the 37 official ones", len(examples))
	}
}

func TestPatientErrors(t *testing.T) {
	h := newTestServer(t)
	big := `{"resourceType":"Patient","name":[{"text":"` + strings.Repeat("a", maxFHIRBody) + `"}]}`
	tests := []struct {
		name       string
		method     string
		path       string
		ctype      string
		accept     string
		body       string
		wantStatus int
		wantIssue  fhirIssue
	}{
		{"wrong content type", "POST", "/Patient", "text/plain", "", minimalPatient, 415,
			fhirIssue{"error", "not-supported", "Content-Type must be application/fhir+json or application/json (charset utf-8).", nil, nil}},
		{"xml content type", "POST", "/Patient", "application/fhir+xml", "", minimalPatient, 415,
			fhirIssue{"error", "not-supported", "Content-Type must be application/fhir+json or application/json (charset utf-8).", nil, nil}},
		{"accept xml", "POST", "/Patient", "application/fhir+json", "application/fhir+xml", minimalPatient, 406,
			fhirIssue{"error", "not-supported", "Accept must allow application/fhir+json or application/json: this server speaks FHIR JSON only.", nil, nil}},
		{"format xml", "GET", "/metadata?_format=xml", "", "", "", 406,
			fhirIssue{"error", "not-supported", "_format must be json, application/json or application/fhir+json: this server speaks FHIR JSON only.", nil, nil}},
		{"too large", "POST", "/Patient", "application/fhir+json", "", big, 413,
			fhirIssue{"error", "too-long", "The request body is larger than 1048576 bytes.", nil, nil}},
		{"not json", "POST", "/Patient", "application/json", "", `{"resourceType":`, 400,
			fhirIssue{Severity: "error", Code: "structure"}},
		{"bad birthDate", "POST", "/Patient", "application/fhir+json", "", `{"resourceType":"Patient","birthDate":"1974-02-30"}`, 400,
			fhirIssue{Severity: "error", Code: "value", Expression: []string{"Patient.birthDate"}}},
		{"bad NHS number", "POST", "/Patient", "application/fhir+json", "", `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9991234579"}]}`, 422,
			fhirIssue{Severity: "error", Code: "business-rule", Expression: []string{"Patient.identifier[0].value"}}},
		{"unknown id", "GET", "/Patient/no-such-id", "", "", "", 404,
			fhirIssue{"error", "not-found", `There is no Patient with id "no-such-id".`, []string{"Patient.id"}, nil}},
		{"invalid id", "GET", "/Patient/bad_id", "", "", "", 400,
			fhirIssue{"error", "value", "The id in the URL must be 1 to 64 characters from A-Z, a-z, 0-9, '-' and '.'.", []string{"Patient.id"}, nil}},
		{"id too long", "GET", "/Patient/" + strings.Repeat("a", 65), "", "", "", 400,
			fhirIssue{"error", "value", "The id in the URL must be 1 to 64 characters from A-Z, a-z, 0-9, '-' and '.'.", []string{"Patient.id"}, nil}},
		{"unknown sub-path", "GET", "/Patient/abc/everything", "", "", "", 404,
			fhirIssue{"error", "not-found", "There is no resource at this path.", nil, nil}},
		{"patch without content type", "PATCH", "/Patient/abc", "", "", "", 415,
			fhirIssue{"error", "not-supported", "The request has no Content-Type; Content-Type must be application/json-patch+json (charset utf-8).", nil, nil}},
		{"post on instance", "POST", "/Patient/abc", "", "", "", 405,
			fhirIssue{"error", "not-supported", "This path does not support POST; it supports DELETE, GET, HEAD, PATCH, PUT.", nil, nil}},
		{"delete on type without criteria", "DELETE", "/Patient", "", "", "", 400,
			fhirIssue{"error", "invalid", "DELETE /Patient: a conditional interaction needs search parameters, such as identifier=https://fhir.nhs.uk/Id/nhs-number|9434765919.", nil, nil}},
		{"patch on type", "PATCH", "/Patient", "", "", "", 405,
			fhirIssue{"error", "not-supported", "This path does not support PATCH; it supports DELETE, GET, HEAD, POST, PUT.", nil, nil}},
		{"metadata post", "POST", "/metadata", "", "", "", 405,
			fhirIssue{"error", "not-supported", "This path does not support POST; it supports GET, HEAD.", nil, nil}},
		{"bad request id on FHIR route", "GET", "/metadata", "", "", "", 400,
			fhirIssue{"error", "invalid", "X-Request-ID must be 1 to 128 characters from A-Z, a-z, 0-9, '.', '_', ':' and '-', sent once.", nil, nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			if tt.accept != "" {
				req.Header.Set("Accept", tt.accept)
			}
			if tt.name == "bad request id on FHIR route" {
				req.Header.Set("X-Request-ID", "bad id")
			}
			res := do(t, h, req)
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if ct := res.Header.Get("Content-Type"); ct != fhirContentType {
				t.Errorf("Content-Type %q", ct)
			}
			got := decodeBody[operationOutcome](t, res)
			if got.ResourceType != "OperationOutcome" || len(got.Issue) == 0 {
				t.Fatalf("not an OperationOutcome: %+v", got)
			}
			issue := got.Issue[0]
			if tt.wantIssue.Diagnostics == "" { // validator messages are tested in patient_test.go
				issue.Diagnostics = ""
			}
			if diff := cmp.Diff(tt.wantIssue, issue); diff != "" {
				t.Errorf("issue (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPatientBabyNHSNumberOverHTTP(t *testing.T) {
	h := newTestServer(t)
	for name, b := range patientExamples(t, "edge") {
		res := do(t, h, postPatient(string(b)))
		got := decodeBody[operationOutcome](t, res)
		if res.StatusCode != 422 || len(got.Issue) != 1 || got.Issue[0].Code != "business-rule" {
			t.Errorf("%s: %d %+v, want one 422 business-rule issue", name, res.StatusCode, got)
		}
	}
}

func TestAcceptHeader(t *testing.T) {
	tests := []struct {
		accept []string
		want   bool
	}{
		{nil, true},
		{[]string{"application/fhir+json"}, true},
		{[]string{"application/json"}, true},
		{[]string{"application/fhir+json;q=0.9, application/fhir+xml"}, true},
		{[]string{"*/*"}, true},
		{[]string{"application/*"}, true},
		{[]string{"text/html, application/xhtml+xml, */*;q=0.8"}, true},
		{[]string{"application/fhir+xml"}, false},
		{[]string{"application/json;q=0"}, false},
		{[]string{"text/html"}, false},
	}
	for _, tt := range tests {
		if got := acceptsFHIRJSON(tt.accept); got != tt.want {
			t.Errorf("acceptsFHIRJSON(%q) = %v, want %v", tt.accept, got, tt.want)
		}
	}
}

func TestMetadata(t *testing.T) {
	h := newTestServer(t)
	res := do(t, h, httptest.NewRequest("GET", "/metadata", nil))
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != fhirContentType {
		t.Fatalf("GET /metadata: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	var cs struct {
		FHIRVersion string   `json:"fhirVersion"`
		Kind        string   `json:"kind"`
		Format      []string `json:"format"`
		Rest        []struct {
			Mode     string
			Resource []struct {
				Type        string
				Interaction []struct{ Code string }
				Operation   []struct{ Name, Definition string }
				Versioning  string
			}
		}
	}
	if err := json.NewDecoder(res.Body).Decode(&cs); err != nil {
		t.Fatal(err)
	}
	var interactions []string
	for _, i := range cs.Rest[0].Resource[0].Interaction {
		interactions = append(interactions, i.Code)
	}
	// The interactions declared must be exactly the Patient routes served.
	if diff := cmp.Diff([]string{"create", "read", "vread", "update", "patch", "delete", "history-instance", "history-type", "search-type"}, interactions); diff != "" {
		t.Errorf("interactions (-want +got):\n%s", diff)
	}
	wantOps := []struct{ Name, Definition string }{{"validate", "http://hl7.org/fhir/OperationDefinition/Resource-validate"}}
	if diff := cmp.Diff(wantOps, cs.Rest[0].Resource[0].Operation); diff != "" {
		t.Errorf("operations (-want +got):\n%s", diff)
	}
	if cs.FHIRVersion != "4.0.1" || cs.Kind != "instance" || cs.Rest[0].Mode != "server" || cs.Rest[0].Resource[0].Type != "Patient" {
		t.Errorf("CapabilityStatement %+v", cs)
	}
}

// FuzzPatientCreate: whatever the body, POST /Patient never answers 5xx, and what it accepts reads back.
func FuzzPatientCreate(f *testing.F) {
	f.Add(minimalPatient)
	f.Add(`{"resourceType":"Patient","name":[{"given":["A",null],"_given":[null,{"extension":[{"url":"u","valueString":"x"}]}]}]}`)
	f.Add(`{"resourceType":"Patient","deceasedBoolean":true,"deceasedDateTime":"2020"}`)
	f.Add(`{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}}`)
	f.Add(`[]`)
	h := newTestServer(f)
	f.Fuzz(func(t *testing.T, body string) {
		res := do(t, h, postPatient(body))
		if res.StatusCode >= 500 {
			t.Fatalf("status %d for %q", res.StatusCode, body)
		}
		if res.StatusCode == http.StatusCreated {
			loc := res.Header.Get("Location")
			id := strings.Split(loc, "/")[2]
			if r := do(t, h, httptest.NewRequest("GET", "/Patient/"+id, nil)); r.StatusCode != 200 {
				t.Fatalf("created %s but read gave %d", loc, r.StatusCode)
			}
		}
	})
}

// fhirReq builds a FHIR request with an optional JSON body and headers given as name, value pairs.
func fhirReq(method, path, body string, headers ...string) *http.Request {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	return req
}

// TestPatientLifecycle walks one Patient through update, conditional update, history, vread, delete
// and resurrection, checking each status, ETag and body.
func TestPatientLifecycle(t *testing.T) {
	journalOnly(t, "version ids 1, 2, ... in URLs and If-Match; a deletion recorded, 410 after it, and earlier versions and history still readable (Medplum: 404, nothing readable); a resurrection recorded as a create. TestUpstreamLifecycle walks the same interactions with the upstream's version ids")
	h := newTestServer(t)
	res := do(t, h, postPatient(minimalPatient))
	id := decodeAnyBody(t, res)["id"].(string)
	withID := func(extra string) string {
		return `{"resourceType":"Patient","id":"` + id + `","gender":"female"` + extra + `}`
	}
	type step struct {
		name       string
		req        *http.Request
		wantStatus int
		wantETag   string
		check      func(t *testing.T, res *http.Response)
	}
	versionOf := func(want string) func(t *testing.T, res *http.Response) {
		return func(t *testing.T, res *http.Response) {
			meta := decodeAnyBody(t, res)["meta"].(map[string]any)
			if meta["versionId"] != want {
				t.Errorf("meta.versionId %v, want %s", meta["versionId"], want)
			}
		}
	}
	issue := func(code string, expr ...string) func(t *testing.T, res *http.Response) {
		return func(t *testing.T, res *http.Response) {
			oo := decodeBody[operationOutcome](t, res)
			if len(oo.Issue) != 1 || oo.Issue[0].Code != code || !cmp.Equal(oo.Issue[0].Expression, expr, cmpopts.EquateEmpty()) {
				t.Errorf("issues %+v, want one %s at %v", oo.Issue, code, expr)
			}
		}
	}
	historyOf := func(wantVersions ...string) func(t *testing.T, res *http.Response) {
		return func(t *testing.T, res *http.Response) {
			var b bundle
			if err := json.NewDecoder(res.Body).Decode(&b); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range b.Entry {
				got = append(got, e.Request.Method+" "+e.Response.Status+" "+e.Response.Etag)
				if e.FullURL != "http://example.com/Patient/"+id {
					t.Errorf("fullUrl %q", e.FullURL)
				}
			}
			if diff := cmp.Diff(wantVersions, got); diff != "" || b.Type != "history" || bundleTotal(b) != len(wantVersions) {
				t.Errorf("history %s total %d (-want +got):\n%s", b.Type, bundleTotal(b), diff)
			}
		}
	}
	steps := []step{
		{"update", fhirReq("PUT", "/Patient/"+id, withID(""), "If-Match", `W/"1"`), 200, `W/"2"`, versionOf("2")},
		{"stale If-Match", fhirReq("PUT", "/Patient/"+id, withID(""), "If-Match", `W/"1"`), 412, "", issue("conflict")},
		{"strong If-Match form", fhirReq("PUT", "/Patient/"+id, withID(""), "If-Match", `"2"`), 200, `W/"3"`, versionOf("3")},
		{"malformed If-Match", fhirReq("PUT", "/Patient/"+id, withID(""), "If-Match", `W/"x"`), 400, "", issue("value")},
		{"If-Match zero", fhirReq("PUT", "/Patient/"+id, withID(""), "If-Match", `W/"0"`), 400, "", issue("value")},
		{"body id differs", fhirReq("PUT", "/Patient/"+id, `{"resourceType":"Patient","id":"other"}`), 400, "", issue("invalid", "Patient.id")},
		{"body id missing", fhirReq("PUT", "/Patient/"+id, `{"resourceType":"Patient"}`), 400, "", issue("invalid", "Patient.id")},
		{"invalid body", fhirReq("PUT", "/Patient/"+id, withID(`,"birthDate":"1974-13"`)), 400, "", issue("value", "Patient.birthDate")},
		{"invalid URL id before existence", fhirReq("PUT", "/Patient/a_b", `{"resourceType":"Patient","id":"a_b"}`), 400, "", issue("value", "Patient.id")},
		{"unconditional update", fhirReq("PUT", "/Patient/"+id, withID(`,"birthDate":"1974"`)), 200, `W/"4"`, versionOf("4")},
		{"history", fhirReq("GET", "/Patient/"+id+"/_history", ""), 200, "", historyOf(`PUT 200 OK W/"4"`, `PUT 200 OK W/"3"`, `PUT 200 OK W/"2"`, `POST 201 Created W/"1"`)},
		{"vread 1", fhirReq("GET", "/Patient/"+id+"/_history/1", ""), 200, `W/"1"`, versionOf("1")},
		{"vread missing", fhirReq("GET", "/Patient/"+id+"/_history/9", ""), 404, "", issue("not-found", "Patient.meta.versionId")},
		{"vread 0", fhirReq("GET", "/Patient/"+id+"/_history/0", ""), 400, "", issue("value", "Patient.meta.versionId")},
		{"vread 01", fhirReq("GET", "/Patient/"+id+"/_history/01", ""), 400, "", issue("value", "Patient.meta.versionId")},
		{"vread word", fhirReq("GET", "/Patient/"+id+"/_history/abc", ""), 400, "", issue("value", "Patient.meta.versionId")},
		{"delete", fhirReq("DELETE", "/Patient/"+id, ""), 204, `W/"5"`, nil},
		{"read deleted", fhirReq("GET", "/Patient/"+id, ""), 410, "", issue("deleted")},
		{"vread before delete", fhirReq("GET", "/Patient/"+id+"/_history/4", ""), 200, `W/"4"`, versionOf("4")},
		{"vread the deletion", fhirReq("GET", "/Patient/"+id+"/_history/5", ""), 410, `W/"5"`, issue("deleted")},
		{"delete again", fhirReq("DELETE", "/Patient/"+id, ""), 204, "", nil},
		{"history keeps all", fhirReq("GET", "/Patient/"+id+"/_history", ""), 200, "", historyOf(`DELETE 204 No Content W/"5"`, `PUT 200 OK W/"4"`, `PUT 200 OK W/"3"`, `PUT 200 OK W/"2"`, `POST 201 Created W/"1"`)},
		{"stale If-Match on deleted", fhirReq("PUT", "/Patient/"+id, withID(""), "If-Match", `W/"4"`), 412, "", issue("conflict")},
		{"resurrect", fhirReq("PUT", "/Patient/"+id, withID("")), 201, `W/"6"`, versionOf("6")},
		{"history records each interaction", fhirReq("GET", "/Patient/"+id+"/_history", ""), 200, "", historyOf(`PUT 201 Created W/"6"`,
			`DELETE 204 No Content W/"5"`, `PUT 200 OK W/"4"`, `PUT 200 OK W/"3"`, `PUT 200 OK W/"2"`, `POST 201 Created W/"1"`)},
		{"update-as-create", fhirReq("PUT", "/Patient/client-chosen-1", `{"resourceType":"Patient","id":"client-chosen-1"}`), 201, `W/"1"`, versionOf("1")},
		{"If-Match on unknown id", fhirReq("PUT", "/Patient/client-chosen-2", `{"resourceType":"Patient","id":"client-chosen-2"}`, "If-Match", `W/"1"`), 412, "", issue("conflict")},
		{"delete unknown", fhirReq("DELETE", "/Patient/never-was", ""), 204, "", nil},
		{"history unknown", fhirReq("GET", "/Patient/never-was/_history", ""), 404, "", issue("not-found", "Patient.id")},
		{"history invalid id", fhirReq("GET", "/Patient/a_b/_history", ""), 400, "", issue("value", "Patient.id")},
		{"delete invalid id", fhirReq("DELETE", "/Patient/a_b", ""), 400, "", issue("value", "Patient.id")},
	}
	for _, st := range steps {
		st.req.Host = "example.com"
		res := do(t, h, st.req)
		if res.StatusCode != st.wantStatus {
			t.Errorf("%s: status %d, want %d: %s", st.name, res.StatusCode, st.wantStatus, readAll(t, res.Body))
			continue
		}
		if got := res.Header.Get("ETag"); got != st.wantETag {
			t.Errorf("%s: ETag %q, want %q", st.name, got, st.wantETag)
		}
		if st.wantStatus == 201 && res.Header.Get("Location") != fmt.Sprintf("/Patient/%s/_history/%s", strings.Split(st.req.URL.Path, "/")[2], strings.Trim(st.wantETag, `W/"`)) {
			t.Errorf("%s: Location %q", st.name, res.Header.Get("Location"))
		}
		if st.check != nil {
			t.Run(st.name, func(t *testing.T) { st.check(t, res) })
		}
	}
}

// TestFHIRMethodNotAllowed checks the 405s on the FHIR paths: the right Allow on every path
// (/Patient/_search included, which GET /Patient/{id} would otherwise take), and the same answer
// with or without a token, since the route is not there to be authorised.
func TestFHIRMethodNotAllowed(t *testing.T) {
	h := newTestServer(t)
	token := localTestIssuer(t).token(t, allScopes)
	tests := []struct {
		method, path string
		allow        string // "" means 404
	}{
		{"GET", "/Patient/_search", "POST"},
		{"HEAD", "/Patient/_search", "POST"},
		{"PUT", "/Patient/_search", "POST"},
		{"DELETE", "/Patient/_search", "POST"},
		{"PATCH", "/Patient/_search", "POST"},
		{"OPTIONS", "/Patient/_search", "POST"},
		{"POST", "/Patient/p1", "DELETE, GET, HEAD, PATCH, PUT"},
		{"GET", "/Patient/$validate", "POST"},
		{"PUT", "/Patient/$validate", "POST"},
		{"PATCH", "/Patient/$validate", "POST"},
		{"DELETE", "/Patient/%24validate", "POST"},
		{"PATCH", "/Patient", "DELETE, GET, HEAD, POST, PUT"},
		{"POST", "/metadata", "GET, HEAD"},
		{"POST", "/Patient/p1/_history", "GET, HEAD"},
		{"PUT", "/Patient/p1/_history/1", "GET, HEAD"},
		{"GET", "/Patient/p1/_history/1/x", ""},
		{"GET", "/Patient/p1/x", ""},
	}
	for _, tt := range tests {
		for _, auth := range []string{"", "Bearer " + token} {
			req := httptest.NewRequest(tt.method, tt.path, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			res := do(t, h, req)
			want, wantIssue := http.StatusMethodNotAllowed, fhirError("not-supported", "", fmt.Sprintf("This path does not support %s; it supports %s.", tt.method, tt.allow))
			if tt.allow == "" {
				want, wantIssue = http.StatusNotFound, fhirError("not-found", "", "There is no resource at this path.")
			}
			if res.StatusCode != want || res.Header.Get("Allow") != tt.allow {
				t.Errorf("%s %s (token %v): %d Allow %q, want %d Allow %q", tt.method, tt.path, auth != "", res.StatusCode, res.Header.Get("Allow"), want, tt.allow)
				continue
			}
			if tt.method == "HEAD" {
				continue
			}
			got := decodeBody[operationOutcome](t, res)
			if diff := cmp.Diff(operationOutcome{"OperationOutcome", []fhirIssue{wantIssue}}, got); diff != "" {
				t.Errorf("%s %s (-want +got):\n%s", tt.method, tt.path, diff)
			}
		}
	}
}

func TestPatientAuth(t *testing.T) {
	h := newTestServer(t)
	li := localTestIssuer(t)
	created := decodeAnyBody(t, do(t, h, postPatient(minimalPatient)))
	id, vid := created["id"].(string), created["meta"].(map[string]any)["versionId"].(string)
	bearer := func(tok string) string { return "Bearer " + tok }
	tests := []struct {
		name       string
		method     string
		path       string
		auth       string // the Authorization header; "" sends none
		wantStatus int
		wantCode   string // NHSD-API-ErrorOrWarningCode, for 401/403
		wantIssue  string
		wantChall  string
	}{
		{"no token", "GET", "/Patient/" + id, "", 401, "ACCESS_TOKEN_MISSING", "login", `Bearer`},
		{"basic scheme", "GET", "/Patient/" + id, "Basic dXNlcjpwYXNz", 401, "ACCESS_TOKEN_MISSING", "login", `Bearer`},
		{"garbage token", "GET", "/Patient/" + id, "Bearer not.a.jwt", 401, "ACCESS_TOKEN_INVALID", "unknown", `Bearer error="invalid_token"`},
		{"expired", "GET", "/Patient/" + id, bearer(li.token(t, allScopes, "exp", time.Now().Add(-2*time.Minute).Unix())), 401, "ACCESS_TOKEN_EXPIRED", "expired", `Bearer error="invalid_token"`},
		{"wrong audience", "GET", "/Patient/" + id, bearer(li.token(t, allScopes, "aud", "someone-else")), 401, "ACCESS_TOKEN_INVALID", "unknown", `Bearer error="invalid_token"`},
		{"wrong issuer", "GET", "/Patient/" + id, bearer(li.token(t, allScopes, "iss", "https://evil.example")), 401, "ACCESS_TOKEN_INVALID", "unknown", `Bearer error="invalid_token"`},
		{"read scope cannot create", "POST", "/Patient", bearer(li.token(t, "user/Patient.read")), 403, "ACCESS_DENIED", "forbidden", `Bearer error="insufficient_scope"`},
		{"read scope cannot delete", "DELETE", "/Patient/" + id, bearer(li.token(t, "system/Patient.read")), 403, "ACCESS_DENIED", "forbidden", `Bearer error="insufficient_scope"`},
		{"write scope cannot read", "GET", "/Patient/" + id, bearer(li.token(t, "user/Patient.write")), 403, "ACCESS_DENIED", "forbidden", `Bearer error="insufficient_scope"`},
		{"no scope cannot read history", "GET", "/Patient/" + id + "/_history", bearer(li.token(t, "openid profile")), 403, "ACCESS_DENIED", "forbidden", `Bearer error="insufficient_scope"`},
		{"user read", "GET", "/Patient/" + id, bearer(li.token(t, "user/Patient.read")), 200, "", "", ""},
		{"system read", "GET", "/Patient/" + id + "/_history/" + vid, bearer(li.token(t, "system/Patient.read")), 200, "", "", ""},
		{"wildcard create", "POST", "/Patient", bearer(li.token(t, "user/Patient.*")), 201, "", "", ""},
		{"system write update", "PUT", "/Patient/" + id, bearer(li.token(t, "system/Patient.write")), 200, "", "", ""},
		{"read scope cannot patch", "PATCH", "/Patient/" + id, bearer(li.token(t, "user/Patient.read")), 403, "ACCESS_DENIED", "forbidden", `Bearer error="insufficient_scope"`},
		{"no token cannot patch", "PATCH", "/Patient/" + id, "", 401, "ACCESS_TOKEN_MISSING", "login", `Bearer`},
		{"write patch", "PATCH", "/Patient/" + id, bearer(li.token(t, "user/Patient.write")), 200, "", "", ""},
		{"no token cannot validate", "POST", "/Patient/$validate", "", 401, "ACCESS_TOKEN_MISSING", "login", `Bearer`},
		{"write scope cannot validate", "POST", "/Patient/$validate", bearer(li.token(t, "user/Patient.write")), 403, "ACCESS_DENIED", "forbidden", `Bearer error="insufficient_scope"`},
		{"read scope validates", "POST", "/Patient/$validate", bearer(li.token(t, "user/Patient.read")), 200, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := ""
			switch tt.method {
			case "POST":
				body = withNHSNumber(minimalPatient, len(tt.name))
			case "PUT":
				body = `{"resourceType":"Patient","id":"` + id + `"}`
			case "PATCH":
				body = `[{"op":"add","path":"/active","value":true}]`
			}
			req := fhirReq(tt.method, tt.path, body)
			if tt.method == "PATCH" {
				req.Header.Set("Content-Type", jsonPatchType)
			}
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			res := doRaw(t, h, req)
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tt.wantStatus, readAll(t, res.Body))
			}
			if got := res.Header.Get("WWW-Authenticate"); got != tt.wantChall {
				t.Errorf("WWW-Authenticate %q, want %q", got, tt.wantChall)
			}
			if tt.wantCode == "" {
				return
			}
			oo := decodeBody[operationOutcome](t, res)
			want := []fhirIssue{{Severity: "error", Code: tt.wantIssue, Details: &fhirCodeableConcept{Coding: []fhirCoding{{System: nhsdErrorSystem, Code: tt.wantCode}}}}}
			if diff := cmp.Diff(want, oo.Issue, cmpopts.IgnoreFields(fhirIssue{}, "Diagnostics")); diff != "" {
				t.Errorf("issues (-want +got):\n%s", diff)
			}
			if tok, ok := strings.CutPrefix(tt.auth, "Bearer "); ok && strings.Contains(oo.Issue[0].Diagnostics, tok) {
				t.Errorf("diagnostics echo the token: %s", oo.Issue[0].Diagnostics)
			}
		})
	}
}

// TestAuthNotConfigured: without OIDC settings the Patient routes refuse everything and say which
// settings are missing; the open routes stay open.
func TestAuthNotConfigured(t *testing.T) {
	h := newServer(slog.New(slog.DiscardHandler), config{}, testMetrics(), func() bool { return true }, openapiJSON, testDocs(t), testStore(t), nil, time.Now)
	for _, req := range []*http.Request{postPatient(minimalPatient), fhirReq("GET", "/Patient/abc", "")} {
		req.Header.Set("Authorization", "Bearer "+localTestIssuer(t).token(t, allScopes))
		res := doRaw(t, h, req)
		oo := decodeBody[operationOutcome](t, res)
		if res.StatusCode != 401 || len(oo.Issue) != 1 || !strings.Contains(oo.Issue[0].Diagnostics, "OIDC_ISSUER") || !strings.Contains(oo.Issue[0].Diagnostics, "OIDC_AUDIENCE") {
			t.Errorf("%s %s: %d %+v, want 401 naming OIDC_ISSUER and OIDC_AUDIENCE", req.Method, req.URL.Path, res.StatusCode, oo)
		}
	}
	for _, req := range []*http.Request{postEGFR(`{"sex":"male","serum_creatinine_umol_l":88,"age":50}`), fhirReq("GET", "/metadata", ""), httptest.NewRequest("GET", "/livez", nil)} {
		req.Header.Set("Authorization", "Bearer garbage")
		if res := doRaw(t, h, req); res.StatusCode != 200 {
			t.Errorf("%s %s with a garbage token: %d, want 200 (open routes ignore Authorization)", req.Method, req.URL.Path, res.StatusCode)
		}
	}
}

func TestPatientSearchHTTP(t *testing.T) {
	store := testStore(t)
	cfg := testConfig(t)
	cfg.baseURL = "https://fhir.example.nhs.uk/R4"
	h := newServer(slog.New(slog.DiscardHandler), cfg, testMetrics(), func() bool { return true }, openapiJSON, testDocs(t), store, testVerifier(t), time.Now)
	names := []string{"Núñez", "Nunes", "NUNN", "Smith", "Smyth", "Zoë"}
	ids := map[string]string{}
	for i, n := range names {
		res := do(t, h, postPatient(fmt.Sprintf(`{"resourceType":"Patient","identifier":[{"system":"urn:test","value":"v%d"}],"name":[{"family":%q}],"gender":"female","birthDate":"197%d"}`, i, n, i)))
		ids[n] = decodeAnyBody(t, res)["id"].(string)
	}
	search := func(t *testing.T, req *http.Request) (bundle, *http.Response) {
		t.Helper()
		res := do(t, h, req)
		if res.StatusCode != 200 {
			t.Fatalf("%s %s: %d %s", req.Method, req.URL, res.StatusCode, readAll(t, res.Body))
		}
		var b bundle
		if err := json.NewDecoder(res.Body).Decode(&b); err != nil {
			t.Fatal(err)
		}
		return b, res
	}
	families := func(b bundle) []string {
		var got []string
		for _, e := range b.Entry {
			var p struct{ Name []struct{ Family string } }
			json.Unmarshal(e.Resource, &p)
			got = append(got, p.Name[0].Family)
			if !strings.HasPrefix(e.FullURL, "https://fhir.example.nhs.uk/R4/Patient/") || e.Search == nil || e.Search.Mode != "match" {
				t.Errorf("entry %s %+v", e.FullURL, e.Search)
			}
		}
		slices.Sort(got)
		return got
	}
	for _, tt := range []struct {
		query   string
		want    []string
		matches bool // how strings match: the journal's (prefix, accents folded), an upstream's its own
	}{
		{"family=nun", []string{"NUNN", "Nunes", "Núñez"}, true},
		{"family=nunez", []string{"Núñez"}, true},
		{"family:exact=Núñez", []string{"Núñez"}, false},
		{"family:exact=nunez", nil, true},
		{"family:contains=yth", []string{"Smyth"}, false},
		{"name=zoe", []string{"Zoë"}, true},
		{"family=sm,zo", []string{"Smith", "Smyth", "Zoë"}, false},
		{"family=sm&birthdate=1974", []string{"Smyth"}, false},
		{"identifier=urn:test|v3", []string{"Smith"}, false},
		{"identifier=v0", []string{"Núñez"}, false},
		{"birthdate=ge1973&birthdate=lt1975", []string{"Smith", "Smyth"}, false},
		{"gender=male", nil, false},
		{"_id=" + ids["Zoë"], []string{"Zoë"}, false},
		{"unknown=1&family=smi", []string{"Smith"}, false},
	} {
		if tt.matches && testingUpstream() {
			continue // journal only: Medplum matches strings by "contains" and does not fold accents
		}
		b, _ := search(t, fhirReq("GET", "/Patient?"+tt.query, ""))
		if diff := cmp.Diff(tt.want, families(b)); diff != "" || b.Type != "searchset" || bundleTotal(b) != len(tt.want) {
			t.Errorf("%s: %s total %d (-want +got):\n%s", tt.query, b.Type, bundleTotal(b), diff)
		}
	}

	// Paging: follow next links through every page, then back with previous.
	b, _ := search(t, fhirReq("GET", "/Patient?_count=2&unknown=x", ""))
	if b.Link[0].URL != "https://fhir.example.nhs.uk/R4/Patient?_count=2" {
		t.Errorf("self link %q: want unknown parameters left out", b.Link[0].URL)
	}
	var seen []string
	for pages := 0; ; pages++ {
		seen = append(seen, families(b)...)
		next := ""
		for _, l := range b.Link {
			if l.Relation == "next" {
				next = l.URL
			}
		}
		if next == "" {
			if pages != 2 || bundleTotal(b) != 6 {
				t.Errorf("%d pages, total %d; want 3 pages of 6", pages+1, bundleTotal(b))
			}
			break
		}
		b, _ = search(t, fhirReq("GET", strings.TrimPrefix(next, "https://fhir.example.nhs.uk/R4"), ""))
		if !slices.ContainsFunc(b.Link, func(l bundleLink) bool { return l.Relation == "previous" }) {
			t.Errorf("page %d has no previous link", pages+2)
		}
	}
	slices.Sort(seen)
	sortedNames := slices.Clone(names)
	slices.Sort(sortedNames)
	if diff := cmp.Diff(sortedNames, seen); diff != "" {
		t.Errorf("paging did not visit every patient once (-want +got):\n%s", diff)
	}

	// POST /Patient/_search with a form body, merged with URL parameters.
	req := fhirReq("POST", "/Patient/_search?gender=female", "")
	req.Body = io.NopCloser(strings.NewReader("family=sm&family=smy"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if b, _ := search(t, req); !cmp.Equal(families(b), []string{"Smyth"}) {
		t.Errorf("POST _search: %v", families(b))
	}

	// A deleted patient is no longer found.
	do(t, h, fhirReq("DELETE", "/Patient/"+ids["Smyth"], ""))
	if b, _ := search(t, fhirReq("GET", "/Patient?family=sm", "")); !cmp.Equal(families(b), []string{"Smith"}) {
		t.Errorf("after delete: %v", families(b))
	}

	for _, tt := range []struct {
		name   string
		req    *http.Request
		status int
	}{
		{"malformed date", fhirReq("GET", "/Patient?birthdate=1974-13", ""), 400},
		{"negative count", fhirReq("GET", "/Patient?_count=-1", ""), 400},
		{"count not a number", fhirReq("GET", "/Patient?_count=abc", ""), 400},
		{"unknown modifier", fhirReq("GET", "/Patient?family:fuzzy=x", ""), 400},
		{"strict unknown parameter", fhirReq("GET", "/Patient?colour=blue", "", "Prefer", "handling=strict"), 400},
		{"POST without a form", fhirReq("POST", "/Patient/_search", `{"family":"x"}`), 415},
		{"GET _search", fhirReq("GET", "/Patient/_search", ""), 405},
		{"write-only token", fhirReq("GET", "/Patient", "", "Authorization", "Bearer "+localTestIssuer(t).token(t, "user/Patient.write")), 403},
	} {
		res := do(t, h, tt.req)
		if res.StatusCode != tt.status {
			t.Errorf("%s: %d, want %d: %s", tt.name, res.StatusCode, tt.status, readAll(t, res.Body))
		}
	}
}

// TestPatientSearchIntegrator covers the parameters and result controls integrators use through the
// whole handler: the searches by their matches, and _summary, _count=0, _total, _sort with its next
// links, _elements and the errors as whole bodies.
func TestPatientSearchIntegrator(t *testing.T) {
	journalOnly(t, "whole Bundles with the journal's version ids and this server's matching (telecom, postcode folding, :missing, _sort), which upstream are the upstream's")
	const base = "https://fhir.example.nhs.uk/R4"
	cfg := testConfig(t)
	cfg.baseURL = base
	h := newServer(slog.New(slog.DiscardHandler), cfg, testMetrics(), func() bool { return true }, openapiJSON, testDocs(t), testStore(t), testVerifier(t), time.Now)
	created := map[string]map[string]any{} // family -> the created Patient
	for _, body := range []string{
		`{"resourceType":"Patient","active":true,"name":[{"family":"Ann","given":["Zoë"]}],"birthDate":"1970-01-01",
			"telecom":[{"system":"phone","value":"07700 900123"},{"system":"email","value":"ann@example.org"}],
			"address":[{"line":["1 High St"],"city":"Leeds","postalCode":"LS1 6AE"}],
			"generalPractitioner":[{"type":"Organization","identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"Y12345"}}]}`,
		`{"resourceType":"Patient","active":false,"name":[{"family":"Bea","given":["Amy"]}],"birthDate":"1980",
			"deceasedDateTime":"2024-03-01T12:00:00Z","generalPractitioner":[{"reference":"` + base + `/Organization/Y12345"}],
			"managingOrganization":{"reference":"Organization/trust1"},"address":[{"city":"Bristol","postalCode":"BS1 4DJ"}]}`,
		`{"resourceType":"Patient","name":[{"family":"Cy"}]}`,
	} {
		p := decodeAnyBody(t, do(t, h, postPatient(body)))
		created[p["name"].([]any)[0].(map[string]any)["family"].(string)] = p
	}
	get := func(t *testing.T, query string) (int, map[string]any) {
		t.Helper()
		res := do(t, h, fhirReq("GET", "/Patient?"+query, ""))
		return res.StatusCode, decodeAnyBody(t, res)
	}
	families := func(b map[string]any) []string {
		var out []string
		for _, e := range asSlice(b["entry"]) {
			out = append(out, e.(map[string]any)["resource"].(map[string]any)["name"].([]any)[0].(map[string]any)["family"].(string))
		}
		return out
	}
	for _, tt := range []struct {
		query string
		want  []string // in the order served
	}{
		{"address-postalcode=ls16ae", []string{"Ann"}},
		{"address-postalcode=LS1%206AE", []string{"Ann"}},
		{"address=bristol", []string{"Bea"}},
		{"phone=07700900123", []string{"Ann"}},
		{"email=ANN@example.org", []string{"Ann"}},
		{"telecom:missing=true&_sort=family", []string{"Bea", "Cy"}},
		{"death-date=2024-03", []string{"Bea"}},
		{"death-date:missing=true&_sort=family", []string{"Ann", "Cy"}},
		{"active=true", []string{"Ann"}},
		{"active:not=true&_sort=family", []string{"Bea", "Cy"}},
		{"general-practitioner:identifier=https://fhir.nhs.uk/Id/ods-organization-code%7CY12345", []string{"Ann"}},
		{"general-practitioner=Organization/Y12345", []string{"Bea"}},
		{"general-practitioner=" + url.QueryEscape(base+"/Organization/Y12345"), []string{"Bea"}},
		{"organization=trust1", []string{"Bea"}},
		{"_lastUpdated=gt2000&_sort=-family", []string{"Cy", "Bea", "Ann"}},
		{"_lastUpdated=lt2000", nil},
		{"_sort=-birthdate", []string{"Bea", "Ann", "Cy"}},
		{"_sort=birthdate", []string{"Ann", "Bea", "Cy"}},
	} {
		status, b := get(t, tt.query)
		if diff := cmp.Diff(tt.want, families(b)); status != 200 || diff != "" {
			t.Errorf("GET /Patient?%s: %d (-want +got):\n%s", tt.query, status, diff)
		}
	}

	entry := func(family string, resource map[string]any) map[string]any {
		return map[string]any{"fullUrl": base + "/Patient/" + created[family]["id"].(string), "resource": resource, "search": map[string]any{"mode": "match"}}
	}
	link := func(rel, query string) map[string]any {
		return map[string]any{"relation": rel, "url": base + "/Patient?" + query}
	}
	bundleOf := func(total any, links []any, entries ...any) map[string]any {
		b := map[string]any{"resourceType": "Bundle", "type": "searchset", "link": links}
		if total != nil {
			b["total"] = total
		}
		if entries != nil {
			b["entry"] = entries
		}
		return b
	}
	ann := created["Ann"]
	annMeta := ann["meta"].(map[string]any)
	subsetted := map[string]any{"resourceType": "Patient", "id": ann["id"], "active": true, "name": ann["name"],
		"meta": map[string]any{"versionId": "1", "lastUpdated": annMeta["lastUpdated"], "tag": []any{map[string]any{
			"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED", "display": "subsetted"}}}}
	for _, tt := range []struct {
		name, query string
		want        map[string]any
	}{
		{"summaryCount", "_summary=count&_sort=family", bundleOf(json.Number("3"), []any{link("self", "_count=0&_sort=family&_summary=count")})},
		{"summaryCountTotalNone", "_summary=count&_total=none", bundleOf(json.Number("3"), []any{link("self", "_count=0&_summary=count&_total=none")})},
		{"countZeroNoPaging", "_count=0&_offset=1&family=a", bundleOf(json.Number("1"), []any{link("self", "_count=0&_offset=1&family=a")})},
		{"totalNoneSorted", "_total=none&_count=1&_sort=family", bundleOf(nil,
			[]any{link("self", "_count=1&_sort=family&_total=none"), link("next", "_count=1&_offset=1&_sort=family&_total=none")},
			entry("Ann", ann))},
		{"sortedLastPage", "_count=1&_offset=2&_sort=-family&_total=accurate", bundleOf(json.Number("3"),
			[]any{link("self", "_count=1&_offset=2&_sort=-family&_total=accurate"), link("previous", "_count=1&_offset=1&_sort=-family&_total=accurate")},
			entry("Ann", ann))},
		{"elements", "_elements=name&phone=07700900123", bundleOf(json.Number("1"), []any{link("self", "_count=20&_elements=name&phone=07700900123")},
			entry("Ann", subsetted))},
		{"elementsKeepBirthDate", "_elements=birthDate,telecom&family=cy", bundleOf(json.Number("1"), []any{link("self", "_count=20&_elements=birthDate%2Ctelecom&family=cy")},
			entry("Cy", map[string]any{"resourceType": "Patient", "id": created["Cy"]["id"], "meta": map[string]any{"versionId": "1",
				"lastUpdated": created["Cy"]["meta"].(map[string]any)["lastUpdated"], "tag": subsetted["meta"].(map[string]any)["tag"]}}))},
	} {
		status, got := get(t, tt.query)
		if diff := cmp.Diff(tt.want, got); status != 200 || diff != "" {
			t.Errorf("%s: GET /Patient?%s: %d (-want +got):\n%s", tt.name, tt.query, status, diff)
		}
	}

	// Following the next links of a sorted search visits every Patient once, in order.
	var seen []string
	for next := "/Patient?_sort=family&_count=1"; next != ""; {
		res := do(t, h, fhirReq("GET", next, ""))
		b := decodeAnyBody(t, res)
		seen, next = append(seen, families(b)...), ""
		for _, l := range asSlice(b["link"]) {
			if l := l.(map[string]any); l["relation"] == "next" {
				next = strings.TrimPrefix(l["url"].(string), base)
			}
		}
	}
	if diff := cmp.Diff([]string{"Ann", "Bea", "Cy"}, seen); diff != "" {
		t.Errorf("sorted paging (-want +got):\n%s", diff)
	}

	// Bad values: every problem at once, each naming its parameter.
	status, got := get(t, "_sort=name&phone=a%7Cb&_elements=deceasedBoolean&active=yes&general-practitioner=Patient/1&_summary=text")
	want := map[string]any{"resourceType": "OperationOutcome", "issue": []any{
		map[string]any{"severity": "error", "code": "value", "diagnostics": `_elements: "deceasedBoolean" is not a top-level element of Patient; list elements such as identifier,name,birthDate (a choice by its base name: deceased, multipleBirth).`},
		map[string]any{"severity": "error", "code": "not-supported", "diagnostics": `_sort: "name" is not a sort this server supports; use family, given, birthdate, _lastUpdated, _id, each optionally after - for descending order.`},
		map[string]any{"severity": "error", "code": "not-supported", "diagnostics": `_summary: "text" is not supported; use count (the total only) or _elements to choose the elements returned.`},
		map[string]any{"severity": "error", "code": "value", "diagnostics": `active: "yes" is not true or false.`},
		map[string]any{"severity": "error", "code": "value", "diagnostics": `general-practitioner: "Patient/1" names a Patient; general-practitioner refers to Organization, Practitioner, PractitionerRole.`},
		map[string]any{"severity": "error", "code": "value", "diagnostics": `phone: "a|b" has a "|": a ContactPoint is searched by its value alone; escape a literal | as \|.`},
	}}
	if diff := cmp.Diff(want, got); status != 400 || diff != "" {
		t.Errorf("bad values: %d (-want +got):\n%s", status, diff)
	}
}

// bundleTotal is b's total, -1 when it has none.
func bundleTotal(b bundle) int {
	if b.Total == nil {
		return -1
	}
	return *b.Total
}

// FuzzPatientSearch: whatever the query string, GET /Patient answers 200 or 400, never 5xx.
func FuzzPatientSearch(f *testing.F) {
	for _, s := range []string{"family=smi", "birthdate=ge1974-02&birthdate=lt1975", "identifier=a%7Cb,%7Cc", "_count=0&_offset=5",
		"name:contains=%C3%A9", "gender=male,female", "_id=x&_id=y", "family:fuzzy=x", "birthdate=1974-02-30", "%zz", "identifier=a%5C%7Cb",
		"address=leeds&address-postalcode=LS1%206AE", "address-postalcode:contains=6a", "phone=07700%20900123&email:not=a@b", "telecom:missing=true",
		"death-date=ge2020-01-01T10:00%2B01:00", "_lastUpdated=gt2026-01-01T00:00:00.5Z", "active:not=true", "gender:missing=false",
		"general-practitioner:identifier=https://fhir.nhs.uk/Id/ods-organization-code%7CY12345", "general-practitioner=Organization/Y1,urn:uuid:x",
		"organization:Organization=o1", "general-practitioner.name=x", "_sort=-family,given,_lastUpdated&_count=2&_offset=1", "_sort=-birthdate",
		"_summary=count", "_total=none&_count=1", "_elements=name,deceased", "_elements=deceasedBoolean", "_summary=text"} {
		f.Add(s)
	}
	h := newTestServer(f)
	do(f, h, postPatient(minimalPatient))
	do(f, h, postPatient(`{"resourceType":"Patient","active":true,"name":[{"family":"Zoë"}],"deceasedDateTime":"2020-01-01T10:00:00Z",
		"telecom":[{"system":"phone","value":"07700 900123"}],"address":[{"city":"Leeds","postalCode":"LS1 6AE"}],
		"generalPractitioner":[{"reference":"Organization/Y1","identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"Y12345"}}]}`))
	f.Fuzz(func(t *testing.T, query string) {
		req := fhirReq("GET", "/Patient", "")
		req.URL.RawQuery = query
		res := do(t, h, req)
		if res.StatusCode != 200 && res.StatusCode != 400 {
			t.Fatalf("GET /Patient?%s: %d", query, res.StatusCode)
		}
	})
}

// patchReq is a PATCH of Patient id with a JSON Patch body and headers as name, value pairs.
func patchReq(id, body string, headers ...string) *http.Request {
	req := fhirReq("PATCH", "/Patient/"+id, body, headers...)
	req.Header.Set("Content-Type", jsonPatchType)
	return req
}

// TestPatientPatch walks one Patient through JSON Patches in both forms, checking statuses, ETags,
// whole OperationOutcomes, and that a failed patch changes nothing.
func TestPatientPatch(t *testing.T) {
	journalOnly(t, "version ids 1, 2, ... in If-Match and ETags, 410 for a deleted Patient (Medplum: 404), history recording PATCH (an upstream records the PUT the patch is sent as). TestUpstreamLifecycle patches through the upstream")
	h := newTestServer(t)
	id := decodeAnyBody(t, do(t, h, postPatient(minimalPatient)))["id"].(string)
	gone := decodeAnyBody(t, do(t, h, postPatient(strings.Replace(minimalPatient, "9991234578", "9434765919", 1))))["id"].(string)
	do(t, h, fhirReq("DELETE", "/Patient/"+gone, ""))
	oo := func(issues ...fhirIssue) *operationOutcome { return &operationOutcome{"OperationOutcome", issues} }
	processing := func(msg string) fhirIssue { return fhirError("processing", "", msg) }
	tests := []struct {
		name       string
		req        *http.Request
		wantStatus int
		wantETag   string
		wantOO     *operationOutcome // nil: a Patient (or nothing) is expected
	}{
		{"rfc6902", patchReq(id, `[{"op":"test","path":"/gender","value":"female"},{"op":"replace","path":"/birthDate","value":"1974-12-26"},{"op":"add","path":"/name/0/given/-","value":"Ann"}]`), 200, `W/"2"`, nil},
		{"pds form with If-Match", patchReq(id, `{"patches":[{"op":"replace","path":"/name/0/family","value":"Jones"}]}`, "If-Match", `W/"2"`), 200, `W/"3"`, nil},
		{"stale If-Match", patchReq(id, `[{"op":"remove","path":"/birthDate"}]`, "If-Match", `W/"2"`), 412, "",
			oo(fhirError("conflict", "", fmt.Sprintf(`If-Match W/"2" is not the current version of Patient %q; read it again and retry.`, id)))},
		{"malformed If-Match", patchReq(id, `[{"op":"remove","path":"/birthDate"}]`, "If-Match", `3`), 400, "",
			oo(fhirError("value", "", `If-Match must be one version ETag such as W/"3".`))},
		{"failed test", patchReq(id, `[{"op":"replace","path":"/gender","value":"male"},{"op":"test","path":"/birthDate","value":"1974-12-25"}]`), 422, "",
			oo(processing("patch operation 1 (/birthDate): test failed: the value there is not the one the test gives."))},
		{"missing path", patchReq(id, `[{"op":"replace","path":"/gender","value":"male"},{"op":"remove","path":"/address/0"}]`), 422, "",
			oo(processing("patch operation 1 (/address/0): /address does not exist."))},
		{"malformed patch", patchReq(id, `[{"op":"replace","path":"/gender","value":"male"},{"op":"move","path":"/a"}]`), 400, "",
			oo(fhirError("required", "", `patch operation 1 (/a): "from" is missing; it must be a JSON Pointer such as /name/0/family.`))},
		{"not json", patchReq(id, `[{"op":`), 400, "",
			oo(fhirError("structure", "", "The body is not valid JSON: it ends before the JSON Patch is complete."))},
		{"server owns meta", patchReq(id, `[{"op":"replace","path":"/meta/versionId","value":"99"}]`), 200, `W/"4"`, nil},
		{"minimal", patchReq(id, `[{"op":"add","path":"/active","value":true}]`, "Prefer", "return=minimal"), 200, `W/"5"`, nil},
		{"json content type", fhirReq("PATCH", "/Patient/"+id, `[]`), 415, "",
			oo(fhirError("not-supported", "", "Content-Type must be application/json-patch+json (charset utf-8)."))},
		{"unknown id", patchReq("no-such-id", `[{"op":"add","path":"/active","value":true}]`), 404, "",
			oo(fhirError("not-found", "Patient.id", `There is no Patient with id "no-such-id".`))},
		{"deleted", patchReq(gone, `[{"op":"add","path":"/active","value":true}]`), 410, "",
			oo(fhirError("deleted", "", fmt.Sprintf("Patient %q was deleted (version 2); earlier versions remain readable in its history.", gone)))},
		{"invalid URL id", patchReq("a_b", `[]`), 400, "",
			oo(fhirError("value", "Patient.id", "The id in the URL must be 1 to 64 characters from A-Z, a-z, 0-9, '-' and '.'."))},
	}
	for _, tt := range tests {
		res := do(t, h, tt.req)
		body := readAll(t, res.Body)
		if res.StatusCode != tt.wantStatus || res.Header.Get("ETag") != tt.wantETag {
			t.Errorf("%s: %d ETag %q, want %d %q: %s", tt.name, res.StatusCode, res.Header.Get("ETag"), tt.wantStatus, tt.wantETag, body)
			continue
		}
		want := ""
		if tt.wantStatus == 415 {
			want = jsonPatchType
		}
		if res.Header.Get("Accept-Patch") != want {
			t.Errorf("%s: Accept-Patch %q, want %q", tt.name, res.Header.Get("Accept-Patch"), want)
		}
		if tt.wantOO != nil {
			var got operationOutcome
			json.Unmarshal(body, &got)
			if diff := cmp.Diff(*tt.wantOO, got); diff != "" {
				t.Errorf("%s (-want +got):\n%s", tt.name, diff)
			}
		}
	}

	// What the patches left: every successful one applied whole, the failed ones not at all.
	got := decodeAnyBody(t, do(t, h, fhirReq("GET", "/Patient/"+id, "")))
	if meta := got["meta"].(map[string]any); meta["versionId"] != "5" {
		t.Errorf("versionId %v, want 5", meta["versionId"])
	}
	want := map[string]any{"resourceType": "Patient", "active": true, "gender": "female", "birthDate": "1974-12-26",
		"identifier": []any{map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9991234578"}},
		"name":       []any{map[string]any{"family": "Jones", "given": []any{"Jo", "Ann"}}}}
	if diff := cmp.Diff(want, withoutServerMeta(got)); diff != "" {
		t.Errorf("patched Patient (-want +got):\n%s", diff)
	}
	// History and search see the patched versions; history names the interaction that made each.
	var hist bundle
	json.NewDecoder(do(t, h, fhirReq("GET", "/Patient/"+id+"/_history", "")).Body).Decode(&hist)
	if len(hist.Entry) != 5 || hist.Entry[0].Request.Method != "PATCH" || hist.Entry[0].Response.Etag != `W/"5"` {
		t.Errorf("history %+v", hist.Entry)
	}
	for family, n := range map[string]int{"jones": 1, "smith": 0} {
		var b bundle
		json.NewDecoder(do(t, h, fhirReq("GET", "/Patient?_id="+id+"&family="+family, "")).Body).Decode(&b)
		if bundleTotal(b) != n {
			t.Errorf("family=%s: total %d, want %d", family, bundleTotal(b), n)
		}
	}
}

// TestPatientPatchValidatesLikePut: a patched Patient is refused exactly as a PUT of it would be, with
// the same status and issues.
func TestPatientPatchValidatesLikePut(t *testing.T) {
	h := newTestServer(t)
	id := decodeAnyBody(t, do(t, h, postPatient(minimalPatient)))["id"].(string)
	current := decodeAnyBody(t, do(t, h, fhirReq("GET", "/Patient/"+id, "")))
	first := current["meta"].(map[string]any)["versionId"]
	tests := []struct {
		name, patch string
		status      int
	}{
		{"bad date", `[{"op":"replace","path":"/birthDate","value":"1974-13-01"}]`, 400},
		{"null", `[{"op":"add","path":"/gender","value":null}]`, 400},
		{"unknown element", `[{"op":"add","path":"/nickname","value":"Jo"}]`, 400},
		{"id changed", `[{"op":"replace","path":"/id","value":"other"}]`, 400},
		{"id removed", `[{"op":"remove","path":"/id"}]`, 400},
		{"resourceType changed", `[{"op":"replace","path":"/resourceType","value":"Person"}]`, 400},
		{"not an object", `[{"op":"replace","path":"","value":[]}]`, 400},
		{"bad NHS number", `[{"op":"replace","path":"/identifier/0/value","value":"9991234579"}]`, 422},
		{"second NHS number", `[{"op":"add","path":"/identifier/-","value":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}}]`, 422},
		{"same NHS number twice", `[{"op":"copy","from":"/identifier/0","path":"/identifier/-"}]`, 422},
	}
	for _, tt := range tests {
		// The PUT body: the same patch applied to the current version, outside the server.
		ops, issues := parseJSONPatch([]byte(tt.patch))
		if issues != nil {
			t.Fatal(issues)
		}
		doc, _, _ := readJSON(mustJSON(t, current), fhirMaxDepth)
		out, perr := applyJSONPatch(doc, ops)
		if perr != nil {
			t.Fatal(perr)
		}
		put := do(t, h, fhirReq("PUT", "/Patient/"+id, string(appendJSONNode(nil, out))))
		patch := do(t, h, patchReq(id, tt.patch))
		if put.StatusCode != tt.status || patch.StatusCode != tt.status {
			t.Errorf("%s: PUT %d, PATCH %d, want %d", tt.name, put.StatusCode, patch.StatusCode, tt.status)
		}
		if diff := cmp.Diff(decodeBody[operationOutcome](t, put), decodeBody[operationOutcome](t, patch)); diff != "" {
			t.Errorf("%s: PATCH's outcome differs from PUT's (-put +patch):\n%s", tt.name, diff)
		}
	}
	if v := decodeAnyBody(t, do(t, h, fhirReq("GET", "/Patient/"+id, "")))["meta"].(map[string]any)["versionId"]; v != first {
		t.Errorf("after refused patches the Patient is version %v, want %v", v, first)
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// racingStore is a store in which another writer gets in first: before each of the next races
// Updates it stores a concurrent change (an extra given name), so the Update it was asked for finds
// a newer version.
type racingStore struct {
	patientStore
	races int
}

func (s *racingStore) Update(ctx context.Context, id, ifMatch, method string, build buildFunc) (patientVersion, bool, error) {
	if s.races > 0 {
		s.races--
		cur, err := s.patientStore.Read(ctx, id)
		if err != nil {
			return patientVersion{}, false, err
		}
		doc, _, _ := readJSON(cur.Body, fhirMaxDepth)
		ops, _ := parseJSONPatch([]byte(fmt.Sprintf(`[{"op":"add","path":"/name/0/given/-","value":"Concurrent%d"}]`, s.races)))
		doc, _ = applyJSONPatch(doc, ops)
		p, issues, _ := parseUpdate(appendJSONNode(nil, doc), id)
		if issues != nil {
			return patientVersion{}, false, fmt.Errorf("racing write: %v", issues)
		}
		if _, _, err := s.patientStore.Update(ctx, id, "", http.MethodPut, p.build); err != nil {
			return patientVersion{}, false, err
		}
	}
	return s.patientStore.Update(ctx, id, ifMatch, method, build)
}

// TestPatientPatchLosesNoUpdate: a PATCH without If-Match that loses a race starts again from the
// newer version, so the other write is kept; with If-Match it is a 412; a patch that keeps losing
// gives up with a 409 and stores nothing of its own.
func TestPatientPatchLosesNoUpdate(t *testing.T) {
	store := &racingStore{patientStore: testStore(t)}
	h := newServer(slog.New(slog.DiscardHandler), testConfig(t), testMetrics(), func() bool { return true }, openapiJSON, testDocs(t), store, testVerifier(t), time.Now)
	id := decodeAnyBody(t, do(t, h, postPatient(minimalPatient)))["id"].(string)
	given := func() []any {
		return decodeAnyBody(t, do(t, h, fhirReq("GET", "/Patient/"+id, "")))["name"].([]any)[0].(map[string]any)["given"].([]any)
	}
	appendGiven := `[{"op":"add","path":"/name/0/given/-","value":"Mine"}]`

	store.races = 2 // two writes get in first; the third attempt succeeds
	res := do(t, h, patchReq(id, appendGiven))
	wantETag := `W/"4"`
	if testingUpstream() { // the upstream's version id: the current one
		wantETag = do(t, h, fhirReq("GET", "/Patient/"+id, "")).Header.Get("ETag")
	}
	if res.StatusCode != 200 || res.Header.Get("ETag") != wantETag {
		t.Fatalf("racing patch: %d %s, want 200 %s", res.StatusCode, res.Header.Get("ETag"), wantETag)
	}
	if diff := cmp.Diff([]any{"Jo", "Concurrent1", "Concurrent0", "Mine"}, given()); diff != "" {
		t.Errorf("given after 2 lost races (-want +got):\n%s", diff)
	}

	store.races = 1
	res = do(t, h, patchReq(id, appendGiven, "If-Match", res.Header.Get("ETag")))
	if res.StatusCode != 412 {
		t.Errorf("conditional patch that lost a race: %d, want 412", res.StatusCode)
	}

	store.races = maxPatchAttempts
	res = do(t, h, patchReq(id, appendGiven))
	want := operationOutcome{"OperationOutcome", []fhirIssue{fhirError("conflict", "", fmt.Sprintf(
		"Patient %q changed 5 times while this patch was being applied; send it again (or with If-Match).", id))}}
	if diff := cmp.Diff(want, decodeBody[operationOutcome](t, res)); diff != "" || res.StatusCode != 409 {
		t.Errorf("patch that always loses: %d (-want +got):\n%s", res.StatusCode, diff)
	}
	if g := given(); len(g) != 4+1+maxPatchAttempts || slices.Contains(g[4:], any("Mine")) {
		t.Errorf("given %v: want the %d concurrent names and no second Mine", g, 1+maxPatchAttempts)
	}
}

// TestPatientPatchConcurrent: patches without If-Match racing on one Patient through the real store;
// every patch that answers 200 is in the final version, and nothing else is.
func TestPatientPatchConcurrent(t *testing.T) {
	h := newTestServer(t)
	id := decodeAnyBody(t, do(t, h, postPatient(minimalPatient)))["id"].(string)
	const n = 8
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res := do(t, h, patchReq(id, fmt.Sprintf(`[{"op":"add","path":"/name/0/given/-","value":"P%d"}]`, i)))
			statuses[i] = res.StatusCode
		})
	}
	wg.Wait()
	given := decodeAnyBody(t, do(t, h, fhirReq("GET", "/Patient/"+id, "")))["name"].([]any)[0].(map[string]any)["given"].([]any)
	ok := 0
	for i, st := range statuses {
		if st != 200 && st != 409 {
			t.Errorf("patch %d: status %d", i, st)
		}
		if in := slices.Contains(given, any(fmt.Sprintf("P%d", i))); in != (st == 200) {
			t.Errorf("patch %d answered %d but its name is in the result: %v", i, st, in)
		}
		if st == 200 {
			ok++
		}
	}
	if ok == 0 || len(given) != 1+ok {
		t.Errorf("%d patches succeeded; given %v", ok, given)
	}
}

// FuzzPatientPatch: whatever the patch, PATCH never answers 5xx, and what it stores is a valid
// Patient (the stored body passes the validator as a PUT of it would).
func FuzzPatientPatch(f *testing.F) {
	f.Add(`[{"op":"add","path":"/name/0/given/-","value":"Ann"}]`)
	f.Add(`{"patches":[{"op":"test","path":"/gender","value":"female"},{"op":"remove","path":"/identifier"}]}`)
	f.Add(`[{"op":"move","from":"/name/0","path":"/contact/0/name"}]`)
	f.Add(`[{"op":"copy","from":"","path":"/contained/-"}]`)
	f.Add(`[{"op":"replace","path":"","value":{"resourceType":"Patient"}}]`)
	h := newTestServer(f)
	id := decodeAnyBody(f, do(f, h, postPatient(minimalPatient)))["id"].(string)
	f.Fuzz(func(t *testing.T, patch string) {
		res := do(t, h, patchReq(id, patch))
		if res.StatusCode >= 500 {
			t.Fatalf("status %d for %q", res.StatusCode, patch)
		}
		if res.StatusCode != 200 {
			return
		}
		body := readAll(t, res.Body)
		if _, issues, status := parseUpdate(body, id); status != 0 {
			t.Fatalf("PATCH %q stored a Patient the validator refuses: %s %v", patch, body, issues)
		}
	})
}

// TestNHSNumberUniqueAcrossPatients: a live Patient's NHS number belongs to no other live Patient,
// whatever the write (create, update, patch); the 409 names the holder only to a caller who may read
// Patients; a deletion releases the number; and 32 concurrent creates of one number make one Patient.
func TestNHSNumberUniqueAcrossPatients(t *testing.T) {
	h := newTestServer(t)
	li := localTestIssuer(t)
	rw, writeOnly := "Bearer "+li.token(t, allScopes), "Bearer "+li.token(t, "user/Patient.write")
	const nhs = "9434765919"
	body := func(id string) string {
		idPart := ""
		if id != "" {
			idPart = `"id":"` + id + `",`
		}
		return `{"resourceType":"Patient",` + idPart + `"identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"` + nhs + `"}],"gender":"female"}`
	}
	a := decodeAnyBody(t, do(t, h, fhirReq("POST", "/Patient", body(""), "Authorization", rw)))["id"].(string)
	b := decodeAnyBody(t, do(t, h, fhirReq("POST", "/Patient", `{"resourceType":"Patient","gender":"male"}`, "Authorization", rw)))["id"].(string)
	dup := func(holder string) operationOutcome {
		msg := "The NHS number " + nhs + " already belongs to another Patient; a live Patient's NHS number belongs to no other (UK Core Patient.identifier:nhsNumber). Nothing was stored."
		if holder != "" {
			msg = "The NHS number " + nhs + ` already belongs to Patient "` + holder + `"; a live Patient's NHS number belongs to no other (UK Core Patient.identifier:nhsNumber). Nothing was stored.`
		}
		return operationOutcome{"OperationOutcome", []fhirIssue{fhirError("duplicate", "Patient.identifier", msg)}}
	}
	patch := fhirReq("PATCH", "/Patient/"+b, `[{"op":"add","path":"/identifier","value":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"`+nhs+`"}]}]`, "Authorization", rw)
	patch.Header.Set("Content-Type", jsonPatchType)
	for _, tt := range []struct {
		name string
		req  *http.Request
		want operationOutcome
	}{
		{"create", fhirReq("POST", "/Patient", body(""), "Authorization", rw), dup(a)},
		{"create, write-only token", fhirReq("POST", "/Patient", body(""), "Authorization", writeOnly), dup("")},
		{"update another", fhirReq("PUT", "/Patient/"+b, body(b), "Authorization", rw), dup(a)},
		{"update-as-create", fhirReq("PUT", "/Patient/new-1", body("new-1"), "Authorization", rw), dup(a)},
		{"patch another", patch, dup(a)},
	} {
		res := do(t, h, tt.req)
		if res.StatusCode != http.StatusConflict {
			t.Errorf("%s: status %d, want 409", tt.name, res.StatusCode)
			continue
		}
		if diff := cmp.Diff(tt.want, decodeBody[operationOutcome](t, res)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
	if res := do(t, h, fhirReq("PUT", "/Patient/"+a, body(a), "Authorization", rw)); res.StatusCode != 200 {
		t.Errorf("update of the holder itself: %d, want 200", res.StatusCode)
	}
	if total := decodeBody[bundle](t, do(t, h, fhirReq("GET", "/Patient?identifier=|"+nhs+"&_count=0", "", "Authorization", rw))); bundleTotal(total) != 0 {
		t.Errorf("identifier=|%s: %d matches, want 0 (the number is only under its system)", nhs, bundleTotal(total))
	}
	do(t, h, fhirReq("DELETE", "/Patient/"+a, "", "Authorization", rw))
	if res := do(t, h, fhirReq("PUT", "/Patient/"+b, body(b), "Authorization", rw)); res.StatusCode != 200 {
		t.Errorf("update after the holder was deleted: %d, want 200 (a deletion releases the number)", res.StatusCode)
	}

	// 32 concurrent creates of a new number: exactly one 201.
	const racing = 32
	statuses := make(chan int, racing)
	var wg sync.WaitGroup
	for range racing {
		wg.Go(func() {
			res := doRaw(t, h, fhirReq("POST", "/Patient", strings.Replace(body(""), nhs, "9000000009", 1), "Authorization", rw))
			statuses <- res.StatusCode
		})
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if diff := cmp.Diff(map[int]int{201: 1, 409: racing - 1}, count); diff != "" {
		t.Errorf("statuses of %d concurrent creates of one NHS number (-want +got):\n%s", racing, diff)
	}
}

// TestConditionalInteractions walks If-None-Exist, PUT /Patient?criteria and DELETE /Patient?criteria
// through no match, one match and several (R4 http.html), with strict criteria.
func TestConditionalInteractions(t *testing.T) {
	h := newTestServer(t)
	patient := func(id, ident string) string {
		idPart := ""
		if id != "" {
			idPart = `"id":"` + id + `",`
		}
		return `{"resourceType":"Patient",` + idPart + `"identifier":[{"system":"urn:test","value":"` + ident + `"}],"gender":"female"}`
	}
	ifNone := func(crit, body string) *http.Request {
		return fhirReq("POST", "/Patient", body, "If-None-Exist", crit)
	}
	first := do(t, h, ifNone("identifier=urn:test|c1", patient("", "c1")))
	if first.StatusCode != 201 {
		t.Fatalf("conditional create, no match: %d, want 201", first.StatusCode)
	}
	c1 := decodeAnyBody(t, first)["id"].(string)
	nhsPatient := `{"resourceType":"Patient","identifier":[{"system":"` + fhirNHSNumberSystem + `","value":"` + testNHSNumber(7) + `"}]}`
	nhs := decodeAnyBody(t, do(t, h, postPatient(nhsPatient)))["id"].(string)
	do(t, h, postPatient(patient("", "twin")))
	do(t, h, postPatient(patient("", "twin")))
	type step struct {
		name       string
		req        *http.Request
		wantStatus int
		wantID     string // the Patient in the body, when there is one
	}
	for _, st := range []step{
		{"create, one match", ifNone("identifier=urn:test|c1", patient("", "c1")), 200, c1},
		{"create, one match, whole URL", ifNone("Patient?identifier=c1", patient("", "c1")), 200, c1},
		{"create retried, its NHS number held by the match", ifNone("identifier="+fhirNHSNumberSystem+"|"+testNHSNumber(7), nhsPatient), 200, nhs},
		{"create, criteria miss, NHS number held elsewhere", ifNone("identifier=nobody", nhsPatient), 409, ""},
		{"create, several", ifNone("identifier=twin", patient("", "twin")), 412, ""},
		{"create, unknown criteria", ifNone("foo=bar", patient("", "x")), 400, ""},
		{"create, empty criteria", ifNone("", patient("", "x")), 400, ""},
		{"create, bad criteria value", ifNone("birthdate=1974-13", patient("", "x")), 400, ""},
		{"create, a result parameter", ifNone("identifier=c1&_sort=family", patient("", "c1")), 400, ""},
		{"create, _count", ifNone("identifier=c1&_count=1", patient("", "c1")), 400, ""},
		{"update, _elements", fhirReq("PUT", "/Patient?identifier=c1&_elements=gender", patient("", "c1")), 400, ""},
		{"delete, _summary", fhirReq("DELETE", "/Patient?identifier=c1&_summary=count", ""), 400, ""},
		{"create, one match by another parameter", ifNone("identifier=c1&gender=female&active:missing=true", patient("", "c1")), 200, c1},
		{"update, one match", fhirReq("PUT", "/Patient?identifier=c1", patient("", "c1")), 200, c1},
		{"update, one match, its id", fhirReq("PUT", "/Patient?identifier=c1", patient(c1, "c1")), 200, c1},
		{"update, one match, another id", fhirReq("PUT", "/Patient?identifier=c1", patient("other", "c1")), 400, ""},
		{"update, none, body id", fhirReq("PUT", "/Patient?identifier=u1", patient("chosen-1", "u1")), 201, "chosen-1"},
		{"update, none, id of a Patient that does not match", fhirReq("PUT", "/Patient?identifier=nobody", patient(c1, "nobody")), 409, ""},
		{"update, several", fhirReq("PUT", "/Patient?identifier=twin", patient("", "twin")), 412, ""},
		{"update, If-Match", fhirReq("PUT", "/Patient?identifier=c1", patient("", "c1"), "If-Match", `W/"1"`), 400, ""},
		{"update, no criteria", fhirReq("PUT", "/Patient", patient("", "c1")), 400, ""},
		{"delete, several", fhirReq("DELETE", "/Patient?identifier=twin", ""), 412, ""},
		{"delete, none", fhirReq("DELETE", "/Patient?identifier=nobody", ""), 204, ""},
		{"delete, one", fhirReq("DELETE", "/Patient?identifier=u1", ""), 204, ""},
		{"deleted", fhirReq("GET", "/Patient/chosen-1", ""), goneStatus(), ""},
		{"delete, strict criteria", fhirReq("DELETE", "/Patient?identifer=u1", ""), 400, ""},
	} {
		res := do(t, h, st.req)
		if res.StatusCode != st.wantStatus {
			t.Errorf("%s: status %d, want %d: %s", st.name, res.StatusCode, st.wantStatus, readAll(t, res.Body))
			continue
		}
		if st.wantID != "" {
			if got := decodeAnyBody(t, res)["id"]; got != st.wantID {
				t.Errorf("%s: Patient %v, want %s", st.name, got, st.wantID)
			}
		}
	}
	if b := decodeBody[bundle](t, do(t, h, fhirReq("GET", "/Patient?identifier=c1", ""))); bundleTotal(b) != 1 {
		t.Errorf("after the conditional interactions, %d Patients with identifier c1, want 1", bundleTotal(b))
	}
}

// TestConditionalInteractionsRaceFree sends 32 concurrent conditional creates, and 32 concurrent
// conditional updates, each of one new identifier: one Patient each, one 201 each, the rest 200 with
// that Patient (HAPI's conditional create is known to race: hapi-fhir #3141).
func TestConditionalInteractionsRaceFree(t *testing.T) {
	h := newTestServer(t)
	const racing = 32
	for _, tt := range []struct {
		name string
		req  func() *http.Request
	}{
		{"If-None-Exist", func() *http.Request {
			return fhirReq("POST", "/Patient", `{"resourceType":"Patient","identifier":[{"system":"urn:race","value":"r1"}]}`, "If-None-Exist", "identifier=urn:race|r1")
		}},
		{"PUT ?identifier", func() *http.Request {
			return fhirReq("PUT", "/Patient?identifier=urn:race|r2", `{"resourceType":"Patient","identifier":[{"system":"urn:race","value":"r2"}]}`)
		}},
	} {
		type result struct {
			status int
			id     string
		}
		results := make(chan result, racing)
		var wg sync.WaitGroup
		for range racing {
			wg.Go(func() {
				res := do(t, h, tt.req())
				var p struct{ ID string }
				json.NewDecoder(res.Body).Decode(&p)
				results <- result{res.StatusCode, p.ID}
			})
		}
		wg.Wait()
		close(results)
		statuses, ids := map[int]int{}, map[string]bool{}
		for r := range results {
			statuses[r.status]++
			ids[r.id] = true
		}
		if diff := cmp.Diff(map[int]int{201: 1, 200: racing - 1}, statuses); diff != "" || len(ids) != 1 {
			t.Errorf("%s: %d concurrent requests gave %d Patients; statuses (-want +got):\n%s", tt.name, racing, len(ids), diff)
		}
	}
}

// TestPatientTypeHistory: GET /Patient/_history lists every interaction on every Patient, newest
// first, in pages that follow each other without gap or repeat, and refuses bad parameters.
func TestPatientTypeHistory(t *testing.T) {
	journalOnly(t, "Medplum has no type-level history (it answers 404, the service 501: TestUpstreamFaults); the interactions recorded in it are the journal's")
	h := newTestServer(t)
	a := decodeAnyBody(t, do(t, h, postPatient(`{"resourceType":"Patient","gender":"female"}`)))["id"].(string)
	do(t, h, fhirReq("PUT", "/Patient/"+a, `{"resourceType":"Patient","id":"`+a+`","gender":"male"}`))
	b := decodeAnyBody(t, do(t, h, postPatient(`{"resourceType":"Patient"}`)))["id"].(string)
	do(t, h, fhirReq("DELETE", "/Patient/"+a, ""))
	patch := fhirReq("PATCH", "/Patient/"+b, `[{"op":"add","path":"/active","value":true}]`)
	patch.Header.Set("Content-Type", jsonPatchType)
	do(t, h, patch)
	want := []string{"PATCH " + b + " 200 OK", "DELETE " + a + " 204 No Content", "POST " + b + " 201 Created", "PUT " + a + " 200 OK", "POST " + a + " 201 Created"}
	var got []string
	next := "/Patient/_history?_count=2"
	for pages := 0; next != ""; pages++ {
		if pages > 5 {
			t.Fatal("pages never end")
		}
		res := do(t, h, fhirReq("GET", next, ""))
		bd := decodeBody[bundle](t, res)
		if res.StatusCode != 200 || bd.Type != "history" || bd.Total != nil {
			t.Fatalf("GET %s: %d, type %q, total %v", next, res.StatusCode, bd.Type, bd.Total)
		}
		next = ""
		for _, l := range bd.Link {
			if l.Relation == "next" {
				next = strings.TrimPrefix(l.URL, "http://example.com")
			}
		}
		for _, e := range bd.Entry {
			got = append(got, e.Request.Method+" "+strings.TrimPrefix(e.FullURL, "http://example.com/Patient/")+" "+e.Response.Status)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("type history (-want +got):\n%s", diff)
	}
	for _, q := range []string{"_since=2026-01-01", "_since=yesterday", "_count=0", "_count=x", "_count=1&_count=2", "_before=-1"} {
		if res := do(t, h, fhirReq("GET", "/Patient/_history?"+q, "")); res.StatusCode != 400 {
			t.Errorf("GET /Patient/_history?%s: %d, want 400", q, res.StatusCode)
		}
	}
	if res := do(t, h, fhirReq("GET", "/Patient/_history?_since=2999-01-01T00:00:00Z", "")); res.StatusCode != 200 || len(decodeBody[bundle](t, res).Entry) != 0 {
		t.Errorf("history since the future: want 200 with no entries")
	}
}
