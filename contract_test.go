package main

// The contract tests: openapi.json must describe exactly what the handlers do. Every response the
// handler tests produce goes through checkContract (via the do helper in handlers_test.go), and the
// route table must equal the spec's paths.

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// undocumentedRoutes are served but deliberately left out of the spec: the documentation itself.
var undocumentedRoutes = []string{"GET /openapi.json", "GET /docs", "GET /docs/"}

// loadSpecs parses the embedded openapi.json once per test binary: as it is, and as it is served with
// an upstream FHIR server as the store (version ids are FHIR ids). They are never modified.
var loadSpecs = sync.OnceValues(func() ([2]map[string]any, error) {
	var specs [2]map[string]any
	for i := range specs {
		if err := json.Unmarshal(openapiJSON, &specs[i]); err != nil {
			return specs, err
		}
	}
	upstreamVersionPatterns(specs[1])
	return specs, nil
})

// mustSpec is the spec the responses of the tests' store are checked against (see testStore).
func mustSpec(t testing.TB) map[string]any { return mustSpecFor(t, testingUpstream()) }

// mustSpecFor is the spec of a service on the journal, or on an upstream FHIR server.
func mustSpecFor(t testing.TB, upstream bool) map[string]any {
	t.Helper()
	specs, err := loadSpecs()
	if err != nil {
		t.Fatalf("parse openapi.json: %v", err)
	}
	if upstream {
		return specs[1]
	}
	return specs[0]
}

func TestRouteParity(t *testing.T) {
	spec := mustSpec(t)
	var served []string
	for _, rt := range routes(slog.New(slog.DiscardHandler), testConfig(t), func() bool { return true }, openapiJSON, testDocs(t), testStore(t), testVerifier(t), time.Now) {
		key := rt.method + " " + rt.pattern
		if !slices.Contains(undocumentedRoutes, key) {
			served = append(served, key)
		}
	}
	var documented []string
	for p, item := range spec["paths"].(map[string]any) {
		for m := range item.(map[string]any) {
			switch m {
			case "get", "put", "post", "delete", "patch", "head", "options", "trace":
				documented = append(documented, strings.ToUpper(m)+" "+p)
			}
		}
	}
	sort.Strings(served)
	sort.Strings(documented)
	if diff := cmp.Diff(documented, served); diff != "" {
		t.Errorf("routes served vs documented in openapi.json (-documented +served):\n%s", diff)
	}
}

// TestSpecBoundsMatchValidation checks that the numeric bounds a client reads in the spec are the
// bounds the validation functions enforce: for POST /egfr the widest any formula accepts (each
// formula's own limits are tested in handlers_test.go), for POST /crcl the adult ones.
func TestSpecBoundsMatchValidation(t *testing.T) {
	spec := mustSpec(t)
	bounds := func(schema string) map[string]float64 {
		got := map[string]float64{}
		for field, p := range resolve(spec, "#/components/schemas/"+schema)["properties"].(map[string]any) {
			for _, kw := range []string{"minimum", "maximum"} {
				if v, ok := p.(map[string]any)[kw].(float64); ok {
					got[field+"."+kw] = v
				}
			}
		}
		return got
	}
	for _, tt := range []struct {
		schema string
		want   map[string]float64
	}{
		{"EGFRRequest", map[string]float64{
			"age.minimum": min(minAgeU25, minAgeSchwartz), "age.maximum": maxAge,
			"serum_creatinine_umol_l.minimum": minCreatinineChild, "serum_creatinine_umol_l.maximum": maxCreatinine,
			"serum_cystatin_c_mg_l.minimum": minCystatinC, "serum_cystatin_c_mg_l.maximum": maxCystatinC,
			"height_cm.minimum": minHeight, "height_cm.maximum": maxHeight,
		}},
		{"CrClRequest", map[string]float64{
			"age.minimum": minAge, "age.maximum": maxAge,
			"serum_creatinine_umol_l.minimum": minCreatinine, "serum_creatinine_umol_l.maximum": maxCreatinine,
			"weight_kg.minimum": minWeight, "weight_kg.maximum": maxWeight,
		}},
	} {
		if diff := cmp.Diff(tt.want, bounds(tt.schema)); diff != "" {
			t.Errorf("%s: spec bounds differ from validation bounds (-validation +spec):\n%s", tt.schema, diff)
		}
	}
}

