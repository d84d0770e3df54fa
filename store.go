package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Journal format: DATA_DIR/patients.journal is the only file; it is appended to and never
// rewritten, except that opening cuts off a torn final record. It is a sequence of records:
//
//	offset  size  field
//	0       4     payload length n, uint32 little-endian, 1 <= n <= maxRecordPayload
//	4       4     CRC-32C (Castagnoli) of the payload
//	8       4     CRC-32C of bytes 0..7 (the header check)
//	12      n     payload
//
// The header has its own checksum so that a damaged length is reported as corruption instead of
// being mistaken for a crash-torn record: a flipped high bit in a middle record's length points
// past EOF, exactly like a torn tail, and opening would silently cut off every later record.
//
// The payload is one version of one Patient:
//
//	1 byte   record kind: 1 = patient version (anything else is refused)
//	uvarint  version: 1, 2, ... per id, in file order
//	varint   lastUpdated in Unix milliseconds
//	1 byte   flags: bit 0 = deleted; the other bits must be 0
//	uvarint  length of the id (1..64), then the id bytes
//	rest     the resource JSON exactly as served; empty for a deleted version
//
// Binary rather than JSON so that bodies are stored and replayed byte for byte (json.Marshal
// compacts and HTML-escapes a json.RawMessage) and replay does not rescan every body;
// `strings patients.journal` still shows the resources.
//
// Opening replays the whole file. Only the last record can be incomplete: a crash mid-append
// leaves a prefix of it or, on file systems that extend the size before the data lands, zeros.
// So it is a torn tail, cut off with a warning, when there are fewer than 12 bytes left, when a
// valid header's payload runs past EOF, when everything from the record start to EOF is zero, or
// when the last record fails its payload checksum and has a zeroed sector (see hasZeroedSector).
// Anything else -- a header or payload checksum mismatch, a length over the cap (the header check
// passed, so it was really written, and this writer never does that), an undecodable payload, a
// version out of sequence -- is corruption wherever it is, the last record included, and opening
// fails naming the file and byte offset: serving a silently shortened history is worse than not
// starting.
const (
	journalFileName    = "patients.journal"
	recordHeaderSize   = 12
	maxRecordPayload   = 2 << 20
	recordKindPatient  = 1
	recordFlagDeleted  = 1
	maxPatientIDLength = 64      // FHIR id: [A-Za-z0-9\-\.]{1,64}
	maxBatchBytes      = 4 << 20 // bounds the committer's buffer; one fsync per 4 MiB costs nothing
)

// journalStore must satisfy the interface the handlers are written against.
var _ patientStore = (*journalStore)(nil)

// patientVersion is one stored version of a Patient resource.
// Body is shared with the store (and with every other reader): read it, never modify it.
type patientVersion struct {
	ID          string
	Version     int
	LastUpdated time.Time // UTC, truncated to milliseconds (FHIR instant)
	Deleted     bool
	Body        []byte // resource JSON as served; nil for a deleted version
}

// buildFunc makes the resource JSON for a new version; the store calls it with the version number
// and time it assigns, while holding that id's write slot, so the body's meta matches the record.
// An error aborts the write (nothing is written) and is returned unchanged.
type buildFunc func(version int, lastUpdated time.Time) ([]byte, error)

