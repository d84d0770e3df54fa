package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// lockedBuffer is an io.Writer that goroutines write while the test reads (the dev issuer's output, or
// a log two loggers share).
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestDevIssuer walks the newcomer path: start the dev issuer, configure
// the verifier from its export line, and verify the printed token.
func TestDevIssuer(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var out lockedBuffer
	done := make(chan error, 1)
	go func() { done <- runDevIssuer(ctx, "127.0.0.1:0", "clinicalapi", &out) }()

	pollUntil(t, "dev issuer output", func() bool {
		return strings.Contains(out.String(), "export TOKEN=") && strings.HasSuffix(out.String(), "\n")
	})
	env := map[string]string{}
	for line := range strings.Lines(out.String()) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "export ")
		if !ok {
			continue
		}
		for _, kv := range strings.Fields(rest) {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = strings.Trim(v, "'")
		}
	}
	cfg, err := parseAuthConfig(authEnv(env))
	if err != nil {
		t.Fatalf("parseAuthConfig(dev issuer exports) error = %v\noutput:\n%s", err, out.String())
	}
	v := newVerifier(cfg, nil, nil, nil)
	if _, err := v.refresh(t.Context(), false); err != nil {
		t.Fatalf("refresh() against dev issuer: %v", err)
	}
	got, aerr := v.verify(t.Context(), "Bearer "+env["TOKEN"])
	if aerr != nil {
		t.Fatalf("verify(dev token) error = %v", aerr)
	}
	if diff := cmp.Diff([]string{"user/Patient.read", "user/Patient.write"}, got.Scopes); got.Subject != "dev-user" || diff != "" {
		t.Errorf("verify(dev token) = %+v, want sub dev-user and scopes (-want +got):\n%s", got, diff)
	}
	if ttl := time.Until(got.ExpiresAt); ttl < 11*time.Hour || ttl > 13*time.Hour {
		t.Errorf("dev token expires in %v, want about 12h", ttl)
	}
	// GET /token mints a fresh token that verifies the same way.
	res, err := http.Get(cfg.Issuer + "/token")
	if err != nil {
		t.Fatal(err)
	}
	fresh, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if got, aerr := v.verify(t.Context(), "Bearer "+string(fresh)); aerr != nil || got.Subject != "dev-user" {
		t.Errorf("verify(GET /token) = %+v, %v", got, aerr)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("runDevIssuer() after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("runDevIssuer() did not return after ctx ended")
	}
}

func TestDevIssuerRefusesNonLoopback(t *testing.T) {
	tests := []struct{ addr, audience string }{
		{"0.0.0.0:0", "clinicalapi"},
		{":0", "clinicalapi"},
		{"[::]:0", "clinicalapi"},
		{"10.1.2.3:0", "clinicalapi"},
		{"example.com:80", "clinicalapi"},
		{"127.0.0.1", "clinicalapi"}, // no port
		{"127.0.0.1:0", ""},
	}
	for _, tt := range tests {
		var out lockedBuffer
		// The timeout turns "wrongly started serving" into a failure, not a hang.
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		err := runDevIssuer(ctx, tt.addr, tt.audience, &out)
		cancel()
		if err == nil {
			t.Errorf("runDevIssuer(%q, %q) = nil, want an error", tt.addr, tt.audience)
		}
		if out.String() != "" {
			t.Errorf("runDevIssuer(%q, %q) printed %q before failing", tt.addr, tt.audience, out.String())
		}
	}
}