// TestSpecExamplesAreRealOutputs sends each documented calculator request example and checks the
// response equals the documented 200 example of the same name.
func TestSpecExamplesAreRealOutputs(t *testing.T) {
	for _, path := range []string{"/egfr", "/crcl"} {
		t.Run(strings.TrimPrefix(path, "/"), func(t *testing.T) { checkSpecExamples(t, path) })
	}
}

// checkSpecExamples is TestSpecExamplesAreRealOutputs for the POST operation at path.
func checkSpecExamples(t *testing.T, path string) {
	spec := mustSpec(t)
	op := spec["paths"].(map[string]any)[path].(map[string]any)["post"].(map[string]any)
	reqExamples := op["requestBody"].(map[string]any)["content"].(map[string]any)["application/json"].(map[string]any)["examples"].(map[string]any)
	resExamples := resolveResponse(spec, op["responses"].(map[string]any)["200"])["content"].(map[string]any)["application/json"].(map[string]any)["examples"].(map[string]any)
	if len(reqExamples) == 0 || len(reqExamples) != len(resExamples) {
		t.Fatalf("got %d request and %d response examples, want equal non-zero counts", len(reqExamples), len(resExamples))
	}
	h := newTestServer(t)
	for name, ex := range reqExamples {
		body, _ := json.Marshal(ex.(map[string]any)["value"])
		req := postEGFR(string(body))
		req.URL.Path = path
		res := do(t, h, req)
		got := decodeBody[map[string]any](t, res)
		want := resExamples[name].(map[string]any)["value"]
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("example %q: response differs from the documented example (-spec +got):\n%s", name, diff)
		}
	}
}

// TestSpecValidateExamplesAreRealOutputs sends each documented $validate request example and checks
// the answer equals the documented 200 example of the same name.
func TestSpecValidateExamplesAreRealOutputs(t *testing.T) {
	spec := mustSpec(t)
	op := spec["paths"].(map[string]any)["/Patient/$validate"].(map[string]any)["post"].(map[string]any)
	reqExamples := op["requestBody"].(map[string]any)["content"].(map[string]any)["application/fhir+json"].(map[string]any)["examples"].(map[string]any)
	resExamples := op["responses"].(map[string]any)["200"].(map[string]any)["content"].(map[string]any)["application/fhir+json"].(map[string]any)["examples"].(map[string]any)
	if len(reqExamples) == 0 || len(reqExamples) != len(resExamples) {
		t.Fatalf("got %d request and %d response examples, want equal non-zero counts", len(reqExamples), len(resExamples))
	}
	h := newTestServer(t)
	for name, ex := range reqExamples {
		body, _ := json.Marshal(ex.(map[string]any)["value"])
		got := decodeBody[map[string]any](t, do(t, h, fhirReq("POST", "/Patient/$validate", string(body))))
		if diff := cmp.Diff(resExamples[name].(map[string]any)["value"], got); diff != "" {
			t.Errorf("example %q: response differs from the documented example (-spec +got):\n%s", name, diff)
		}
	}
}

