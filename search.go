package main

// FHIR R4 Patient search (R4 search.html; reference/fhir.md section 5): parsing and validating the
// parameters, and the matching rules (dates as ranges, strings folded, telecoms normalised, references
// resolved against the base). The index that answers queries is in index.go; the HTTP handler and
// the Bundle are in fhir_handlers.go.
//
// The parameters are those of patientSearchParams, each with its R4 type and definition, plus the
// result parameters _count, _offset, _sort, _summary, _total and _elements. AND is a repeated
// parameter, OR a comma-separated list; `\,` `\|` `\$` `\\` escape literals. :missing works on every
// parameter, :not on every token.
//
// Results are ordered by id (byte order) unless _sort says otherwise, and then by id. Ids never
// change, so paging through a result set with _offset is stable while patients are updated; only
// creates and deletes shift later pages (and, under _sort, updates that change a sort value).

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Paging limits. FHIR lets a server return fewer results than _count asks for, so a larger _count is
// capped at searchMaxCount rather than rejected: a client asking for 1000 still gets a valid page
// and a next link.
const (
	searchDefaultCount = 20
	searchMaxCount     = 100
)

// searchMaxSortWindow caps _offset + _count under _sort: a sorted page keeps that many matches, with
// their sort values, in memory while it scans. Unsorted pages need no such window. Elasticsearch
// has the same default limit for the same reason (index.max_result_window, 10,000: "Search requests
// take heap memory and time proportional to from + size").
const searchMaxSortWindow = 10_000

// fhirGenderSystem is the code system of Patient.gender; `gender=system|code` must name it.
const fhirGenderSystem = "http://hl7.org/fhir/administrative-gender"

// msPerDay is the length of a day in the Unix milliseconds date ranges are kept in.
const msPerDay = 24 * 60 * 60 * 1000

// searchParam is one supported parameter. A search parameter has its R4 type and canonical
// definition (the R4 SearchParameter resources, search-parameters.json of FHIR 4.0.1) and goes into
// the CapabilityStatement; a result parameter (search.html#return) has neither.
type searchParam struct {
	name, typ, definition string
	modifiers             []string // the modifiers accepted after "name:"
	doc                   string   // the CapabilityStatement's documentation
}

// patientSearchParams are the supported parameters, in the CapabilityStatement's order.
var patientSearchParams = []searchParam{
	{"_id", "token", "http://hl7.org/fhir/SearchParameter/Resource-id", []string{"missing", "not"},
		"Exact, case-sensitive; :not, :missing"},
	{"_lastUpdated", "date", "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated", []string{"missing"},
		"meta.lastUpdated (an instant); prefixes eq ne gt lt ge le sa eb ap; a date or a dateTime, whose precision sets the range (UTC when no zone is given)"},
	{"identifier", "token", "http://hl7.org/fhir/SearchParameter/Patient-identifier", []string{"missing", "not"},
		"system|value, value, |value or system|; case-sensitive; :not, :missing"},
	{"family", "string", "http://hl7.org/fhir/SearchParameter/individual-family", []string{"missing", "exact", "contains"},
		"Case- and accent-insensitive prefix; :exact, :contains, :missing"},
	{"given", "string", "http://hl7.org/fhir/SearchParameter/individual-given", []string{"missing", "exact", "contains"},
		"Case- and accent-insensitive prefix; :exact, :contains, :missing"},
	{"name", "string", "http://hl7.org/fhir/SearchParameter/Patient-name", []string{"missing", "exact", "contains"},
		"Family, given, prefix, suffix or text; case- and accent-insensitive prefix; :exact, :contains, :missing"},
	{"address", "string", "http://hl7.org/fhir/SearchParameter/individual-address", []string{"missing", "exact", "contains"},
		"Any line, city, district, state, postalCode, country or text; case- and accent-insensitive prefix; :exact, :contains, :missing"},
	{"address-postalcode", "string", "http://hl7.org/fhir/SearchParameter/individual-address-postalcode", []string{"missing", "exact", "contains"},
		"Case-, accent- and whitespace-insensitive prefix (LS16AE finds LS1 6AE); :exact, :contains, :missing"},
	{"birthdate", "date", "http://hl7.org/fhir/SearchParameter/individual-birthdate", []string{"missing"},
		"Prefixes eq ne gt lt ge le sa eb ap; year, month or day precision; :missing"},
	{"death-date", "date", "http://hl7.org/fhir/SearchParameter/Patient-death-date", []string{"missing"},
		"deceasedDateTime; prefixes eq ne gt lt ge le sa eb ap; a date or a dateTime (UTC when no zone is given); :missing"},
	{"gender", "token", "http://hl7.org/fhir/SearchParameter/individual-gender", []string{"missing", "not"},
		"male, female, other, unknown; :not, :missing"},
	{"active", "token", "http://hl7.org/fhir/SearchParameter/Patient-active", []string{"missing", "not"},
		"true or false; :not (includes Patients without active), :missing"},
	{"phone", "token", "http://hl7.org/fhir/SearchParameter/individual-phone", []string{"missing", "not"},
		"ContactPoint value of system phone; case-insensitive, spaces - ( ) . ignored; :not, :missing"},
	{"email", "token", "http://hl7.org/fhir/SearchParameter/individual-email", []string{"missing", "not"},
		"ContactPoint value of system email; case-insensitive; :not, :missing"},
	{"telecom", "token", "http://hl7.org/fhir/SearchParameter/individual-telecom", []string{"missing", "not"},
		"Any ContactPoint value, compared as phone or email are by its system; :not, :missing"},
	{"general-practitioner", "reference", "http://hl7.org/fhir/SearchParameter/Patient-general-practitioner",
		[]string{"missing", "identifier", "Organization", "Practitioner", "PractitionerRole"},
		"generalPractitioner: [type/]id or an absolute URL; :identifier (system|value, e.g. an ODS code), :Organization, :Practitioner, :PractitionerRole, :missing"},
	{"organization", "reference", "http://hl7.org/fhir/SearchParameter/Patient-organization", []string{"missing", "identifier", "Organization"},
		"managingOrganization: [Organization/]id or an absolute URL; :identifier (system|value), :Organization, :missing"},
	{name: "_count"}, {name: "_offset"}, {name: "_sort"}, {name: "_summary"}, {name: "_total"}, {name: "_elements"},
}