// patientStore is what the handlers need; a fork can back it with PostgreSQL or an upstream FHIR
// server. Every successful write is durable before it returns, and visible to reads only then.
type patientStore interface {
	// Create records version 1 of a new id; errExists if the id has any history (even deleted).
	Create(ctx context.Context, id string, build buildFunc) (patientVersion, error)
	// Update records the next version. ifMatch 0 is unconditional; otherwise it must equal the
	// current version (a deleted one included) or the result is errVersionConflict, as it is for
	// an unknown id. An unknown id gets version 1. created reports that the id had no current
	// representation (unknown or deleted), which is when HTTP PUT answers 201 (RFC 9110 9.3.4).
	Update(ctx context.Context, id string, ifMatch int, build buildFunc) (v patientVersion, created bool, err error)
	// Delete records a deleted version. For an unknown id it records nothing and returns the
	// zero value; for a deleted one it records nothing and returns the current version; existed
	// is false in both cases.
	Delete(ctx context.Context, id string) (v patientVersion, existed bool, err error)
	// Read returns the current version, which may be Deleted; errNotFound if the id never existed.
	Read(ctx context.Context, id string) (patientVersion, error)
	// VRead returns one version; errNotFound if the id or version does not exist.
	VRead(ctx context.Context, id string, version int) (patientVersion, error)
	// History returns every version, newest first; errNotFound if the id never existed.
	History(ctx context.Context, id string) ([]patientVersion, error)
	// Each calls fn with the current version of every non-deleted patient, in no particular
	// order, until fn returns false; it returns ctx.Err() if ctx ends first. It sees a snapshot
	// taken when it starts and holds no lock while calling fn.
	Each(ctx context.Context, fn func(patientVersion) bool) error
	// Search returns how many current Patients match q and the page [q.Offset, q.Offset+q.Count) of
	// them, in a stable order (search.go defines the query and its semantics).
	Search(ctx context.Context, q patientQuery) (total int, page []patientVersion, err error)
	// Ready reports whether writes can succeed (the store is open and has not failed).
	Ready() bool
	Close() error
}

// Sentinel errors the handlers map to HTTP statuses (404/410, 409, 412); errStoreClosed and any
// other error is a 5xx.
var (
	errNotFound        = errors.New("patient not found")
	errExists          = errors.New("patient already exists")
	errVersionConflict = errors.New("patient version conflict")
	errStoreClosed     = errors.New("patient store closed")
)

// corruptJournalError says which record of which file failed to replay, so an operator can look
// at (or cut) the file; the service refuses to start on it rather than serve partial data.
type corruptJournalError struct {
	Path   string
	Offset int64
	Reason string
}

// Error names the file and byte offset of the bad record.
func (e *corruptJournalError) Error() string {
	return fmt.Sprintf("patient journal %s: corrupt record at byte offset %d: %s", e.Path, e.Offset, e.Reason)
}

// journalOptions are openJournal's knobs beyond openJournalStore's; tests and the search index use them.
type journalOptions struct {
	// FsyncPerWrite gives every write its own fsync instead of sharing one per batch; it exists
	// so a benchmark can measure what group commit buys.
	FsyncPerWrite bool
	// OnCommit, if set, is called with every new version after it is durable and visible to
	// reads and before its writer is released, one call at a time in commit order, so an index
	// can follow the store. It must be quick and must not write to the store (that deadlocks).
	// Replay does not call it: build the initial index with Each before serving.
	OnCommit func(patientVersion)
	// Sync makes a file durable; nil means (*os.File).Sync. Tests inject slow or failing ones.
	Sync func(*os.File) error
}

// storedVersion is the in-memory form of one version: the id and version number are implied by
// the map key and slice index, so each version costs 40 bytes plus its body.
type storedVersion struct {
	lastUpdated int64 // Unix milliseconds
	deleted     bool
	body        []byte
}

// commitReq is one record on its way to disk; done receives the result of the fsync covering it.
type commitReq struct {
	id      string
	version int
	stored  storedVersion
	rec     []byte
	done    chan error
}

// idSlot serialises writers of one id from reading the current version until their new version
// is visible, so version numbers cannot be handed out twice. refs lets the slot map forget idle ids.
type idSlot struct {
	sem  chan struct{}
	refs int
}

// journalStore is the patientStore kept in memory and made durable in an append-only journal.
// Reads take mu for reading only and never wait for disk; one committer goroutine owns the file,
// writes each batch of records with one write and one fsync, and only then, briefly under mu,
// makes the batch visible.
type journalStore struct {
	path     string
	log      *slog.Logger
	now      func() time.Time
	sync     func(*os.File) error
	onCommit func(patientVersion)
	perWrite bool
	f        *os.File

	mu      sync.RWMutex
	byID    map[string][]storedVersion // index i holds version i+1
	failErr error                      // set once a write or fsync fails; writes stop for good
	closed  bool

	slotsMu sync.Mutex
	slots   map[string]*idSlot

	reqs      chan *commitReq // unbuffered: writers waiting to send are the queue
	stop      chan struct{}
	done      chan struct{} // closed when the committer has exited
	closeOnce sync.Once
	closeErr  error

	// Owned by the committer goroutine after open.
	buf  []byte
	size int64

	index *patientIndex // set by openJournalStore; nil for a bare openJournal

	fsyncs histogram // how long each fsync took, for the metrics (Stats, metrics.go)
}