// TestSpecPatientExampleIsRealOutput posts the documented create example and compares the response
// with the documented 201 example, apart from the server-assigned id and meta.
func TestSpecPatientExampleIsRealOutput(t *testing.T) {
	spec := mustSpec(t)
	op := spec["paths"].(map[string]any)["/Patient"].(map[string]any)["post"].(map[string]any)
	reqEx := op["requestBody"].(map[string]any)["content"].(map[string]any)["application/fhir+json"].(map[string]any)["example"]
	resEx := op["responses"].(map[string]any)["201"].(map[string]any)["content"].(map[string]any)["application/fhir+json"].(map[string]any)["example"]
	body, _ := json.Marshal(reqEx)
	res := do(t, newTestServer(t), postPatient(string(body)))
	got := decodeBody[map[string]any](t, res)
	if diff := cmp.Diff(withoutServerMeta(resEx.(map[string]any)), withoutServerMeta(got)); diff != "" {
		t.Errorf("create response differs from the documented example (-spec +got):\n%s", diff)
	}
}

// TestSpecExamplesAreAccepted replays the spec as Swagger UI's "Try it out" sends it: every operation,
// with each documented example of its parameters (path, query and header) and of its request body,
// and a token with every scope. Each must succeed: an example that gets a 4xx would teach a reader
// something the service refuses. Writes run before reads and deletes last, as a user would try them,
// so the PUT example (an update-as-create of the documented id) makes the patches and reads find a Patient.
func TestSpecExamplesAreAccepted(t *testing.T) {
	journalOnly(t, "the examples are the journal's answers: version ids 1 and 2, type-level history (which Medplum lacks)")
	spec := mustSpec(t)
	h := newTestServer(t)
	token := localTestIssuer(t).token(t, allScopes)
	type call struct {
		method, path string
		op           map[string]any
		params       []any
	}
	var calls []call
	for p, item := range spec["paths"].(map[string]any) {
		item := item.(map[string]any)
		pathParams, _ := item["parameters"].([]any)
		for m, op := range item {
			if m == "parameters" {
				continue
			}
			op := op.(map[string]any)
			params, _ := op["parameters"].([]any)
			calls = append(calls, call{strings.ToUpper(m), p, op, append(slices.Clone(pathParams), params...)})
		}
	}
	order := map[string]int{"POST": 0, "PUT": 1, "PATCH": 2, "GET": 3, "DELETE": 4}
	slices.SortFunc(calls, func(a, b call) int {
		if c := order[a.method] - order[b.method]; c != 0 {
			return c
		}
		return strings.Compare(a.path, b.path)
	})
	n := 0
	for _, c := range calls {
		path, query, headers := c.path, url.Values{}, http.Header{}
		for _, p := range c.params {
			p := resolveRef(spec, p)
			ex, ok := p["example"]
			if !ok {
				continue
			}
			v := fmt.Sprint(ex)
			switch p["in"] {
			case "path":
				path = strings.ReplaceAll(path, "{"+p["name"].(string)+"}", url.PathEscape(v))
			case "query":
				query.Set(p["name"].(string), v)
			case "header":
				headers.Set(p["name"].(string), v)
			}
		}
		if len(query) > 0 {
			path += "?" + query.Encode()
		}
		bodies := map[string]string{"": ""} // example name -> body; one empty body without a requestBody
		ctype := ""
		if rb, ok := c.op["requestBody"].(map[string]any); ok {
			bodies = map[string]string{}
			for ct, media := range resolveRef(spec, rb)["content"].(map[string]any) {
				media := media.(map[string]any)
				add := func(name string, v any) {
					b, _ := json.Marshal(v)
					if ct == "application/x-www-form-urlencoded" {
						form := url.Values{}
						for k, fv := range v.(map[string]any) {
							form.Set(k, fmt.Sprint(fv))
						}
						b = []byte(form.Encode())
					}
					bodies[name] = string(b)
					ctype = ct
				}
				if ex, ok := media["example"]; ok {
					add(ct, ex)
				}
				for name, ex := range mapOf(media["examples"]) {
					add(ct+" "+name, ex.(map[string]any)["value"])
				}
			}
			if len(bodies) == 0 {
				t.Errorf("%s %s: the request body has no example", c.method, c.path)
			}
		}
		for name, body := range bodies {
			req := httptest.NewRequest(c.method, path, strings.NewReader(body))
			maps.Copy(req.Header, headers)
			req.Header.Set("Authorization", "Bearer "+token)
			if ctype != "" {
				req.Header.Set("Content-Type", ctype)
			}
			res := do(t, h, req)
			n++
			if res.StatusCode >= 300 {
				t.Errorf("%s %s (example %q): status %d, want 2xx:\n%s", c.method, path, name, res.StatusCode, readAll(t, res.Body))
			}
		}
	}
	t.Logf("%d example requests", n)
}

