package main

// The in-memory Patient index the store (store.go) keeps: for every id, where its current version is in
// the journal, and the fields search reads. Bodies stay on disk and reads fetch them from there, so
// memory grows with the number of Patients, not with their size or history. The index is nearly free of
// pointers, so the collector has little to do whatever the store size:
//
//   - slots: one fixed-size record per id ever stored (deleted ones included), in chunks, with the
//     scalars many queries test (gender, birthDate range, active, lastUpdated);
//   - ids and fields: byte arenas in 4 MiB chunks; a slot's other search fields (identifiers; name and
//     address parts; telecoms; references; the deceasedDateTime range) are one compact blob;
//   - postings: 64-bit hashes of selective keys (ids, identifier values, the first nameKeyLen bytes of
//     folded name parts and of postal codes, telecom values, referenced ids and reference identifier
//     values), each to the slots that have it, in a map without pointers (see postings). Values many
//     Patients share (active, gender, a birth year) get no posting: they are tested in the slot;
//   - order: the live slots sorted by id, for scans and stable paging.
//
// A search takes its candidates from the clause whose postings are shortest (_id, identifier, a name
// or postal-code prefix, a telecom, a reference) or scans order; every candidate is then checked
// against every clause, so postings (and their rare hash collisions) only ever narrow the work. The
// matches are paged in id order, or with _sort kept in a bounded heap (topK).

import (
	"bytes"
	"cmp"
	"container/heap"
	"crypto/rand"
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// nameKeyLen is the length in bytes of the name posting keys. Three keeps postings small (a few
// hundred patients per 100k for common surname starts) while most searches are at least that long;
// shorter values fall back to a scan.
const nameKeyLen = 3

// recordLoc is where a record is in the journal: its offset and length.
type recordLoc struct {
	off int64
	n   uint32
}

// slot is one Patient id in the index. Everything a lookup or a search clause reads without the
// body is here or in the arenas it points into. It is 56 bytes (TestSlotSize): the flags fill padding.
type slot struct {
	rec            recordLoc // the current version's record
	lastUpdated    int64     // Unix milliseconds
	version        uint32
	idOff          uint32 // in patientIndex.ids
	fieldsOff      uint32 // in patientIndex.fields; fieldsLen 0 when not live
	fieldsLen      uint32
	dateLo, dateHi int32 // birthDate as days since 1970-01-01; dateLo > dateHi when there is none
	idLen          uint8
	gender         uint8 // 1 + index in genderCodes, 0 for none
	flags          uint8 // slotActiveTrue or slotActiveFalse, 0 when Patient.active is absent
	live           bool  // the current version is not a deletion
	listed         bool  // in order or pending
}

// The slot flags.
const (
	slotActiveTrue  = 1 << iota // Patient.active is true
	slotActiveFalse             // Patient.active is false
)

// genderCodes are Patient.gender's codes, in the order slot.gender numbers them.
var genderCodes = strings.Split(fhirGenderCodes, "|")

// slotsPerChunk is how many slots one chunk holds: chunks never move, so the slots never do.
const slotsPerChunk = 1 << 16

// patientIndex is the store's in-memory state. Safe for concurrent use: lookups and searches share the
// read lock; updates take the write lock only to apply what prepare worked out before.
type patientIndex struct {
	mu       sync.RWMutex
	hashKey  sipKey   // the posting keys' SipHash key: random, and saved in checkpoints with the postings
	slots    [][]slot // see slotAt
	n        uint32   // slots in use
	ids      arena
	fields   arena
	garbage  int // bytes of fields no live slot uses, freed by compact
	postings postings
	// order lists slots sorted by id for scans; it may still hold slots deleted since it was built
	// (scans skip them). pending holds slots listed since, unsorted, until flush merges them in.
	order, pending []uint32

	// dict holds the interned strings a fields blob names by number (1-based): identifier systems,
	// and the address parts many Patients share (city, district, state, country) while it has fewer
	// than dictCap. prepare fills it outside mu: dictMu guards adding, and readers load the current
	// dictionary, which is only ever replaced by a longer one, without a lock.
	dictMu  sync.RWMutex
	dictIdx map[string]uint32
	dict    atomic.Pointer[dictionary]
}

// dictionary is the interned strings as written, as bytes and folded (nil when folding only lower-cases
// ASCII), for foldedView. Appending to it makes a new one (the arrays may be shared: what an older
// one holds never changes).
type dictionary struct {
	strs   []string
	bytes  [][]byte
	folded [][]byte
}

// dictCap bounds the address parts interned: a store whose cities are all different keeps them in
// the blobs instead.
const dictCap = 1 << 16

// newPatientIndex returns an empty index.
func newPatientIndex() *patientIndex {
	ix := &patientIndex{postings: postings{m: map[uint64]uint32{}}, dictIdx: map[string]uint32{}}
	var k [16]byte
	rand.Read(k[:]) // never fails (crypto/rand)
	ix.hashKey = sipKey{binary.LittleEndian.Uint64(k[:8]), binary.LittleEndian.Uint64(k[8:])}
	ix.dict.Store(&dictionary{})
	return ix
}

// slotAt returns slot i.
func (ix *patientIndex) slotAt(i uint32) *slot {
	return &ix.slots[i/slotsPerChunk][i%slotsPerChunk]
}

// id returns slot i's id, a view into the arena (copy it to keep it beyond the lock).
func (ix *patientIndex) id(i uint32) []byte {
	s := ix.slotAt(i)
	return ix.ids.get(s.idOff, uint32(s.idLen))
}

// key hashes a posting key: a kind byte and the value. The kinds: 'i' id, 'v' identifier value, 'n' name
// prefix, 'z' postal-code prefix, 't' telecom value (normalised), 'r' referenced id (or a reference that
// names no id, whole), 'q' reference identifier value.
func (ix *patientIndex) key(kind byte, v string) uint64 {
	var buf [128]byte // most keys fit: no allocation
	return sipHash24(ix.hashKey, append(append(buf[:0], kind), v...))
}

// keyOf is key for a value in the arenas.
func (ix *patientIndex) keyOf(kind byte, v []byte) uint64 {
	var buf [128]byte
	return sipHash24(ix.hashKey, append(append(buf[:0], kind), v...))
}

// lookup returns the slot of id; ok is false if the id was never stored.
func (ix *patientIndex) lookup(id string) (s slot, ok bool) {
	i, ok := ix.slotOf(id)
	if !ok {
		return slot{}, false
	}
	return *ix.slotAt(i), true
}

// slotOf finds id's slot number; the caller holds mu (either way).
func (ix *patientIndex) slotOf(id string) (uint32, bool) {
	var buf [4]uint32
	for _, i := range ix.postings.get(ix.key('i', id), buf[:0]) {
		if string(ix.id(i)) == id {
			return i, true
		}
	}
	return 0, false
}

// indexUpdate is one version ready to apply: prepare does the work that needs no lock.
type indexUpdate struct {
	v              patientVersion
	fields         []byte // the encoded search fields; nil for a deletion
	gender, flags  uint8
	dateLo, dateHi int32
}

// prepare reads what the index needs from version v. A body that does not read (the store only holds
// valid Patients, so this should not happen) is indexed with no fields: findable by _id and in
// unfiltered searches rather than silently vanishing.
func (ix *patientIndex) prepare(v patientVersion) indexUpdate {
	u := indexUpdate{v: v, dateLo: 1, dateHi: 0}
	if v.Deleted {
		return u
	}
	var f patientSearchFields
	if tree, issues := readFHIRJSON(v.Body); len(issues) == 0 {
		f = (&patientResource{root: tree}).searchFields()
	}
	if i := slices.Index(genderCodes, f.Gender); i >= 0 {
		u.gender = uint8(i + 1)
	}
	if p := fhirDatePrecision(f.BirthDate, false); p > 0 {
		u.dateLo, u.dateHi = dateRange(f.BirthDate, p)
	}
	switch f.Active {
	case "true":
		u.flags = slotActiveTrue
	case "false":
		u.flags = slotActiveFalse
	}
	u.fields = ix.encodeFields(f)
	return u
}

// update records version v: prepare, then apply.
func (ix *patientIndex) update(v patientVersion) {
	ix.apply(ix.prepare(v))
}

// apply records prepared versions, in order. A version not newer than the one recorded for its id is
// ignored.
func (ix *patientIndex) apply(us ...indexUpdate) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, u := range us {
		i, ok := ix.slotOf(u.v.ID)
		if !ok {
			i = ix.newSlot(u.v.ID)
		}
		s := ix.slotAt(i)
		if ok && uint32(u.v.Version) <= s.version {
			continue
		}
		if s.live {
			ix.unlink(i)
		}
		s.rec, s.lastUpdated, s.version = u.v.loc, u.v.LastUpdated.UnixMilli(), uint32(u.v.Version)
		s.live, s.gender, s.flags, s.dateLo, s.dateHi = !u.v.Deleted, u.gender, u.flags, u.dateLo, u.dateHi
		s.fieldsOff, s.fieldsLen = 0, 0
		if !s.live {
			continue
		}
		s.fieldsOff, s.fieldsLen = ix.fields.add(u.fields), uint32(len(u.fields))
		ix.link(i)
		if !s.listed {
			s.listed = true
			ix.pending = append(ix.pending, i)
		}
	}
	if ix.garbage > ix.fields.size()/2+16<<20 {
		ix.compact()
	}
}

