package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fhirExamplesDir holds the official HL7 R4, NHS UK Core and PDS examples the tests use, with their
// provenance and licences in SOURCES.md.
const fhirExamplesDir = "testdata/fhir/examples"

// patientExamples returns the third-party example files in dir.
func patientExamples(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(fhirExamplesDir, dir, "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no examples in %s: %v", filepath.Join(fhirExamplesDir, dir), err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(p), ".json")] = b
	}
	return out
}

// decodeAny unmarshals JSON keeping numbers as written, so decimals compare textually.
func decodeAny(t *testing.T, b []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v map[string]any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

// withoutServerMeta drops what withMeta replaces: id, meta.versionId and meta.lastUpdated (and meta
// itself when nothing else is in it).
func withoutServerMeta(v map[string]any) map[string]any {
	delete(v, "id")
	if meta, ok := v["meta"].(map[string]any); ok {
		delete(meta, "versionId")
		delete(meta, "lastUpdated")
		if len(meta) == 0 {
			delete(v, "meta")
		}
	}
	return v
}

// TestParsePatientExamplesRoundTrip checks every valid example is accepted and served back without loss.
func TestParsePatientExamplesRoundTrip(t *testing.T) {
	lastUpdated := time.Date(2026, 11, 26, 10, 0, 0, 123e6, time.FixedZone("x", 3600))
	examples := patientExamples(t, "valid")
	if len(examples) != 37 {
		t.Errorf("found %d valid examples, want 37", len(examples))
	}
	for name, body := range examples {
		for _, forCreate := range []bool{true, false} {
			p, issues, status := parsePatient(body, forCreate)
			if status != 0 {
				t.Errorf("parsePatient(%s, create=%v) status = %d, want 0; issues: %+v", name, forCreate, status, issues)
				continue
			}
			got := decodeAny(t, p.withMeta("new-id", "1", lastUpdated))
			meta, _ := got["meta"].(map[string]any)
			if got["id"] != "new-id" || meta["versionId"] != "1" || meta["lastUpdated"] != "2026-11-26T09:00:00.123Z" {
				t.Errorf("%s: withMeta id/meta = %v %v, want new-id, 1, 2026-11-26T09:00:00.123Z", name, got["id"], meta)
			}
			want := withoutServerMeta(decodeAny(t, body))
			if diff := cmp.Diff(want, withoutServerMeta(got)); diff != "" {
				t.Errorf("%s: round trip mismatch (-want +got):\n%s", name, diff)
			}
		}
	}
}

// TestParsePatientBabyNHSNumber checks UK Core's BabyPatient fails only the Modulus 11 business rule.
func TestParsePatientBabyNHSNumber(t *testing.T) {
	for name, body := range patientExamples(t, "edge") {
		_, issues, status := parsePatient(body, true)
		want := []issueSummary{{"business-rule", "Patient.identifier[0].value"}}
		if status != 422 {
			t.Errorf("parsePatient(%s) status = %d, want 422", name, status)
		}
		if diff := cmp.Diff(want, summarize(issues)); diff != "" {
			t.Errorf("parsePatient(%s) issues mismatch (-want +got):\n%s", name, diff)
		}
	}
}

// issueSummary is the machine-readable part of an issue (diagnostics are prose and not compared).
type issueSummary struct {
	Code, Expression string
}

// summarize reduces issues to code and expression, checking the fixed parts of each issue on the way.
func summarize(issues []fhirIssue) []issueSummary {
	var out []issueSummary
	for _, is := range issues {
		s := issueSummary{Code: is.Code, Expression: strings.Join(is.Expression, ",")}
		if is.Severity != "error" || is.Diagnostics == "" || strings.Contains(is.Diagnostics, "fhirNode") {
			s.Code = "BAD ISSUE: " + is.Severity + "/" + is.Diagnostics
		}
		out = append(out, s)
	}
	return out
}

// patientBase is a small valid Patient touching most elements; each invalid case changes one thing in it.
const patientBase = `{"resourceType":"Patient","id":"p1",
"meta":{"versionId":"7","lastUpdated":"2020-01-01T00:00:00Z","profile":["http://example.org/p"]},
"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Jo Smith</p></div>"},
"extension":[{"url":"http://example.org/e","valueString":"x"}],
"identifier":[{"use":"official","system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"},
 {"system":"urn:oid:1.2.3","value":"A1","period":{"start":"2001-01-01","end":"2002"}}],
"active":true,
"name":[{"use":"official","family":"Smith","given":["Jo","Ann"],"prefix":["Ms"]}],
"telecom":[{"system":"phone","value":"0123","use":"home","rank":1}],
"gender":"female",
"birthDate":"1980-02-29",
"deceasedBoolean":false,
"address":[{"use":"home","type":"both","line":["1 High St"],"city":"Leeds","postalCode":"LS1 1AA"}],
"maritalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-MaritalStatus","code":"M"}]},
"multipleBirthInteger":1,
"photo":[{"contentType":"image/png","data":"aGVsbG8="}],
"contact":[{"relationship":[{"text":"mother"}],"name":{"family":"Smith"},"gender":"female"}],
"communication":[{"language":{"text":"English"},"preferred":true}],
"generalPractitioner":[{"reference":"Practitioner/1"}],
"managingOrganization":{"reference":"Organization/1"},
"link":[{"other":{"reference":"Patient/2"},"type":"seealso"}]}`

// Snippets of patientBase that cases replace.
const (
	baseExt     = `{"url":"http://example.org/e","valueString":"x"}`
	baseDiv     = `<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Jo Smith</p></div>`
	baseGiven   = `"given":["Jo","Ann"]`
	basePeriod  = `"period":{"start":"2001-01-01","end":"2002"}`
	basePhoto   = `{"contentType":"image/png","data":"aGVsbG8="}`
	baseContact = `{"relationship":[{"text":"mother"}],"name":{"family":"Smith"},"gender":"female"}`
	baseNHS     = `"value":"9434765919"`
	baseOID     = `"system":"urn:oid:1.2.3","value":"A1"`
	baseMarital = `"maritalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-MaritalStatus","code":"M"}]}`
)

// deep nests n arrays.
func deep(n int) string {
	return strings.Repeat("[", n) + strings.Repeat("]", n)
}

// TestParsePatientInvalid gives patientBase one defect at a time and expects exactly one issue for it.
func TestParsePatientInvalid(t *testing.T) {
	tests := []struct {
		name      string
		old, new  string // replace old with new in patientBase; old == "" means new is the whole body
		forCreate bool
		status    int
		code      string // "" with status 0
		expr      string
	}{
		// JSON and resource-level structure.
		{"syntax", "", `{"resourceType":`, false, 400, "structure", ""},
		{"empty_body", "", ``, false, 400, "structure", ""},
		{"root_array", "", `[{"resourceType":"Patient"}]`, false, 400, "structure", ""},
		{"root_string", "", `"Patient"`, false, 400, "structure", ""},
		{"root_null", "", `null`, false, 400, "structure", ""},
		{"trailing_object", `"type":"seealso"}]}`, `"type":"seealso"}]} {}`, false, 400, "structure", ""},
		{"trailing_garbage", `"type":"seealso"}]}`, `"type":"seealso"}]}x`, false, 400, "structure", ""},
		{"invalid_utf8", `"Leeds"`, "\"Le\xffds\"", false, 400, "structure", ""},
		{"duplicate_key", `"gender":"female",`, `"gender":"female","gender":"male",`, false, 400, "structure", "Patient.gender"},
		{"duplicate_key_nested", `"family":"Smith","given"`, `"family":"Smith","family":"Jones","given"`, false, 400, "structure", "Patient.name[0].family"},
		{"too_deep", `"active":true,`, `"active":true,"x":` + deep(65) + `,`, false, 400, "structure", ""},
		{"resource_type_missing", `"resourceType":"Patient",`, ``, false, 400, "required", ""},
		{"resource_type_wrong", `"resourceType":"Patient"`, `"resourceType":"Observation"`, false, 400, "value", ""},
		{"resource_type_number", `"resourceType":"Patient"`, `"resourceType":1`, false, 400, "value", ""},
		{"resource_type_case", `"resourceType":"Patient"`, `"resourceType":"patient"`, false, 400, "value", ""},

		// Unknown elements and modifier extensions.
		{"unknown_root", `"active":true`, `"active":true,"foo":1`, false, 400, "structure", "Patient.foo"},
		{"unknown_nested", `"family":"Smith","given"`, `"family":"Smith","nickname":"J","given"`, false, 400, "structure", "Patient.name[0].nickname"},
		{"fhir_comments", `"active":true`, `"active":true,"fhir_comments":["x"]`, false, 400, "structure", "Patient.fhir_comments"},
		{"wrong_case", `"gender":"female",`, `"Gender":"female",`, false, 400, "structure", "Patient.Gender"},
		{"companion_on_complex", `"active":true`, `"active":true,"_maritalStatus":{"id":"a"}`, false, 400, "structure", "Patient._maritalStatus"},
		{"unknown_choice_type", `"deceasedBoolean":false`, `"deceasedString":"no"`, false, 400, "structure", "Patient.deceasedString"},
		{"unknown_in_extension", baseExt, `{"url":"http://example.org/e","valueString":"x","foo":1}`, false, 400, "structure", "Patient.extension[0].foo"},
		{"extension_value_not_open_type", baseExt, `{"url":"http://example.org/e","valueNarrative":{"status":"empty"}}`, false, 400, "structure", "Patient.extension[0].valueNarrative"},
		{"modifier_extension_root", `"active":true`, `"active":true,"modifierExtension":[` + baseExt + `]`, false, 400, "extension", "Patient.modifierExtension"},
		{"modifier_extension_contact", `"gender":"female"}]`, `"gender":"female","modifierExtension":[` + baseExt + `]}]`, false, 400, "extension", "Patient.contact[0].modifierExtension"},

		// Cardinality: arrays for 0..*, single values for 0..1, required elements.
		{"single_as_array", `"gender":"female",`, `"gender":["female"],`, false, 400, "structure", "Patient.gender"},
		{"complex_single_as_array", `"managingOrganization":{"reference":"Organization/1"}`, `"managingOrganization":[{"reference":"Organization/1"}]`, false, 400, "structure", "Patient.managingOrganization"},
		{"nested_single_as_array", `"family":"Smith","given"`, `"family":["Smith"],"given"`, false, 400, "structure", "Patient.name[0].family"},
		{"contact_name_as_array", `"name":{"family":"Smith"}`, `"name":[{"family":"Smith"}]`, false, 400, "structure", "Patient.contact[0].name"},
		{"repeating_as_object", `"name":[{"use":"official","family":"Smith","given":["Jo","Ann"],"prefix":["Ms"]}]`, `"name":{"use":"official","family":"Smith"}`, false, 400, "structure", "Patient.name"},
		{"repeating_primitive_as_string", baseGiven, `"given":"Jo"`, false, 400, "structure", "Patient.name[0].given"},
		{"complex_as_string", baseMarital, `"maritalStatus":"M"`, false, 400, "structure", "Patient.maritalStatus"},
		{"communication_language_missing", `{"language":{"text":"English"},"preferred":true}`, `{"preferred":true}`, false, 400, "required", "Patient.communication[0].language"},
		{"link_type_missing", `,"type":"seealso"`, ``, false, 400, "required", "Patient.link[0].type"},
		{"link_other_missing", `"other":{"reference":"Patient/2"},`, ``, false, 400, "required", "Patient.link[0].other"},
		{"narrative_status_missing", `"status":"generated",`, ``, false, 400, "required", "Patient.text.status"},
		{"narrative_div_missing", `,"div":"` + baseDiv + `"`, ``, false, 400, "required", "Patient.text.div"},
		{"extension_url_missing", baseExt, `{"valueString":"x"}`, false, 400, "required", "Patient.extension[0].url"},

		// null, "", [] and {}; the legal null placeholder.
		{"null_value", `"gender":"female",`, `"gender":null,`, false, 400, "structure", "Patient.gender"},
		{"null_complex", baseMarital, `"maritalStatus":null`, false, 400, "structure", "Patient.maritalStatus"},
		{"null_in_array_no_companion", baseGiven, `"given":["Jo",null]`, false, 400, "structure", "Patient.name[0].given[1]"},
		{"null_in_complex_array", `"identifier":[`, `"identifier":[null,`, false, 400, "structure", "Patient.identifier[0]"},
		{"empty_string", `"family":"Smith","given"`, `"family":"","given"`, false, 400, "value", "Patient.name[0].family"},
		{"empty_array", `"line":["1 High St"]`, `"line":[]`, false, 400, "structure", "Patient.address[0].line"},
		{"empty_object", baseMarital, `"maritalStatus":{}`, false, 400, "structure", "Patient.maritalStatus"},
		{"empty_object_in_array", `"relationship":[{"text":"mother"}]`, `"relationship":[{}]`, false, 400, "structure", "Patient.contact[0].relationship[0]"},
		{"null_placeholder_ok", baseGiven, `"given":["Jo",null],"_given":[null,{"extension":[` + baseExt + `]}]`, false, 0, "", ""},
		{"companion_only_ok", `"birthDate":"1980-02-29"`, `"_birthDate":{"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/patient-birthTime","valueDateTime":"1980-02-29T10:00:00Z"}]}`, false, 0, "", ""},
		{"companion_id_ok", `"gender":"female",`, `"gender":"female","_gender":{"id":"g1"},`, false, 0, "", ""},
		{"null_in_both", baseGiven, `"given":["Jo",null],"_given":[{"id":"a"},null]`, false, 400, "structure", "Patient.name[0].given[1]"},
		{"companion_length_mismatch", baseGiven, `"given":["Jo","Ann"],"_given":[{"id":"a"}]`, false, 400, "structure", "Patient.name[0].given"},
		{"companion_null_without_values", `"prefix":["Ms"]`, `"_prefix":[null]`, false, 400, "structure", "Patient.name[0].prefix[0]"},
		{"companion_array_for_single", `"birthDate":"1980-02-29"`, `"birthDate":"1980-02-29","_birthDate":[{"id":"a"}]`, false, 400, "structure", "Patient.birthDate"},
		{"companion_object_for_array", baseGiven, baseGiven + `,"_given":{"id":"a"}`, false, 400, "structure", "Patient.name[0].given"},
		{"companion_empty", `"birthDate":"1980-02-29"`, `"birthDate":"1980-02-29","_birthDate":{}`, false, 400, "structure", "Patient.birthDate"},
		{"companion_unknown_element", `"birthDate":"1980-02-29"`, `"birthDate":"1980-02-29","_birthDate":{"foo":1}`, false, 400, "structure", "Patient.birthDate.foo"},
		{"companion_bad_extension", `"birthDate":"1980-02-29"`, `"birthDate":"1980-02-29","_birthDate":{"extension":[{"url":"http://e"}]}`, false, 400, "invariant", "Patient.birthDate.extension[0]"},

		// Strings.
		{"whitespace_only", `"family":"Smith","given"`, `"family":"  \t ","given"`, false, 400, "value", "Patient.name[0].family"},
		{"control_char", `"family":"Smith","given"`, `"family":"Sm\u0001ith","given"`, false, 400, "value", "Patient.name[0].family"},
		{"nul_char", `"city":"Leeds"`, `"city":"Leeds\u0000"`, false, 400, "value", "Patient.address[0].city"},
		{"escape_char", `"city":"Leeds"`, `"city":"Leeds\u001b[0m"`, false, 400, "value", "Patient.address[0].city"},
		{"tab_cr_lf_ok", `"city":"Leeds"`, `"city":"Le\teds\r\n"`, false, 0, "", ""},
		{"too_long", `"city":"Leeds"`, `"city":"` + strings.Repeat("a", 1<<20+1) + `"`, false, 400, "too-long", "Patient.address[0].city"},
		{"string_as_number", `"city":"Leeds"`, `"city":42`, false, 400, "structure", "Patient.address[0].city"},

		// boolean, integer, positiveInt, unsignedInt, decimal.
		{"boolean_string", `"active":true`, `"active":"true"`, false, 400, "structure", "Patient.active"},
		{"boolean_number", `"active":true`, `"active":1`, false, 400, "structure", "Patient.active"},
		{"integer_fraction", `"multipleBirthInteger":1`, `"multipleBirthInteger":1.5`, false, 400, "value", "Patient.multipleBirth.ofType(integer)"},
		{"integer_point_zero", `"multipleBirthInteger":1`, `"multipleBirthInteger":1.0`, false, 400, "value", "Patient.multipleBirth.ofType(integer)"},
		{"integer_exponent", `"multipleBirthInteger":1`, `"multipleBirthInteger":1e2`, false, 400, "value", "Patient.multipleBirth.ofType(integer)"},
		{"integer_overflow", `"multipleBirthInteger":1`, `"multipleBirthInteger":2147483648`, false, 400, "value", "Patient.multipleBirth.ofType(integer)"},
		{"integer_underflow", `"multipleBirthInteger":1`, `"multipleBirthInteger":-2147483649`, false, 400, "value", "Patient.multipleBirth.ofType(integer)"},
		{"integer_max_ok", `"multipleBirthInteger":1`, `"multipleBirthInteger":2147483647`, false, 0, "", ""},
		{"integer_min_ok", `"multipleBirthInteger":1`, `"multipleBirthInteger":-2147483648`, false, 0, "", ""},
		{"integer_string", `"multipleBirthInteger":1`, `"multipleBirthInteger":"1"`, false, 400, "structure", "Patient.multipleBirth.ofType(integer)"},
		{"positive_int_zero", `"rank":1`, `"rank":0`, false, 400, "value", "Patient.telecom[0].rank"},
		{"positive_int_negative", `"rank":1`, `"rank":-1`, false, 400, "value", "Patient.telecom[0].rank"},
		{"positive_int_overflow", `"rank":1`, `"rank":2147483648`, false, 400, "value", "Patient.telecom[0].rank"},
		{"unsigned_int_negative", basePhoto, `{"contentType":"image/png","data":"aGVsbG8=","size":-1}`, false, 400, "value", "Patient.photo[0].size"},
		{"unsigned_int_negative_zero", basePhoto, `{"contentType":"image/png","data":"aGVsbG8=","size":-0}`, false, 400, "value", "Patient.photo[0].size"},
		{"unsigned_int_zero_ok", basePhoto, `{"contentType":"image/png","data":"aGVsbG8=","size":0}`, false, 0, "", ""},
		{"decimal_string", baseExt, `{"url":"http://example.org/e","valueDecimal":"1.5"}`, false, 400, "structure", "Patient.extension[0].value.ofType(decimal)"},
		{"decimal_exponent_ok", baseExt, `{"url":"http://example.org/e","valueDecimal":1.50e-3}`, false, 0, "", ""},

		// code, id, uri, url, canonical, oid, uuid, base64Binary, markdown.
		{"code_double_space", `"active":true`, `"active":true,"language":"en  GB"`, false, 400, "value", "Patient.language"},
		{"code_leading_space", `"active":true`, `"active":true,"language":" en"`, false, 400, "value", "Patient.language"},
		{"code_trailing_space", `"active":true`, `"active":true,"language":"en "`, false, 400, "value", "Patient.language"},
		{"id_bad_chars", `"id":"p1"`, `"id":"p 1!"`, false, 400, "value", "Patient.id"},
		{"id_too_long", `"id":"p1"`, `"id":"` + strings.Repeat("a", 65) + `"`, false, 400, "value", "Patient.id"},
		{"id_null_update", `"id":"p1"`, `"id":null`, false, 400, "structure", "Patient.id"},
		{"id_bad_ignored_on_create", `"id":"p1"`, `"id":"p 1!"`, true, 0, "", ""},
		{"id_null_ignored_on_create", `"id":"p1"`, `"id":null`, true, 0, "", ""},
		{"id_number_on_create", `"id":"p1"`, `"id":12345`, true, 400, "structure", "Patient.id"},
		{"id_object_on_create", `"id":"p1"`, `"id":{"value":"p1"}`, true, 400, "structure", "Patient.id"},
		{"meta_version_ignored", `"versionId":"7"`, `"versionId":"not an id"`, false, 0, "", ""},
		{"meta_last_updated_ignored", `"lastUpdated":"2020-01-01T00:00:00Z"`, `"lastUpdated":[]`, true, 0, "", ""},
		{"meta_unknown", `"versionId":"7"`, `"versionId":"7","foo":1`, false, 400, "structure", "Patient.meta.foo"},
		{"element_id_bad_ok", `"family":"Smith","given"`, `"id":"any string is fine here","family":"Smith","given"`, false, 0, "", ""},
		{"uri_space", `"system":"urn:oid:1.2.3"`, `"system":"urn:oid:1.2 3"`, false, 400, "value", "Patient.identifier[1].system"},
		{"url_space", basePhoto, `{"contentType":"image/png","url":"http://a b"}`, false, 400, "value", "Patient.photo[0].url"},
		{"canonical_space", `"profile":["http://example.org/p"]`, `"profile":["http://example.org/ p"]`, false, 400, "value", "Patient.meta.profile[0]"},
		{"oid_leading_zero", baseExt, `{"url":"http://example.org/e","valueOid":"urn:oid:1.02"}`, false, 400, "value", "Patient.extension[0].value.ofType(oid)"},
		{"oid_no_prefix", baseExt, `{"url":"http://example.org/e","valueOid":"1.2.3"}`, false, 400, "value", "Patient.extension[0].value.ofType(oid)"},
		{"oid_ok", baseExt, `{"url":"http://example.org/e","valueOid":"urn:oid:2.16.840.1.113883"}`, false, 0, "", ""},
		{"uuid_upper", baseExt, `{"url":"http://example.org/e","valueUuid":"urn:uuid:A5E2B8F4-1C3D-4E5F-8A9B-0C1D2E3F4A5B"}`, false, 400, "value", "Patient.extension[0].value.ofType(uuid)"},
		{"uuid_ok", baseExt, `{"url":"http://example.org/e","valueUuid":"urn:uuid:a5e2b8f4-1c3d-4e5f-8a9b-0c1d2e3f4a5b"}`, false, 0, "", ""},
		{"base64_bad_length", basePhoto, `{"contentType":"image/png","data":"abc"}`, false, 400, "value", "Patient.photo[0].data"},
		{"base64_bad_char", basePhoto, `{"contentType":"image/png","data":"ab!d"}`, false, 400, "value", "Patient.photo[0].data"},
		{"base64_whitespace_ok", basePhoto, `{"contentType":"image/png","data":"aGVs\nbG8="}`, false, 0, "", ""},
		{"markdown_whitespace", baseExt, `{"url":"http://example.org/e","valueMarkdown":" \n "}`, false, 400, "value", "Patient.extension[0].value.ofType(markdown)"},

		// date.
		{"date_feb_30", `"birthDate":"1980-02-29"`, `"birthDate":"1980-02-30"`, false, 400, "value", "Patient.birthDate"},
		{"date_2023_02_29", `"birthDate":"1980-02-29"`, `"birthDate":"2023-02-29"`, false, 400, "value", "Patient.birthDate"},
		{"date_2024_02_29_ok", `"birthDate":"1980-02-29"`, `"birthDate":"2024-02-29"`, false, 0, "", ""},
		{"date_1900_02_29", `"birthDate":"1980-02-29"`, `"birthDate":"1900-02-29"`, false, 400, "value", "Patient.birthDate"},
		{"date_2000_02_29_ok", `"birthDate":"1980-02-29"`, `"birthDate":"2000-02-29"`, false, 0, "", ""},
		{"date_april_31", `"birthDate":"1980-02-29"`, `"birthDate":"1980-04-31"`, false, 400, "value", "Patient.birthDate"},
		{"date_month_13", `"birthDate":"1980-02-29"`, `"birthDate":"1980-13"`, false, 400, "value", "Patient.birthDate"},
		{"date_one_digit_month", `"birthDate":"1980-02-29"`, `"birthDate":"1980-2-29"`, false, 400, "value", "Patient.birthDate"},
		{"date_year_zero", `"birthDate":"1980-02-29"`, `"birthDate":"0000"`, false, 400, "value", "Patient.birthDate"},
		{"date_with_time", `"birthDate":"1980-02-29"`, `"birthDate":"1980-02-29T10:00:00Z"`, false, 400, "value", "Patient.birthDate"},
		{"date_slashes", `"birthDate":"1980-02-29"`, `"birthDate":"29/02/1980"`, false, 400, "value", "Patient.birthDate"},
		{"date_year_ok", `"birthDate":"1980-02-29"`, `"birthDate":"1980"`, false, 0, "", ""},
		{"date_month_ok", `"birthDate":"1980-02-29"`, `"birthDate":"1980-02"`, false, 0, "", ""},

		// dateTime, instant, time.
		{"datetime_no_seconds", `"deceasedBoolean":false`, `"deceasedDateTime":"2020-01-01T10:00Z"`, false, 400, "value", "Patient.deceased.ofType(dateTime)"},
		{"datetime_no_zone", `"deceasedBoolean":false`, `"deceasedDateTime":"2020-01-01T10:00:00"`, false, 400, "value", "Patient.deceased.ofType(dateTime)"},
		{"datetime_zone_too_big", `"deceasedBoolean":false`, `"deceasedDateTime":"2020-01-01T10:00:00+14:30"`, false, 400, "value", "Patient.deceased.ofType(dateTime)"},
		{"datetime_hour_24", `"deceasedBoolean":false`, `"deceasedDateTime":"2020-01-01T24:00:00Z"`, false, 400, "value", "Patient.deceased.ofType(dateTime)"},
		{"datetime_time_after_year", `"deceasedBoolean":false`, `"deceasedDateTime":"2020T10:00:00Z"`, false, 400, "value", "Patient.deceased.ofType(dateTime)"},
		{"datetime_feb_30", `"deceasedBoolean":false`, `"deceasedDateTime":"2020-02-30T10:00:00Z"`, false, 400, "value", "Patient.deceased.ofType(dateTime)"},
		{"datetime_ok", `"deceasedBoolean":false`, `"deceasedDateTime":"2020-01-01T10:00:00.123+14:00"`, false, 0, "", ""},
		{"datetime_year_ok", `"deceasedBoolean":false`, `"deceasedDateTime":"2020"`, false, 0, "", ""},
		{"instant_date_only", baseExt, `{"url":"http://example.org/e","valueInstant":"2020-01-01"}`, false, 400, "value", "Patient.extension[0].value.ofType(instant)"},
		{"instant_ok", baseExt, `{"url":"http://example.org/e","valueInstant":"2020-01-01T00:00:00.5Z"}`, false, 0, "", ""},
		{"time_hour_25", baseExt, `{"url":"http://example.org/e","valueTime":"25:00:00"}`, false, 400, "value", "Patient.extension[0].value.ofType(time)"},
		{"time_no_seconds", baseExt, `{"url":"http://example.org/e","valueTime":"10:00"}`, false, 400, "value", "Patient.extension[0].value.ofType(time)"},
		{"time_with_zone", baseExt, `{"url":"http://example.org/e","valueTime":"10:00:00Z"}`, false, 400, "value", "Patient.extension[0].value.ofType(time)"},
		{"time_ok", baseExt, `{"url":"http://example.org/e","valueTime":"10:00:00.25"}`, false, 0, "", ""},

		// Required bindings.
		{"gender_bad", `"gender":"female",`, `"gender":"F",`, false, 400, "code-invalid", "Patient.gender"},
		{"gender_case", `"gender":"female",`, `"gender":"Female",`, false, 400, "code-invalid", "Patient.gender"},
		{"name_use_bad", `"use":"official","family"`, `"use":"formal","family"`, false, 400, "code-invalid", "Patient.name[0].use"},
		{"telecom_system_bad", `"system":"phone"`, `"system":"mobile"`, false, 400, "code-invalid", "Patient.telecom[0].system"},
		{"telecom_use_bad", `"use":"home","rank"`, `"use":"cell","rank"`, false, 400, "code-invalid", "Patient.telecom[0].use"},
		{"address_use_bad", `"use":"home","type"`, `"use":"holiday","type"`, false, 400, "code-invalid", "Patient.address[0].use"},
		{"address_type_bad", `"type":"both"`, `"type":"mail"`, false, 400, "code-invalid", "Patient.address[0].type"},
		{"link_type_bad", `"type":"seealso"`, `"type":"sameas"`, false, 400, "code-invalid", "Patient.link[0].type"},
		{"identifier_use_bad", `"use":"official","system"`, `"use":"primary","system"`, false, 400, "code-invalid", "Patient.identifier[0].use"},
		{"narrative_status_bad", `"status":"generated"`, `"status":"draft"`, false, 400, "code-invalid", "Patient.text.status"},
		{"contact_gender_bad", baseContact, `{"relationship":[{"text":"mother"}],"name":{"family":"Smith"},"gender":"woman"}`, false, 400, "code-invalid", "Patient.contact[0].gender"},
		{"quantity_comparator_bad", baseExt, `{"url":"http://example.org/e","valueQuantity":{"value":1.50,"comparator":"=="}}`, false, 400, "code-invalid", "Patient.extension[0].value.ofType(Quantity).comparator"},

		// Choice types.
		{"deceased_both", `"deceasedBoolean":false`, `"deceasedBoolean":false,"deceasedDateTime":"2020"`, false, 400, "structure", "Patient.deceased"},
		{"multiple_birth_both", `"multipleBirthInteger":1`, `"multipleBirthInteger":1,"multipleBirthBoolean":true`, false, 400, "structure", "Patient.multipleBirth"},
		{"extension_value_both", baseExt, `{"url":"http://example.org/e","valueString":"x","valueCode":"y"}`, false, 400, "structure", "Patient.extension[0].value"},
		{"choice_companion_ok", `"deceasedBoolean":false`, `"deceasedDateTime":"2020","_deceasedDateTime":{"id":"d"}`, false, 0, "", ""},

		// Invariants.
		{"pat_1", baseContact, `{"relationship":[{"text":"mother"}],"gender":"female"}`, false, 400, "invariant", "Patient.contact[0]"},
		{"pat_1_organization_ok", baseContact, `{"organization":{"display":"Acme"}}`, false, 0, "", ""},
		{"per_1", basePeriod, `"period":{"start":"2003-01-01","end":"2002"}`, false, 400, "invariant", "Patient.identifier[1].period"},
		{"per_1_shared_precision_ok", basePeriod, `"period":{"start":"2002-06-30","end":"2002"}`, false, 0, "", ""},
		{"per_1_zones_ok", basePeriod, `"period":{"start":"2002-01-01T10:00:00+01:00","end":"2002-01-01T09:30:00Z"}`, false, 0, "", ""},
		{"per_1_times", basePeriod, `"period":{"start":"2002-01-01T10:00:00Z","end":"2002-01-01T09:30:00Z"}`, false, 400, "invariant", "Patient.identifier[1].period"},
		{"att_1", basePhoto, `{"data":"aGVsbG8="}`, false, 400, "invariant", "Patient.photo[0]"},
		{"cpt_2", `"system":"phone","value":"0123"`, `"value":"0123"`, false, 400, "invariant", "Patient.telecom[0]"},
		{"ext_1_both", baseExt, `{"url":"http://example.org/e","valueString":"x","extension":[{"url":"a","valueString":"y"}]}`, false, 400, "invariant", "Patient.extension[0]"},
		{"ext_1_neither", baseExt, `{"url":"http://example.org/e"}`, false, 400, "invariant", "Patient.extension[0]"},
		{"ext_nested_ok", baseExt, `{"url":"http://example.org/e","extension":[{"url":"a","valueTiming":{"repeat":{"dayOfWeek":["mon"],"when":["MORN"]}}}]}`, false, 0, "", ""},
		{"ext_nested_binding_bad", baseExt, `{"url":"http://example.org/e","extension":[{"url":"a","valueTiming":{"repeat":{"dayOfWeek":["monday"]}}}]}`, false, 400, "code-invalid", "Patient.extension[0].extension[0].value.ofType(Timing).repeat.dayOfWeek[0]"},

		// Narrative.
		{"div_no_namespace", baseDiv, `<div><p>Jo</p></div>`, false, 400, "value", "Patient.text.div"},
		{"div_not_div", baseDiv, `<p xmlns=\"http://www.w3.org/1999/xhtml\">Jo</p>`, false, 400, "value", "Patient.text.div"},
		{"div_not_well_formed", baseDiv, `<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Jo</div>`, false, 400, "value", "Patient.text.div"},
		{"div_plain_text", baseDiv, `Jo Smith`, false, 400, "value", "Patient.text.div"},
		{"div_trailing_content", baseDiv, baseDiv + `<p>x</p>`, false, 400, "value", "Patient.text.div"},
		{"div_script", baseDiv, `<div xmlns=\"http://www.w3.org/1999/xhtml\"><script>alert(1)</script>Jo</div>`, false, 400, "invariant", "Patient.text.div"},
		{"div_iframe", baseDiv, `<div xmlns=\"http://www.w3.org/1999/xhtml\">Jo<iframe src=\"http://x\"/></div>`, false, 400, "invariant", "Patient.text.div"},
		{"div_object", baseDiv, `<div xmlns=\"http://www.w3.org/1999/xhtml\">Jo<object data=\"x\"/></div>`, false, 400, "invariant", "Patient.text.div"},
		{"div_embed", baseDiv, `<div xmlns=\"http://www.w3.org/1999/xhtml\">Jo<embed src=\"x\"/></div>`, false, 400, "invariant", "Patient.text.div"},
		{"div_form", baseDiv, `<div xmlns=\"http://www.w3.org/1999/xhtml\"><form><input name=\"a\"/></form>Jo</div>`, false, 400, "invariant", "Patient.text.div"},
		{"div_input", baseDiv, `<div xmlns=\"http://www.w3.org/1999/xhtml\">Jo<input name=\"a\"/></div>`, false, 400, "invariant", "Patient.text.div"},
		{"div_onclick", baseDiv, `<div xmlns=\"http://www.w3.org/1999/xhtml\"><p onClick=\"x()\">Jo</p></div>`, false, 400, "invariant", "Patient.text.div"},
		{"div_javascript_url", baseDiv, `<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\" JavaScript:x()\">Jo</a></div>`, false, 400, "invariant", "Patient.text.div"},
		{"div_whitespace_only", baseDiv, `<div xmlns=\"http://www.w3.org/1999/xhtml\"> \n <p> </p></div>`, false, 400, "invariant", "Patient.text.div"},
		{"div_rich_ok", baseDiv, `<div xmlns=\"http://www.w3.org/1999/xhtml\">\n<table><tr><td>Jo&nbsp;&amp;&quot;</td></tr></table><img src=\"#a\" alt=\"\"/>\n</div>`, false, 0, "", ""},
		{"div_companion", `"div":"`, `"_div":{"id":"a"},"div":"`, false, 400, "structure", "Patient.text._div"},

		// NHS number (422 business rule).
		{"nhs_short", baseNHS, `"value":"943476591"`, false, 422, "business-rule", "Patient.identifier[0].value"},
		{"nhs_long", baseNHS, `"value":"94347659190"`, false, 422, "business-rule", "Patient.identifier[0].value"},
		{"nhs_spaces", baseNHS, `"value":"943 476 5919"`, false, 422, "business-rule", "Patient.identifier[0].value"},
		{"nhs_letters", baseNHS, `"value":"943476591X"`, false, 422, "business-rule", "Patient.identifier[0].value"},
		{"nhs_check_digit", baseNHS, `"value":"9434765918"`, false, 422, "business-rule", "Patient.identifier[0].value"},
		{"nhs_check_ten", baseNHS, `"value":"9991234560"`, false, 422, "business-rule", "Patient.identifier[0].value"},
		{"nhs_zeros", baseNHS, `"value":"0000000000"`, false, 422, "business-rule", "Patient.identifier[0].value"},
		{"nhs_missing_value", `,` + baseNHS, ``, false, 422, "business-rule", "Patient.identifier[0]"},
		{"nhs_synthetic_ok", baseNHS, `"value":"9991234578"`, false, 0, "", ""},
		{"nhs_synthetic_bad", baseNHS, `"value":"9991234579"`, false, 422, "business-rule", "Patient.identifier[0].value"},
		{"nhs_number_type", baseNHS, `"value":9434765919`, false, 400, "structure", "Patient.identifier[0].value"},
		{"nhs_whitespace_is_400", baseNHS, `"value":"  "`, false, 400, "value", "Patient.identifier[0].value"},
		{"nhs_second_different", baseOID, `"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9991234578"`, false, 422, "business-rule", "Patient.identifier[1]"},
		{"nhs_second_same", baseOID, `"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"`, true, 422, "business-rule", "Patient.identifier[1]"},
		{"nhs_second_without_value", baseOID, `"system":"https://fhir.nhs.uk/Id/nhs-number"`, false, 422, "business-rule", "Patient.identifier[1]"},
		{"nhs_other_system_same_value", baseOID, `"system":"urn:oid:1.2.3","value":"9434765919"`, false, 0, "", ""},

		// contained: kept as sent, only shape-checked.
		{"contained_ok", `"active":true`, `"active":true,"contained":[{"resourceType":"Organization","id":"o1","name":"X","extra":{"anything":[1]}}]`, false, 0, "", ""},
		{"contained_no_id", `"active":true`, `"active":true,"contained":[{"resourceType":"Organization","name":"X"}]`, false, 400, "required", "Patient.contained[0].id"},
		{"contained_bad_id", `"active":true`, `"active":true,"contained":[{"resourceType":"Organization","id":"o 1"}]`, false, 400, "required", "Patient.contained[0].id"},
		{"contained_no_type", `"active":true`, `"active":true,"contained":[{"resourceType":1,"id":"o1"}]`, false, 400, "required", "Patient.contained[0].resourceType"},
		{"contained_not_object", `"active":true`, `"active":true,"contained":["Organization"]`, false, 400, "structure", "Patient.contained[0]"},
		{"contained_not_array", `"active":true`, `"active":true,"contained":{"resourceType":"Organization","id":"o1"}`, false, 400, "structure", "Patient.contained"},
		{"contained_nested", `"active":true`, `"active":true,"contained":[{"resourceType":"Organization","id":"o1","contained":[{"resourceType":"Organization","id":"o2"}]}]`, false, 400, "invariant", "Patient.contained[0].contained"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.new
			if tt.old != "" {
				if strings.Count(patientBase, tt.old) != 1 {
					t.Fatalf("snippet %q occurs %d times in patientBase, want 1", tt.old, strings.Count(patientBase, tt.old))
				}
				body = strings.Replace(patientBase, tt.old, tt.new, 1)
			}
			p, issues, status := parsePatient([]byte(body), tt.forCreate)
			var want []issueSummary
			if tt.code != "" {
				want = []issueSummary{{tt.code, tt.expr}}
			}
			if status != tt.status {
				t.Errorf("parsePatient status = %d, want %d", status, tt.status)
			}
			if diff := cmp.Diff(want, summarize(issues)); diff != "" {
				t.Errorf("parsePatient issues mismatch (-want +got):\n%s", diff)
			}
			if (p != nil) != (status == 0) {
				t.Errorf("parsePatient returned resource %v with status %d", p != nil, status)
			}
		})
	}
}

