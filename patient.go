package main

// FHIR R4 Patient validation (reference/fhir.md sections 1-3, 6 and 8).
//
// A body goes through two passes. readFHIRJSON reads it with the strict JSON reader (json.go) into a tree that keeps
// key order, number literals exactly as written and null versus absent; it rejects what encoding/json
// would silently accept (duplicate keys, invalid UTF-8, trailing data) and caps nesting. fhirValidator
// then walks that tree against fhirTypes, a table of R4 element definitions, collecting every problem.
// The tree, not a Go struct, is what we store and serve, so nothing the client sent is lost or rewritten.
//
// Deliberately not enforced (each would need terminology or cross-resource knowledge this service lacks):
// extensible/preferred bindings (maritalStatus, language, relationship ...), required bindings to large
// or external code systems (Attachment.contentType MIME types, Money.currency ISO 4217,
// ParameterDefinition.type, Expression.language), invariants of datatypes that only appear inside
// extension values (qty-3, sqty-1, sdd-1, ref-1 ...), dom-3 (contained resources must be referenced) and
// the content of `contained` resources, which are checked only for a string resourceType and a valid id
// and otherwise kept as sent: deep-validating other resource types would need their definitions too.

import (
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// patientResource is a validated Patient, kept losslessly as sent (key order and number literals included).
type patientResource struct {
	root   *jsonNode // the whole body; id and meta.versionId/lastUpdated are replaced on output
	bodyID string    // the body's id on update, "" on create
	size   int       // the body's length in bytes, to size the output of withMeta
}

// patientSearchFields is what the search index needs from a Patient.
type patientSearchFields struct {
	Identifiers          []patientIdentifier
	Names                []patientName
	Gender               string
	BirthDate            string // as written: YYYY, YYYY-MM or YYYY-MM-DD, "" if absent
	Active               string // "true" or "false", "" if absent
	DeceasedDateTime     string // as written, "" if absent (or deceased[x] is a boolean)
	Telecoms             []patientTelecom
	Addresses            []patientAddress
	GeneralPractitioners []patientReference
	ManagingOrganization []patientReference // 0 or 1
}

// patientTelecom is one Patient.telecom (ContactPoint) for token search.
type patientTelecom struct {
	System, Value string
}

// patientAddress is one Patient.address for string search: its string elements (R4 search.html#string:
// "the search covers the elements of type string", not use, type or period).
type patientAddress struct {
	Text                                       string
	Line                                       []string
	City, District, State, PostalCode, Country string
}

// patientReference is one Reference for reference search: the literal reference and the identifier.
type patientReference struct {
	Reference  string
	Identifier patientIdentifier
}

// patientIdentifier is one Patient.identifier for token search.
type patientIdentifier struct {
	System, Value string
}

// patientName is one Patient.name for string search.
type patientName struct {
	Family                string
	Given, Prefix, Suffix []string
	Text                  string
}

// Limits: fhirMaxDepth caps JSON nesting (the examples need about 10; encoding/json allows 10,000),
// fhirMaxString is the R4 1 MB ceiling for string and markdown values.
const (
	fhirMaxDepth  = 64
	fhirMaxString = 1 << 20
)

// fhirNHSNumberSystem is the UK Core identifier system whose values must pass the Modulus 11 check.
const fhirNHSNumberSystem = "https://fhir.nhs.uk/Id/nhs-number"

// companionOf returns the value of the object member "_"+name (a primitive's id and extensions), or nil;
// unlike member("_"+name) it builds no string.
func (n *jsonNode) companionOf(name string) *jsonNode {
	if n == nil || n.kind != jsonObject {
		return nil
	}
	for i, k := range n.keys {
		if len(k) == len(name)+1 && k[0] == '_' && k[1:] == name {
			return n.items[i]
		}
	}
	return nil
}

// has reports whether an element is present, as a value or as a `_name` companion (which FHIRPath
// also counts as existing).
func (n *jsonNode) has(name string) bool {
	return n.member(name) != nil || n.companionOf(name) != nil
}

// fhirPath is the FHIRPath of the element being looked at, as a stack of steps that grows and shrinks
// as the parser or validator goes in and out of elements. It becomes a string only when an issue needs
// it, so a valid body costs no path building at all.
type fhirPath []fhirStep

// fhirStep is one step of a fhirPath: a member (.name, or .name.ofType(type) for a choice element) or
// an array item ([index]). The first step is the root, e.g. Patient.
type fhirStep struct {
	name   string // a member's element name
	ofType string // a choice element's concrete type
	index  int    // an item's position in its array
	isItem bool   // whether this is an item rather than a member
}

// String renders the path, e.g. Patient.name[0].given[1] or Patient.deceased.ofType(boolean).
func (p fhirPath) String() string {
	var b []byte
	for i, s := range p {
		switch {
		case s.isItem:
			b = append(b, '[')
			b = strconv.AppendInt(b, int64(s.index), 10)
			b = append(b, ']')
			continue
		case i > 0:
			b = append(b, '.')
		}
		b = append(b, s.name...)
		if s.ofType != "" {
			b = append(b, ".ofType("...)
			b = append(b, s.ofType...)
			b = append(b, ')')
		}
	}
	return string(b)
}

// readFHIRJSON reads a FHIR resource with the strict JSON reader, wording its problems as issues. Any
// issue means the body is not usable JSON: the document's content is then not well defined.
func readFHIRJSON(body []byte) (*jsonNode, []fhirIssue) {
	root, dups, jerr := readJSON(body, fhirMaxDepth)
	var issues []fhirIssue
	rootName := "Patient" // paths start with the resource type (a Parameters body's are Parameters....)
	if rt := root.member("resourceType").str(); fhirIsResourceName(rt) {
		rootName = rt
	}
	for _, d := range dups {
		p := fhirPath{{name: rootName}}
		for _, s := range d.path {
			p = append(p, fhirStep{name: s.key, index: s.index, isItem: s.isItem})
		}
		// encoding/json would silently keep the last one; FHIR JSON has no duplicate names.
		issues = append(issues, fhirError("structure", p.String(),
			fmt.Sprintf("%s: the property %q appears more than once in the same object.", p, d.path[len(d.path)-1].key)))
	}
	if jerr == nil {
		return root, issues
	}
	return nil, append(issues, fhirJSONError(jerr, "JSON object"))
}

// fhirJSONError is the issue for a FHIR request body the JSON reader could not read (read with
// fhirMaxDepth); doc names what the body should hold, e.g. "JSON object".
func fhirJSONError(jerr *jsonError, doc string) fhirIssue {
	msg := map[jsonErrorKind]string{
		jsonEmpty:     "The body is not valid JSON: it ends before the " + doc + " is complete.",
		jsonTruncated: "The body is not valid JSON: it ends before the " + doc + " is complete.",
		jsonNotUTF8:   "The body is not valid UTF-8.",
		jsonSyntax:    fmt.Sprintf("The body is not valid JSON (at byte %d).", jerr.offset),
		jsonTooDeep:   fmt.Sprintf("The body nests JSON objects and arrays more than %d levels deep.", fhirMaxDepth),
		jsonNotObject: "The body must be a single JSON object (a FHIR resource).",
		jsonTrailing:  "The body has data after the end of the " + doc + ".",
	}[jerr.kind]
	return fhirError("structure", "", msg)
}

// parsePatient validates body (the raw request bytes) as an R4 Patient.
// For create (forCreate=true) the body's id, meta.versionId and meta.lastUpdated are ignored entirely (even
// if malformed) and dropped; for update id is validated like any element (the caller compares it with the
// URL id), and meta.versionId/lastUpdated are ignored and dropped. status is 0 when valid, 422 when the only
// problems are business rules (the NHS number), else 400; issues lists every problem in document order.
//
// Problems with the JSON itself (syntax, UTF-8, duplicate keys, depth, trailing data, resourceType) stop
// validation there, because the document's content is then not well defined.
func parsePatient(body []byte, forCreate bool) (p *patientResource, issues []fhirIssue, status int) {
	root, issues := readFHIRJSON(body)
	if root == nil || len(issues) > 0 {
		return nil, issues, 400
	}
	return checkPatient(root, len(body), forCreate)
}

// checkPatient is parsePatient for a tree readFHIRJSON read without issues; size is the length of the
// JSON it was read from (or about that).
func checkPatient(root *jsonNode, size int, forCreate bool) (p *patientResource, issues []fhirIssue, status int) {
	switch rt := root.member("resourceType"); {
	case rt == nil:
		return nil, []fhirIssue{fhirError("required", "", "The body has no resourceType; it must be \"Patient\".")}, 400
	case rt.str() != "Patient":
		return nil, []fhirIssue{fhirError("value", "", "The resourceType must be \"Patient\".")}, 400
	}
	v := &fhirValidator{forCreate: forCreate, path: append(make(fhirPath, 0, 16), fhirStep{name: "Patient"})}
	v.object(root, "Patient")
	status = 0
	for _, is := range v.issues {
		if is.Code != "business-rule" {
			status = 400
			break
		}
		status = 422
	}
	if status != 0 {
		return nil, v.issues, status
	}
	p = &patientResource{root: root, size: size}
	if !forCreate {
		p.bodyID = root.member("id").str()
	}
	return p, nil, 0
}

// fhirValidator walks a tree against fhirTypes and collects issues.
type fhirValidator struct {
	forCreate bool
	path      fhirPath // the element being validated
	issues    []fhirIssue
}

// add records an issue at the current path.
func (v *fhirValidator) add(code, format string, args ...any) {
	p := v.path.String()
	v.issues = append(v.issues, fhirError(code, p, p+": "+fmt.Sprintf(format, args...)))
}

// addAt records an issue at the member name of the current element.
func (v *fhirValidator) addAt(code, name, format string, args ...any) {
	v.enter(fhirStep{name: name})
	v.add(code, format, args...)
	v.leave()
}

// enter makes step the last step of the current path; leave removes it.
func (v *fhirValidator) enter(step fhirStep) {
	v.path = append(v.path, step)
}

// leave undoes the last enter.
func (v *fhirValidator) leave() {
	v.path = v.path[:len(v.path)-1]
}

// fhirLookup finds the definition for the JSON name key (without any "_"), resolving choice suffixes:
// it returns the definition's index and the concrete type.
func fhirLookup(defs []fhirElem, key string) (int, string, bool) {
	for i, el := range defs {
		prefix, isChoice := strings.CutSuffix(el.name, "[x]")
		if !isChoice {
			if el.name == key {
				return i, el.typ, true
			}
			continue
		}
		suffix, ok := strings.CutPrefix(key, prefix)
		if !ok || suffix == "" {
			continue
		}
		types := el.typ
		if types == "*" {
			types = fhirOpenTypes
		}
		for t := range strings.SplitSeq(types, "|") {
			// The suffix is the type name with its first letter upper-cased (valueString, valueCodeableConcept);
			// all type names are ASCII.
			if len(t) == len(suffix) && t[1:] == suffix[1:] && unicode.ToUpper(rune(t[0])) == rune(suffix[0]) {
				return i, t, true
			}
		}
	}
	return -1, "", false
}

// fhirIsPrimitive reports whether a FHIR type name is a primitive (primitive names start lower-case).
func fhirIsPrimitive(typ string) bool {
	return typ != "" && typ[0] >= 'a' && typ[0] <= 'z'
}

// object validates n as the complex type typ.
func (v *fhirValidator) object(n *jsonNode, typ string) {
	if n.kind != jsonObject {
		v.add("structure", "must be a JSON object, not %s.", n.kind.kindName())
		return
	}
	if len(n.keys) == 0 {
		v.add("structure", "must not be an empty object; leave the element out instead.")
		return
	}
	defs := fhirTypes[typ]
	// seen holds the key that supplied each element, for choice conflicts. Every type in fhirTypes fits in
	// seenArray, which lives on the stack.
	var seenArray [32]string
	var seen []string
	if k := len(defs) + len(fhirImplicit); k <= len(seenArray) {
		seen = seenArray[:k]
	} else {
		seen = make([]string, k)
	}
	for i, key := range n.keys {
		val := n.items[i]
		if v.skip(typ, key, val) {
			continue
		}
		name, companion := strings.CutPrefix(key, "_")
		idx, t, ok := fhirLookup(defs, name)
		if !ok {
			if idx, t, ok = fhirLookup(fhirImplicit, name); ok {
				idx += len(defs)
			}
		}
		if !ok || (companion && (!fhirIsPrimitive(t) || t == "xhtml")) {
			v.addAt("structure", key, "%q is not a known element here.", key)
			continue
		}
		el := fhirElemAt(defs, idx)
		step := fhirStep{name: name}
		if base, isChoice := strings.CutSuffix(el.name, "[x]"); isChoice {
			if seen[idx] != "" && seen[idx] != name {
				v.addAt("structure", base, "only one of %s and %s may be given (%s[x] takes one value).", seen[idx], name, base)
				continue
			}
			step = fhirStep{name: base, ofType: t}
		}
		seen[idx] = name
		v.enter(step)
		if companion {
			v.companion(val, el, n.member(name))
		} else {
			v.element(val, el, t, n.companionOf(name))
		}
		v.leave()
	}
	for i, el := range defs {
		if el.card[0] == '1' && seen[i] == "" {
			v.addAt("required", strings.TrimSuffix(el.name, "[x]"), "is required (cardinality %s).", el.card)
		}
	}
	v.invariants(n, typ)
}

// skip reports whether the member key of an object of type typ is left out of validation: what the
// server owns or ignores, and modifier extensions, which it reports here.
func (v *fhirValidator) skip(typ, key string, val *jsonNode) bool {
	// Patient.meta itself, as opposed to a Meta held by an extension, is the only Meta one level down.
	isResourceMeta := typ == "Meta" && len(v.path) == 2
	switch {
	case typ == "Patient" && key == "resourceType":
		return true
	case typ == "Patient" && key == "id" && v.forCreate && (val.kind == jsonString || val.kind == jsonNull):
		return true // create assigns the id, so a sent one is ignored (R4 http.html); a number is still malformed JSON
	case isResourceMeta && (key == "versionId" || key == "lastUpdated" || key == "_versionId" || key == "_lastUpdated"):
		return true // the server owns these and replaces them
	case key == "modifierExtension" || key == "_modifierExtension":
		// We understand no modifier extension, and FHIR forbids ignoring one: it may change the meaning.
		v.addAt("extension", "modifierExtension",
			"this server does not support any modifier extension, and an unknown modifier extension must be refused.")
		return true
	}
	return false
}

// fhirElemAt returns the definition at a combined index over defs and fhirImplicit.
func fhirElemAt(defs []fhirElem, i int) fhirElem {
	if i < len(defs) {
		return defs[i]
	}
	return fhirImplicit[i-len(defs)]
}

// element validates the value of one element against its cardinality, then each value against its type.
// comp is the element's `_name` companion, which makes null placeholders in primitive arrays legal.
func (v *fhirValidator) element(n *jsonNode, el fhirElem, typ string, comp *jsonNode) {
	if !strings.HasSuffix(el.card, "*") {
		switch n.kind {
		case jsonArray:
			v.add("structure", "must be a single value, not an array (cardinality %s).", el.card)
		case jsonNull:
			v.add("structure", "must not be null; leave the element out instead.")
		default:
			v.value(n, el, typ)
		}
		return
	}
	switch {
	case n.kind != jsonArray:
		v.add("structure", "must be an array (cardinality %s), even with one value.", el.card)
		return
	case len(n.items) == 0:
		v.add("structure", "must not be an empty array; leave the element out instead.")
		return
	}
	for i, item := range n.items {
		v.enter(fhirStep{index: i, isItem: true})
		if item.kind != jsonNull {
			v.value(item, el, typ)
		} else if !fhirIsPrimitive(typ) || comp == nil || comp.kind != jsonArray || i >= len(comp.items) || comp.items[i].kind == jsonNull {
			v.add("structure", "must not be null; null is only allowed in a primitive array as a placeholder for a value whose `_` companion entry is present.")
		}
		v.leave()
	}
}

// companion validates a primitive's `_name` companion (its id and extensions); main is the value itself.
func (v *fhirValidator) companion(n *jsonNode, el fhirElem, main *jsonNode) {
	if !strings.HasSuffix(el.card, "*") {
		if n.kind == jsonArray || n.kind == jsonNull {
			v.add("structure", "the `_` companion must be a single object holding id and extension.")
			return
		}
		v.object(n, "Element")
		return
	}
	if n.kind != jsonArray || len(n.items) == 0 {
		v.add("structure", "the `_` companion of a repeating element must be a non-empty array.")
		return
	}
	if main != nil && main.kind == jsonArray && len(main.items) != len(n.items) {
		v.add("structure", "the value array and its `_` companion array must have the same length.")
		return
	}
	for i, item := range n.items {
		v.enter(fhirStep{index: i, isItem: true})
		if item.kind != jsonNull {
			v.object(item, "Element")
		} else if main == nil || main.kind != jsonArray {
			v.add("structure", "a null `_` companion entry needs a value at the same position.")
		}
		// A null in both arrays is reported once, by element.
		v.leave()
	}
}

// value validates one non-null value of type typ.
func (v *fhirValidator) value(n *jsonNode, el fhirElem, typ string) {
	switch {
	case typ == "Resource":
		v.contained(n)
	case !fhirIsPrimitive(typ):
		v.object(n, typ)
	default:
		if code, msg := fhirCheckPrimitive(n, typ); msg != "" {
			v.add(code, "%s", msg)
			return
		}
		if el.binding != "" && !fhirHasCode(el.binding, n.text) {
			v.add("code-invalid", "the code is not in the required value set (%s).", strings.ReplaceAll(el.binding, "|", ", "))
		}
	}
}

// fhirHasCode reports whether code is one of the "|"-separated codes (codes are case-sensitive).
func fhirHasCode(codes, code string) bool {
	for c := range strings.SplitSeq(codes, "|") {
		if c == code {
			return true
		}
	}
	return false
}

// contained checks a contained resource only as far as we can without its definition (see the file comment).
func (v *fhirValidator) contained(n *jsonNode) {
	if n.kind != jsonObject || len(n.keys) == 0 {
		v.add("structure", "a contained resource must be a non-empty JSON object.")
		return
	}
	rt := n.member("resourceType").str()
	if !fhirIsResourceName(rt) {
		v.addAt("required", "resourceType", "a contained resource needs a resourceType naming a resource type.")
	}
	if id := n.member("id"); id == nil || !validFHIRID(id.str()) {
		v.addAt("required", "id", "a contained resource needs a valid id (1-64 letters, digits, '-' or '.') so it can be referenced.")
	}
	if n.member("contained") != nil {
		v.addAt("invariant", "contained", "a contained resource must not contain other resources (dom-2).")
	}
}

// fhirIsResourceName reports whether s looks like a resource type name (an upper-case letter then letters).
func fhirIsResourceName(s string) bool {
	return s != "" && s[0] >= 'A' && s[0] <= 'Z' && strings.Trim(s, asciiLetters) == ""
}

// invariants checks the constraints of typ that span several elements (fhir.md section 3), plus the NHS
// number business rules (section 8; one per Patient, UK Core).
func (v *fhirValidator) invariants(n *jsonNode, typ string) {
	switch typ {
	case "Patient":
		v.oneNHSNumber(n)
	case "Patient.contact":
		if !n.has("name") && !n.has("telecom") && !n.has("address") && !n.has("organization") {
			v.add("invariant", "a contact must have a name, telecom, address or organization (pat-1).")
		}
	case "Period":
		start, end := n.member("start").str(), n.member("end").str()
		if start != "" && end != "" && fhirDateTimeAfter(start, end) {
			v.add("invariant", "start must not be after end (per-1).")
		}
	case "Attachment":
		if n.has("data") && !n.has("contentType") {
			v.add("invariant", "contentType is required when data is present (att-1).")
		}
	case "ContactPoint":
		if n.has("value") && !n.has("system") {
			v.add("invariant", "system is required when value is present (cpt-2).")
		}
	case "Extension":
		hasValue := false
		for _, k := range n.keys {
			hasValue = hasValue || strings.HasPrefix(k, "value") || strings.HasPrefix(k, "_value")
		}
		if hasValue == (n.member("extension") != nil) {
			v.add("invariant", "an extension must have either a value[x] or nested extensions, not both and not neither (ext-1).")
		}
	case "Identifier":
		if n.member("system").str() != fhirNHSNumberSystem {
			return
		}
		val := n.member("value")
		switch {
		case val == nil:
			v.add("business-rule", "an NHS number identifier must have a value.")
		case val.kind == jsonString && !fhirValidNHSNumber(val.text):
			if _, msg := fhirCheckPrimitive(val, "string"); msg == "" { // a malformed string is already reported
				v.addAt("business-rule", "value", "an NHS number must be exactly 10 digits with a valid Modulus 11 check digit.")
			}
		}
	}
}

// oneNHSNumber reports every NHS number identifier after the first. UK Core Patient slices identifier by
// system and allows one NHS number (identifier:nhsNumber 0..1, FHIR-R4-UKCORE-STAGING-MAIN@3d2827e
// structuredefinitions/UKCore-Patient.xml lines 135-154), and PDS allows one identifier
// (personal-demographics-service-api@04f8304 specification/components/schemas/Identifier.yaml: maxItems 1).
// The slice counts entries, so the same number twice breaks it too; each copy also carries its own
// verification status extension, and two copies can disagree. Identifiers without a string value are
// reported by the Identifier rule and not counted here.
func (v *fhirValidator) oneNHSNumber(patient *jsonNode) {
	first := -1
	for i, id := range patient.member("identifier").elems() {
		val := id.member("value")
		if id.member("system").str() != fhirNHSNumberSystem || val == nil || val.kind != jsonString {
			continue
		}
		if first < 0 {
			first = i
			continue
		}
		v.enter(fhirStep{name: "identifier"})
		v.enter(fhirStep{index: i, isItem: true})
		if val.text == patient.member("identifier").items[first].member("value").text {
			v.add("business-rule", "repeats the NHS number of Patient.identifier[%d]; send it once (UK Core Patient allows one NHS number: identifier:nhsNumber 0..1).", first)
		} else {
			v.add("business-rule", "is a second NHS number, different from Patient.identifier[%d]'s; a Patient has one (UK Core Patient allows one NHS number: identifier:nhsNumber 0..1).", first)
		}
		v.leave()
		v.leave()
	}
}

// fhirValidNHSNumber applies the NHS Data Dictionary Modulus 11 check: weights 10..2 on the first nine
// digits, check = 11 - sum mod 11, where 11 means 0 and 10 means the number cannot be valid.
// 0000000000 passes the arithmetic but is not an NHS number (fhir.md section 8).
func fhirValidNHSNumber(s string) bool {
	if len(s) != 10 || s == "0000000000" {
		return false
	}
	sum := 0
	for i := range 10 {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
		if i < 9 {
			sum += int(s[i]-'0') * (10 - i)
		}
	}
	check := 11 - sum%11
	if check == 11 {
		check = 0
	}
	return check != 10 && check == int(s[9]-'0')
}

// fhirCheckPrimitive checks one non-null JSON value against a primitive type's rules ([dt] regexes, read
// as whole-value matches) and returns the issue code and message, or "" when it is valid.
func fhirCheckPrimitive(n *jsonNode, typ string) (code, msg string) {
	switch typ {
	case "boolean":
		if n.kind != jsonBool {
			return "structure", "must be a JSON boolean (true or false), not " + n.kind.kindName() + "."
		}
		return "", ""
	case "decimal", "integer", "positiveInt", "unsignedInt":
		if n.kind != jsonNumber {
			return "structure", "must be a JSON number, not " + n.kind.kindName() + "."
		}
		return fhirCheckInteger(n.text, typ) // JSON's number grammar is exactly FHIR's decimal pattern
	}
	if n.kind != jsonString {
		return "structure", "must be a JSON string, not " + n.kind.kindName() + "."
	}
	s := n.text
	switch {
	case s == "":
		return "value", "must not be an empty string; leave the element out instead."
	case len(s) > fhirMaxString:
		return "too-long", "is longer than the 1 MB FHIR allows."
	case strings.TrimSpace(s) == "":
		return "value", "must not be only whitespace."
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 && r != '\t' && r != '\r' && r != '\n' }) {
		return "value", "must not contain control characters (only tab, CR and LF are allowed)."
	}
	ok := true
	switch typ {
	case "code":
		ok = s == strings.TrimSpace(s) && !strings.ContainsAny(s, "\t\r\n") && !strings.Contains(s, "  ")
	case "id":
		ok = validFHIRID(s)
	case "uri", "url", "canonical":
		ok = !strings.ContainsAny(s, " \t\r\n")
	case "oid":
		ok = fhirValidOID(s)
	case "uuid":
		ok = fhirValidUUID(s)
	case "base64Binary":
		_, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
		ok = err == nil
	case "date":
		ok = fhirDatePrecision(s, false) > 0
	case "dateTime":
		ok = fhirDatePrecision(s, true) > 0
	case "instant":
		ok = fhirDatePrecision(s, true) == 4
	case "time":
		ok = fhirValidTime(s, false)
	case "xhtml":
		return fhirCheckXHTML(s)
	}
	if !ok {
		return "value", "is not a valid " + typ + " (" + fhirTypeHint(typ) + ")."
	}
	return "", ""
}

