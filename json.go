package main

// The one JSON reader and writer. Every JSON document the service takes in (POST /egfr bodies, FHIR
// resources, token headers and claims, the issuer's discovery document and keys) is read by readJSON
// into a jsonNode tree, and FHIR resources are written back from that tree, so:
//
//   - duplicate member names are reported (encoding/json silently keeps the last; other parsers the
//     first, so a document whose meaning depends on the reader is refused or explained);
//   - member names match exactly (encoding/json matches struct fields case-insensitively);
//   - numbers keep the literal as written (1.830 stays 1.830; nothing goes through float64);
//   - null is kept apart from absent;
//   - invalid UTF-8, nesting beyond a limit and data after the document are errors with a byte offset.
//
// It accepts exactly the documents encoding/json accepts (RFC 8259) and decodes strings as it does;
// FuzzReadJSON in json_test.go checks both against an encoding/json reference.

import (
	"bytes"
	"slices"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// jsonKind is the JSON type of a jsonNode.
type jsonKind byte

// The JSON types.
const (
	jsonNull jsonKind = iota
	jsonBool
	jsonNumber
	jsonString
	jsonArray
	jsonObject
)

// kindName names a JSON type for diagnostics.
func (k jsonKind) kindName() string {
	return [...]string{"null", "a boolean", "a number", "a string", "an array", "an object"}[k]
}

// jsonNode is one JSON value as sent: objects keep their member order and numbers their literal text.
type jsonNode struct {
	kind  jsonKind
	text  string      // a string's value, a number's literal, or "true"/"false"
	keys  []string    // an object's member names in document order (without duplicates)
	items []*jsonNode // an object's member values (parallel to keys) or an array's items
}

// member returns the value of the object member named key, or nil.
func (n *jsonNode) member(key string) *jsonNode {
	if n == nil || n.kind != jsonObject {
		return nil
	}
	for i, k := range n.keys {
		if k == key {
			return n.items[i]
		}
	}
	return nil
}

// str returns the node's value when it is a JSON string, else "".
func (n *jsonNode) str() string {
	if n == nil || n.kind != jsonString {
		return ""
	}
	return n.text
}

// elems returns an array's items; nil for anything else.
func (n *jsonNode) elems() []*jsonNode {
	if n == nil || n.kind != jsonArray {
		return nil
	}
	return n.items
}

// jsonStep is one step of the path to a value: an object member or an array item.
type jsonStep struct {
	key    string
	index  int
	isItem bool
}

// jsonDuplicate is a member name used a second time in one object; path ends with that member. The
// later member is dropped from the tree (after being read, so problems inside it come first).
type jsonDuplicate struct {
	path []jsonStep
}

// jsonErrorKind says why a document could not be read.
type jsonErrorKind byte

const (
	jsonEmpty     jsonErrorKind = iota + 1 // nothing but whitespace
	jsonNotUTF8                            // not valid UTF-8
	jsonSyntax                             // not JSON at offset
	jsonTruncated                          // ends before the document is complete
	jsonTooDeep                            // nested more than the limit
	jsonNotObject                          // one valid JSON value, but not an object
	jsonTrailing                           // an object, then more than whitespace
)

// jsonError is why readJSON could not read a document, with the byte offset where reading stopped
// (0 for invalid UTF-8, which is checked first).
type jsonError struct {
	kind   jsonErrorKind
	offset int
}

// readJSON reads body as exactly one JSON object nested at most maxDepth deep (the root object is
// depth 1). On success err is nil; on jsonTrailing the object is still returned, so a caller can
// report what is wrong with it as well; on any other error root is nil. dups lists every duplicate
// member name, in document order.
//
// It allocates a few slabs per document rather than per value: strings without escapes and number
// literals are substrings of one copy of the body.
func readJSON(body []byte, maxDepth int) (root *jsonNode, dups []jsonDuplicate, err *jsonError) {
	return new(jsonReader).read(body, maxDepth)
}

// readJSONValue is readJSON for a document that may be any JSON value, not only an object (a JSON
// Patch is an array, RFC 6902 section 3); it never reports jsonNotObject.
func readJSONValue(body []byte, maxDepth int) (root *jsonNode, dups []jsonDuplicate, err *jsonError) {
	r := &jsonReader{anyRoot: true}
	return r.read(body, maxDepth)
}

// read is readJSON with r's memory: a small document (a POST /egfr body) is read into arrays r keeps,
// so a reader kept for reuse reads it without allocating more than the copy of the body. What it
// returns is valid until r's next read.
func (r *jsonReader) read(body []byte, maxDepth int) (root *jsonNode, dups []jsonDuplicate, err *jsonError) {
	if !utf8.Valid(body) {
		return nil, nil, &jsonError{kind: jsonNotUTF8}
	}
	// Upper bounds that are cheap to count: every member has a ':' and every other value follows a
	// '[' or a ','. (Those bytes inside strings make it an overestimate, usually a small one.)
	members := bytes.Count(body, []byte{':'})
	values := 1 + members + bytes.Count(body, []byte{'['}) + bytes.Count(body, []byte{','})
	r.src, r.pos, r.maxDepth, r.err, r.dups = string(body), 0, maxDepth, nil, r.dups[:0]
	if values <= len(r.small.nodes) {
		clear(r.small.nodes[:values])
		clear(r.small.itemSlab[:values-1])
		clear(r.small.keySlab[:members])
		r.nodeSlab, r.itemSlab, r.keySlab = r.small.nodes[:values], r.small.itemSlab[:values-1], r.small.keySlab[:members]
		r.items, r.keys, r.path = r.small.items[:0], r.small.keys[:0], r.small.path[:0]
	} else {
		r.nodeSlab, r.itemSlab, r.keySlab = make([]jsonNode, values), make([]*jsonNode, values-1), make([]string, members)
		r.items, r.keys, r.path = make([]*jsonNode, 0, values-1), make([]string, 0, members), nil
	}
	r.skipSpace()
	if r.pos == len(r.src) {
		return nil, nil, &jsonError{kind: jsonEmpty, offset: r.pos}
	}
	isObject := r.src[r.pos] == '{'
	root, ok := r.value(1)
	switch {
	case !ok:
		return nil, nil, r.err
	case !isObject && !r.anyRoot:
		return nil, nil, &jsonError{kind: jsonNotObject, offset: 0}
	}
	r.skipSpace()
	if r.pos != len(r.src) {
		return root, r.dups, &jsonError{kind: jsonTrailing, offset: r.pos}
	}
	return root, r.dups, nil
}

// jsonReader is a recursive-descent JSON parser over one document.
type jsonReader struct {
	src      string
	pos      int // the next byte to read
	maxDepth int
	anyRoot  bool // whether the document may be any value (readJSONValue), not only an object
	err      *jsonError
	path     []jsonStep // the path of the value being read, for reporting duplicates
	dups     []jsonDuplicate

	items   []*jsonNode // children read so far of the containers being read, innermost last
	keys    []string    // member names read so far of the objects being read, innermost last
	escaped []byte      // scratch space for decoding a string with escapes

	nodeSlab []jsonNode  // see carve
	itemSlab []*jsonNode // see carve
	keySlab  []string    // see carve

	small struct { // the slabs and stacks of a small document, kept with the reader
		nodes    [12]jsonNode
		itemSlab [12]*jsonNode
		keySlab  [12]string
		items    [12]*jsonNode
		keys     [12]string
		path     [4]jsonStep
	}
}

// carve returns n zeroed elements from the front of *slab, allocating a new slab if it runs out
// (which readJSON's sizing should prevent). Carving many small slices from one allocation keeps the
// allocation count per document low; a slab is never reallocated, so pointers into it stay valid.
func carve[T any](slab *[]T, n int) []T {
	if n > len(*slab) {
		*slab = make([]T, max(n, 64))
	}
	s := (*slab)[:n:n]
	*slab = (*slab)[n:]
	return s
}

// fail records the first error and reports false, for returning.
func (r *jsonReader) fail(kind jsonErrorKind) bool {
	if r.err == nil {
		if r.pos >= len(r.src) {
			kind = jsonTruncated
		}
		r.err = &jsonError{kind: kind, offset: min(r.pos, len(r.src))}
	}
	return false
}

// node returns a new node from the node slab.
func (r *jsonReader) node(kind jsonKind, text string) *jsonNode {
	n := &carve(&r.nodeSlab, 1)[0]
	n.kind, n.text = kind, text
	return n
}

// peek returns the next byte, or 0 at the end (0 is never valid there, so it fails any match).
func (r *jsonReader) peek() byte {
	if r.pos < len(r.src) {
		return r.src[r.pos]
	}
	return 0
}

// skipSpace skips JSON whitespace: space, tab, LF and CR.
func (r *jsonReader) skipSpace() {
	for r.pos < len(r.src) {
		switch r.src[r.pos] {
		case ' ', '\t', '\n', '\r':
			r.pos++
		default:
			return
		}
	}
}

// value reads the value at r.pos (after any whitespace); depth is its nesting level if it is an
// object or array.
func (r *jsonReader) value(depth int) (*jsonNode, bool) {
	r.skipSpace()
	rest := r.src[r.pos:]
	switch c := r.peek(); {
	case c == '{' || c == '[':
		if depth > r.maxDepth {
			return nil, r.fail(jsonTooDeep)
		}
		return r.container(depth)
	case c == '"':
		s, ok := r.string()
		return r.node(jsonString, s), ok
	case c == '-' || c >= '0' && c <= '9':
		s, ok := r.number()
		return r.node(jsonNumber, s), ok
	}
	for _, lit := range [...]struct {
		text string
		kind jsonKind
	}{{"true", jsonBool}, {"false", jsonBool}, {"null", jsonNull}} {
		if strings.HasPrefix(rest, lit.text) {
			r.pos += len(lit.text)
			if lit.kind == jsonNull {
				return r.node(jsonNull, ""), true
			}
			return r.node(jsonBool, lit.text), true
		}
		if len(rest) < len(lit.text) && rest != "" && strings.HasPrefix(lit.text, rest) {
			r.pos = len(r.src) // a prefix of a literal at the end: truncated
		}
	}
	return nil, r.fail(jsonSyntax)
}

// container reads the object or array at r.pos. Members are kept in document order; a member whose
// name the object already has is recorded in r.dups, then dropped.
func (r *jsonReader) container(depth int) (*jsonNode, bool) {
	isObject := r.src[r.pos] == '{'
	closer := byte(']')
	n := r.node(jsonArray, "")
	if isObject {
		closer, n.kind = '}', jsonObject
	}
	r.pos++
	r.skipSpace()
	if r.peek() == closer {
		r.pos++
		return n, true // empty: keys and items stay nil
	}
	itemsFrom, keysFrom := len(r.items), len(r.keys) // this container's children are items[itemsFrom:]
	var names map[string]bool                        // member names, once the object is no longer small
	for i := 0; ; i++ {
		step := jsonStep{index: i, isItem: true}
		if isObject {
			key, ok := r.memberName()
			if !ok {
				return nil, false
			}
			step = jsonStep{key: key}
		}
		r.path = append(r.path, step)
		child, ok := r.value(depth + 1)
		if !ok {
			return nil, false
		}
		switch {
		case !isObject:
			r.items = append(r.items, child)
		case r.seen(step.key, keysFrom, &names):
			r.dups = append(r.dups, jsonDuplicate{path: slices.Clone(r.path)})
		default:
			r.keys, r.items = append(r.keys, step.key), append(r.items, child)
		}
		r.path = r.path[:len(r.path)-1]
		r.skipSpace()
		if c := r.peek(); c == closer {
			r.pos++
			break
		} else if c != ',' {
			return nil, r.fail(jsonSyntax)
		}
		r.pos++
	}
	// Move the children from the shared stacks into slices of their own.
	n.items = carve(&r.itemSlab, len(r.items)-itemsFrom)
	copy(n.items, r.items[itemsFrom:])
	r.items = r.items[:itemsFrom]
	if isObject {
		n.keys = carve(&r.keySlab, len(r.keys)-keysFrom)
		copy(n.keys, r.keys[keysFrom:])
		r.keys = r.keys[:keysFrom]
	}
	return n, true
}

// memberName reads an object member's name and the colon after it.
func (r *jsonReader) memberName() (string, bool) {
	r.skipSpace()
	if r.peek() != '"' {
		return "", r.fail(jsonSyntax)
	}
	key, ok := r.string()
	if !ok {
		return "", false
	}
	r.skipSpace()
	if r.peek() != ':' {
		return "", r.fail(jsonSyntax)
	}
	r.pos++
	return key, true
}

// smallObject is how many members an object may have before duplicate detection switches from a
// linear scan (fastest for the small objects documents are made of) to a map, so that a hostile
// document with thousands of members in one object cannot make reading quadratic.
const smallObject = 16

// seen reports whether key is already a member of the object being read, whose names are
// r.keys[from:] (the caller adds key there when it is not). A big object gets the map *names, made
// here the first time and kept up to date here.
func (r *jsonReader) seen(key string, from int, names *map[string]bool) bool {
	keys := r.keys[from:]
	if len(keys) <= smallObject {
		return slices.Contains(keys, key)
	}
	if *names == nil {
		*names = make(map[string]bool, 2*len(keys))
		for _, k := range keys {
			(*names)[k] = true
		}
	}
	if (*names)[key] {
		return true
	}
	(*names)[key] = true
	return false
}

// string reads the string at r.pos (which is '"') and returns its value. Without escapes, which is
// nearly always, the value is a substring of the document.
func (r *jsonReader) string() (string, bool) {
	start := r.pos + 1
	for i := start; i < len(r.src); i++ {
		switch c := r.src[i]; {
		case c == '"':
			r.pos = i + 1
			return r.src[start:i], true
		case c == '\\':
			return r.unescape(start)
		case c < 0x20: // control characters must be escaped
			r.pos = i
			return "", r.fail(jsonSyntax)
		}
	}
	r.pos = len(r.src)
	return "", r.fail(jsonTruncated)
}

// unescape reads the rest of a string with escapes, whose content starts at src[start].
func (r *jsonReader) unescape(start int) (string, bool) {
	s, b := r.src, r.escaped[:0]
	for i := start; i < len(s); {
		switch c := s[i]; {
		case c == '"':
			r.pos, r.escaped = i+1, b
			return string(b), true
		case c < 0x20:
			r.pos = i
			return "", r.fail(jsonSyntax)
		case c != '\\':
			b = append(b, c)
			i++
		default:
			var ok bool
			if b, i, ok = r.escape(b, i); !ok {
				return "", false
			}
		}
	}
	r.pos = len(s)
	return "", r.fail(jsonTruncated)
}

// escape decodes the escape sequence at src[i] (a backslash) onto b and returns the index after it.
// It decodes as encoding/json does: a \uXXXX that is half of a UTF-16 surrogate pair is combined with
// a following \uXXXX holding the other half, and becomes U+FFFD (the replacement character) without one.
func (r *jsonReader) escape(b []byte, i int) ([]byte, int, bool) {
	s := r.src
	r.pos = i + 1 // where a bad escape is reported
	if i+1 == len(s) {
		return b, i, r.fail(jsonTruncated)
	}
	if e := s[i+1]; e != 'u' {
		k := strings.IndexByte(`"\/bfnrt`, e) // the escapes, in the order of the bytes they stand for
		if k < 0 {
			return b, i, r.fail(jsonSyntax)
		}
		return append(b, "\"\\/\b\f\n\r\t"[k]), i + 2, true
	}
	rn := hex4(s[i+2:])
	if rn < 0 {
		r.pos = i + 2 // at the first byte that is not a hex digit; truncated if the end comes first
		for r.pos < len(s) && r.pos < i+6 && strings.IndexByte("0123456789abcdefABCDEF", s[r.pos]) >= 0 {
			r.pos++
		}
		return b, i, r.fail(jsonSyntax)
	}
	i += 6
	if utf16.IsSurrogate(rn) {
		var low rune = -1
		if strings.HasPrefix(s[i:], `\u`) {
			low = hex4(s[i+2:])
		}
		if rn = utf16.DecodeRune(rn, low); rn != utf8.RuneError { // U+FFFD unless rn and low make a pair
			i += 6 // the low half is used up too
		}
	}
	return utf8.AppendRune(b, rn), i, true
}

// hex4 decodes the four hex digits at the start of s, or returns -1.
func hex4(s string) rune {
	if len(s) < 4 {
		return -1
	}
	var r rune
	for _, c := range []byte(s[:4]) {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// number reads the number at r.pos and returns its literal: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (r *jsonReader) number() (string, bool) {
	s, start := r.src, r.pos
	i := start
	if s[i] == '-' {
		i++
	}
	digits := func(from int) int { // the index of the first non-digit at or after from
		for from < len(s) && s[from] >= '0' && s[from] <= '9' {
			from++
		}
		return from
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		i = digits(i)
	default:
		r.pos = i
		return "", r.fail(jsonSyntax)
	}
	if i < len(s) && s[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			r.pos = j
			return "", r.fail(jsonSyntax)
		}
		i = j
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			r.pos = j
			return "", r.fail(jsonSyntax)
		}
		i = j
	}
	r.pos = i
	return s[start:i], true
}

