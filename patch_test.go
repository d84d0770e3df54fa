package main

// Tests of the JSON Patch engine (patch.go) without HTTP: the community RFC 6902 suite, pointers, number
// equality, the patch document's errors and the limits. The PATCH interaction itself is tested through
// the handler in fhir_handlers_test.go.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// patchDoc reads any JSON value as a tree, by wrapping it in an object for readJSON.
func patchDoc(t testing.TB, doc string) *jsonNode {
	t.Helper()
	root, dups, err := readJSON([]byte(`{"d":`+doc+`}`), fhirMaxDepth+1)
	if err != nil || len(dups) > 0 {
		t.Fatalf("test document %s does not read: %+v %v", doc, err, dups)
	}
	return root.member("d")
}

// applyPatchText parses patch and applies it to doc, returning the result as JSON or the problem.
func applyPatchText(t testing.TB, doc, patch string) (string, string) {
	t.Helper()
	ops, issues := parseJSONPatch([]byte(patch))
	if strings.TrimSpace(patch) == "[]" { // the engine takes an empty patch; PATCH refuses one (TestPatchDocumentErrors)
		ops, issues = nil, nil
	}
	if len(issues) > 0 {
		return "", "parse: " + issues[0].Diagnostics
	}
	out, perr := applyJSONPatch(patchDoc(t, doc), ops)
	if perr != nil {
		return "", "apply: " + perr.issue(ops).Diagnostics
	}
	return string(appendJSONNode(nil, out)), ""
}

// jsonValue decodes JSON for comparison with cmp (objects as maps, so member order does not matter).
func jsonValue(t testing.TB, s string) any {
	t.Helper()
	var v any
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", s, err)
	}
	return v
}

// TestJSONPatchSuite runs the json-patch-tests suite (testdata/jsonpatch/SOURCES.md): every enabled
// record must give its expected document, or fail if it names an error.
func TestJSONPatchSuite(t *testing.T) {
	type record struct {
		Comment  string
		Doc      json.RawMessage
		Patch    json.RawMessage
		Expected json.RawMessage
		Error    string
		Disabled bool
	}
	ran := 0
	for _, file := range []string{"tests.json", "spec_tests.json"} {
		b, err := os.ReadFile("testdata/jsonpatch/" + file)
		if err != nil {
			t.Fatal(err)
		}
		var records []record
		if err := json.Unmarshal(b, &records); err != nil {
			t.Fatal(err)
		}
		for i, r := range records {
			if r.Disabled || r.Doc == nil || r.Patch == nil {
				continue
			}
			ran++
			got, problem := applyPatchText(t, string(r.Doc), string(r.Patch))
			name := fmt.Sprintf("%s[%d] %q", file, i, r.Comment)
			switch {
			case r.Error != "" && problem == "":
				t.Errorf("%s: applied to %s, want an error (%s)", name, got, r.Error)
			case r.Error == "" && problem != "":
				t.Errorf("%s: %s", name, problem)
			case r.Error == "" && r.Expected != nil:
				if diff := cmp.Diff(jsonValue(t, string(r.Expected)), jsonValue(t, got)); diff != "" {
					t.Errorf("%s (-expected +got):\n%s", name, diff)
				}
			}
		}
	}
	if ran < 100 {
		t.Errorf("ran %d suite records, want the 100+ enabled ones", ran)
	}
}

// TestJSONPatchOrderAndLiterals checks what the suite's comparison cannot see: member order (an added
// member goes last, a replaced or re-added one keeps its place) and number literals as written.
func TestJSONPatchOrderAndLiterals(t *testing.T) {
	tests := []struct{ doc, patch, want string }{
		{`{"a":1,"b":2}`, `[{"op":"replace","path":"/a","value":1.50}]`, `{"a":1.50,"b":2}`},
		{`{"a":1,"b":2}`, `[{"op":"add","path":"/a","value":3}]`, `{"a":3,"b":2}`},
		{`{"a":1,"b":2}`, `[{"op":"add","path":"/c","value":1e400}]`, `{"a":1,"b":2,"c":1e400}`},
		{`{"a":1,"b":2}`, `[{"op":"move","from":"/a","path":"/a"}]`, `{"a":1,"b":2}`},
		{`{"a":1,"b":2}`, `[{"op":"move","from":"/a","path":"/c"}]`, `{"b":2,"c":1}`},
		{`{"a":[1,2,3]}`, `[{"op":"move","from":"/a/0","path":"/a/-"}]`, `{"a":[2,3,1]}`},
		{`{"a":"<&>"}`, `[{"op":"copy","from":"/a","path":"/b"}]`, `{"a":"<&>","b":"<&>"}`},
	}
	for _, tt := range tests {
		got, problem := applyPatchText(t, tt.doc, tt.patch)
		if problem != "" || got != tt.want {
			t.Errorf("%s on %s = %s %s, want %s", tt.patch, tt.doc, got, problem, tt.want)
		}
	}
}