// newSlot adds an empty slot for id.
func (ix *patientIndex) newSlot(id string) uint32 {
	i := ix.appendSlot(id)
	ix.postings.add(ix.key('i', id), i)
	return i
}

// appendSlot adds an empty slot for id without its posting (a checkpoint brings its postings).
func (ix *patientIndex) appendSlot(id string) uint32 {
	i := ix.n
	if i%slotsPerChunk == 0 {
		ix.slots = append(ix.slots, make([]slot, slotsPerChunk))
	}
	ix.n++
	*ix.slotAt(i) = slot{idOff: ix.ids.add([]byte(id)), idLen: uint8(len(id))}
	return i
}

// link adds live slot i to the postings of its keys; unlink removes it (and counts its fields as
// garbage).
func (ix *patientIndex) link(i uint32) {
	ix.eachKey(i, func(k uint64) { ix.postings.add(k, i) })
}

func (ix *patientIndex) unlink(i uint32) {
	ix.eachKey(i, func(k uint64) { ix.postings.remove(k, i) })
	ix.garbage += int(ix.slotAt(i).fieldsLen)
}

// eachKey calls fn with every posting key of slot i's fields.
func (ix *patientIndex) eachKey(i uint32, fn func(uint64)) {
	ix.eachKeyOf(ix.fieldsOf(i), fn)
}

// eachKeyOf calls fn with every posting key of the fields f (a key may come more than once; postings
// keep a slot once per key).
func (ix *patientIndex) eachKeyOf(f fieldsBlob, fn func(uint64)) {
	var buf [nameKeyLen]byte
	f.eachIdentifier(func(_ uint32, value []byte) { fn(ix.keyOf('v', value)) })
	ix.eachPart(f, "", func(kind byte, _ []byte, folded foldedView) bool {
		switch {
		case isNamePart(kind):
			fn(ix.keyOf('n', folded.appendTo(buf[:0], false, nameKeyLen)))
		case kind == partPostalCode:
			fn(ix.keyOf('z', folded.appendTo(buf[:0], true, nameKeyLen)))
		}
		return true
	})
	f.eachTelecom(func(_ byte, value []byte) { fn(ix.keyOf('t', value)) })
	f.eachReference(func(_ byte, ref []byte, _ uint32, value []byte) {
		if len(ref) > 0 {
			fn(ix.key('r', referenceKey(string(ref))))
		}
		if len(value) > 0 {
			fn(ix.keyOf('q', value))
		}
	})
}

// fieldsOf returns slot i's fields blob.
func (ix *patientIndex) fieldsOf(i uint32) fieldsBlob {
	s := ix.slotAt(i)
	return fieldsBlob(ix.fields.get(s.fieldsOff, s.fieldsLen))
}

// compact copies the live fields into a new arena, dropping those of replaced and deleted versions.
func (ix *patientIndex) compact() {
	var fresh arena
	for i := range ix.n {
		if s := ix.slotAt(i); s.live {
			s.fieldsOff = fresh.add(ix.fields.get(s.fieldsOff, s.fieldsLen))
		}
	}
	ix.fields, ix.garbage = fresh, 0
}

// indexHit is one search result: the Patient's id and where its current version is.
type indexHit struct {
	id  string
	loc recordLoc
}

