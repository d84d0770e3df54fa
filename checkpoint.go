package main

// Checkpoints of the index: DATA_DIR/patients.index holds the whole in-memory index (index.go) as it
// was when the journal had a given size, so that opening decodes only the records after that point
// instead of every record (Bitcask's hint files do this for its keydir). It is written beside the
// journal atomically -- to a temporary file, fsynced, renamed over the old one, the directory
// fsynced -- by a goroutine, from a snapshot the committer takes between batches, every
// checkpointEvery bytes of journal and when the store closes. A checkpoint is only ever a shortcut:
// one that is missing, damaged (its checksum fails), from another format, or stale (the journal does
// not end its covered part with the record it names) is not used, and opening replays every record.
//
// Format: the magic "CAPIDX4\n", then uvarints (and zigzag varints where a value can be negative):
// the journal bytes covered; the last covered record's offset, length and payload checksum; the
// number of slots, of interned strings (identifier systems and shared address parts), of live slots
// in id order, of postings map entries, of posting lists and of the slots in them; the postings'
// SipHash key (16 bytes); the interned strings, each length-prefixed; every slot (record offset and
// length, lastUpdated, version, id, live, gender, flags, birthDate range, fields blob); the live
// slots in id order; the postings (postings.encode); and last the CRC-32C of all of it. The postings
// are saved rather than rebuilt: rebuilding them took most of a start at a million Patients.
// The magic changes whenever the slot or the fields blob (index.go) does, so that a checkpoint of
// another format is refused and the index rebuilt from the journal.

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
)

const (
	checkpointFileName     = "patients.index"
	checkpointMagic        = "CAPIDX4\n"
	defaultCheckpointEvery = 64 << 20
)

// errStaleCheckpoint says a checkpoint does not describe the journal beside it.
var errStaleCheckpoint = errors.New("the checkpoint does not match the journal")

// checkpointState is the committer's bookkeeping of checkpoints.
type checkpointState struct {
	every   int64         // journal bytes appended between checkpoints
	last    int64         // journal bytes the newest checkpoint (written or being written) covers
	due     bool          // a checkpoint should start at the next chance
	running chan struct{} // closed when the checkpoint being written is done; nil when none is
}

// indexSnapshot is a consistent copy of the index for a checkpoint: the slots are copied, and the
// arenas' chunks, which are only ever appended to, are shared as far as they were filled.
type indexSnapshot struct {
	slots      []slot
	ids        arena
	fields     arena
	dict       []string
	order      []uint32 // live slots in id order
	covered    int64
	last       recordLoc
	lastCRC    uint32
	compareIDs func(a, b uint32) int
	hashKey    sipKey
	postings   []byte // postings.encode's
	// entries, lists and values are postings.encode's counts.
	entries, lists, values int
}

// snapshot copies the index. It holds the read lock (scans' flush takes the write lock) for the
// copy only, which for the postings is their encoding (at a million Patients, 33 MB in 0.2 s);
// the sort by id is left to the checkpoint's own goroutine.
func (ix *patientIndex) snapshot() indexSnapshot {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	snap := indexSnapshot{slots: make([]slot, 0, ix.n), ids: ix.ids.view(), fields: ix.fields.view()}
	for c := 0; uint32(len(snap.slots)) < ix.n; c++ {
		snap.slots = append(snap.slots, ix.slots[c][:min(slotsPerChunk, int(ix.n)-len(snap.slots))]...)
	}
	snap.order = slices.Concat(ix.order, ix.pending)
	snap.dict = ix.dict.Load().strs
	snap.hashKey = ix.hashKey
	snap.postings, snap.entries, snap.lists, snap.values = ix.postings.encode(nil)
	snap.compareIDs = func(a, b uint32) int {
		return bytes.Compare(snap.ids.get(snap.slots[a].idOff, uint32(snap.slots[a].idLen)), snap.ids.get(snap.slots[b].idOff, uint32(snap.slots[b].idLen)))
	}
	return snap
}

// view is a copy of the arena that shares its chunks as far as they are filled now.
func (a *arena) view() arena {
	return arena{chunks: slices.Clone(a.chunks)}
}