// TestJSONPatchOpsReusable: applying a patch never changes its operations, so the PATCH handler can
// apply the same ops again after losing a race. (Adding into an added value would otherwise change
// the op's value in place.)
func TestJSONPatchOpsReusable(t *testing.T) {
	ops, issues := parseJSONPatch([]byte(`[{"op":"add","path":"/a","value":[]},{"op":"add","path":"/a/-","value":{"n":1}},{"op":"add","path":"/a/0/m","value":2}]`))
	if len(issues) > 0 {
		t.Fatal(issues)
	}
	for range 3 {
		out, perr := applyJSONPatch(patchDoc(t, `{}`), ops)
		if perr != nil {
			t.Fatal(perr)
		}
		if got := string(appendJSONNode(nil, out)); got != `{"a":[{"n":1,"m":2}]}` {
			t.Fatalf("got %s", got)
		}
	}
}

func TestParseJSONPointer(t *testing.T) {
	tests := []struct {
		give    string
		want    []string
		wantErr bool
	}{
		{"", nil, false},
		{"/", []string{""}, false},
		{"/a/0/b", []string{"a", "0", "b"}, false},
		{"//", []string{"", ""}, false},
		{"/a~1b", []string{"a/b"}, false},
		{"/m~0n", []string{"m~n"}, false},
		{"/~01", []string{"~1"}, false}, // ~1 first, then ~0 (RFC 6901 section 4): not "/"
		{"/~10", []string{"/0"}, false},
		{"/ spaces ", []string{" spaces "}, false},
		{"a", nil, true},
		{"#/a", nil, true},
		{"/~", nil, true},
		{"/a~2", nil, true},
		{"/a~", nil, true},
	}
	for _, tt := range tests {
		got, msg := parseJSONPointer(tt.give)
		if (msg != "") != tt.wantErr || !cmp.Equal(got, tt.want) {
			t.Errorf("parseJSONPointer(%q) = %q, %q; want %q (error %v)", tt.give, got, msg, tt.want, tt.wantErr)
		}
		if !tt.wantErr && tt.give != "" && jsonPointer(got) != tt.give {
			t.Errorf("jsonPointer(%q) = %q, want %q back", got, jsonPointer(got), tt.give)
		}
	}
}

func TestJSONNumberEqual(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"1", "1", true}, {"1", "1.0", true}, {"1", "1e0", true}, {"1", "10e-1", true}, {"1", "0.1E+1", true},
		{"100", "1e2", true}, {"0.001", "1e-3", true}, {"0", "-0", true}, {"0.0e5", "0", true}, {"-1.50", "-15e-1", true},
		{"1e400", "10e399", true}, {"1e99999999999999999999", "10e99999999999999999998", true},
		{"1", "2", false}, {"1", "-1", false}, {"1e400", "1e401", false}, {"0.1", "1", false}, {"12", "21", false},
		{"1.000000000000000000001", "1", false}, // float64 would call these equal
	}
	for _, tt := range tests {
		if got := jsonNumberEqual(tt.a, tt.b); got != tt.want {
			t.Errorf("jsonNumberEqual(%s, %s) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := jsonNumberEqual(tt.b, tt.a); got != tt.want {
			t.Errorf("jsonNumberEqual(%s, %s) = %v, want %v", tt.b, tt.a, got, tt.want)
		}
	}
	if d, e := decimalParts("-12.30e1"); d != "-123" || e.Cmp(big.NewInt(0)) != 0 {
		t.Errorf("decimalParts(-12.30e1) = %s, %v; want -123, 0", d, e)
	}
}

