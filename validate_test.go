package main

// Tests of POST /Patient/$validate (validate.go) through the whole handler.

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// validateReq is a POST /Patient/$validate with a FHIR JSON body; query is appended to the URL.
func validateReq(body, query string) *http.Request {
	path := "/Patient/$validate"
	if query != "" {
		path += "?" + query
	}
	return fhirReq("POST", path, body)
}

// noIssues is $validate's answer for a valid Patient.
var noIssues = []fhirIssue{{Severity: "information", Code: "informational", Diagnostics: "No issues detected during validation"}}

// inParameters wraps a Patient (and extra parts) in a $validate Parameters body.
func inParameters(patient string, parts ...string) string {
	return `{"resourceType":"Parameters","parameter":[` + strings.Join(append([]string{`{"name":"resource","resource":` + patient + `}`}, parts...), ",") + `]}`
}

// TestValidateSameRulesAsCreate: for Patients that create accepts or refuses, $validate answers 200 with
// exactly the issues create gives (or one information issue), in both body forms, and stores nothing.
func TestValidateSameRulesAsCreate(t *testing.T) {
	h := newTestServer(t)
	bodies := map[string]string{
		"valid":              minimalPatient,
		"server meta":        `{"resourceType":"Patient","id":"ignored on create","meta":{"versionId":"x"}}`,
		"bad date":           `{"resourceType":"Patient","birthDate":"1974-02-30","gender":"woman"}`,
		"bad NHS number":     `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9991234579"}]}`,
		"two NHS numbers":    `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9991234578"},{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}]}`,
		"NHS number twice":   `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9991234578"},{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9991234578"}]}`,
		"unknown element":    `{"resourceType":"Patient","nickname":"Jo","active":"yes"}`,
		"modifier extension": `{"resourceType":"Patient","modifierExtension":[{"url":"http://example.org/x","valueBoolean":true}]}`,
	}
	for name, ex := range patientExamples(t, "valid") {
		bodies["example "+name] = string(ex)
	}
	for name, body := range bodies {
		create := do(t, h, postPatient(body))
		want := noIssues
		if create.StatusCode != http.StatusCreated {
			want = decodeBody[operationOutcome](t, create).Issue
		}
		for form, req := range map[string]*http.Request{
			"bare":       validateReq(body, "mode=create"),
			"parameters": validateReq(inParameters(body, `{"name":"mode","valueCode":"create"}`), ""),
		} {
			res := do(t, h, req)
			if res.StatusCode != 200 {
				t.Errorf("%s (%s): status %d, want 200", name, form, res.StatusCode)
				continue
			}
			if diff := cmp.Diff(operationOutcome{"OperationOutcome", want}, decodeBody[operationOutcome](t, res)); diff != "" {
				t.Errorf("%s (%s): $validate vs create (-create +validate):\n%s", name, form, diff)
			}
		}
	}
	// Only the creates stored anything: $validate never does.
	var b bundle
	json.NewDecoder(do(t, h, fhirReq("GET", "/Patient?_count=100", "")).Body).Decode(&b)
	var created int
	for _, body := range bodies {
		if _, _, status := parsePatient([]byte(body), true); status == 0 {
			created++
		}
	}
	if bundleTotal(b) != created {
		t.Errorf("%d Patients stored, want the %d creates", bundleTotal(b), created)
	}
}