// startCheckpoint starts writing a checkpoint if one is due and none is being written; the committer
// calls it between batches, so the snapshot is of a quiet index.
func (s *journalStore) startCheckpoint() {
	if s.cp.running != nil {
		select {
		case <-s.cp.running:
			s.cp.running = nil
		default:
			return
		}
	}
	if !s.cp.due {
		return
	}
	snap := s.ix.snapshot()
	snap.covered, snap.last, snap.lastCRC = s.size, s.last, s.lastCRC
	done := make(chan struct{})
	s.cp.running, s.cp.due, s.cp.last = done, false, s.size
	go func() {
		defer close(done)
		s.writeCheckpoint(snap)
	}()
}

// finishCheckpoint waits for a checkpoint being written; with final (on Close, the committer stopped)
// it then writes one if the journal has grown since the newest.
func (s *journalStore) finishCheckpoint(final bool) {
	if s.cp.running != nil {
		<-s.cp.running
		s.cp.running = nil
	}
	if final && s.size > s.cp.last {
		snap := s.ix.snapshot()
		snap.covered, snap.last, snap.lastCRC = s.size, s.last, s.lastCRC
		s.writeCheckpoint(snap)
	}
}

// writeCheckpoint writes snap as the checkpoint, atomically. A failure (a full disk, say) costs only
// a longer start: it is logged, and the previous checkpoint, if any, stays.
func (s *journalStore) writeCheckpoint(snap indexSnapshot) {
	start := time.Now()
	path := filepath.Join(s.dir, checkpointFileName)
	err := writeFileAtomic(path, s.sync, func(w io.Writer) error { return encodeSnapshot(w, snap) })
	if err != nil {
		s.log.Warn("patient index checkpoint not written; the next start replays more of the journal", "file", path, "err", err)
		return
	}
	s.log.Info("patient index checkpoint written", "file", path, "covers_bytes", snap.covered, "patients", len(snap.slots),
		"took", time.Since(start).Round(time.Millisecond).String())
}

// writeFileAtomic writes path through write: to path.tmp, fsynced, renamed over path, the directory
// fsynced. On failure path is as it was and the temporary file is gone.
func writeFileAtomic(path string, sync func(*os.File) error, write func(io.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // a no-op once renamed
	w := bufio.NewWriterSize(f, 1<<20)
	err = write(w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	return err
}

// encodeSnapshot writes snap in the checkpoint format.
func encodeSnapshot(w io.Writer, snap indexSnapshot) error {
	live := slices.DeleteFunc(snap.order, func(i uint32) bool { return !snap.slots[i].live })
	slices.SortFunc(live, snap.compareIDs)
	live = slices.Compact(live)
	crc := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 64<<10)
	var b []byte
	put := func(vs ...uint64) {
		for _, v := range vs {
			b = binary.AppendUvarint(b, v)
		}
	}
	flush := func() {
		bw.Write(b)
		b = b[:0]
	}
	b = append(b, checkpointMagic...)
	put(uint64(snap.covered), uint64(snap.last.off), uint64(snap.last.n), uint64(snap.lastCRC), uint64(len(snap.slots)), uint64(len(snap.dict)), uint64(len(live)),
		uint64(snap.entries), uint64(snap.lists), uint64(snap.values))
	b = binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(b, snap.hashKey[0]), snap.hashKey[1])
	for _, sys := range snap.dict {
		b = appendBytes(b, sys)
	}
	for _, sl := range snap.slots {
		b = binary.AppendVarint(b, sl.rec.off)
		put(uint64(sl.rec.n))
		b = binary.AppendVarint(b, sl.lastUpdated)
		put(uint64(sl.version))
		b = appendBytes(b, string(snap.ids.get(sl.idOff, uint32(sl.idLen))))
		b = append(b, boolByte(sl.live), sl.gender, sl.flags)
		b = binary.AppendVarint(binary.AppendVarint(b, int64(sl.dateLo)), int64(sl.dateHi))
		b = appendBytes(b, string(snap.fields.get(sl.fieldsOff, sl.fieldsLen)))
		if len(b) > 32<<10 {
			flush()
		}
	}
	for _, i := range live {
		put(uint64(i))
	}
	flush()
	bw.Write(snap.postings)
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(binary.LittleEndian.AppendUint32(nil, crc.Sum32()))
	return err
}