// fhirCheckInteger checks a number literal against integer, positiveInt and unsignedInt (32-bit
// range, no fraction or exponent); any literal is a valid decimal.
func fhirCheckInteger(lit, typ string) (code, msg string) {
	if typ == "decimal" {
		return "", ""
	}
	i, err := strconv.ParseInt(lit, 10, 32)
	switch {
	case err != nil && strings.ContainsAny(lit, ".eE"):
		return "value", "must be a whole number written without a fraction or exponent."
	case err != nil:
		return "value", "is outside the 32-bit integer range."
	case typ == "positiveInt" && i < 1:
		return "value", "must be a positive integer (1 or more)."
	case typ == "unsignedInt" && (i < 0 || lit[0] == '-'):
		return "value", "must be a non-negative integer."
	}
	return "", ""
}

// fhirTypeHint describes a primitive's format for diagnostics.
func fhirTypeHint(typ string) string {
	switch typ {
	case "code":
		return "no leading, trailing or repeated whitespace"
	case "id":
		return "1-64 letters, digits, '-' or '.'"
	case "uri", "url", "canonical":
		return "no whitespace"
	case "oid":
		return "urn:oid: followed by dotted numbers"
	case "uuid":
		return "urn:uuid: followed by a lower-case 8-4-4-4-12 hex UUID"
	case "base64Binary":
		return "base64 with = padding"
	case "date":
		return "YYYY, YYYY-MM or YYYY-MM-DD, a real calendar date"
	case "dateTime":
		return "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.fff] with Z or +hh:mm, a real calendar date"
	case "instant":
		return "YYYY-MM-DDThh:mm:ss[.fff] with Z or +hh:mm, a real calendar date"
	case "time":
		return "hh:mm:ss[.fff]"
	}
	return typ
}

