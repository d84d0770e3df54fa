package main

// JSON Patch (RFC 6902) over the strict reader's tree (json.go), addressed by JSON Pointers (RFC 6901).
// PATCH /Patient/{id} reads the patch document here, applies it to the stored resource's tree and sends
// the result through the Patient validator exactly as a PUT body (fhir_handlers.go), so a patch can
// never store what a PUT could not.
//
// Semantics are RFC 6902's, tested against the json-patch-tests suite (patch_test.go): operations apply
// in order and the patch is all or nothing (section 5); members an operation does not define are ignored
// (section 4); test compares by JSON equality, numbers by value (section 4.6); a location cannot be
// moved into one of its own children (section 4.4).

import (
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
)

// jsonPatchType is the one patch format accepted (R4 http.html#patch; RFC 5789 section 2.2: 415 and
// Accept-Patch for any other).
const jsonPatchType = "application/json-patch+json"

// Limits that keep a patch's cost in proportion to its size. A pointer deeper than fhirMaxDepth cannot
// name an element of a resource the reader accepts. Each move can nest the document up to that much
// deeper before the validator sees it, and each test compare the whole of it, so the operation cap
// bounds both. Each copy of the whole document into itself doubles it: copies share a budget.
const (
	maxPatchOps       = 1000
	maxPatchCopyBytes = maxFHIRBody
	patchPointerDepth = fhirMaxDepth
)

// patchOpNames lists the operations, for diagnostics.
const patchOpNames = "add, remove, replace, move, copy or test"

// patchOp is one operation of a JSON Patch (RFC 6902 section 4).
type patchOp struct {
	op         string    // add, remove, replace, move, copy or test
	path, from string    // the JSON Pointers as sent, for diagnostics
	to, src    []string  // their reference tokens, unescaped
	value      *jsonNode // add, replace and test
}

// patchError says which operation could not be applied (its index in the patch) and why.
type patchError struct {
	index int
	msg   string
}

// issue words e as the 422 the PATCH handler answers.
func (e *patchError) issue(ops []patchOp) fhirIssue {
	return fhirError("processing", "", fmt.Sprintf("patch operation %d (%s): %s", e.index, ops[e.index].where(), e.msg))
}

// where names an operation's target for diagnostics: its path, and from for move and copy.
func (op patchOp) where() string {
	p := shortPointer(op.path)
	if p == "" {
		p = `"" (the whole resource)`
	}
	if op.op == "move" || op.op == "copy" {
		return shortPointer(op.from) + " -> " + p
	}
	return p
}

// shortPointer is a pointer as sent, cut short for diagnostics if it is long.
func shortPointer(p string) string {
	if len(p) <= 100 {
		return p
	}
	return strings.ToValidUTF8(p[:100], "") + "…"
}

// parseJSONPatch reads a patch document: RFC 6902's array of operations, or PDS's {"patches": [...]},
// so code written against PDS works unchanged. It reports every problem, each naming its operation by
// index (counted from 0, as in the array); any problem means the patch is malformed (400).
func parseJSONPatch(body []byte) ([]patchOp, []fhirIssue) {
	root, dups, jerr := readJSONValue(body, fhirMaxDepth)
	var issues []fhirIssue
	for _, d := range dups {
		issues = append(issues, patchDuplicate(d))
	}
	if jerr != nil {
		return nil, append(issues, fhirJSONError(jerr, "JSON Patch"))
	}
	list := root
	if root.kind == jsonObject && len(root.keys) == 1 && root.keys[0] == "patches" {
		list = root.items[0]
	}
	switch {
	case list.kind != jsonArray:
		return nil, append(issues, fhirError("structure", "", `The patch must be a JSON array of operations (RFC 6902) or an object {"patches": [...]} (the PDS form).`))
	case len(list.items) == 0:
		return nil, append(issues, fhirError("required", "", "The patch has no operations; send at least one."))
	case len(list.items) > maxPatchOps:
		return nil, append(issues, fhirError("too-costly", "", fmt.Sprintf("The patch has %d operations; at most %d are accepted.", len(list.items), maxPatchOps)))
	}
	ops := make([]patchOp, len(list.items))
	for i, n := range list.items {
		var problems []fhirIssue
		ops[i], problems = parsePatchOp(i, n)
		issues = append(issues, problems...)
	}
	if len(issues) > 0 {
		return nil, issues
	}
	return ops, nil
}

