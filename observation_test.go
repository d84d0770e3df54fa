package main

// Tests of the calculators' FHIR representation: every Observation is read with the service's strict
// JSON reader and validated against the official R4 JSON schema (an extract, testdata/fhir/schema),
// with the codes each equation must carry, content negotiation, and patient_id's access rules.

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"github.com/google/go-cmp/cmp"
)

// loadObservationSchema parses the R4 Observation schema extract once per test binary.
var loadObservationSchema = sync.OnceValues(func() (map[string]any, error) {
	b, err := os.ReadFile("testdata/fhir/schema/observation.schema.json")
	if err != nil {
		return nil, err
	}
	var s map[string]any
	return s, json.Unmarshal(b, &s)
})

// r4Problems reads body with the strict reader (one object, valid UTF-8, no duplicate keys) and
// returns every way it breaks the R4 schema's Observation, and the rules the schema cannot state: no
// null, "", [] or {} (FHIR JSON), at most one value[x] (Observation and each component) and one
// effective[x], and the invariants obs-6 and obs-7 (observationRules).
func r4Problems(t testing.TB, body []byte) (v any, problems []string) {
	t.Helper()
	schema, err := loadObservationSchema()
	if err != nil {
		t.Fatalf("R4 schema extract: %v", err)
	}
	// The strict reader accepts exactly what encoding/json accepts, so once it finds one object without
	// duplicate keys, encoding/json's tree is the same document, in the form the validator walks.
	if _, dups, jerr := readJSON(body, 32); jerr != nil || len(dups) > 0 {
		return nil, []string{"not one strict JSON object"}
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	problems = validate(schema, resolve(schema, "#/definitions/Observation"), v, "Observation")
	var walk func(any, string)
	walk = func(x any, at string) {
		switch x := x.(type) {
		case nil:
			problems = append(problems, at+": null")
		case string:
			if x == "" {
				problems = append(problems, at+": empty string")
			}
		case []any:
			if len(x) == 0 {
				problems = append(problems, at+": empty array")
			}
			for i, e := range x {
				walk(e, at+"["+strconv.Itoa(i)+"]")
			}
		case map[string]any:
			if len(x) == 0 {
				problems = append(problems, at+": empty object")
			}
			for k, e := range x {
				walk(e, at+"."+k)
			}
		}
	}
	walk(v, "Observation")
	if o, ok := v.(map[string]any); ok {
		problems = append(problems, observationRules(o)...)
	}
	return v, problems
}

// observationRules checks what the R4 JSON schema lists as independent optional properties but the
// specification restricts (hl7.org/fhir/R4/observation.html): a choice type [x] takes one of its types
// only, obs-6 "dataAbsentReason SHALL only be present if Observation.value[x] is not present", and
// obs-7 "If Observation.code is the same as an Observation.component.code then the value element
// associated with the code SHALL NOT be present" (FHIRPath: value.empty() or component.code.where(
// coding.intersect(%resource.code.coding).exists()).empty(); codings compared by system and code).
func observationRules(o map[string]any) (problems []string) {
	one := func(m map[string]any, prefix, at string) bool {
		keys := choiceKeys(m, prefix)
		if len(keys) > 1 {
			problems = append(problems, fmt.Sprintf("%s: %s[x] more than once: %v", at, prefix, keys))
		}
		return len(keys) > 0
	}
	hasValue := one(o, "value", "Observation")
	one(o, "effective", "Observation")
	if _, ok := o["dataAbsentReason"]; ok && hasValue {
		problems = append(problems, "Observation: obs-6: dataAbsentReason with a value[x]")
	}
	codings := func(code any) map[string]bool {
		set := map[string]bool{}
		for _, c := range asSlice(mapOf(code)["coding"]) {
			set[fmt.Sprint(mapOf(c)["system"], "|", mapOf(c)["code"])] = true
		}
		return set
	}
	own := codings(o["code"])
	for i, c := range asSlice(o["component"]) {
		at := "Observation.component[" + strconv.Itoa(i) + "]"
		one(mapOf(c), "value", at)
		for k := range codings(mapOf(c)["code"]) {
			if own[k] && hasValue {
				problems = append(problems, fmt.Sprintf("%s: obs-7: the Observation's code %s with an Observation value[x]", at, k))
			}
		}
	}
	return problems
}

// choiceKeys are the keys of m that are prefix followed by a type name (valueQuantity, valueString).
func choiceKeys(m map[string]any, prefix string) []string {
	var keys []string
	for k := range m {
		if rest, ok := strings.CutPrefix(k, prefix); ok && rest != "" && unicode.IsUpper(rune(rest[0])) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// fhirRequest is req asking for a FHIR answer.
func fhirRequest(req *http.Request) *http.Request {
	req.Header.Set("Accept", "application/fhir+json")
	return req
}

// TestObservationsValidateAgainstR4Schema asks for one published reference case of every formula as an
// Observation, and checks it validates against the R4 schema, carries the codes the equation has
// (LOINC and UK SNOMED CT, as the issue and their sources give them; none where no code exists), and
// the same value as the JSON answer.
func TestObservationsValidateAgainstR4Schema(t *testing.T) {
	h := newTestServer(t)
	wantCodes := map[string][]string{
		formula2021:       {"http://loinc.org|98979-8", "http://snomed.info/sct|1011481000000105"},
		formula2009:       {"http://loinc.org|62238-1", "http://snomed.info/sct|1011481000000105"},
		formula2021CrCysC: {"http://loinc.org|98980-6"},
		formula2012CysC:   {"http://loinc.org|50210-4", "http://snomed.info/sct|1011491000000107"},
		formulaU25Cr:      nil,
		formulaU25CysC:    {"http://loinc.org|50210-4"},
		formulaU25Avg:     nil,
		formulaSchwartz:   {"http://loinc.org|50384-7"},
		formulaCG:         {"http://loinc.org|35591-7", "http://snomed.info/sct|968191000000100"},
	}
	type call struct {
		formula string
		json    *http.Request
		fhir    *http.Request
	}
	var calls []call
	seen := map[string]bool{}
	for _, ref := range publishedEGFR {
		if !seen[ref.formula] {
			seen[ref.formula] = true
			calls = append(calls, call{ref.formula, postEGFR(refBody(ref)), fhirRequest(postEGFR(refBody(ref)))})
		}
	}
	for _, ref := range publishedCrCl[:2] {
		body := crclBody(ref.sex, ref.scrUmolL, ref.age, ref.weightKg)
		calls = append(calls, call{formulaCG, postCrCl(body), fhirRequest(postCrCl(body))})
	}
	for _, c := range calls {
		res := do(t, h, c.fhir)
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != fhirContentType || res.Header.Get("Vary") != "Accept" {
			t.Fatalf("%s: status %d, Content-Type %q, Vary %q", c.formula, res.StatusCode, res.Header.Get("Content-Type"), res.Header.Get("Vary"))
		}
		v, problems := r4Problems(t, readAll(t, res.Body))
		for _, p := range problems {
			t.Errorf("%s: %s", c.formula, p)
		}
		o := v.(map[string]any)
		var codes []string
		for _, cd := range asSlice(mapOf(o["code"])["coding"]) {
			codes = append(codes, mapOf(cd)["system"].(string)+"|"+mapOf(cd)["code"].(string))
		}
		if diff := cmp.Diff(wantCodes[c.formula], codes); diff != "" {
			t.Errorf("%s: codes (-want +got):\n%s", c.formula, diff)
		}
		plain := decodeBody[map[string]any](t, do(t, h, c.json))
		value := mapOf(o["valueQuantity"])["value"]
		if want := plain["egfr_ml_min_1_73m2"]; c.formula == formulaCG && value != plain["crcl_ml_min"] || c.formula != formulaCG && value != want {
			t.Errorf("%s: Observation value %v, JSON answer %v", c.formula, value, plain)
		}
	}
	if len(calls) != len(wantCodes)+1 {
		t.Errorf("%d calls for %d formulas: a formula lacks a reference value", len(calls), len(wantCodes))
	}
}

// TestObservationContent compares whole Observations, with a fixed clock, for an adult eGFR, a child
// under 2 (no KDIGO category) and a creatinine clearance.
func TestObservationContent(t *testing.T) {
	at := time.Date(2026, 11, 26, 10, 36, 22, 9_000_000, time.FixedZone("BST", 3600))
	h := newServer(slog.New(slog.DiscardHandler), testConfig(t), testMetrics(), func() bool { return true }, openapiJSON, testDocs(t), testStore(t), testVerifier(t),
		func() time.Time { return at })
	lab := `"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory","display":"Laboratory"}]}]`
	tests := []struct {
		name string
		req  *http.Request
		want string
	}{
		{"CKD-EPI 2009", postEGFR(`{"sex":"female","serum_creatinine_umol_l":110,"age":72,"formula":"CKD-EPI 2009"}`), `{"resourceType":"Observation","status":"final",` + lab + `,
			"code":{"coding":[{"system":"http://loinc.org","code":"62238-1","display":"Glomerular filtration rate [Volume Rate/Area] in Serum, Plasma or Blood by Creatinine-based formula (CKD-EPI)/1.73 sq M"},
				{"system":"http://snomed.info/sct","code":"1011481000000105","display":"Estimated glomerular filtration rate using creatinine Chronic Kidney Disease Epidemiology Collaboration equation per 1.73 square metres"}],
				"text":"eGFR (CKD-EPI 2009 creatinine)"},
			"effectiveDateTime":"2026-11-26T09:36:22.009Z",
			"valueQuantity":{"value":43.2,"unit":"mL/min/1.73m2","system":"http://unitsofmeasure.org","code":"mL/min/{1.73_m2}"},
			"method":{"text":"CKD-EPI 2009 creatinine equation without the ethnicity coefficient (Levey et al., Ann Intern Med 2009;150:604-12; NICE NG203)"},
			"note":[{"text":"Reported as 43 mL/min/1.73 m² (the whole number, as UK laboratories report eGFR); KDIGO GFR category G3b. Not valid in acute kidney injury or other non-steady states, in pregnancy, or at extremes of muscle mass."}]}`},
		{"CKiD U25 under 2", postEGFR(`{"sex":"male","age":1.5,"formula":"CKiD U25","serum_creatinine_umol_l":25,"height_cm":80}`), `{"resourceType":"Observation","status":"final",` + lab + `,
			"code":{"text":"eGFR (CKiD U25 creatinine)"},
			"effectiveDateTime":"2026-11-26T09:36:22.009Z",
			"valueQuantity":{"value":101.5,"unit":"mL/min/1.73m2","system":"http://unitsofmeasure.org","code":"mL/min/{1.73_m2}"},
			"method":{"text":"CKiD U25 creatinine equation (Pierce et al., Kidney Int 2021;99:948-956)"},
			"note":[{"text":"Reported as >90 mL/min/1.73 m² (the whole number, as UK laboratories report eGFR); no KDIGO GFR category under 2 years. Not valid in acute kidney injury or other non-steady states, in pregnancy, or at extremes of muscle mass."}]}`},
		{"Cockcroft-Gault", postCrCl(`{"sex":"female","age":80,"weight_kg":60,"serum_creatinine_umol_l":110}`), `{"resourceType":"Observation","status":"final",` + lab + `,
			"code":{"coding":[{"system":"http://loinc.org","code":"35591-7","display":"Creatinine renal clearance predicted by Cockcroft-Gault formula"},
				{"system":"http://snomed.info/sct","code":"968191000000100","display":"Estimated creatinine clearance using Cockcroft-Gault formula"}],
				"text":"Creatinine clearance (Cockcroft-Gault)"},
			"effectiveDateTime":"2026-11-26T09:36:22.009Z",
			"valueQuantity":{"value":34.2,"unit":"mL/min","system":"http://unitsofmeasure.org","code":"mL/min"},
			"method":{"text":"Cockcroft-Gault equation with actual body weight (Cockcroft & Gault, Nephron 1976;16:31-41)"},
			"note":[{"text":` + strconv.Quote(mhraCrClAdvice) + `}]}`},
	}
	for _, tt := range tests {
		res := do(t, h, fhirRequest(tt.req))
		var want any
		if err := json.Unmarshal([]byte(tt.want), &want); err != nil {
			t.Fatalf("%s: bad want: %v", tt.name, err)
		}
		if diff := cmp.Diff(want, decodeBody[any](t, res)); diff != "" {
			t.Errorf("%s: Observation (-want +got):\n%s", tt.name, diff)
		}
	}
}

// TestR4SchemaCatchesDrift proves the schema check is not vacuous: an Observation broken in each of
// these ways must be reported.
func TestR4SchemaCatchesDrift(t *testing.T) {
	res := do(t, newTestServer(t), fhirRequest(postEGFR(`{"sex":"male","serum_creatinine_umol_l":88,"age":50}`)))
	good := string(readAll(t, res.Body))
	if _, problems := r4Problems(t, []byte(good)); len(problems) > 0 {
		t.Fatalf("the real Observation fails: %v", problems)
	}
	loinc := `{"coding":[{"system":"http://loinc.org","code":"98979-8"}]}`
	for _, tt := range []struct{ old, new, problem string }{
		{`"status":"final"`, `"status":"done"`, ""},
		{`"status":"final"`, `"status":"final","conclusion":"x"`, ""},
		{`"resourceType":"Observation"`, `"resourceType":"Observations"`, ""},
		{`"value":92.2`, `"value":"92.2"`, ""},
		{`"effectiveDateTime":"`, `"effectiveDateTime":"20261-`, ""},
		{`"system":"http://loinc.org"`, `"system":"http://loinc.org","userSelected":"yes"`, ""},
		{`"status":"final"`, `"status":"final","status":"final"`, ""},
		{`"note":[{`, `"note":[],"x":[{`, ""},
		{`"text":"eGFR (CKD-EPI 2021 creatinine)"`, `"text":""`, ""},
		{`"status":"final"`, `"status":"final","contained":[{"resourceType":"Patient"}]`, ""},
		// The schema accepts these: each must be caught by observationRules.
		{`"valueQuantity":{`, `"valueString":"92","valueQuantity":{`, "value[x] more than once"},
		{`"effectiveDateTime":"`, `"effectiveInstant":"2026-01-01T00:00:00Z","effectiveDateTime":"`, "effective[x] more than once"},
		{`"valueQuantity":{`, `"dataAbsentReason":{"text":"x"},"valueQuantity":{`, "obs-6"},
		{`"status":"final"`, `"status":"final","component":[{"code":` + loinc + `}]`, "obs-7"},
		{`"status":"final"`, `"status":"final","component":[{"code":{"text":"x"},"valueString":"a","valueBoolean":true}]`, "component[0]: value[x] more than once"},
	} {
		bad := strings.Replace(good, tt.old, tt.new, 1)
		if bad == good {
			t.Fatalf("%q not in the Observation", tt.old)
		}
		_, problems := r4Problems(t, []byte(bad))
		if len(problems) == 0 || tt.problem != "" && !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tt.problem) }) {
			t.Errorf("%s -> %s: problems %q, want one with %q", tt.old, tt.new, problems, tt.problem)
		}
	}
	// A component with its own code and value is allowed next to the Observation's value (obs-7).
	fine := strings.Replace(good, `"status":"final"`, `"status":"final","component":[{"code":{"text":"x"},"valueString":"a"}]`, 1)
	if _, problems := r4Problems(t, []byte(fine)); len(problems) > 0 {
		t.Errorf("a component with another code: %v", problems)
	}
}

