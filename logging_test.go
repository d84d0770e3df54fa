package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

func TestBufferedLog(t *testing.T) {
	pr, pw := io.Pipe()
	b := newBufferedLog(pw, 10*time.Millisecond)
	lines := bufio.NewScanner(pr)
	b.Write([]byte("first\n"))
	if !lines.Scan() || lines.Text() != "first" { // arrives by the timer, without Close
		t.Fatalf("first line: %q", lines.Text())
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				fmt.Fprintf(b, "g%d-%d\n", g, i)
			}
		})
	}
	got := make(chan int)
	go func() {
		n := 0
		for lines.Scan() {
			n++
		}
		got <- n
	}()
	wg.Wait()
	b.Close()
	pw.Close()
	if n := <-got; n != 800 {
		t.Errorf("%d lines after Close, want 800", n)
	}
}

// TestLogHandlerMatchesSlog: the fast handler writes byte for byte what slog's JSONHandler writes,
// whether it formats a record itself or hands it on.
func TestLogHandlerMatchesSlog(t *testing.T) {
	at := time.Date(2026, 11, 26, 10, 2, 26, 893911993, time.UTC)
	records := [][]slog.Attr{
		{slog.String("method", "POST"), slog.String("route", "POST /egfr"), slog.Int("status", 200), slog.Int64("duration_us", 134), slog.String("request_id", "e0c60df8-c6cd-45a6-9e97-de079e64b524")},
		{slog.String("correlation_id", "corr-1"), slog.String("sub_hash", "0123abcd"), slog.Bool("ok", true), slog.Uint64("n", 7)},
		{slog.String("q", `say "hi"\n`), slog.String("u", "Núñez"), slog.String("ctl", "a\tb"), slog.String("html", "<b>&</b>")},
		{slog.Float64("f", 0.134), slog.Any("err", errors.New("boom")), slog.Duration("d", time.Second), slog.Group("g", slog.Int("x", 1))},
		{slog.Any("list", []int{1, 2}), slog.Time("t", at), slog.String("", "empty key")},
		{},
	}
	for i, attrs := range records {
		for _, msg := range []string{"request", `odd "msg"`} {
			var want, got bytes.Buffer
			r := slog.NewRecord(at, slog.LevelInfo, msg, 0)
			r.AddAttrs(attrs...)
			if err := slog.NewJSONHandler(&want, nil).Handle(t.Context(), r); err != nil {
				t.Fatal(err)
			}
			if err := newLogHandler(&got).Handle(t.Context(), r); err != nil {
				t.Fatal(err)
			}
			if got.String() != want.String() {
				t.Errorf("record %d %q:\n got %s\nwant %s", i, msg, got.String(), want.String())
			}
		}
	}
}
