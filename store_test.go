package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// storeTestBody is what the tests' build functions make: small, with the meta the store assigned.
func storeTestBody(id, version string, at time.Time) []byte {
	return fmt.Appendf(nil, `{"resourceType":"Patient","id":%q,"meta":{"versionId":%q,"lastUpdated":%q}}`,
		id, version, at.Format("2006-01-02T15:04:05.000Z07:00"))
}

// storeBuild returns a buildFunc making storeTestBody for id.
func storeBuild(id string) buildFunc {
	return func(_, version string, at time.Time) ([]byte, error) { return storeTestBody(id, version, at), nil }
}

// versionIDOf is version n's id, "" for 0 (an unconditional update).
func versionIDOf(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

// storeWant is the patientVersion a write of id at clock time at by method should produce; created
// says whether it created the id.
func storeWant(id string, version int, at time.Time, method string, created bool) patientVersion {
	at = at.UTC().Truncate(time.Millisecond)
	v := patientVersion{ID: id, VersionID: strconv.Itoa(version), Version: version, LastUpdated: at, Deleted: method == http.MethodDelete, Method: method, Created: created}
	if !v.Deleted {
		v.Body = storeTestBody(id, v.VersionID, at)
	}
	return v
}

// ignoreLoc leaves out where a version's record is, which the tests do not predict, and compares
// bodies as bytes (element by element, a 4 MiB store takes cmp seconds).
var ignoreLoc = cmp.Options{cmpopts.IgnoreUnexported(patientVersion{}), cmp.Comparer(bytes.Equal)}

// openTestStore opens a journal store in dir that logs to the test output and is closed at cleanup.
func openTestStore(t *testing.T, dir string, now func() time.Time, opts journalOptions) *journalStore {
	t.Helper()
	s, err := openJournal(dir, slog.New(slog.NewTextHandler(t.Output(), nil)), now, opts)
	if err != nil {
		t.Fatalf("openJournal(%s) = %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// allHistories returns every id's history, for comparing a store before and after reopening.
func allHistories(t *testing.T, s *journalStore) map[string][]patientVersion {
	t.Helper()
	s.ix.mu.RLock()
	ids := make([]string, 0, s.ix.n)
	for i := range s.ix.n {
		ids = append(ids, string(s.ix.id(i)))
	}
	s.ix.mu.RUnlock()
	out := make(map[string][]patientVersion)
	for _, id := range ids {
		h, err := s.History(t.Context(), id)
		if err != nil {
			t.Fatalf("History(%q) = %v", id, err)
		}
		out[id] = h
	}
	return out
}

// storeStepResult is everything a store call can return, so one table covers every method.
type storeStepResult struct {
	V       patientVersion
	H       []patientVersion
	Created bool
	Existed bool
	Err     error
}

func TestStoreSemantics(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.FixedZone("CET", 3600))
	post, put, del := http.MethodPost, http.MethodPut, http.MethodDelete
	at := func(k int) time.Time { return t0.Add(time.Duration(k) * time.Second) }
	tests := []struct {
		name    string
		op      string // create, update, delete, read, vread, history
		id      string
		ifMatch int // update
		version int // vread
		now     time.Time
		want    storeStepResult
	}{
		{name: "read_unknown", op: "read", id: "a", want: storeStepResult{Err: errNotFound}},
		{name: "history_unknown", op: "history", id: "a", want: storeStepResult{Err: errNotFound}},
		{name: "delete_unknown", op: "delete", id: "a", want: storeStepResult{}},
		{name: "update_unknown_ifmatch", op: "update", id: "a", ifMatch: 1, want: storeStepResult{Err: errVersionConflict}},
		{name: "create", op: "create", id: "a", now: at(1), want: storeStepResult{V: storeWant("a", 1, at(1), post, true)}},
		{name: "create_again", op: "create", id: "a", now: at(2), want: storeStepResult{Err: errExists}},
		{name: "update_stale_ifmatch", op: "update", id: "a", ifMatch: 2, want: storeStepResult{Err: errVersionConflict}},
		{name: "update_ifmatch", op: "update", id: "a", ifMatch: 1, now: at(2), want: storeStepResult{V: storeWant("a", 2, at(2), put, false)}},
		{name: "update_unconditional", op: "update", id: "a", now: at(3), want: storeStepResult{V: storeWant("a", 3, at(3), put, false)}},
		{name: "read_current", op: "read", id: "a", want: storeStepResult{V: storeWant("a", 3, at(3), put, false)}},
		{name: "delete", op: "delete", id: "a", now: at(4), want: storeStepResult{V: storeWant("a", 4, at(4), del, false), Existed: true}},
		{name: "read_deleted", op: "read", id: "a", want: storeStepResult{V: storeWant("a", 4, at(4), del, false)}},
		{name: "delete_again", op: "delete", id: "a", now: at(5), want: storeStepResult{V: storeWant("a", 4, at(4), del, false)}},
		{name: "create_deleted", op: "create", id: "a", now: at(5), want: storeStepResult{Err: errExists}},
		{name: "update_deleted_ifmatch_before_delete", op: "update", id: "a", ifMatch: 3, want: storeStepResult{Err: errVersionConflict}},
		{name: "resurrect", op: "update", id: "a", ifMatch: 4, now: at(5), want: storeStepResult{V: storeWant("a", 5, at(5), put, true), Created: true}},
		{name: "vread_first", op: "vread", id: "a", version: 1, want: storeStepResult{V: storeWant("a", 1, at(1), post, true)}},
		{name: "vread_deleted", op: "vread", id: "a", version: 4, want: storeStepResult{V: storeWant("a", 4, at(4), del, false)}},
		{name: "vread_zero", op: "vread", id: "a", version: 0, want: storeStepResult{Err: errNotFound}},
		{name: "vread_future", op: "vread", id: "a", version: 6, want: storeStepResult{Err: errNotFound}},
		{name: "vread_unknown", op: "vread", id: "zz", version: 1, want: storeStepResult{Err: errNotFound}},
		{name: "update_as_create", op: "update", id: "b", now: at(6), want: storeStepResult{V: storeWant("b", 1, at(6), put, true), Created: true}},
		{name: "clock_steps_back", op: "update", id: "b", now: at(0), want: storeStepResult{V: storeWant("b", 2, at(6), put, false)}},
		{name: "history", op: "history", id: "a", want: storeStepResult{H: []patientVersion{
			storeWant("a", 5, at(5), put, true),
			storeWant("a", 4, at(4), del, false),
			storeWant("a", 3, at(3), put, false),
			storeWant("a", 2, at(2), put, false),
			storeWant("a", 1, at(1), post, true),
		}}},
	}

	dir := t.TempDir()
	clock := &testClock{}
	s := openTestStore(t, dir, clock.now, journalOptions{})
	ctx := t.Context()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock.set(tt.now)
			var got storeStepResult
			switch tt.op {
			case "create":
				got.V, got.Err = s.Create(ctx, tt.id, storeBuild(tt.id))
			case "update":
				got.V, got.Created, got.Err = s.Update(ctx, tt.id, versionIDOf(tt.ifMatch), http.MethodPut, storeBuild(tt.id))
			case "delete":
				got.V, got.Existed, got.Err = s.Delete(ctx, tt.id)
			case "read":
				got.V, got.Err = s.Read(ctx, tt.id)
			case "vread":
				got.V, got.Err = s.VRead(ctx, tt.id, strconv.Itoa(tt.version))
			case "history":
				got.H, got.Err = s.History(ctx, tt.id)
			default:
				t.Fatalf("unknown op %q", tt.op)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateErrors(), ignoreLoc); diff != "" {
				t.Errorf("%s(%q) mismatch (-want +got):\n%s", tt.op, tt.id, diff)
			}
		})
	}

	before := allHistories(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	s = openTestStore(t, dir, clock.now, journalOptions{})
	if diff := cmp.Diff(before, allHistories(t, s), ignoreLoc); diff != "" {
		t.Errorf("histories after reopen mismatch (-before +after):\n%s", diff)
	}
	clock.set(at(7))
	got, _, err := s.Update(ctx, "a", "5", http.MethodPut, storeBuild("a"))
	if diff := cmp.Diff(storeWant("a", 6, at(7), put, false), got, ignoreLoc); err != nil || diff != "" {
		t.Errorf("Update(a, 5) after reopen = %v; mismatch (-want +got):\n%s", err, diff)
	}
}

func TestStoreRejectedWritesRecordNothing(t *testing.T) {
	errBoom := errors.New("boom")
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name  string
		ctx   context.Context
		id    string
		build buildFunc
		want  error
	}{
		{name: "build_error", ctx: t.Context(), id: "a", build: func(string, string, time.Time) ([]byte, error) { return nil, errBoom }, want: errBoom},
		{name: "empty_body", ctx: t.Context(), id: "a", build: func(string, string, time.Time) ([]byte, error) { return nil, nil }, want: cmpopts.AnyError},
		{name: "too_large", ctx: t.Context(), id: "a", build: func(string, string, time.Time) ([]byte, error) { return make([]byte, maxRecordPayload), nil }, want: cmpopts.AnyError},
		{name: "empty_id", ctx: t.Context(), id: "", build: storeBuild(""), want: cmpopts.AnyError},
		{name: "long_id", ctx: t.Context(), id: strings.Repeat("x", 65), build: storeBuild("x"), want: cmpopts.AnyError},
		{name: "canceled", ctx: canceled, id: "a", build: storeBuild("a"), want: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTestStore(t, dir, time.Now, journalOptions{})
			if _, err := s.Create(tt.ctx, tt.id, tt.build); !cmp.Equal(tt.want, err, cmpopts.EquateErrors()) {
				t.Errorf("Create(%q) = %v, want %v", tt.id, err, tt.want)
			}
			if _, err := s.Read(t.Context(), tt.id); !errors.Is(err, errNotFound) {
				t.Errorf("Read(%q) = %v, want %v", tt.id, err, errNotFound)
			}
			if fi, err := os.Stat(filepath.Join(dir, journalFileName)); err != nil || fi.Size() != 0 {
				t.Errorf("journal after rejected write: %v, size %d, want empty", err, fi.Size())
			}
			if v, err := s.Create(t.Context(), "a", storeBuild("a")); err != nil || v.Version != 1 {
				t.Errorf("Create(a) after rejected write = version %d, %v; want version 1", v.Version, err)
			}
		})
	}
}