// TestParsePatientOneNHSNumber: every NHS number after the first is reported against the first, with
// the rule named; the same number twice is refused too (UK Core's slice counts identifiers).
func TestParsePatientOneNHSNumber(t *testing.T) {
	nhs := func(v string) string { return `{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"` + v + `"}` }
	body := `{"resourceType":"Patient","identifier":[{"system":"urn:oid:1.2.3","value":"A1"},` +
		nhs("9434765919") + `,` + nhs("9991234578") + `,` + nhs("9434765919") + `]}`
	_, issues, status := parsePatient([]byte(body), true)
	want := []fhirIssue{
		fhirError("business-rule", "Patient.identifier[2]", "Patient.identifier[2]: is a second NHS number, different from Patient.identifier[1]'s; a Patient has one (UK Core Patient allows one NHS number: identifier:nhsNumber 0..1)."),
		fhirError("business-rule", "Patient.identifier[3]", "Patient.identifier[3]: repeats the NHS number of Patient.identifier[1]; send it once (UK Core Patient allows one NHS number: identifier:nhsNumber 0..1)."),
	}
	if diff := cmp.Diff(want, issues); diff != "" || status != 422 {
		t.Errorf("status %d, issues (-want +got):\n%s", status, diff)
	}
}

// TestParsePatientBaseValid guards the premise of TestParsePatientInvalid.
func TestParsePatientBaseValid(t *testing.T) {
	for _, forCreate := range []bool{true, false} {
		if _, issues, status := parsePatient([]byte(patientBase), forCreate); status != 0 {
			t.Fatalf("parsePatient(patientBase, %v) status = %d, issues %+v; want 0", forCreate, status, issues)
		}
	}
}

