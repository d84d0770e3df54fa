package main

// OIDC bearer-token (JWT) verification, stdlib only.
//
// The service accepts access tokens issued by one configured OpenID Connect
// issuer (NHS CIS2, NHS login, or the local dev issuer below). Every check
// here exists because a widely used JWT library once got it wrong; the
// comments name the failure each check prevents. References:
// shared/reference/conventions.md sections 4 and 5, RFC 7515 (JWS),
// RFC 7517 (JWK), RFC 7518 (JWA), RFC 7519 (JWT), RFC 8725 (JWT BCP),
// RFC 6750 (bearer tokens).

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// maxTokenBytes bounds the work an unauthenticated caller can make us do
	// (base64 and JSON decoding happen before the signature is checked).
	// Real CIS2 and NHS login access tokens are 1-2 KiB.
	maxTokenBytes = 8 << 10

	// maxIssuerDocBytes caps the discovery document and the JWKS, so a
	// misbehaving or compromised issuer cannot exhaust our memory;
	// maxIssuerDocDepth caps their nesting (a JWKS nests three levels).
	maxIssuerDocBytes = 1 << 20
	maxIssuerDocDepth = 32

	// issuerFetchTimeout bounds one discovery+JWKS round trip; a token check
	// that triggers a refetch waits at most this long.
	issuerFetchTimeout = 5 * time.Second

	// jwksRefetchInterval is the minimum time between two JWKS fetches caused
	// by tokens with an unknown kid. The kid is attacker-chosen, so without
	// this limit random kids would turn every request into a fetch from the
	// issuer (buildkite/cleanroom#496). It is also the worst-case delay before
	// a freshly rotated key is accepted.
	jwksRefetchInterval = 15 * time.Second

	// jwksRefreshPeriod is how often the background loop refreshes the JWKS
	// even without unknown kids, so removed (possibly compromised) keys stop
	// being trusted within this period.
	jwksRefreshPeriod = time.Hour

	// Retry backoff for background fetches that fail (issuer down at startup).
	jwksRetryMin = time.Second
	jwksRetryMax = time.Minute

	// tokenLeeway tolerates clock skew between us and the issuer for exp and
	// nbf. The issue allows at most 60 s; we take 30 s because every second
	// of leeway is a second an expired token still works, and NTP-synced
	// hosts are within a second of each other.
	tokenLeeway = 30 * time.Second

	// maxIssuedAtSkew is how far in the future iat may be (the 60 s).
	// A token "issued" further ahead was minted by a broken or hostile clock.
	maxIssuedAtSkew = 60 * time.Second

	// minRSABits is the smallest RSA modulus we accept in the JWKS. Go itself
	// refuses keys under 1024 bits; 2048 is the NIST SP 800-131A floor for
	// signatures and what CIS2 and NHS login publish, so anything smaller is
	// a misconfiguration or an attack and is skipped.
	minRSABits = 2048
)

// NHSD-API-ErrorOrWarningCode values
// (https://fhir.nhs.uk/CodeSystem/NHSD-API-ErrorOrWarningCode). The handler
// maps Missing/Invalid/Expired to 401 and Denied (valid token, no scope) to 403.
const (
	authCodeMissing = "ACCESS_TOKEN_MISSING"
	authCodeInvalid = "ACCESS_TOKEN_INVALID"
	authCodeExpired = "ACCESS_TOKEN_EXPIRED"
	authCodeDenied  = "ACCESS_DENIED"
)

// supportedJWTAlgs is the set OIDC_ALGORITHMS may choose from. HS* is absent on
// purpose: with a public JWKS, an HMAC "secret" would be the public key
// (algorithm confusion), and "none" is never acceptable.
func supportedJWTAlgs() []string { return []string{"RS256", "RS384", "RS512", "PS256", "ES256"} }

// authConfig is the validated auth part of the service configuration.
type authConfig struct {
	// Enabled is false when neither OIDC_ISSUER nor OIDC_AUDIENCE is set:
	// the service then runs without token checks (local development).
	Enabled bool
	// Issuer must equal the token's iss and the discovery document's issuer
	// byte for byte (OIDC Discovery 1.0 section 4.3).
	Issuer string
	// Audience must appear in the token's aud; it is this API's identifier,
	// not a client ID, so ID tokens for some other client are refused.
	Audience string
	// Algorithms is the allow-list of JWS alg values, from OIDC_ALGORITHMS.
	Algorithms []string
	// EGFRRequired makes POST /egfr require a token (EGFR_AUTH=required);
	// otherwise /egfr stays open for the handbook's anonymous calculator use.
	EGFRRequired bool
}