// TestPatchDocumentErrors: every way a patch document is malformed gets a 400 issue naming the
// operation (by index from 0) and the rule; all problems are reported together.
func TestPatchDocumentErrors(t *testing.T) {
	issue := func(code, diagnostics string) fhirIssue { return fhirError(code, "", diagnostics) }
	tests := []struct {
		name string
		give string
		want []fhirIssue
	}{
		{"not json", `[{"op":`, []fhirIssue{issue("structure", "The body is not valid JSON: it ends before the JSON Patch is complete.")}},
		{"trailing", `[] []`, []fhirIssue{issue("structure", "The body has data after the end of the JSON Patch.")}},
		{"scalar", `"add"`, []fhirIssue{issue("structure", `The patch must be a JSON array of operations (RFC 6902) or an object {"patches": [...]} (the PDS form).`)}},
		{"object without patches", `{"op":"add","path":"/a","value":1}`, []fhirIssue{issue("structure", `The patch must be a JSON array of operations (RFC 6902) or an object {"patches": [...]} (the PDS form).`)}},
		{"patches and more", `{"patches":[],"x":1}`, []fhirIssue{issue("structure", `The patch must be a JSON array of operations (RFC 6902) or an object {"patches": [...]} (the PDS form).`)}},
		{"patches not array", `{"patches":{}}`, []fhirIssue{issue("structure", `The patch must be a JSON array of operations (RFC 6902) or an object {"patches": [...]} (the PDS form).`)}},
		{"empty", `[]`, []fhirIssue{issue("required", "The patch has no operations; send at least one.")}},
		{"empty PDS", `{"patches":[]}`, []fhirIssue{issue("required", "The patch has no operations; send at least one.")}},
		{"too many", "[" + strings.Repeat(`{"op":"test","path":"","value":{}},`, maxPatchOps) + `{"op":"test","path":"","value":{}}]`,
			[]fhirIssue{issue("too-costly", "The patch has 1001 operations; at most 1000 are accepted.")}},
		{"op not object", `[["add"]]`, []fhirIssue{issue("structure", "patch operation 0: must be a JSON object, not an array.")}},
		{"everything missing", `[{}]`, []fhirIssue{
			issue("required", `patch operation 0: "op" is missing; it must be add, remove, replace, move, copy or test.`),
			issue("required", `patch operation 0: "path" is missing; it must be a JSON Pointer such as /name/0/family.`)}},
		{"op types", `[{"op":1,"path":"/a"},{"op":"Add","path":"/a"},{"op":"spam","path":"/a"}]`, []fhirIssue{
			issue("structure", `patch operation 0 (/a): "op" must be a string (add, remove, replace, move, copy or test), not a number.`),
			issue("code-invalid", `patch operation 1 (/a): "Add" is not an operation; "op" must be add, remove, replace, move, copy or test (case-sensitive).`),
			issue("code-invalid", `patch operation 2 (/a): "spam" is not an operation; "op" must be add, remove, replace, move, copy or test (case-sensitive).`)}},
		{"path types", `[{"op":"remove","path":null},{"op":"remove","path":"gender"},{"op":"remove","path":"/a~2"}]`, []fhirIssue{
			issue("value", `patch operation 0: "path" must be a string (a JSON Pointer), not null.`),
			issue("value", `patch operation 1 (gender): "path" is not a JSON Pointer: it must be "" (the whole resource) or start with "/".`),
			issue("value", `patch operation 2 (/a~2): "path" is not a JSON Pointer: "~" must be followed by 0 (for "~") or 1 (for "/").`)}},
		{"path too deep", `[{"op":"remove","path":"` + strings.Repeat("/a", patchPointerDepth+1) + `"}]`, []fhirIssue{
			issue("value", `patch operation 0 (`+strings.Repeat("/a", 50)+`…): "path" is deeper than the 64 levels a resource may nest.`)}},
		{"value missing", `[{"op":"add","path":"/a"},{"op":"replace","path":"/a"},{"op":"test","path":"/a"},{"op":"remove","path":"/a","value":1}]`, []fhirIssue{
			issue("required", `patch operation 0 (/a): "value" is missing; add needs one (null is a value).`),
			issue("required", `patch operation 1 (/a): "value" is missing; replace needs one (null is a value).`),
			issue("required", `patch operation 2 (/a): "value" is missing; test needs one (null is a value).`)}},
		{"from", `[{"op":"move","path":"/a"},{"op":"copy","path":"/a","from":7},{"op":"move","from":"/a","path":"/a/b"},{"op":"move","from":"","path":"/b"}]`, []fhirIssue{
			issue("required", `patch operation 0 (/a): "from" is missing; it must be a JSON Pointer such as /name/0/family.`),
			issue("value", `patch operation 1 (/a): "from" must be a string (a JSON Pointer), not a number.`),
			issue("value", "patch operation 2 (/a/b): a location cannot be moved into one of its own children (RFC 6902 section 4.4)."),
			issue("value", "patch operation 3 (/b): a location cannot be moved into one of its own children (RFC 6902 section 4.4).")}},
		{"duplicate members", `[{"op":"add","path":"/a","value":{"x":1,"x":2},"op":"remove"}]`, []fhirIssue{
			issue("structure", `patch operation 0: the member "x" appears more than once in the same object (in value).`),
			issue("structure", `patch operation 0: the member "op" appears more than once in the same object.`)}},
		{"duplicate PDS", `{"patches":[{"op":"remove","path":"/a","path":"/b"}],"patches":[]}`, []fhirIssue{
			issue("structure", `patch operation 0: the member "path" appears more than once in the same object.`),
			issue("structure", `The patch has the member "patches" more than once in the same object.`)}},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			ops, issues := parseJSONPatch([]byte(tt.give))
			if ops != nil {
				t.Errorf("parseJSONPatch returned %d operations with its issues", len(ops))
			}
			if diff := cmp.Diff(tt.want, issues); diff != "" {
				t.Errorf("issues (-want +got):\n%s", diff)
			}
		})
	}
	// Members an operation does not define are ignored (RFC 6902 section 4), in both forms.
	for _, ok := range []string{`[{"op":"remove","path":"/a","value":1,"from":2,"x":{}}]`, `{"patches":[{"op":"test","path":"","value":null}]}`} {
		if _, issues := parseJSONPatch([]byte(ok)); issues != nil {
			t.Errorf("parseJSONPatch(%s) = %v, want no issues", ok, issues)
		}
	}
}