// search returns the total number of matches and the page [q.Offset, q.Offset+q.Count) of them,
// ordered by q.Sort and then by id (byte order). Count 0 returns the total only.
func (ix *patientIndex) search(q patientQuery) (total int, page []indexHit) {
	sources := ix.sourceKeys(&q)
	if len(sources) == 0 {
		ix.flush()
	}
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	pg := newPager(ix, &q)
	if len(sources) == 0 {
		ix.scan(func(i uint32) {
			if ix.slotAt(i).live && ix.matches(i, &q) {
				pg.add(i)
			}
		})
		return pg.total, pg.hits()
	}
	// Filter before sorting: a posting can hold thousands of candidates of which a handful match.
	candidates := ix.candidates(ix.shortest(sources))
	matched := candidates[:0]
	for _, i := range candidates {
		if ix.slotAt(i).live && ix.matches(i, &q) {
			matched = append(matched, i)
		}
	}
	if pg.top == nil {
		slices.SortFunc(matched, ix.compareIDs) // the page is in id order
	} else {
		slices.Sort(matched) // only to drop duplicates: the heap orders them
	}
	for _, i := range slices.Compact(matched) { // a slot can come from two OR values
		pg.add(i)
	}
	return pg.total, pg.hits()
}

// scan calls visit with every listed slot in id order. The caller holds the read lock after a flush;
// a write may have slipped in between the two, so pending slots are merged in too.
func (ix *patientIndex) scan(visit func(uint32)) {
	tail := slices.Clone(ix.pending)
	slices.SortFunc(tail, ix.compareIDs)
	for i, j := 0, 0; i < len(ix.order) || j < len(tail); {
		if j >= len(tail) || i < len(ix.order) && ix.compareIDs(ix.order[i], tail[j]) < 0 {
			visit(ix.order[i])
			i++
		} else {
			visit(tail[j])
			j++
		}
	}
}

// pager counts the matches and keeps the page: in id order as they come, or through a topK heap when
// the query sorts.
type pager struct {
	ix    *patientIndex
	q     *patientQuery
	total int
	page  []uint32
	top   *topK // nil unless q sorts and asks for entries
}

// newPager returns a pager for q.
func newPager(ix *patientIndex, q *patientQuery) *pager {
	pg := &pager{ix: ix, q: q}
	if len(q.Sort) > 0 && q.Count > 0 {
		pg.top = &topK{ix: ix, keys: q.Sort, k: q.Offset + q.Count}
		if pg.top.k < q.Offset { // overflow
			pg.top.k = math.MaxInt
		}
	}
	return pg
}

// add counts match i, and keeps it if it may be on the page.
func (pg *pager) add(i uint32) {
	switch {
	case pg.top != nil:
		pg.top.add(i)
	case pg.total >= pg.q.Offset && pg.total-pg.q.Offset < pg.q.Count:
		pg.page = append(pg.page, i)
	}
	pg.total++
}

// hits returns the page.
func (pg *pager) hits() []indexHit {
	slots := pg.page
	if pg.top != nil {
		slots = pg.top.sorted(pg.q.Offset)
	}
	var out []indexHit
	for _, i := range slots {
		out = append(out, indexHit{id: string(pg.ix.id(i)), loc: pg.ix.slotAt(i).rec})
	}
	return out
}

// compareIDs orders slots by id.
func (ix *patientIndex) compareIDs(a, b uint32) int {
	return bytes.Compare(ix.id(a), ix.id(b))
}

// flush sorts pending into order, dropping slots deleted since they were listed.
func (ix *patientIndex) flush() {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if len(ix.pending) == 0 {
		return
	}
	slices.SortFunc(ix.pending, ix.compareIDs)
	out := make([]uint32, 0, len(ix.order)+len(ix.pending))
	i, j := 0, 0
	for i < len(ix.order) || j < len(ix.pending) {
		var s uint32
		if j >= len(ix.pending) || i < len(ix.order) && ix.compareIDs(ix.order[i], ix.pending[j]) < 0 {
			s, i = ix.order[i], i+1
		} else {
			s, j = ix.pending[j], j+1
		}
		if ix.slotAt(s).live {
			out = append(out, s)
		} else {
			ix.slotAt(s).listed = false
		}
	}
	ix.order, ix.pending = out, nil
}

// sourceKeys returns, for every clause of q the postings can answer, the keys whose postings together
// hold every live slot that satisfies it (a clause is an OR, so each of its values needs a key). An
// empty result means no clause can be answered that way and search scans. :not and :missing clauses,
// :contains, address, dates and the slot's scalars never can; nor can a value too short for a
// prefix key, or a token that names only a system.
func (ix *patientIndex) sourceKeys(q *patientQuery) [][]uint64 {
	var out [][]uint64
	add := func(keys []uint64, ok bool) {
		if ok && len(keys) > 0 {
			out = append(out, keys)
		}
	}
	for _, clause := range q.IDs {
		add(mapKeys(clause, func(id string) (uint64, bool) { return ix.key('i', id), true }))
	}
	for _, clause := range q.Identifiers {
		add(mapKeys(clause, func(t tokenValue) (uint64, bool) { return ix.key('v', t.Value), t.Value != "" }))
	}
	for _, c := range q.Strings {
		kind := byte('n')
		switch {
		case c.Modifier == "contains" || c.Param == "address":
			continue
		case c.Param == "address-postalcode":
			kind = 'z'
		}
		add(mapKeys(c.Values, func(v string) (uint64, bool) {
			if c.Modifier == "exact" {
				v = foldString(v)
				if kind == 'z' {
					v = removeChars(v, asciiSpace)
				}
			}
			return ix.key(kind, v[:min(len(v), nameKeyLen)]), len(v) >= nameKeyLen
		}))
	}
	for _, c := range q.Telecoms {
		var keys []uint64
		for _, v := range c.Values {
			for _, n := range []string{v.Phone, v.Other} {
				if n != "" {
					keys = append(keys, ix.key('t', n))
				}
			}
		}
		add(keys, true)
	}
	for _, c := range q.References {
		add(mapKeys(c.Values, func(v referenceValue) (uint64, bool) {
			if c.Identifier {
				return ix.key('q', v.Token.Value), v.Token.Value != ""
			}
			return ix.key('r', cmp.Or(v.URL, v.ID)), true
		}))
	}
	return out
}

// mapKeys maps every value of a clause to a posting key; ok is false if one has none.
func mapKeys[T any](values []T, key func(T) (uint64, bool)) (keys []uint64, ok bool) {
	for _, v := range values {
		k, ok := key(v)
		if !ok {
			return nil, false
		}
		keys = append(keys, k)
	}
	return keys, true
}