// TestStoreSearchFollowsWrites checks that the index answers with every acknowledged write and
// nothing else: deletions leave it, failed and no-op writes change nothing.
func TestStoreSearchFollowsWrites(t *testing.T) {
	clock := &testClock{t: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}
	s := openTestStore(t, t.TempDir(), clock.now, journalOptions{})
	ctx := t.Context()
	must := func(v patientVersion, err error) patientVersion {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	a := must(s.Create(ctx, "a", storeBuild("a")))
	must(s.Create(ctx, "b", storeBuild("b")))
	must(s.Create(ctx, "c", storeBuild("c")))
	v, _, err := s.Update(ctx, "c", "1", http.MethodPut, storeBuild("c"))
	c := must(v, err)
	v, _, err = s.Delete(ctx, "b")
	must(v, err)
	s.Delete(ctx, "b")                                       // no new version
	s.Update(ctx, "a", "7", http.MethodPut, storeBuild("a")) // stale: refused
	s.Create(ctx, "d", func(string, string, time.Time) ([]byte, error) { return nil, errors.New("invalid") })

	total, page, err := s.Search(ctx, searchCriteria{q: patientQuery{Count: 10}})
	if err != nil || total != 2 {
		t.Fatalf("Search() = %d, %v; want 2 matches", total, err)
	}
	if diff := cmp.Diff([]patientVersion{a, c}, page, ignoreLoc); diff != "" {
		t.Errorf("Search() page mismatch (-want +got):\n%s", diff)
	}
	if total, _, err := s.Search(ctx, searchCriteria{q: patientQuery{IDs: [][]string{{"b", "d"}}, Count: 10}}); err != nil || total != 0 {
		t.Errorf("Search(_id=b,d) = %d, %v; want 0", total, err)
	}
}

// zeroRun returns a copy of data with n bytes from off zeroed.
func zeroRun(data []byte, off, n int64) []byte {
	d := slices.Clone(data)
	clear(d[off : off+n])
	return d
}

// writeJournal builds a journal of the given versions (each a create or update of its id) and
// returns its bytes and the byte offset where each record starts.
func writeJournal(t *testing.T, dir string, ids ...string) ([]byte, []int64) {
	t.Helper()
	s := openTestStore(t, dir, time.Now, journalOptions{})
	var offs []int64
	for _, id := range ids {
		fi, err := os.Stat(filepath.Join(dir, journalFileName))
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, fi.Size())
		if _, _, err := s.Update(t.Context(), id, "", http.MethodPut, storeBuild(id)); err != nil {
			t.Fatalf("Update(%q) = %v", id, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, journalFileName))
	if err != nil {
		t.Fatal(err)
	}
	return data, offs
}

// reopenJournal writes data as the journal of a fresh directory and opens it, logging into logBuf.
func reopenJournal(t *testing.T, data []byte, logBuf *bytes.Buffer) (*journalStore, string, error) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, journalFileName)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := openJournal(dir, slog.New(slog.NewTextHandler(logBuf, nil)), time.Now, journalOptions{})
	if err == nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, path, err
}