// searchParamNames lists the supported parameters, for the strict-mode diagnostic.
func searchParamNames() string {
	var names []string
	for _, p := range patientSearchParams {
		names = append(names, p.name)
	}
	return strings.Join(names, ", ")
}

// referenceTargets are the resource types a reference parameter's references may point to (the R4
// SearchParameter's target).
func referenceTargets(param string) []string {
	if param == "organization" {
		return []string{"Organization"}
	}
	return []string{"Organization", "Practitioner", "PractitionerRole"}
}

// sortKeys are the parameters _sort accepts.
var sortKeys = []string{"family", "given", "birthdate", "_lastUpdated", "_id"}

// patientQuery is a parsed, validated Patient search. Each outer slice is an AND of clauses (one per
// occurrence of the parameter); each clause is an OR of its comma-separated values.
type patientQuery struct {
	IDs         [][]string        // _id: exact ids
	Identifiers [][]tokenValue    // identifier
	Genders     [][]string        // gender: codes; "" (from `system|`) means any gender
	Active      [][]bool          // active
	Strings     []stringClause    // family, given, name, address, address-postalcode
	Telecoms    []telecomClause   // phone, email, telecom
	References  []referenceClause // general-practitioner, organization
	BirthDates  [][]dateValue     // birthdate
	DeathDates  [][]dateValue     // death-date
	LastUpdated [][]dateValue     // _lastUpdated
	Missing     []missingClause   // [parameter]:missing
	Not         []patientQuery    // [token]:not, one clause each: a match must match none of them
	Sort        []sortKey         // _sort, in priority order; nil is id order
	Count       int               // _count: page size, default 20, capped at 100; 0 asks for the total only
	Offset      int               // _offset: index of the first match on the page, default 0
	NoTotal     bool              // _total=none: leave Bundle.total out
	Elements    []string          // _elements: the top-level elements to return, sorted; nil is all
	Base        string            // the service base URL, set by the handler: references on it are local
}

// tokenValue is one token search value: `value` (AnySystem), `|value` (System "", no system),
// `system|value` or `system|` (Value "": any value in that system).
type tokenValue struct {
	System    string
	Value     string
	AnySystem bool
}

// stringClause is one occurrence of a string parameter. Values are folded (see foldString), and for
// address-postalcode also stripped of whitespace, unless Modifier is "exact", in which case they are
// kept exactly as sent.
type stringClause struct {
	Param    string // family, given, name, address or address-postalcode
	Modifier string // "", "exact" or "contains"
	Values   []string
}

// telecomClause is one occurrence of phone, email or telecom.
type telecomClause struct {
	Param  string // phone, email or telecom
	Values []telecomValue
}

// telecomValue is one ContactPoint search value, normalised (telecomNorm) as the telecoms it is
// compared with are: Phone for phone-like systems, Other for the rest ("" where the parameter does
// not search them).
type telecomValue struct {
	Phone, Other string
}

// referenceClause is one occurrence of general-practitioner or organization.
type referenceClause struct {
	Param      string
	Identifier bool // :identifier: the values are tokens on Reference.identifier
	Values     []referenceValue
}

// referenceValue is one reference search value: a Token under :identifier; else a literal reference,
// as parsed (Base "" for a relative one, Type "" for any target type), or URL for an absolute URL
// that names no [type]/[id] (compared with stored references as written).
type referenceValue struct {
	Token          tokenValue
	Base, Type, ID string
	URL            string
}

// dateValue is one date search value: a prefix and the value's implicit range [Start, End] in Unix
// milliseconds, both ends included.
type dateValue struct {
	Prefix     string // eq ne gt lt ge le sa eb ap; "eq" when none was given
	Start, End int64
}

// missingClause is one [parameter]:missing=true|false.
type missingClause struct {
	Param   string
	Missing bool
}

// sortKey is one _sort rule.
type sortKey struct {
	Param string // one of sortKeys
	Desc  bool   // "-" prefix
}

