package main

// FHIR R4 Patient search (reference/fhir.md section 5): parsing and validating the parameters, and an
// in-memory index that follows the store. The HTTP handler and the Bundle live in handlers.go.
//
// Supported: _id, identifier, gender (token); family, given, name (string; no modifier, :exact,
// :contains); birthdate (date; prefixes eq ne gt lt ge le sa eb ap); _count and _offset (paging).
// AND is a repeated parameter, OR a comma-separated list; `\,` `\|` `\$` `\\` escape literals.
//
// Results are ordered by id (byte order). Ids never change, so paging through a result set with
// _offset is stable while patients are updated; only creates and deletes shift later pages.
//
// The index keeps, per current patient, the few fields search reads, with names pre-folded for case-
// and accent-insensitive matching. _id and identifier are map lookups; string searches (except
// :contains) look in a bucket keyed by the first bytes of the folded value; everything else (gender,
// birthdate, :contains, short name values, no parameters at all) scans the patients in id order. Every
// candidate is then checked against every clause, so an index only ever narrows the work.

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
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

// fhirGenderSystem is the code system of Patient.gender; `gender=system|code` must name it.
const fhirGenderSystem = "http://hl7.org/fhir/administrative-gender"

// searchParamNames lists the supported parameters, for the strict-mode diagnostic.
const searchParamNames = "_id, identifier, family, given, name, birthdate, gender, _count, _offset"

// patientQuery is a parsed, validated Patient search. Each outer slice is an AND of clauses (one per
// occurrence of the parameter); each clause is an OR of its comma-separated values.
type patientQuery struct {
	IDs         [][]string     // _id: exact ids
	Identifiers [][]tokenValue // identifier
	Genders     [][]string     // gender: codes; "" (from `system|`) means any gender
	Strings     []stringClause // family, given, name
	BirthDates  [][]dateValue  // birthdate
	Count       int            // _count: page size, default 20, capped at 100; 0 asks for the total only
	Offset      int            // _offset: index of the first match on the page, default 0
}

// tokenValue is one token search value: `value` (AnySystem), `|value` (System "", no system),
// `system|value` or `system|` (Value "": any value in that system).
type tokenValue struct {
	System    string
	Value     string
	AnySystem bool
}

// stringClause is one occurrence of a string parameter. Values are folded (see foldString) unless
// Modifier is "exact", in which case they are kept exactly as sent.
type stringClause struct {
	Param    string // "family", "given" or "name"
	Modifier string // "", "exact" or "contains"
	Values   []string
}