// shortest returns the key set whose postings hold the fewest slots. The caller holds mu.
func (ix *patientIndex) shortest(sources [][]uint64) []uint64 {
	best, bestN := sources[0], math.MaxInt
	for _, keys := range sources {
		n := 0
		for _, k := range keys {
			n += ix.postings.count(k)
		}
		if n < bestN {
			best, bestN = keys, n
		}
	}
	return best
}

// candidates returns the slots in the postings of keys, possibly with duplicates.
func (ix *patientIndex) candidates(keys []uint64) []uint32 {
	var out []uint32
	for _, k := range keys {
		out = ix.postings.get(k, out)
	}
	return out
}

// matches reports whether slot i satisfies every clause of q.
func (ix *patientIndex) matches(i uint32, q *patientQuery) bool {
	if !ix.matchesSlot(i, q) || !ix.matchesFields(i, q) {
		return false
	}
	for _, m := range q.Missing {
		if ix.has(i, m.Param) == m.Missing {
			return false
		}
	}
	for n := range q.Not { // R4 :not: every slot that does not match, those with no value included
		if ix.matches(i, &q.Not[n]) {
			return false
		}
	}
	return true
}

// matchesSlot checks the clauses answered from the slot alone.
func (ix *patientIndex) matchesSlot(i uint32, q *patientQuery) bool {
	s := ix.slotAt(i)
	for _, clause := range q.IDs {
		if !slices.ContainsFunc(clause, func(id string) bool { return string(ix.id(i)) == id }) {
			return false
		}
	}
	for _, clause := range q.Genders {
		if s.gender == 0 || !slices.ContainsFunc(clause, func(code string) bool { return code == "" || code == genderCodes[s.gender-1] }) {
			return false
		}
	}
	for _, clause := range q.Active {
		if s.flags&(slotActiveTrue|slotActiveFalse) == 0 || !slices.Contains(clause, s.flags&slotActiveTrue != 0) {
			return false
		}
	}
	birthLo, birthHi := int64(s.dateLo)*msPerDay, int64(s.dateHi+1)*msPerDay-1
	for _, clause := range q.BirthDates {
		if s.dateLo > s.dateHi || !matchesDates(clause, birthLo, birthHi) {
			return false
		}
	}
	for _, clause := range q.LastUpdated {
		if !matchesDates(clause, s.lastUpdated, s.lastUpdated) { // an instant: a range of width 0
			return false
		}
	}
	return true
}

// holderOf returns the id of a live Patient other than id that holds identifier system|value, or "".
func (ix *patientIndex) holderOf(system, value, id string) string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	t := tokenValue{System: system, Value: value}
	for _, i := range ix.postings.get(ix.key('v', value), nil) {
		if ix.slotAt(i).live && string(ix.id(i)) != id && ix.hasIdentifier(ix.fieldsOf(i), t) {
			return string(ix.id(i))
		}
	}
	return ""
}

// matchesDates reports whether a target range [lo, hi] satisfies any value of a date clause.
func matchesDates(clause []dateValue, lo, hi int64) bool {
	return slices.ContainsFunc(clause, func(d dateValue) bool { return dateMatches(d.Prefix, d.Start, d.End, lo, hi) })
}

// matchesFields checks the clauses answered from the fields blob.
func (ix *patientIndex) matchesFields(i uint32, q *patientQuery) bool {
	f := ix.fieldsOf(i)
	for _, clause := range q.Identifiers {
		if !slices.ContainsFunc(clause, func(t tokenValue) bool { return ix.hasIdentifier(f, t) }) {
			return false
		}
	}
	for _, c := range q.Strings {
		if !slices.ContainsFunc(c.Values, func(v string) bool { return ix.matchesString(f, c.Param, c.Modifier, v) }) {
			return false
		}
	}
	for _, c := range q.Telecoms {
		if !slices.ContainsFunc(c.Values, func(v telecomValue) bool { return f.hasTelecom(c.Param, v) }) {
			return false
		}
	}
	for _, c := range q.References {
		if !slices.ContainsFunc(c.Values, func(v referenceValue) bool { return ix.hasReference(f, c, v, q.Base) }) {
			return false
		}
	}
	if len(q.DeathDates) > 0 {
		lo, hi, ok := f.death()
		for _, clause := range q.DeathDates {
			if !ok || !matchesDates(clause, lo, hi) {
				return false
			}
		}
	}
	return true
}

// has reports whether slot i has a value for the search parameter param (R4 :missing: "all the
// resources that don't have a value for the [...] parameter").
func (ix *patientIndex) has(i uint32, param string) bool {
	s, f := ix.slotAt(i), ix.fieldsOf(i)
	found := false
	switch param {
	case "_id", "_lastUpdated":
		return true // every stored version has both
	case "gender":
		return s.gender != 0
	case "birthdate":
		return s.dateLo <= s.dateHi
	case "active":
		return s.flags&(slotActiveTrue|slotActiveFalse) != 0
	case "death-date":
		_, _, ok := f.death()
		return ok
	case "identifier":
		f.eachIdentifier(func(uint32, []byte) { found = true })
	case "phone", "email", "telecom":
		f.eachTelecom(func(system byte, _ []byte) { found = found || telecomParamCovers(param, system) })
	case "general-practitioner", "organization":
		f.eachReference(func(p byte, _ []byte, _ uint32, _ []byte) { found = found || p == referenceParamByte(param) })
	default: // the string parameters
		ix.eachPart(f, param, func(byte, []byte, foldedView) bool { found = true; return false })
	}
	return found
}

// hasIdentifier reports whether any identifier in f matches the token t.
func (ix *patientIndex) hasIdentifier(f fieldsBlob, t tokenValue) bool {
	found := false
	f.eachIdentifier(func(sys uint32, value []byte) {
		found = found || ix.tokenMatches(t, sys, value)
	})
	return found
}

// tokenMatches reports whether an identifier (system number, value) matches the token t.
func (ix *patientIndex) tokenMatches(t tokenValue, sys uint32, value []byte) bool {
	return (t.AnySystem || ix.interned(sys) == t.System) && (t.Value == "" || string(value) == t.Value)
}