// TestSpecObservationExamples runs every application/fhir+json Observation example in openapi.json
// (the 200 answers of POST /egfr and POST /crcl) through the same R4 check as the service's answers,
// so the documented examples cannot drift from R4 unnoticed.
func TestSpecObservationExamples(t *testing.T) {
	spec := mustSpec(t)
	var checked []string
	for path, item := range spec["paths"].(map[string]any) {
		for method, op := range mapOf(item) {
			for status, res := range mapOf(mapOf(op)["responses"]) {
				media := mapOf(mapOf(resolveResponse(spec, res)["content"])["application/fhir+json"])
				examples := []any{media["example"]}
				for _, ex := range mapOf(media["examples"]) {
					examples = append(examples, mapOf(ex)["value"])
				}
				for _, ex := range examples {
					if mapOf(ex)["resourceType"] != "Observation" {
						continue
					}
					at := strings.ToUpper(method) + " " + path + " " + status
					checked = append(checked, at)
					b, err := json.Marshal(ex)
					if err != nil {
						t.Fatal(err)
					}
					_, problems := r4Problems(t, b)
					for _, p := range problems {
						t.Errorf("%s example: %s", at, p)
					}
				}
			}
		}
	}
	slices.Sort(checked)
	if diff := cmp.Diff([]string{"POST /crcl 200", "POST /egfr 200"}, checked); diff != "" {
		t.Errorf("Observation examples checked (-want +got):\n%s", diff)
	}
}