// openJournalStore opens (creating if needed) the patient journal in dir and replays it. With
// fsyncPerWrite every write gets its own fsync; otherwise concurrent writes share one. Only one
// process may use dir at a time: nothing locks it, and two writers would interleave records.
// Its search index is built from the replayed patients and kept current by every commit.
func openJournalStore(dir string, log *slog.Logger, now func() time.Time, fsyncPerWrite bool) (*journalStore, error) {
	ix := newPatientIndex()
	s, err := openJournal(dir, log, now, journalOptions{FsyncPerWrite: fsyncPerWrite, OnCommit: ix.update})
	if err != nil {
		return nil, err
	}
	start := time.Now()
	s.Each(context.Background(), func(v patientVersion) bool { ix.update(v); return true })
	s.index = ix
	if log != nil {
		log.Info("patient search index built", "took", time.Since(start).String())
	}
	return s, nil
}

// Search runs q against the index and reads the page's current versions; a patient deleted between
// the two is left out of the page.
func (s *journalStore) Search(ctx context.Context, q patientQuery) (total int, page []patientVersion, err error) {
	if s.index == nil {
		return 0, nil, errors.New("search: store opened without an index")
	}
	total, ids := s.index.search(q)
	page = make([]patientVersion, 0, len(ids))
	for _, id := range ids {
		v, err := s.Read(ctx, id)
		if err != nil || v.Deleted {
			continue
		}
		page = append(page, v)
	}
	return total, page, nil
}

// openJournal is openJournalStore with every option; a corrupt journal gives a *corruptJournalError.
func openJournal(dir string, log *slog.Logger, now func() time.Time, opts journalOptions) (*journalStore, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	if opts.Sync == nil {
		opts.Sync = (*os.File).Sync
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open patient store: %w", err)
	}
	path := filepath.Join(dir, journalFileName)
	f, err := openJournalFile(path)
	if err != nil {
		return nil, fmt.Errorf("open patient store: %w", err)
	}
	s := &journalStore{
		path:     path,
		log:      log,
		now:      now,
		sync:     opts.Sync,
		onCommit: opts.OnCommit,
		perWrite: opts.FsyncPerWrite,
		f:        f,
		byID:     make(map[string][]storedVersion),
		slots:    make(map[string]*idSlot),
		reqs:     make(chan *commitReq),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	start := time.Now()
	if err := s.replay(); err != nil {
		f.Close()
		var corrupt *corruptJournalError
		if errors.As(err, &corrupt) {
			return nil, err
		}
		return nil, fmt.Errorf("open patient store: %w", err)
	}
	log.Info("patient journal open", "file", path, "bytes", s.size, "patients", len(s.byID),
		"took", time.Since(start).Round(time.Millisecond).String())
	go s.commitLoop()
	return s, nil
}

// openJournalFile opens the journal for appending, creating it if needed; a new file's directory
// entry is fsynced too, or a crash could lose the file along with records already acknowledged.
func openJournalFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0o600)
	}
	if err != nil {
		return nil, err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// syncDir makes a directory's entries (a newly created file) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// replay reads the whole journal into memory and rebuilds byID, cutting off a torn tail (see the
// format comment). Bodies are slices of the one buffer the file is read into, which the store
// keeps anyway, so replay allocates almost nothing per record.
func (s *journalStore) replay() error {
	info, err := s.f.Stat()
	if err != nil {
		return err
	}
	size := info.Size()
	data := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(s.f, 0, size), data); err != nil {
		return fmt.Errorf("read %s: %w", s.path, err)
	}
	var off int64
	torn := false
	for off < size {
		payload, n, reason := nextRecord(data, off)
		if torn = n == 0 && reason == ""; torn {
			break
		}
		if reason != "" {
			return s.corrupt(off, reason)
		}
		id, version, sv, err := decodePayload(payload)
		if err != nil {
			return s.corrupt(off, "undecodable payload: "+err.Error())
		}
		hist := s.byID[id]
		if version != len(hist)+1 {
			return s.corrupt(off, fmt.Sprintf("version %d of patient %q follows version %d", version, id, len(hist)))
		}
		s.byID[id] = append(hist, sv)
		off += n
	}
	if torn {
		s.log.Warn("patient journal: cutting off torn final record left by a crash",
			"file", s.path, "offset", off, "bytes", size-off)
		if err := s.f.Truncate(off); err != nil {
			return fmt.Errorf("truncate torn tail of %s: %w", s.path, err)
		}
		if err := s.sync(s.f); err != nil {
			return fmt.Errorf("fsync %s: %w", s.path, err)
		}
	}
	s.size = off
	return nil
}