// parseAuthConfig reads and validates the OIDC_* and EGFR_AUTH variables
// through getenv, so bad configuration fails at startup rather than as a
// 401 on the first request.
func parseAuthConfig(getenv func(string) string) (authConfig, error) {
	var cfg authConfig
	issuer := strings.TrimSpace(getenv("OIDC_ISSUER"))
	audience := strings.TrimSpace(getenv("OIDC_AUDIENCE"))
	switch {
	case issuer != "" && audience == "":
		return authConfig{}, errors.New("OIDC_ISSUER is set but OIDC_AUDIENCE is empty: set both or neither")
	case issuer == "" && audience != "":
		return authConfig{}, errors.New("OIDC_AUDIENCE is set but OIDC_ISSUER is empty: set both or neither")
	case issuer != "":
		if err := checkIssuerURL(issuer); err != nil {
			return authConfig{}, fmt.Errorf("OIDC_ISSUER: %w", err)
		}
		cfg.Enabled, cfg.Issuer, cfg.Audience = true, issuer, audience
	}

	algs, err := parseAlgorithms(getenv("OIDC_ALGORITHMS"))
	if err != nil {
		return authConfig{}, fmt.Errorf("OIDC_ALGORITHMS: %w", err)
	}
	cfg.Algorithms = algs

	switch mode := strings.TrimSpace(getenv("EGFR_AUTH")); mode {
	case "", "optional":
	case "required":
		if !cfg.Enabled {
			return authConfig{}, errors.New("EGFR_AUTH=required needs OIDC_ISSUER and OIDC_AUDIENCE")
		}
		cfg.EGFRRequired = true
	default:
		return authConfig{}, fmt.Errorf("EGFR_AUTH: %q is not one of optional, required", mode)
	}
	return cfg, nil
}

// parseAlgorithms parses the comma-separated allow-list. JWS alg names are
// case-sensitive (RFC 7515 section 4.1.1), so "rs256" is an error rather
// than silently matching.
func parseAlgorithms(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return []string{"RS256"}, nil
	}
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		alg := strings.TrimSpace(item)
		if alg == "" {
			return nil, errors.New("empty algorithm in list")
		}
		if !slices.Contains(supportedJWTAlgs(), alg) {
			return nil, fmt.Errorf("unsupported algorithm %q (allowed: %s)", alg, strings.Join(supportedJWTAlgs(), ", "))
		}
		if !slices.Contains(out, alg) {
			out = append(out, alg)
		}
	}
	return out, nil
}

// checkIssuerURL requires https so keys cannot be swapped in transit. Plain
// http is allowed only for loopback hosts, which never leave the machine:
// that is what tests and the dev issuer use.
func checkIssuerURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a valid URL")
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return errors.New("must be an absolute URL with a host and no user info, query or fragment")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopbackHost(u.Hostname()) {
			return nil
		}
		return errors.New("must use https (http is allowed only for loopback hosts)")
	default:
		return errors.New("must use https")
	}
}

// isLoopbackHost reports whether host is localhost, 127.0.0.0/8 or ::1.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tokenClaims is what handlers may use from a verified token.
type tokenClaims struct {
	Subject   string
	Scopes    []string
	ExpiresAt time.Time
}

// authError classifies a failure for the 401/403 response; Code is the NHS
// NHSD-API-ErrorOrWarningCode (ACCESS_TOKEN_MISSING, ACCESS_TOKEN_INVALID,
// ACCESS_TOKEN_EXPIRED, ACCESS_DENIED), Description a short safe sentence for
// the client (never echo the token).
type authError struct {
	Code        string
	Description string
}

// Error lets an authError travel as an error (e.g. into a log line); it
// holds only the code and the client-safe description.
func (e *authError) Error() string { return e.Code + ": " + e.Description }

// challenge is the RFC 6750 WWW-Authenticate value for e: no error code when
// credentials are absent (section 3.1), invalid_token for a bad or expired
// token, insufficient_scope for a 403.
func (e *authError) challenge() string {
	switch e.Code {
	case authCodeMissing:
		return `Bearer`
	case authCodeDenied:
		return `Bearer error="insufficient_scope"`
	default:
		return `Bearer error="invalid_token"`
	}
}