// dateValue is one date search value: a prefix and the value's implicit range of days [Start, End]
// (days since 1970-01-01, both ends included).
type dateValue struct {
	Prefix     string // eq ne gt lt ge le sa eb ap; "eq" when none was given
	Start, End int32
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
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	slices.Sort(keys) // issues in a stable order
	for _, key := range keys {
		name, modifier, hasModifier := strings.Cut(key, ":")
		if name == "_format" {
			continue // content negotiation, handled by the handler
		}
		known := true
		switch name {
		case "_id", "identifier", "gender", "birthdate", "_count", "_offset":
			if hasModifier {
				bad("not-supported", "%s: the modifier :%s is not supported; %s takes no modifiers.", key, modifier, name)
				continue
			}
		case "family", "given", "name":
			if hasModifier && modifier != "exact" && modifier != "contains" {
				bad("not-supported", "%s: the modifier :%s is not supported; %s allows :exact and :contains.", key, modifier, name)
				continue
			}
		default:
			known = false
		}
		if !known {
			if strict {
				bad("not-supported", "%s: unknown search parameter (Prefer: handling=strict); the supported parameters are %s.", key, searchParamNames)
			}
			continue
		}
		if (name == "_count" || name == "_offset") && len(params[key]) > 1 {
			bad("value", "%s: the parameter may appear only once.", key)
			continue
		}
		before := len(issues)
		for _, raw := range params[key] {
			if raw == "" {
				bad("value", "%s: the value is empty; give a value or leave the parameter out.", key)
				continue
			}
			switch name {
			case "_count", "_offset":
				n, err := strconv.Atoi(raw)
				if !fhirDigits(raw) || (err != nil && name == "_offset") {
					bad("value", "%s: %q is not a non-negative whole number.", key, raw)
					break
				}
				if name == "_offset" {
					q.Offset = n
					break
				}
				if err != nil || n > searchMaxCount { // all digits, so err means too large
					n = searchMaxCount
				}
				q.Count = n
			case "_id":
				var ids []string
				for _, v := range splitSearchValue(raw, ',') {
					v = unescapeSearchValue(v)
					if !validFHIRID(v) {
						bad("value", "%s: %q is not a valid id (1 to 64 of A-Z a-z 0-9 - .).", key, v)
					}
					ids = append(ids, v)
				}
				q.IDs = append(q.IDs, ids)
			case "identifier":
				var toks []tokenValue
				for _, v := range splitSearchValue(raw, ',') {
					t, msg := parseTokenValue(v)
					if msg != "" {
						bad("value", "%s: %q %s.", key, v, msg)
					}
					toks = append(toks, t)
				}
				q.Identifiers = append(q.Identifiers, toks)
			case "gender":
				var codes []string
				for _, v := range splitSearchValue(raw, ',') {
					t, msg := parseTokenValue(v)
					switch {
					case msg != "":
						bad("value", "%s: %q %s.", key, v, msg)
					case !t.AnySystem && t.System != "" && t.System != fhirGenderSystem:
						bad("value", "%s: %q names the system %q; gender codes belong to %s.", key, v, t.System, fhirGenderSystem)
					case t.Value != "" && !fhirHasCode(fhirGenderCodes, t.Value):
						bad("value", "%s: %q is not a gender code; use one of male, female, other, unknown.", key, v)
					}
					codes = append(codes, t.Value)
				}
				q.Genders = append(q.Genders, codes)
			case "family", "given", "name":
				c := stringClause{Param: name, Modifier: modifier}
				for _, v := range splitSearchValue(raw, ',') {
					v = unescapeSearchValue(v)
					if v == "" {
						bad("value", "%s: %q has an empty value between commas.", key, raw)
					}
					if modifier != "exact" {
						v = foldString(v)
					}
					c.Values = append(c.Values, v)
				}
				q.Strings = append(q.Strings, c)
			case "birthdate":
				var dates []dateValue
				for _, v := range splitSearchValue(raw, ',') {
					d, code, msg := parseDateValue(unescapeSearchValue(v))
					if msg != "" {
						bad(code, "%s: %q %s", key, v, msg)
					}
					dates = append(dates, d)
				}
				q.BirthDates = append(q.BirthDates, dates)
			}
		}
		if len(issues) == before && name != "_count" && name != "_offset" {
			self[key] = slices.Clone(params[key])
		}
	}
	if issues != nil {
		return patientQuery{}, nil, issues
	}
	self.Set("_count", strconv.Itoa(q.Count))
	if q.Offset > 0 {
		self.Set("_offset", strconv.Itoa(q.Offset))
	}
	return q, self, nil
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

// parseDateValue parses an optional prefix and a date at year, month or day precision. A time part is
// refused rather than truncated: birthDate is a date, and truncating would make eq1974-06-15T10:00:00Z
// match a birthDate of 1974-06-15, which the range rules say it must not. code and msg describe a
// problem; msg is a whole sentence that follows the quoted value.
func parseDateValue(s string) (d dateValue, code, msg string) {
	d.Prefix = "eq"
	if len(s) >= 2 && s[0] >= 'a' && s[0] <= 'z' && s[1] >= 'a' && s[1] <= 'z' {
		d.Prefix, s = s[:2], s[2:]
		switch d.Prefix {
		case "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap":
		default:
			return d, "value", fmt.Sprintf("has the unknown prefix %q; use one of eq, ne, gt, lt, ge, le, sa, eb, ap.", d.Prefix)
		}
	}
	switch p := fhirDatePrecision(s, true); p {
	case 0:
		return d, "value", "is not a valid date; use YYYY, YYYY-MM or YYYY-MM-DD (a real calendar date), optionally after a prefix."
	case 4:
		return d, "not-supported", "has a time; birthdate is a date, so give YYYY, YYYY-MM or YYYY-MM-DD."
	default:
		d.Start, d.End = dateRange(s, p)
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

// dateMatches applies the R4 date prefix rules (search.html#date) to a search range [s1, s2] and a
// target range [t1, t2]. ap is read as the R4 date table defines it: the two ranges overlap.
func dateMatches(prefix string, s1, s2, t1, t2 int32) bool {
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

// patientIndex holds what search needs for every current, non-deleted Patient. Safe for concurrent use:
// searches share the read lock; update takes the write lock only after decoding the body.
type patientIndex struct {
	mu sync.RWMutex
	// entries has every id ever recorded, deleted ones included, so that a version older than the
	// recorded one (Each's snapshot racing OnCommit at start-up) is recognised and ignored.
	entries    map[string]*ixEntry
	bySysValue map[tokenValue][]*ixEntry // identifier system+value (AnySystem false)
	byValue    map[string][]*ixEntry     // identifier value, whatever the system
	// byNameKey holds each patient under the first nameKeyLen bytes of every folded family, given,
	// prefix, suffix and text: a string search whose folded value is at least that long only needs to
	// check that one bucket.
	byNameKey map[string][]*ixEntry
	// order lists entries sorted by id for scans; it may still hold entries deleted since it was built
	// (scans skip them). pending holds entries added since, unsorted, until flush merges them in: a
	// replay of 100k patients appends 100k pointers and the first scanning search sorts them once.
	order, pending []*ixEntry
}

// nameKeyLen is the length in bytes of the byNameKey bucket keys. Three keeps buckets small (a few
// hundred patients per 100k for common surname starts) while most searches are at least that long;
// shorter values fall back to a scan.
const nameKeyLen = 3

// ixEntry is one patient in the index. A deleted patient keeps its entry with live false.
type ixEntry struct {
	id      string
	version int
	live    bool
	listed  bool // in order or pending
	fields  ixFields
	folded  []ixName // fields.Name folded (foldString), in the same order
	hasDate bool
	dateLo  int32 // birthDate range in days since 1970-01-01
	dateHi  int32
}

// ixFields is the part of a Patient body that search reads, with the FHIR JSON names. Decoding into it
// costs a fraction of parsePatient's validating parse (see BenchmarkPatientIndexUpdate), and stored
// bodies are always valid Patients, so validating them again would find nothing.
type ixFields struct {
	Identifier []ixIdentifier
	Name       []ixName
	Gender     string
	BirthDate  string
}

// ixIdentifier is one Identifier's system and value.
type ixIdentifier struct {
	System string
	Value  string
}

// ixName is one HumanName's searchable parts. A null placeholder in a string array decodes as "".
type ixName struct {
	Family string
	Given  []string
	Prefix []string
	Suffix []string
	Text   string
}

// newPatientIndex returns an empty index. Fill it with update for every version from store.Each before
// serving, then keep it current from journalOptions.OnCommit.
func newPatientIndex() *patientIndex {
	return &patientIndex{
		entries:    map[string]*ixEntry{},
		bySysValue: map[tokenValue][]*ixEntry{},
		byValue:    map[string][]*ixEntry{},
		byNameKey:  map[string][]*ixEntry{},
	}
}

// update records version v (call it from journalOptions.OnCommit, and for every version from store.Each
// at start-up); a deleted version removes the id. A version not newer than the one already recorded for
// the id is ignored, so the two sources may overlap and arrive in any order. A body that does not decode
// (the store only holds valid Patients, so this should not happen) is indexed with no fields: it stays
// findable by _id and in unfiltered searches rather than silently vanishing.
// indexFields reads what the index needs from a stored Patient with the validator's JSON parser,
// which is several times cheaper than encoding/json: this runs once per committed write.
func indexFields(body []byte) ixFields {
	tree, issues := fhirParseTree(body)
	if len(issues) > 0 {
		return ixFields{} // cannot happen for stored bodies; such a patient is findable by _id only
	}
	// The parser's strings point into its copy of the body; the index keeps copies of just the fields
	// it needs, so that copy can be freed.
	sf := (&patientResource{root: tree}).searchFields()
	f := ixFields{Gender: strings.Clone(sf.Gender), BirthDate: strings.Clone(sf.BirthDate)}
	for _, id := range sf.Identifiers {
		f.Identifier = append(f.Identifier, ixIdentifier{System: strings.Clone(id.System), Value: strings.Clone(id.Value)})
	}
	clones := func(ss []string) []string {
		for i := range ss {
			ss[i] = strings.Clone(ss[i])
		}
		return ss
	}
	for _, n := range sf.Names {
		f.Name = append(f.Name, ixName{Family: strings.Clone(n.Family), Given: clones(n.Given),
			Prefix: clones(n.Prefix), Suffix: clones(n.Suffix), Text: strings.Clone(n.Text)})
	}
	return f
}

func (ix *patientIndex) update(v patientVersion) {
	var f ixFields
	var folded []ixName
	var hasDate bool
	var lo, hi int32
	if !v.Deleted {
		f = indexFields(v.Body)
		folded = make([]ixName, len(f.Name))
		for i, n := range f.Name {
			folded[i] = ixName{Family: foldString(n.Family), Given: foldStrings(n.Given),
				Prefix: foldStrings(n.Prefix), Suffix: foldStrings(n.Suffix), Text: foldString(n.Text)}
		}
		if p := fhirDatePrecision(f.BirthDate, false); p > 0 {
			hasDate = true
			lo, hi = dateRange(f.BirthDate, p)
		}
	}

	ix.mu.Lock()
	defer ix.mu.Unlock()
	e := ix.entries[v.ID]
	if e == nil {
		e = &ixEntry{id: v.ID}
		ix.entries[v.ID] = e
	} else if v.Version <= e.version {
		return
	}
	if e.live {
		ix.unlink(e)
	}
	e.version = v.Version
	e.live = !v.Deleted
	e.fields, e.folded, e.hasDate, e.dateLo, e.dateHi = f, folded, hasDate, lo, hi
	if !e.live {
		return
	}
	for _, id := range uniqueIdentifiers(f.Identifier) {
		addToSet(ix.bySysValue, tokenValue{System: id.System, Value: id.Value}, e)
	}
	for _, v := range uniqueValues(f.Identifier) {
		addToSet(ix.byValue, v, e)
	}
	for _, k := range nameKeys(folded) {
		addToSet(ix.byNameKey, k, e)
	}
	if !e.listed {
		e.listed = true
		ix.pending = append(ix.pending, e)
	}
}

// unlink removes the live entry e from the identifier and name maps, dropping sets that become empty.
func (ix *patientIndex) unlink(e *ixEntry) {
	for _, id := range uniqueIdentifiers(e.fields.Identifier) {
		removeFromSet(ix.bySysValue, tokenValue{System: id.System, Value: id.Value}, e)
	}
	for _, v := range uniqueValues(e.fields.Identifier) {
		removeFromSet(ix.byValue, v, e)
	}
	for _, k := range nameKeys(e.folded) {
		removeFromSet(ix.byNameKey, k, e)
	}
}

// uniqueIdentifiers, uniqueValues and nameKeys list one patient's keys once each, so that each bucket
// holds an entry at most once (buckets are slices, far smaller than per-key sets at 100k patients).
func uniqueIdentifiers(ids []ixIdentifier) []ixIdentifier {
	var out []ixIdentifier
	for _, id := range ids {
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

func uniqueValues(ids []ixIdentifier) []string {
	var out []string
	for _, id := range ids {
		if !slices.Contains(out, id.Value) {
			out = append(out, id.Value)
		}
	}
	return out
}

func nameKeys(names []ixName) []string {
	var out []string
	eachNamePart(names, func(s string) {
		if k := nameKey(s); !slices.Contains(out, k) {
			out = append(out, k)
		}
	})
	return out
}

// addToSet adds e to the set m[k], making the set if needed.
func addToSet[K comparable](m map[K][]*ixEntry, k K, e *ixEntry) {
	m[k] = append(m[k], e)
}

// removeFromSet removes e from the set m[k], deleting the set once it is empty.
func removeFromSet[K comparable](m map[K][]*ixEntry, k K, e *ixEntry) {
	set := m[k]
	if i := slices.Index(set, e); i >= 0 {
		set[i] = set[len(set)-1]
		set[len(set)-1] = nil
		if set = set[:len(set)-1]; len(set) == 0 {
			delete(m, k)
		} else {
			m[k] = set
		}
	}
}

// eachNamePart calls fn with every non-empty family, given, prefix, suffix and text of names.
func eachNamePart(names []ixName, fn func(string)) {
	visit := func(s string) {
		if s != "" {
			fn(s)
		}
	}
	for _, n := range names {
		visit(n.Family)
		visit(n.Text)
		for _, parts := range [][]string{n.Given, n.Prefix, n.Suffix} {
			for _, s := range parts {
				visit(s)
			}
		}
	}
}

// nameKey is the byNameKey bucket of the folded string s: its first nameKeyLen bytes.
func nameKey(s string) string {
	return s[:min(len(s), nameKeyLen)]
}

// foldStrings folds every string of ss.
func foldStrings(ss []string) []string {
	if ss == nil {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = foldString(s)
	}
	return out
}

// search returns the total number of matches and the ids of the page [q.Offset, q.Offset+q.Count),
// ordered by id (byte order). Count 0 returns the total only.
func (ix *patientIndex) search(q patientQuery) (total int, ids []string) {
	src := sourceFor(&q)
	if src == sourceScan {
		ix.flush()
	}
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	visit := func(e *ixEntry) {
		if !e.live || !e.matches(&q) {
			return
		}
		if total >= q.Offset && total-q.Offset < q.Count {
			ids = append(ids, e.id)
		}
		total++
	}
	if src == sourceScan {
		// A write may have slipped in between flush and RLock: visit its pending entries too, in order.
		tail := slices.Clone(ix.pending)
		slices.SortFunc(tail, compareEntries)
		i, j := 0, 0
		for i < len(ix.order) || j < len(tail) {
			if j >= len(tail) || i < len(ix.order) && ix.order[i].id < tail[j].id {
				visit(ix.order[i])
				i++
			} else {
				visit(tail[j])
				j++
			}
		}
		return total, ids
	}
	// Filter before sorting: a bucket can hold thousands of candidates of which a handful match.
	candidates := ix.candidates(&q, src)
	matched := candidates[:0]
	for _, e := range candidates {
		if e.live && e.matches(&q) {
			matched = append(matched, e)
		}
	}
	slices.SortFunc(matched, compareEntries)
	matched = slices.Compact(matched) // an entry can come from two OR values
	for _, e := range matched {
		visit(e)
	}
	return total, ids
}

// compareEntries orders entries by id.
func compareEntries(a, b *ixEntry) int {
	return strings.Compare(a.id, b.id)
}

// flush sorts pending into order, dropping entries deleted since they were listed.
func (ix *patientIndex) flush() {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if len(ix.pending) == 0 {
		return
	}
	slices.SortFunc(ix.pending, compareEntries)
	out := make([]*ixEntry, 0, len(ix.order)+len(ix.pending))
	i, j := 0, 0
	for i < len(ix.order) || j < len(ix.pending) {
		var e *ixEntry
		if j >= len(ix.pending) || i < len(ix.order) && ix.order[i].id < ix.pending[j].id {
			e, i = ix.order[i], i+1
		} else {
			e, j = ix.pending[j], j+1
		}
		if e.live {
			out = append(out, e)
		} else {
			e.listed = false
		}
	}
	ix.order, ix.pending = out, nil
}

// querySource says where search finds its candidates.
type querySource int

// The candidate sources, most selective first.
const (
	sourceScan       querySource = iota // every patient, in id order
	sourceID                            // the first _id clause
	sourceIdentifier                    // the first identifier clause without a `system|` value
	sourceName                          // the first string clause usable with byNameKey
)

// sourceFor picks the most selective index q can use: _id, then identifier (unless a value is
// `system|`, which matches a whole system), then a string clause without :contains whose folded values
// are all at least nameKeyLen bytes long; otherwise a scan.
func sourceFor(q *patientQuery) querySource {
	if len(q.IDs) > 0 {
		return sourceID
	}
	for _, clause := range q.Identifiers {
		if !slices.ContainsFunc(clause, func(t tokenValue) bool { return t.Value == "" }) {
			return sourceIdentifier
		}
	}
	if nameClause(q) >= 0 {
		return sourceName
	}
	return sourceScan
}

// nameClause returns the index of the first string clause that byNameKey can answer, or -1.
func nameClause(q *patientQuery) int {
	return slices.IndexFunc(q.Strings, func(c stringClause) bool {
		return c.Modifier != "contains" && !slices.ContainsFunc(c.Values, func(v string) bool {
			return len(foldString(v)) < nameKeyLen // exact values are not folded yet
		})
	})
}

// candidates returns a superset of the live matches from src, possibly with duplicates.
func (ix *patientIndex) candidates(q *patientQuery, src querySource) []*ixEntry {
	var out []*ixEntry
	switch src {
	case sourceID:
		for _, id := range q.IDs[0] {
			if e := ix.entries[id]; e != nil && e.live {
				out = append(out, e)
			}
		}
	case sourceIdentifier:
		i := slices.IndexFunc(q.Identifiers, func(clause []tokenValue) bool {
			return !slices.ContainsFunc(clause, func(t tokenValue) bool { return t.Value == "" })
		})
		for _, t := range q.Identifiers[i] {
			m := ix.byValue[t.Value]
			if !t.AnySystem {
				m = ix.bySysValue[t]
			}
			out = append(out, m...)
		}
	case sourceName:
		for _, v := range q.Strings[nameClause(q)].Values {
			out = append(out, ix.byNameKey[nameKey(foldString(v))]...)
		}
	}
	return out
}

// matches reports whether e satisfies every clause of q.
func (e *ixEntry) matches(q *patientQuery) bool {
	for _, clause := range q.IDs {
		if !slices.Contains(clause, e.id) {
			return false
		}
	}
	for _, clause := range q.Identifiers {
		if !slices.ContainsFunc(clause, e.hasIdentifier) {
			return false
		}
	}
	for _, clause := range q.Genders {
		if e.fields.Gender == "" || !slices.ContainsFunc(clause, func(code string) bool { return code == "" || code == e.fields.Gender }) {
			return false
		}
	}
	for _, clause := range q.BirthDates {
		if !e.hasDate || !slices.ContainsFunc(clause, func(d dateValue) bool { return dateMatches(d.Prefix, d.Start, d.End, e.dateLo, e.dateHi) }) {
			return false
		}
	}
	for _, c := range q.Strings {
		if !slices.ContainsFunc(c.Values, func(v string) bool { return e.matchesString(c.Param, c.Modifier, v) }) {
			return false
		}
	}
	return true
}

// hasIdentifier reports whether any of e's identifiers matches the token t.
func (e *ixEntry) hasIdentifier(t tokenValue) bool {
	for _, id := range e.fields.Identifier {
		if (t.AnySystem || id.System == t.System) && (t.Value == "" || id.Value == t.Value) {
			return true
		}
	}
	return false
}

// matchesString reports whether any of e's names has a part that param searches (name: family, given,
// prefix, suffix and text) matching v under modifier: exact compares the strings as stored; the others
// compare folded strings, as a prefix by default and a substring for contains.
func (e *ixEntry) matchesString(param, modifier, v string) bool {
	names := e.folded
	if modifier == "exact" {
		names = e.fields.Name
	}
	match := func(s string) bool {
		switch modifier {
		case "exact":
			return s == v
		case "contains":
			return strings.Contains(s, v)
		}
		return strings.HasPrefix(s, v)
	}
	for _, n := range names {
		switch param {
		case "family":
			if match(n.Family) {
				return true
			}
		case "given":
			if slices.ContainsFunc(n.Given, match) {
				return true
			}
		case "name":
			if match(n.Family) || match(n.Text) || slices.ContainsFunc(n.Given, match) ||
				slices.ContainsFunc(n.Prefix, match) || slices.ContainsFunc(n.Suffix, match) {
				return true
			}
		}
	}
	return false
}