// TestPatchApplyErrors: an operation that cannot be applied to the document names its index and the
// location (a 422 in PATCH).
func TestPatchApplyErrors(t *testing.T) {
	doc := `{"name":[{"family":"Smith","given":["Jo"]}],"gender":"female","n":1}`
	tests := []struct{ patch, want string }{
		{`[{"op":"remove","path":"/birthDate"}]`, `patch operation 0 (/birthDate): /birthDate does not exist.`},
		{`[{"op":"test","path":"/gender","value":"female"},{"op":"replace","path":"/name/1/family","value":"X"}]`,
			`patch operation 1 (/name/1/family): /name/1 is past the end of the array, which has 1 items.`},
		{`[{"op":"add","path":"/name/2","value":{}}]`, `patch operation 0 (/name/2): /name/2 is past the end of the array, which has 1 items.`},
		{`[{"op":"add","path":"/name/01","value":{}}]`, `patch operation 0 (/name/01): "01" is not an array index (0, 1, ... or "-" to append).`},
		{`[{"op":"remove","path":"/name/-"}]`, `patch operation 0 (/name/-): "-" is not an array index (0, 1, ...).`},
		{`[{"op":"add","path":"/gender/x","value":1}]`, `patch operation 0 (/gender/x): /gender is a string, which has no members or items.`},
		{`[{"op":"add","path":"/a/b","value":1}]`, `patch operation 0 (/a/b): /a does not exist.`},
		{`[{"op":"remove","path":"/gender/x/y"}]`, `patch operation 0 (/gender/x/y): /gender/x does not exist: /gender is a string.`},
		{`[{"op":"test","path":"/gender","value":"male"}]`, `patch operation 0 (/gender): test failed: the value there is not the one the test gives.`},
		{`[{"op":"test","path":"/n","value":"1"}]`, `patch operation 0 (/n): test failed: the resource has a number there, the test gives a string.`},
		{`[{"op":"move","from":"/x","path":"/y"}]`, `patch operation 0 (/x -> /y): /x does not exist.`},
		{`[{"op":"copy","from":"/name/0/given/3","path":"/y"}]`, `patch operation 0 (/name/0/given/3 -> /y): /name/0/given/3 is past the end of the array, which has 1 items.`},
		{`[{"op":"remove","path":""}]`, `patch operation 0 ("" (the whole resource)): the whole resource cannot be removed (to delete a Patient, use DELETE).`},
	}
	for _, tt := range tests {
		if got, problem := applyPatchText(t, doc, tt.patch); problem != "apply: "+tt.want {
			t.Errorf("%s:\ngot  %s%s\nwant apply: %s", tt.patch, got, problem, tt.want)
		}
	}
}