// invalidTokenError is the common 401 case: the token is present but unusable.
func invalidTokenError(desc string) *authError {
	return &authError{Code: authCodeInvalid, Description: desc}
}

// numTokenOutcomes is the number of token verification outcomes the metrics count.
const numTokenOutcomes = 4

// tokenOutcomeLabels are the outcome label values, by tokenOutcome.
func tokenOutcomeLabels() [numTokenOutcomes]string {
	return [numTokenOutcomes]string{"valid", "missing", "invalid", "expired"}
}

// tokenOutcome is the index of a verification result in tokenOutcomeLabels.
func tokenOutcome(aerr *authError) int {
	switch {
	case aerr == nil:
		return 0
	case aerr.Code == authCodeMissing:
		return 1
	case aerr.Code == authCodeExpired:
		return 3
	}
	return 2
}

// verifier checks bearer tokens against one issuer's JWKS. It is safe for
// concurrent use; build it once in run and share it between handlers.
type verifier struct {
	cfg    authConfig
	algs   map[string]bool
	client *http.Client
	now    func() time.Time
	log    *slog.Logger

	// retryMin/retryMax bound the background retry backoff; fields rather
	// than constants only so tests need not wait seconds.
	retryMin, retryMax time.Duration

	loaded atomic.Bool // a JWKS has been fetched successfully at least once

	mu        sync.Mutex
	keys      map[string]*verifyKey // by kid
	lastFetch time.Time             // start of the last fetch attempt, by v.now
	inflight  *jwksFetch            // non-nil while a fetch runs; others wait on it

	// verified holds tokens whose signature and claims passed, by SHA-256 of the token, so a client
	// reusing its token (the normal case) costs a hash and a map lookup instead of an RSA or ECDSA
	// verification. Expiry is re-checked on every hit (nbf and iat can only have passed since). The
	// cache is emptied whenever the key set is replaced, so a key withdrawn from the JWKS stops
	// vouching for its tokens at the next refresh, and when it reaches maxVerifiedTokens.
	verifiedMu  sync.RWMutex
	verified    map[[sha256.Size]byte]tokenClaims
	keysVersion uint64 // bumped with each new key set; a verification that raced one is not cached

	// For the metrics (metrics.go): key fetches, failed ones, and verifications by tokenOutcome.
	jwksFetches, jwksFailures atomic.Uint64
	verifications             [numTokenOutcomes]atomic.Uint64
}

// maxVerifiedTokens bounds the verified-token cache (its entries are a few hundred bytes each).
const maxVerifiedTokens = 4096

// jwksFetch lets concurrent callers share one fetch (a tiny singleflight).
type jwksFetch struct {
	done chan struct{}
	err  error
}

// verifyKey is a parsed JWK usable for signature checks.
type verifyKey struct {
	alg string // the JWK's own alg, "" if it states none
	rsa *rsa.PublicKey
	ec  *ecdsa.PublicKey
}