func TestStoreTornTailIsCutOff(t *testing.T) {
	dir := t.TempDir()
	data, offs := writeJournal(t, dir, "a", "b", "a", "c")
	last := offs[3]
	s := openTestStore(t, dir, time.Now, journalOptions{})
	want := allHistories(t, s)
	delete(want, "c")
	s.Close()

	check := func(t *testing.T, torn []byte) {
		t.Helper()
		var logBuf bytes.Buffer
		s, path, err := reopenJournal(t, torn, &logBuf)
		if err != nil {
			t.Fatalf("open with torn tail = %v", err)
		}
		if diff := cmp.Diff(want, allHistories(t, s), ignoreLoc); diff != "" {
			t.Errorf("histories mismatch (-want +got):\n%s", diff)
		}
		if fi, err := os.Stat(path); err != nil || fi.Size() != last {
			t.Errorf("journal size after open = %d (%v), want %d", fi.Size(), err, last)
		}
		if int64(len(torn)) > last && !strings.Contains(logBuf.String(), "torn") {
			t.Errorf("no log line about the torn record; log:\n%s", logBuf.String())
		}
		if _, err := s.Create(t.Context(), "c", storeBuild("c")); err != nil {
			t.Errorf("Create(c) after recovery = %v", err)
		}
		s.Close()
		s, err = openJournal(filepath.Dir(path), nil, time.Now, journalOptions{})
		if err != nil {
			t.Fatalf("reopen after recovery = %v", err)
		}
		defer s.Close()
		if v, err := s.Read(t.Context(), "c"); err != nil || v.Version != 1 {
			t.Errorf("Read(c) after recovery and reopen = version %d, %v; want version 1", v.Version, err)
		}
	}

	t.Run("every_cut", func(t *testing.T) {
		for cut := last; cut < int64(len(data)); cut++ {
			t.Run(fmt.Sprint(cut), func(t *testing.T) { check(t, data[:cut]) })
		}
	})
	// A last record big enough to span sectors, and copies of the journal with parts of it zeroed.
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	big, err := encodeRecord(patientVersion{ID: "c", Version: 1, LastUpdated: at, Body: benchPatientJSON("c", "1", at), Created: true},
		methodCode(http.MethodPost), recordLoc{off: -1})
	if err != nil {
		t.Fatal(err)
	}
	withBig := slices.Concat(data[:last], big)
	firstSector := (last + recordHeaderSize + 511) / 512 * 512
	zeroed := func(from, to int64) []byte {
		d := slices.Clone(withBig)
		clear(d[from:to])
		return d
	}
	if firstSector+512 > int64(len(withBig)) {
		t.Fatalf("test record at %d..%d does not span a whole sector", last, len(withBig))
	}
	tests := []struct {
		name string
		give []byte
	}{
		{name: "last_sector_zeroed_to_eof", give: zeroed(firstSector, int64(len(withBig)))},
		{name: "inner_sector_zeroed", give: zeroed(firstSector, firstSector+512)},
		{name: "zeros_after_last", give: slices.Concat(data[:last], make([]byte, 4096))},
		{name: "last_record_zeroed", give: slices.Concat(data[:last], make([]byte, int64(len(data))-last))},
		{name: "short_garbage", give: slices.Concat(data[:last], []byte{0xff, 0xfe, 0xfd})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { check(t, tt.give) })
	}
}

func TestStoreCorruptionRefusesToOpen(t *testing.T) {
	data, offs := writeJournal(t, t.TempDir(), "a", "b", "a")
	end := int64(len(data))
	flip := func(at int64, mask byte) []byte {
		d := slices.Clone(data)
		d[at] ^= mask
		return d
	}
	sealed := func(payload ...byte) []byte {
		rec := append(make([]byte, recordHeaderSize), payload...)
		sealRecord(rec)
		return slices.Concat(data, rec)
	}
	record := func(id string, version int, deleted bool, body string, prev recordLoc) []byte {
		method := http.MethodPut
		if deleted {
			method = http.MethodDelete
		}
		rec, err := encodeRecord(patientVersion{ID: id, Version: version, Deleted: deleted, Body: []byte(body)}, methodCode(method), prev)
		if err != nil {
			t.Fatal(err)
		}
		return slices.Concat(data, rec)
	}
	none := recordLoc{off: -1}
	second := recordLoc{offs[1], uint32(offs[2] - offs[1])} // b's version 1
	withHeader := func(n uint32) []byte {
		rec := make([]byte, recordHeaderSize)
		binary.LittleEndian.PutUint32(rec[0:4], n)
		binary.LittleEndian.PutUint32(rec[8:12], crc32c(rec[0:8]))
		return slices.Concat(data, rec)
	}
	mid := offs[1]
	tests := []struct {
		name       string
		give       []byte
		wantOffset int64
	}{
		{name: "middle_payload_byte", give: flip(mid+recordHeaderSize+5, 0x01), wantOffset: mid},
		{name: "middle_payload_checksum", give: flip(mid+4, 0x10), wantOffset: mid},
		{name: "middle_header_checksum", give: flip(mid+9, 0x01), wantOffset: mid},
		{name: "middle_length_low_byte", give: flip(mid, 0x01), wantOffset: mid},
		{name: "middle_length_high_byte", give: flip(mid+3, 0x80), wantOffset: mid},
		{name: "first_payload_byte", give: flip(recordHeaderSize, 0x01), wantOffset: 0},
		{name: "last_payload_byte", give: flip(end-1, 0x01), wantOffset: offs[2]},
		{name: "last_payload_byte_zeroed", give: flip(end-1, data[end-1]), wantOffset: offs[2]},
		{name: "last_record_short_zero_run", give: zeroRun(data, offs[2]+recordHeaderSize+10, 100), wantOffset: offs[2]},
		{name: "garbage_after_last", give: slices.Concat(data, bytes.Repeat([]byte{0xab}, 40)), wantOffset: end},
		{name: "unknown_kind", give: sealed(9, 1, 2, 1, 0, 0, 0, 1, 'x', '{', '}'), wantOffset: end},
		{name: "format_1_record", give: sealed(1, 1, 0, 0, 1, 'x', '{', '}'), wantOffset: end},
		{name: "unknown_method", give: sealed(2, 5, 2, 1, 0, 0, 0, 1, 'x', '{', '}'), wantOffset: end},
		{name: "unknown_flag", give: sealed(2, 1, 4, 1, 0, 0, 0, 1, 'x', '{', '}'), wantOffset: end},
		{name: "truncated_varint", give: sealed(2, 1, 2, 0x80), wantOffset: end},
		{name: "id_past_payload", give: sealed(2, 1, 2, 1, 0, 0, 0, 9, 'x'), wantOffset: end},
		{name: "previous_length_without_offset", give: sealed(2, 1, 2, 1, 0, 0, 5, 1, 'x', '{', '}'), wantOffset: end},
		{name: "deleted_with_body", give: record("x", 1, true, "{}", none), wantOffset: end},
		{name: "live_without_body", give: record("x", 1, false, "", none), wantOffset: end},
		{name: "duplicate_version", give: slices.Concat(data, data[:offs[1]]), wantOffset: end},
		{name: "version_gap", give: record("b", 3, false, "{}", second), wantOffset: end},
		{name: "previous_elsewhere", give: record("b", 2, false, "{}", recordLoc{0, uint32(offs[1])}), wantOffset: end},
		{name: "first_with_previous", give: record("x", 1, false, "{}", second), wantOffset: end},
		{name: "empty_payload", give: withHeader(0), wantOffset: end},
		{name: "length_over_cap", give: withHeader(maxRecordPayload + 1), wantOffset: end},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logBuf bytes.Buffer
			_, path, err := reopenJournal(t, tt.give, &logBuf)
			var corrupt *corruptJournalError
			if !errors.As(err, &corrupt) {
				t.Fatalf("open = %v, want a *corruptJournalError", err)
			}
			if corrupt.Offset != tt.wantOffset || corrupt.Path != path {
				t.Errorf("open error at %s offset %d, want %s offset %d", corrupt.Path, corrupt.Offset, path, tt.wantOffset)
			}
			if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, fmt.Sprintf("offset %d", tt.wantOffset)) {
				t.Errorf("open error %q does not name the file and offset %d", msg, tt.wantOffset)
			}
			if after, err := os.ReadFile(path); err != nil || !bytes.Equal(after, tt.give) {
				t.Errorf("failed open changed the journal (%v)", err)
			}
		})
	}
}