// TestPatchCopyBudget: copying the document into itself doubles it each time; the copies stop at the
// budget instead of at memory's end.
func TestPatchCopyBudget(t *testing.T) {
	doc := `{"a":"` + strings.Repeat("x", 1000) + `"}`
	var ops []string
	for i := range 20 {
		ops = append(ops, fmt.Sprintf(`{"op":"copy","from":"","path":"/c%d"}`, i))
	}
	got, problem := applyPatchText(t, doc, "["+strings.Join(ops, ",")+"]")
	if want := "copies would add more than the 1048576 bytes a resource may have."; !strings.HasSuffix(problem, want) {
		t.Errorf("20 doublings of 1 kB: got %d bytes, %q; want %q", len(got), problem, want)
	}
	if got, problem := applyPatchText(t, doc, "["+strings.Join(ops[:5], ",")+"]"); problem != "" || len(got) < 32*1000 {
		t.Errorf("5 doublings of 1 kB: %d bytes, %q; want about 32 kB", len(got), problem)
	}
}

// FuzzJSONPatch: no document and patch make the engine panic, and what it produces is one JSON value
// the strict reader reads back equal (so the PATCH handler always has a document to validate).
func FuzzJSONPatch(f *testing.F) {
	f.Add(`{"a":[1,{"b":null}],"c":"x"}`, `[{"op":"move","from":"/a/1","path":"/a/0/x"}]`)
	f.Add(`{"a":[1,{"b":null}]}`, `[{"op":"copy","from":"/a","path":"/a/-"},{"op":"test","path":"/a/2","value":[1,{"b":null}]}]`)
	f.Add(`{"a":{}}`, `{"patches":[{"op":"add","path":"","value":[]},{"op":"add","path":"/-","value":1e5}]}`)
	f.Add(`[]`, `[{"op":"replace","path":"/~0~1","value":{"x":1.0}},{"op":"remove","path":"/a/-"}]`)
	f.Fuzz(func(t *testing.T, doc, patch string) {
		root, _, err := readJSON([]byte(`{"d":`+doc+`}`), fhirMaxDepth+1)
		if err != nil || root.member("d") == nil {
			return
		}
		ops, issues := parseJSONPatch([]byte(patch))
		if (ops == nil) == (issues == nil) {
			t.Fatalf("parseJSONPatch(%q) = %d ops, %d issues; want exactly one of them", patch, len(ops), len(issues))
		}
		out, perr := applyJSONPatch(root.member("d"), ops)
		if perr != nil {
			if perr.index < 0 || perr.index >= len(ops) || perr.msg == "" {
				t.Fatalf("patchError %+v for %d ops", perr, len(ops))
			}
			return
		}
		b := appendJSONNode(nil, out)
		back, dups, jerr := readJSONValue(b, 1<<20)
		if jerr != nil || len(dups) > 0 || !jsonEqual(out, back) || !bytes.Equal(appendJSONNode(nil, back), b) {
			t.Fatalf("result %s does not read back (%+v, %v)", b, jerr, dups)
		}
	})
}