// TestParsePatientAllIssuesInOrder checks several defects are all reported, in document order.
func TestParsePatientAllIssuesInOrder(t *testing.T) {
	body := patientBase
	for _, r := range [][2]string{
		{`"id":"p1"`, `"id":"bad id"`},
		{baseNHS, `"value":"9434765918"`},
		{`"family":"Smith","given"`, `"family":"","given"`},
		{baseGiven, `"given":["Jo",null]`},
		{`"gender":"female",`, `"gender":"woman",`},
		{`"birthDate":"1980-02-29"`, `"birthDate":"2023-02-29","foo":true`},
		{`"deceasedBoolean":false`, `"deceasedBoolean":"no"`},
		{baseContact, `{"relationship":[{"text":"mother"}]}`},
	} {
		body = strings.Replace(body, r[0], r[1], 1)
	}
	_, issues, status := parsePatient([]byte(body), false)
	want := []issueSummary{
		{"value", "Patient.id"},
		{"business-rule", "Patient.identifier[0].value"},
		{"value", "Patient.name[0].family"},
		{"structure", "Patient.name[0].given[1]"},
		{"code-invalid", "Patient.gender"},
		{"value", "Patient.birthDate"},
		{"structure", "Patient.foo"},
		{"structure", "Patient.deceased.ofType(boolean)"},
		{"invariant", "Patient.contact[0]"},
	}
	if status != 400 {
		t.Errorf("parsePatient status = %d, want 400 (a 400 problem outranks the 422 one)", status)
	}
	if diff := cmp.Diff(want, summarize(issues)); diff != "" {
		t.Errorf("parsePatient issues mismatch (-want +got):\n%s", diff)
	}
}

