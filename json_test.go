package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// testDepth is the nesting limit the reader is fuzzed with (FHIR's).
const testDepth = fhirMaxDepth

// referenceReadJSON is readJSON (readJSONValue when anyRoot) written the simple way, with encoding/json's
// tokenizer plus the checks it does not make (duplicates, depth, one object). It is the reference
// FuzzReadJSON holds the reader to; it returns only the error kind, since the tokenizer's offsets are
// its own.
func referenceReadJSON(body []byte, maxDepth int, anyRoot bool) (*jsonNode, []jsonDuplicate, jsonErrorKind) {
	if !utf8.Valid(body) {
		return nil, nil, jsonNotUTF8
	}
	if len(bytes.TrimLeft(body, " \t\r\n")) == 0 {
		return nil, nil, jsonEmpty
	}
	rr := &referenceReader{dec: json.NewDecoder(bytes.NewReader(body)), maxDepth: maxDepth}
	rr.dec.UseNumber()
	tok, err := rr.dec.Token()
	if err != nil {
		return nil, nil, referenceErrorKind(err)
	}
	root, err := rr.value(tok, 1)
	switch {
	case err != nil:
		return nil, nil, referenceErrorKind(err)
	case root.kind != jsonObject && !anyRoot:
		return nil, nil, jsonNotObject
	}
	if _, err := rr.dec.Token(); err != io.EOF {
		return root, rr.dups, jsonTrailing
	}
	return root, rr.dups, 0
}

type referenceReader struct {
	dec      *json.Decoder
	maxDepth int
	path     []jsonStep
	dups     []jsonDuplicate
}

var errReferenceDepth = errors.New("nesting too deep")

func referenceErrorKind(err error) jsonErrorKind {
	switch {
	case errors.Is(err, errReferenceDepth):
		return jsonTooDeep
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return jsonTruncated
	}
	return jsonSyntax
}

// value builds the node for tok, reading the rest of an object or array.
func (rr *referenceReader) value(tok json.Token, depth int) (*jsonNode, error) {
	switch t := tok.(type) {
	case nil:
		return &jsonNode{kind: jsonNull}, nil
	case bool:
		return &jsonNode{kind: jsonBool, text: strconv.FormatBool(t)}, nil
	case json.Number:
		return &jsonNode{kind: jsonNumber, text: string(t)}, nil
	case string:
		return &jsonNode{kind: jsonString, text: t}, nil
	}
	if depth > rr.maxDepth {
		return nil, errReferenceDepth
	}
	n := &jsonNode{kind: jsonArray}
	if tok.(json.Delim) == '{' {
		n.kind = jsonObject
	}
	names := map[string]bool{}
	for rr.dec.More() {
		step := jsonStep{index: len(n.items), isItem: true}
		if n.kind == jsonObject {
			kt, err := rr.dec.Token()
			if err != nil {
				return nil, err
			}
			step = jsonStep{key: kt.(string)}
		}
		vt, err := rr.dec.Token()
		if err != nil {
			return nil, err
		}
		rr.path = append(rr.path, step)
		child, err := rr.value(vt, depth+1)
		if err != nil {
			return nil, err
		}
		switch {
		case n.kind == jsonArray:
			n.items = append(n.items, child)
		case names[step.key]:
			rr.dups = append(rr.dups, jsonDuplicate{path: append([]jsonStep(nil), rr.path...)})
		default:
			names[step.key] = true
			n.keys = append(n.keys, step.key)
			n.items = append(n.items, child)
		}
		rr.path = rr.path[:len(rr.path)-1]
	}
	if _, err := rr.dec.Token(); err != nil { // the closing delimiter
		return nil, err
	}
	return n, nil
}

