package main

// The in-memory Patient index the store (store.go) keeps: for every id, where its current version is in
// the journal, and the fields search reads. Bodies stay on disk and reads fetch them from there, so
// memory grows with the number of Patients, not with their size or history. The index is nearly free of
// pointers, so the collector has little to do whatever the store size:
//
//   - slots: one fixed-size record per id ever stored (deleted ones included), in chunks;
//   - ids and fields: byte arenas in 4 MiB chunks; a slot's search fields (its identifiers, and every
//     name part exactly and folded for case- and accent-insensitive matching) are one compact blob;
//   - postings: 64-bit hashes of ids, identifier values and the first nameKeyLen bytes of folded name
//     parts, each to the slots that have it, in a map without pointers (see postings);
//   - order: the live slots sorted by id, for scans and stable paging.
//
// A search takes its candidates from the most selective posting the query allows (_id, identifier, a
// name prefix) or scans order; every candidate is then checked against every clause, so postings (and
// their rare hash collisions) only ever narrow the work.

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
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
// body is here or in the arenas it points into.
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
	live           bool  // the current version is not a deletion
	listed         bool  // in order or pending
}

// genderCodes are Patient.gender's codes, in the order slot.gender numbers them.
var genderCodes = strings.Split(fhirGenderCodes, "|")

// slotsPerChunk is how many slots one chunk holds: chunks never move, so the slots never do.
const slotsPerChunk = 1 << 16

// patientIndex is the store's in-memory state. Safe for concurrent use: lookups and searches share the
// read lock; updates take the write lock only to apply what prepare worked out before.
type patientIndex struct {
	mu       sync.RWMutex
	seed     maphash.Seed
	slots    [][]slot // see slotAt
	n        uint32   // slots in use
	ids      arena
	fields   arena
	garbage  int // bytes of fields no live slot uses, freed by compact
	postings postings
	// order lists slots sorted by id for scans; it may still hold slots deleted since it was built
	// (scans skip them). pending holds slots listed since, unsorted, until flush merges them in.
	order, pending []uint32

	sysMu     sync.RWMutex // guards systems, which prepare fills outside mu
	systems   []string     // identifier systems, interned: a fields blob names them by number
	systemIdx map[string]uint32
}