// TestCalculatorAccept checks content negotiation: an Observation only when Accept prefers
// application/fhir+json; errors stay problem details, as this is not a FHIR route.
func TestCalculatorAccept(t *testing.T) {
	h := newTestServer(t)
	body := `{"sex":"male","serum_creatinine_umol_l":88,"age":50}`
	for _, tt := range []struct {
		accept []string
		want   string
	}{
		{nil, "application/json"},
		{[]string{"application/json"}, "application/json"},
		{[]string{"*/*"}, "application/json"},
		{[]string{"text/html"}, "application/json"},
		{[]string{"application/fhir+json"}, fhirContentType},
		{[]string{"application/fhir+json; fhirVersion=4.0"}, fhirContentType},
		{[]string{"application/json;q=0.5, application/fhir+json"}, fhirContentType},
		{[]string{"application/json", "application/fhir+json"}, fhirContentType},
		{[]string{"application/fhir+json;q=0.5, application/json"}, "application/json"},
		{[]string{"application/fhir+json;q=0"}, "application/json"},
		{[]string{"application/fhir+json;q=x"}, "application/json"},
		{[]string{"application/json+fhir"}, "application/json"},
	} {
		for _, path := range []string{"/egfr", "/crcl"} {
			b := body
			if path == "/crcl" {
				b = `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"weight_kg":70}`
			}
			req := postEGFR(b)
			req.URL.Path = path
			req.Header["Accept"] = tt.accept
			res := do(t, h, req)
			if got := res.Header.Get("Content-Type"); res.StatusCode != 200 || got != tt.want {
				t.Errorf("%s Accept %q: status %d, Content-Type %q, want %q", path, tt.accept, res.StatusCode, got, tt.want)
			}
		}
	}
	res := do(t, h, fhirRequest(postEGFR(`{"sex":"male","serum_creatinine_umol_l":88,"age":17}`)))
	if res.StatusCode != 422 || res.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("a 422 asked as FHIR: status %d, Content-Type %q, want a 422 problem", res.StatusCode, res.Header.Get("Content-Type"))
	}
}