func TestStoreConcurrentWritersAllDurable(t *testing.T) {
	const writers, rounds = 16, 30
	dir := t.TempDir()
	var syncs atomic.Int64
	s := openTestStore(t, dir, time.Now, journalOptions{Sync: func(f *os.File) error {
		syncs.Add(1)
		return f.Sync()
	}})
	ctx := t.Context()
	acked := make([][]patientVersion, writers)
	var writes sync.WaitGroup
	for w := range writers {
		writes.Go(func() {
			for r := range rounds {
				id := fmt.Sprintf("w%d-%d", w, r)
				v, err := s.Create(ctx, id, storeBuild(id))
				if err != nil {
					t.Errorf("Create(%q) = %v", id, err)
					continue
				}
				acked[w] = append(acked[w], v)
				if v, _, err = s.Update(ctx, id, "1", http.MethodPut, storeBuild(id)); err != nil {
					t.Errorf("Update(%q) = %v", id, err)
				} else {
					acked[w] = append(acked[w], v)
				}
				if v, _, err = s.Update(ctx, "shared", "", http.MethodPut, storeBuild("shared")); err != nil {
					t.Errorf("Update(shared) = %v", err)
				} else {
					acked[w] = append(acked[w], v)
				}
				if r%4 == 0 {
					if v, _, err = s.Delete(ctx, id); err != nil {
						t.Errorf("Delete(%q) = %v", id, err)
					} else {
						acked[w] = append(acked[w], v)
					}
				}
			}
		})
	}
	stop := make(chan struct{})
	var reads sync.WaitGroup
	for range 2 {
		reads.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				s.Read(ctx, "shared")
				s.History(ctx, "shared")
				s.Search(ctx, searchCriteria{q: patientQuery{Count: 5}})
				s.Ready()
			}
		})
	}
	writes.Wait()
	close(stop)
	reads.Wait()
	total := 0
	for _, a := range acked {
		total += len(a)
	}
	t.Logf("%d acknowledged writes, %d fsyncs", total, syncs.Load())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTestStore(t, dir, time.Now, journalOptions{})
	shared := 0
	for _, a := range acked {
		for _, want := range a {
			if want.ID == "shared" {
				shared++
			}
			got, err := s.VRead(ctx, want.ID, want.VersionID)
			if diff := cmp.Diff(want, got, ignoreLoc); err != nil || diff != "" {
				t.Errorf("VRead(%q, %d) after reopen = %v; mismatch (-want +got):\n%s", want.ID, want.Version, err, diff)
			}
		}
	}
	if h, err := s.History(ctx, "shared"); err != nil || len(h) != shared {
		t.Errorf("History(shared) has %d versions (%v), want %d", len(h), err, shared)
	}
}

func TestStoreFsyncPerWriteSyncsEveryWrite(t *testing.T) {
	const writers, each = 8, 10
	var syncs atomic.Int64
	s := openTestStore(t, t.TempDir(), time.Now, journalOptions{FsyncPerWrite: true, Sync: func(f *os.File) error {
		syncs.Add(1)
		return f.Sync()
	}})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("p%d-%d", w, i)
				if _, err := s.Create(t.Context(), id, storeBuild(id)); err != nil {
					t.Errorf("Create(%q) = %v", id, err)
				}
			}
		})
	}
	wg.Wait()
	if got := syncs.Load(); got != writers*each {
		t.Errorf("%d writes made %d fsyncs, want %d", writers*each, got, writers*each)
	}
}