// checkContract checks one response against the spec: the operation (or, for a path no route
// serves, the NotFound/MethodNotAllowed responses) documents its status, content type, required
// headers, and its body validates against the documented schema.
// checkContract checks a response of a service on the journal, or on an upstream (upstream).
func checkContract(t testing.TB, req *http.Request, res *http.Response, body []byte, upstream bool) {
	t.Helper()
	spec := mustSpecFor(t, upstream)
	if isUndocumentedPath(req.URL.Path) {
		return
	}
	var resp map[string]any
	item, ok := matchPath(spec, req.URL.Path)
	switch {
	case !ok:
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s: path not in openapi.json, so want 404, got %d", req.Method, req.URL.Path, res.StatusCode)
			return
		}
		resp = resolve(spec, "#/components/responses/"+fhirPrefix(req)+"NotFound")
	default:
		method := strings.ToLower(req.Method)
		if method == "head" {
			method = "get"
		}
		op, ok := item[method].(map[string]any)
		if !ok {
			if res.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: method not in openapi.json, so want 405, got %d", req.Method, req.URL.Path, res.StatusCode)
				return
			}
			resp = resolve(spec, "#/components/responses/"+fhirPrefix(req)+"MethodNotAllowed")
			break
		}
		r, ok := op["responses"].(map[string]any)[fmt.Sprint(res.StatusCode)]
		if !ok {
			t.Errorf("%s %s: status %d is not documented in openapi.json", req.Method, req.URL.Path, res.StatusCode)
			return
		}
		resp = resolveResponse(spec, r)
	}
	for name, hv := range mapOf(resp["headers"]) {
		h := resolveRef(spec, hv)
		if h["required"] == true && res.Header.Get(name) == "" {
			t.Errorf("%s %s %d: documented required header %s is missing", req.Method, req.URL.Path, res.StatusCode, name)
		}
		if v := res.Header.Get(name); v != "" {
			for _, p := range validate(spec, mapOf(h["schema"]), v, name) {
				t.Errorf("%s %s %d: header: %s", req.Method, req.URL.Path, res.StatusCode, p)
			}
		}
	}
	content := mapOf(resp["content"])
	if len(content) == 0 {
		if len(body) != 0 {
			t.Errorf("%s %s %d: documented without a body, got %d bytes", req.Method, req.URL.Path, res.StatusCode, len(body))
		}
		return
	}
	if len(body) == 0 && preference(req.Header.Values("Prefer"), "return") == "minimal" {
		return // Prefer: return=minimal, documented on the operations that honour it
	}
	mt, _, err := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if err != nil {
		t.Errorf("%s %s %d: bad Content-Type %q", req.Method, req.URL.Path, res.StatusCode, res.Header.Get("Content-Type"))
		return
	}
	media, ok := content[mt].(map[string]any)
	if !ok {
		t.Errorf("%s %s %d: Content-Type %s is not documented", req.Method, req.URL.Path, res.StatusCode, mt)
		return
	}
	if req.Method == http.MethodHead {
		return
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Errorf("%s %s %d: body is not JSON: %v", req.Method, req.URL.Path, res.StatusCode, err)
		return
	}
	for _, p := range validate(spec, mapOf(media["schema"]), v, "body") {
		t.Errorf("%s %s %d: %s", req.Method, req.URL.Path, res.StatusCode, p)
	}
}