// newPatientIndex returns an empty index.
func newPatientIndex() *patientIndex {
	return &patientIndex{seed: maphash.MakeSeed(), postings: postings{m: map[uint64]uint32{}}, systemIdx: map[string]uint32{}}
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

// key hashes a posting key: a kind byte ('i' id, 'v' identifier value, 'n' name prefix) and the value.
func (ix *patientIndex) key(kind byte, v string) uint64 {
	var h maphash.Hash
	h.SetSeed(ix.seed)
	h.WriteByte(kind)
	h.WriteString(v)
	return h.Sum64()
}

// keyOf is key for a value in the arenas.
func (ix *patientIndex) keyOf(kind byte, v []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(ix.seed)
	h.WriteByte(kind)
	h.Write(v)
	return h.Sum64()
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
	gender         uint8
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
		s.live, s.gender, s.dateLo, s.dateHi = !u.v.Deleted, u.gender, u.dateLo, u.dateHi
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
	i := ix.n
	if i%slotsPerChunk == 0 {
		ix.slots = append(ix.slots, make([]slot, slotsPerChunk))
	}
	ix.n++
	*ix.slotAt(i) = slot{idOff: ix.ids.add([]byte(id)), idLen: uint8(len(id))}
	ix.postings.add(ix.key('i', id), i)
	return i
}

// link adds live slot i to the postings of its identifier values and name prefixes; unlink removes it
// (and counts its fields as garbage).
func (ix *patientIndex) link(i uint32) {
	ix.eachKey(i, func(k uint64) { ix.postings.add(k, i) })
}

func (ix *patientIndex) unlink(i uint32) {
	ix.eachKey(i, func(k uint64) { ix.postings.remove(k, i) })
	ix.garbage += int(ix.slotAt(i).fieldsLen)
}

// eachKey calls fn with every posting key of slot i's fields (a key may come more than once; postings
// keep a slot once per key).
func (ix *patientIndex) eachKey(i uint32, fn func(uint64)) {
	f := ix.fieldsOf(i)
	f.eachIdentifier(func(_ uint32, value []byte) { fn(ix.keyOf('v', value)) })
	f.eachPart(func(_ byte, _, folded []byte) { fn(ix.keyOf('n', folded[:min(len(folded), nameKeyLen)])) })
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

// nameKey is the name posting key of the folded string s: its first nameKeyLen bytes.
func nameKey(s string) string {
	return s[:min(len(s), nameKeyLen)]
}

// indexHit is one search result: the Patient's id and where its current version is.
type indexHit struct {
	id  string
	loc recordLoc
}

// search returns the total number of matches and the page [q.Offset, q.Offset+q.Count) of them,
// ordered by id (byte order). Count 0 returns the total only.
func (ix *patientIndex) search(q patientQuery) (total int, page []indexHit) {
	src := sourceFor(&q)
	if src == sourceScan {
		ix.flush()
	}
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	visit := func(i uint32) {
		if !ix.slotAt(i).live || !ix.matches(i, &q) {
			return
		}
		if total >= q.Offset && total-q.Offset < q.Count {
			page = append(page, indexHit{id: string(ix.id(i)), loc: ix.slotAt(i).rec})
		}
		total++
	}
	if src == sourceScan {
		// A write may have slipped in between flush and RLock: visit its pending slots too, in order.
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
		return total, page
	}
	// Filter before sorting: a posting can hold thousands of candidates of which a handful match.
	candidates := ix.candidates(&q, src)
	matched := candidates[:0]
	for _, i := range candidates {
		if ix.slotAt(i).live && ix.matches(i, &q) {
			matched = append(matched, i)
		}
	}
	slices.SortFunc(matched, ix.compareIDs)
	for _, i := range slices.Compact(matched) { // a slot can come from two OR values
		visit(i)
	}
	return total, page
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
	if identifierClause(q) >= 0 {
		return sourceIdentifier
	}
	if nameClause(q) >= 0 {
		return sourceName
	}
	return sourceScan
}

// identifierClause returns the index of the first identifier clause whose values all name a value, or -1.
func identifierClause(q *patientQuery) int {
	return slices.IndexFunc(q.Identifiers, func(clause []tokenValue) bool {
		return !slices.ContainsFunc(clause, func(t tokenValue) bool { return t.Value == "" })
	})
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
func (ix *patientIndex) candidates(q *patientQuery, src querySource) []uint32 {
	var out []uint32
	switch src {
	case sourceID:
		for _, id := range q.IDs[0] {
			if i, ok := ix.slotOf(id); ok {
				out = append(out, i)
			}
		}
	case sourceIdentifier:
		for _, t := range q.Identifiers[identifierClause(q)] {
			out = ix.postings.get(ix.key('v', t.Value), out)
		}
	case sourceName:
		for _, v := range q.Strings[nameClause(q)].Values {
			out = ix.postings.get(ix.key('n', nameKey(foldString(v))), out)
		}
	}
	return out
}

// matches reports whether slot i satisfies every clause of q.
func (ix *patientIndex) matches(i uint32, q *patientQuery) bool {
	s, f := ix.slotAt(i), ix.fieldsOf(i)
	for _, clause := range q.IDs {
		if !slices.ContainsFunc(clause, func(id string) bool { return string(ix.id(i)) == id }) {
			return false
		}
	}
	for _, clause := range q.Identifiers {
		if !slices.ContainsFunc(clause, func(t tokenValue) bool { return ix.hasIdentifier(f, t) }) {
			return false
		}
	}
	for _, clause := range q.Genders {
		if s.gender == 0 || !slices.ContainsFunc(clause, func(code string) bool { return code == "" || code == genderCodes[s.gender-1] }) {
			return false
		}
	}
	for _, clause := range q.BirthDates {
		if s.dateLo > s.dateHi || !slices.ContainsFunc(clause, func(d dateValue) bool { return dateMatches(d.Prefix, d.Start, d.End, s.dateLo, s.dateHi) }) {
			return false
		}
	}
	for _, c := range q.Strings {
		if !slices.ContainsFunc(c.Values, func(v string) bool { return f.matchesString(c.Param, c.Modifier, v) }) {
			return false
		}
	}
	return true
}

// hasIdentifier reports whether any identifier in f matches the token t.
func (ix *patientIndex) hasIdentifier(f fieldsBlob, t tokenValue) bool {
	found := false
	f.eachIdentifier(func(sys uint32, value []byte) {
		found = found || (t.AnySystem || ix.system(sys) == t.System) && (t.Value == "" || string(value) == t.Value)
	})
	return found
}

// system returns interned system number n (0 is no system).
func (ix *patientIndex) system(n uint32) string {
	if n == 0 {
		return ""
	}
	ix.sysMu.RLock()
	defer ix.sysMu.RUnlock()
	return ix.systems[n-1]
}

// intern returns the number of system s (0 for ""), adding it if new.
func (ix *patientIndex) intern(s string) uint32 {
	if s == "" {
		return 0
	}
	ix.sysMu.RLock()
	n, ok := ix.systemIdx[s]
	ix.sysMu.RUnlock()
	if ok {
		return n
	}
	ix.sysMu.Lock()
	defer ix.sysMu.Unlock()
	if n, ok := ix.systemIdx[s]; ok {
		return n
	}
	ix.systems = append(ix.systems, s)
	ix.systemIdx[s] = uint32(len(ix.systems))
	return uint32(len(ix.systems))
}

// fieldsBlob is one Patient's search fields, encoded: a uvarint count of identifiers, each a uvarint
// system number and a length-prefixed value; then a uvarint count of name parts, each a kind byte
// (f family, g given, p prefix, s suffix, t text), the length-prefixed part as written and the
// length-prefixed part folded (empty when folding changes nothing).
type fieldsBlob []byte

// encodeFields encodes f.
func (ix *patientIndex) encodeFields(f patientSearchFields) fieldsBlob {
	b := binary.AppendUvarint(nil, uint64(len(f.Identifiers)))
	for _, id := range f.Identifiers {
		b = binary.AppendUvarint(b, uint64(ix.intern(id.System)))
		b = appendBytes(b, id.Value)
	}
	var parts int
	eachNamePart(f.Names, func(byte, string) { parts++ })
	b = binary.AppendUvarint(b, uint64(parts))
	eachNamePart(f.Names, func(kind byte, s string) {
		folded := foldString(s)
		if folded == s {
			folded = ""
		}
		b = appendBytes(appendBytes(append(b, kind), s), folded)
	})
	return b
}

// appendBytes appends s with a uvarint length prefix.
func appendBytes(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// eachNamePart calls fn with every non-empty family, given, prefix, suffix and text of names and its kind.
func eachNamePart(names []patientName, fn func(kind byte, s string)) {
	visit := func(kind byte, s string) {
		if s != "" {
			fn(kind, s)
		}
	}
	for _, n := range names {
		visit('f', n.Family)
		visit('t', n.Text)
		for _, p := range []struct {
			kind  byte
			parts []string
		}{{'g', n.Given}, {'p', n.Prefix}, {'s', n.Suffix}} {
			for _, s := range p.parts {
				visit(p.kind, s)
			}
		}
	}
}

// eachIdentifier calls fn with every identifier's system number and value.
func (f fieldsBlob) eachIdentifier(fn func(system uint32, value []byte)) {
	b := []byte(f)
	for n := f.uvarint(&b); n > 0; n-- {
		sys := f.uvarint(&b)
		fn(uint32(sys), f.bytes(&b))
	}
}

// eachPart calls fn with every name part's kind, the part as written and folded.
func (f fieldsBlob) eachPart(fn func(kind byte, exact, folded []byte)) {
	b := []byte(f)
	for n := f.uvarint(&b); n > 0; n-- { // skip the identifiers
		f.uvarint(&b)
		f.bytes(&b)
	}
	for n := f.uvarint(&b); n > 0; n-- {
		kind := b[0]
		b = b[1:]
		exact := f.bytes(&b)
		folded := f.bytes(&b)
		if len(folded) == 0 {
			folded = exact
		}
		fn(kind, exact, folded)
	}
}

// uvarint and bytes read from *b, advancing it (the blob is our own encoding, so it is well formed;
// an empty blob reads as no identifiers and no parts).
func (fieldsBlob) uvarint(b *[]byte) uint64 {
	v, n := binary.Uvarint(*b)
	*b = (*b)[max(n, 0):]
	return v
}

func (f fieldsBlob) bytes(b *[]byte) []byte {
	n := f.uvarint(b)
	s := (*b)[:n]
	*b = (*b)[n:]
	return s
}

// matchesString reports whether a name part that param searches (name: family, given, prefix, suffix
// and text) matches v under modifier: exact compares the parts as written; the others compare folded
// parts, as a prefix by default and a substring for contains.
func (f fieldsBlob) matchesString(param, modifier, v string) bool {
	found := false
	f.eachPart(func(kind byte, exact, folded []byte) {
		if found || param == "family" && kind != 'f' || param == "given" && kind != 'g' {
			return
		}
		switch modifier {
		case "exact":
			found = string(exact) == v
		case "contains":
			found = bytes.Contains(folded, []byte(v))
		default:
			found = bytes.HasPrefix(folded, []byte(v))
		}
	})
	return found
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
		if i, found := slices.BinarySearch(l, s); !found {
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