// TestObservationPatient checks patient_id: it needs a token that may read Patients before the store
// is asked (so a caller without one learns nothing about which Patients exist), then a stored Patient
// that is not deleted; then subject refers to it.
func TestObservationPatient(t *testing.T) {
	h := newTestServer(t)
	li := localTestIssuer(t)
	id, gone := storedAndDeletedPatients(t, h)
	calc := func(path, patient, token string) *http.Response {
		body := `{"sex":"female","serum_creatinine_umol_l":110,"age":72,"patient_id":` + strconv.Quote(patient)
		if path == "/crcl" {
			body += `,"weight_kg":58`
		}
		req := fhirRequest(postEGFR(body + "}"))
		req.URL.Path = path
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		return do(t, h, req)
	}
	reader, other := li.token(t, "user/Patient.read"), li.token(t, "user/Observation.read")
	for _, path := range []string{"/egfr", "/crcl"} {
		for _, tt := range []struct {
			name, patient, token string
			want                 int
			errType              string
		}{
			{"no token, existing Patient", id, "", 401, "unauthorized"},
			{"no token, unknown Patient", "nobody", "", 401, "unauthorized"},
			{"bad token", id, "not-a-jwt", 401, "unauthorized"},
			{"no Patient scope, existing Patient", id, other, 403, "forbidden"},
			{"no Patient scope, unknown Patient", "nobody", other, 403, "forbidden"},
			{"unknown Patient", "nobody", reader, 422, "not_found"},
			{"deleted Patient", gone, reader, 422, "not_found"},
			{"stored Patient", id, reader, 200, ""},
		} {
			res := calc(path, tt.patient, tt.token)
			if res.StatusCode != tt.want {
				t.Errorf("%s %s: status %d, want %d", path, tt.name, res.StatusCode, tt.want)
				continue
			}
			if tt.want == 200 {
				o := decodeBody[map[string]any](t, res)
				if got := mapOf(o["subject"])["reference"]; got != "Patient/"+id {
					t.Errorf("%s %s: subject %v", path, tt.name, got)
				}
				continue
			}
			p := decodeBody[problem](t, res)
			if len(p.Errors) != 1 || p.Errors[0].Type != tt.errType {
				t.Errorf("%s %s: errors %+v, want one %s", path, tt.name, p.Errors, tt.errType)
			}
			if tt.want == 401 && !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s: WWW-Authenticate %q", path, tt.name, res.Header.Get("WWW-Authenticate"))
			}
		}
	}
}

