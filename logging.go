package main

// Logging: JSON lines on stdout, as slog.JSONHandler writes them, made cheap enough to write one per
// request: lines are batched in memory (bufferedLog) and the common records are formatted without
// slog's general machinery (logHandler).

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// logFlushEvery bounds how long a log line waits in memory before it reaches stdout.
const logFlushEvery = 100 * time.Millisecond

// bufferedLog batches log lines into one write per flush, so a request's log line costs a memory copy
// under a short lock rather than a system call. Lines reach the output within the flush interval, and
// at once on Close; a crash can lose at most that interval's lines.
type bufferedLog struct {
	mu   sync.Mutex
	w    *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

// newBufferedLog starts the flusher, which writes what has been logged to w every interval.
func newBufferedLog(w io.Writer, every time.Duration) *bufferedLog {
	b := &bufferedLog{w: bufio.NewWriterSize(w, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				b.flush()
			case <-b.stop:
				return
			}
		}
	}()
	return b
}

// Write adds a line (or several) to the batch.
func (b *bufferedLog) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Write(p)
}

// flush writes the batch to the output.
func (b *bufferedLog) flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Flush()
}

// Close stops the flusher and writes what is left.
func (b *bufferedLog) Close() error {
	close(b.stop)
	<-b.done
	return b.flush()
}

// logHandler writes exactly what slog.NewJSONHandler(w, nil) writes (a test compares them), but
// formats records whose attributes are plain strings, integers and booleans itself, which is most of
// the cost of the per-request line; anything else (groups, errors, floats, escapes) goes to the
// standard handler.
type logHandler struct {
	w    io.Writer
	std  slog.Handler
	bufs *sync.Pool
}

// newLogHandler returns the handler for w, with the standard one behind it for what it does not format.
func newLogHandler(w io.Writer) *logHandler {
	return &logHandler{w: w, std: slog.NewJSONHandler(w, nil), bufs: &sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}}
}

// Enabled, WithAttrs and WithGroup are the standard handler's: a logger with attributes or groups of
// its own formats through it.
func (h *logHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.std.Enabled(ctx, l) }
func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler          { return h.std.WithAttrs(as) }
func (h *logHandler) WithGroup(name string) slog.Handler             { return h.std.WithGroup(name) }

// Handle writes r as one JSON line, itself when every attribute is plain, else through the standard handler.
func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	bp := h.bufs.Get().(*[]byte)
	defer h.bufs.Put(bp)
	b := (*bp)[:0]
	plain := plainJSON(r.Message) && !r.Time.IsZero() && r.Time.Year() < 10000
	if plain {
		b = append(b, `{"time":"`...)
		b = r.Time.AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","level":"`...)
		b = append(b, r.Level.String()...)
		b = append(b, `","msg":"`...)
		b = append(b, r.Message...)
		b = append(b, '"')
		r.Attrs(func(a slog.Attr) bool {
			v := a.Value
			plain = a.Key != "" && plainJSON(a.Key) && (v.Kind() != slog.KindString || plainJSON(v.String()))
			if !plain {
				return false
			}
			b = append(b, `,"`...)
			b = append(b, a.Key...)
			b = append(b, `":`...)
			switch v.Kind() {
			case slog.KindString:
				b = append(b, '"')
				b = append(b, v.String()...)
				b = append(b, '"')
			case slog.KindInt64:
				b = strconv.AppendInt(b, v.Int64(), 10)
			case slog.KindUint64:
				b = strconv.AppendUint(b, v.Uint64(), 10)
			case slog.KindBool:
				b = strconv.AppendBool(b, v.Bool())
			default:
				plain = false
			}
			return plain
		})
	}
	if !plain {
		return h.std.Handle(ctx, r)
	}
	b = append(b, "}\n"...)
	*bp = b
	_, err := h.w.Write(b)
	return err
}

// plainJSON reports whether s can be written inside JSON quotes as it is: printable ASCII other than
// the quote and backslash, and none of the characters slog escapes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