// parsePatientSearch parses search parameters (from the URL query or a form-encoded POST body, already
// merged into url.Values). strict is true under "Prefer: handling=strict": unknown parameters are then
// errors (400); otherwise they are ignored.
//
// It returns the query, the canonical parameters to echo in the Bundle's self link (the parameters
// actually used with their values as sent, plus the effective _count, and _offset when not 0; unknown
// ones and _format left out; url.Values.Encode sorts the keys, which makes the link stable), and issues
// (non-nil means 400): every problem found, not just the first, each naming the parameter and the rule.
func parsePatientSearch(params url.Values, strict bool) (q patientQuery, self url.Values, issues []fhirIssue) {
	q.Count = searchDefaultCount
	self = url.Values{}
	bad := func(code, format string, args ...any) {
		issues = append(issues, fhirError(code, "", fmt.Sprintf(format, args...)))
	}
	for _, key := range slices.Sorted(maps.Keys(params)) { // issues in a stable order; _count before _summary
		name, modifier, hasModifier := strings.Cut(key, ":")
		i := slices.IndexFunc(patientSearchParams, func(p searchParam) bool { return p.name == name })
		switch {
		case name == "_format":
			continue // content negotiation, handled by the handler
		case isChained(key):
			bad("not-supported", "%s: chained parameters are not supported; search general-practitioner or organization by reference or :identifier.", key)
			continue
		case i < 0:
			if strict {
				bad("not-supported", "%s: unknown search parameter (Prefer: handling=strict); the supported parameters are %s.", key, searchParamNames())
			}
			continue
		case hasModifier && !slices.Contains(patientSearchParams[i].modifiers, modifier):
			bad("not-supported", "%s: the modifier :%s is not supported; %s.", key, modifier, modifierHint(patientSearchParams[i]))
			continue
		case len(params[key]) > 1 && slices.Contains([]string{"_count", "_offset", "_summary", "_total"}, name):
			bad("value", "%s: the parameter may appear only once.", key)
			continue
		}
		before := len(issues)
		for _, raw := range params[key] {
			if raw == "" {
				bad("value", "%s: the value is empty; give a value or leave the parameter out.", key)
				continue
			}
			parseSearchValue(&q, key, name, modifier, raw, bad)
		}
		if len(issues) == before && name != "_count" && name != "_offset" {
			self[key] = slices.Clone(params[key])
		}
	}
	if len(q.Sort) > 0 && q.Count > 0 && q.Offset > searchMaxSortWindow-q.Count {
		bad("too-costly", "_offset: with _sort, _offset + _count may be at most %d; narrow the search, or page it without _sort (in id order).", searchMaxSortWindow)
	}
	if issues != nil {
		return patientQuery{}, nil, issues
	}
	slices.Sort(q.Elements)
	q.Elements = slices.Compact(q.Elements)
	self.Set("_count", strconv.Itoa(q.Count))
	if q.Offset > 0 {
		self.Set("_offset", strconv.Itoa(q.Offset))
	}
	return q, self, nil
}

// isChained reports whether key chains a reference parameter (general-practitioner.name, or with a
// type modifier organization:Organization.name).
func isChained(key string) bool {
	before, _, found := strings.Cut(key, ".")
	before, _, _ = strings.Cut(before, ":")
	return found && (before == "general-practitioner" || before == "organization")
}

// modifierHint says which modifiers p takes, completing "...; ".
func modifierHint(p searchParam) string {
	if len(p.modifiers) == 0 {
		return p.name + " takes no modifiers"
	}
	return p.name + " allows :" + strings.Join(p.modifiers, ", :")
}

// parseSearchValue adds one occurrence of a known parameter (key is name with its modifier) to q: a
// clause of its comma-separated values, or a result setting. Problems go to bad, each naming key.
func parseSearchValue(q *patientQuery, key, name, modifier, raw string, bad func(code, format string, args ...any)) {
	switch modifier {
	case "missing": // R4: true or false, and no comma list ("no way to use the :missing modifier and mix with a value")
		if raw != "true" && raw != "false" {
			bad("value", "%s: %q must be true or false.", key, raw)
		}
		q.Missing = append(q.Missing, missingClause{name, raw == "true"})
		return
	case "not": // the clause itself, negated as a whole (R4: "the negation applies to the set")
		var sub patientQuery
		parseSearchValue(&sub, key, name, "", raw, bad)
		q.Not = append(q.Not, sub)
		return
	}
	values := splitSearchValue(raw, ',')
	switch name {
	case "_count", "_offset", "_sort", "_summary", "_total", "_elements":
		parseResultParam(q, key, name, raw, values, bad)
	case "_id":
		var ids []string
		for _, v := range values {
			if v = unescapeSearchValue(v); !validFHIRID(v) {
				bad("value", "%s: %q is not a valid id (1 to 64 of A-Z a-z 0-9 - .).", key, v)
			}
			ids = append(ids, v)
		}
		q.IDs = append(q.IDs, ids)
	case "identifier":
		q.Identifiers = append(q.Identifiers, parseTokens(key, values, nil, bad))
	case "gender":
		var codes []string
		for _, t := range parseTokens(key, values, checkGender, bad) {
			codes = append(codes, t.Value)
		}
		q.Genders = append(q.Genders, codes)
	case "active":
		var clause []bool
		for _, t := range parseTokens(key, values, checkBoolean, bad) {
			clause = append(clause, t.Value == "true")
		}
		q.Active = append(q.Active, clause)
	case "phone", "email", "telecom":
		q.Telecoms = append(q.Telecoms, parseTelecoms(key, name, values, bad))
	case "general-practitioner", "organization":
		c := referenceClause{Param: name, Identifier: modifier == "identifier"}
		for _, v := range values {
			rv, msg := parseReferenceValue(name, modifier, v)
			if msg != "" {
				bad("value", "%s: %q %s.", key, v, msg)
			}
			c.Values = append(c.Values, rv)
		}
		q.References = append(q.References, c)
	case "birthdate", "death-date", "_lastUpdated":
		*dateClauses(q, name) = append(*dateClauses(q, name), parseDates(key, name, values, bad))
	default: // the string parameters
		q.Strings = append(q.Strings, parseStrings(key, name, modifier, raw, values, bad))
	}
}