// parseTreeSeeds are bodies that probe the corners of the JSON grammar and of the reader: escapes and
// surrogates, number forms, literals, whitespace, duplicate keys (also in an object big enough for the
// map), the depth limit on both sides, trailing data and things that are not JSON at all.
func parseTreeSeeds() []string {
	var bigObject strings.Builder // 40 members with a duplicate near the end, past smallObject
	bigObject.WriteString(`{"resourceType":"Patient"`)
	for i := range 40 {
		fmt.Fprintf(&bigObject, `,"k%d":%d`, i, i)
	}
	bigObject.WriteString(`,"k3":"again","k39":[],"k40":{}}`)
	nest := func(n int) string { // the root object plus n nested arrays
		return `{"x":` + deep(n) + `}`
	}
	return []string{
		`{}`, ` {} `, "\t{\r\n}\n", `{"a":1}`, `{"a":1} x`, `{"a":1}{}`, `{"a":1`, `{"a"}`, `{"a" 1}`, `{a:1}`,
		`{"a":1,}`, `{,}`, `[]`, `[1]`, `"x"`, `1`, `null`, ``, ` `, "\ufeff{}", `{"a":[1,2,]}`, `{"a":[,1]}`,
		`{"a":true,"b":false,"c":null}`, `{"a":tru}`, `{"a":truex}`, `{"a":nul}`, `{"a":True}`, `{"a":nulll}`,
		`{"n":[0,-0,1,-1,10,1.5,-1.50,1e5,1E+5,1e-05,0.0e0,123456789012345678901234567890]}`,
		`{"n":01}`, `{"n":-}`, `{"n":1.}`, `{"n":.5}`, `{"n":1e}`, `{"n":1e+}`, `{"n":+1}`, `{"n":0x1}`,
		`{"n":1.5.2}`, `{"n":--1}`, `{"n":Infinity}`, `{"n":NaN}`, `{"n":1 2}`,
		`{"s":"plain","e":"\"\\\/\b\f\n\r\t","u":"\u00e9\u20AC\uD83D\uDE00"}`,
		`{"s":"\uD83D"}`, `{"s":"\uDE00"}`, `{"s":"\uD83Dx"}`, `{"s":"\uD83D\u0041"}`, `{"s":"\uD83D\uD83D\uDE00"}`,
		`{"s":"\uDE00\uD83D"}`, `{"s":"\uD83D\uDE0"}`, `{"s":"\uD83D\`, `{"s":"\u12"}`, `{"s":"\u12G4"}`,
		`{"s":"\x"}`, `{"s":"\'"}`, `{"s":"a` + "\t" + `b"}`, `{"s":"a` + "\x00" + `b"}`, `{"s":"\u0000"}`,
		`{"s":"unterminated}`, `{"s":"\"}`, `{"s":"é€😀"}`, "{\"s\":\"\xff\"}", "{\"s\":\"\xed\xa0\x80\"}",
		`{"":1,"":2}`, `{"a":1,"a":2,"a":3}`, `{"a":{"b":1,"b":2},"a":{"c":[{"d":1,"d":2}]}}`,
		`{"a\u0062":1,"ab":2}`, `{"a":[{"x":1,"x":2},{"x":1}]}`, bigObject.String(),
		nest(testDepth - 1), nest(testDepth), nest(testDepth + 1), `{"x":[` + nest(testDepth-2) + `]}`,
		patientBase,
	}
}

// dumpTree shows a tree for a failure message (cmp.Diff is exponential on deep nesting).
func dumpTree(n *jsonNode) string {
	if n == nil {
		return "<nil>"
	}
	return string(appendJSONNode(nil, n))
}

// nodeToAny converts a tree to what encoding/json decodes with UseNumber (objects without duplicates).
func nodeToAny(n *jsonNode) any {
	switch n.kind {
	case jsonBool:
		return n.text == "true"
	case jsonNumber:
		return json.Number(n.text)
	case jsonString:
		return n.text
	case jsonArray:
		out := []any{}
		for _, item := range n.items {
			out = append(out, nodeToAny(item))
		}
		return out
	case jsonObject:
		out := map[string]any{}
		for i, k := range n.keys {
			out[k] = nodeToAny(n.items[i])
		}
		return out
	}
	return nil
}

// appendStringReference is the original, rune-by-rune appendJSONString, kept as the reference.
func appendStringReference(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r == '\n':
			b = append(b, `\n`...)
		case r == '\r':
			b = append(b, `\r`...)
		case r == '\t':
			b = append(b, `\t`...)
		case r < 0x20:
			b = fmt.Appendf(b, `\u%04x`, r)
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, '"')
}

// FuzzAppendString checks appendJSONString writes exactly what the rune-by-rune original wrote, for any
// string (invalid UTF-8 included), and that the result decodes back to the string when it is valid UTF-8.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", `"quoted" \ back`, "tab\tcr\rlf\n", "\x00\x01\x1f\x7f", "<div>&amp;</div>",
		"é€😀", "\xff", "a\xe2\x82", "\xed\xa0\x80", "\ufffd", "\u2028\u2029"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := string(appendStringReference(nil, s))
		got := string(appendJSONString([]byte("x"), s))
		if got != "x"+want {
			t.Fatalf("appendJSONString(%q) = %s, want %s", s, got[1:], want)
		}
		var back string
		if err := json.Unmarshal([]byte(want), &back); err != nil || utf8.ValidString(s) && back != s {
			t.Fatalf("appendJSONString(%q) = %s decodes to %q, %v", s, want, back, err)
		}
	})
}

// FuzzReadJSON holds readJSON to the encoding/json reference and to encoding/json itself: the same
// verdict, tree and duplicates for every body; nothing accepted that json.Valid rejects; and, without
// duplicates, the values encoding/json decodes.
func FuzzReadJSON(f *testing.F) {
	for _, s := range parseTreeSeeds() {
		f.Add([]byte(s))
	}
	for _, body := range patientExamples(f, "valid") {
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkReadJSON(t, body, false)
		checkReadJSON(t, body, true)
	})
}

