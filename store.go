package main

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Journal format: DATA_DIR/patients.journal holds every version of every Patient. It is appended to
// and never rewritten, except that opening cuts off a torn final record and upgrades a journal of
// format 1. It is a sequence of records:
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
// The payload (format 2) is one version of one Patient:
//
//	1 byte   record kind: 2 (1 was format 1, which had no method, created flag or previous offset)
//	1 byte   the interaction that made it: 1 POST, 2 PUT, 3 PATCH, 4 DELETE
//	1 byte   flags: bit 0 deleted, bit 1 created (the id had no current version before); others 0
//	uvarint  version: 1, 2, ... per id, in file order
//	varint   lastUpdated in Unix milliseconds
//	uvarint  offset of the id's previous version's record, plus 1 (0 for version 1)
//	uvarint  length of that record (0 for version 1)
//	uvarint  length of the id (1..64), then the id bytes
//	rest     the resource JSON exactly as served; empty for a deleted version
//
// Memory holds only where each id's current record is (index.go); a read is one positioned read of
// the journal, and the versions of an id are a chain of previous-record offsets. A checkpoint of the
// index (checkpoint.go) lets opening skip decoding the records it covers; every record's checksums
// are still verified at every start.
//
// Only the last record can be incomplete: a crash mid-append leaves a prefix of it or, on file
// systems that extend the size before the data lands, zeros. So it is a torn tail, cut off with a
// warning, when there are fewer than 12 bytes left, when a valid header's payload runs past EOF,
// when everything from the record start to EOF is zero, or when the last record fails its payload
// checksum and has a zeroed sector (see hasZeroedSector). Anything else -- a header or payload
// checksum mismatch, a length over the cap (the header check passed, so it was really written, and
// this writer never does that), an undecodable payload, a version or previous offset out of
// sequence -- is corruption wherever it is, and opening fails naming the file and byte offset:
// serving a silently shortened history is worse than not starting.
const (
	journalFileName    = "patients.journal"
	lockFileName       = "lock"
	recordHeaderSize   = 12
	maxRecordPayload   = 2 << 20
	recordKindV1       = 1
	recordKindPatient  = 2
	recordFlagDeleted  = 1
	recordFlagCreated  = 2
	maxPatientIDLength = 64      // FHIR id: [A-Za-z0-9\-\.]{1,64}
	maxBatchBytes      = 4 << 20 // bounds the committer's buffer; one fsync per 4 MiB costs nothing
)

// recordMethods are the interactions a record names, by their number in the format.
var recordMethods = [...]string{1: http.MethodPost, 2: http.MethodPut, 3: http.MethodPatch, 4: http.MethodDelete}

// methodCode is method's number in the format.
func methodCode(method string) byte {
	for i, m := range recordMethods {
		if m == method && m != "" {
			return byte(i)
		}
	}
	panic("no record method for " + method) // the store's own callers pass only these
}

// journalStore must satisfy the interface the handlers are written against.
var _ patientStore = (*journalStore)(nil)

// patientVersion is one stored version of a Patient resource.
type patientVersion struct {
	ID          string
	VersionID   string    // meta.versionId: the journal's Version in decimal, or an upstream server's own id
	Version     int       // the journal's version number, 1, 2, ... per id (0 from an upstream, whose ids are opaque)
	LastUpdated time.Time // UTC, truncated to milliseconds (FHIR instant)
	Deleted     bool
	Body        []byte // resource JSON as served; nil for a deleted version
	Method      string // the interaction that made it: POST, PUT, PATCH or DELETE
	Created     bool   // the id had no current version before this one (a create, or an update that created)
	loc         recordLoc
}

// buildFunc makes the resource JSON for a new version of Patient id; the journal calls it with the
// version id and time it assigns, while holding that id's write slot, so the body's meta matches the
// record. A store whose server assigns them (upstream.go) passes "" for what it leaves to the server (the
// id of a create; always the version id, with a zero time), and the body then has no such element.
// An error aborts the write (nothing is written) and is returned unchanged.
type buildFunc func(id, versionID string, lastUpdated time.Time) ([]byte, error)

// versionIDRule is what a store's version ids look like: the handlers answer 400, naming the rule, to
// a version in a URL or an If-Match that could not be one (versions are opaque FHIR ids; the journal's
// are decimal numbers, an upstream's whatever it makes).
type versionIDRule struct {
	valid   func(string) bool
	text    string // completes "must be ": "a positive whole number such as 1"
	example string // one, for If-Match: W/"<example>"
}

// patientStore is what the handlers need: the journal (this file) or an upstream FHIR server
// (upstream.go); a fork can back it with PostgreSQL. Every successful write is durable before it
// returns, and visible to reads only then. Version ids are opaque strings.
type patientStore interface {
	// Create records the first version of a new Patient, under id where the store assigns ids (an
	// upstream server assigns its own: the returned version has the id); errExists if the id has any
	// history (even deleted).
	Create(ctx context.Context, id string, build buildFunc) (patientVersion, error)
	// Update records the next version, made by method (PUT or PATCH). ifMatch "" is unconditional;
	// otherwise it must equal the current version id (a deleted one included) or the result is
	// errVersionConflict, as it is for an unknown id. An unknown id gets its first version. created
	// reports that the id had no current representation (unknown or deleted), which is when HTTP PUT
	// answers 201 (RFC 9110 9.3.4).
	Update(ctx context.Context, id, ifMatch, method string, build buildFunc) (v patientVersion, created bool, err error)
	// Delete records a deleted version. For an unknown id it records nothing and returns the
	// zero value; for a deleted one it records nothing and returns the current version; existed
	// is false in both cases. The version id of the deletion may be "" where the store is not told it.
	Delete(ctx context.Context, id string) (v patientVersion, existed bool, err error)
	// Read returns the current version, which may be Deleted; errNotFound if the id never existed.
	Read(ctx context.Context, id string) (patientVersion, error)
	// VRead returns one version; errNotFound if the id or version does not exist.
	VRead(ctx context.Context, id, versionID string) (patientVersion, error)
	// History returns every version, newest first; errNotFound if the id never existed.
	History(ctx context.Context, id string) ([]patientVersion, error)
	// CreateIfNone is a conditional create (If-None-Exist): it records version 1 of id, as Create
	// does, unless current Patients match c; with one match it records nothing and returns that
	// Patient with matches 1, with several nothing but their number.
	CreateIfNone(ctx context.Context, id string, c searchCriteria, build buildFunc) (v patientVersion, matches int, err error)
	// UpdateWhere is a conditional update: with no match it creates the Patient (under bodyID if the
	// body has one, else newID); with one it updates that one (an *idMismatchError if bodyID names
	// another); with several it records nothing and returns their number. An existing Patient named by
	// bodyID that does not match is errExists. build makes the body for the id it is given.
	UpdateWhere(ctx context.Context, c searchCriteria, bodyID, newID, method string, build buildFunc) (v patientVersion, created bool, matches int, err error)
	// DeleteWhere is a conditional delete of a single match: none records nothing, one is deleted as
	// Delete does, several are left alone and only their number returned.
	DeleteWhere(ctx context.Context, c searchCriteria) (v patientVersion, matches int, err error)
	// TypeHistory returns up to count versions of any Patient, newest first, made at or after since
	// (zero for all), starting after the page cursor names ("" for the newest); next is the cursor of
	// the following page, "" when there is none.
	TypeHistory(ctx context.Context, since time.Time, cursor string, count int) (versions []patientVersion, next string, err error)
	// Search returns how many current Patients match c and the page [c.q.Offset, c.q.Offset+c.q.Count)
	// of them, in a stable order (search.go defines the query and its semantics).
	Search(ctx context.Context, c searchCriteria) (total int, page []patientVersion, err error)
	// VersionIDs says what this store's version ids look like.
	VersionIDs() versionIDRule
	// Ready reports whether writes can succeed (the store is open and has not failed, or the upstream
	// answers).
	Ready() bool
	Close() error
}