// patchDuplicate words a member name used twice in one object of the patch document.
func patchDuplicate(d jsonDuplicate) fhirIssue {
	name := d.path[len(d.path)-1].key
	steps := d.path
	if len(steps) > 0 && !steps[0].isItem && steps[0].key == "patches" {
		steps = steps[1:]
	}
	if len(steps) < 2 || !steps[0].isItem {
		return fhirError("structure", "", fmt.Sprintf("The patch has the member %q more than once in the same object.", name))
	}
	where := ""
	for _, s := range steps[1 : len(steps)-1] {
		if s.isItem {
			where += "/" + strconv.Itoa(s.index)
		} else {
			where += "/" + s.key
		}
	}
	if where != "" {
		where = " (in " + where[1:] + ")"
	}
	return fhirError("structure", "", fmt.Sprintf("patch operation %d: the member %q appears more than once in the same object%s.", steps[0].index, name, where))
}

// parsePatchOp reads operation i of a patch.
func parsePatchOp(i int, n *jsonNode) (patchOp, []fhirIssue) {
	var op patchOp
	var issues []fhirIssue
	bad := func(code, format string, args ...any) {
		at := strconv.Itoa(i)
		if p := n.member("path"); p != nil && p.kind == jsonString {
			at += " (" + shortPointer(p.text) + ")"
		}
		issues = append(issues, fhirError(code, "", "patch operation "+at+": "+fmt.Sprintf(format, args...)))
	}
	if n.kind != jsonObject {
		bad("structure", "must be a JSON object, not %s.", n.kind.kindName())
		return op, issues
	}
	switch o := n.member("op"); {
	case o == nil:
		bad("required", `"op" is missing; it must be %s.`, patchOpNames)
	case o.kind != jsonString:
		bad("structure", `"op" must be a string (%s), not %s.`, patchOpNames, o.kind.kindName())
	case !slices.Contains([]string{"add", "remove", "replace", "move", "copy", "test"}, o.text):
		bad("code-invalid", `%q is not an operation; "op" must be %s (case-sensitive).`, o.text, patchOpNames)
	default:
		op.op = o.text
	}
	var msg string
	if op.path, op.to, msg = patchPointer(n, "path"); msg != "" {
		bad(patchPointerCode(msg), "%s", msg)
	}
	if op.op == "move" || op.op == "copy" {
		if op.from, op.src, msg = patchPointer(n, "from"); msg != "" {
			bad(patchPointerCode(msg), "%s", msg)
		} else if op.op == "move" && op.to != nil && len(op.src) < len(op.to) && slices.Equal(op.src, op.to[:len(op.src)]) {
			bad("value", "a location cannot be moved into one of its own children (RFC 6902 section 4.4).")
		}
	}
	if op.op == "add" || op.op == "replace" || op.op == "test" {
		if op.value = n.member("value"); op.value == nil {
			bad("required", `"value" is missing; %s needs one (null is a value).`, op.op)
		}
	}
	return op, issues
}

// patchPointerCode is the issue type for a problem patchPointer found: a missing member or a bad value.
func patchPointerCode(msg string) string {
	if strings.Contains(msg, "is missing") {
		return "required"
	}
	return "value"
}