// hasReference reports whether a reference in f of c's parameter matches v: by identifier as a token
// under :identifier, else as a literal reference (see referenceMatches).
func (ix *patientIndex) hasReference(f fieldsBlob, c referenceClause, v referenceValue, base string) bool {
	found := false
	want := referenceParamByte(c.Param)
	f.eachReference(func(p byte, ref []byte, sys uint32, value []byte) {
		switch {
		case found || p != want:
		case c.Identifier:
			found = len(value) > 0 && ix.tokenMatches(v.Token, sys, value)
		default:
			found = len(ref) > 0 && referenceMatches(string(ref), c.Param, v, base)
		}
	})
	return found
}

// topK keeps the k first matches in the order of keys (then id): a heap whose top is the last of them,
// so a new match costs one comparison unless it displaces that one, and O(log k) if it does. Each
// entry's sort values are extracted once, into vals.
type topK struct {
	ix      *patientIndex
	keys    []sortKey
	k       int
	entries []sortEntry
	vals    []sortVal // len(keys) per entry, at entry.at
	scratch []sortVal
}

// sortEntry is one kept match: its slot and where its sort values start in topK.vals.
type sortEntry struct {
	slot uint32
	at   int
}

// sortVal is one sort value of a match: a folded string (family, given, _id) or a number (birthdate
// in days, _lastUpdated in ms); ok is false when the Patient has none.
type sortVal struct {
	s  foldedView
	n  int64
	ok bool
}

// add offers match i.
func (t *topK) add(i uint32) {
	t.scratch = t.ix.sortVals(i, t.keys, t.scratch[:0])
	if len(t.entries) < t.k {
		t.entries = append(t.entries, sortEntry{i, len(t.vals)})
		t.vals = append(t.vals, t.scratch...)
		heap.Push(t, nil) // the entry is already appended: this sifts it up
		return
	}
	top := t.entries[0]
	if t.compare(i, t.scratch, top.slot, t.valsOf(top)) >= 0 {
		return
	}
	copy(t.valsOf(top), t.scratch)
	t.entries[0].slot = i
	heap.Fix(t, 0)
}

// valsOf returns entry e's sort values.
func (t *topK) valsOf(e sortEntry) []sortVal { return t.vals[e.at : e.at+len(t.keys)] }

// sorted returns the kept matches from the offset-th on, in order.
func (t *topK) sorted(offset int) []uint32 {
	slices.SortFunc(t.entries, func(a, b sortEntry) int { return t.compare(a.slot, t.valsOf(a), b.slot, t.valsOf(b)) })
	var out []uint32
	for _, e := range t.entries[min(offset, len(t.entries)):] {
		out = append(out, e.slot)
	}
	return out
}

// compare orders two matches by the sort keys, then by id. A Patient without a value for a key comes
// after every Patient with one, whichever the direction (as HAPI sorts, NULLS LAST).
func (t *topK) compare(a uint32, av []sortVal, b uint32, bv []sortVal) int {
	for k, key := range t.keys {
		x, y := av[k], bv[k]
		if x.ok != y.ok {
			if x.ok {
				return -1
			}
			return 1
		}
		c := cmp.Compare(x.n, y.n)
		if key.Param != "birthdate" && key.Param != "_lastUpdated" {
			c = compareFolded(x.s, y.s)
		}
		if key.Desc {
			c = -c
		}
		if c != 0 {
			return c
		}
	}
	return t.ix.compareIDs(a, b)
}

// Len, Less, Swap, Push and Pop are heap.Interface, as a max-heap: the entry that sorts last is at the
// top. Push is empty because add appends the entry itself; nothing is ever popped.
func (t *topK) Len() int { return len(t.entries) }

// Less reports whether entry i sorts after entry j (see Len).
func (t *topK) Less(i, j int) bool {
	return t.compare(t.entries[i].slot, t.valsOf(t.entries[i]), t.entries[j].slot, t.valsOf(t.entries[j])) > 0
}

// Swap swaps two entries (see Len).
func (t *topK) Swap(i, j int) { t.entries[i], t.entries[j] = t.entries[j], t.entries[i] }

// Push does nothing (see Len).
func (t *topK) Push(any) {}

// Pop is never called (see Len).
func (t *topK) Pop() any { return nil }

// sortVals appends slot i's values for keys to dst. A repeating element sorts by the value that
// comes first in the requested direction (R4 search.html#sort): the lowest family ascending, the
// highest descending; a partial birthDate by the start of its range ascending and the end descending.
func (ix *patientIndex) sortVals(i uint32, keys []sortKey, dst []sortVal) []sortVal {
	s := ix.slotAt(i)
	for _, key := range keys {
		var v sortVal
		switch key.Param {
		case "_id":
			v = sortVal{s: foldedView{b: ix.id(i)}, ok: true}
		case "_lastUpdated":
			v = sortVal{n: s.lastUpdated, ok: true}
		case "birthdate":
			v = sortVal{n: int64(s.dateLo), ok: s.dateLo <= s.dateHi}
			if key.Desc {
				v.n = int64(s.dateHi)
			}
		default: // family, given
			ix.eachPart(ix.fieldsOf(i), key.Param, func(_ byte, _ []byte, folded foldedView) bool {
				if c := compareFolded(folded, v.s); !v.ok || c < 0 && !key.Desc || c > 0 && key.Desc {
					v = sortVal{s: folded, ok: true}
				}
				return true
			})
		}
		dst = append(dst, v)
	}
	return dst
}

// interned returns interned string n (0, or out of range in a damaged checkpoint, is "").
func (ix *patientIndex) interned(n uint32) string {
	if d := ix.dict.Load(); n > 0 && int(n) <= len(d.strs) {
		return d.strs[n-1]
	}
	return ""
}

// internedView returns interned string n as written and folded.
func (ix *patientIndex) internedView(n uint32) ([]byte, foldedView) {
	d := ix.dict.Load()
	if n == 0 || int(n) > len(d.bytes) { // only in a damaged checkpoint, which is then refused
		return nil, foldedView{}
	}
	b := d.bytes[n-1]
	if f := d.folded[n-1]; f != nil {
		return b, foldedView{b: f}
	}
	return b, foldedView{b: b, lower: true}
}

// intern returns the number of s (0 for ""), adding it if new.
func (ix *patientIndex) intern(s string) uint32 {
	n, _ := ix.internCapped(s, math.MaxInt)
	return n
}