// parseDates parses the values of one clause of the date parameter name.
func parseDates(key, name string, values []string, bad func(code, format string, args ...any)) []dateValue {
	var dates []dateValue
	for _, v := range values {
		d, code, msg := parseDateValue(unescapeSearchValue(v), name)
		if msg != "" {
			bad(code, "%s: %q %s", key, v, msg)
		}
		dates = append(dates, d)
	}
	return dates
}

// dateClauses returns q's clauses of the date parameter name.
func dateClauses(q *patientQuery, name string) *[][]dateValue {
	switch name {
	case "death-date":
		return &q.DeathDates
	case "_lastUpdated":
		return &q.LastUpdated
	}
	return &q.BirthDates
}

// parseStrings parses the values of one string clause.
func parseStrings(key, name, modifier, raw string, values []string, bad func(code, format string, args ...any)) stringClause {
	c := stringClause{Param: name, Modifier: modifier}
	for _, v := range values {
		v = unescapeSearchValue(v)
		if modifier != "exact" {
			v = foldString(v)
			if name == "address-postalcode" {
				v = removeChars(v, asciiSpace) // R4 search.html#string: non-significant whitespace should be ignored
			}
		}
		if v == "" {
			bad("value", "%s: %q has an empty value between commas.", key, raw)
		}
		c.Values = append(c.Values, v)
	}
	return c
}

// parseTelecoms parses the values of one phone, email or telecom clause. R4 search.html#token: "For
// token parameters on elements of type ContactPoint [...] the presence of the pipe symbol SHALL NOT be
// used - only the [parameter]=[code] form is allowed".
func parseTelecoms(key, name string, values []string, bad func(code, format string, args ...any)) telecomClause {
	c := telecomClause{Param: name}
	for _, v := range values {
		if len(splitSearchValue(v, '|')) > 1 {
			bad("value", `%s: %q has a "|": a ContactPoint is searched by its value alone; escape a literal | as \|.`, key, v)
			continue
		}
		raw := unescapeSearchValue(v)
		var tv telecomValue
		if name != "email" {
			tv.Phone = telecomNorm("phone", raw)
		}
		if name != "phone" {
			tv.Other = telecomNorm("email", raw)
		}
		if tv.Phone == "" && tv.Other == "" {
			bad("value", "%s: %q has nothing left to compare once spaces, -, (, ) and . are removed.", key, v)
		}
		c.Values = append(c.Values, tv)
	}
	return c
}

// parseResultParam parses _count, _offset, _sort, _summary, _total or _elements.
func parseResultParam(q *patientQuery, key, name, raw string, values []string, bad func(code, format string, args ...any)) {
	switch name {
	case "_count", "_offset":
		n, err := strconv.Atoi(raw)
		switch {
		case !fhirDigits(raw) || (err != nil && name == "_offset"):
			bad("value", "%s: %q is not a non-negative whole number.", key, raw)
		case name == "_offset":
			q.Offset = n
		case err != nil || n > searchMaxCount: // all digits, so err means too large
			q.Count = searchMaxCount
		default:
			q.Count = n
		}
	case "_sort": // a repeated _sort adds lower-priority keys (R4 search.html#table: "can repeat for inner sort orders")
		for _, v := range values {
			k := sortKey{Param: strings.TrimPrefix(v, "-"), Desc: strings.HasPrefix(v, "-")}
			switch {
			case !slices.Contains(sortKeys, k.Param):
				bad("not-supported", "%s: %q is not a sort this server supports; use %s, each optionally after - for descending order.", key, v, strings.Join(sortKeys, ", "))
			case slices.ContainsFunc(q.Sort, func(s sortKey) bool { return s.Param == k.Param }):
				bad("value", "%s: %q sorts by %s a second time.", key, v, k.Param)
			}
			q.Sort = append(q.Sort, k)
		}
	case "_summary":
		switch raw {
		case "count": // R4 search.html#summary: "just return a count of the matching resources"
			q.Count = 0
		case "false": // "Return all parts of the resource(s)": what happens anyway
		case "true", "text", "data":
			bad("not-supported", "%s: %q is not supported; use count (the total only) or _elements to choose the elements returned.", key, raw)
		default:
			bad("value", "%s: %q is not a _summary value; use count or false.", key, raw)
		}
	case "_total":
		switch raw {
		case "none":
			q.NoTotal = true
		case "accurate", "estimate": // the total is always exact, so an estimate is too
		default:
			bad("value", "%s: %q is not a _total value; use none, estimate or accurate.", key, raw)
		}
	case "_elements":
		for _, v := range values {
			if !slices.Contains(patientElementNames(), v) {
				bad("value", "%s: %q is not a top-level element of Patient; list elements such as identifier,name,birthDate (a choice by its base name: deceased, multipleBirth).", key, v)
			}
			q.Elements = append(q.Elements, v)
		}
	}
}