// fhirPrefix names the FHIR variant of the shared 404/405 responses for FHIR paths.
func fhirPrefix(req *http.Request) string {
	if isFHIRPath(req.URL.Path) {
		return "FHIR"
	}
	return ""
}

func isUndocumentedPath(p string) bool {
	return p == "/openapi.json" || p == "/docs" || strings.HasPrefix(p, "/docs/")
}

// matchPath finds the spec path item whose template ({id} segments) matches p; a literal path such as
// /Patient/_search wins over a template such as /Patient/{id}, as in the mux.
func matchPath(spec map[string]any, p string) (map[string]any, bool) {
	if item, ok := spec["paths"].(map[string]any)[p]; ok {
		return item.(map[string]any), true
	}
	for tmpl, item := range spec["paths"].(map[string]any) {
		ts, ps := strings.Split(tmpl, "/"), strings.Split(p, "/")
		if len(ts) != len(ps) {
			continue
		}
		ok := true
		for i := range ts {
			if !(strings.HasPrefix(ts[i], "{") && ps[i] != "") && ts[i] != ps[i] {
				ok = false
				break
			}
		}
		if ok {
			return item.(map[string]any), true
		}
	}
	return nil, false
}

func mapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// resolve follows a local JSON pointer such as #/components/schemas/Problem.
func resolve(spec map[string]any, ref string) map[string]any {
	var cur any = spec
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		cur = mapOf(cur)[part]
	}
	return mapOf(cur)
}

func resolveRef(spec map[string]any, v any) map[string]any {
	m := mapOf(v)
	for m["$ref"] != nil {
		m = resolve(spec, m["$ref"].(string))
	}
	return m
}

func resolveResponse(spec map[string]any, v any) map[string]any { return resolveRef(spec, v) }

// schemaKeywords are the JSON Schema keywords validate enforces, and the annotations it may ignore.
// A schema using any other keyword fails the test, so the spec cannot promise what is not checked.
var schemaKeywords = map[string]bool{
	"$ref": true, "type": true, "properties": true, "required": true, "additionalProperties": true,
	"items": true, "enum": true, "const": true, "minimum": true, "maximum": true, "minLength": true,
	"maxLength": true, "pattern": true, "minItems": true, "maxItems": true, "oneOf": true, "anyOf": true,
	"allOf": true, "patternProperties": true, "uniqueItems": true,
	// annotations
	"description": true, "example": true, "examples": true, "default": true, "title": true, "format": true,
}