// internCapped is intern, but adds s only while the dictionary has fewer than limit strings.
func (ix *patientIndex) internCapped(s string, limit int) (uint32, bool) {
	if s == "" {
		return 0, true
	}
	ix.dictMu.RLock()
	n, ok := ix.dictIdx[s]
	ix.dictMu.RUnlock()
	if ok {
		return n, true
	}
	ix.dictMu.Lock()
	defer ix.dictMu.Unlock()
	if n, ok := ix.dictIdx[s]; ok {
		return n, true
	}
	d := ix.dict.Load()
	if len(d.strs) >= limit {
		return 0, false
	}
	var folded []byte
	if f := foldString(s); !lowerEquals(s, f) {
		folded = []byte(f)
	}
	ix.dict.Store(&dictionary{append(d.strs, s), append(d.bytes, []byte(s)), append(d.folded, folded)})
	n = uint32(len(d.strs) + 1)
	ix.dictIdx[s] = n
	return n, true
}

// fieldsBlob is one Patient's search fields, encoded as five sections, each a uvarint byte length and
// then its entries (bytes values are uvarint length-prefixed):
//
//	identifiers  uvarint system number, bytes value (identifiers with neither are left out)
//	parts        kind byte, then uvarint a dict number when the kind has partInterned set, else
//	             bytes the part as written and, when the kind has partFolded set, bytes the part
//	             folded (see foldedView); name parts, then address parts
//	telecoms     system byte (1 + index in telecomSystems, 0 for none), bytes value normalised by
//	             telecomNorm (ContactPoints without a value are left out)
//	references   param byte ('g' generalPractitioner, 'o' managingOrganization), bytes reference,
//	             uvarint identifier system number, bytes identifier value
//	death        empty, or varints the start and end of deceasedDateTime's range (Unix ms)
type fieldsBlob []byte

// The blob's sections, in order.
const (
	blobIdentifiers = iota
	blobParts
	blobTelecoms
	blobReferences
	blobDeath
)

// The kinds of string parts, in the low bits of a part's kind byte: the name parts, then the address
// parts. partInterned marks a part that is a dict number rather than bytes; partFolded one whose
// folded form follows it.
const (
	partFamily = 1 + iota
	partGiven
	partPrefix
	partSuffix
	partNameText
	partLine
	partCity
	partDistrict
	partState
	partPostalCode
	partCountry
	partAddressText

	partInterned = 0x40
	partFolded   = 0x80
)

// telecomSystems are ContactPoint.system's codes, in the order the blob numbers them.
var telecomSystems = strings.Split(fhirContactPointSystems, "|")

// encodeFields encodes f.
func (ix *patientIndex) encodeFields(f patientSearchFields) fieldsBlob {
	var b, sec []byte
	next := func() {
		b = append(binary.AppendUvarint(b, uint64(len(sec))), sec...)
		sec = sec[:0]
	}
	for _, id := range f.Identifiers {
		if id.System != "" || id.Value != "" {
			sec = appendBytes(binary.AppendUvarint(sec, uint64(ix.intern(id.System))), id.Value)
		}
	}
	next()
	part := func(kind byte, s string) {
		if kind == partCity || kind == partDistrict || kind == partState || kind == partCountry {
			if n, ok := ix.internCapped(s, dictCap); ok {
				sec = binary.AppendUvarint(append(sec, kind|partInterned), uint64(n))
				return
			}
		}
		sec = appendPart(sec, kind, s)
	}
	eachNamePart(f.Names, part)
	eachAddressPart(f.Addresses, part)
	next()
	for _, t := range f.Telecoms {
		if t.Value != "" {
			sec = appendBytes(append(sec, byte(slices.Index(telecomSystems, t.System)+1)), telecomNorm(t.System, t.Value))
		}
	}
	next()
	for _, refs := range []struct {
		param byte
		refs  []patientReference
	}{{'g', f.GeneralPractitioners}, {'o', f.ManagingOrganization}} {
		param := refs.param
		for _, r := range refs.refs {
			if r.Reference != "" || r.Identifier.System != "" || r.Identifier.Value != "" {
				sec = appendBytes(append(sec, param), r.Reference)
				sec = appendBytes(binary.AppendUvarint(sec, uint64(ix.intern(r.Identifier.System))), r.Identifier.Value)
			}
		}
	}
	next()
	if lo, hi, ok := dateTimeRange(f.DeceasedDateTime); ok {
		sec = binary.AppendVarint(binary.AppendVarint(sec, lo), hi)
	}
	next()
	return b
}

// appendPart appends a string part of the given kind: as written, and folded only when folding does
// more than lower-case ASCII letters (most names and addresses need no second copy).
func appendPart(b []byte, kind byte, s string) []byte {
	folded := foldString(s)
	if lowerEquals(s, folded) {
		return appendBytes(append(b, kind), s)
	}
	return appendBytes(appendBytes(append(b, kind|partFolded), s), folded)
}

// lowerEquals reports whether s with its ASCII capitals lower-cased is folded.
func lowerEquals(s, folded string) bool {
	if len(s) != len(folded) {
		return false
	}
	for i := range len(s) {
		if lowerASCII(s[i]) != folded[i] {
			return false
		}
	}
	return true
}

