package main

// How this service authenticates to the upstream FHIR server (upstream.go): no credentials, a bearer
// token from a file (FHIR_UPSTREAM_TOKEN_FILE), or OAuth2 client credentials (RFC 6749 section 4.4).
// Tokens and secrets never reach a log: errors name files, the token URL, statuses and RFC 6749 error codes only.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// parseUpstreamCredentials reads the one way of authenticating to the upstream, if any.
func parseUpstreamCredentials(getenv func(string) string, cfg *upstreamConfig) error {
	cfg.tokenFile = getenv("FHIR_UPSTREAM_TOKEN_FILE")
	o := oauthConfig{tokenURL: getenv("FHIR_UPSTREAM_TOKEN_URL"), clientID: getenv("FHIR_UPSTREAM_CLIENT_ID"),
		secretFile: getenv("FHIR_UPSTREAM_CLIENT_SECRET_FILE"), scope: getenv("FHIR_UPSTREAM_SCOPE")}
	switch {
	case cfg.tokenFile != "" && o != (oauthConfig{}):
		return errors.New("FHIR_UPSTREAM_TOKEN_FILE and FHIR_UPSTREAM_TOKEN_URL (client credentials) are alternatives: set one")
	case cfg.tokenFile != "":
		if _, err := readSecretFile(cfg.tokenFile); err != nil {
			return fmt.Errorf("FHIR_UPSTREAM_TOKEN_FILE: %w", err)
		}
		return nil
	case o == (oauthConfig{}):
		return nil
	case o.tokenURL == "" || o.clientID == "" || o.secretFile == "":
		return errors.New("FHIR_UPSTREAM_TOKEN_URL, FHIR_UPSTREAM_CLIENT_ID and FHIR_UPSTREAM_CLIENT_SECRET_FILE go together: set all three")
	}
	if err := checkIssuerURL(o.tokenURL); err != nil {
		return fmt.Errorf("FHIR_UPSTREAM_TOKEN_URL: %w", err)
	}
	if _, err := readSecretFile(o.secretFile); err != nil {
		return fmt.Errorf("FHIR_UPSTREAM_CLIENT_SECRET_FILE: %w", err)
	}
	cfg.oauth = &o
	return nil
}

// readSecretFile reads a token or secret file: its content without surrounding white space, never
// empty. The error names the file, never the content.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %w", path, errors.Unwrap(err))
	}
	s := strings.TrimSpace(string(b))
	if s == "" || len(s) > 16<<10 || strings.ContainsAny(s, "\r\n") {
		return "", fmt.Errorf("%s must hold one line, 1 to 16384 characters", path)
	}
	return s, nil
}

// upstreamCredentials gives the Authorization of upstream requests.
type upstreamCredentials interface {
	authorization(ctx context.Context) (string, error)
	refused() // the upstream answered 401: get a new token next time
}

// credentialsError is a failure to get upstream credentials (a 503: nothing was sent).
type credentialsError struct{ reason string }

// Error says what failed, without the credential.
func (e *credentialsError) Error() string { return "upstream credentials: " + e.reason }

// tokenFile is a bearer token in a file, re-read every minute (and after a 401), so a rotated file is
// picked up without a restart.
type tokenFile struct {
	path   string
	now    func() time.Time
	mu     sync.Mutex
	token  string
	readAt time.Time
}

// authorization implements upstreamCredentials.
func (t *tokenFile) authorization(context.Context) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token == "" || t.now().Sub(t.readAt) > time.Minute {
		tok, err := readSecretFile(t.path)
		if err != nil {
			return "", &credentialsError{"FHIR_UPSTREAM_TOKEN_FILE: " + err.Error()}
		}
		t.token, t.readAt = tok, t.now()
	}
	return "Bearer " + t.token, nil
}

// refused implements upstreamCredentials.
func (t *tokenFile) refused() {
	t.mu.Lock()
	t.token = ""
	t.mu.Unlock()
}

// clientCredentials gets tokens by OAuth2 client credentials (RFC 6749 section 4.4) and keeps each
// until shortly before it expires: a fifth of its lifetime, at most a minute, before.
type clientCredentials struct {
	cfg    oauthConfig
	client *http.Client
	now    func() time.Time
	mu     sync.Mutex // held while a token is fetched: one fetch at a time
	token  string
	renew  time.Time
}

// authorization implements upstreamCredentials.
func (c *clientCredentials) authorization(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && c.now().Before(c.renew) {
		return "Bearer " + c.token, nil
	}
	tok, life, err := c.fetch(ctx)
	if err != nil {
		return "", err
	}
	c.token, c.renew = tok, c.now().Add(life-min(time.Minute, life/5))
	return "Bearer " + c.token, nil
}

// refused implements upstreamCredentials.
func (c *clientCredentials) refused() {
	c.mu.Lock()
	c.token = ""
	c.mu.Unlock()
}

// fetch asks the token endpoint for a token, authenticating with HTTP Basic (RFC 6749 section 2.3.1,
// which every server must support), and returns it with its lifetime (5 minutes if it has no
// expires_in). Errors carry the status and the RFC 6749 error code only.
func (c *clientCredentials) fetch(ctx context.Context) (string, time.Duration, error) {
	secret, err := readSecretFile(c.cfg.secretFile)
	if err != nil {
		return "", 0, &credentialsError{"FHIR_UPSTREAM_CLIENT_SECRET_FILE: " + err.Error()}
	}
	form := url.Values{"grant_type": {"client_credentials"}}
	if c.cfg.scope != "" {
		form.Set("scope", c.cfg.scope)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, &credentialsError{"token request: " + err.Error()}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(url.QueryEscape(c.cfg.clientID), url.QueryEscape(secret))
	res, err := c.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return "", 0, &credentialsError{"token endpoint: " + err.Error()}
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	return parseTokenResponse(res.StatusCode, body)
}

// parseTokenResponse reads a token endpoint's answer (RFC 6749 sections 5.1 and 5.2).
func parseTokenResponse(status int, body []byte) (string, time.Duration, error) {
	root, _, jerr := readJSON(body, 8)
	if status != http.StatusOK {
		code := root.member("error").str()
		if !validFHIRCode(strings.ReplaceAll(code, "_", "-")) {
			code = "none given"
		}
		return "", 0, &credentialsError{fmt.Sprintf("token endpoint answered HTTP %d (error: %s)", status, code)}
	}
	tok := root.member("access_token").str()
	if jerr != nil || tok == "" || len(tok) > 16<<10 || !strings.EqualFold(root.member("token_type").str(), "Bearer") {
		return "", 0, &credentialsError{"token endpoint's answer has no Bearer access_token"}
	}
	life := 5 * time.Minute
	if e := root.member("expires_in"); e != nil {
		n, err := strconv.Atoi(e.text)
		if e.kind != jsonNumber || err != nil || n < 1 {
			return "", 0, &credentialsError{"token endpoint's expires_in is not a positive whole number"}
		}
		life = time.Duration(n) * time.Second
	}
	return tok, life, nil
}