// newVerifier builds a verifier; call start to load keys. client may be nil
// (a client with a 5 s timeout is used); now is injected so tests can move
// time for token lifetimes and the refetch rate limit without sleeping.
func newVerifier(cfg authConfig, client *http.Client, now func() time.Time, log *slog.Logger) *verifier {
	if client == nil {
		client = &http.Client{Timeout: issuerFetchTimeout}
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	algs := make(map[string]bool, len(cfg.Algorithms))
	for _, a := range cfg.Algorithms {
		algs[a] = true
	}
	return &verifier{
		cfg: cfg, algs: algs, client: client, now: now, log: log,
		retryMin: jwksRetryMin, retryMax: jwksRetryMax,
		keys:     map[string]*verifyKey{},
		verified: map[[sha256.Size]byte]tokenClaims{},
	}
}

// ready reports whether keys have been loaded, for /readyz: until then every
// token would be rejected, so the orchestrator should not send traffic.
// With auth disabled there is nothing to wait for.
func (v *verifier) ready() bool {
	return !v.cfg.Enabled || v.loaded.Load()
}

// start fetches the JWKS in the background, retrying with exponential
// backoff until the first success, then refreshing every jwksRefreshPeriod,
// until ctx ends. It returns immediately.
func (v *verifier) start(ctx context.Context) {
	if !v.cfg.Enabled {
		return
	}
	go func() {
		backoff := v.retryMin
		for {
			wait := jwksRefreshPeriod
			if _, err := v.refresh(ctx, false); err != nil {
				if ctx.Err() != nil {
					return
				}
				v.log.Warn("jwks fetch failed", "issuer", v.cfg.Issuer, "err", err, "retry_in", backoff.String())
				wait = backoff
				backoff = min(backoff*2, v.retryMax)
			} else {
				backoff = v.retryMin
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}()
}

// refresh fetches discovery and the JWKS and replaces the key set on
// success (on failure the old keys stay: an issuer blip must not log
// everyone out). Concurrent callers share one fetch. When limited is true
// (unknown-kid path), no fetch starts within jwksRefetchInterval of the
// previous attempt (skipped is then true); failed attempts count, so a down
// issuer is not hammered.
func (v *verifier) refresh(ctx context.Context, limited bool) (skipped bool, err error) {
	v.mu.Lock()
	if f := v.inflight; f != nil {
		v.mu.Unlock()
		select {
		case <-f.done:
			return false, f.err
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	now := v.now()
	if limited && !v.lastFetch.IsZero() && now.Sub(v.lastFetch) < jwksRefetchInterval {
		v.mu.Unlock()
		return true, nil
	}
	f := &jwksFetch{done: make(chan struct{})}
	v.inflight, v.lastFetch = f, now
	v.mu.Unlock()

	keys, err := v.fetchKeys(ctx)

	v.mu.Lock()
	if err == nil {
		v.keys = keys
		v.loaded.Store(true)
	}
	f.err = err
	v.inflight = nil
	v.mu.Unlock()
	if err == nil {
		v.verifiedMu.Lock()
		clear(v.verified)
		v.keysVersion++
		v.verifiedMu.Unlock()
	}
	close(f.done)
	v.jwksFetches.Add(1)
	if err != nil {
		v.jwksFailures.Add(1)
	}
	switch {
	case err == nil:
		v.log.Info("jwks loaded", "issuer", v.cfg.Issuer, "keys", len(keys))
	case limited: // logged here, once per fetch, not once per waiting request
		v.log.Warn("jwks refetch for unknown kid failed", "issuer", v.cfg.Issuer, "err", err)
	}
	return false, err
}

// fetchKeys performs OIDC discovery then fetches and parses the JWKS.
func (v *verifier) fetchKeys(ctx context.Context) (map[string]*verifyKey, error) {
	ctx, cancel := context.WithTimeout(ctx, issuerFetchTimeout)
	defer cancel()

	discoveryURL := strings.TrimSuffix(v.cfg.Issuer, "/") + "/.well-known/openid-configuration"
	body, err := v.get(ctx, discoveryURL)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	doc, _, jerr := readJSON(body, maxIssuerDocDepth)
	if jerr != nil {
		return nil, errors.New("discovery: not a JSON object")
	}
	// OIDC Discovery 4.3: a mismatch means we were pointed at (or
	// redirected to) a different issuer, whose keys we must not trust.
	if iss := doc.member("issuer").str(); iss != v.cfg.Issuer {
		return nil, fmt.Errorf("discovery: issuer %q does not match configured %q", iss, v.cfg.Issuer)
	}
	jwksURI := doc.member("jwks_uri").str()
	if err := checkIssuerURL(jwksURI); err != nil {
		return nil, fmt.Errorf("discovery: jwks_uri: %w", err)
	}

	body, err = v.get(ctx, jwksURI)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	keys, skipped, err := parseJWKS(body)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	for _, s := range skipped {
		v.log.Warn("jwks key skipped", "issuer", v.cfg.Issuer, "reason", s)
	}
	if len(keys) == 0 {
		return nil, errors.New("jwks: no usable signing keys")
	}
	return keys, nil
}

// get fetches url and returns the body, capped at maxIssuerDocBytes.
func (v *verifier) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	res, err := v.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("unexpected status %d", res.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, maxIssuerDocBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxIssuerDocBytes {
		return nil, fmt.Errorf("response larger than %d bytes", maxIssuerDocBytes)
	}
	return body, nil
}

// parseJWKS parses a JWK Set. A key we cannot use (encryption key, unknown
// kty, weak RSA, point off the curve, no kid) is skipped and reported
// rather than failing the set: issuers publish keys for other consumers,
// and one odd key must not lock everyone out. The first key for a kid wins.
func parseJWKS(data []byte) (keys map[string]*verifyKey, skipped []string, err error) {
	set, _, jerr := readJSON(data, maxIssuerDocDepth)
	if jerr != nil {
		return nil, nil, errors.New("decode: not a JSON object")
	}
	list := set.member("keys")
	if list != nil && list.kind != jsonArray && list.kind != jsonNull {
		return nil, nil, errors.New("decode: keys is not an array")
	}
	keys = map[string]*verifyKey{}
	for i, raw := range list.elems() {
		kid, k, err := parseJWK(raw)
		if err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): %v", i, kid, err))
			continue
		}
		if _, dup := keys[kid]; dup {
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): duplicate kid", i, kid))
			continue
		}
		keys[kid] = k
	}
	return keys, skipped, nil
}

// parseJWK parses one public signing key (RFC 7517, RFC 7518 section 6).
func parseJWK(j *jsonNode) (string, *verifyKey, error) {
	if j.kind != jsonObject {
		return "", nil, errors.New("decode: not a JSON object")
	}
	kid := j.member("kid").str()
	if kid == "" {
		return "", nil, errors.New("no kid (tokens must name their key)")
	}
	if use := j.member("use").str(); use != "" && use != "sig" {
		return kid, nil, fmt.Errorf("use %q is not sig", use)
	}
	if ops := j.member("key_ops"); ops != nil && !slices.ContainsFunc(ops.elems(), func(op *jsonNode) bool { return op.str() == "verify" }) {
		return kid, nil, errors.New("key_ops does not include verify")
	}
	k := &verifyKey{alg: j.member("alg").str()}
	switch kty := j.member("kty").str(); kty {
	case "RSA":
		pub, err := parseRSAJWK(j.member("n").str(), j.member("e").str())
		if err != nil {
			return kid, nil, err
		}
		k.rsa = pub
	case "EC":
		if crv := j.member("crv").str(); crv != "P-256" {
			return kid, nil, fmt.Errorf("unsupported curve %q", crv)
		}
		pub, err := parseP256JWK(j.member("x").str(), j.member("y").str())
		if err != nil {
			return kid, nil, err
		}
		k.ec = pub
	default:
		// Notably "oct": a symmetric key must never verify anything here.
		return kid, nil, fmt.Errorf("unsupported kty %q", kty)
	}
	return kid, k, nil
}

// parseRSAJWK builds an RSA public key from base64url n and e, refusing
// moduli under minRSABits and exponents RSA verification would mishandle.
func parseRSAJWK(n64, e64 string) (*rsa.PublicKey, error) {
	nb, err := decodeSegment(n64)
	if err != nil || len(nb) == 0 {
		return nil, errors.New("bad RSA n")
	}
	eb, err := decodeSegment(e64)
	if err != nil || len(eb) == 0 || len(eb) > 4 {
		return nil, errors.New("bad RSA e")
	}
	n := new(big.Int).SetBytes(nb)
	if n.BitLen() < minRSABits {
		return nil, fmt.Errorf("RSA key is %d bits, minimum %d", n.BitLen(), minRSABits)
	}
	if n.Bit(0) == 0 {
		return nil, errors.New("RSA modulus is even")
	}
	e := new(big.Int).SetBytes(eb).Int64()
	if e < 3 || e%2 == 0 || e > math.MaxInt32 {
		return nil, errors.New("bad RSA exponent")
	}
	return &rsa.PublicKey{N: n, E: int(e)}, nil
}

// parseP256JWK rejects points not on the curve: invalid-curve attacks feed
// such points to leak key material or forge signatures.
func parseP256JWK(x64, y64 string) (*ecdsa.PublicKey, error) {
	x, err := decodeSegment(x64)
	if err != nil || len(x) != 32 {
		return nil, errors.New("bad EC x")
	}
	y, err := decodeSegment(y64)
	if err != nil || len(y) != 32 {
		return nil, errors.New("bad EC y")
	}
	point := append(append([]byte{4}, x...), y...)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, errors.New("EC point is not on P-256")
	}
	return pub, nil
}

// lookupKey returns the key for kid, refetching the JWKS (rate limited) if
// the kid is unknown, which is how a rotated key gets picked up.
func (v *verifier) lookupKey(ctx context.Context, kid string) *verifyKey {
	v.mu.Lock()
	k := v.keys[kid]
	v.mu.Unlock()
	if k != nil {
		return k
	}
	// WithoutCancel: the fetch is shared with other waiters, so one client
	// hanging up must not abort it; fetchKeys bounds it with a timeout.
	// Errors are logged by refresh; the caller only needs "still unknown".
	_, _ = v.refresh(context.WithoutCancel(ctx), true)
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.keys[kid]
}

// verify parses "Bearer <token>" and returns the token's claims if the
// token is well-formed, signed by a current issuer key with an allowed
// algorithm, and valid for this audience now. The order matters: nothing
// from the payload is trusted before the signature is checked.
func (v *verifier) verify(ctx context.Context, authorizationHeader string) (claims tokenClaims, aerr *authError) {
	defer func() { v.verifications[tokenOutcome(aerr)].Add(1) }()
	if !v.cfg.Enabled {
		return tokenClaims{}, invalidTokenError("Authentication is not configured on this server.")
	}
	token, aerr := bearerToken(authorizationHeader)
	if aerr != nil {
		return tokenClaims{}, aerr
	}
	if len(token) > maxTokenBytes {
		return tokenClaims{}, invalidTokenError("The access token is too large.")
	}
	sum := sha256.Sum256([]byte(token))
	v.verifiedMu.RLock()
	claims, hit := v.verified[sum]
	version := v.keysVersion
	v.verifiedMu.RUnlock()
	if hit {
		if !v.now().Before(claims.ExpiresAt.Add(tokenLeeway)) {
			return tokenClaims{}, &authError{Code: authCodeExpired, Description: "The access token has expired."}
		}
		return claims, nil
	}
	claims, aerr = v.verifyUncached(ctx, token)
	if aerr == nil {
		v.verifiedMu.Lock()
		if len(v.verified) >= maxVerifiedTokens {
			clear(v.verified)
		}
		if v.keysVersion == version {
			v.verified[sum] = claims
		}
		v.verifiedMu.Unlock()
	}
	return claims, aerr
}

// verifyUncached checks a token's structure, signature and claims.
func (v *verifier) verifyUncached(ctx context.Context, token string) (tokenClaims, *authError) {
	hdrB64, payloadB64, sigB64, ok := splitJWS(token)
	hdrJSON, err1 := decodeSegment(hdrB64)
	payload, err2 := decodeSegment(payloadB64)
	sig, err3 := decodeSegment(sigB64)
	if !ok || err1 != nil || err2 != nil || err3 != nil {
		return tokenClaims{}, invalidTokenError("The access token is not a well-formed signed JWT.")
	}

	alg, kid, aerr := v.checkHeader(hdrJSON)
	if aerr != nil {
		return tokenClaims{}, aerr
	}
	key := v.lookupKey(ctx, kid)
	if key == nil {
		return tokenClaims{}, invalidTokenError("The access token is signed with an unknown key.")
	}
	if key.alg != "" && key.alg != alg {
		return tokenClaims{}, invalidTokenError("The access token's algorithm does not match its key.")
	}
	signingInput := token[:len(hdrB64)+1+len(payloadB64)]
	if aerr := verifySignature(alg, key, []byte(signingInput), sig); aerr != nil {
		return tokenClaims{}, aerr
	}
	return v.checkClaims(payload)
}

// bearerToken extracts the token from an Authorization header (RFC 6750
// section 2.1). A missing header, another scheme, or an empty token all
// mean "no bearer credentials" (RFC 6750 section 3.1), hence MISSING.
func bearerToken(h string) (string, *authError) {
	scheme, token, _ := strings.Cut(h, " ")
	switch {
	case h != "" && !strings.EqualFold(scheme, "Bearer"):
		return "", &authError{Code: authCodeMissing, Description: "The Authorization header must use the Bearer scheme."}
	case token == "":
		return "", &authError{Code: authCodeMissing, Description: "An access token is required."}
	}
	return token, nil
}

// splitJWS splits a compact JWS into exactly three non-empty segments made
// only of the base64url alphabet. The alphabet check matters: Go's base64
// decoder silently skips \r and \n, and padding or +/ would mean two
// encodings of one token.
func splitJWS(token string) (h, p, s string, ok bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || slices.Contains(parts, "") {
		return "", "", "", false
	}
	for _, part := range parts {
		for i := 0; i < len(part); i++ {
			c := part[i]
			if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "", "", "", false
			}
		}
	}
	return parts[0], parts[1], parts[2], true
}

