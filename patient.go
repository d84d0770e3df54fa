package main

// FHIR R4 Patient validation (reference/fhir.md sections 1-3, 6 and 8).
//
// A body goes through two passes. fhirParseTree reads it token by token into a fhirNode tree that keeps
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
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// fhirIssue is one OperationOutcome.issue (R4).
type fhirIssue struct {
	Severity    string               `json:"severity"`             // "error" for validation problems
	Code        string               `json:"code"`                 // IssueType: structure, required, value, invariant, code-invalid, business-rule, extension, too-long ...
	Diagnostics string               `json:"diagnostics"`          // human sentence naming the element and the rule, for a developer
	Expression  []string             `json:"expression,omitempty"` // FHIRPath
	Details     *fhirCodeableConcept `json:"details,omitempty"`    // a coded reason, e.g. an NHS API error code
}

// patientResource is a validated Patient, kept losslessly as sent (key order and number literals included).
type patientResource struct {
	root   *fhirNode // the whole body; id and meta.versionId/lastUpdated are replaced on output
	bodyID string    // the body's id on update, "" on create
	size   int       // the body's length in bytes, to size the output of withMeta
}

// patientSearchFields is what the search index needs from a Patient.
type patientSearchFields struct {
	Identifiers []patientIdentifier
	Names       []patientName
	Gender      string
	BirthDate   string // as written: YYYY, YYYY-MM or YYYY-MM-DD, "" if absent
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

// fhirOpenTypes are the R4 types allowed for Extension.value[x] (datatypes.html#open): all of them are
// supported, so no legal extension value is rejected for want of a definition.
const fhirOpenTypes = "base64Binary|boolean|canonical|code|date|dateTime|decimal|id|instant|integer|markdown|oid|" +
	"positiveInt|string|time|unsignedInt|uri|url|uuid|Address|Age|Annotation|Attachment|CodeableConcept|Coding|" +
	"ContactPoint|Count|Distance|Duration|HumanName|Identifier|Money|Period|Quantity|Range|Ratio|Reference|" +
	"SampledData|Signature|Timing|ContactDetail|Contributor|DataRequirement|Expression|ParameterDefinition|" +
	"RelatedArtifact|TriggerDefinition|UsageContext|Dosage|Meta"

// Required value sets used in more than one place.
const (
	fhirGenderCodes = "male|female|other|unknown"
	fhirTimeUnits   = "s|min|h|d|wk|mo|a"
	fhirComparators = "<|<=|>=|>"
)

// fhirElem defines one element of a complex type, as in the R4 StructureDefinitions.
type fhirElem struct {
	name    string // JSON name; a choice element ends in "[x]"
	typ     string // FHIR type; a choice lists its types "a|b"; "*" means fhirOpenTypes
	card    string // "0..1", "0..*", "1..1" or "1..*"
	binding string // codes of a required binding "a|b|c", or ""
}

// fhirQuantityElems is Quantity and its profiles (Age, Count, Distance, Duration, SimpleQuantity).
var fhirQuantityElems = []fhirElem{
	{"value", "decimal", "0..1", ""},
	{"comparator", "code", "0..1", fhirComparators},
	{"unit", "string", "0..1", ""},
	{"system", "uri", "0..1", ""},
	{"code", "code", "0..1", ""},
}

// fhirTypes is the read-only table of complex types: Patient, its backbone elements ("Patient.contact")
// and every datatype they or an extension value can hold. Every type also has the implicit elements
// id (string) and extension (Extension 0..*) unless it lists them itself; "Element" is a primitive's
// `_x` companion, which has only those two.
var fhirTypes = map[string][]fhirElem{
	"Patient": {
		{"id", "id", "0..1", ""},
		{"meta", "Meta", "0..1", ""},
		{"implicitRules", "uri", "0..1", ""},
		{"language", "code", "0..1", ""},
		{"text", "Narrative", "0..1", ""},
		{"contained", "Resource", "0..*", ""},
		{"extension", "Extension", "0..*", ""},
		{"identifier", "Identifier", "0..*", ""},
		{"active", "boolean", "0..1", ""},
		{"name", "HumanName", "0..*", ""},
		{"telecom", "ContactPoint", "0..*", ""},
		{"gender", "code", "0..1", fhirGenderCodes},
		{"birthDate", "date", "0..1", ""},
		{"deceased[x]", "boolean|dateTime", "0..1", ""},
		{"address", "Address", "0..*", ""},
		{"maritalStatus", "CodeableConcept", "0..1", ""},
		{"multipleBirth[x]", "boolean|integer", "0..1", ""},
		{"photo", "Attachment", "0..*", ""},
		{"contact", "Patient.contact", "0..*", ""},
		{"communication", "Patient.communication", "0..*", ""},
		{"generalPractitioner", "Reference", "0..*", ""},
		{"managingOrganization", "Reference", "0..1", ""},
		{"link", "Patient.link", "0..*", ""},
	},
	"Patient.contact": {
		{"relationship", "CodeableConcept", "0..*", ""},
		{"name", "HumanName", "0..1", ""},
		{"telecom", "ContactPoint", "0..*", ""},
		{"address", "Address", "0..1", ""},
		{"gender", "code", "0..1", fhirGenderCodes},
		{"organization", "Reference", "0..1", ""},
		{"period", "Period", "0..1", ""},
	},
	"Patient.communication": {
		{"language", "CodeableConcept", "1..1", ""},
		{"preferred", "boolean", "0..1", ""},
	},
	"Patient.link": {
		{"other", "Reference", "1..1", ""},
		{"type", "code", "1..1", "replaced-by|replaces|refer|seealso"},
	},
	"Element": {},
	"Extension": {
		{"url", "uri", "1..1", ""},
		{"value[x]", "*", "0..1", ""},
	},
	"Meta": {
		{"versionId", "id", "0..1", ""},
		{"lastUpdated", "instant", "0..1", ""},
		{"source", "uri", "0..1", ""},
		{"profile", "canonical", "0..*", ""},
		{"security", "Coding", "0..*", ""},
		{"tag", "Coding", "0..*", ""},
	},
	"Narrative": {
		{"status", "code", "1..1", "generated|extensions|additional|empty"},
		{"div", "xhtml", "1..1", ""},
	},
	"Identifier": {
		{"use", "code", "0..1", "usual|official|temp|secondary|old"},
		{"type", "CodeableConcept", "0..1", ""},
		{"system", "uri", "0..1", ""},
		{"value", "string", "0..1", ""},
		{"period", "Period", "0..1", ""},
		{"assigner", "Reference", "0..1", ""},
	},
	"HumanName": {
		{"use", "code", "0..1", "usual|official|temp|nickname|anonymous|old|maiden"},
		{"text", "string", "0..1", ""},
		{"family", "string", "0..1", ""},
		{"given", "string", "0..*", ""},
		{"prefix", "string", "0..*", ""},
		{"suffix", "string", "0..*", ""},
		{"period", "Period", "0..1", ""},
	},
	"ContactPoint": {
		{"system", "code", "0..1", "phone|fax|email|pager|url|sms|other"},
		{"value", "string", "0..1", ""},
		{"use", "code", "0..1", "home|work|temp|old|mobile"},
		{"rank", "positiveInt", "0..1", ""},
		{"period", "Period", "0..1", ""},
	},
	"Address": {
		{"use", "code", "0..1", "home|work|temp|old|billing"},
		{"type", "code", "0..1", "postal|physical|both"},
		{"text", "string", "0..1", ""},
		{"line", "string", "0..*", ""},
		{"city", "string", "0..1", ""},
		{"district", "string", "0..1", ""},
		{"state", "string", "0..1", ""},
		{"postalCode", "string", "0..1", ""},
		{"country", "string", "0..1", ""},
		{"period", "Period", "0..1", ""},
	},
	"CodeableConcept": {
		{"coding", "Coding", "0..*", ""},
		{"text", "string", "0..1", ""},
	},
	"Coding": {
		{"system", "uri", "0..1", ""},
		{"version", "string", "0..1", ""},
		{"code", "code", "0..1", ""},
		{"display", "string", "0..1", ""},
		{"userSelected", "boolean", "0..1", ""},
	},
	"Period": {
		{"start", "dateTime", "0..1", ""},
		{"end", "dateTime", "0..1", ""},
	},
	"Reference": {
		{"reference", "string", "0..1", ""},
		{"type", "uri", "0..1", ""},
		{"identifier", "Identifier", "0..1", ""},
		{"display", "string", "0..1", ""},
	},
	"Attachment": {
		{"contentType", "code", "0..1", ""},
		{"language", "code", "0..1", ""},
		{"data", "base64Binary", "0..1", ""},
		{"url", "url", "0..1", ""},
		{"size", "unsignedInt", "0..1", ""},
		{"hash", "base64Binary", "0..1", ""},
		{"title", "string", "0..1", ""},
		{"creation", "dateTime", "0..1", ""},
	},
	// The remaining types are reachable only through Extension.value[x].
	"Quantity": fhirQuantityElems,
	"Age":      fhirQuantityElems,
	"Count":    fhirQuantityElems,
	"Distance": fhirQuantityElems,
	"Duration": fhirQuantityElems,
	"Money": {
		{"value", "decimal", "0..1", ""},
		{"currency", "code", "0..1", ""},
	},
	"Range": {
		{"low", "Quantity", "0..1", ""},
		{"high", "Quantity", "0..1", ""},
	},
	"Ratio": {
		{"numerator", "Quantity", "0..1", ""},
		{"denominator", "Quantity", "0..1", ""},
	},
	"Annotation": {
		{"author[x]", "Reference|string", "0..1", ""},
		{"time", "dateTime", "0..1", ""},
		{"text", "markdown", "1..1", ""},
	},
	"SampledData": {
		{"origin", "Quantity", "1..1", ""},
		{"period", "decimal", "1..1", ""},
		{"factor", "decimal", "0..1", ""},
		{"lowerLimit", "decimal", "0..1", ""},
		{"upperLimit", "decimal", "0..1", ""},
		{"dimensions", "positiveInt", "1..1", ""},
		{"data", "string", "0..1", ""},
	},
	"Signature": {
		{"type", "Coding", "1..*", ""},
		{"when", "instant", "1..1", ""},
		{"who", "Reference", "1..1", ""},
		{"onBehalfOf", "Reference", "0..1", ""},
		{"targetFormat", "code", "0..1", ""},
		{"sigFormat", "code", "0..1", ""},
		{"data", "base64Binary", "0..1", ""},
	},
	"Timing": {
		{"event", "dateTime", "0..*", ""},
		{"repeat", "Timing.repeat", "0..1", ""},
		{"code", "CodeableConcept", "0..1", ""},
	},
	"Timing.repeat": {
		{"bounds[x]", "Duration|Range|Period", "0..1", ""},
		{"count", "positiveInt", "0..1", ""},
		{"countMax", "positiveInt", "0..1", ""},
		{"duration", "decimal", "0..1", ""},
		{"durationMax", "decimal", "0..1", ""},
		{"durationUnit", "code", "0..1", fhirTimeUnits},
		{"frequency", "positiveInt", "0..1", ""},
		{"frequencyMax", "positiveInt", "0..1", ""},
		{"period", "decimal", "0..1", ""},
		{"periodMax", "decimal", "0..1", ""},
		{"periodUnit", "code", "0..1", fhirTimeUnits},
		{"dayOfWeek", "code", "0..*", "mon|tue|wed|thu|fri|sat|sun"},
		{"timeOfDay", "time", "0..*", ""},
		{"when", "code", "0..*", "MORN|MORN.early|MORN.late|NOON|AFT|AFT.early|AFT.late|EVE|EVE.early|EVE.late|" +
			"NIGHT|PHS|HS|WAKE|C|CM|CD|CV|AC|ACM|ACD|ACV|PC|PCM|PCD|PCV"},
		{"offset", "unsignedInt", "0..1", ""},
	},
	"ContactDetail": {
		{"name", "string", "0..1", ""},
		{"telecom", "ContactPoint", "0..*", ""},
	},
	"Contributor": {
		{"type", "code", "1..1", "author|editor|reviewer|endorser"},
		{"name", "string", "1..1", ""},
		{"contact", "ContactDetail", "0..*", ""},
	},
	"DataRequirement": {
		{"type", "code", "1..1", ""},
		{"profile", "canonical", "0..*", ""},
		{"subject[x]", "CodeableConcept|Reference", "0..1", ""},
		{"mustSupport", "string", "0..*", ""},
		{"codeFilter", "DataRequirement.codeFilter", "0..*", ""},
		{"dateFilter", "DataRequirement.dateFilter", "0..*", ""},
		{"limit", "positiveInt", "0..1", ""},
		{"sort", "DataRequirement.sort", "0..*", ""},
	},
	"DataRequirement.codeFilter": {
		{"path", "string", "0..1", ""},
		{"searchParam", "string", "0..1", ""},
		{"valueSet", "canonical", "0..1", ""},
		{"code", "Coding", "0..*", ""},
	},
	"DataRequirement.dateFilter": {
		{"path", "string", "0..1", ""},
		{"searchParam", "string", "0..1", ""},
		{"value[x]", "dateTime|Period|Duration", "0..1", ""},
	},
	"DataRequirement.sort": {
		{"path", "string", "1..1", ""},
		{"direction", "code", "1..1", "ascending|descending"},
	},
	"Expression": {
		{"description", "string", "0..1", ""},
		{"name", "id", "0..1", ""},
		{"language", "code", "1..1", ""},
		{"expression", "string", "0..1", ""},
		{"reference", "uri", "0..1", ""},
	},
	"ParameterDefinition": {
		{"name", "code", "0..1", ""},
		{"use", "code", "1..1", "in|out"},
		{"min", "integer", "0..1", ""},
		{"max", "string", "0..1", ""},
		{"documentation", "string", "0..1", ""},
		{"type", "code", "1..1", ""},
		{"profile", "canonical", "0..1", ""},
	},
	"RelatedArtifact": {
		{"type", "code", "1..1", "documentation|justification|citation|predecessor|successor|derived-from|depends-on|composed-of"},
		{"label", "string", "0..1", ""},
		{"display", "string", "0..1", ""},
		{"citation", "markdown", "0..1", ""},
		{"url", "url", "0..1", ""},
		{"document", "Attachment", "0..1", ""},
		{"resource", "canonical", "0..1", ""},
	},
	"TriggerDefinition": {
		{"type", "code", "1..1", "named-event|periodic|data-changed|data-added|data-modified|data-removed|data-accessed|data-access-ended"},
		{"name", "string", "0..1", ""},
		{"timing[x]", "Timing|Reference|date|dateTime", "0..1", ""},
		{"data", "DataRequirement", "0..*", ""},
		{"condition", "Expression", "0..1", ""},
	},
	"UsageContext": {
		{"code", "Coding", "1..1", ""},
		{"value[x]", "CodeableConcept|Quantity|Range|Reference", "1..1", ""},
	},
	"Dosage": {
		{"sequence", "integer", "0..1", ""},
		{"text", "string", "0..1", ""},
		{"additionalInstruction", "CodeableConcept", "0..*", ""},
		{"patientInstruction", "string", "0..1", ""},
		{"timing", "Timing", "0..1", ""},
		{"asNeeded[x]", "boolean|CodeableConcept", "0..1", ""},
		{"site", "CodeableConcept", "0..1", ""},
		{"route", "CodeableConcept", "0..1", ""},
		{"method", "CodeableConcept", "0..1", ""},
		{"doseAndRate", "Dosage.doseAndRate", "0..*", ""},
		{"maxDosePerPeriod", "Ratio", "0..1", ""},
		{"maxDosePerAdministration", "Quantity", "0..1", ""},
		{"maxDosePerLifetime", "Quantity", "0..1", ""},
	},
	"Dosage.doseAndRate": {
		{"type", "CodeableConcept", "0..1", ""},
		{"dose[x]", "Range|Quantity", "0..1", ""},
		{"rate[x]", "Ratio|Range|Quantity", "0..1", ""},
	},
}

// fhirKind is the JSON kind of a fhirNode.
type fhirKind byte

// The JSON kinds.
const (
	fhirNull fhirKind = iota
	fhirBool
	fhirNumber
	fhirString
	fhirArray
	fhirObject
)

// fhirNode is one JSON value as sent: objects keep their key order and numbers their literal text, so
// a decimal like 1.830 is never rounded through float64.
type fhirNode struct {
	kind  fhirKind
	text  string      // string value, number literal, or "true"/"false"
	keys  []string    // object member names in document order
	items []*fhirNode // object member values (parallel to keys) or array items
}

// member returns the value of the object member named key, or nil.
func (n *fhirNode) member(key string) *fhirNode {
	if n == nil || n.kind != fhirObject {
		return nil
	}
	for i, k := range n.keys {
		if k == key {
			return n.items[i]
		}
	}
	return nil
}

// str returns the node's text when it is a JSON string, else "".
func (n *fhirNode) str() string {
	if n == nil || n.kind != fhirString {
		return ""
	}
	return n.text
}

// companionOf returns the value of the object member "_"+name (a primitive's id and extensions), or nil;
// unlike member("_"+name) it builds no string.
func (n *fhirNode) companionOf(name string) *fhirNode {
	if n == nil || n.kind != fhirObject {
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
func (n *fhirNode) has(name string) bool {
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

// fhirTreeParser reads a body into a fhirNode tree. It is a small recursive-descent parser for JSON
// (RFC 8259) that accepts exactly what encoding/json accepts and decodes strings the same way, but does
// not allocate per token: string values without escapes and number literals are substrings of src (one
// copy of the body), and nodes and child lists are carved from a few shared slabs. It adds the checks
// encoding/json does not make (duplicate keys, nesting depth); a body it cannot read is handed to
// fhirParseTreeStdlib, which words the diagnostics (see fhirParseTree).
type fhirTreeParser struct {
	src    string   // the whole body
	pos    int      // the next byte to read
	path   fhirPath // the path of the value being read, for reporting duplicate keys
	issues []fhirIssue

	items   []*fhirNode // children read so far of the containers being read, innermost last
	keys    []string    // member names read so far of the objects being read, innermost last
	escaped []byte      // scratch space for decoding a string with escapes

	nodeSlab []fhirNode  // see fhirCarve
	itemSlab []*fhirNode // see fhirCarve
	keySlab  []string    // see fhirCarve
}

// fhirSmallObject is how many members an object may have before duplicate detection switches from a
// linear scan (fastest for the small objects FHIR is made of) to a map, so that a hostile body with
// thousands of members in one object cannot make parsing quadratic.
const fhirSmallObject = 16

// fhirParseTree parses body into a tree; any issue it returns means the body is not usable JSON.
func fhirParseTree(body []byte) (*fhirNode, []fhirIssue) {
	if root, issues, ok := fhirParseTreeFast(body); ok {
		return root, issues
	}
	// The body is not valid UTF-8, not one well-formed JSON object, or nested too deep. That is rare, and
	// the slower encoding/json version explains it in encoding/json's words (with the byte offset), so
	// clients get exactly the diagnostics they always got. It also makes the fast parser safe: were it
	// ever to reject a good body, that body would still be parsed, only more slowly.
	return fhirParseTreeStdlib(body)
}

// fhirParseTreeFast parses body with fhirTreeParser; ok is false if it is not valid UTF-8, not a single
// well-formed JSON object or nested more than fhirMaxDepth deep. With ok, the tree and the issues
// (duplicate keys) are exactly those of fhirParseTreeStdlib, which FuzzParseTreeFast checks.
func fhirParseTreeFast(body []byte) (root *fhirNode, issues []fhirIssue, ok bool) {
	if !utf8.Valid(body) {
		return nil, nil, false
	}
	// Size the slabs from an upper bound that is cheap to count: every member has a ':' and every array item
	// follows a '[' or a ','. (Those bytes inside strings make it an overestimate, usually a small one.)
	members := bytes.Count(body, []byte{':'})
	values := 1 + members + bytes.Count(body, []byte{'['}) + bytes.Count(body, []byte{','})
	tp := &fhirTreeParser{
		src:      string(body),
		nodeSlab: make([]fhirNode, values),
		itemSlab: make([]*fhirNode, values-1),
		keySlab:  make([]string, members),
	}
	tp.path = append(make(fhirPath, 0, 16), fhirStep{name: "Patient"})
	tp.skipSpace()
	if tp.peek() != '{' {
		return nil, nil, false
	}
	root, ok = tp.value(1)
	tp.skipSpace()
	if !ok || tp.pos != len(tp.src) { // trailing data
		return nil, nil, false
	}
	return root, tp.issues, true
}

// fhirCarve returns n zeroed elements from the front of *slab, allocating a new slab if it runs out
// (which fhirParseTreeFast's sizing should prevent). Carving many small slices out of one allocation keeps
// the allocation count per body low; a slab is never reallocated, so slices and pointers into it stay valid.
func fhirCarve[T any](slab *[]T, n int) []T {
	if n > len(*slab) {
		*slab = make([]T, max(n, 64))
	}
	s := (*slab)[:n:n]
	*slab = (*slab)[n:]
	return s
}

// node returns a new node from the node slab.
func (tp *fhirTreeParser) node(kind fhirKind, text string) *fhirNode {
	n := &fhirCarve(&tp.nodeSlab, 1)[0]
	n.kind, n.text = kind, text
	return n
}

// peek returns the next byte, or 0 at the end of the body (0 is never valid there, so it fails any match).
func (tp *fhirTreeParser) peek() byte {
	if tp.pos < len(tp.src) {
		return tp.src[tp.pos]
	}
	return 0
}

// skipSpace skips JSON whitespace: space, tab, LF and CR.
func (tp *fhirTreeParser) skipSpace() {
	for tp.pos < len(tp.src) {
		switch tp.src[tp.pos] {
		case ' ', '\t', '\n', '\r':
			tp.pos++
		default:
			return
		}
	}
}

// value reads the JSON value at tp.pos (after any whitespace); depth is its nesting level if it is an
// object or array (the root object is 1). It reports false for malformed JSON or nesting deeper than
// fhirMaxDepth. Whatever follows the value is left to the caller to check.
func (tp *fhirTreeParser) value(depth int) (*fhirNode, bool) {
	tp.skipSpace()
	rest := tp.src[tp.pos:]
	switch c := tp.peek(); {
	case c == '{' || c == '[':
		if depth > fhirMaxDepth {
			return nil, false
		}
		return tp.container(depth)
	case c == '"':
		s, ok := tp.string()
		return tp.node(fhirString, s), ok
	case c == '-' || c >= '0' && c <= '9':
		s, ok := tp.number()
		return tp.node(fhirNumber, s), ok
	case strings.HasPrefix(rest, "true"):
		tp.pos += len("true")
		return tp.node(fhirBool, "true"), true
	case strings.HasPrefix(rest, "false"):
		tp.pos += len("false")
		return tp.node(fhirBool, "false"), true
	case strings.HasPrefix(rest, "null"):
		tp.pos += len("null")
		return tp.node(fhirNull, ""), true
	}
	return nil, false
}

// container reads the object or array at tp.pos. Object members are kept in document order; a member
// whose name was already used in the object is reported, then dropped (it is parsed first, so issues in
// it come first, as in fhirParseTreeStdlib).
func (tp *fhirTreeParser) container(depth int) (*fhirNode, bool) {
	isObject := tp.src[tp.pos] == '{'
	closer := byte(']')
	n := tp.node(fhirArray, "")
	if isObject {
		closer, n.kind = '}', fhirObject
	}
	tp.pos++
	tp.skipSpace()
	if tp.peek() == closer {
		tp.pos++
		return n, true // empty: keys and items stay nil
	}
	itemsFrom, keysFrom := len(tp.items), len(tp.keys) // this container's children are items[itemsFrom:]
	var names map[string]bool                          // member names, once the object is no longer small
	for i := 0; ; i++ {
		step := fhirStep{index: i, isItem: true}
		if isObject {
			tp.skipSpace()
			if tp.peek() != '"' {
				return nil, false
			}
			key, ok := tp.string()
			tp.skipSpace()
			if !ok || tp.peek() != ':' {
				return nil, false
			}
			tp.pos++
			step = fhirStep{name: key}
		}
		tp.path = append(tp.path, step)
		child, ok := tp.value(depth + 1)
		if !ok {
			return nil, false
		}
		switch {
		case !isObject:
			tp.items = append(tp.items, child)
		case tp.seen(step.name, keysFrom, &names):
			// encoding/json would silently keep the last one; FHIR JSON has no duplicate names.
			p := tp.path.String()
			tp.issues = append(tp.issues, fhirError("structure", p,
				fmt.Sprintf("%s: the property %q appears more than once in the same object.", p, step.name)))
		default:
			tp.keys = append(tp.keys, step.name)
			tp.items = append(tp.items, child)
			if names != nil {
				names[step.name] = true
			}
		}
		tp.path = tp.path[:len(tp.path)-1]
		tp.skipSpace()
		c := tp.peek()
		tp.pos++
		if c == closer {
			break
		}
		if c != ',' {
			return nil, false
		}
	}
	// Move the children from the shared stacks into slices of their own.
	n.items = fhirCarve(&tp.itemSlab, len(tp.items)-itemsFrom)
	copy(n.items, tp.items[itemsFrom:])
	tp.items = tp.items[:itemsFrom]
	if isObject {
		n.keys = fhirCarve(&tp.keySlab, len(tp.keys)-keysFrom)
		copy(n.keys, tp.keys[keysFrom:])
		tp.keys = tp.keys[:keysFrom]
	}
	return n, true
}

// seen reports whether key is already a member of the object being read, whose names are tp.keys[from:].
// Small objects are scanned; a bigger one gets the map *names, made here the first time it is needed and
// kept up to date by the caller.
func (tp *fhirTreeParser) seen(key string, from int, names *map[string]bool) bool {
	keys := tp.keys[from:]
	if len(keys) <= fhirSmallObject {
		return slices.Contains(keys, key)
	}
	if *names == nil {
		*names = make(map[string]bool, 2*len(keys))
		for _, k := range keys {
			(*names)[k] = true
		}
	}
	return (*names)[key]
}

// string reads the JSON string at tp.pos (which is '"') and returns its value. Without escapes, which is
// nearly always, the value is a substring of the body.
func (tp *fhirTreeParser) string() (string, bool) {
	start := tp.pos + 1
	for i := start; i < len(tp.src); i++ {
		switch c := tp.src[i]; {
		case c == '"':
			tp.pos = i + 1
			return tp.src[start:i], true
		case c == '\\':
			return tp.unescape(start)
		case c < 0x20: // control characters must be escaped
			return "", false
		}
	}
	return "", false // unterminated
}

// unescape reads the rest of a string with escapes, whose content starts at src[start], and decodes it
// as encoding/json does: a \uXXXX that is half of a UTF-16 surrogate pair is combined with a following
// \uXXXX holding the other half, and becomes U+FFFD (the replacement character) when it has none.
func (tp *fhirTreeParser) unescape(start int) (string, bool) {
	s, b := tp.src, tp.escaped[:0]
	for i := start; i < len(s); {
		c := s[i]
		switch {
		case c == '"':
			tp.pos, tp.escaped = i+1, b
			return string(b), true
		case c < 0x20:
			return "", false
		case c != '\\':
			b = append(b, c)
			i++
			continue
		}
		if i+1 == len(s) {
			return "", false
		}
		switch e := s[i+1]; e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r := fhirHex4(s[i+2:])
			if r < 0 {
				return "", false
			}
			if utf16.IsSurrogate(r) {
				var low rune = -1
				if strings.HasPrefix(s[i+6:], `\u`) {
					low = fhirHex4(s[i+8:])
				}
				r = utf16.DecodeRune(r, low) // U+FFFD unless r and low make a pair
				if r != utf8.RuneError {
					i += 6 // the low half is used up too
				}
			}
			b = utf8.AppendRune(b, r)
			i += 6
			continue
		default:
			return "", false
		}
		i += 2
	}
	return "", false // unterminated
}

// fhirHex4 decodes the four hex digits at the start of s, or returns -1.
func fhirHex4(s string) rune {
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

// number reads the JSON number at tp.pos and returns its literal:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (tp *fhirTreeParser) number() (string, bool) {
	s, start := tp.src, tp.pos
	i := start
	if s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		i = fhirSkipDigits(s, i)
	default:
		return "", false
	}
	if i < len(s) && s[i] == '.' {
		j := fhirSkipDigits(s, i+1)
		if j == i+1 {
			return "", false
		}
		i = j
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := fhirSkipDigits(s, i)
		if j == i {
			return "", false
		}
		i = j
	}
	tp.pos = i
	return s[start:i], true
}

// fhirSkipDigits returns the index of the first non-digit in s at or after i.
func fhirSkipDigits(s string, i int) int {
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

// fhirStdlibParser reads a body into a fhirNode tree with encoding/json's tokenizer, adding the checks
// the tokenizer does not make. It is the simple, slow version of fhirTreeParser: the service uses it to
// explain bodies that are not well-formed JSON, and the tests use it as the reference for the fast one.
type fhirStdlibParser struct {
	dec    *json.Decoder
	issues []fhirIssue
}

// errFHIRDepth stops parsing a body nested deeper than fhirMaxDepth.
var errFHIRDepth = errors.New("nesting too deep")

// fhirParseTreeStdlib is fhirParseTree with encoding/json's tokenizer.
func fhirParseTreeStdlib(body []byte) (*fhirNode, []fhirIssue) {
	if !utf8.Valid(body) {
		return nil, []fhirIssue{fhirError("structure", "", "The body is not valid UTF-8.")}
	}
	tp := &fhirStdlibParser{dec: json.NewDecoder(bytes.NewReader(body))}
	tp.dec.UseNumber()
	tok, err := tp.dec.Token()
	if err != nil {
		return nil, []fhirIssue{fhirJSONError(err)}
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, []fhirIssue{fhirError("structure", "", "The body must be a single JSON object (a FHIR resource).")}
	}
	root, err := tp.value(tok, "Patient", 1)
	switch {
	case errors.Is(err, errFHIRDepth):
		return nil, append(tp.issues, fhirError("structure", "",
			fmt.Sprintf("The body nests JSON objects and arrays more than %d levels deep.", fhirMaxDepth)))
	case err != nil:
		return nil, append(tp.issues, fhirJSONError(err))
	}
	if _, err := tp.dec.Token(); err != io.EOF {
		return nil, append(tp.issues, fhirError("structure", "", "The body has data after the end of the JSON object."))
	}
	return root, tp.issues
}

// value builds the node for tok, reading the rest of an object or array; path names it for issues.
func (tp *fhirStdlibParser) value(tok json.Token, path string, depth int) (*fhirNode, error) {
	switch t := tok.(type) {
	case nil:
		return &fhirNode{kind: fhirNull}, nil
	case bool:
		return &fhirNode{kind: fhirBool, text: strconv.FormatBool(t)}, nil
	case json.Number:
		return &fhirNode{kind: fhirNumber, text: string(t)}, nil
	case string:
		return &fhirNode{kind: fhirString, text: t}, nil
	}
	if depth > fhirMaxDepth {
		return nil, errFHIRDepth
	}
	n := &fhirNode{kind: fhirArray}
	if tok.(json.Delim) == '{' {
		n.kind = fhirObject
	}
	var names map[string]bool // duplicate detection without a quadratic scan of big objects
	if n.kind == fhirObject {
		names = map[string]bool{}
	}
	for tp.dec.More() {
		itemPath := fmt.Sprintf("%s[%d]", path, len(n.items))
		var key string
		if n.kind == fhirObject {
			kt, err := tp.dec.Token()
			if err != nil {
				return nil, err
			}
			key, _ = kt.(string)
			itemPath = path + "." + key
		}
		vt, err := tp.dec.Token()
		if err != nil {
			return nil, err
		}
		child, err := tp.value(vt, itemPath, depth+1)
		if err != nil {
			return nil, err
		}
		if n.kind == fhirObject && names[key] {
			// encoding/json would silently keep the last one; FHIR JSON has no duplicate names.
			tp.issues = append(tp.issues, fhirError("structure", itemPath,
				fmt.Sprintf("%s: the property %q appears more than once in the same object.", itemPath, key)))
			continue
		}
		if names != nil {
			names[key] = true
			n.keys = append(n.keys, key)
		}
		n.items = append(n.items, child)
	}
	if _, err := tp.dec.Token(); err != nil { // the closing delimiter
		return nil, err
	}
	return n, nil
}

// fhirJSONError turns a tokenizer error into an issue without exposing Go internals.
func fhirJSONError(err error) fhirIssue {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return fhirError("structure", "", fmt.Sprintf("The body is not valid JSON: %s (at byte %d).", se.Error(), se.Offset))
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fhirError("structure", "", "The body is not valid JSON: it ends before the object is complete.")
	}
	return fhirError("structure", "", "The body is not valid JSON.")
}

// fhirError builds an error-severity issue; an empty path means the issue concerns the whole body.
func fhirError(code, path, diagnostics string) fhirIssue {
	is := fhirIssue{Severity: "error", Code: code, Diagnostics: diagnostics}
	if path != "" {
		is.Expression = []string{path}
	}
	return is
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
	root, issues := fhirParseTree(body)
	if root == nil || len(issues) > 0 {
		return nil, issues, 400
	}
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
	p = &patientResource{root: root, size: len(body)}
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
			if len(t) == len(suffix) && t[1:] == suffix[1:] && fhirUpper(t[0]) == suffix[0] {
				return i, t, true
			}
		}
	}
	return -1, "", false
}