// patchPointer reads the JSON Pointer in member name of op: the text as sent and its reference tokens
// (nil for "", the whole document), or why it is not a pointer.
func patchPointer(op *jsonNode, name string) (text string, tokens []string, msg string) {
	p := op.member(name)
	switch {
	case p == nil:
		return "", nil, fmt.Sprintf("%q is missing; it must be a JSON Pointer such as /name/0/family.", name)
	case p.kind != jsonString:
		return "", nil, fmt.Sprintf("%q must be a string (a JSON Pointer), not %s.", name, p.kind.kindName())
	}
	tokens, msg = parseJSONPointer(p.text)
	if msg != "" {
		return "", nil, fmt.Sprintf("%q is not a JSON Pointer: %s", name, msg)
	}
	if len(tokens) > patchPointerDepth {
		return "", nil, fmt.Sprintf("%q is deeper than the %d levels a resource may nest.", name, patchPointerDepth)
	}
	return p.text, tokens, ""
}

// parseJSONPointer splits a JSON Pointer into its reference tokens (RFC 6901 sections 3 and 4): "" is
// the whole document (no tokens); otherwise each "/" starts a token, in which "~1" stands for "/" and
// then "~0" for "~", and a "~" followed by anything else is an error.
func parseJSONPointer(p string) ([]string, string) {
	if p == "" {
		return nil, ""
	}
	if p[0] != '/' {
		return nil, `it must be "" (the whole resource) or start with "/".`
	}
	tokens := strings.Split(p[1:], "/")
	for i, t := range tokens {
		for j := range len(t) {
			if t[j] == '~' && (j+1 == len(t) || t[j+1] != '0' && t[j+1] != '1') {
				return nil, `"~" must be followed by 0 (for "~") or 1 (for "/").`
			}
		}
		tokens[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return tokens, ""
}

// applyJSONPatch applies ops in order to doc, which it changes in place (pass a tree of your own), and
// returns the resulting document, or the first operation that failed; a failed patch leaves nothing
// the caller should keep. ops are not changed (values are copied in), so they can be applied again.
func applyJSONPatch(doc *jsonNode, ops []patchOp) (*jsonNode, *patchError) {
	budget := maxPatchCopyBytes
	for i, op := range ops {
		var msg string
		doc, msg = op.apply(doc, &budget)
		if msg != "" {
			return nil, &patchError{index: i, msg: msg}
		}
	}
	return doc, nil
}

// apply performs one operation on doc and returns the new document, or why it failed. budget is what
// copies may still add, in bytes of JSON.
func (op patchOp) apply(doc *jsonNode, budget *int) (*jsonNode, string) {
	switch op.op {
	case "add":
		v, _ := copyJSONNode(op.value)
		return patchAdd(doc, op.to, v)
	case "remove":
		if op.to == nil {
			return nil, "the whole resource cannot be removed (to delete a Patient, use DELETE)."
		}
		_, msg := patchRemove(doc, op.to)
		return doc, msg
	case "replace":
		v, _ := copyJSONNode(op.value)
		return patchReplace(doc, op.to, v)
	case "move":
		if slices.Equal(op.src, op.to) { // a no-op, but from must exist
			_, msg := patchGet(doc, op.src)
			return doc, msg
		}
		v, msg := patchRemove(doc, op.src) // from is not "" here: parsePatchOp refuses a move into a child
		if msg != "" {
			return nil, msg
		}
		return patchAdd(doc, op.to, v)
	case "copy":
		v, msg := patchGet(doc, op.src)
		if msg != "" {
			return nil, msg
		}
		c, size := copyJSONNode(v)
		if *budget -= size; *budget < 0 {
			return nil, fmt.Sprintf("copies would add more than the %d bytes a resource may have.", maxPatchCopyBytes)
		}
		return patchAdd(doc, op.to, c)
	}
	v, msg := patchGet(doc, op.to) // test
	switch {
	case msg != "":
		return nil, msg
	case v.kind != op.value.kind:
		return nil, fmt.Sprintf("test failed: the resource has %s there, the test gives %s.", v.kind.kindName(), op.value.kind.kindName())
	case !jsonEqual(v, op.value):
		return nil, "test failed: the value there is not the one the test gives."
	}
	return doc, ""
}

// patchGet returns the value at tokens, or why there is none.
func patchGet(doc *jsonNode, tokens []string) (*jsonNode, string) {
	if tokens == nil {
		return doc, ""
	}
	parent, i, msg := patchLocate(doc, tokens)
	if msg != "" {
		return nil, msg
	}
	return parent.items[i], ""
}

// patchLocate finds an existing value below the root: the object or array holding it and its position
// there, or why there is none.
func patchLocate(doc *jsonNode, tokens []string) (parent *jsonNode, i int, msg string) {
	if parent, msg = patchParent(doc, tokens); msg != "" {
		return nil, 0, msg
	}
	if i, msg = patchIndex(parent, tokens, false); msg != "" {
		return nil, 0, msg
	}
	return parent, i, ""
}

// patchAdd adds v at tokens (RFC 6902 section 4.1): the whole document, a new or existing object member
// (an existing one keeps its place), or an array item (inserted, or appended for "-"). The parent must
// exist: missing objects are not created.
func patchAdd(doc *jsonNode, tokens []string, v *jsonNode) (*jsonNode, string) {
	if tokens == nil {
		return v, ""
	}
	parent, msg := patchParent(doc, tokens)
	if msg != "" {
		return nil, msg
	}
	last := tokens[len(tokens)-1]
	if parent.kind == jsonObject {
		if i := slices.Index(parent.keys, last); i >= 0 {
			parent.items[i] = v
		} else {
			parent.keys, parent.items = append(parent.keys, last), append(parent.items, v)
		}
		return doc, ""
	}
	i, msg := patchIndex(parent, tokens, true)
	if msg != "" {
		return nil, msg
	}
	parent.items = slices.Insert(parent.items, i, v)
	return doc, ""
}

// patchReplace replaces the value at tokens, which must exist, with v (RFC 6902 section 4.3); an object
// member keeps its place.
func patchReplace(doc *jsonNode, tokens []string, v *jsonNode) (*jsonNode, string) {
	if tokens == nil {
		return v, ""
	}
	parent, i, msg := patchLocate(doc, tokens)
	if msg != "" {
		return nil, msg
	}
	parent.items[i] = v
	return doc, ""
}

// patchRemove removes the value at tokens (not the whole document) and returns it.
func patchRemove(doc *jsonNode, tokens []string) (*jsonNode, string) {
	parent, i, msg := patchLocate(doc, tokens)
	if msg != "" {
		return nil, msg
	}
	v := parent.items[i]
	parent.items = slices.Delete(parent.items, i, i+1)
	if parent.kind == jsonObject {
		parent.keys = slices.Delete(parent.keys, i, i+1)
	}
	return v, ""
}

// patchParent walks to the object or array that holds the last token of tokens.
func patchParent(doc *jsonNode, tokens []string) (*jsonNode, string) {
	n := doc
	for k := range len(tokens) - 1 {
		i, msg := patchIndex(n, tokens[:k+1], false)
		if msg != "" {
			return nil, msg
		}
		n = n.items[i]
	}
	if n.kind != jsonObject && n.kind != jsonArray {
		return nil, fmt.Sprintf("%s is %s, which has no members or items.", jsonPointer(tokens[:len(tokens)-1]), n.kind.kindName())
	}
	return n, ""
}

// patchIndex finds the last token of tokens in n (the value at the tokens before it): the position of an
// object member, or an array index (RFC 6901 section 4: 0 or digits without a leading zero; "-" is the
// end, which only add may name).
func patchIndex(n *jsonNode, tokens []string, forAdd bool) (int, string) {
	t, at := tokens[len(tokens)-1], jsonPointer(tokens)
	switch n.kind {
	case jsonObject:
		if i := slices.Index(n.keys, t); i >= 0 {
			return i, ""
		}
		return 0, at + " does not exist."
	case jsonArray:
		if t == "-" && forAdd {
			return len(n.items), ""
		}
		i, err := strconv.Atoi(t)
		if err != nil || i < 0 || strconv.Itoa(i) != t {
			if forAdd {
				return 0, fmt.Sprintf(`%q is not an array index (0, 1, ... or "-" to append).`, t)
			}
			return 0, fmt.Sprintf("%q is not an array index (0, 1, ...).", t)
		}
		if i < len(n.items) || forAdd && i == len(n.items) {
			return i, ""
		}
		return 0, fmt.Sprintf("%s is past the end of the array, which has %d items.", at, len(n.items))
	}
	return 0, fmt.Sprintf("%s does not exist: %s is %s.", at, jsonPointer(tokens[:len(tokens)-1]), n.kind.kindName())
}

// jsonPointer writes tokens back as a JSON Pointer, for diagnostics.
func jsonPointer(tokens []string) string {
	if len(tokens) == 0 {
		return `""`
	}
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(t, "~", "~0"), "/", "~1"))
	}
	return b.String()
}