// validate checks v against a JSON Schema (the subset in schemaKeywords) and returns every problem.
func validate(spec map[string]any, s map[string]any, v any, at string) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, at+": "+fmt.Sprintf(format, args...)) }
	for k := range s {
		if !schemaKeywords[k] {
			bad("schema keyword %q is not enforced by the contract test; add it to validate", k)
		}
	}
	if ref, ok := s["$ref"].(string); ok {
		problems = append(problems, validate(spec, resolve(spec, ref), v, at)...)
	}
	if t, ok := s["type"]; ok {
		var types []string
		switch t := t.(type) {
		case string:
			types = []string{t}
		case []any:
			for _, x := range t {
				types = append(types, x.(string))
			}
		}
		if !slices.ContainsFunc(types, func(t string) bool { return jsonType(v, t) }) {
			bad("want type %v, got %T (%v)", types, v, v)
			return problems
		}
	}
	if e, ok := s["enum"].([]any); ok && !slices.ContainsFunc(e, func(x any) bool { return cmp.Equal(x, v) }) {
		bad("%v is not one of %v", v, e)
	}
	if c, ok := s["const"]; ok && !cmp.Equal(c, v) {
		bad("%v is not %v", v, c)
	}
	switch v := v.(type) {
	case float64:
		if m, ok := s["minimum"].(float64); ok && v < m {
			bad("%v < minimum %v", v, m)
		}
		if m, ok := s["maximum"].(float64); ok && v > m {
			bad("%v > maximum %v", v, m)
		}
	case string:
		n := len([]rune(v))
		if m, ok := s["minLength"].(float64); ok && n < int(m) {
			bad("length %d < minLength %v", n, m)
		}
		if m, ok := s["maxLength"].(float64); ok && n > int(m) {
			bad("length %d > maxLength %v", n, m)
		}
		if p, ok := s["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(v) {
			bad("%q does not match %s", v, p)
		}
	case []any:
		if m, ok := s["minItems"].(float64); ok && len(v) < int(m) {
			bad("%d items < minItems %v", len(v), m)
		}
		if m, ok := s["maxItems"].(float64); ok && len(v) > int(m) {
			bad("%d items > maxItems %v", len(v), m)
		}
		if s["uniqueItems"] == true {
			for i := range v {
				for j := range i {
					if cmp.Equal(v[i], v[j]) {
						bad("items %d and %d are equal", j, i)
					}
				}
			}
		}
		if items := mapOf(s["items"]); items != nil {
			for i, x := range v {
				problems = append(problems, validate(spec, items, x, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	case map[string]any:
		for _, r := range asSlice(s["required"]) {
			if _, ok := v[r.(string)]; !ok {
				bad("required property %q is missing", r)
			}
		}
		props := mapOf(s["properties"])
		for k, x := range v {
			if ps, ok := props[k]; ok {
				problems = append(problems, validate(spec, mapOf(ps), x, at+"."+k)...)
				continue
			}
			matched := false
			for p, ps := range mapOf(s["patternProperties"]) {
				if regexp.MustCompile(p).MatchString(k) {
					matched = true
					problems = append(problems, validate(spec, mapOf(ps), x, at+"."+k)...)
				}
			}
			if matched {
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case bool:
				if !ap {
					bad("property %q is not allowed", k)
				}
			case map[string]any:
				problems = append(problems, validate(spec, ap, x, at+"."+k)...)
			}
		}
	}
	for _, sub := range asSlice(s["allOf"]) {
		problems = append(problems, validate(spec, mapOf(sub), v, at)...)
	}
	if anyOf := asSlice(s["anyOf"]); anyOf != nil {
		if !slices.ContainsFunc(anyOf, func(sub any) bool { return len(validate(spec, mapOf(sub), v, at)) == 0 }) {
			bad("matches none of anyOf")
		}
	}
	if one := asSlice(s["oneOf"]); one != nil {
		n := 0
		for _, sub := range one {
			if len(validate(spec, mapOf(sub), v, at)) == 0 {
				n++
			}
		}
		if n != 1 {
			bad("matches %d of oneOf, want exactly 1", n)
		}
	}
	return problems
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// jsonType reports whether v (from encoding/json) is of JSON Schema type t.
func jsonType(v any, t string) bool {
	switch t {
	case "null":
		return v == nil
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "integer":
		f, ok := v.(float64)
		return ok && f == math.Trunc(f)
	case "array":
		_, ok := v.([]any)
		return ok
	case "object":
		_, ok := v.(map[string]any)
		return ok
	}
	return false
}

// TestContractCheckerCatchesDrift proves the checker is not vacuous: responses that break the spec
// in different ways must each be reported.
func TestContractCheckerCatchesDrift(t *testing.T) {
	tests := []struct {
		name   string
		method string
		path   string
		status int
		ctype  string
		body   string
	}{
		{"undocumented status", "POST", "/egfr", http.StatusTeapot, "application/problem+json", `{}`},
		{"extra field", "POST", "/egfr", 200, "application/json", `{"egfr_ml_min_1_73m2":92.2,"egfr_reported":">90","kdigo_category":"G1","formula":"CKD-EPI 2021","extra":1}`},
		{"missing field", "POST", "/egfr", 200, "application/json", `{"egfr_ml_min_1_73m2":92.2,"egfr_reported":">90","formula":"CKD-EPI 2021"}`},
		{"wrong enum", "POST", "/egfr", 200, "application/json", `{"egfr_ml_min_1_73m2":92.2,"egfr_reported":">90","kdigo_category":"G6","formula":"CKD-EPI 2021"}`},
		{"wrong type", "POST", "/egfr", 200, "application/json", `{"egfr_ml_min_1_73m2":"92.2","egfr_reported":">90","kdigo_category":"G1","formula":"CKD-EPI 2021"}`},
		{"wrong content type", "POST", "/egfr", 422, "application/json", `{}`},
		{"unknown path not 404", "GET", "/nowhere", 200, "application/json", `{}`},
		{"missing request id header", "GET", "/livez", 200, "application/json", `{"status":"ok"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recordingTB{TB: t}
			req := httptest.NewRequest(tt.method, tt.path, nil)
			res := &http.Response{StatusCode: tt.status, Header: http.Header{"Content-Type": {tt.ctype}}}
			if tt.name != "missing request id header" {
				res.Header.Set("X-Request-ID", "abc")
			}
			checkContract(rec, req, res, []byte(tt.body), false)
			if rec.errors == 0 {
				t.Errorf("checkContract accepted a response that breaks the spec")
			}
		})
	}
}

// recordingTB counts errors instead of failing, to test the checker itself.
type recordingTB struct {
	testing.TB
	errors int
}

func (r *recordingTB) Errorf(string, ...any) { r.errors++ }
func (r *recordingTB) Helper()               {}

// readAll reads a response body for the contract check and the test.
func readAll(t testing.TB, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return b
}

// TestSearchParamsDocumented: the parameters the search parser accepts (patientSearchParams) are
// exactly the query parameters GET /Patient documents and the form fields of POST /Patient/_search,
// and its search parameters (not the result ones) exactly the CapabilityStatement's, with their R4
// types and definitions.
func TestSearchParamsDocumented(t *testing.T) {
	spec := mustSpec(t)
	var parsed, searchParams []string
	for _, p := range patientSearchParams {
		parsed = append(parsed, p.name)
		if p.typ != "" {
			searchParams = append(searchParams, p.name+" "+p.typ+" "+p.definition)
		}
	}
	var get []string
	for _, p := range spec["paths"].(map[string]any)["/Patient"].(map[string]any)["get"].(map[string]any)["parameters"].([]any) {
		if p := resolveRef(spec, p); p["in"] == "query" && p["name"] != "_format" {
			get = append(get, p["name"].(string))
		}
	}
	form := resolveRef(spec, spec["paths"].(map[string]any)["/Patient/_search"].(map[string]any)["post"].(map[string]any)["requestBody"])
	props := form["content"].(map[string]any)["application/x-www-form-urlencoded"].(map[string]any)["schema"].(map[string]any)["properties"].(map[string]any)
	sort.Strings(parsed)
	sort.Strings(get)
	if diff := cmp.Diff(parsed, get); diff != "" {
		t.Errorf("GET /Patient query parameters (-parser +openapi.json):\n%s", diff)
	}
	if diff := cmp.Diff(parsed, slices.Sorted(maps.Keys(props))); diff != "" {
		t.Errorf("POST /Patient/_search form fields (-parser +openapi.json):\n%s", diff)
	}
	var cs struct {
		Rest []struct {
			Resource []struct {
				SearchParam []struct{ Name, Type, Definition string }
			}
		}
	}
	if err := json.Unmarshal(capabilityStatement(false), &cs); err != nil {
		t.Fatal(err)
	}
	var declared []string
	for _, p := range cs.Rest[0].Resource[0].SearchParam {
		declared = append(declared, p.Name+" "+p.Type+" "+p.Definition)
	}
	if diff := cmp.Diff(searchParams, declared); diff != "" {
		t.Errorf("CapabilityStatement searchParam (-parser +metadata):\n%s", diff)
	}
}