// decodeSegment decodes unpadded base64url (JWS segments, JWK members);
// Strict rejects non-zero trailing bits, so each has exactly one encoding.
func decodeSegment(s string) ([]byte, error) {
	return base64.RawURLEncoding.Strict().DecodeString(s)
}

// checkHeader validates the JOSE header and returns its alg and kid. The strict reader (json.go)
// matters here: decoding into a struct would let "ALG" fill the Alg field (encoding/json matches keys
// case-insensitively), and duplicate keys are refused because encoding/json keeps the last one while
// other parsers keep the first.
func (v *verifier) checkHeader(data []byte) (alg, kid string, aerr *authError) {
	bad := invalidTokenError("The access token header is invalid.")
	hdr, ok := jwtObject(data)
	if !ok {
		return "", "", bad
	}
	// Keys from a URL or embedded in the token would let the token vouch for itself; crit would
	// oblige us to understand extensions we do not know.
	for _, name := range []string{"jku", "x5u", "jwk", "x5c", "crit"} {
		if hdr.member(name) != nil {
			return "", "", invalidTokenError("The access token header contains an unsupported parameter.")
		}
	}
	alg, okAlg := jwtString(hdr, "alg")
	kid, okKid := jwtString(hdr, "kid")
	if !okAlg || !okKid || kid == "" {
		return "", "", bad
	}
	if alg == "none" || strings.HasPrefix(alg, "HS") || !v.algs[alg] {
		return "", "", invalidTokenError("The access token's signing algorithm is not accepted.")
	}
	if hdr.member("typ") != nil {
		if typ, ok := jwtString(hdr, "typ"); !ok || !(strings.EqualFold(typ, "JWT") || strings.EqualFold(typ, "at+jwt")) {
			return "", "", bad
		}
	}
	return alg, kid, nil
}