// copyJSONNode returns a deep copy of n, so that changing a copied value later does not change the
// original (RFC 6902 section 4.5), and roughly how many bytes of JSON it adds.
func copyJSONNode(n *jsonNode) (*jsonNode, int) {
	c := &jsonNode{kind: n.kind, text: n.text, keys: slices.Clone(n.keys)}
	size := len(n.text) + 2
	for _, k := range n.keys {
		size += len(k) + 3
	}
	if n.items != nil {
		c.items = make([]*jsonNode, len(n.items))
		for i, item := range n.items {
			var s int
			c.items[i], s = copyJSONNode(item)
			size += s + 1
		}
	}
	return c, size
}

// jsonEqual is RFC 6902 section 4.6's equality: same type; strings, booleans and null as they are;
// numbers by value; arrays item by item; objects by their members, in any order.
func jsonEqual(a, b *jsonNode) bool {
	if a.kind != b.kind || len(a.items) != len(b.items) {
		return false
	}
	switch a.kind {
	case jsonNumber:
		return jsonNumberEqual(a.text, b.text)
	case jsonArray:
		for i := range a.items {
			if !jsonEqual(a.items[i], b.items[i]) {
				return false
			}
		}
		return true
	case jsonObject:
		var index map[string]*jsonNode // b's members by name, for a big object
		if len(b.keys) > smallObject {
			index = make(map[string]*jsonNode, len(b.keys))
			for i, k := range b.keys {
				index[k] = b.items[i]
			}
		}
		for i, k := range a.keys {
			bv := index[k]
			if index == nil {
				bv = b.member(k)
			}
			if bv == nil || !jsonEqual(a.items[i], bv) {
				return false
			}
		}
		return true
	}
	return a.text == b.text
}

