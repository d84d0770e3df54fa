package main

// The in-memory Patient search index, kept current by the store (store.go) and queried with the
// parsed searches of search.go.
//
// The index keeps, per current patient, the few fields search reads, with names pre-folded for case-
// and accent-insensitive matching. _id and identifier are map lookups; string searches (except
// :contains) look in a bucket keyed by the first bytes of the folded value; everything else (gender,
// birthdate, :contains, short name values, no parameters at all) scans the patients in id order. Every
// candidate is then checked against every clause, so an index only ever narrows the work.

import (
	"slices"
	"strings"
	"sync"
)

// patientIndex holds what search needs for every current, non-deleted Patient. Safe for concurrent use:
// searches share the read lock; update takes the write lock only after decoding the body.
type patientIndex struct {
	mu sync.RWMutex
	// entries has every id ever recorded, deleted ones included, so that a version older than the
	// recorded one (Each's snapshot racing OnCommit at start-up) is recognised and ignored.
	entries map[string]*ixEntry
	// postings holds each live patient under every key a lookup starts from (see postingKeys): its
	// identifiers with and without their system, and the first nameKeyLen bytes of every folded family,
	// given, prefix, suffix and text, so a string search whose folded value is at least that long only
	// needs to check that one bucket.
	postings map[string][]*ixEntry
	// order lists entries sorted by id for scans; it may still hold entries deleted since it was built
	// (scans skip them). pending holds entries added since, unsorted, until flush merges them in: a
	// replay of 100k patients appends 100k pointers and the first scanning search sorts them once.
	order, pending []*ixEntry
}

// nameKeyLen is the length in bytes of the name posting keys. Three keeps buckets small (a few
// hundred patients per 100k for common surname starts) while most searches are at least that long;
// shorter values fall back to a scan.
const nameKeyLen = 3

// ixEntry is one patient in the index. A deleted patient keeps its entry with live false.
type ixEntry struct {
	id      string
	version int
	live    bool
	listed  bool // in order or pending
	fields  patientSearchFields
	folded  []patientName // fields.Names folded (foldString), in the same order
	hasDate bool
	dateLo  int32 // birthDate range in days since 1970-01-01
	dateHi  int32
}

// newPatientIndex returns an empty index. Fill it with update for every version from store.Each before
// serving, then keep it current from journalOptions.OnCommit.
func newPatientIndex() *patientIndex {
	return &patientIndex{
		entries:  map[string]*ixEntry{},
		postings: map[string][]*ixEntry{},
	}
}

// indexFields reads what the index needs from a stored Patient; stored bodies are valid Patients,
// so it reads without validating again.
func indexFields(body []byte) patientSearchFields {
	tree, issues := readFHIRJSON(body)
	if len(issues) > 0 {
		return patientSearchFields{} // cannot happen for stored bodies; such a patient is findable by _id only
	}
	return (&patientResource{root: tree}).searchFields()
}

// update records version v (call it from journalOptions.OnCommit, and for every version from store.Each
// at start-up); a deleted version removes the id. A version not newer than the one already recorded for
// the id is ignored, so the two sources may overlap and arrive in any order. A body that does not decode
// (the store only holds valid Patients, so this should not happen) is indexed with no fields: it stays
// findable by _id and in unfiltered searches rather than silently vanishing.
func (ix *patientIndex) update(v patientVersion) {
	var f patientSearchFields
	var folded []patientName
	var hasDate bool
	var lo, hi int32
	if !v.Deleted {
		f = indexFields(v.Body)
		folded = make([]patientName, len(f.Names))
		for i, n := range f.Names {
			folded[i] = patientName{Family: foldString(n.Family), Given: foldStrings(n.Given),
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
	for _, k := range postingKeys(f.Identifiers, folded) {
		ix.postings[k] = append(ix.postings[k], e)
	}
	if !e.listed {
		e.listed = true
		ix.pending = append(ix.pending, e)
	}
}

// unlink removes the live entry e from its postings, dropping postings that become empty.
func (ix *patientIndex) unlink(e *ixEntry) {
	for _, k := range postingKeys(e.fields.Identifiers, e.folded) {
		set := ix.postings[k]
		if i := slices.Index(set, e); i >= 0 {
			set[i] = set[len(set)-1]
			set[len(set)-1] = nil
			if set = set[:len(set)-1]; len(set) == 0 {
				delete(ix.postings, k)
			} else {
				ix.postings[k] = set
			}
		}
	}
}

// postingKeys lists a patient's posting keys once each, so that each posting holds an entry at most
// once (postings are slices, far smaller than per-key sets at 100k patients). The separator cannot
// occur in a stored identifier: FHIR strings hold no control characters.
func postingKeys(ids []patientIdentifier, folded []patientName) []string {
	var out []string
	add := func(k string) {
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	for _, id := range ids {
		add(identifierKey(tokenValue{System: id.System, Value: id.Value}))
		add(identifierKey(tokenValue{Value: id.Value, AnySystem: true}))
	}
	eachNamePart(folded, func(s string) { add("n" + nameKey(s)) })
	return out
}

// identifierKey is the posting key of an identifier token with a value: with a system (or none,
// `|value`), or in any system.
func identifierKey(t tokenValue) string {
	if t.AnySystem {
		return "v" + t.Value
	}
	return "i" + t.System + "\x00" + t.Value
}

// eachNamePart calls fn with every non-empty family, given, prefix, suffix and text of names.
func eachNamePart(names []patientName, fn func(string)) {
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

// nameKey is the name posting key of the folded string s: its first nameKeyLen bytes.
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
	sourceName                          // the first string clause the name postings can answer
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

// nameClause returns the index of the first string clause the name postings can answer, or -1.
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
			out = append(out, ix.postings[identifierKey(t)]...)
		}
	case sourceName:
		for _, v := range q.Strings[nameClause(q)].Values {
			out = append(out, ix.postings["n"+nameKey(foldString(v))]...)
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
	for _, id := range e.fields.Identifiers {
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
		names = e.fields.Names
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