// TestParsePatientDuplicateKeysAllReported checks every duplicate key is reported, not only the first.
func TestParsePatientDuplicateKeysAllReported(t *testing.T) {
	body := strings.Replace(patientBase, `"gender":"female",`, `"gender":"female","gender":"male",`, 1)
	body = strings.Replace(body, `"city":"Leeds"`, `"city":"Leeds","city":"York"`, 1)
	_, issues, status := parsePatient([]byte(body), true)
	want := []issueSummary{{"structure", "Patient.gender"}, {"structure", "Patient.address[0].city"}}
	if status != 400 {
		t.Errorf("parsePatient status = %d, want 400", status)
	}
	if diff := cmp.Diff(want, summarize(issues)); diff != "" {
		t.Errorf("parsePatient issues mismatch (-want +got):\n%s", diff)
	}
}

// TestPatientWithMeta checks the id and meta replacement and the exact output bytes.
func TestPatientWithMeta(t *testing.T) {
	tests := []struct {
		name      string
		give      string
		forCreate bool
		wantID    string
		want      string
	}{
		{
			name:      "create_replaces_id_and_meta",
			give:      `{"meta":{"versionId":"9","lastUpdated":"2001-01-01T00:00:00Z","tag":[{"code":"t"}]},"id":"old","resourceType":"Patient","multipleBirthInteger":2,"extension":[{"url":"http://e","valueDecimal":1.830}]}`,
			forCreate: true,
			wantID:    "",
			want:      `{"resourceType":"Patient","id":"new","meta":{"tag":[{"code":"t"}],"versionId":"3","lastUpdated":"2026-11-26T10:00:00.123Z"},"multipleBirthInteger":2,"extension":[{"url":"http://e","valueDecimal":1.830}]}`,
		},
		{
			name:      "update_keeps_body_id_for_caller",
			give:      `{"resourceType":"Patient","id":"abc","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">a &amp; b</div>"}}`,
			forCreate: false,
			wantID:    "abc",
			want:      `{"resourceType":"Patient","id":"abc","meta":{"versionId":"3","lastUpdated":"2026-11-26T10:00:00.123Z"},"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">a &amp; b</div>"}}`,
		},
	}
	lastUpdated := time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.UTC)
	// For an upstream server, which assigns them: no id on create, never a versionId or lastUpdated, and no
	// meta at all when nothing else is in it (an empty object is not valid FHIR).
	for _, tt := range []struct{ give, id, want string }{
		{`{"meta":{"versionId":"9","lastUpdated":"2001-01-01T00:00:00Z"},"id":"old","resourceType":"Patient","active":true}`, "", `{"resourceType":"Patient","active":true}`},
		{`{"resourceType":"Patient","meta":{"versionId":"9","tag":[{"code":"t"}]},"active":true}`, "", `{"resourceType":"Patient","meta":{"tag":[{"code":"t"}]},"active":true}`},
		{`{"resourceType":"Patient","id":"abc","meta":{"lastUpdated":"2001-01-01T00:00:00Z"}}`, "abc", `{"resourceType":"Patient","id":"abc"}`},
	} {
		p, issues, status := parsePatient([]byte(tt.give), true)
		if status != 0 {
			t.Fatalf("parsePatient(%s) status = %d, issues %+v; want 0", tt.give, status, issues)
		}
		if got := string(p.withMeta(tt.id, "", time.Time{})); got != tt.want {
			t.Errorf("withMeta(%q, \"\") of %s =\n%s\nwant\n%s", tt.id, tt.give, got, tt.want)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, issues, status := parsePatient([]byte(tt.give), tt.forCreate)
			if status != 0 {
				t.Fatalf("parsePatient status = %d, issues %+v; want 0", status, issues)
			}
			if got := p.bodyID; got != tt.wantID {
				t.Errorf("id() = %q, want %q", got, tt.wantID)
			}
			id := tt.wantID
			if id == "" {
				id = "new"
			}
			// Byte comparison on purpose: it proves the decimal 1.830 is written exactly as sent.
			if got := string(p.withMeta(id, "3", lastUpdated)); got != tt.want {
				t.Errorf("withMeta() =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// TestPatientSearchFields checks the search projection, including a null placeholder in given.
func TestPatientSearchFields(t *testing.T) {
	body := strings.Replace(patientBase, baseGiven, `"given":["Jo",null],"_given":[null,{"id":"x"}],"suffix":["PhD"],"text":"Ms Jo Smith"`, 1)
	p, issues, status := parsePatient([]byte(body), true)
	if status != 0 {
		t.Fatalf("parsePatient status = %d, issues %+v; want 0", status, issues)
	}
	want := patientSearchFields{
		Identifiers: []patientIdentifier{
			{System: "https://fhir.nhs.uk/Id/nhs-number", Value: "9434765919"},
			{System: "urn:oid:1.2.3", Value: "A1"},
		},
		Names:                []patientName{{Family: "Smith", Given: []string{"Jo"}, Prefix: []string{"Ms"}, Suffix: []string{"PhD"}, Text: "Ms Jo Smith"}},
		Gender:               "female",
		BirthDate:            "1980-02-29",
		Active:               "true",
		Telecoms:             []patientTelecom{{System: "phone", Value: "0123"}},
		Addresses:            []patientAddress{{Line: []string{"1 High St"}, City: "Leeds", PostalCode: "LS1 1AA"}},
		GeneralPractitioners: []patientReference{{Reference: "Practitioner/1"}},
		ManagingOrganization: []patientReference{{Reference: "Organization/1"}},
	}
	if diff := cmp.Diff(want, p.searchFields(), cmp.AllowUnexported(patientSearchFields{})); diff != "" {
		t.Errorf("searchFields() mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(patientSearchFields{}, mustParse(t, `{"resourceType":"Patient","photo":[{"title":"x"}]}`).searchFields()); diff != "" {
		t.Errorf("searchFields() of an empty patient mismatch (-want +got):\n%s", diff)
	}
	pds := mustParse(t, `{"resourceType":"Patient","active":false,"deceasedDateTime":"2010-10-10T10:10:10+01:00",
		"address":[{"text":"1 High St, Leeds","line":["Flat 2","1 High St"],"district":"West Yorkshire","state":"England","country":"GB"}],
		"telecom":[{"system":"email","value":"Jo@Example.org"},{"use":"home"}],
		"generalPractitioner":[{"type":"Organization","identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"Y12345"}}],
		"managingOrganization":{"reference":"Organization/o1","identifier":{"value":"X1"}}}`)
	wantPDS := patientSearchFields{Active: "false", DeceasedDateTime: "2010-10-10T10:10:10+01:00",
		Telecoms: []patientTelecom{{System: "email", Value: "Jo@Example.org"}, {}},
		Addresses: []patientAddress{{Text: "1 High St, Leeds", Line: []string{"Flat 2", "1 High St"}, District: "West Yorkshire",
			State: "England", Country: "GB"}},
		GeneralPractitioners: []patientReference{{Identifier: patientIdentifier{"https://fhir.nhs.uk/Id/ods-organization-code", "Y12345"}}},
		ManagingOrganization: []patientReference{{Reference: "Organization/o1", Identifier: patientIdentifier{Value: "X1"}}},
	}
	if diff := cmp.Diff(wantPDS, pds.searchFields()); diff != "" {
		t.Errorf("searchFields() of a PDS-style patient mismatch (-want +got):\n%s", diff)
	}
}

// mustParse parses a Patient that must be valid.
func mustParse(t *testing.T, body string) *patientResource {
	t.Helper()
	p, issues, status := parsePatient([]byte(body), true)
	if status != 0 {
		t.Fatalf("parsePatient(%s) status = %d, issues %+v", body, status, issues)
	}
	return p
}

// TestValidFHIRID checks the id rule the handlers apply to URL ids.
func TestValidFHIRID(t *testing.T) {
	tests := []struct {
		give string
		want bool
	}{
		{"a", true},
		{"Patient-1.2", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{strings.Repeat("a", 65), false},
		{"a b", false},
		{"a_b", false},
		{"a/b", false},
		{"é", false},
	}
	for _, tt := range tests {
		if got := validFHIRID(tt.give); got != tt.want {
			t.Errorf("validFHIRID(%q) = %v, want %v", tt.give, got, tt.want)
		}
	}
}

// TestFHIRValidNHSNumber checks Modulus 11 on the worked examples of fhir.md section 8.
func TestFHIRValidNHSNumber(t *testing.T) {
	tests := []struct {
		give string
		want bool
	}{
		{"9434765919", true},
		{"9000000009", true},
		{"9000000017", true},
		{"9912003888", true},
		{"9991234578", true},
		{"9912003890", false}, // UK Core BabyPatient: the check digit should be 6
		{"9991234579", false},
		{"9991234560", false}, // stem 999123456 gives a check of 10
		{"0000000000", false},
		{"943476591", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := fhirValidNHSNumber(tt.give); got != tt.want {
			t.Errorf("fhirValidNHSNumber(%q) = %v, want %v", tt.give, got, tt.want)
		}
	}
}

// FuzzParsePatient checks parsePatient never panics and that what it accepts, it accepts again once served.
func FuzzParsePatient(f *testing.F) {
	for _, body := range patientExamples(f, "valid") {
		f.Add(body, true)
	}
	for _, body := range patientExamples(f, "edge") {
		f.Add(body, false)
	}
	f.Add([]byte(patientBase), false)
	f.Add([]byte(`{"resourceType":"Patient","name":[{"given":["A",null],"_given":[null,{"id":"x"}]}]}`), true)
	f.Fuzz(func(t *testing.T, body []byte, forCreate bool) {
		p, issues, status := parsePatient(body, forCreate)
		if status == 0 {
			out := p.withMeta("fuzz", "1", time.Unix(0, 0))
			if _, issues2, status2 := parsePatient(out, false); status2 != 0 {
				t.Fatalf("withMeta output does not re-parse: %d %+v\n%s", status2, issues2, out)
			}
			_ = p.searchFields()
			return
		}
		if len(issues) == 0 || status != 400 && status != 422 {
			t.Fatalf("status %d with %d issues", status, len(issues))
		}
	})
}

// BenchmarkPatientServe is what a create costs in this file: parse and validate each official example,
// then write it back with withMeta (no HTTP, no store).
func BenchmarkPatientServe(b *testing.B) {
	examples := patientExamples(b, "valid")
	lastUpdated := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	for b.Loop() {
		for _, body := range examples {
			p, _, status := parsePatient(body, true)
			if status != 0 {
				b.Fatalf("status %d", status)
			}
			_ = p.withMeta("new-id", "1", lastUpdated)
		}
	}
	b.ReportMetric(float64(len(examples)), "examples/op")
}

// BenchmarkPatientWithMeta is withMeta alone, over the official examples.
func BenchmarkPatientWithMeta(b *testing.B) {
	var resources []*patientResource
	for _, body := range patientExamples(b, "valid") {
		p, _, _ := parsePatient(body, true)
		resources = append(resources, p)
	}
	lastUpdated := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range resources {
			_ = p.withMeta("new-id", "1", lastUpdated)
		}
	}
}