// nextRecord checks the framing of the record at data[off:] (see the format comment) and returns its
// payload and length. A torn tail gives n 0 and no reason; corruption gives the reason.
func nextRecord(data []byte, off int64) (payload []byte, n int64, reason string) {
	rest := data[off:]
	if len(rest) < recordHeaderSize {
		return nil, 0, ""
	}
	length := binary.LittleEndian.Uint32(rest[0:4])
	if crc32c(rest[0:8]) != binary.LittleEndian.Uint32(rest[8:12]) {
		if allZeroBytes(rest) {
			return nil, 0, ""
		}
		return nil, 0, "header checksum mismatch"
	}
	if length == 0 || length > maxRecordPayload {
		return nil, 0, fmt.Sprintf("payload length %d outside 1..%d", length, maxRecordPayload)
	}
	end := recordHeaderSize + int64(length)
	if int64(len(rest)) < end {
		return nil, 0, ""
	}
	payload = rest[recordHeaderSize:end]
	if crc32c(payload) != binary.LittleEndian.Uint32(rest[4:8]) {
		if (int64(len(rest)) == end || allZeroBytes(rest[end:])) && hasZeroedSector(data, off, off+end) {
			return nil, 0, ""
		}
		return nil, 0, "payload checksum mismatch"
	}
	return payload, end, ""
}

// corrupt makes the error for a bad record at off.
func (s *journalStore) corrupt(off int64, reason string) error {
	return &corruptJournalError{Path: s.path, Offset: off, Reason: reason}
}

// crc32c is the record checksum: CRC-32C, which CPUs compute in hardware.
func crc32c(p []byte) uint32 {
	return crc32.Checksum(p, crc32.MakeTable(crc32.Castagnoli)) // MakeTable caches Castagnoli's table
}