// appendBytes appends s with a uvarint length prefix.
func appendBytes(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// eachNamePart calls fn with every non-empty family, given, prefix, suffix and text of names and its kind.
func eachNamePart(names []patientName, fn func(kind byte, s string)) {
	for _, n := range names {
		eachPartOf(fn, partFamily, n.Family)
		eachPartOf(fn, partNameText, n.Text)
		eachPartOf(fn, partGiven, n.Given...)
		eachPartOf(fn, partPrefix, n.Prefix...)
		eachPartOf(fn, partSuffix, n.Suffix...)
	}
}

// eachAddressPart calls fn with every non-empty string element of addresses and its kind.
func eachAddressPart(addresses []patientAddress, fn func(kind byte, s string)) {
	for _, a := range addresses {
		eachPartOf(fn, partLine, a.Line...)
		eachPartOf(fn, partCity, a.City)
		eachPartOf(fn, partDistrict, a.District)
		eachPartOf(fn, partState, a.State)
		eachPartOf(fn, partPostalCode, a.PostalCode)
		eachPartOf(fn, partCountry, a.Country)
		eachPartOf(fn, partAddressText, a.Text)
	}
}

// eachPartOf calls fn with kind and each of parts that is not empty.
func eachPartOf(fn func(kind byte, s string), kind byte, parts ...string) {
	for _, s := range parts {
		if s != "" {
			fn(kind, s)
		}
	}
}

// isNamePart reports whether a part kind belongs to a HumanName.
func isNamePart(kind byte) bool { return kind <= partNameText }

// partOf reports whether the string search parameter param searches parts of kind.
func partOf(param string, kind byte) bool {
	switch param {
	case "family":
		return kind == partFamily
	case "given":
		return kind == partGiven
	case "name":
		return isNamePart(kind)
	case "address":
		return !isNamePart(kind)
	case "address-postalcode":
		return kind == partPostalCode
	}
	return false
}

// telecomSystem returns the code of a telecom system number ("" for none, or out of range).
func telecomSystem(n byte) string {
	if n == 0 || int(n) > len(telecomSystems) {
		return ""
	}
	return telecomSystems[n-1]
}

// telecomParamCovers reports whether a telecom of the numbered system is searched by param: phone and
// email by their systems, telecom by every one (R4 SearchParameter individual-phone, -email, -telecom).
func telecomParamCovers(param string, system byte) bool {
	switch param {
	case "phone", "email":
		return telecomSystem(system) == param
	}
	return true
}

// referenceParamByte is the blob's param byte for a reference search parameter.
func referenceParamByte(param string) byte {
	if param == "organization" {
		return 'o'
	}
	return 'g'
}

// section returns section n of f. The readers never go out of bounds, even on a damaged blob (a
// checkpoint's blobs are linked before its checksum is checked); an empty blob reads as empty sections.
func (f fieldsBlob) section(n int) fieldsBlob {
	b := []byte(f)
	for i := 0; len(b) > 0; i++ {
		l, k := binary.Uvarint(b)
		if k <= 0 {
			return nil
		}
		l = min(l, uint64(len(b)-k))
		if i == n {
			return fieldsBlob(b[k : k+int(l)])
		}
		b = b[k+int(l):]
	}
	return nil
}

// eachIdentifier calls fn with every identifier's system number and value.
func (f fieldsBlob) eachIdentifier(fn func(system uint32, value []byte)) {
	for b := f.section(blobIdentifiers); len(b) > 0; {
		sys := b.uvarint()
		fn(uint32(sys), b.bytes())
	}
}

// eachPart calls fn with every string part param searches (every part when param is ""): its kind
// (flags cleared), as written and folded, until fn returns false. The other parts are skipped
// unread, and a name parameter stops at the first address part: names come first.
func (ix *patientIndex) eachPart(f fieldsBlob, param string, fn func(kind byte, exact []byte, folded foldedView) bool) {
	names := param == "family" || param == "given" || param == "name"
	for b := f.section(blobParts); len(b) > 0; {
		flags := b[0]
		kind := flags &^ (partInterned | partFolded)
		b = b[1:]
		if param != "" && !partOf(param, kind) {
			if names && !isNamePart(kind) {
				return
			}
			b.skipPart(flags)
			continue
		}
		var exact []byte
		var folded foldedView
		switch {
		case flags&partInterned != 0:
			exact, folded = ix.internedView(uint32(b.uvarint()))
		case flags&partFolded != 0:
			exact = b.bytes()
			folded = foldedView{b: b.bytes()}
		default:
			exact = b.bytes()
			folded = foldedView{b: exact, lower: true}
		}
		if !fn(kind, exact, folded) {
			return
		}
	}
}

// skipPart advances past the rest of a part with the given kind byte.
func (f *fieldsBlob) skipPart(flags byte) {
	if flags&partInterned != 0 {
		f.uvarint()
		return
	}
	f.bytes()
	if flags&partFolded != 0 {
		f.bytes()
	}
}

// eachTelecom calls fn with every telecom's system number and normalised value.
func (f fieldsBlob) eachTelecom(fn func(system byte, value []byte)) {
	for b := f.section(blobTelecoms); len(b) > 0; {
		sys := b[0]
		b = b[1:]
		fn(sys, b.bytes())
	}
}

// eachReference calls fn with every reference's param byte, literal reference, identifier system
// number and identifier value.
func (f fieldsBlob) eachReference(fn func(param byte, ref []byte, system uint32, value []byte)) {
	for b := f.section(blobReferences); len(b) > 0; {
		param := b[0]
		b = b[1:]
		ref := b.bytes()
		sys := b.uvarint()
		fn(param, ref, uint32(sys), b.bytes())
	}
}

// death returns deceasedDateTime's range; ok is false when there is none.
func (f fieldsBlob) death() (lo, hi int64, ok bool) {
	b := []byte(f.section(blobDeath))
	if len(b) == 0 {
		return 0, 0, false
	}
	lo, n := binary.Varint(b)
	hi, _ = binary.Varint(b[max(n, 0):])
	return lo, hi, true
}

// uvarint and bytes read from the front of *f, advancing it.
func (f *fieldsBlob) uvarint() uint64 {
	v, n := binary.Uvarint(*f)
	*f = (*f)[max(n, 0):]
	return v
}

func (f *fieldsBlob) bytes() []byte {
	n := int(min(f.uvarint(), uint64(len(*f))))
	s := (*f)[:n:n]
	*f = (*f)[n:]
	return s
}

// hasTelecom reports whether a telecom in f that param searches equals v, compared normalised by the
// telecom's own system.
func (f fieldsBlob) hasTelecom(param string, v telecomValue) bool {
	found := false
	f.eachTelecom(func(system byte, value []byte) {
		if found || !telecomParamCovers(param, system) {
			return
		}
		want := v.Other
		if phoneLike(telecomSystem(system)) {
			want = v.Phone
		}
		found = want != "" && string(value) == want
	})
	return found
}

// matchesString reports whether a part that param searches matches v under modifier: exact compares
// the parts as written; the others compare folded parts (postal codes also without whitespace, as
// v is), as a prefix by default and a substring for contains.
func (ix *patientIndex) matchesString(f fieldsBlob, param, modifier, v string) bool {
	strip := param == "address-postalcode"
	found := false
	var buf [256]byte
	ix.eachPart(f, param, func(_ byte, exact []byte, folded foldedView) bool {
		switch {
		case modifier == "exact":
			found = string(exact) == v
		case modifier == "contains" && !folded.lower && !strip:
			found = bytes.Contains(folded.b, []byte(v))
		case modifier == "contains":
			found = bytes.Contains(folded.appendTo(buf[:0], strip, -1), []byte(v))
		case strip:
			found = bytes.HasPrefix(folded.appendTo(buf[:0], true, len(v)), []byte(v))
		default:
			found = folded.hasPrefix(v)
		}
		return !found
	})
	return found
}

// foldedView is a string part folded (foldString): b itself, or when lower is set b with its ASCII
// capitals lower-cased, which is all folding does to ASCII. Views point into the arena: no copies.
type foldedView struct {
	b     []byte
	lower bool
}

// lowerASCII lower-cases an ASCII capital.
func lowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// at returns byte i of the folded form.
func (v foldedView) at(i int) byte {
	if v.lower {
		return lowerASCII(v.b[i])
	}
	return v.b[i]
}

// appendTo appends the folded form to dst, without ASCII whitespace when dropSpace is set, stopping
// once limit bytes are appended (no limit when negative).
func (v foldedView) appendTo(dst []byte, dropSpace bool, limit int) []byte {
	start := len(dst)
	for i := 0; i < len(v.b) && (limit < 0 || len(dst)-start < limit); i++ {
		c := v.at(i)
		if !dropSpace || c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			dst = append(dst, c)
		}
	}
	return dst
}