// TestValidateModes: without a mode the id is an element like any other; create ignores it; update
// needs it. Mode and profile work from the URL or the Parameters body; Prefer changes nothing.
func TestValidateModes(t *testing.T) {
	h := newTestServer(t)
	badID := `{"resourceType":"Patient","id":"not valid!"}`
	noID := `{"resourceType":"Patient","gender":"female"}`
	idIssue := []fhirIssue{fhirError("value", "Patient.id", "Patient.id: is not a valid id (1-64 letters, digits, '-' or '.').")}
	needsID := []fhirIssue{fhirError("required", "Patient.id", "Patient.id: mode update validates the Patient as PUT /Patient/{id} would, so it needs the id of the Patient to update.")}
	tests := []struct {
		name string
		req  *http.Request
		want []fhirIssue
	}{
		{"no mode checks the id", validateReq(badID, ""), idIssue},
		{"create ignores the id", validateReq(badID, "mode=create"), noIssues},
		{"update checks the id", validateReq(inParameters(badID, `{"name":"mode","valueCode":"update"}`), ""), idIssue},
		{"update needs an id", validateReq(noID, "mode=update"), needsID},
		{"update with an id", validateReq(`{"resourceType":"Patient","id":"p1"}`, "mode=update"), noIssues},
		{"update: every problem", validateReq(`{"resourceType":"Patient","gender":"woman"}`, "mode=update"),
			append([]fhirIssue{fhirError("code-invalid", "Patient.gender", "Patient.gender: the code is not in the required value set (male, female, other, unknown).")}, needsID...)},
		{"base profile", validateReq(noID, "profile=http://hl7.org/fhir/StructureDefinition/Patient"), noIssues},
		{"versioned base profile in Parameters", validateReq(inParameters(noID, `{"name":"profile","valueCanonical":"http://hl7.org/fhir/StructureDefinition/Patient|4.0.1"}`), ""), noIssues},
		{"Prefer ignored", fhirReq("POST", "/Patient/$validate", noID, "Prefer", "return=minimal"), noIssues},
		{"application/json", func() *http.Request {
			r := validateReq(noID, "")
			r.Header.Set("Content-Type", "application/json")
			return r
		}(), noIssues},
	}
	for _, tt := range tests {
		res := do(t, h, tt.req)
		if diff := cmp.Diff(operationOutcome{"OperationOutcome", tt.want}, decodeBody[operationOutcome](t, res)); diff != "" || res.StatusCode != 200 {
			t.Errorf("%s: status %d (-want +got):\n%s", tt.name, res.StatusCode, diff)
		}
	}
}