// boolByte is 1 for true.
func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// loadCheckpoint reads the checkpoint into a new index and checks that the journal ends its covered
// part with the record the checkpoint names; it returns the index and the journal bytes covered, or
// nil and why the checkpoint is not used.
func (s *journalStore) loadCheckpoint() (*patientIndex, int64, string) {
	path := filepath.Join(s.dir, checkpointFileName)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, "no checkpoint"
	} else if err != nil {
		return nil, 0, "checkpoint unreadable: " + err.Error()
	}
	defer f.Close()
	ix, covered, last, lastCRC, err := decodeCheckpoint(f)
	if err != nil {
		return nil, 0, fmt.Sprintf("checkpoint %s not used: %v", path, err)
	}
	if covered > 0 {
		var hdr [recordHeaderSize]byte
		if _, err := s.f.ReadAt(hdr[:], last.off); err != nil || last.off+int64(last.n) != covered ||
			recordHeaderSize+binary.LittleEndian.Uint32(hdr[0:4]) != last.n || binary.LittleEndian.Uint32(hdr[4:8]) != lastCRC {
			return nil, 0, fmt.Sprintf("checkpoint %s not used: %v: its last record is not at byte offset %d", path, errStaleCheckpoint, last.off)
		}
	}
	s.last, s.lastCRC = last, lastCRC
	return ix, covered, ""
}

// decodeCheckpoint reads a checkpoint written by encodeSnapshot and builds the index from it.
func decodeCheckpoint(f *os.File) (ix *patientIndex, covered int64, last recordLoc, lastCRC uint32, err error) {
	info, err := f.Stat()
	if err != nil || info.Size() < int64(len(checkpointMagic))+4 {
		return nil, 0, last, 0, errors.New("too short")
	}
	crc := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	r := &checkpointReader{br: bufio.NewReaderSize(io.TeeReader(io.LimitReader(f, info.Size()-4), crc), 1<<20), size: uint64(info.Size())}
	if string(r.bytes(uint64(len(checkpointMagic)))) != checkpointMagic {
		return nil, 0, last, 0, errors.New("not a checkpoint of this format")
	}
	covered, last.off, last.n, lastCRC = int64(r.uvarint()), int64(r.uvarint()), uint32(r.uvarint()), uint32(r.uvarint())
	nSlots, nSystems, nLive := r.uvarint(), r.uvarint(), r.uvarint()
	nEntries, nLists, nValues := r.uvarint(), r.uvarint(), r.uvarint()
	ix = newPatientIndex()
	key := r.bytes(16)
	if r.err == nil {
		ix.hashKey = sipKey{binary.LittleEndian.Uint64(key[:8]), binary.LittleEndian.Uint64(key[8:])}
	}
	for range min(nSystems, 1<<20) {
		ix.intern(string(r.bytes(r.uvarint())))
	}
	for i := uint64(0); i < nSlots && r.err == nil; i++ {
		r.slot(ix)
	}
	ix.order = make([]uint32, 0, min(nLive, nSlots))
	for range min(nLive, nSlots) {
		if s := r.uvarint(); s < uint64(ix.n) {
			ix.order = append(ix.order, uint32(s))
		}
	}
	r.postings(ix, nEntries, nLists, nValues)
	var sum [4]byte
	if r.err == nil {
		_, r.err = io.ReadFull(f, sum[:])
	}
	switch {
	case r.err != nil:
		return nil, 0, last, 0, fmt.Errorf("damaged: %w", r.err)
	case binary.LittleEndian.Uint32(sum[:]) != crc.Sum32():
		return nil, 0, last, 0, errors.New("damaged: checksum mismatch")
	case uint64(ix.n) != nSlots || uint64(len(ix.order)) != nLive || uint64(len(ix.dict.Load().strs)) != nSystems:
		return nil, 0, last, 0, errors.New("damaged: counts do not match")
	}
	return ix, covered, last, lastCRC, nil
}