// patientElementNames are the names _elements accepts: Patient's top-level elements, a choice by its
// base name (R4 search.html#elements: "a comma-separated list of base element names").
func patientElementNames() []string {
	var names []string
	for _, e := range fhirTypes["Patient"] {
		names = append(names, strings.TrimSuffix(e.name, "[x]"))
	}
	return names
}

// parseTokens parses the values of one token clause; check, if not nil, adds the parameter's own rule
// (a problem completing a sentence that starts with the value).
func parseTokens(key string, values []string, check func(tokenValue) string, bad func(code, format string, args ...any)) []tokenValue {
	var toks []tokenValue
	for _, v := range values {
		t, msg := parseTokenValue(v)
		if msg == "" && check != nil {
			msg = check(t)
		}
		if msg != "" {
			bad("value", "%s: %q %s.", key, v, msg)
		}
		toks = append(toks, t)
	}
	return toks
}

// checkGender is gender's rule: a code of administrative-gender, in that system if one is named.
func checkGender(t tokenValue) string {
	switch {
	case !t.AnySystem && t.System != "" && t.System != fhirGenderSystem:
		return fmt.Sprintf("names the system %q; gender codes belong to %s", t.System, fhirGenderSystem)
	case t.Value != "" && !fhirHasCode(fhirGenderCodes, t.Value):
		return "is not a gender code; use one of male, female, other, unknown"
	}
	return ""
}

// checkBoolean is active's rule: true or false, without the pipe (R4 search.html#token: for boolean
// elements "the presence of the pipe symbol SHALL NOT be used").
func checkBoolean(t tokenValue) string {
	if !t.AnySystem || t.Value != "true" && t.Value != "false" {
		return "is not true or false"
	}
	return ""
}

// telecomNorm normalises a ContactPoint value for comparison: lower-cased (a string token is not case
// sensitive, R4 search.html#token) and, for the numbers of phone, fax, pager and sms, without spaces
// and - ( ) . (search.html#string lets a server remove such separators from phone numbers). An email
// keeps its punctuation: a-b@x and ab@x are different addresses.
func telecomNorm(system, value string) string {
	if phoneLike(system) {
		value = removeChars(value, " \t-().")
	}
	return strings.ToLower(value)
}

// phoneLike reports whether a ContactPoint system holds telephone numbers.
func phoneLike(system string) bool {
	return system == "phone" || system == "fax" || system == "pager" || system == "sms"
}

// asciiSpace is the whitespace a postal code is compared without, in the index and the search alike.
const asciiSpace = " \t\n\r"

// removeChars removes from s every character in chars.
func removeChars(s, chars string) string {
	return strings.Map(func(r rune) rune {
		if strings.ContainsRune(chars, r) {
			return -1
		}
		return r
	}, s)
}

// parseReferenceValue parses one value of a reference parameter under modifier ("", "identifier" or a
// target type); msg describes a problem, completing a sentence that starts with the value. R4
// search.html#reference: [id], [type]/[id] or an absolute URL; with :[type], an id; with
// :identifier, a token.
func parseReferenceValue(param, modifier, raw string) (v referenceValue, msg string) {
	targets := referenceTargets(param)
	switch modifier {
	case "identifier":
		v.Token, msg = parseTokenValue(raw)
		return v, msg
	case "":
	default:
		if v.Type, v.ID = modifier, unescapeSearchValue(raw); !validFHIRID(v.ID) {
			return v, fmt.Sprintf("is not an id (with :%s the value is the %s's id)", modifier, modifier)
		}
		return v, ""
	}
	s := unescapeSearchValue(raw)
	if base, typ, id, ok := parseReference(s); ok {
		switch {
		case base != "" && !strings.Contains(base, "://"):
			return v, "is neither [type]/[id] nor an absolute URL"
		case !slices.Contains(targets, typ):
			return v, fmt.Sprintf("names a %s; %s refers to %s", typ, param, strings.Join(targets, ", "))
		}
		return referenceValue{Base: base, Type: typ, ID: id}, ""
	}
	switch {
	case validFHIRID(s):
		return referenceValue{ID: s}, ""
	case strings.Contains(s, "://") || strings.HasPrefix(s, "urn:"):
		return referenceValue{URL: s}, ""
	}
	return v, "is not an id, [type]/[id] or an absolute URL"
}

// parseReference splits a literal reference [base/]type/id[/_history/vid]; ok is false when it has no
// type and id (a contained #ref, a urn, an id alone).
func parseReference(s string) (base, typ, id string, ok bool) {
	if i := strings.LastIndex(s, "/_history/"); i >= 0 {
		s = s[:i]
	}
	rest, id, found := cutLast(s, "/")
	if !found {
		return "", "", "", false
	}
	base, typ, found = cutLast(rest, "/")
	if !found {
		base, typ = "", rest
	}
	return base, typ, id, fhirIsResourceName(typ) && validFHIRID(id)
}