func TestStoreReadsDoNotWaitForFsync(t *testing.T) {
	var block atomic.Bool
	entered := make(chan struct{}, 1)
	gate := make(chan struct{})
	var openGate sync.Once
	s := openTestStore(t, t.TempDir(), time.Now, journalOptions{Sync: func(f *os.File) error {
		if block.Load() {
			entered <- struct{}{}
			<-gate
		}
		return f.Sync()
	}})
	t.Cleanup(func() { openGate.Do(func() { close(gate) }) }) // runs before Close, which waits for the fsync
	ctx := t.Context()
	a, err := s.Create(ctx, "a", storeBuild("a"))
	if err != nil {
		t.Fatal(err)
	}

	block.Store(true)
	created := make(chan error, 1)
	go func() {
		_, err := s.Create(ctx, "b", storeBuild("b"))
		created <- err
	}()
	<-entered // the committer is now inside the fsync covering b

	type reads struct {
		A     patientVersion
		BErr  error
		Total int
		Ready bool
	}
	done := make(chan reads, 1)
	go func() {
		var r reads
		r.A, _ = s.Read(ctx, "a")
		_, r.BErr = s.Read(ctx, "b")
		r.Total, _, _ = s.Search(ctx, searchCriteria{q: patientQuery{Count: 5}})
		r.Ready = s.Ready()
		done <- r
	}()
	select {
	case got := <-done:
		want := reads{A: a, BErr: errNotFound, Total: 1, Ready: true}
		if diff := cmp.Diff(want, got, cmpopts.EquateErrors(), ignoreLoc); diff != "" {
			t.Errorf("reads during fsync mismatch (-want +got):\n%s", diff)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reads did not return while an fsync was in progress")
	}
	select {
	case err := <-created:
		t.Fatalf("Create(b) returned (%v) before its fsync finished", err)
	default:
	}

	block.Store(false)
	openGate.Do(func() { close(gate) })
	if err := <-created; err != nil {
		t.Fatalf("Create(b) = %v", err)
	}
	if _, err := s.Read(ctx, "b"); err != nil {
		t.Errorf("Read(b) after its fsync = %v", err)
	}
}

func TestStoreWaitsForBusyIDUntilContextEnds(t *testing.T) {
	s := openTestStore(t, t.TempDir(), time.Now, journalOptions{})
	inBuild := make(chan struct{})
	release := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, err := s.Create(t.Context(), "a", func(_, v string, at time.Time) ([]byte, error) {
			close(inBuild)
			<-release
			return storeTestBody("a", v, at), nil
		})
		first <- err
	}()
	<-inBuild
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := s.Update(ctx, "a", "", http.MethodPut, storeBuild("a")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Update(a) while a is being written = %v, want %v", err, context.DeadlineExceeded)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("Create(a) = %v", err)
	}
	if v, _, err := s.Update(t.Context(), "a", "1", http.MethodPut, storeBuild("a")); err != nil || v.Version != 2 {
		t.Errorf("Update(a, 1) = version %d, %v; want version 2", v.Version, err)
	}
}

func TestStoreFailedFsyncStopsWrites(t *testing.T) {
	errDisk := errors.New("disk on fire")
	var fail atomic.Bool
	var syncs atomic.Int64
	s := openTestStore(t, t.TempDir(), time.Now, journalOptions{Sync: func(f *os.File) error {
		syncs.Add(1)
		if fail.Load() {
			return errDisk
		}
		return f.Sync()
	}})
	ctx := t.Context()
	a, err := s.Create(ctx, "a", storeBuild("a"))
	if err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	if _, err := s.Create(ctx, "b", storeBuild("b")); !errors.Is(err, errDisk) {
		t.Errorf("Create(b) with failing fsync = %v, want %v", err, errDisk)
	}
	if s.Ready() {
		t.Error("Ready() = true after a failed fsync")
	}
	if _, err := s.Read(ctx, "b"); !errors.Is(err, errNotFound) {
		t.Errorf("Read(b) = %v, want %v: a write that failed must not become visible", err, errNotFound)
	}
	fail.Store(false)
	n := syncs.Load()
	if _, _, err := s.Update(ctx, "a", "", http.MethodPut, storeBuild("a")); !errors.Is(err, errDisk) {
		t.Errorf("Update(a) after failed fsync = %v, want %v", err, errDisk)
	}
	if syncs.Load() != n {
		t.Error("a write after a failed fsync reached the file")
	}
	if got, err := s.Read(ctx, "a"); err != nil || !cmp.Equal(a, got, ignoreLoc) {
		t.Errorf("Read(a) after failed fsync = %v, %v; want %v", got, err, a)
	}
	if _, err := s.Create(ctx, "c", storeBuild("c")); !errors.Is(err, errStoreUnavailable) {
		t.Errorf("Create(c) after failed fsync = %v, want %v", err, errStoreUnavailable)
	}
}

func TestStoreClose(t *testing.T) {
	s := openTestStore(t, t.TempDir(), time.Now, journalOptions{})
	ctx := t.Context()
	if _, err := s.Create(ctx, "a", storeBuild("a")); err != nil {
		t.Fatal(err)
	}
	if !s.Ready() {
		t.Error("Ready() = false on an open store")
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}
	if s.Ready() {
		t.Error("Ready() = true after Close")
	}
	if _, err := s.Create(ctx, "b", storeBuild("b")); !errors.Is(err, errStoreClosed) {
		t.Errorf("Create after Close = %v, want %v", err, errStoreClosed)
	}
	if _, err := s.Read(ctx, "a"); !errors.Is(err, errStoreClosed) { // the journal, where bodies are, is closed
		t.Errorf("Read(a) after Close = %v, want %v", err, errStoreClosed)
	}
}

func TestStoreCloseDuringWrites(t *testing.T) {
	const writers = 8
	dir := t.TempDir()
	s := openTestStore(t, dir, time.Now, journalOptions{})
	ctx := t.Context()
	acked := make([][]patientVersion, writers)
	started := make(chan struct{}, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				v, err := s.Create(ctx, id, storeBuild(id))
				if err != nil {
					if !errors.Is(err, errStoreClosed) {
						t.Errorf("Create(%q) = %v, want success or %v", id, err, errStoreClosed)
					}
					return
				}
				acked[w] = append(acked[w], v)
				if i == 0 {
					started <- struct{}{}
				}
			}
		})
	}
	for range writers {
		<-started
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	wg.Wait()
	s = openTestStore(t, dir, time.Now, journalOptions{})
	for _, a := range acked {
		for _, want := range a {
			if got, err := s.Read(ctx, want.ID); err != nil || !cmp.Equal(want, got, ignoreLoc) {
				t.Errorf("Read(%q) after reopen = %v, %v; want %v", want.ID, got, err, want)
			}
		}
	}
}

func TestOpenJournalStoreCreatesDirAndFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "fhir")
	s, err := openJournalStore(dir, nil, nil, false)
	if err != nil {
		t.Fatalf("openJournalStore(%s) = %v", dir, err)
	}
	defer s.Close()
	for _, tt := range []struct {
		path    string
		wantDir bool
		maxPerm os.FileMode // the umask may take bits away, never add them
	}{
		{path: dir, wantDir: true, maxPerm: 0o750},
		{path: filepath.Join(dir, journalFileName), maxPerm: 0o600},
	} {
		fi, err := os.Stat(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.IsDir() != tt.wantDir || fi.Mode().Perm()&^tt.maxPerm != 0 {
			t.Errorf("mode of %s = %v, want dir=%v and at most %v", tt.path, fi.Mode(), tt.wantDir, tt.maxPerm)
		}
	}
}

// benchPatientJSON is a ~1.5 KB Patient, the size the measurements assume.
func benchPatientJSON(id, version string, at time.Time) []byte {
	return benchPatientJSONSize(id, version, at, 1500)
}

// benchPatientJSONSize is benchPatientJSON padded (in its narrative) to size bytes.
func benchPatientJSONSize(id, version string, at time.Time, size int) []byte {
	b := fmt.Appendf(nil, `{"resourceType":"Patient","id":%q,"meta":{"versionId":%q,"lastUpdated":%q},`+
		`"identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"%s"}],`+
		`"name":[{"use":"official","family":"Smith","given":["Jane","Anne"],"prefix":["Mrs"]}],`+
		`"gender":"female","birthDate":"1974-12-25","address":[{"line":["1 Trevelyan Square","Boar Lane"],`+
		`"city":"Leeds","postalCode":"LS1 6AE","country":"GB"}],"text":{"status":"generated","div":"`,
		id, version, at.Format("2006-01-02T15:04:05.000Z07:00"), testNHSNumber(int(crc32.ChecksumIEEE([]byte(id))%(1<<20))))
	b = append(b, strings.Repeat("x", size-len(b)-4)...)
	return append(b, `"}}`...)
}

