package main

// FHIR R4 Patient search (reference/fhir.md section 5): parsing and validating the parameters, and the
// matching rules (dates as ranges, strings folded). The index that answers queries is in index.go; the
// HTTP handler and the Bundle are in fhir_handlers.go.
//
// Supported: _id, identifier, gender (token); family, given, name (string; no modifier, :exact,
// :contains); birthdate (date; prefixes eq ne gt lt ge le sa eb ap); _count and _offset (paging).
// AND is a repeated parameter, OR a comma-separated list; `\,` `\|` `\$` `\\` escape literals.
//
// Results are ordered by id (byte order). Ids never change, so paging through a result set with
// _offset is stable while patients are updated; only creates and deletes shift later pages.

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
	for _, key := range slices.Sorted(maps.Keys(params)) { // issues in a stable order
		name, modifier, hasModifier := strings.Cut(key, ":")
		switch name {
		case "_format":
			continue // content negotiation, handled by the handler
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
			parseSearchValue(&q, key, name, modifier, raw, bad)
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

// parseSearchValue adds one occurrence of a known parameter (key is name with its modifier) to q: a
// clause of its comma-separated values, or the paging setting. Problems go to bad, each naming key.
func parseSearchValue(q *patientQuery, key, name, modifier, raw string, bad func(code, format string, args ...any)) {
	values := splitSearchValue(raw, ',')
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
	case "family", "given", "name":
		c := stringClause{Param: name, Modifier: modifier}
		for _, v := range values {
			if v = unescapeSearchValue(v); v == "" {
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
		for _, v := range values {
			d, code, msg := parseDateValue(unescapeSearchValue(v))
			if msg != "" {
				bad(code, "%s: %q %s", key, v, msg)
			}
			dates = append(dates, d)
		}
		q.BirthDates = append(q.BirthDates, dates)
	}
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