// hasPrefix reports whether the folded form starts with s.
func (v foldedView) hasPrefix(s string) bool {
	if len(v.b) < len(s) {
		return false
	}
	for i := range len(s) {
		if v.at(i) != s[i] {
			return false
		}
	}
	return true
}

// compareFolded compares two folded forms byte by byte.
func compareFolded(a, b foldedView) int {
	for i := range min(len(a.b), len(b.b)) {
		if c := cmp.Compare(a.at(i), b.at(i)); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(a.b), len(b.b))
}

// arenaChunk is the size of an arena chunk: bigger than any one fields blob (a body is at most 1 MiB).
const arenaChunk = 4 << 20

// arena is append-only byte storage in chunks that never move, addressed by 32-bit offsets.
type arena struct {
	chunks [][]byte
}

// add copies b into the arena and returns its offset.
func (a *arena) add(b []byte) uint32 {
	if n := len(a.chunks); n == 0 || len(a.chunks[n-1])+len(b) > arenaChunk {
		a.chunks = append(a.chunks, make([]byte, 0, max(arenaChunk, len(b))))
	}
	last := len(a.chunks) - 1
	off := uint32(last)*arenaChunk + uint32(len(a.chunks[last]))
	a.chunks[last] = append(a.chunks[last], b...)
	return off
}

// get returns the n bytes at off.
func (a *arena) get(off, n uint32) []byte {
	c := a.chunks[off/arenaChunk]
	p := off % arenaChunk
	return c[p : p+n : p+n]
}

// size is the arena's length in bytes, counting the free space of chunks but the last.
func (a *arena) size() int {
	if len(a.chunks) == 0 {
		return 0
	}
	return (len(a.chunks)-1)*arenaChunk + len(a.chunks[len(a.chunks)-1])
}

// postings maps 64-bit key hashes to the slots that have the key, each at most once. Most keys (ids,
// identifier values) belong to one slot, stored in the map itself; a key shared by several slots maps
// to listBit|n, the index of its list, kept sorted so that adding and removing find their place by
// binary search (new slots have the highest numbers, so most adds append). The map holds no
// pointers, so the collector does not scan it.
type postings struct {
	m     map[uint64]uint32
	lists [][]uint32
	free  []uint32 // list indexes to reuse
}

// listBit marks a postings value that indexes lists rather than naming a slot.
const listBit = 1 << 31

// add records that slot s has key k.
func (p *postings) add(k uint64, s uint32) {
	v, ok := p.m[k]
	switch {
	case !ok:
		p.m[k] = s
	case v&listBit == 0:
		if v != s {
			p.m[k] = listBit | p.newList(min(v, s), max(v, s))
		}
	default:
		l := p.lists[v&^listBit]
		if s > l[len(l)-1] { // the common case: new slots and a replay come in slot order
			p.lists[v&^listBit] = append(l, s)
		} else if i, found := slices.BinarySearch(l, s); !found {
			p.lists[v&^listBit] = slices.Insert(l, i, s)
		}
	}
}

// newList stores a list of slots and returns its index.
func (p *postings) newList(slots ...uint32) uint32 {
	if n := len(p.free); n > 0 {
		i := p.free[n-1]
		p.free, p.lists[i] = p.free[:n-1], slots
		return i
	}
	p.lists = append(p.lists, slots)
	return uint32(len(p.lists) - 1)
}

// remove records that slot s no longer has key k.
func (p *postings) remove(k uint64, s uint32) {
	v, ok := p.m[k]
	switch {
	case !ok:
	case v&listBit == 0:
		if v == s {
			delete(p.m, k)
		}
	default:
		i := v &^ listBit
		l := p.lists[i]
		if j, found := slices.BinarySearch(l, s); found {
			l = slices.Delete(l, j, j+1)
		}
		if len(l) > 1 {
			p.lists[i] = l
			return
		}
		p.m[k] = l[0]
		p.lists[i] = nil
		p.free = append(p.free, i)
	}
}

// encode appends the postings, for a checkpoint: the lists (a uvarint length, then the slots, the
// first as a uvarint and each next as its uvarint difference from the one before; a free list is
// empty), then every map entry as its key (8 bytes, little-endian) and its uvarint value. It also
// returns the counts decodePostings needs: map entries, lists and listed slots.
func (p *postings) encode(b []byte) (_ []byte, entries, lists, values int) {
	for _, l := range p.lists {
		b = binary.AppendUvarint(b, uint64(len(l)))
		prev := uint32(0)
		for _, s := range l {
			b = binary.AppendUvarint(b, uint64(s-prev))
			prev, values = s, values+1
		}
	}
	for k, v := range p.m {
		b = binary.AppendUvarint(binary.LittleEndian.AppendUint64(b, k), uint64(v))
	}
	return b, len(p.m), len(p.lists), values
}

// count returns how many slots have key k.
func (p *postings) count(k uint64) int {
	v, ok := p.m[k]
	switch {
	case !ok:
		return 0
	case v&listBit == 0:
		return 1
	}
	return len(p.lists[v&^listBit])
}

// get appends the slots with key k to out.
func (p *postings) get(k uint64, out []uint32) []uint32 {
	v, ok := p.m[k]
	switch {
	case !ok:
		return out
	case v&listBit == 0:
		return append(out, v)
	}
	return append(out, p.lists[v&^listBit]...)
}