// benchmarkStoreCreate measures creates/s with 16 concurrent writers, the service's expected load.
func benchmarkStoreCreate(b *testing.B, perWrite bool) {
	var syncs atomic.Int64
	s, err := openJournal(b.TempDir(), nil, time.Now, journalOptions{FsyncPerWrite: perWrite, Sync: func(f *os.File) error {
		syncs.Add(1)
		return f.Sync()
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var next atomic.Int64
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((16 + procs - 1) / procs)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("p%d", next.Add(1))
			if _, err := s.Create(context.Background(), id, func(_, v string, at time.Time) ([]byte, error) {
				return benchPatientJSON(id, v, at), nil
			}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
	b.ReportMetric(float64(b.N)/float64(max(syncs.Load(), 1)), "writes/fsync")
}

func BenchmarkStoreCreateGroupCommit(b *testing.B) { benchmarkStoreCreate(b, false) }

func BenchmarkStoreCreateFsyncPerWrite(b *testing.B) { benchmarkStoreCreate(b, true) }

// BenchmarkStoreReplay100k measures opening a journal of 100,000 patients of ~1.5 KB each.
func BenchmarkStoreReplay100k(b *testing.B) {
	const patients = 100_000
	dir := b.TempDir()
	f, err := os.Create(filepath.Join(dir, journalFileName))
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var size int64
	for i := range patients {
		id := fmt.Sprintf("%08d-0000-4000-8000-000000000000", i)
		rec, err := encodeRecord(patientVersion{ID: id, Version: 1, LastUpdated: at, Body: benchPatientJSON(id, "1", at), Created: true},
			methodCode(http.MethodPost), recordLoc{off: -1})
		if err != nil {
			b.Fatal(err)
		}
		w.Write(rec)
		size += int64(len(rec))
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	for b.Loop() {
		s, err := openJournal(dir, nil, time.Now, journalOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if n := s.ix.n; n != patients {
			b.Fatalf("replayed %d patients, want %d", n, patients)
		}
		s.Close()
	}
	b.ReportMetric(float64(patients)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// TestStoreLockRefusesSecondOpen checks that one DATA_DIR has one store: a second open fails naming
// the directory, and the first keeps working.
func TestStoreLockRefusesSecondOpen(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, time.Now, journalOptions{})
	_, err := openJournal(dir, nil, time.Now, journalOptions{})
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open of %s = %v, want an error naming the directory as in use", dir, err)
	}
	if _, err := s.Create(t.Context(), "a", storeBuild("a")); err != nil {
		t.Errorf("Create on the first store after the refused open = %v", err)
	}
	s.Close()
	s2, err := openJournal(dir, nil, time.Now, journalOptions{})
	if err != nil {
		t.Fatalf("open after the first store closed = %v", err)
	}
	s2.Close()
}

// copyStore copies a store's files into a new directory: what a crash would leave on disk, since
// every acknowledged write is in the files (fsynced) and no other is.
func copyStore(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	for _, name := range []string{journalFileName, checkpointFileName} {
		b, err := os.ReadFile(filepath.Join(from, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// fillStore writes n patients (a create, and an update of every third) and returns their histories.
func fillStore(t *testing.T, s *journalStore, prefix string, n int) {
	t.Helper()
	for i := range n {
		id := fmt.Sprintf("%s%03d", prefix, i)
		if _, err := s.Create(t.Context(), id, storeBuild(id)); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if _, _, err := s.Update(t.Context(), id, "1", http.MethodPut, storeBuild(id)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestStoreCheckpoint checks that opening uses a good checkpoint (decoding only the records after
// it) and gets exactly what a full replay gets: from a clean close, and from a crash after more
// writes than the last checkpoint covers.
func TestStoreCheckpoint(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, time.Now, journalOptions{CheckpointEvery: 4 << 10})
	fillStore(t, s, "a", 40)
	s.finishCheckpoint(false) // let a checkpoint in progress end, as a crash would not
	fillStore(t, s, "b", 3)   // after the last checkpoint, most likely; replayed either way
	crashed := copyStore(t, dir)
	want := allHistories(t, s)
	s.Close()

	for _, tt := range []struct {
		name, dir string
		wantLog   string
	}{
		{"after_close", dir, "records_replayed=0"},
		{"after_crash", crashed, "records_replayed="},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logBuf bytes.Buffer
			s, err := openJournal(tt.dir, slog.New(slog.NewTextHandler(&logBuf, nil)), time.Now, journalOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if !strings.Contains(logBuf.String(), tt.wantLog) || strings.Contains(logBuf.String(), "replaying every record") {
				t.Errorf("open did not use the checkpoint; log:\n%s", logBuf.String())
			}
			if diff := cmp.Diff(want, allHistories(t, s), ignoreLoc); diff != "" {
				t.Errorf("histories from the checkpoint mismatch (-want +got):\n%s", diff)
			}
			if total, _, err := s.Search(t.Context(), searchCriteria{q: patientQuery{Count: 0}}); err != nil || total != 43 {
				t.Errorf("Search() total = %d, %v; want 43", total, err)
			}
			if total, _, _ := s.Search(t.Context(), searchCriteria{q: patientQuery{IDs: [][]string{{"b001"}}, Count: 1}}); total != 1 {
				t.Errorf("Search(_id=b001) total = %d, want 1", total)
			}
		})
	}
}

// TestStoreCheckpointNotTrusted checks that a checkpoint that is damaged, from another format, or
// stale (the journal is not the one it was made from) is never used: opening replays every record,
// says why, and gets what a full replay gets.
func TestStoreCheckpointNotTrusted(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, time.Now, journalOptions{})
	fillStore(t, s, "a", 10)
	want := allHistories(t, s)
	s.Close()
	good, err := os.ReadFile(filepath.Join(dir, checkpointFileName))
	if err != nil {
		t.Fatal(err)
	}
	journal, err := os.ReadFile(filepath.Join(dir, journalFileName))
	if err != nil {
		t.Fatal(err)
	}
	other := t.TempDir() // a journal with other records of the same length
	o := openTestStore(t, other, time.Now, journalOptions{})
	fillStore(t, o, "z", 10)
	o.Close()
	otherJournal, err := os.ReadFile(filepath.Join(other, journalFileName))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(at int) []byte { b := slices.Clone(good); b[at] ^= 0x40; return b }
	for _, tt := range []struct {
		name                string
		checkpoint, journal []byte
		wantReason          string
		want                map[string][]patientVersion
	}{
		{"missing", nil, journal, "no checkpoint", want},
		{"byte_flipped", flip(len(good) / 2), journal, "damaged", want},
		{"checksum_flipped", flip(len(good) - 1), journal, "damaged", want},
		{"truncated", good[:len(good)-10], journal, "damaged", want},
		{"other_format", append([]byte("CAPIDX9\n"), good[8:]...), journal, "not a checkpoint of this format", want},
		{"journal_replaced", good, otherJournal, "does not match the journal", nil},
		{"journal_shortened", good, journal[:len(journal)/2], "does not match the journal", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := t.TempDir()
			if tt.checkpoint != nil {
				os.WriteFile(filepath.Join(d, checkpointFileName), tt.checkpoint, 0o600)
			}
			os.WriteFile(filepath.Join(d, journalFileName), tt.journal, 0o600)
			var logBuf bytes.Buffer
			s, err := openJournal(d, slog.New(slog.NewTextHandler(&logBuf, nil)), time.Now, journalOptions{})
			if err != nil {
				t.Fatalf("open = %v", err)
			}
			defer s.Close()
			if l := logBuf.String(); !strings.Contains(l, "replaying every record") || !strings.Contains(l, tt.wantReason) {
				t.Errorf("open did not fall back to a full replay naming %q; log:\n%s", tt.wantReason, l)
			}
			if tt.want == nil { // the journal's own content, whatever it is
				return
			}
			if diff := cmp.Diff(tt.want, allHistories(t, s), ignoreLoc); diff != "" {
				t.Errorf("histories mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// encodeRecordV1 is a record in format 1 (kind 1: version, lastUpdated, flags, id, body), as the
// store wrote it before format 2.
func encodeRecordV1(id string, version int, ms int64, deleted bool, body []byte) []byte {
	rec := append(make([]byte, recordHeaderSize), recordKindV1)
	rec = binary.AppendUvarint(rec, uint64(version))
	rec = binary.AppendVarint(rec, ms)
	rec = append(rec, boolByte(deleted))
	rec = binary.AppendUvarint(rec, uint64(len(id)))
	rec = append(append(rec, id...), body...)
	sealRecord(rec)
	return rec
}

// TestStoreUpgradesFormat1 opens a journal in the previous format: it is rewritten in format 2 in
// place, with the interactions format 1's history inferred, and every version kept.
func TestStoreUpgradesFormat1(t *testing.T) {
	at := func(k int) time.Time {
		return time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC).Add(time.Duration(k) * time.Second)
	}
	type step struct {
		id      string
		version int
		method  string
		created bool
	}
	steps := []step{{"a", 1, http.MethodPost, true}, {"b", 1, http.MethodPost, true}, {"a", 2, http.MethodPut, false},
		{"a", 3, http.MethodDelete, false}, {"a", 4, http.MethodPut, true}, {"b", 2, http.MethodPut, false}}
	var journal []byte
	want := map[string][]patientVersion{}
	for k, st := range steps {
		w := storeWant(st.id, st.version, at(k), st.method, st.created)
		journal = append(journal, encodeRecordV1(st.id, st.version, at(k).UnixMilli(), w.Deleted, w.Body)...)
		want[st.id] = append([]patientVersion{w}, want[st.id]...)
	}
	journal = append(journal, 0xde, 0xad) // a torn tail, dropped
	var logBuf bytes.Buffer
	s, path, err := reopenJournal(t, journal, &logBuf)
	if err != nil {
		t.Fatalf("open format 1 journal = %v", err)
	}
	if diff := cmp.Diff(want, allHistories(t, s), ignoreLoc); diff != "" {
		t.Errorf("histories after upgrade mismatch (-want +got):\n%s", diff)
	}
	if !strings.Contains(logBuf.String(), "upgraded from format 1") {
		t.Errorf("no log line about the upgrade; log:\n%s", logBuf.String())
	}
	s.Close()
	data, err := os.ReadFile(path)
	if err != nil || len(data) <= recordHeaderSize || data[recordHeaderSize] != recordKindPatient {
		t.Fatalf("journal after upgrade does not start with a format 2 record (%v)", err)
	}
	s, err = openJournal(filepath.Dir(path), nil, time.Now, journalOptions{})
	if err != nil {
		t.Fatalf("reopen after upgrade = %v", err)
	}
	defer s.Close()
	if diff := cmp.Diff(want, allHistories(t, s), ignoreLoc); diff != "" {
		t.Errorf("histories after reopen mismatch (-want +got):\n%s", diff)
	}
}

// TestStoreDiskFull fills a DATA_DIR on a 4 MiB tmpfs until writes fail, then grows it: a write that
// fails for want of space is refused (errStoreFull), leaves nothing behind and stops nothing; reads
// keep working; once there is space writes work again without a restart; and after a restart every
// acknowledged write is there. It needs root (to mount), as CI has.
func TestStoreDiskFull(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("cannot mount a tmpfs at %s (%v): this test needs root, as CI runs it", dir, err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	s := openTestStore(t, dir, time.Now, journalOptions{})
	ctx := t.Context()
	body := func(id string) buildFunc {
		return func(_, v string, at time.Time) ([]byte, error) { return benchPatientJSONSize(id, v, at, 100<<10), nil }
	}
	var acked []patientVersion
	var full error
	for i := 0; full == nil; i++ {
		if i > 100 {
			t.Fatal("4 MiB never filled")
		}
		id := fmt.Sprintf("p%03d", i)
		v, err := s.Create(ctx, id, body(id))
		switch {
		case errors.Is(err, errStoreFull):
			full = err
		case err != nil:
			t.Fatalf("Create(%s) = %v, want success or errStoreFull", id, err)
		default:
			acked = append(acked, v)
		}
	}
	t.Logf("%d creates of 100 KiB acknowledged before the disk was full: %v", len(acked), full)
	journalSize := func() int64 {
		fi, err := os.Stat(filepath.Join(dir, journalFileName))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	if got, want := journalSize(), acked[len(acked)-1].loc.off+int64(acked[len(acked)-1].loc.n); got != want {
		t.Errorf("journal is %d bytes after the refused write, want %d (no partial record)", got, want)
	}
	if !s.Ready() {
		t.Error("Ready() = false: a full disk must not stop the store")
	}
	if got, err := s.Read(ctx, acked[0].ID); err != nil || !bytes.Equal(got.Body, acked[0].Body) {
		t.Errorf("Read while full = %v, want the acknowledged version", err)
	}
	if _, _, err := s.Update(ctx, acked[0].ID, "1", http.MethodPut, body(acked[0].ID)); !errors.Is(err, errStoreFull) {
		t.Errorf("Update while full = %v, want errStoreFull", err)
	}
	// Through HTTP: 507, with Retry-After, in an OperationOutcome, and reads still 200.
	h := newServer(slog.New(slog.DiscardHandler), testConfig(t), testMetrics(), func() bool { return true }, openapiJSON, testDocs(t), s, testVerifier(t), time.Now)
	token := "Bearer " + localTestIssuer(t).token(t, allScopes)
	big := `{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">` + strings.Repeat("x", 200<<10) + `</div>"}}`
	res := do(t, h, fhirReq("POST", "/Patient", big, "Authorization", token))
	oo := decodeBody[operationOutcome](t, res)
	if res.StatusCode != http.StatusInsufficientStorage || res.Header.Get("Retry-After") == "" || len(oo.Issue) != 1 || oo.Issue[0].Code != "exception" {
		t.Errorf("POST /Patient while full = %d, Retry-After %q, %+v; want 507 with Retry-After and one exception issue",
			res.StatusCode, res.Header.Get("Retry-After"), oo.Issue)
	}
	if res := do(t, h, fhirReq("GET", "/Patient/"+acked[1].ID, "", "Authorization", token)); res.StatusCode != http.StatusOK {
		t.Errorf("GET /Patient/%s while full = %d, want 200", acked[1].ID, res.StatusCode)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT, "size=16m"); err != nil {
		t.Fatalf("grow the tmpfs: %v", err)
	}
	if _, _, err := s.Update(ctx, acked[0].ID, "1", http.MethodPut, body(acked[0].ID)); err != nil {
		t.Fatalf("Update once there is space = %v, want success without a restart", err)
	}
	want := allHistories(t, s)
	if len(want) != len(acked) || len(want[acked[0].ID]) != 2 {
		t.Errorf("%d patients (%d versions of %s) before restart, want %d (2)", len(want), len(want[acked[0].ID]), acked[0].ID, len(acked))
	}
	s.Close()
	s = openTestStore(t, dir, time.Now, journalOptions{})
	if diff := cmp.Diff(want, allHistories(t, s), ignoreLoc); diff != "" {
		t.Errorf("histories after restart mismatch (-want +got):\n%s", diff)
	}
}

// TestStoreTypeHistory pages through every version of every Patient, newest first, with and without
// _since, across many history marks and after the clock stepped back, and checks the pages against
// every version the store holds; then again after a restart (the marks are rebuilt from the journal).
func TestStoreTypeHistory(t *testing.T) {
	dir := t.TempDir()
	clock := &testClock{t: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)}
	s := openTestStore(t, dir, clock.now, journalOptions{})
	ctx := t.Context()
	var written []patientVersion // in journal order
	seen := map[recordLoc]bool{}
	for i := range 700 {
		clock.advance(time.Second)
		if i == 500 {
			clock.set(clock.now().Add(-time.Hour)) // the clock steps back; new ids start from it
		}
		id := fmt.Sprintf("h%03d", i%300)
		var v patientVersion
		var err error
		if i%7 == 6 {
			v, _, err = s.Delete(ctx, id)
		} else {
			v, _, err = s.Update(ctx, id, "", http.MethodPut, storeBuild(id))
		}
		if err != nil {
			t.Fatal(err)
		}
		if v.Version > 0 && !seen[v.loc] { // deleting a deleted Patient records nothing
			seen[v.loc] = true
			written = append(written, v)
		}
	}
	check := func(t *testing.T, s *journalStore) {
		for _, since := range []time.Time{{}, written[100].LastUpdated, written[650].LastUpdated, clock.now().Add(time.Hour)} {
			var want []patientVersion
			for _, v := range slices.Backward(written) {
				if !v.LastUpdated.Before(since) {
					want = append(want, v)
				}
			}
			var got []patientVersion
			cursor := ""
			for page := 0; ; page++ {
				vs, next, err := s.TypeHistory(ctx, since, cursor, 50)
				if err != nil || page > 20 {
					t.Fatalf("TypeHistory(%v, %q) = %v (page %d)", since, cursor, err, page)
				}
				got = append(got, vs...)
				if next == "" {
					break
				}
				cursor = next
			}
			if diff := cmp.Diff(want, got, ignoreLoc); diff != "" {
				t.Errorf("type history since %v: %d versions, want %d (-want +got):\n%s", since, len(got), len(want), diff)
			}
		}
	}
	check(t, s)
	s.Close()
	check(t, openTestStore(t, dir, clock.now, journalOptions{}))
}