// allZeroBytes reports whether p holds only zero bytes (space a crash left allocated but unwritten).
func allZeroBytes(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// hasZeroedSector reports whether the record at data[start:end] has an all-zero 512-byte sector
// (aligned to the file), or an all-zero run from a sector boundary to EOF: what a crash leaves
// where the file grew but the data never reached the disk (etcd's WAL decoder, isTornEntry, uses
// the same test). A bit flip cannot produce one, and a valid record never contains one: zero bytes
// occur only in its header and binary prefix, which are far shorter than a sector, and it ends
// in the id or the JSON body, neither of which holds a zero byte.
func hasZeroedSector(data []byte, start, end int64) bool {
	const sector = 512
	for a := (start + sector - 1) / sector * sector; a < end; a += sector {
		b := min(a+sector, end)
		if (b-a == sector || b == int64(len(data))) && allZeroBytes(data[a:b]) {
			return true
		}
	}
	return false
}

// encodeRecord frames one version as a journal record and returns it with the offset of the body
// within it.
func encodeRecord(id string, version int, lastUpdated int64, deleted bool, body []byte) ([]byte, int, error) {
	rec := make([]byte, recordHeaderSize, recordHeaderSize+1+3*binary.MaxVarintLen64+1+len(id)+len(body))
	rec = append(rec, recordKindPatient)
	rec = binary.AppendUvarint(rec, uint64(version))
	rec = binary.AppendVarint(rec, lastUpdated)
	var flags byte
	if deleted {
		flags |= recordFlagDeleted
	}
	rec = append(rec, flags)
	rec = binary.AppendUvarint(rec, uint64(len(id)))
	rec = append(rec, id...)
	bodyOff := len(rec)
	rec = append(rec, body...)
	if n := len(rec) - recordHeaderSize; n > maxRecordPayload {
		return nil, 0, fmt.Errorf("patient record of %d bytes exceeds the %d-byte limit", n, maxRecordPayload)
	}
	sealRecord(rec)
	return rec, bodyOff, nil
}

// sealRecord fills in the header of rec, whose payload follows recordHeaderSize reserved bytes.
func sealRecord(rec []byte) {
	payload := rec[recordHeaderSize:]
	binary.LittleEndian.PutUint32(rec[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(rec[4:8], crc32c(payload))
	binary.LittleEndian.PutUint32(rec[8:12], crc32c(rec[0:8]))
}

// decodePayload parses a record payload whose checksum has passed, checking everything the
// writer guarantees so that a bug or a foreign file is caught at open, not served.
func decodePayload(p []byte) (id string, version int, sv storedVersion, err error) {
	if p[0] != recordKindPatient {
		return "", 0, sv, fmt.Errorf("unknown record kind %d", p[0])
	}
	p = p[1:]
	v, k := binary.Uvarint(p)
	if k <= 0 || v < 1 || v > math.MaxInt32 {
		return "", 0, sv, errors.New("bad version")
	}
	p = p[k:]
	ms, k := binary.Varint(p)
	if k <= 0 {
		return "", 0, sv, errors.New("bad timestamp")
	}
	p = p[k:]
	if len(p) == 0 || p[0]&^recordFlagDeleted != 0 {
		return "", 0, sv, errors.New("bad flags")
	}
	deleted := p[0]&recordFlagDeleted != 0
	p = p[1:]
	n, k := binary.Uvarint(p)
	if k <= 0 || n == 0 || n > maxPatientIDLength || n > uint64(len(p)-k) {
		return "", 0, sv, errors.New("bad id length")
	}
	id = string(p[k : k+int(n)])
	body := p[k+int(n):]
	switch {
	case deleted && len(body) != 0:
		return "", 0, sv, errors.New("deleted version has a body")
	case !deleted && len(body) == 0:
		return "", 0, sv, errors.New("version has no body")
	}
	if deleted {
		body = nil
	}
	return id, int(v), storedVersion{lastUpdated: ms, deleted: deleted, body: body[:len(body):len(body)]}, nil
}

// patientVersion turns a stored version back into the form the handlers use.
func (sv storedVersion) patientVersion(id string, version int) patientVersion {
	return patientVersion{
		ID:          id,
		Version:     version,
		LastUpdated: time.UnixMilli(sv.lastUpdated).UTC(),
		Deleted:     sv.deleted,
		Body:        sv.body,
	}
}

// Create implements patientStore.
func (s *journalStore) Create(ctx context.Context, id string, build buildFunc) (patientVersion, error) {
	hist, release, err := s.begin(ctx, id)
	if err != nil {
		return patientVersion{}, err
	}
	defer release()
	if len(hist) > 0 {
		return patientVersion{}, errExists
	}
	return s.write(id, hist, false, build)
}

// Update implements patientStore.
func (s *journalStore) Update(ctx context.Context, id string, ifMatch int, build buildFunc) (patientVersion, bool, error) {
	hist, release, err := s.begin(ctx, id)
	if err != nil {
		return patientVersion{}, false, err
	}
	defer release()
	n := len(hist)
	if ifMatch != 0 && ifMatch != n {
		return patientVersion{}, false, errVersionConflict
	}
	created := n == 0 || hist[n-1].deleted
	v, err := s.write(id, hist, false, build)
	if err != nil {
		return patientVersion{}, false, err
	}
	return v, created, nil
}

// Delete implements patientStore.
func (s *journalStore) Delete(ctx context.Context, id string) (patientVersion, bool, error) {
	hist, release, err := s.begin(ctx, id)
	if err != nil {
		return patientVersion{}, false, err
	}
	defer release()
	n := len(hist)
	if n == 0 {
		return patientVersion{}, false, nil
	}
	if hist[n-1].deleted {
		return hist[n-1].patientVersion(id, n), false, nil
	}
	v, err := s.write(id, hist, true, nil)
	if err != nil {
		return patientVersion{}, false, err
	}
	return v, true, nil
}

// Read implements patientStore.
func (s *journalStore) Read(_ context.Context, id string) (patientVersion, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	hist := s.byID[id]
	if len(hist) == 0 {
		return patientVersion{}, errNotFound
	}
	return hist[len(hist)-1].patientVersion(id, len(hist)), nil
}

// VRead implements patientStore.
func (s *journalStore) VRead(_ context.Context, id string, version int) (patientVersion, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	hist := s.byID[id]
	if version < 1 || version > len(hist) {
		return patientVersion{}, errNotFound
	}
	return hist[version-1].patientVersion(id, version), nil
}

// History implements patientStore.
func (s *journalStore) History(_ context.Context, id string) ([]patientVersion, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	hist := s.byID[id]
	if len(hist) == 0 {
		return nil, errNotFound
	}
	out := make([]patientVersion, len(hist))
	for i, sv := range hist {
		out[len(hist)-1-i] = sv.patientVersion(id, i+1)
	}
	return out, nil
}

// Each implements patientStore.
func (s *journalStore) Each(ctx context.Context, fn func(patientVersion) bool) error {
	s.mu.RLock()
	current := make([]patientVersion, 0, len(s.byID))
	for id, hist := range s.byID {
		if sv := hist[len(hist)-1]; !sv.deleted {
			current = append(current, sv.patientVersion(id, len(hist)))
		}
	}
	s.mu.RUnlock()
	for i, v := range current {
		if i%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if !fn(v) {
			return nil
		}
	}
	return ctx.Err()
}

// Ready implements patientStore: false once closed or after a failed write.
func (s *journalStore) Ready() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return !s.closed && s.failErr == nil
}

// Close stops accepting writes, lets the batch being committed finish and closes the journal.
// Writes still waiting get errStoreClosed; reads keep working on what is in memory.
func (s *journalStore) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.stop)
		<-s.done
		if err := s.f.Close(); err != nil {
			s.closeErr = fmt.Errorf("close %s: %w", s.path, err)
		}
	})
	return s.closeErr
}