// TestValidateCannotRun: the 400s, when there is nothing to validate or the request asks for what this
// server cannot do.
func TestValidateCannotRun(t *testing.T) {
	h := newTestServer(t)
	p := `{"resourceType":"Patient"}`
	one := func(code, expr, msg string) []fhirIssue { return []fhirIssue{fhirError(code, expr, msg)} }
	notPatient := one("structure", "", `The body must be a Patient, or a Parameters resource whose parameter "resource" holds one (R4 $validate).`)
	noResource := fhirError("required", "Parameters.parameter", `Parameters.parameter: must hold exactly one "resource", the Patient to validate (0 given).`)
	tests := []struct {
		name, body, query string
		want              []fhirIssue
	}{
		{"not json", `{"resourceType":`, "", one("structure", "", "The body is not valid JSON: it ends before the JSON object is complete.")},
		{"duplicate member", `{"resourceType":"Patient","gender":"male","gender":"female"}`, "",
			one("structure", "Patient.gender", `Patient.gender: the property "gender" appears more than once in the same object.`)},
		{"duplicate in Parameters", inParameters(`{"resourceType":"Patient","active":true,"active":false}`), "",
			one("structure", "Parameters.parameter[0].resource.active", `Parameters.parameter[0].resource.active: the property "active" appears more than once in the same object.`)},
		{"other resource", `{"resourceType":"Observation"}`, "", notPatient},
		{"no resourceType", `{"gender":"male"}`, "", notPatient},
		{"no parameter", `{"resourceType":"Parameters"}`, "", one("required", "Parameters.parameter", `Parameters.parameter: must be a non-empty array holding the "resource" to validate.`)},
		{"no resource", `{"resourceType":"Parameters","parameter":[{"name":"mode","valueCode":"create"}]}`, "", []fhirIssue{noResource}},
		{"two resources", `{"resourceType":"Parameters","parameter":[{"name":"resource","resource":` + p + `},{"name":"resource","resource":` + p + `}]}`, "",
			one("required", "Parameters.parameter", `Parameters.parameter: must hold exactly one "resource", the Patient to validate (2 given).`)},
		{"resource not a Patient", inParameters(`{"resourceType":"Observation"}`), "",
			one("not-supported", "Parameters.parameter[0].resource", `Parameters.parameter[0].resource: must be a Patient (resourceType "Patient"): this is /Patient/$validate.`)},
		{"unknown parameter", inParameters(p, `{"name":"Mode","valueCode":"create"}`), "",
			one("not-supported", "Parameters.parameter[1].name", `Parameters.parameter[1].name: must be "resource", "mode" or "profile", the inputs of $validate (case-sensitive).`)},
		{"wrong value type", inParameters(p, `{"name":"mode","valueString":"create"}`), "",
			one("structure", "Parameters.parameter[1].valueString", `Parameters.parameter[1].valueString: a mode parameter holds only its name and valueCode.`)},
		{"value not a string", inParameters(p, `{"name":"mode","valueCode":1}`), "",
			one("structure", "Parameters.parameter[1].valueCode", `Parameters.parameter[1].valueCode: must be a string, not a number.`)},
		{"part without value", `{"resourceType":"Parameters","parameter":[{"name":"resource"}]}`, "",
			one("required", "Parameters.parameter[0]", `Parameters.parameter[0]: a resource parameter needs resource.`)},
		{"part not an object", `{"resourceType":"Parameters","parameter":["resource"]}`, "", []fhirIssue{
			fhirError("structure", "Parameters.parameter[0]", `Parameters.parameter[0]: must be a JSON object, not a string.`), noResource}},
		{"unknown Parameters element", `{"resourceType":"Parameters","implicitRules":"x","parameter":[{"name":"resource","resource":` + p + `}]}`, "",
			one("structure", "Parameters.implicitRules", `Parameters.implicitRules: $validate reads only parameter here.`)},
		{"unknown mode", p, "mode=creat", one("code-invalid", "", `mode "creat" is not a validation mode; use create or update (or leave it out for general validation).`)},
		{"empty mode", p, "mode=", one("code-invalid", "", `mode "" is not a validation mode; use create or update (or leave it out for general validation).`)},
		{"delete mode", p, "mode=delete", one("not-supported", "", "mode delete validates against an existing Patient, which needs POST /Patient/{id}/$validate; this server offers $validate at type level, for modes create and update.")},
		{"mode twice", inParameters(p, `{"name":"mode","valueCode":"create"}`), "mode=create",
			one("structure", "", "mode and profile may each be given once (in the URL or in the Parameters body, not both).")},
		{"other profile", p, "profile=https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient",
			one("not-supported", "", `This server validates against the base R4 Patient (http://hl7.org/fhir/StructureDefinition/Patient) only, not "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient".`)},
	}
	for _, tt := range tests {
		res := do(t, h, validateReq(tt.body, tt.query))
		if diff := cmp.Diff(operationOutcome{"OperationOutcome", tt.want}, decodeBody[operationOutcome](t, res)); diff != "" || res.StatusCode != 400 {
			t.Errorf("%s: status %d (-want +got):\n%s", tt.name, res.StatusCode, diff)
		}
	}
}

// FuzzValidate: whatever the body and mode, $validate answers 200 or 400 (never 5xx) with an
// OperationOutcome, and a bare Patient without a mode gets "no issues" exactly when parsePatient
// accepts it for update.
func FuzzValidate(f *testing.F) {
	f.Add(minimalPatient, "")
	f.Add(inParameters(minimalPatient, `{"name":"mode","valueCode":"update"}`), "")
	f.Add(`{"resourceType":"Patient","id":"x y","birthDate":"2000-02-30"}`, "create")
	f.Add(`{"resourceType":"Parameters","parameter":[{"name":"profile","valueUri":"x"}]}`, "delete")
	h := newTestServer(f)
	f.Fuzz(func(t *testing.T, body, mode string) {
		query := ""
		if mode != "" {
			query = "mode=" + url.QueryEscape(mode)
		}
		res := do(t, h, validateReq(body, query))
		if res.StatusCode != 200 && res.StatusCode != 400 {
			t.Fatalf("status %d for %q, mode %q", res.StatusCode, body, mode)
		}
		oo := decodeBody[operationOutcome](t, res)
		if len(oo.Issue) == 0 {
			t.Fatalf("%d without issues for %q", res.StatusCode, body)
		}
		if _, _, status := parsePatient([]byte(body), false); mode == "" && res.StatusCode == 200 && (status == 0) != cmp.Equal(oo.Issue, noIssues) {
			t.Fatalf("parsePatient status %d but $validate says %v for %q", status, oo.Issue, body)
		}
	})
}