// TestObservationPatientOrder checks what patient_id meets before the store: an invalid body is a 422
// before the token is looked at, and without authentication configured the answer is always 401.
func TestObservationPatientOrder(t *testing.T) {
	h := newTestServer(t)
	reader := localTestIssuer(t).token(t, "user/Patient.read")
	res := do(t, h, fhirRequest(postEGFR(`{"sex":"female","serum_creatinine_umol_l":110,"age":12,"patient_id":"nobody"}`)))
	if p := decodeBody[problem](t, res); res.StatusCode != 422 || len(p.Errors) != 1 || p.Errors[0].Loc[1] != "age" {
		t.Errorf("invalid body with patient_id, no token: status %d, errors %+v", res.StatusCode, p.Errors)
	}
	open := newServer(slog.New(slog.DiscardHandler), config{}, testMetrics(), func() bool { return true }, openapiJSON, testDocs(t), testStore(t), nil, time.Now)
	req := fhirRequest(postEGFR(`{"sex":"female","serum_creatinine_umol_l":110,"age":72,"patient_id":"p1"}`))
	req.Header.Set("Authorization", "Bearer "+reader)
	if res := do(t, open, req); res.StatusCode != 401 {
		t.Errorf("auth not configured: status %d, want 401", res.StatusCode)
	}
}