// checkReadJSON is FuzzReadJSON's check of readJSON, or of readJSONValue when anyRoot.
func checkReadJSON(t *testing.T, body []byte, anyRoot bool) {
	read := readJSON
	if anyRoot {
		read = readJSONValue
	}
	wantRoot, wantDups, wantKind := referenceReadJSON(body, testDepth, anyRoot)
	root, dups, err := read(body, testDepth)
	var kind jsonErrorKind
	if err != nil {
		kind = err.kind
		if err.offset < 0 || err.offset > len(body) {
			t.Fatalf("offset %d outside the body of %d bytes for %q", err.offset, len(body), body)
		}
	}
	if kind != wantKind {
		t.Fatalf("error kind %d, reference %d (%+v) for %q", kind, wantKind, err, body)
	}
	if !reflect.DeepEqual(wantRoot, root) {
		t.Fatalf("tree mismatch for %q:\nreference %s\nreader    %s", body, dumpTree(wantRoot), dumpTree(root))
	}
	if diff := cmp.Diff(wantDups, dups, cmp.AllowUnexported(jsonDuplicate{}, jsonStep{})); diff != "" {
		t.Fatalf("duplicates mismatch for %q (-reference +reader):\n%s", body, diff)
	}
	if err != nil {
		return
	}
	if !json.Valid(body) {
		t.Fatalf("readJSON accepted %q, which json.Valid rejects", body)
	}
	if len(dups) == 0 {
		d := json.NewDecoder(bytes.NewReader(body))
		d.UseNumber()
		var want any
		if err := d.Decode(&want); err != nil {
			t.Fatalf("encoding/json cannot decode %q: %v", body, err)
		}
		if got := nodeToAny(root); !reflect.DeepEqual(want, got) {
			t.Fatalf("values differ from encoding/json for %q:\nencoding/json %#v\nreader        %#v", body, want, got)
		}
	}
}

// TestReadJSONErrors pins the offsets and kinds the API words its 400s with.
func TestReadJSONErrors(t *testing.T) {
	tests := []struct {
		give string
		want jsonError
	}{
		{``, jsonError{jsonEmpty, 0}},
		{" \n", jsonError{jsonEmpty, 2}},
		{"{\"a\":\"\xff\"}", jsonError{jsonNotUTF8, 0}},
		{`{"sex": "male",}`, jsonError{jsonSyntax, 15}},
		{`{"a":1 "b":2}`, jsonError{jsonSyntax, 7}},
		{`{"a":x}`, jsonError{jsonSyntax, 5}},
		{`{"a":"\q"}`, jsonError{jsonSyntax, 7}},
		{"{\"a\":\"\t\"}", jsonError{jsonSyntax, 6}},
		{`{"a":01}`, jsonError{jsonSyntax, 6}},
		{`{"sex": "male"`, jsonError{jsonTruncated, 14}},
		{`{"a":tru`, jsonError{jsonTruncated, 8}},
		{`{"a":"\u00`, jsonError{jsonTruncated, 10}},
		{`{"a":[[[1]]]}`, jsonError{jsonTooDeep, 7}},
		{`[1]`, jsonError{jsonNotObject, 0}},
		{`null`, jsonError{jsonNotObject, 0}},
		{`{"a":1} x`, jsonError{jsonTrailing, 8}},
	}
	for _, tt := range tests {
		_, _, err := readJSON([]byte(tt.give), 3)
		if err == nil || *err != tt.want {
			t.Errorf("readJSON(%q) error = %+v, want %+v", tt.give, err, tt.want)
		}
	}
	for _, give := range []string{`[1]`, `null`, ` "x" `, `{"a":1}`} {
		if root, _, err := readJSONValue([]byte(give), 3); err != nil || root == nil {
			t.Errorf("readJSONValue(%q) = %v, %+v; want a value", give, root, err)
		}
	}
	if _, _, err := readJSONValue([]byte(`[1] x`), 3); err == nil || *err != (jsonError{jsonTrailing, 4}) {
		t.Errorf("readJSONValue([1] x) error = %+v, want trailing at 4", err)
	}
	root, dups, err := readJSON([]byte(`{"a":1,"b":{"c":2,"c":3},"a":[4]}`), 3)
	if err != nil || len(root.keys) != 2 {
		t.Fatalf("readJSON with duplicates = %+v, %v", root, err)
	}
	want := []jsonDuplicate{{[]jsonStep{{key: "b"}, {key: "c"}}}, {[]jsonStep{{key: "a"}}}}
	if diff := cmp.Diff(want, dups, cmp.AllowUnexported(jsonDuplicate{}, jsonStep{})); diff != "" {
		t.Errorf("duplicates (-want +got):\n%s", diff)
	}
}