// fhirUpper upper-cases an ASCII letter.
func fhirUpper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

// fhirImplicit are the elements every datatype and backbone element inherits from Element.
var fhirImplicit = []fhirElem{
	{"id", "string", "0..1", ""},
	{"extension", "Extension", "0..*", ""},
}

// fhirIsPrimitive reports whether a FHIR type name is a primitive (primitive names start lower-case).
func fhirIsPrimitive(typ string) bool {
	return typ != "" && typ[0] >= 'a' && typ[0] <= 'z'
}

// object validates n as the complex type typ.
func (v *fhirValidator) object(n *fhirNode, typ string) {
	if n.kind != fhirObject {
		v.add("structure", "must be a JSON object, not %s.", fhirKindName(n.kind))
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
	// Patient.meta itself, as opposed to a Meta held by an extension, is the only Meta one level down.
	isResourceMeta := typ == "Meta" && len(v.path) == 2
	for i, key := range n.keys {
		val := n.items[i]
		switch {
		case typ == "Patient" && key == "resourceType":
			continue
		case typ == "Patient" && key == "id" && v.forCreate:
			continue // create assigns the id; whatever was sent is ignored
		case isResourceMeta && (key == "versionId" || key == "lastUpdated" || key == "_versionId" || key == "_lastUpdated"):
			continue // the server owns these and replaces them
		case key == "modifierExtension" || key == "_modifierExtension":
			// We understand no modifier extension, and FHIR forbids ignoring one: it may change the meaning.
			v.addAt("extension", "modifierExtension",
				"this server does not support any modifier extension, and an unknown modifier extension must be refused.")
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

// fhirElemAt returns the definition at a combined index over defs and fhirImplicit.
func fhirElemAt(defs []fhirElem, i int) fhirElem {
	if i < len(defs) {
		return defs[i]
	}
	return fhirImplicit[i-len(defs)]
}

// fhirKindName names a JSON kind for diagnostics.
func fhirKindName(k fhirKind) string {
	return [...]string{"null", "a boolean", "a number", "a string", "an array", "an object"}[k]
}

// element validates the value of one element against its cardinality, then each value against its type.
// comp is the element's `_name` companion, which makes null placeholders in primitive arrays legal.
func (v *fhirValidator) element(n *fhirNode, el fhirElem, typ string, comp *fhirNode) {
	if !strings.HasSuffix(el.card, "*") {
		switch n.kind {
		case fhirArray:
			v.add("structure", "must be a single value, not an array (cardinality %s).", el.card)
		case fhirNull:
			v.add("structure", "must not be null; leave the element out instead.")
		default:
			v.value(n, el, typ)
		}
		return
	}
	switch {
	case n.kind != fhirArray:
		v.add("structure", "must be an array (cardinality %s), even with one value.", el.card)
		return
	case len(n.items) == 0:
		v.add("structure", "must not be an empty array; leave the element out instead.")
		return
	}
	for i, item := range n.items {
		v.enter(fhirStep{index: i, isItem: true})
		if item.kind != fhirNull {
			v.value(item, el, typ)
		} else if !fhirIsPrimitive(typ) || comp == nil || comp.kind != fhirArray || i >= len(comp.items) || comp.items[i].kind == fhirNull {
			v.add("structure", "must not be null; null is only allowed in a primitive array as a placeholder for a value whose `_` companion entry is present.")
		}
		v.leave()
	}
}

// companion validates a primitive's `_name` companion (its id and extensions); main is the value itself.
func (v *fhirValidator) companion(n *fhirNode, el fhirElem, main *fhirNode) {
	if !strings.HasSuffix(el.card, "*") {
		if n.kind == fhirArray || n.kind == fhirNull {
			v.add("structure", "the `_` companion must be a single object holding id and extension.")
			return
		}
		v.object(n, "Element")
		return
	}
	if n.kind != fhirArray || len(n.items) == 0 {
		v.add("structure", "the `_` companion of a repeating element must be a non-empty array.")
		return
	}
	if main != nil && main.kind == fhirArray && len(main.items) != len(n.items) {
		v.add("structure", "the value array and its `_` companion array must have the same length.")
		return
	}
	for i, item := range n.items {
		v.enter(fhirStep{index: i, isItem: true})
		if item.kind != fhirNull {
			v.object(item, "Element")
		} else if main == nil || main.kind != fhirArray {
			v.add("structure", "a null `_` companion entry needs a value at the same position.")
		}
		// A null in both arrays is reported once, by element.
		v.leave()
	}
}

// value validates one non-null value of type typ.
func (v *fhirValidator) value(n *fhirNode, el fhirElem, typ string) {
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
func (v *fhirValidator) contained(n *fhirNode) {
	if n.kind != fhirObject || len(n.keys) == 0 {
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
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

// invariants checks the constraints of typ that span several elements (fhir.md section 3), plus the NHS
// number business rule (section 8).
func (v *fhirValidator) invariants(n *fhirNode, typ string) {
	switch typ {
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
		case val.kind == fhirString && !fhirValidNHSNumber(val.text):
			if _, msg := fhirCheckPrimitive(val, "string"); msg == "" { // a malformed string is already reported
				v.addAt("business-rule", "value", "an NHS number must be exactly 10 digits with a valid Modulus 11 check digit.")
			}
		}
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
func fhirCheckPrimitive(n *fhirNode, typ string) (code, msg string) {
	switch typ {
	case "boolean":
		if n.kind != fhirBool {
			return "structure", "must be a JSON boolean (true or false), not " + fhirKindName(n.kind) + "."
		}
		return "", ""
	case "decimal":
		if n.kind != fhirNumber {
			return "structure", "must be a JSON number, not " + fhirKindName(n.kind) + "."
		}
		return "", "" // JSON's number grammar is exactly FHIR's decimal pattern
	case "integer", "positiveInt", "unsignedInt":
		if n.kind != fhirNumber {
			return "structure", "must be a JSON number, not " + fhirKindName(n.kind) + "."
		}
		i, err := strconv.ParseInt(n.text, 10, 32)
		if err != nil {
			if strings.ContainsAny(n.text, ".eE") {
				return "value", "must be a whole number written without a fraction or exponent."
			}
			return "value", "is outside the 32-bit integer range."
		}
		switch {
		case typ == "positiveInt" && i < 1:
			return "value", "must be a positive integer (1 or more)."
		case typ == "unsignedInt" && (i < 0 || n.text[0] == '-'):
			return "value", "must be a non-negative integer."
		}
		return "", ""
	}
	if n.kind != fhirString {
		return "structure", "must be a JSON string, not " + fhirKindName(n.kind) + "."
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
	for _, r := range s {
		if r < 0x20 && r != '\t' && r != '\r' && r != '\n' {
			return "value", "must not contain control characters (only tab, CR and LF are allowed)."
		}
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
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// fhirDigits reports whether s is non-empty and all ASCII digits.
func fhirDigits(s string) bool {
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
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

// id returns the body id (update only; "" if absent or on create).
func (p *patientResource) id() string {
	return p.bodyID
}

// withMeta returns the JSON to store and serve: the resource as sent, with "id" set to id and
// meta.versionId/meta.lastUpdated set (lastUpdated as a FHIR instant in UTC with milliseconds); the rest of
// meta is kept as the client sent it.
func (p *patientResource) withMeta(id string, versionID string, lastUpdated time.Time) []byte {
	// The output is about the size of the body: a compact body plus our id and meta fits the first guess.
	b := make([]byte, 0, p.size+len(id)+len(versionID)+128)
	b = append(b, `{"resourceType":"Patient","id":`...)
	b = fhirAppendString(b, id)
	b = append(b, `,"meta":{`...)
	meta := p.root.member("meta")
	if meta != nil {
		for i, k := range meta.keys {
			if k != "versionId" && k != "lastUpdated" && k != "_versionId" && k != "_lastUpdated" {
				b = fhirAppendString(b, k)
				b = append(b, ':')
				b = fhirAppendNode(b, meta.items[i])
				b = append(b, ',')
			}
		}
	}
	b = append(b, `"versionId":`...)
	b = fhirAppendString(b, versionID)
	b = append(b, `,"lastUpdated":`...)
	b = append(b, '"')
	b = lastUpdated.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00") // digits and punctuation only
	b = append(b, '"')
	b = append(b, '}')
	for i, k := range p.root.keys {
		if k != "resourceType" && k != "id" && k != "meta" {
			b = append(b, ',')
			b = fhirAppendString(b, k)
			b = append(b, ':')
			b = fhirAppendNode(b, p.root.items[i])
		}
	}
	return append(b, '}')
}

// fhirAppendNode appends n as compact JSON, number literals unchanged.
func fhirAppendNode(b []byte, n *fhirNode) []byte {
	switch n.kind {
	case fhirNull:
		return append(b, "null"...)
	case fhirString:
		return fhirAppendString(b, n.text)
	case fhirArray, fhirObject:
		open, close := byte('['), byte(']')
		if n.kind == fhirObject {
			open, close = '{', '}'
		}
		b = append(b, open)
		for i, item := range n.items {
			if i > 0 {
				b = append(b, ',')
			}
			if n.kind == fhirObject {
				b = fhirAppendString(b, n.keys[i])
				b = append(b, ':')
			}
			b = fhirAppendNode(b, item)
		}
		return append(b, close)
	}
	return append(b, n.text...) // numbers and booleans as written
}

// fhirAppendString appends s as a JSON string; unlike encoding/json it leaves <, > and & alone so the
// narrative stays readable. Invalid UTF-8 (which a parsed body never has) becomes U+FFFD.
func fhirAppendString(b []byte, s string) []byte {
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

// searchFields returns what search needs: identifiers, names, gender and birthDate as written.
func (p *patientResource) searchFields() patientSearchFields {
	f := patientSearchFields{
		Gender:    p.root.member("gender").str(),
		BirthDate: p.root.member("birthDate").str(),
	}
	if ids := p.root.member("identifier"); ids != nil {
		for _, id := range ids.items {
			f.Identifiers = append(f.Identifiers, patientIdentifier{System: id.member("system").str(), Value: id.member("value").str()})
		}
	}
	if names := p.root.member("name"); names != nil {
		for _, n := range names.items {
			f.Names = append(f.Names, patientName{
				Family: n.member("family").str(),
				Given:  fhirStrings(n.member("given")),
				Prefix: fhirStrings(n.member("prefix")),
				Suffix: fhirStrings(n.member("suffix")),
				Text:   n.member("text").str(),
			})
		}
	}
	return f
}

// fhirStrings returns the string values of a primitive array, skipping null placeholders.
func fhirStrings(n *fhirNode) []string {
	var out []string
	if n != nil {
		for _, item := range n.items {
			if item.kind == fhirString {
				out = append(out, item.text)
			}
		}
	}
	return out
}