// cutLast is strings.Cut at the last sep.
func cutLast(s, sep string) (before, after string, found bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// referenceKey is the posting key of a stored reference: the id it names, or the whole reference.
func referenceKey(ref string) string {
	if _, _, id, ok := parseReference(ref); ok {
		return id
	}
	return ref
}

// referenceMatches reports whether a stored literal reference of param matches v (R4
// search.html#reference): the same id and type (any of the parameter's targets when v has none), and
// both local or both on the same other server, where a reference on base counts as local ("A
// relative reference resolving to the same value as a specified absolute URL, or vice versa,
// qualifies as a match"); a URL value is compared as written.
func referenceMatches(stored, param string, v referenceValue, base string) bool {
	if v.URL != "" {
		return stored == v.URL
	}
	sBase, sType, sID, ok := parseReference(stored)
	if !ok || sID != v.ID || !slices.Contains(referenceTargets(param), sType) || v.Type != "" && v.Type != sType {
		return false
	}
	local := func(b string) string {
		if b == base {
			return ""
		}
		return b
	}
	return local(sBase) == local(v.Base)
}

// parseTokenValue parses `code`, `|code`, `system|code` or `system|` (escapes allowed in both parts);
// msg describes the problem, completing a sentence that starts with the value.
func parseTokenValue(raw string) (t tokenValue, msg string) {
	parts := splitSearchValue(raw, '|')
	switch len(parts) {
	case 1:
		t = tokenValue{Value: unescapeSearchValue(parts[0]), AnySystem: true}
	case 2:
		t = tokenValue{System: unescapeSearchValue(parts[0]), Value: unescapeSearchValue(parts[1])}
		if t.System == "" && t.Value == "" {
			return t, "has neither a system nor a code"
		}
	default:
		return t, `has more than one "|"; escape a literal | as \|`
	}
	if t.Value == "" && t.System == "" {
		return t, "is empty"
	}
	return t, ""
}

// parseDateValue parses an optional prefix and a date value of the date parameter name. birthdate
// takes a date at year, month or day precision: a time is refused rather than truncated, since
// birthDate is a date and truncating would make eq1974-06-15T10:00:00Z match a birthDate of
// 1974-06-15, which the range rules say it must not. death-date and _lastUpdated also take a time
// (see dateTimeRange). code and msg describe a problem; msg is a whole sentence that follows the
// quoted value.
func parseDateValue(s, name string) (d dateValue, code, msg string) {
	d.Prefix = "eq"
	if len(s) >= 2 && s[0] >= 'a' && s[0] <= 'z' && s[1] >= 'a' && s[1] <= 'z' {
		d.Prefix, s = s[:2], s[2:]
		switch d.Prefix {
		case "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap":
		default:
			return d, "value", fmt.Sprintf("has the unknown prefix %q; use one of eq, ne, gt, lt, ge, le, sa, eb, ap.", d.Prefix)
		}
	}
	if name != "birthdate" {
		var ok bool
		if d.Start, d.End, ok = dateTimeRange(s); !ok {
			return d, "value", "is not a valid date or time; use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.sss]] with an optional Z or +hh:mm, optionally after a prefix."
		}
		return d, "", ""
	}
	switch p := fhirDatePrecision(s, true); p {
	case 0:
		return d, "value", "is not a valid date; use YYYY, YYYY-MM or YYYY-MM-DD (a real calendar date), optionally after a prefix."
	case 4:
		return d, "not-supported", "has a time; birthdate is a date, so give YYYY, YYYY-MM or YYYY-MM-DD."
	default:
		lo, hi := dateRange(s, p)
		d.Start, d.End = int64(lo)*msPerDay, int64(hi+1)*msPerDay-1
	}
	return d, "", ""
}

// dateRange returns the days [start, end] that the valid date s at precision p (1 year, 2 month, 3 day)
// stands for, as days since 1970-01-01.
func dateRange(s string, p int) (start, end int32) {
	year, _ := strconv.Atoi(s[:4])
	month, day := 1, 1
	if p >= 2 {
		month, _ = strconv.Atoi(s[5:7])
	}
	if p == 3 {
		day, _ = strconv.Atoi(s[8:10])
	}
	first := time.Date(year, time.Month(month), day, 0, 0, 0, 0, time.UTC)
	last := first
	switch p {
	case 1:
		last = first.AddDate(1, 0, -1)
	case 2:
		last = first.AddDate(0, 1, -1)
	}
	return int32(first.Unix() / 86400), int32(last.Unix() / 86400) // midnights: exact multiples of a day
}

// dateTimeRange returns the instants [lo, hi] (Unix ms, both included) that a date or dateTime stands
// for: YYYY, YYYY-MM or YYYY-MM-DD (the whole year, month or day), or a day and a time hh:mm,
// hh:mm:ss or hh:mm:ss.fff (the whole minute, second or fraction) with an optional zone Z or +/-hh:mm
// (R4 search.html#date). A value without a zone, and every date, is taken as UTC: R4 says the server's
// own zone applies where neither side has one, and this server's is UTC. A space in place of the
// zone's "+" is read as "+", since an unescaped + in a URL query decodes to a space.
func dateTimeRange(s string) (lo, hi int64, ok bool) {
	date, clock, hasClock := strings.Cut(s, "T")
	p := fhirDatePrecision(date, false)
	if p == 0 || hasClock && p != 3 {
		return 0, 0, false
	}
	d1, d2 := dateRange(date, p)
	if !hasClock {
		return int64(d1) * msPerDay, int64(d2+1)*msPerDay - 1, true
	}
	if len(clock) < 5 || !fhirTwoDigits(clock, 0, 0, 23) || clock[2] != ':' || !fhirTwoDigits(clock, 3, 0, 59) {
		return 0, 0, false
	}
	hh, _ := strconv.Atoi(clock[:2])
	mm, _ := strconv.Atoi(clock[3:5])
	ms, width, rest := 0, int64(60_000), clock[5:]
	if len(rest) >= 3 && rest[0] == ':' && fhirTwoDigits(rest, 1, 0, 60) {
		sec, _ := strconv.Atoi(rest[1:3])
		ms, width, rest = sec*1000, 1000, rest[3:]
		if frac, found := strings.CutPrefix(rest, "."); found {
			n := len(frac) - len(strings.TrimLeft(frac, "0123456789"))
			if n == 0 {
				return 0, 0, false
			}
			digits := (frac[:min(n, 3)] + "00")[:3]
			f, _ := strconv.Atoi(digits)
			ms, width, rest = ms+f, max(1, width/[]int64{1, 10, 100, 1000}[min(n, 3)]), frac[n:]
		}
	}
	offset, ok := zoneOffset(rest)
	if !ok {
		return 0, 0, false
	}
	lo = (int64(d1)*msPerDay + int64(hh)*3_600_000 + int64(mm)*60_000 + int64(ms)) - int64(offset)*60_000
	return lo, lo + width - 1, true
}

// zoneOffset reads a time zone ("", Z, +hh:mm or -hh:mm, up to 14:00) in minutes east of UTC.
func zoneOffset(z string) (minutes int, ok bool) {
	switch {
	case z == "" || z == "Z":
		return 0, true
	case len(z) != 6 || !strings.ContainsRune("+- ", rune(z[0])) || z[3] != ':' || !fhirTwoDigits(z, 1, 0, 14) || !fhirTwoDigits(z, 4, 0, 59):
		return 0, false
	}
	h, _ := strconv.Atoi(z[1:3])
	m, _ := strconv.Atoi(z[4:6])
	if minutes = h*60 + m; minutes > 14*60 {
		return 0, false
	}
	if z[0] == '-' {
		minutes = -minutes
	}
	return minutes, true
}

// dateMatches applies the R4 date prefix rules (search.html#prefix) to a search range [s1, s2] and a
// target range [t1, t2]. ap is read as the R4 range table defines it: the two ranges overlap.
func dateMatches(prefix string, s1, s2, t1, t2 int64) bool {
	eq := s1 <= t1 && t2 <= s2 // the search range contains the target range
	switch prefix {
	case "eq":
		return eq
	case "ne":
		return !eq
	case "gt":
		return t2 > s2 // the range above the search value overlaps the target
	case "lt":
		return t1 < s1 // the range below the search value overlaps the target
	case "ge":
		return eq || t2 > s2
	case "le":
		return eq || t1 < s1
	case "sa":
		return t1 > s2
	case "eb":
		return t2 < s1
	case "ap":
		return t1 <= s2 && s1 <= t2
	}
	return false
}

// splitSearchValue splits s at every sep not preceded by a backslash; the parts keep their escapes.
func splitSearchValue(s string, sep byte) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // skip the escaped character
		case sep:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// unescapeSearchValue turns `\,` `\|` `\$` `\\` into the literal character; a backslash before anything
// else, or at the end, is kept as it is.
func unescapeSearchValue(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`,|$\`, s[i+1]) >= 0 {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// foldString returns s lower-cased and without accents, so that "Zoë", "ZOE" and "zoe" compare equal
// and "Straße" matches "strasse". Latin-1 Supplement and Latin Extended-A letters (plus Romanian ș ț)
// fold through foldLatin, combining diacritical marks (decomposed accents) are dropped, and every other
// letter is lower-cased with unicode.ToLower. There is no Unicode normalization beyond that.
func foldString(s string) string {
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || c >= 'A' && c <= 'Z' {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r >= 'A' && r <= 'Z':
			b.WriteByte(byte(r) + 'a' - 'A')
		case r < utf8.RuneSelf:
			b.WriteByte(byte(r))
		case r >= 0x300 && r <= 0x36F: // combining diacritical marks
		default:
			if f := foldLatin(r); f != "" {
				b.WriteString(f)
			} else {
				b.WriteRune(unicode.ToLower(r))
			}
		}
	}
	return b.String()
}

// foldLatin returns the lower-case unaccented ASCII spelling of a Latin-1 Supplement or Latin
// Extended-A letter (æ -> ae, ß -> ss, þ -> th, ł -> l, ı -> i ...), or "" for any other rune.
func foldLatin(r rune) string {
	switch {
	case r >= 0xC0 && r <= 0xC5, r >= 0xE0 && r <= 0xE5, r >= 0x100 && r <= 0x105:
		return "a"
	case r == 0xC6, r == 0xE6:
		return "ae"
	case r == 0xC7, r == 0xE7, r >= 0x106 && r <= 0x10D:
		return "c"
	case r == 0xD0, r == 0xF0, r >= 0x10E && r <= 0x111:
		return "d"
	case r >= 0xC8 && r <= 0xCB, r >= 0xE8 && r <= 0xEB, r >= 0x112 && r <= 0x11B:
		return "e"
	case r >= 0x11C && r <= 0x123:
		return "g"
	case r >= 0x124 && r <= 0x127:
		return "h"
	case r >= 0xCC && r <= 0xCF, r >= 0xEC && r <= 0xEF, r >= 0x128 && r <= 0x131:
		return "i"
	case r == 0x132, r == 0x133:
		return "ij"
	case r == 0x134, r == 0x135:
		return "j"
	case r >= 0x136 && r <= 0x138:
		return "k"
	case r >= 0x139 && r <= 0x142:
		return "l"
	case r == 0xD1, r == 0xF1, r >= 0x143 && r <= 0x14B:
		return "n"
	case r >= 0xD2 && r <= 0xD6, r == 0xD8, r >= 0xF2 && r <= 0xF6, r == 0xF8, r >= 0x14C && r <= 0x151:
		return "o"
	case r == 0x152, r == 0x153:
		return "oe"
	case r >= 0x154 && r <= 0x159:
		return "r"
	case r >= 0x15A && r <= 0x161, r == 0x17F, r == 0x218, r == 0x219:
		return "s"
	case r == 0xDF:
		return "ss"
	case r >= 0x162 && r <= 0x167, r == 0x21A, r == 0x21B:
		return "t"
	case r == 0xDE, r == 0xFE:
		return "th"
	case r >= 0xD9 && r <= 0xDC, r >= 0xF9 && r <= 0xFC, r >= 0x168 && r <= 0x173:
		return "u"
	case r == 0x174, r == 0x175:
		return "w"
	case r == 0xDD, r == 0xFD, r == 0xFF, r >= 0x176 && r <= 0x178:
		return "y"
	case r >= 0x179 && r <= 0x17E:
		return "z"
	}
	return ""
}

// subsettedSystem and subsettedCode tag a resource returned with only some of its elements (R4
// search.html#elements: "Servers SHOULD mark the resources with the tag SUBSETTED"; code and display
// from the R4 CodeSystem v3-ObservationValue).
const (
	subsettedSystem = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
	subsettedCode   = "SUBSETTED"
)

// subsetAlwaysKept are the elements _elements keeps whether listed or not: the mandatory ones (R4:
// "Servers SHOULD always return mandatory elements whether they are requested or not") and Patient's
// modifier elements, since a client that left out active, deceased or link could not know that the
// record it shows is inactive, of a deceased patient or replaced ("Servers are not obliged to return
// just the requested elements").
var subsetAlwaysKept = []string{"resourceType", "id", "meta", "implicitRules", "modifierExtension", "active", "deceased", "link"}

// subsetElements returns a stored Patient with only its top-level elements in elements (base names;
// a primitive's _name companion goes with it) and subsetAlwaysKept, tagged SUBSETTED in meta.tag. The
// tree is read with the strict reader and written with its writer, member order kept.
func subsetElements(body []byte, elements []string) ([]byte, error) {
	root, _, jerr := readJSON(body, fhirMaxDepth)
	if jerr != nil {
		return nil, fmt.Errorf("stored Patient does not parse (at byte %d)", jerr.offset)
	}
	out := &jsonNode{kind: jsonObject}
	for i, key := range root.keys {
		base := strings.TrimPrefix(key, "_")
		for _, choice := range []string{"deceased", "multipleBirth"} {
			if strings.HasPrefix(base, choice) {
				base = choice
			}
		}
		item := root.items[i]
		switch {
		case key == "meta":
			item = withSubsettedTag(item)
		case !slices.Contains(subsetAlwaysKept, base) && !slices.Contains(elements, base):
			continue
		}
		out.keys, out.items = append(out.keys, key), append(out.items, item)
	}
	return appendJSONNode(nil, out), nil
}

// withSubsettedTag returns meta with the SUBSETTED tag appended to meta.tag, unless it has it already.
func withSubsettedTag(meta *jsonNode) *jsonNode {
	str := func(s string) *jsonNode { return &jsonNode{kind: jsonString, text: s} }
	tag := &jsonNode{kind: jsonObject, keys: []string{"system", "code", "display"},
		items: []*jsonNode{str(subsettedSystem), str(subsettedCode), str("subsetted")}}
	out := &jsonNode{kind: jsonObject, keys: slices.Clone(meta.keys), items: slices.Clone(meta.items)}
	i := slices.Index(out.keys, "tag")
	if i < 0 {
		out.keys, out.items = append(out.keys, "tag"), append(out.items, &jsonNode{kind: jsonArray})
		i = len(out.keys) - 1
	}
	tags := out.items[i]
	if slices.ContainsFunc(tags.items, func(t *jsonNode) bool {
		return t.member("system").str() == subsettedSystem && t.member("code").str() == subsettedCode
	}) {
		return meta
	}
	out.items[i] = &jsonNode{kind: jsonArray, items: append(slices.Clone(tags.items), tag)}
	return out
}