// lockID takes id's write slot, waiting for ctx at most; the returned func gives it back.
func (s *journalStore) lockID(ctx context.Context, id string) (func(), error) {
	if len(id) == 0 || len(id) > maxPatientIDLength {
		return nil, fmt.Errorf("patient id of %d bytes outside 1..%d", len(id), maxPatientIDLength)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.slotsMu.Lock()
	slot := s.slots[id]
	if slot == nil {
		slot = &idSlot{sem: make(chan struct{}, 1)}
		s.slots[id] = slot
	}
	slot.refs++
	s.slotsMu.Unlock()
	unref := func() {
		s.slotsMu.Lock()
		if slot.refs--; slot.refs == 0 {
			delete(s.slots, id)
		}
		s.slotsMu.Unlock()
	}
	select {
	case slot.sem <- struct{}{}:
		return func() { <-slot.sem; unref() }, nil
	case <-ctx.Done():
		unref()
		return nil, ctx.Err()
	}
}

// begin starts a write of id: it takes id's write slot (waiting for ctx at most) and returns id's
// versions, which cannot change while the slot is held, and the func that gives the slot back; or
// why no write can succeed now.
func (s *journalStore) begin(ctx context.Context, id string) ([]storedVersion, func(), error) {
	release, err := s.lockID(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case s.closed:
		err = errStoreClosed
	case s.failErr != nil:
		err = s.failErr
	}
	if err != nil {
		release()
		return nil, nil, err
	}
	return s.byID[id], release, nil
}

// write records the version after hist (deleted, or with the body build makes) and returns once
// it is durable and visible. The caller holds id's slot. lastUpdated never goes backwards within
// an id, so history order and _lastUpdated agree even if the clock steps back.
//
// Once the record is queued the wait ignores ctx: the record may reach the disk regardless, and
// the slot must be held until it is visible or the next writer would reuse its version number.
func (s *journalStore) write(id string, hist []storedVersion, deleted bool, build buildFunc) (patientVersion, error) {
	version := len(hist) + 1
	ms := s.now().UnixMilli()
	if n := len(hist); n > 0 && ms < hist[n-1].lastUpdated {
		ms = hist[n-1].lastUpdated
	}
	var body []byte
	if !deleted {
		var err error
		body, err = build(version, time.UnixMilli(ms).UTC())
		if err != nil {
			return patientVersion{}, err
		}
		if len(body) == 0 {
			return patientVersion{}, errors.New("build patient: empty body")
		}
	}
	rec, bodyOff, err := encodeRecord(id, version, ms, deleted, body)
	if err != nil {
		return patientVersion{}, err
	}
	sv := storedVersion{lastUpdated: ms, deleted: deleted}
	if !deleted {
		sv.body = rec[bodyOff:len(rec):len(rec)] // our own copy: build's caller may reuse its slice
	}
	req := &commitReq{id: id, version: version, stored: sv, rec: rec, done: make(chan error, 1)}
	select {
	case s.reqs <- req:
	case <-s.done:
		return patientVersion{}, errStoreClosed
	}
	if err := <-req.done; err != nil {
		return patientVersion{}, err
	}
	return sv.patientVersion(id, version), nil
}

// commitLoop is the committer goroutine. It takes the first waiting record, then every record
// already waiting (up to maxBatchBytes), and commits them with one write and one fsync. Records
// arriving during an fsync wait and form the next batch, so batches grow with load and a lone
// writer waits for nothing but its own fsync. With perWrite every batch is one record.
func (s *journalStore) commitLoop() {
	defer close(s.done)
	var batch []*commitReq
	for {
		select {
		case r := <-s.reqs:
			batch = append(batch[:0], r)
		case <-s.stop:
			return
		}
		n := len(batch[0].rec)
	drain:
		for !s.perWrite && n < maxBatchBytes {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
				n += len(r.rec)
			default:
				break drain
			}
		}
		err := s.commit(batch)
		for i, r := range batch {
			r.done <- err
			batch[i] = nil
		}
	}
}