// verifySignature checks sig over input with key, requiring the key type to
// fit alg (so an EC kid cannot be paired with RS256 and vice versa).
func verifySignature(alg string, key *verifyKey, input, sig []byte) *authError {
	wrongKey := invalidTokenError("The access token's algorithm does not match its key.")
	badSig := invalidTokenError("The access token signature is invalid.")
	switch alg {
	case "RS256", "RS384", "RS512", "PS256":
		if key.rsa == nil {
			return wrongKey
		}
		hash, digest := jwsDigest(alg, input)
		var err error
		if alg == "PS256" {
			err = rsa.VerifyPSS(key.rsa, hash, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: hash})
		} else {
			err = rsa.VerifyPKCS1v15(key.rsa, hash, digest, sig)
		}
		if err != nil {
			return badSig
		}
		return nil
	case "ES256":
		if key.ec == nil {
			return wrongKey
		}
		// JWS uses raw R||S (RFC 7518 section 3.4), not ASN.1 DER, so
		// VerifyASN1 is wrong here and a DER signature must fail.
		if len(sig) != 64 {
			return badSig
		}
		r := new(big.Int).SetBytes(sig[:32])
		s := new(big.Int).SetBytes(sig[32:])
		_, digest := jwsDigest(alg, input)
		if !ecdsa.Verify(key.ec, digest, r, s) {
			return badSig
		}
		return nil
	default:
		return invalidTokenError("The access token's signing algorithm is not accepted.")
	}
}

