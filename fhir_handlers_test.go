package main

// Tests of the FHIR Patient REST interactions through the whole handler (newServer), with tokens from
// the test issuer; validation details are in patient_test.go, search semantics in search_test.go.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const minimalPatient = `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9991234578"}],"name":[{"family":"Smith","given":["Jo"]}],"gender":"female","birthDate":"1974-12-25"}`

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
	if err != nil || lastUpdated.Before(before) || meta["versionId"] != "1" {
		t.Errorf("meta %v: want versionId 1 and a fresh lastUpdated", meta)
	}
	wantHeaders := map[string]string{
		"Location":      "/Patient/" + id + "/_history/1",
		"ETag":          `W/"1"`,
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
	if read.StatusCode != 200 || read.Header.Get("ETag") != `W/"1"` || read.Header.Get("Last-Modified") != wantHeaders["Last-Modified"] {
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
		req := postPatient(minimalPatient)
		if tt.prefer != "" {
			req.Header.Set("Prefer", tt.prefer)
		}
		res := do(t, h, req)
		body := readAll(t, res.Body)
		if res.StatusCode != 201 || res.Header.Get("Location") == "" || res.Header.Get("ETag") != `W/"1"` {
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
		{"patch not supported", "PATCH", "/Patient/abc", "", "", "", 405,
			fhirIssue{"error", "not-supported", "This path does not support PATCH; it supports DELETE, GET, HEAD, PUT.", nil, nil}},
		{"delete on type", "DELETE", "/Patient", "", "", "", 405,
			fhirIssue{"error", "not-supported", "This path does not support DELETE; it supports GET, HEAD, POST.", nil, nil}},
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
	if diff := cmp.Diff([]string{"create", "read", "vread", "update", "delete", "history-instance", "search-type"}, interactions); diff != "" {
		t.Errorf("interactions (-want +got):\n%s", diff)
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
				got = append(got, e.Request.Method+" "+e.Response.Etag)
				if e.FullURL != "http://example.com/Patient/"+id {
					t.Errorf("fullUrl %q", e.FullURL)
				}
			}
			if diff := cmp.Diff(wantVersions, got); diff != "" || b.Type != "history" || b.Total != len(wantVersions) {
				t.Errorf("history %s total %d (-want +got):\n%s", b.Type, b.Total, diff)
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
		{"history", fhirReq("GET", "/Patient/"+id+"/_history", ""), 200, "", historyOf(`PUT W/"4"`, `PUT W/"3"`, `PUT W/"2"`, `POST W/"1"`)},
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
		{"history keeps all", fhirReq("GET", "/Patient/"+id+"/_history", ""), 200, "", historyOf(`DELETE W/"5"`, `PUT W/"4"`, `PUT W/"3"`, `PUT W/"2"`, `POST W/"1"`)},
		{"stale If-Match on deleted", fhirReq("PUT", "/Patient/"+id, withID(""), "If-Match", `W/"4"`), 412, "", issue("conflict")},
		{"resurrect", fhirReq("PUT", "/Patient/"+id, withID("")), 201, `W/"6"`, versionOf("6")},
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
		{"PATCH", "/Patient/p1", "DELETE, GET, HEAD, PUT"},
		{"POST", "/Patient/p1", "DELETE, GET, HEAD, PUT"},
		{"DELETE", "/Patient", "GET, HEAD, POST"},
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
	created := do(t, h, postPatient(minimalPatient))
	id := decodeAnyBody(t, created)["id"].(string)
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
		{"system read", "GET", "/Patient/" + id + "/_history/1", bearer(li.token(t, "system/Patient.read")), 200, "", "", ""},
		{"wildcard create", "POST", "/Patient", bearer(li.token(t, "user/Patient.*")), 201, "", "", ""},
		{"system write update", "PUT", "/Patient/" + id, bearer(li.token(t, "system/Patient.write")), 200, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := ""
			switch tt.method {
			case "POST":
				body = minimalPatient
			case "PUT":
				body = `{"resourceType":"Patient","id":"` + id + `"}`
			}
			req := fhirReq(tt.method, tt.path, body)
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
			want := []fhirIssue{{Severity: "error", Code: tt.wantIssue, Details: &fhirCodeableConcept{Coding: []fhirCoding{{nhsdErrorSystem, tt.wantCode}}}}}
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
	h := newServer(slog.New(slog.DiscardHandler), config{}, testMetrics(), func() bool { return true }, openapiJSON, testDocs(t), testStore(t), nil)
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
	h := newServer(slog.New(slog.DiscardHandler), cfg, testMetrics(), func() bool { return true }, openapiJSON, testDocs(t), store, testVerifier(t))
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
		query string
		want  []string
	}{
		{"family=nun", []string{"NUNN", "Nunes", "Núñez"}},
		{"family=nunez", []string{"Núñez"}},
		{"family:exact=Núñez", []string{"Núñez"}},
		{"family:exact=nunez", nil},
		{"family:contains=yth", []string{"Smyth"}},
		{"name=zoe", []string{"Zoë"}},
		{"family=sm,zo", []string{"Smith", "Smyth", "Zoë"}},
		{"family=sm&birthdate=1974", []string{"Smyth"}},
		{"identifier=urn:test|v3", []string{"Smith"}},
		{"identifier=v0", []string{"Núñez"}},
		{"birthdate=ge1973&birthdate=lt1975", []string{"Smith", "Smyth"}},
		{"gender=male", nil},
		{"_id=" + ids["Zoë"], []string{"Zoë"}},
		{"unknown=1&family=smi", []string{"Smith"}},
	} {
		b, _ := search(t, fhirReq("GET", "/Patient?"+tt.query, ""))
		if diff := cmp.Diff(tt.want, families(b)); diff != "" || b.Type != "searchset" || b.Total != len(tt.want) {
			t.Errorf("%s: %s total %d (-want +got):\n%s", tt.query, b.Type, b.Total, diff)
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
			if pages != 2 || b.Total != 6 {
				t.Errorf("%d pages, total %d; want 3 pages of 6", pages+1, b.Total)
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

// FuzzPatientSearch: whatever the query string, GET /Patient answers 200 or 400, never 5xx.
func FuzzPatientSearch(f *testing.F) {
	for _, s := range []string{"family=smi", "birthdate=ge1974-02&birthdate=lt1975", "identifier=a%7Cb,%7Cc", "_count=0&_offset=5",
		"name:contains=%C3%A9", "gender=male,female", "_id=x&_id=y", "family:fuzzy=x", "birthdate=1974-02-30", "%zz", "identifier=a%5C%7Cb"} {
		f.Add(s)
	}
	h := newTestServer(f)
	do(f, h, postPatient(minimalPatient))
	f.Fuzz(func(t *testing.T, query string) {
		req := fhirReq("GET", "/Patient", "")
		req.URL.RawQuery = query
		res := do(t, h, req)
		if res.StatusCode != 200 && res.StatusCode != 400 {
			t.Fatalf("GET /Patient?%s: %d", query, res.StatusCode)
		}
	})
}