// checkpointReader decodes a checkpoint, keeping the first error.
type checkpointReader struct {
	br   *bufio.Reader
	buf  []byte // what bytes last returned
	err  error
	size uint64 // of the file, which bounds every count in it
}

func (r *checkpointReader) uvarint() uint64 {
	v, err := binary.ReadUvarint(r.br)
	r.err = cmp.Or(r.err, err)
	return v
}

func (r *checkpointReader) varint() int64 {
	v, err := binary.ReadVarint(r.br)
	r.err = cmp.Or(r.err, err)
	return v
}

// bytes reads n bytes (at most one arena chunk, the most any field can be), valid until the next call.
func (r *checkpointReader) bytes(n uint64) []byte {
	if r.err != nil || n > arenaChunk {
		r.err = cmp.Or(r.err, errors.New("length out of range"))
		return nil
	}
	if uint64(cap(r.buf)) < n {
		r.buf = make([]byte, n)
	}
	r.buf = r.buf[:n]
	_, err := io.ReadFull(r.br, r.buf)
	r.err = cmp.Or(r.err, err)
	return r.buf
}

// slot reads one slot into ix, with its postings.
func (r *checkpointReader) slot(ix *patientIndex) {
	rec := recordLoc{r.varint(), uint32(r.uvarint())}
	lastUpdated, version := r.varint(), uint32(r.uvarint())
	id := string(r.bytes(r.uvarint()))
	flags := [3]byte(append(r.bytes(3), 0, 0, 0))
	dateLo, dateHi := int32(r.varint()), int32(r.varint())
	fields := r.bytes(r.uvarint())
	if r.err != nil || len(id) == 0 || len(id) > maxPatientIDLength {
		r.err = cmp.Or(r.err, errors.New("bad slot"))
		return
	}
	s := ix.slotAt(ix.appendSlot(id))
	s.rec, s.lastUpdated, s.version, s.live, s.gender, s.flags = rec, lastUpdated, version, flags[0] == 1, flags[1], flags[2]
	s.dateLo, s.dateHi = dateLo, dateHi
	if s.live {
		s.fieldsOff, s.fieldsLen, s.listed = ix.fields.add(fields), uint32(len(fields)), true
	}
}

// postings reads the postings into ix (after its slots): nLists lists holding nValues slots, into
// one array, each list capped at its length so that growing it copies it; then nEntries map
// entries. A slot number, list index or order that cannot be right is an error: nothing read
// before the checksum is checked may make the index unsafe to use.
func (r *checkpointReader) postings(ix *patientIndex, nEntries, nLists, nValues uint64) {
	if nLists > r.size || nValues > r.size || nEntries > r.size/9 { // each takes at least 1 (an entry 9) bytes
		r.err = cmp.Or(r.err, errors.New("postings counts out of range"))
		return
	}
	p := &ix.postings
	flat := make([]uint32, 0, nValues)
	p.lists = make([][]uint32, 0, nLists)
	for i := uint64(0); i < nLists && r.err == nil; i++ {
		start := len(flat)
		for n, prev := r.uvarint(), uint64(0); n > 0 && r.err == nil; n-- {
			d := r.uvarint()
			if (d == 0 && len(flat) > start) || prev+d >= uint64(ix.n) || len(flat) == cap(flat) {
				r.err = cmp.Or(r.err, errors.New("bad posting list"))
			}
			prev += d
			flat = append(flat, uint32(prev))
		}
		p.lists = append(p.lists, flat[start:len(flat):len(flat)])
		if len(flat) == start {
			p.lists[len(p.lists)-1] = nil
			p.free = append(p.free, uint32(i))
		}
	}
	p.m = make(map[uint64]uint32, nEntries)
	for range nEntries {
		if r.err != nil {
			return
		}
		b := r.bytes(8)
		v := r.uvarint()
		if r.err != nil {
			return
		}
		k := binary.LittleEndian.Uint64(b)
		if v&listBit == 0 && v >= uint64(ix.n) || v&listBit != 0 && (v&^listBit >= uint64(len(p.lists)) || len(p.lists[v&^listBit]) < 2) {
			r.err = cmp.Or(r.err, errors.New("bad posting"))
			return
		}
		p.m[k] = uint32(v)
	}
}