// jwsDigest hashes input with the hash alg names.
func jwsDigest(alg string, input []byte) (crypto.Hash, []byte) {
	switch alg {
	case "RS384":
		d := sha512.Sum384(input)
		return crypto.SHA384, d[:]
	case "RS512":
		d := sha512.Sum512(input)
		return crypto.SHA512, d[:]
	default:
		d := sha256.Sum256(input)
		return crypto.SHA256, d[:]
	}
}

// checkClaims validates the registered claims of a signature-verified payload.
func (v *verifier) checkClaims(payload []byte) (tokenClaims, *authError) {
	c, ok := jwtObject(payload)
	if !ok {
		return tokenClaims{}, invalidTokenError("The access token claims are invalid.")
	}
	now := v.now()
	if iss, ok := jwtString(c, "iss"); !ok || iss != v.cfg.Issuer {
		return tokenClaims{}, invalidTokenError("The access token was not issued by the expected issuer.")
	}
	if !audienceContains(c.member("aud"), v.cfg.Audience) {
		return tokenClaims{}, invalidTokenError("The access token is not intended for this API.")
	}
	exp, ok, err := jwtNumericDate(c, "exp")
	if err != nil || !ok {
		return tokenClaims{}, invalidTokenError("The access token has no valid expiry time.")
	}
	if !now.Before(exp.Add(tokenLeeway)) {
		return tokenClaims{}, &authError{Code: authCodeExpired, Description: "The access token has expired."}
	}
	nbf, ok, err := jwtNumericDate(c, "nbf")
	if err != nil || ok && now.Add(tokenLeeway).Before(nbf) {
		return tokenClaims{}, invalidTokenError("The access token is not yet valid.")
	}
	iat, ok, err := jwtNumericDate(c, "iat")
	if err != nil || ok && iat.After(now.Add(maxIssuedAtSkew)) {
		return tokenClaims{}, invalidTokenError("The access token's issue time is invalid.")
	}
	sub, ok := jwtString(c, "sub")
	if !ok || sub == "" {
		return tokenClaims{}, invalidTokenError("The access token has no subject.")
	}
	var scopes []string
	if c.member("scope") != nil {
		scope, ok := jwtString(c, "scope")
		if !ok {
			return tokenClaims{}, invalidTokenError("The access token's scope claim is invalid.")
		}
		for s := range strings.SplitSeq(scope, " ") { // RFC 6749 section 3.3: separated by spaces
			if s != "" {
				scopes = append(scopes, s)
			}
		}
	}
	return tokenClaims{Subject: sub, Scopes: scopes, ExpiresAt: exp}, nil
}