// validFHIRID reports whether s is a valid FHIR id ([A-Za-z0-9\-\.]{1,64}); the handlers use it for URL ids.
func validFHIRID(s string) bool {
	return len(s) >= 1 && len(s) <= 64 && strings.Trim(s, asciiLetters+"0123456789-.") == ""
}

// asciiLetters is the set of ASCII letters, for strings.Trim(s, set) == "" (every byte in the set).
const asciiLetters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// fhirDigits reports whether s is non-empty and all ASCII digits.
func fhirDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == "" // Trim leaves "" only when every byte is in the set
}

// fhirValidOID matches urn:oid:[0-2](\.(0|[1-9][0-9]*))+.
func fhirValidOID(s string) bool {
	rest, ok := strings.CutPrefix(s, "urn:oid:")
	parts := strings.Split(rest, ".")
	if !ok || len(parts) < 2 || len(parts[0]) != 1 || parts[0][0] < '0' || parts[0][0] > '2' {
		return false
	}
	for _, p := range parts[1:] {
		if !fhirDigits(p) || len(p) > 1 && p[0] == '0' {
			return false
		}
	}
	return true
}

// fhirValidUUID matches urn:uuid: and a lower-case 8-4-4-4-12 hex UUID.
func fhirValidUUID(s string) bool {
	rest, ok := strings.CutPrefix(s, "urn:uuid:")
	if !ok || len(rest) != 36 {
		return false
	}
	for i, c := range []byte(rest) {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
		} else if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// fhirTwoDigits parses s[i:i+2] as a number in [lo, hi].
func fhirTwoDigits(s string, i, lo, hi int) bool {
	if len(s) < i+2 || !fhirDigits(s[i:i+2]) {
		return false
	}
	n := int(s[i]-'0')*10 + int(s[i+1]-'0')
	return n >= lo && n <= hi
}

// fhirDatePrecision returns how precise a FHIR date/dateTime is (1 year, 2 month, 3 day, 4 time) or 0 if
// it is malformed or not a real calendar date. A time needs a full date, seconds and a zone.
func fhirDatePrecision(s string, allowTime bool) int {
	if len(s) < 4 || !fhirDigits(s[:4]) || s[:4] == "0000" {
		return 0
	}
	if len(s) == 4 {
		return 1
	}
	if s[4] != '-' || !fhirTwoDigits(s, 5, 1, 12) {
		return 0
	}
	if len(s) == 7 {
		return 2
	}
	year, _ := strconv.Atoi(s[:4])
	month, _ := strconv.Atoi(s[5:7])
	lastDay := time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day() // leap years included
	if len(s) < 10 || s[7] != '-' || !fhirTwoDigits(s, 8, 1, lastDay) {
		return 0
	}
	if len(s) == 10 {
		return 3
	}
	if !allowTime || s[10] != 'T' || !fhirValidTime(s[11:], true) {
		return 0
	}
	return 4
}

// fhirValidTime matches hh:mm:ss(.f+)? and, when zoned, a mandatory Z or +/-hh:mm (up to 14:00).
func fhirValidTime(s string, zoned bool) bool {
	if len(s) < 8 || !fhirTwoDigits(s, 0, 0, 23) || s[2] != ':' || !fhirTwoDigits(s, 3, 0, 59) || s[5] != ':' || !fhirTwoDigits(s, 6, 0, 60) {
		return false
	}
	rest := s[8:]
	if frac, ok := strings.CutPrefix(rest, "."); ok {
		end := strings.IndexAny(frac, "Z+-")
		if end < 0 {
			end = len(frac)
		}
		if !fhirDigits(frac[:end]) {
			return false
		}
		rest = frac[end:]
	}
	if !zoned {
		return rest == ""
	}
	if rest == "Z" {
		return true
	}
	return len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':' &&
		(rest[1:] == "14:00" || fhirTwoDigits(rest, 1, 0, 13) && fhirTwoDigits(rest, 4, 0, 59))
}

// fhirDateTimeAfter reports whether dateTime a is after b, compared at the precision both share (per-1):
// "2014" is not after "2014-05-06". Values that are not valid dateTimes are reported elsewhere.
func fhirDateTimeAfter(a, b string) bool {
	pa, pb := fhirDatePrecision(a, true), fhirDatePrecision(b, true)
	if pa == 0 || pb == 0 {
		return false
	}
	if pa == 4 && pb == 4 {
		ta, errA := time.Parse(time.RFC3339Nano, a)
		tb, errB := time.Parse(time.RFC3339Nano, b)
		return errA == nil && errB == nil && ta.After(tb) // a leap second (:60) is not compared
	}
	n := [...]int{0, 4, 7, 10, 10}[min(pa, pb)]
	return a[:n] > b[:n]
}

// fhirCheckXHTML applies the Narrative.div rules: an XHTML div in the XHTML namespace, well-formed, basic
// HTML only (txt-1: no scripts, forms, frames, objects, event attributes or javascript: URLs) and with
// some non-whitespace content (txt-2).
func fhirCheckXHTML(s string) (code, msg string) {
	const wrapper = "must be a well-formed <div xmlns=\"http://www.w3.org/1999/xhtml\">…</div>."
	if !strings.HasPrefix(s, "<div") {
		return "value", wrapper
	}
	d := xml.NewDecoder(strings.NewReader(s))
	d.Entity = xml.HTMLEntity
	depth, content, closed := 0, false, false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "value", wrapper
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if closed {
				return "value", wrapper
			}
			if depth == 0 && (t.Name.Local != "div" || t.Name.Space != "http://www.w3.org/1999/xhtml") {
				return "value", wrapper
			}
			depth++
			switch strings.ToLower(t.Name.Local) {
			case "script", "iframe", "frame", "frameset", "object", "embed", "applet", "form", "input", "button",
				"select", "option", "textarea", "base", "link", "head", "body", "html":
				return "invariant", "must contain basic HTML only: <" + t.Name.Local + "> is not allowed (txt-1)."
			case "img":
				content = true
			}
			for _, a := range t.Attr {
				name := strings.ToLower(a.Name.Local)
				val := strings.ToLower(strings.Join(strings.Fields(a.Value), ""))
				if strings.HasPrefix(name, "on") || strings.HasPrefix(val, "javascript:") || strings.HasPrefix(val, "vbscript:") {
					return "invariant", "must contain basic HTML only: event attributes and script URLs are not allowed (txt-1)."
				}
			}
		case xml.EndElement:
			depth--
			closed = depth == 0
		case xml.CharData:
			if depth == 0 && strings.TrimSpace(string(t)) != "" || closed && len(t) > 0 {
				return "value", wrapper
			}
			content = content || strings.TrimSpace(string(t)) != ""
		case xml.ProcInst, xml.Directive:
			return "value", wrapper
		}
	}
	if !closed {
		return "value", wrapper
	}
	if !content {
		return "invariant", "must have some non-whitespace content (txt-2)."
	}
	return "", ""
}