// storedAndDeletedPatients creates two Patients through h and deletes the second.
func storedAndDeletedPatients(t *testing.T, h http.Handler) (stored, deleted string) {
	t.Helper()
	stored = decodeBody[map[string]any](t, do(t, h, postPatient(`{"resourceType":"Patient","gender":"female","birthDate":"1954-02-11"}`)))["id"].(string)
	deleted = decodeBody[map[string]any](t, do(t, h, postPatient(`{"resourceType":"Patient","gender":"male"}`)))["id"].(string)
	if res := do(t, h, httptest.NewRequest(http.MethodDelete, "/Patient/"+deleted, nil)); res.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: status %d", res.StatusCode)
	}
	return stored, deleted
}

// TestEveryResultFormulaIsCoded checks codingFor knows every formula a response can name (the spec's
// enumerations), so no valid request can reach its panic.
func TestEveryResultFormulaIsCoded(t *testing.T) {
	spec := mustSpec(t)
	formulas := asSlice(resolve(spec, "#/components/schemas/EGFRResult")["properties"].(map[string]any)["formula"].(map[string]any)["enum"])
	formulas = append(formulas, resolve(spec, "#/components/schemas/CrClResult")["properties"].(map[string]any)["formula"].(map[string]any)["const"])
	for _, f := range formulas {
		if c := codingFor(f.(string)); c.text == "" || c.method == "" {
			t.Errorf("%s: coding %+v", f, c)
		}
	}
}