// maxJWTJSONDepth stops deeply nested claims from costing stack; real tokens nest two or three levels.
const maxJWTJSONDepth = 32

// jwtObject reads a token header or claim set: exactly one JSON object with no duplicate key at any
// depth and nothing after it. A token whose meaning depends on which parser reads it is refused.
func jwtObject(data []byte) (*jsonNode, bool) {
	root, dups, err := readJSON(data, maxJWTJSONDepth)
	return root, err == nil && len(dups) == 0
}

// jwtString returns the member name of c if it is present and a JSON string.
func jwtString(c *jsonNode, name string) (string, bool) {
	n := c.member(name)
	return n.str(), n != nil && n.kind == jsonString
}

// audienceContains accepts aud as a string or an array of strings (RFC 7519 section 4.1.3).
// Handling both forms explicitly is the fix for CVE-2020-26160, where an array aud skipped the
// check entirely.
func audienceContains(aud *jsonNode, want string) bool {
	switch {
	case aud == nil:
		return false
	case aud.kind == jsonString:
		return aud.text == want
	case aud.kind != jsonArray:
		return false
	}
	found := false
	for _, a := range aud.items {
		if a.kind != jsonString {
			return false
		}
		found = found || a.text == want
	}
	return found
}

// jwtNumericDate reads a NumericDate claim (RFC 7519 section 2): a JSON number of seconds, possibly
// fractional. Strings, booleans and null are errors rather than "absent", so a mistyped exp cannot
// disable expiry.
func jwtNumericDate(c *jsonNode, name string) (time.Time, bool, error) {
	n := c.member(name)
	if n == nil {
		return time.Time{}, false, nil
	}
	if n.kind != jsonNumber {
		return time.Time{}, true, fmt.Errorf("%s is not a number", name)
	}
	// Every whole number in range is exact in a float64, so one parse serves both forms.
	f, err := strconv.ParseFloat(n.text, 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > 1<<40 {
		return time.Time{}, true, fmt.Errorf("%s out of range", name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// hasScope reports whether c grants FHIR Patient read (write false) or
// write (write true) access, using SMART on FHIR v1 scope names. Write does
// not imply read: a system that only submits data should not read it back.
func hasScope(c tokenClaims, write bool) bool {
	want := []string{"user/Patient.read", "system/Patient.read", "user/Patient.*", "system/Patient.*"}
	if write {
		want = []string{"user/Patient.write", "system/Patient.write", "user/Patient.*", "system/Patient.*"}
	}
	for _, s := range c.Scopes {
		if slices.Contains(want, s) {
			return true
		}
	}
	return false
}

// subjectHash returns the first 16 hex digits of SHA-256(sub), so request
// logs can correlate one caller's requests without recording the subject
// identifier (which may identify a clinician) or any part of the token.
func subjectHash(sub string) string {
	sum := sha256.Sum256([]byte(sub))
	return hex.EncodeToString(sum[:8])
}