// appendJSONNode appends n as compact JSON, number literals unchanged.
func appendJSONNode(b []byte, n *jsonNode) []byte {
	switch n.kind {
	case jsonNull:
		return append(b, "null"...)
	case jsonString:
		return appendJSONString(b, n.text)
	case jsonArray, jsonObject:
		open, close := byte('['), byte(']')
		if n.kind == jsonObject {
			open, close = '{', '}'
		}
		b = append(b, open)
		for i, item := range n.items {
			if i > 0 {
				b = append(b, ',')
			}
			if n.kind == jsonObject {
				b = appendJSONString(b, n.keys[i])
				b = append(b, ':')
			}
			b = appendJSONNode(b, item)
		}
		return append(b, close)
	}
	return append(b, n.text...) // numbers and booleans as written
}

// appendJSONString appends s as a JSON string; unlike encoding/json it leaves <, > and & alone so a
// narrative stays readable. Invalid UTF-8 (which a read document never has) becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	plain := 0 // s[plain:i] needs no escaping and is copied in one go
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || size > 1 {
				i += size // valid UTF-8 is copied as it is
				continue
			}
		}
		b = append(b, s[plain:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		case '\t':
			b = append(b, `\t`...)
		default:
			if c < 0x20 {
				b = append(b, `\u00`...)
				b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
			} else {
				b = utf8.AppendRune(b, utf8.RuneError) // a byte that is not UTF-8
			}
		}
		i++
		plain = i
	}
	b = append(b, s[plain:]...)
	return append(b, '"')
}