// Sentinel errors the handlers map to HTTP statuses (errors.go writeStoreError): 404/410, 409, 412,
// 503 while the store cannot take writes, 507 when the disk is full; any other error is a 500.
var (
	errNotFound         = errors.New("patient not found")
	errExists           = errors.New("patient already exists")
	errVersionConflict  = errors.New("patient version conflict")
	errStoreUnavailable = errors.New("patient store is not taking writes")
	errStoreFull        = errors.New("patient store is out of disk space")
	errStoreClosed      = fmt.Errorf("%w: closed", errStoreUnavailable)
	errDuplicate        = errors.New("an identifier that must be unique is held by another Patient")
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

// journalOptions are openJournal's knobs beyond openJournalStore's, for tests and benchmarks.
type journalOptions struct {
	// FsyncPerWrite gives every write its own fsync instead of sharing one per batch; it exists
	// so a benchmark can measure what group commit buys.
	FsyncPerWrite bool
	// Sync makes a file durable; nil means (*os.File).Sync. Tests inject slow or failing ones.
	Sync func(*os.File) error
	// CheckpointEvery is how many journal bytes may be appended before the next checkpoint; 0 means
	// defaultCheckpointEvery.
	CheckpointEvery int64
}

// commitReq is one record on its way to disk; done receives the result of the fsync covering it.
type commitReq struct {
	update indexUpdate // the version, ready for the index; the committer fills in its location
	rec    []byte
	done   chan error
}

// idSlot serialises writers of one id from reading the current version until their new version
// is visible, so version numbers cannot be handed out twice. refs lets the slot map forget idle ids.
type idSlot struct {
	sem  chan struct{}
	refs int
}

// journalStore is the patientStore kept in an append-only journal, with an in-memory index of where
// each id's versions are. Reads take the index's read lock only to find a record, then read it from
// the file; one committer goroutine owns the file's tail, writes each batch of records with one write
// and one fsync, and only then makes the batch visible in the index.
type journalStore struct {
	dir, path string
	log       *slog.Logger
	now       func() time.Time
	sync      func(*os.File) error
	perWrite  bool
	f         *os.File
	lock      *os.File // holds the DATA_DIR lock while the store is open
	ix        *patientIndex

	stateMu sync.RWMutex
	failErr error // set once a write's outcome is unknown (fsync failed); writes stop until restart
	closed  bool

	slotsMu sync.Mutex
	slots   map[string]*idSlot

	reqs      chan *commitReq // unbuffered: writers waiting to send are the queue
	stop      chan struct{}
	done      chan struct{} // closed when the committer has exited
	closeOnce sync.Once
	closeErr  error

	// Owned by the committer goroutine after open.
	buf     []byte
	size    int64
	last    recordLoc // the last record, and its payload checksum: what a checkpoint ends with
	lastCRC uint32
	cp      checkpointState
	hist    historyMarks // safe for concurrent use; the committer adds to it

	fsyncs histogram // how long each fsync took, for the metrics (Stats, metrics.go)
}

// openJournalStore opens (creating if needed) the patient journal in dir, taking the directory's
// lock, and loads its index from the checkpoint and the journal. With fsyncPerWrite every write gets
// its own fsync; otherwise concurrent writes share one.
func openJournalStore(dir string, log *slog.Logger, now func() time.Time, fsyncPerWrite bool) (*journalStore, error) {
	return openJournal(dir, log, now, journalOptions{FsyncPerWrite: fsyncPerWrite})
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
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &journalStore{
		dir: dir, path: filepath.Join(dir, journalFileName), log: log, now: now, sync: opts.Sync,
		perWrite: opts.FsyncPerWrite, lock: lock,
		slots: make(map[string]*idSlot), reqs: make(chan *commitReq), stop: make(chan struct{}), done: make(chan struct{}),
	}
	s.cp.every = cmp.Or(opts.CheckpointEvery, defaultCheckpointEvery)
	if err := s.open(); err != nil {
		if s.f != nil {
			s.f.Close()
		}
		lock.Close()
		var corrupt *corruptJournalError
		if errors.As(err, &corrupt) {
			return nil, err
		}
		return nil, fmt.Errorf("open patient store: %w", err)
	}
	go s.commitLoop()
	return s, nil
}

// lockDir takes an exclusive lock on dir (flock on dir/lock, released when the process ends), so that
// a second process on the same DATA_DIR stops at start instead of interleaving records.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFileName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open patient store: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("DATA_DIR %s is in use by another process (it holds %s); stop it, or give this one another DATA_DIR",
				dir, filepath.Join(dir, lockFileName))
		}
		return nil, fmt.Errorf("open patient store: lock %s: %w", dir, err)
	}
	return f, nil
}