// build is the store's buildFunc for a version of this resource (see buildFunc).
func (p *patientResource) build(id, versionID string, lastUpdated time.Time) ([]byte, error) {
	return p.withMeta(id, versionID, lastUpdated), nil
}

// withMeta returns the JSON to store and serve: the resource as sent, with "id" set to id and
// meta.versionId/meta.lastUpdated set (lastUpdated as a FHIR instant in UTC with milliseconds); the rest of
// meta is kept as the client sent it. An empty id leaves the id out, and an empty versionID both meta
// elements (and meta itself if nothing else is in it): what an upstream server is sent, to assign them.
func (p *patientResource) withMeta(id string, versionID string, lastUpdated time.Time) []byte {
	// The output is about the size of the body: a compact body plus our id and meta fits the first guess.
	b := make([]byte, 0, p.size+len(id)+len(versionID)+128)
	b = append(b, `{"resourceType":"Patient"`...)
	if id != "" {
		b = append(b, `,"id":`...)
		b = appendJSONString(b, id)
	}
	mark := len(b)
	b = append(b, `,"meta":{`...)
	meta := p.root.member("meta")
	if meta != nil {
		for i, k := range meta.keys {
			if k != "versionId" && k != "lastUpdated" && k != "_versionId" && k != "_lastUpdated" {
				b = appendJSONString(b, k)
				b = append(b, ':')
				b = appendJSONNode(b, meta.items[i])
				b = append(b, ',')
			}
		}
	}
	switch {
	case versionID != "":
		b = append(b, `"versionId":`...)
		b = appendJSONString(b, versionID)
		b = append(b, `,"lastUpdated":`...)
		b = append(b, '"')
		b = lastUpdated.UTC().AppendFormat(b, fhirInstant) // digits and punctuation only
		b = append(b, '"', '}')
	case b[len(b)-1] == ',':
		b[len(b)-1] = '}'
	default:
		b = b[:mark] // an empty meta is not valid FHIR
	}
	for i, k := range p.root.keys {
		if k != "resourceType" && k != "id" && k != "meta" {
			b = append(b, ',')
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONNode(b, p.root.items[i])
		}
	}
	return append(b, '}')
}