// jsonNumberEqual reports whether two JSON number literals have the same value, exactly (no float64:
// 1, 1.0, 10e-1 and 1E0 are equal, 1e400 is not infinity, 0 equals -0).
func jsonNumberEqual(a, b string) bool {
	da, ea := decimalParts(a)
	db, eb := decimalParts(b)
	return da == db && ea.Cmp(eb) == 0
}

// decimalParts writes a number literal as sign and significant digits (no leading or trailing zeros) and
// the power of ten of the last digit: -12.30e1 is ("-123", 0), 0.5 is ("5", -1), any zero ("0", 0). The
// exponent is a big.Int because a literal's exponent may have any number of digits.
func decimalParts(lit string) (string, *big.Int) {
	neg := strings.HasPrefix(lit, "-")
	lit = strings.TrimPrefix(lit, "-")
	exp := new(big.Int)
	if e := strings.IndexAny(lit, "eE"); e >= 0 {
		exp.SetString(lit[e+1:], 10) // the reader checked it: an optional sign, then digits
		lit = lit[:e]
	}
	intPart, frac, _ := strings.Cut(lit, ".")
	exp.Sub(exp, big.NewInt(int64(len(frac))))
	digits := strings.TrimLeft(intPart+frac, "0")
	if digits == "" {
		return "0", new(big.Int)
	}
	trimmed := strings.TrimRight(digits, "0")
	exp.Add(exp, big.NewInt(int64(len(digits)-len(trimmed))))
	if neg {
		trimmed = "-" + trimmed
	}
	return trimmed, exp
}