// open opens the journal file, upgrading a format 1 journal, and builds the index: from the
// checkpoint and the journal's tail after it when the checkpoint is good, else from every record.
func (s *journalStore) open() error {
	start := time.Now()
	if err := upgradeJournal(s.path, s.log, s.sync); err != nil {
		return err
	}
	f, err := openJournalFile(s.path)
	if err != nil {
		return err
	}
	s.f = f
	ix, from, reason := s.loadCheckpoint()
	records := 0
	if ix != nil {
		s.ix = ix
		if records, err = s.replay(from); errors.Is(err, errStaleCheckpoint) {
			ix, reason = nil, err.Error()
		} else if err != nil {
			return err
		}
	}
	if ix == nil {
		s.log.Info("patient journal: replaying every record", "file", s.path, "reason", reason)
		s.ix, from = newPatientIndex(), 0
		if records, err = s.replay(0); err != nil {
			return err
		}
	}
	s.cp.last = from
	s.cp.due = s.size-from >= s.cp.every/4 // a long replay is worth not doing again
	debug.FreeOSMemory()                   // what replay and the checkpoint's decoding left behind
	s.log.Info("patient journal open", "file", s.path, "bytes", s.size, "patients", s.ix.n,
		"records_replayed", records, "took", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// upgradeJournal rewrites a format 1 journal in format 2, in place: into a new file beside it, made
// durable, then renamed over it (so a crash leaves one or the other). Format 1 did not record the
// interaction, whether a version created its id, or where the previous version is; the upgrade
// infers them as format 1's history did: a deletion is a DELETE, version 1 a POST, any other version
// a PUT, which created its id when it followed a deletion. A torn tail is dropped; corruption stops
// the upgrade, leaving the journal as it was.
func upgradeJournal(path string, log *slog.Logger, sync func(*os.File) error) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer f.Close()
	sc, err := newRecordScanner(f)
	if err != nil {
		return err
	}
	if payload, n, _, err := sc.next(); err != nil || n == 0 || payload[0] != recordKindV1 {
		return err // empty, format 2, or for open to report
	}
	var patients int
	var written int64
	err = writeFileAtomic(path, sync, func(w io.Writer) error {
		current := map[string]slot{} // each id's latest version in the new file
		for sc.off < sc.size {
			payload, n, reason, err := sc.next()
			switch {
			case err != nil:
				return err
			case reason != "":
				return &corruptJournalError{Path: path, Offset: sc.off, Reason: reason}
			case n == 0:
				log.Warn("patient journal upgrade: dropping torn final record", "file", path, "offset", sc.off)
				return nil
			}
			r, err := decodePayload(payload)
			if err != nil || r.kind != recordKindV1 || r.version != int(current[r.id].version)+1 {
				return &corruptJournalError{Path: path, Offset: sc.off, Reason: "not a format 1 record continuing its id's history"}
			}
			rec, err := upgradeRecord(r, current[r.id])
			if err != nil {
				return err
			}
			if _, err := w.Write(rec); err != nil {
				return err
			}
			current[r.id] = slot{rec: recordLoc{written, uint32(len(rec))}, version: uint32(r.version), live: !r.deleted}
			written += int64(len(rec))
			patients = len(current)
			sc.off += n
		}
		return nil
	})
	if err == nil {
		log.Info("patient journal upgraded from format 1 to format 2", "file", path, "patients", patients, "bytes", written)
	}
	return err
}

// upgradeRecord is the format 1 record r in format 2, after cur (its id's previous version, in the new
// file): a deletion is a DELETE, version 1 a POST, any other version a PUT, which created its id
// when it followed a deletion.
func upgradeRecord(r journalRecord, cur slot) ([]byte, error) {
	method, prev := http.MethodPut, recordLoc{off: -1}
	if r.version > 1 {
		prev = cur.rec
	}
	v := r.patientVersion()
	switch v.Created = !cur.live; {
	case r.deleted:
		method, v.Created = http.MethodDelete, false
	case r.version == 1:
		method = http.MethodPost
	}
	return encodeRecord(v, methodCode(method), prev)
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

// syncDir makes a directory's entries (a newly created or renamed file) durable.
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

// replay reads the journal from byte from (0, or where the checkpoint ends) and brings the index up to
// date with every record after it, cutting off a torn tail. Before from it verifies each record's
// framing and checksums without decoding it; a journal that does not reach from at a record boundary
// is not the one the checkpoint was made from (errStaleCheckpoint). It returns how many records it
// applied.
func (s *journalStore) replay(from int64) (int, error) {
	sc, err := newRecordScanner(s.f)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", s.path, err)
	}
	applied := 0
	for sc.off < sc.size {
		payload, n, reason, err := sc.next()
		switch {
		case err != nil:
			return 0, fmt.Errorf("read %s: %w", s.path, err)
		case reason != "":
			return 0, s.corrupt(sc.off, reason)
		case n == 0 && sc.off < from:
			return 0, fmt.Errorf("%w: the journal ends at byte offset %d, before the %d bytes it covers", errStaleCheckpoint, sc.off, from)
		case n == 0:
			return applied, s.cutTornTail(sc.off, sc.size)
		case sc.off < from && sc.off+n > from:
			return 0, fmt.Errorf("%w: it ends at byte offset %d, inside a record", errStaleCheckpoint, from)
		}
		loc := recordLoc{sc.off, uint32(n)}
		if sc.off >= from {
			if err := s.replayRecord(payload, loc); err != nil {
				return 0, err
			}
			applied++
		}
		s.last, s.lastCRC = loc, crc32c(payload)
		s.hist.add(loc, payloadLastUpdated(payload))
		sc.off += n
	}
	if sc.off < from {
		return 0, fmt.Errorf("%w: the journal has %d bytes, fewer than the %d it covers", errStaleCheckpoint, sc.off, from)
	}
	s.size = sc.off
	return applied, nil
}

// replayRecord decodes the record at loc and applies it, checking it continues its id's history.
func (s *journalStore) replayRecord(payload []byte, loc recordLoc) error {
	r, err := decodePayload(payload)
	if err != nil {
		return s.corrupt(loc.off, "undecodable payload: "+err.Error())
	}
	if r.kind == recordKindV1 {
		return s.corrupt(loc.off, "a format 1 record in a format 2 journal")
	}
	cur, ok := s.ix.lookup(r.id)
	switch {
	case !ok && (r.version != 1 || r.prev.off >= 0):
		return s.corrupt(loc.off, fmt.Sprintf("version %d of patient %q has no earlier version", r.version, r.id))
	case ok && (r.version != int(cur.version)+1 || r.prev != cur.rec):
		return s.corrupt(loc.off, fmt.Sprintf("version %d of patient %q does not follow version %d at byte offset %d", r.version, r.id, cur.version, cur.rec.off))
	}
	v := r.patientVersion()
	v.loc = loc
	s.ix.update(v)
	return nil
}

// cutTornTail cuts the journal at off, where a torn final record starts.
func (s *journalStore) cutTornTail(off, size int64) error {
	s.log.Warn("patient journal: cutting off torn final record left by a crash", "file", s.path, "offset", off, "bytes", size-off)
	if err := s.f.Truncate(off); err != nil {
		return fmt.Errorf("truncate torn tail of %s: %w", s.path, err)
	}
	if err := s.sync(s.f); err != nil {
		return fmt.Errorf("fsync %s: %w", s.path, err)
	}
	s.size = off
	return nil
}

// corrupt makes the error for a bad record at off.
func (s *journalStore) corrupt(off int64, reason string) error {
	return &corruptJournalError{Path: s.path, Offset: off, Reason: reason}
}

// recordScanner reads a journal's records in order through a window of the file, so replay neither
// reads the whole file into memory nor makes a system call per record.
type recordScanner struct {
	f         *os.File
	size, off int64  // the file's size and the next record's offset
	win       []byte // the bytes at winOff..
	winOff    int64
}

// scanWindow is how much of the journal the scanner reads at a time.
const scanWindow = 4 << 20

func newRecordScanner(f *os.File) (*recordScanner, error) {
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return &recordScanner{f: f, size: info.Size()}, nil
}

// bytes returns the file's bytes [off, off+n), or fewer at EOF; valid until the next call.
func (sc *recordScanner) bytes(off, n int64) ([]byte, error) {
	n = min(n, sc.size-off)
	if off < sc.winOff || off+n > sc.winOff+int64(len(sc.win)) {
		w := min(max(n, scanWindow), sc.size-off)
		if int64(cap(sc.win)) < w {
			sc.win = make([]byte, w)
		}
		sc.win = sc.win[:w]
		if _, err := sc.f.ReadAt(sc.win, off); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		sc.winOff = off
	}
	return sc.win[off-sc.winOff : off-sc.winOff+n], nil
}

// next checks the framing of the record at sc.off (see the format comment) and returns its payload and
// length. A torn tail gives n 0 and no reason; corruption gives the reason.
func (sc *recordScanner) next() (payload []byte, n int64, reason string, err error) {
	rest := sc.size - sc.off
	hdr, err := sc.bytes(sc.off, recordHeaderSize)
	if err != nil || rest < recordHeaderSize {
		return nil, 0, "", err
	}
	length := binary.LittleEndian.Uint32(hdr[0:4])
	payloadCRC := binary.LittleEndian.Uint32(hdr[4:8])
	if crc32c(hdr[0:8]) != binary.LittleEndian.Uint32(hdr[8:12]) {
		if zero, err := sc.zeroFrom(sc.off); err != nil || zero {
			return nil, 0, "", err
		}
		return nil, 0, "header checksum mismatch", nil
	}
	if length == 0 || length > maxRecordPayload {
		return nil, 0, fmt.Sprintf("payload length %d outside 1..%d", length, maxRecordPayload), nil
	}
	end := recordHeaderSize + int64(length)
	if rest < end {
		return nil, 0, "", nil
	}
	rec, err := sc.bytes(sc.off, end)
	if err != nil {
		return nil, 0, "", err
	}
	if crc32c(rec[recordHeaderSize:]) != payloadCRC {
		zero, err := sc.zeroFrom(sc.off + end)
		if err != nil {
			return nil, 0, "", err
		}
		if (rest == end || zero) && hasZeroedSector(rec, sc.off, sc.size) {
			return nil, 0, "", nil
		}
		return nil, 0, "payload checksum mismatch", nil
	}
	return rec[recordHeaderSize:], end, "", nil
}

// zeroFrom reports whether the file holds only zero bytes from off to EOF (space a crash left
// allocated but unwritten).
func (sc *recordScanner) zeroFrom(off int64) (bool, error) {
	for off < sc.size {
		b, err := sc.bytes(off, scanWindow)
		if err != nil {
			return false, err
		}
		for _, c := range b {
			if c != 0 {
				return false, nil
			}
		}
		off += int64(len(b))
	}
	return true, nil
}

// hasZeroedSector reports whether rec, the record at file offset start, has an all-zero 512-byte
// sector (aligned to the file), or an all-zero run from a sector boundary to EOF (size): what a crash
// leaves where the file grew but the data never reached the disk (etcd's WAL decoder, isTornEntry,
// uses the same test). A bit flip cannot produce one, and a valid record never contains one: zero
// bytes occur only in its header and binary prefix, which are far shorter than a sector, and it ends
// in the id or the JSON body, neither of which holds a zero byte.
func hasZeroedSector(rec []byte, start, size int64) bool {
	const sector = 512
	end := start + int64(len(rec))
	for a := (start + sector - 1) / sector * sector; a < end; a += sector {
		b := min(a+sector, end)
		if b-a != sector && b != size {
			continue
		}
		zero := true
		for _, c := range rec[a-start : b-start] {
			zero = zero && c == 0
		}
		if zero {
			return true
		}
	}
	return false
}

// crc32c is the record checksum: CRC-32C, which CPUs compute in hardware.
func crc32c(p []byte) uint32 {
	return crc32.Checksum(p, crc32.MakeTable(crc32.Castagnoli)) // MakeTable caches Castagnoli's table
}

// journalRecord is a decoded record payload.
type journalRecord struct {
	kind             byte
	method           byte
	deleted, created bool
	version          int
	lastUpdated      int64
	prev             recordLoc // the previous version's record; offset -1 for none (and in format 1)
	id               string
	body             []byte
}

// encodeRecord frames one version as a journal record; prev is the id's previous version's record
// (offset -1 for none).
func encodeRecord(v patientVersion, method byte, prev recordLoc) ([]byte, error) {
	rec := make([]byte, recordHeaderSize, recordHeaderSize+3+5*binary.MaxVarintLen64+len(v.ID)+len(v.Body))
	var flags byte
	if v.Deleted {
		flags |= recordFlagDeleted
	}
	if v.Created {
		flags |= recordFlagCreated
	}
	rec = append(rec, recordKindPatient, method, flags)
	rec = binary.AppendUvarint(rec, uint64(v.Version))
	rec = binary.AppendVarint(rec, v.LastUpdated.UnixMilli())
	rec = binary.AppendUvarint(rec, uint64(prev.off+1))
	rec = binary.AppendUvarint(rec, uint64(prev.n))
	rec = binary.AppendUvarint(rec, uint64(len(v.ID)))
	rec = append(rec, v.ID...)
	rec = append(rec, v.Body...)
	if n := len(rec) - recordHeaderSize; n > maxRecordPayload {
		return nil, fmt.Errorf("patient record of %d bytes exceeds the %d-byte limit", n, maxRecordPayload)
	}
	sealRecord(rec)
	return rec, nil
}

// sealRecord fills in the header of rec, whose payload follows recordHeaderSize reserved bytes.
func sealRecord(rec []byte) {
	payload := rec[recordHeaderSize:]
	binary.LittleEndian.PutUint32(rec[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(rec[4:8], crc32c(payload))
	binary.LittleEndian.PutUint32(rec[8:12], crc32c(rec[0:8]))
}

// decodePayload parses a record payload (format 2, or format 1 for the upgrade) whose checksum has
// passed, checking everything the writer guarantees so that a bug or a foreign file is caught at
// open, not served. The body is a view into p.
func decodePayload(p []byte) (r journalRecord, err error) {
	r.kind, r.prev = p[0], recordLoc{off: -1}
	p = p[1:]
	switch r.kind {
	case recordKindPatient:
		if len(p) < 2 || p[0] < 1 || int(p[0]) >= len(recordMethods) || p[1]&^(recordFlagDeleted|recordFlagCreated) != 0 {
			return r, errors.New("bad method or flags")
		}
		r.method, r.deleted, r.created = p[0], p[1]&recordFlagDeleted != 0, p[1]&recordFlagCreated != 0
		p = p[2:]
	case recordKindV1:
	default:
		return r, fmt.Errorf("unknown record kind %d", r.kind)
	}
	nums := 4 // version, lastUpdated (zigzag), previous offset+1, previous length
	if r.kind == recordKindV1 {
		nums = 2
	}
	var f [4]uint64
	for i := range nums {
		v, k := binary.Uvarint(p)
		if k <= 0 {
			return r, errors.New("truncated number")
		}
		f[i], p = v, p[k:]
	}
	if f[0] < 1 || f[0] > math.MaxInt32 || f[2] > math.MaxInt64 || f[3] > math.MaxUint32 || (f[2] == 0) != (f[3] == 0) {
		return r, errors.New("bad version or previous record")
	}
	r.version, r.lastUpdated = int(f[0]), int64(f[1]>>1)^-int64(f[1]&1)
	r.prev = recordLoc{int64(f[2]) - 1, uint32(f[3])}
	if r.kind == recordKindV1 {
		if len(p) == 0 || p[0]&^recordFlagDeleted != 0 {
			return r, errors.New("bad flags")
		}
		r.deleted, p = p[0]&recordFlagDeleted != 0, p[1:]
	}
	n, k := binary.Uvarint(p)
	if k <= 0 || n == 0 || n > maxPatientIDLength || n > uint64(len(p)-k) {
		return r, errors.New("bad id length")
	}
	r.id, r.body = string(p[k:k+int(n)]), p[k+int(n):]
	switch {
	case r.deleted && len(r.body) != 0:
		return r, errors.New("deleted version has a body")
	case !r.deleted && len(r.body) == 0:
		return r, errors.New("version has no body")
	case r.deleted:
		r.body = nil
	}
	return r, nil
}

// patientVersion turns a decoded record into the form the handlers use.
func (r journalRecord) patientVersion() patientVersion {
	return patientVersion{ID: r.id, VersionID: strconv.Itoa(r.version), Version: r.version, LastUpdated: time.UnixMilli(r.lastUpdated).UTC(),
		Deleted: r.deleted, Body: r.body, Method: recordMethods[r.method], Created: r.created}
}

// readRecord reads and decodes the record at loc. A record that fails its checksum (the disk changed
// under the journal since it was opened) is an error, not data.
func (s *journalStore) readRecord(loc recordLoc) (journalRecord, error) {
	rec := make([]byte, loc.n)
	if _, err := s.f.ReadAt(rec, loc.off); errors.Is(err, os.ErrClosed) {
		return journalRecord{}, errStoreClosed
	} else if err != nil {
		return journalRecord{}, fmt.Errorf("read %s at byte offset %d: %w", s.path, loc.off, err)
	}
	return s.decodeRecord(rec, loc)
}

// decodeRecord checks and decodes rec, the record read from loc.
func (s *journalStore) decodeRecord(rec []byte, loc recordLoc) (journalRecord, error) {
	if len(rec) != int(loc.n) || len(rec) < recordHeaderSize || crc32c(rec[recordHeaderSize:]) != binary.LittleEndian.Uint32(rec[4:8]) {
		return journalRecord{}, s.corrupt(loc.off, "payload checksum mismatch on read")
	}
	r, err := decodePayload(rec[recordHeaderSize:])
	if err != nil {
		return journalRecord{}, s.corrupt(loc.off, "undecodable payload on read: "+err.Error())
	}
	return r, nil
}

// version reads the version whose record is at loc.
func (s *journalStore) version(loc recordLoc) (patientVersion, error) {
	r, err := s.readRecord(loc)
	if err != nil {
		return patientVersion{}, err
	}
	v := r.patientVersion()
	v.loc = loc
	return v, nil
}

// Read implements patientStore.
func (s *journalStore) Read(_ context.Context, id string) (patientVersion, error) {
	s.ix.mu.RLock()
	cur, ok := s.ix.lookup(id)
	s.ix.mu.RUnlock()
	if !ok {
		return patientVersion{}, errNotFound
	}
	return s.version(cur.rec)
}

// VRead implements patientStore: it follows the chain of previous versions back to the one asked for.
func (s *journalStore) VRead(ctx context.Context, id, versionID string) (patientVersion, error) {
	version, err := strconv.Atoi(versionID)
	if err != nil || version < 1 {
		return patientVersion{}, errNotFound
	}
	var found patientVersion
	err = s.walk(ctx, id, func(v patientVersion) bool {
		if v.Version == version {
			found = v
		}
		return v.Version > version
	})
	if err == nil && found.Version == 0 {
		err = errNotFound
	}
	return found, err
}

// History implements patientStore.
func (s *journalStore) History(ctx context.Context, id string) ([]patientVersion, error) {
	var out []patientVersion
	err := s.walk(ctx, id, func(v patientVersion) bool { out = append(out, v); return true })
	return out, err
}

// walk calls fn with id's versions, newest first, while it returns true.
func (s *journalStore) walk(ctx context.Context, id string, fn func(patientVersion) bool) error {
	s.ix.mu.RLock()
	cur, ok := s.ix.lookup(id)
	s.ix.mu.RUnlock()
	if !ok {
		return errNotFound
	}
	for loc := cur.rec; ; {
		r, err := s.readRecord(loc)
		if err != nil {
			return err
		}
		v := r.patientVersion()
		v.loc = loc
		if !fn(v) || r.prev.off < 0 || ctx.Err() != nil {
			return ctx.Err()
		}
		loc = r.prev
	}
}

// Search runs c's query against the index and reads the page's current versions; a Patient changed
// between the two is read as it is now (and left out if it was deleted).
func (s *journalStore) Search(ctx context.Context, c searchCriteria) (total int, page []patientVersion, err error) {
	total, hits := s.ix.search(c.q)
	page = make([]patientVersion, 0, len(hits))
	for _, h := range hits {
		v, err := s.version(h.loc)
		if err != nil {
			return 0, nil, err
		}
		if !v.Deleted {
			page = append(page, v)
		}
	}
	return total, page, nil
}

// Create implements patientStore.
func (s *journalStore) Create(ctx context.Context, id string, build buildFunc) (patientVersion, error) {
	cur, release, err := s.begin(ctx, id)
	if err != nil {
		return patientVersion{}, err
	}
	defer release()
	if cur.version > 0 {
		return patientVersion{}, errExists
	}
	return s.write(ctx, id, cur, http.MethodPost, build, nil, nil)
}

// Update implements patientStore.
func (s *journalStore) Update(ctx context.Context, id, ifMatch, method string, build buildFunc) (patientVersion, bool, error) {
	cur, release, err := s.begin(ctx, id)
	if err != nil {
		return patientVersion{}, false, err
	}
	defer release()
	if ifMatch != "" && ifMatch != strconv.Itoa(int(cur.version)) {
		return patientVersion{}, false, errVersionConflict
	}
	v, err := s.write(ctx, id, cur, method, build, nil, nil)
	if err != nil {
		return patientVersion{}, false, err
	}
	return v, v.Created, nil
}

// Delete implements patientStore.
func (s *journalStore) Delete(ctx context.Context, id string) (patientVersion, bool, error) {
	cur, release, err := s.begin(ctx, id)
	if err != nil {
		return patientVersion{}, false, err
	}
	defer release()
	switch {
	case cur.version == 0:
		return patientVersion{}, false, nil
	case !cur.live:
		v, err := s.version(cur.rec)
		return v, false, err
	}
	v, err := s.write(ctx, id, cur, http.MethodDelete, nil, nil, nil)
	if err != nil {
		return patientVersion{}, false, err
	}
	return v, true, nil
}

// searchCriteria is a search, or a conditional interaction's criteria (R4 http.html): the parsed query,
// and its canonical text (the parameters as parsePatientSearch keeps them, without _count and _offset,
// sorted, as url.Values.Encode writes them), which an upstream server is sent.
type searchCriteria struct {
	q    patientQuery
	text string
}

// newSearchCriteria is the criteria of a search parsePatientSearch read: q, and self without paging.
func newSearchCriteria(q patientQuery, self url.Values) searchCriteria {
	self = maps.Clone(self)
	self.Del("_count")
	self.Del("_offset")
	return searchCriteria{q: q, text: self.Encode()}
}

// nhsNumberCriteria selects the live Patients holding an NHS number.
func nhsNumberCriteria(value string) searchCriteria {
	q, self, _ := parsePatientSearch(url.Values{"identifier": {fhirNHSNumberSystem + "|" + value}}, true)
	return newSearchCriteria(q, self)
}

// nhsNumberHolder is the id of a live Patient other than self that holds NHS number nhs, "" when none
// does (or nhs is ""): the store-wide rule a write, or $validate's modes create and update, must meet.
// It is a search, so a write of the same number at the same time can slip past it.
func nhsNumberHolder(ctx context.Context, store patientStore, nhs, self string) (string, error) {
	if nhs == "" {
		return "", nil
	}
	c := nhsNumberCriteria(nhs)
	c.q.Count = 2
	_, page, err := store.Search(ctx, c)
	if err != nil {
		return "", err
	}
	for _, v := range page {
		if v.ID != self {
			return v.ID, nil
		}
	}
	return "", nil
}

// criteriaKeys are the write slots a conditional interaction holds from its search until its own write
// is visible. Criteria naming identifier values take those values' slots, which every write adding one
// of them takes too, so no write can make a Patient match meanwhile. Other criteria take a slot of
// their own text: such conditional interactions are atomic with each other, not with plain writes.
func criteriaKeys(c searchCriteria) []string {
	if i := identifierClause(&c.q); i >= 0 {
		var keys []string
		for _, t := range c.q.Identifiers[i] {
			keys = append(keys, identifierLock(t.Value))
		}
		return keys
	}
	return []string{"q\x00" + c.text}
}

// identifierClause returns the index of the first identifier clause whose every value names an
// identifier value (not `system|` alone), or -1.
func identifierClause(q *patientQuery) int {
	return slices.IndexFunc(q.Identifiers, func(clause []tokenValue) bool {
		return !slices.ContainsFunc(clause, func(t tokenValue) bool { return t.Value == "" })
	})
}

// errRaced says a conditional interaction's search gave another answer under its slots than before;
// errMatched stops a conditional create whose search found Patients.
var (
	errRaced   = errors.New("the conditional interaction's matches changed while it ran")
	errMatched = errors.New("the conditional create's criteria match")
)

// idMismatchError says a conditional update's body names an id other than the one Patient its criteria
// match.
type idMismatchError struct{ matched string }

func (e *idMismatchError) Error() string {
	return fmt.Sprintf("the criteria match Patient %q", e.matched)
}

// matching runs c's search for up to two matches.
func (s *journalStore) matching(ctx context.Context, c searchCriteria) (int, []patientVersion, error) {
	c.q.Offset, c.q.Count = 0, 2
	return s.Search(ctx, c)
}

// CreateIfNone implements patientStore.
func (s *journalStore) CreateIfNone(ctx context.Context, id string, c searchCriteria, build buildFunc) (patientVersion, int, error) {
	cur, release, err := s.begin(ctx, id)
	if err != nil {
		return patientVersion{}, 0, err
	}
	defer release()
	if cur.version > 0 {
		return patientVersion{}, 0, errExists
	}
	var matches int
	var found []patientVersion
	v, err := s.write(ctx, id, cur, http.MethodPost, build, criteriaKeys(c), func() (err error) {
		if matches, found, err = s.matching(ctx, c); err == nil && matches > 0 {
			err = errMatched
		}
		return err
	})
	switch {
	case errors.Is(err, errMatched) && matches == 1:
		return found[0], 1, nil
	case errors.Is(err, errMatched):
		return patientVersion{}, matches, nil
	}
	return v, 0, err
}

// conditionalAttempts bounds how often a conditional update or delete starts again when other writes
// change its matches between its search and its write.
const conditionalAttempts = 5

// UpdateWhere implements patientStore. It searches, takes the target's write slot, then writes only if
// the search, again under the slots, has the same answer.
func (s *journalStore) UpdateWhere(ctx context.Context, c searchCriteria, bodyID, newID, method string, build buildFunc) (patientVersion, bool, int, error) {
	for attempt := 1; ; attempt++ {
		matches, found, err := s.matching(ctx, c)
		if err != nil || matches > 1 {
			return patientVersion{}, false, matches, err
		}
		target := cmp.Or(bodyID, newID)
		if matches == 1 {
			if target = found[0].ID; bodyID != "" && bodyID != target {
				return patientVersion{}, false, 1, &idMismatchError{matched: target}
			}
		}
		v, err := s.writeIfSame(ctx, target, c, matches, method, build)
		switch {
		case errors.Is(err, errRaced) && attempt < conditionalAttempts:
			continue
		case err != nil:
			return patientVersion{}, false, matches, err
		}
		return v, v.Created, matches, nil
	}
}

// DeleteWhere implements patientStore, as UpdateWhere does.
func (s *journalStore) DeleteWhere(ctx context.Context, c searchCriteria) (patientVersion, int, error) {
	for attempt := 1; ; attempt++ {
		matches, found, err := s.matching(ctx, c)
		if err != nil || matches != 1 {
			return patientVersion{}, matches, err
		}
		v, err := s.writeIfSame(ctx, found[0].ID, c, 1, http.MethodDelete, nil)
		if errors.Is(err, errRaced) && attempt < conditionalAttempts {
			continue
		}
		return v, 1, err
	}
}

// writeIfSame writes target if c still has matches matches (target being the match when there is one).
// A Patient that is current but does not match (a conditional update naming it) is errExists.
func (s *journalStore) writeIfSame(ctx context.Context, target string, c searchCriteria, matches int, method string, build buildFunc) (patientVersion, error) {
	cur, release, err := s.begin(ctx, target)
	if err != nil {
		return patientVersion{}, err
	}
	defer release()
	if matches == 0 && cur.live {
		return patientVersion{}, errExists
	}
	return s.write(ctx, target, cur, method, build, criteriaKeys(c), func() error {
		n, found, err := s.matching(ctx, c)
		if err == nil && (n != matches || n == 1 && found[0].ID != target) {
			err = errRaced
		}
		return err
	})
}

// historyMarks let type-level history read the journal newest first without an index of every record:
// the offset of every markEvery-th record, and the latest lastUpdated of all records before the next
// mark. Since the latter only grows, a reader going back stops at the first mark whose records are all
// older than _since, even if the clock once stepped back. 16 bytes per 256 records.
type historyMarks struct {
	mu      sync.RWMutex
	offs    []int64 // offs[i]: the record numbered i*markEvery
	maxLU   []int64 // maxLU[i]: the latest lastUpdated of records 0 .. (i+1)*markEvery-1
	records int
	size    int64 // the journal's size after the last record added: what readers may read
}

// markEvery is how many records a history mark covers.
const markEvery = 256

// add records the record at loc, made at lastUpdated (Unix ms), which ends the journal.
func (h *historyMarks) add(loc recordLoc, lastUpdated int64) {
	off := loc.off
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.records%markEvery == 0 {
		prev := int64(math.MinInt64)
		if n := len(h.maxLU); n > 0 {
			prev = h.maxLU[n-1]
		}
		h.offs, h.maxLU = append(h.offs, off), append(h.maxLU, prev)
	}
	h.maxLU[len(h.maxLU)-1] = max(h.maxLU[len(h.maxLU)-1], lastUpdated)
	h.records++
	h.size = off + int64(loc.n)
}

// payloadLastUpdated reads a record payload's lastUpdated (format 1 or 2) without decoding the rest.
// The payload has passed its checksum; replay decodes it fully where it checks more.
func payloadLastUpdated(p []byte) int64 {
	skip := 1 // the kind
	if p[0] == recordKindPatient {
		skip = 3 // and the method and flags
	}
	p = p[min(skip, len(p)):]
	if _, k := binary.Uvarint(p); k > 0 { // the version
		if lu, k2 := binary.Varint(p[k:]); k2 > 0 {
			return lu
		}
	}
	return 0
}

// TypeHistory implements patientStore: it reads the journal back from the cursor (a record offset) a
// mark at a time.
func (s *journalStore) TypeHistory(ctx context.Context, since time.Time, cursor string, count int) ([]patientVersion, string, error) {
	s.hist.mu.RLock()
	offs, maxLU, end := s.hist.offs, s.hist.maxLU, s.hist.size
	s.hist.mu.RUnlock()
	if cursor != "" {
		c, err := strconv.ParseInt(cursor, 10, 64)
		if err != nil || c < 0 {
			return nil, "", errBadCursor
		}
		end = min(end, c)
	}
	sinceMS := int64(math.MinInt64)
	if !since.IsZero() {
		sinceMS = since.UnixMilli()
	}
	var out []patientVersion
	for m := sort.Search(len(offs), func(i int) bool { return offs[i] >= end }) - 1; m >= 0 && maxLU[m] >= sinceMS; m-- {
		block, err := s.versionsBetween(offs[m], end)
		if err != nil {
			return nil, "", err
		}
		for _, v := range slices.Backward(block) {
			if v.LastUpdated.UnixMilli() < sinceMS {
				continue
			}
			if len(out) == count {
				return out, strconv.FormatInt(out[len(out)-1].loc.off, 10), ctx.Err()
			}
			out = append(out, v)
		}
		end = offs[m]
	}
	return out, "", ctx.Err()
}

// errBadCursor is a type-history cursor the store did not make.
var errBadCursor = errors.New("not a history page cursor")

// versionsBetween reads the versions whose records start at offsets in [from, to), in file order.
func (s *journalStore) versionsBetween(from, to int64) ([]patientVersion, error) {
	buf := make([]byte, to-from)
	if _, err := s.f.ReadAt(buf, from); err != nil {
		return nil, fmt.Errorf("read %s at byte offset %d: %w", s.path, from, err)
	}
	var out []patientVersion
	for off := int64(0); off+recordHeaderSize <= int64(len(buf)); {
		n := int64(recordHeaderSize + binary.LittleEndian.Uint32(buf[off:off+4]))
		loc := recordLoc{from + off, uint32(n)}
		r, err := s.decodeRecord(buf[off:min(off+n, int64(len(buf)))], loc)
		if err != nil {
			return nil, err
		}
		v := r.patientVersion()
		v.loc = loc
		out = append(out, v)
		off += n
	}
	return out, nil
}

// VersionIDs implements patientStore: the journal's version ids are 1, 2, ... in decimal, without
// leading zeros.
func (s *journalStore) VersionIDs() versionIDRule {
	return versionIDRule{valid: isJournalVersionID, text: "a positive whole number such as 1", example: "3"}
}

// isJournalVersionID reports whether s is a version id the journal makes.
func isJournalVersionID(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 1 && strconv.Itoa(n) == s
}

// Ready implements patientStore: false once closed or after a failed fsync.
func (s *journalStore) Ready() bool {
	return s.unavailable() == nil
}

// unavailable is why no write can succeed now, or nil.
func (s *journalStore) unavailable() error {
	s.stateMu.RLock()
	defer s.stateMu.RUnlock()
	if s.closed {
		return errStoreClosed
	}
	return s.failErr
}

// Close stops accepting writes, lets the batch being committed finish, writes a checkpoint and closes
// the journal and the lock. Writes still waiting get errStoreClosed; reads fail after Close.
func (s *journalStore) Close() error {
	s.closeOnce.Do(func() {
		s.stateMu.Lock()
		s.closed = true
		s.stateMu.Unlock()
		close(s.stop)
		<-s.done
		s.finishCheckpoint(true)
		if err := s.f.Close(); err != nil {
			s.closeErr = fmt.Errorf("close %s: %w", s.path, err)
		}
		s.lock.Close()
	})
	return s.closeErr
}

// lockSlot takes the write slot of key -- an id, or a key of lockKeys -- waiting for ctx at most; the
// returned func gives it back.
func (s *journalStore) lockSlot(ctx context.Context, key string) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.slotsMu.Lock()
	slot := s.slots[key]
	if slot == nil {
		slot = &idSlot{sem: make(chan struct{}, 1)}
		s.slots[key] = slot
	}
	slot.refs++
	s.slotsMu.Unlock()
	unref := func() {
		s.slotsMu.Lock()
		if slot.refs--; slot.refs == 0 {
			delete(s.slots, key)
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

// lockKeys takes the write slots of keys, sorted, so that writers taking several never wait for each
// other in a circle; every writer takes its id's slot first and its keys after, all at once.
func (s *journalStore) lockKeys(ctx context.Context, keys []string) (func(), error) {
	slices.Sort(keys)
	keys = slices.Compact(keys)
	var releases []func()
	release := func() {
		for _, r := range slices.Backward(releases) {
			r()
		}
	}
	for _, k := range keys {
		r, err := s.lockSlot(ctx, k)
		if err != nil {
			release()
			return nil, err
		}
		releases = append(releases, r)
	}
	return release, nil
}

// begin starts a write of id: it takes id's write slot (waiting for ctx at most) and returns id's
// current slot in the index (the zero slot for a new id), which cannot change while the write slot is
// held, and the func that gives the write slot back; or why no write can succeed now.
func (s *journalStore) begin(ctx context.Context, id string) (slot, func(), error) {
	if len(id) == 0 || len(id) > maxPatientIDLength {
		return slot{}, nil, fmt.Errorf("patient id of %d bytes outside 1..%d", len(id), maxPatientIDLength)
	}
	release, err := s.lockSlot(ctx, id)
	if err != nil {
		return slot{}, nil, err
	}
	if err := s.unavailable(); err != nil {
		release()
		return slot{}, nil, err
	}
	s.ix.mu.RLock()
	cur, _ := s.ix.lookup(id)
	s.ix.mu.RUnlock()
	return cur, release, nil
}

// write records the version after cur, made by method (a deletion for DELETE, else with the body
// build makes), and returns once it is durable and visible. The caller holds id's slot.
// lastUpdated never goes backwards within an id, so history order and _lastUpdated agree even if the
// clock steps back.
//
// Before committing, it takes the slots of the body's identifier values and of keys (a conditional
// interaction's criteria), refuses an NHS number another live Patient holds (a *duplicateError), and
// runs recheck (that interaction's search, again under the slots), so neither can race another write.
//
// Once the record is queued the wait ignores ctx: the record may reach the disk regardless, and
// the slot must be held until it is visible or the next writer would reuse its version number.
func (s *journalStore) write(ctx context.Context, id string, cur slot, method string, build buildFunc, keys []string, recheck func() error) (patientVersion, error) {
	req, err := s.prepareWrite(id, cur, method, build)
	if err != nil {
		return patientVersion{}, err
	}
	fields := fieldsBlob(req.update.fields)
	fields.eachIdentifier(func(_ uint32, value []byte) { keys = append(keys, identifierLock(string(value))) })
	release, err := s.lockKeys(ctx, keys)
	if err != nil {
		return patientVersion{}, err
	}
	defer release()
	// A conditional interaction's search decides first: a conditional create whose criteria find the
	// Patient holding its NHS number answers with that Patient, not a duplicate error.
	if recheck != nil {
		if err := recheck(); err != nil {
			return patientVersion{}, err
		}
	}
	if err := s.checkUnique(id, fields); err != nil {
		return patientVersion{}, err
	}
	select {
	case s.reqs <- req:
	case <-s.done:
		return patientVersion{}, errStoreClosed
	}
	if err := <-req.done; err != nil {
		return patientVersion{}, err
	}
	return req.update.v, nil
}

// prepareWrite makes the version after cur and its record, ready for the committer.
func (s *journalStore) prepareWrite(id string, cur slot, method string, build buildFunc) (*commitReq, error) {
	v := patientVersion{ID: id, Version: int(cur.version) + 1, Deleted: method == http.MethodDelete, Method: method,
		Created: !cur.live, LastUpdated: time.UnixMilli(max(s.now().UnixMilli(), cur.lastUpdated)).UTC()}
	v.VersionID = strconv.Itoa(v.Version)
	if !v.Deleted {
		body, err := build(id, v.VersionID, v.LastUpdated)
		if err != nil {
			return nil, err
		}
		if len(body) == 0 {
			return nil, errors.New("build patient: empty body")
		}
		v.Body = body
	}
	prev := recordLoc{off: -1}
	if cur.version > 0 {
		prev = cur.rec
	}
	rec, err := encodeRecord(v, methodCode(method), prev)
	if err != nil {
		return nil, err
	}
	if !v.Deleted {
		v.Body = rec[len(rec)-len(v.Body):] // our own copy: build's caller may reuse its slice
	}
	return &commitReq{update: s.ix.prepare(v), rec: rec, done: make(chan error, 1)}, nil
}

// identifierLock is the write slot of an identifier value: every write holding the value takes it,
// and so does a conditional interaction whose criteria name it.
func identifierLock(value string) string { return "v\x00" + value }

// duplicateError says an NHS number is already held by another live Patient (UK Core: one Patient per
// NHS number); it is errDuplicate.
type duplicateError struct {
	identifier patientIdentifier
	holder     string // the id of the Patient holding it
}

func (e *duplicateError) Error() string {
	return fmt.Sprintf("NHS number %s already belongs to Patient %q", e.identifier.Value, e.holder)
}

func (e *duplicateError) Is(target error) bool { return target == errDuplicate }

// checkUnique refuses fields whose NHS number a live Patient other than id holds. The caller holds
// the number's write slot, so the answer holds until its write is visible.
func (s *journalStore) checkUnique(id string, fields fieldsBlob) error {
	var dup error
	fields.eachIdentifier(func(sys uint32, value []byte) {
		if dup != nil || s.ix.interned(sys) != fhirNHSNumberSystem {
			return
		}
		if holder := s.ix.holderOf(fhirNHSNumberSystem, string(value), id); holder != "" {
			dup = &duplicateError{identifier: patientIdentifier{System: fhirNHSNumberSystem, Value: string(value)}, holder: holder}
		}
	})
	return dup
}

// commitLoop is the committer goroutine. It takes the first waiting record, then every record
// already waiting (up to maxBatchBytes), and commits them with one write and one fsync. Records
// arriving during an fsync wait and form the next batch, so batches grow with load and a lone
// writer waits for nothing but its own fsync. With perWrite every batch is one record. Between
// batches it starts a checkpoint when one is due.
func (s *journalStore) commitLoop() {
	defer close(s.done)
	var batch []*commitReq
	for {
		s.startCheckpoint()
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

// commit makes batch durable, then visible. A failed write is never acknowledged, and the part of it
// that reached the file is cut off, so the next write appends to the last durable record: a disk that
// was merely full takes writes again once it has space (errStoreFull until then). A failed fsync is
// different: after one, even the page cache cannot be trusted to hold what was written (PostgreSQL's
// fsync failures, 2018), so the store stops taking writes; reopening replays what reached the disk.
func (s *journalStore) commit(batch []*commitReq) error {
	if err := s.unavailable(); err != nil {
		return err
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
		werr := fmt.Errorf("append to %s at byte offset %d: %w", s.path, s.size, err)
		if terr := s.f.Truncate(s.size); terr != nil {
			return s.fail(fmt.Errorf("%w; then cutting it back: %w", werr, terr))
		}
		if errors.Is(err, syscall.ENOSPC) {
			s.log.Warn("patient journal: disk full, write refused", "file", s.path, "err", werr)
			return fmt.Errorf("%w: %w", errStoreFull, werr)
		}
		return s.fail(werr)
	}
	syncStart := time.Now()
	err := s.sync(s.f)
	s.fsyncs.observe(time.Since(syncStart)) // metrics
	if err != nil {
		return s.fail(fmt.Errorf("fsync %s: %w", s.path, err))
	}
	updates := make([]indexUpdate, len(batch))
	for i, r := range batch {
		r.update.v.loc = recordLoc{s.size, uint32(len(r.rec))}
		s.last, s.lastCRC = r.update.v.loc, binary.LittleEndian.Uint32(r.rec[4:8])
		s.hist.add(r.update.v.loc, r.update.v.LastUpdated.UnixMilli())
		s.size += int64(len(r.rec))
		updates[i] = r.update
	}
	s.ix.apply(updates...)
	if s.size-s.cp.last >= s.cp.every {
		s.cp.due = true
	}
	return nil
}

// fail puts the store into its failed state, in which every write returns err and Ready is false.
func (s *journalStore) fail(err error) error {
	s.stateMu.Lock()
	s.failErr = fmt.Errorf("%w since a write failed: %w", errStoreUnavailable, err)
	err = s.failErr
	s.stateMu.Unlock()
	s.log.Error("patient journal write failed; refusing further writes until restart", "file", s.path, "err", err)
	return err
}

// Stats reports the store's figures for the metrics (metrics.go): current Patients, counted under
// the index's read lock (a few milliseconds at a million Patients, once per scrape), the journal's
// size on disk, how old the checkpoint file is, and the fsync durations.
func (s *journalStore) Stats() storeStats {
	st := storeStats{Fsyncs: &s.fsyncs, CheckpointAge: -1}
	if fi, err := s.f.Stat(); err == nil {
		st.JournalBytes = fi.Size()
	}
	if fi, err := os.Stat(filepath.Join(s.dir, checkpointFileName)); err == nil {
		st.CheckpointAge = s.now().Sub(fi.ModTime())
	}
	s.ix.mu.RLock()
	for i := range s.ix.n {
		if s.ix.slotAt(i).live {
			st.Patients++
		}
	}
	s.ix.mu.RUnlock()
	return st
}