// nhsNumberOf is the value of a Patient's NHS number identifier (a validated Patient has at most one),
// or "".
func nhsNumberOf(patient *jsonNode) string {
	for _, id := range patient.member("identifier").elems() {
		if id.member("system").str() == fhirNHSNumberSystem {
			return id.member("value").str()
		}
	}
	return ""
}

// searchFields returns what search needs: identifiers, names, gender and birthDate as written. The
// strings are copies, so the index that keeps them does not keep the body alive.
func (p *patientResource) searchFields() patientSearchFields {
	str := func(n *jsonNode) string { return strings.Clone(n.str()) }
	strs := func(n *jsonNode) []string { // a primitive array's strings, without null placeholders
		var out []string
		for _, item := range n.elems() {
			if item.kind == jsonString {
				out = append(out, str(item))
			}
		}
		return out
	}
	ref := func(n *jsonNode) patientReference {
		id := n.member("identifier")
		return patientReference{str(n.member("reference")), patientIdentifier{str(id.member("system")), str(id.member("value"))}}
	}
	r := p.root
	f := patientSearchFields{Gender: str(r.member("gender")), BirthDate: str(r.member("birthDate")),
		DeceasedDateTime: str(r.member("deceasedDateTime"))}
	if a := r.member("active"); a != nil && a.kind == jsonBool {
		f.Active = a.text
	}
	for _, id := range r.member("identifier").elems() {
		f.Identifiers = append(f.Identifiers, patientIdentifier{System: str(id.member("system")), Value: str(id.member("value"))})
	}
	for _, n := range r.member("name").elems() {
		f.Names = append(f.Names, patientName{Family: str(n.member("family")), Given: strs(n.member("given")),
			Prefix: strs(n.member("prefix")), Suffix: strs(n.member("suffix")), Text: str(n.member("text"))})
	}
	for _, t := range r.member("telecom").elems() {
		f.Telecoms = append(f.Telecoms, patientTelecom{str(t.member("system")), str(t.member("value"))})
	}
	for _, a := range r.member("address").elems() {
		f.Addresses = append(f.Addresses, patientAddress{Text: str(a.member("text")), Line: strs(a.member("line")),
			City: str(a.member("city")), District: str(a.member("district")), State: str(a.member("state")),
			PostalCode: str(a.member("postalCode")), Country: str(a.member("country"))})
	}
	for _, g := range r.member("generalPractitioner").elems() {
		f.GeneralPractitioners = append(f.GeneralPractitioners, ref(g))
	}
	if o := r.member("managingOrganization"); o != nil {
		f.ManagingOrganization = []patientReference{ref(o)}
	}
	return f
}