// commit makes batch durable, then visible, then tells OnCommit. A failed write or fsync leaves
// the file's tail unknown (after a failed fsync even the page cache cannot be trusted), so the
// store stops taking writes; reopening replays whatever reached the disk.
func (s *journalStore) commit(batch []*commitReq) error {
	s.mu.RLock()
	failErr := s.failErr
	s.mu.RUnlock()
	if failErr != nil {
		return failErr
	}
	buf := batch[0].rec
	if len(batch) > 1 {
		buf = s.buf[:0]
		for _, r := range batch {
			buf = append(buf, r.rec...)
		}
		s.buf = buf
	}
	if _, err := s.f.Write(buf); err != nil {
		return s.fail(fmt.Errorf("append to %s at byte offset %d: %w", s.path, s.size, err))
	}
	syncStart := time.Now()
	err := s.sync(s.f)
	s.fsyncs.observe(time.Since(syncStart)) // metrics
	if err != nil {
		return s.fail(fmt.Errorf("fsync %s: %w", s.path, err))
	}
	s.size += int64(len(buf))
	s.mu.Lock()
	for _, r := range batch {
		s.byID[r.id] = append(s.byID[r.id], r.stored)
	}
	s.mu.Unlock()
	if s.onCommit != nil {
		for _, r := range batch {
			s.onCommit(r.stored.patientVersion(r.id, r.version))
		}
	}
	return nil
}

// fail puts the store into its failed state, in which every write returns err and Ready is false.
func (s *journalStore) fail(err error) error {
	s.mu.Lock()
	s.failErr = fmt.Errorf("patient store stopped after a failed write: %w", err)
	err = s.failErr
	s.mu.Unlock()
	s.log.Error("patient journal write failed; refusing further writes until restart", "file", s.path, "err", err)
	return err
}

// Stats reports the store's figures for the metrics (metrics.go): current Patients, counted under
// the read lock (about a millisecond at 100k Patients, once per scrape), the journal's size on disk,
// and the fsync durations.
func (s *journalStore) Stats() storeStats {
	st := storeStats{Fsyncs: &s.fsyncs}
	if fi, err := s.f.Stat(); err == nil {
		st.JournalBytes = fi.Size()
	}
	s.mu.RLock()
	for _, hist := range s.byID {
		if !hist[len(hist)-1].deleted {
			st.Patients++
		}
	}
	s.mu.RUnlock()
	return st
}
