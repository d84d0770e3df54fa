package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// authTestAudience is the API identifier the test verifiers expect.
const authTestAudience = "https://clinicalapi.test"

// testClock is an injected clock (auth and store tests): tests move it instead of sleeping.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

// newAuthClock starts at a fixed instant so token times are reproducible.
func newAuthClock() *testClock { return &testClock{t: time.Unix(1_800_000_000, 0)} }

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// set moves the clock to t, forwards or back.
func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testIssuer is an OIDC issuer on httptest: discovery plus a JWKS whose
// keys, discovery document and failure modes a test can change, and which
// records when (by the injected clock) the JWKS was fetched.
type testIssuer struct {
	srv   *httptest.Server
	clock *testClock

	mu              sync.Mutex
	keys            []map[string]any
	discovery       map[string]any // nil: the correct document
	discoveryFails  int            // answer this many discovery requests with 503
	jwksRaw         []byte         // non-nil: served instead of keys
	discoveryHits   int
	jwksFetchTimes  []time.Time
	jwksConcurrency atomic.Int32
}

func newTestIssuer(t *testing.T, clock *testClock, keys ...map[string]any) *testIssuer {
	t.Helper()
	ti := &testIssuer{clock: clock, keys: keys}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		ti.mu.Lock()
		ti.discoveryHits++
		fail := ti.discoveryFails > 0
		if fail {
			ti.discoveryFails--
		}
		doc := ti.discovery
		ti.mu.Unlock()
		if fail {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		if doc == nil {
			doc = map[string]any{"issuer": ti.srv.URL, "jwks_uri": ti.srv.URL + "/jwks"}
		}
		writeIssuerJSON(w, doc)
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		ti.jwksConcurrency.Add(1)
		defer ti.jwksConcurrency.Add(-1)
		ti.mu.Lock()
		ti.jwksFetchTimes = append(ti.jwksFetchTimes, clock.now())
		raw, keys := ti.jwksRaw, ti.keys
		ti.mu.Unlock()
		if raw != nil {
			w.Header().Set("Content-Type", "application/json")
			w.Write(raw)
			return
		}
		writeIssuerJSON(w, map[string]any{"keys": keys})
	})
	ti.srv = httptest.NewServer(mux)
	t.Cleanup(ti.srv.Close)
	return ti
}

// writeIssuerJSON writes the test issuer's JSON responses.
func writeIssuerJSON(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func (ti *testIssuer) publish(keys ...map[string]any) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	ti.keys = keys
}

func (ti *testIssuer) jwksFetches() int {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return len(ti.jwksFetchTimes)
}

func (ti *testIssuer) discoveryCount() int {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return ti.discoveryHits
}

// rsaJWK is the public JWK of pub; extra adds key/value string pairs (e.g. "alg").
func rsaJWK(kid string, pub *rsa.PublicKey, extra ...string) map[string]any {
	m := map[string]any{
		"kty": "RSA", "kid": kid, "use": "sig",
		"n": b64url(pub.N.Bytes()),
		"e": b64url(big.NewInt(int64(pub.E)).Bytes()),
	}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return m
}

// ecJWK is the public P-256 JWK of pub.
func ecJWK(kid string, pub *ecdsa.PublicKey) map[string]any {
	b, err := pub.Bytes() // 0x04 || X || Y
	if err != nil {
		panic(err)
	}
	return map[string]any{"kty": "EC", "kid": kid, "use": "sig", "crv": "P-256", "x": b64url(b[1:33]), "y": b64url(b[33:])}
}

// b64url is JWS segment encoding.
func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// authTestKeys are generated once per test that needs them (RSA generation is
// the slow part of this file).
type authTestKeys struct {
	rsa1, rsa2 *rsa.PrivateKey
	ec1, ec2   *ecdsa.PrivateKey
}

// newAuthTestKeys generates two RSA-2048 and two P-256 keys.
func newAuthTestKeys(t *testing.T) authTestKeys {
	t.Helper()
	var k authTestKeys
	var err error
	if k.rsa1, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if k.ec1, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if k.ec2, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	return k
}

// signWith produces a compact JWS over arbitrary header and claims bytes,
// signing with method, which need not match the header's alg: that is how
// the attacks are built. key is *rsa.PrivateKey, *ecdsa.PrivateKey or
// []byte (HMAC secret), as method requires.
func signWith(t *testing.T, method string, key any, header, claims []byte) string {
	t.Helper()
	input := b64url(header) + "." + b64url(claims)
	var sig []byte
	var err error
	switch method {
	case "RS256":
		d := sha256.Sum256([]byte(input))
		sig, err = rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, d[:])
	case "RS384":
		d := sha512.Sum384([]byte(input))
		sig, err = rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA384, d[:])
	case "RS512":
		d := sha512.Sum512([]byte(input))
		sig, err = rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA512, d[:])
	case "PS256":
		d := sha256.Sum256([]byte(input))
		sig, err = rsa.SignPSS(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, d[:],
			&rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "ES256":
		d := sha256.Sum256([]byte(input))
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, key.(*ecdsa.PrivateKey), d[:])
		if err == nil {
			sig = make([]byte, 64)
			r.FillBytes(sig[:32])
			s.FillBytes(sig[32:])
		}
	case "ES256-DER":
		d := sha256.Sum256([]byte(input))
		sig, err = ecdsa.SignASN1(rand.Reader, key.(*ecdsa.PrivateKey), d[:])
	case "HS256":
		m := hmac.New(sha256.New, key.([]byte))
		m.Write([]byte(input))
		sig = m.Sum(nil)
	case "none":
	default:
		t.Fatalf("signWith: unknown method %q", method)
	}
	if err != nil {
		t.Fatalf("signWith(%s): %v", method, err)
	}
	return input + "." + b64url(sig)
}

// jsonBytes marshals v or fails the test.
func jsonBytes(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// omitClaim as a value in claimsWith deletes the key.
type omitClaim struct{}

// claimsWith returns a copy of m with the key/value pairs applied.
func claimsWith(m map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if _, del := kv[i+1].(omitClaim); del {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

// authFixture is an issuer publishing the standard test keys plus a clock.
type authFixture struct {
	keys   authTestKeys
	clock  *testClock
	iss    *testIssuer
	claims map[string]any // a valid claim set at clock start
}

// newAuthFixture starts an issuer publishing rsa-1, ec-1 and rsa-1-rs512
// (rsa-1's key pinned to RS512).
func newAuthFixture(t *testing.T) *authFixture {
	t.Helper()
	f := &authFixture{keys: newAuthTestKeys(t), clock: newAuthClock()}
	f.iss = newTestIssuer(t, f.clock,
		rsaJWK("rsa-1", &f.keys.rsa1.PublicKey),
		ecJWK("ec-1", &f.keys.ec1.PublicKey),
		rsaJWK("rsa-1-rs512", &f.keys.rsa1.PublicKey, "alg", "RS512"), // same key, pinned alg
	)
	now := f.clock.now()
	f.claims = map[string]any{
		"iss":   f.iss.srv.URL,
		"aud":   authTestAudience,
		"sub":   "user-1",
		"iat":   now.Unix(),
		"exp":   now.Add(10 * time.Minute).Unix(),
		"scope": "user/Patient.read",
	}
	return f
}

// config is an enabled authConfig for the fixture issuer.
func (f *authFixture) config(algs ...string) authConfig {
	return authConfig{Enabled: true, Issuer: f.iss.srv.URL, Audience: authTestAudience, Algorithms: algs}
}

// verifier returns a verifier with keys loaded (one JWKS fetch).
func (f *authFixture) verifier(t *testing.T, algs ...string) *verifier {
	t.Helper()
	v := newVerifier(f.config(algs...), f.iss.srv.Client(), f.clock.now, slog.New(slog.DiscardHandler))
	if _, err := v.refresh(t.Context(), false); err != nil {
		t.Fatalf("initial refresh: %v", err)
	}
	if !v.ready() {
		t.Fatal("ready() = false after successful refresh")
	}
	return v
}

// token signs claims with the header {"alg": alg, "kid": kid, "typ": "JWT"}.
func (f *authFixture) token(t *testing.T, alg, kid string, claims map[string]any) string {
	t.Helper()
	return signWith(t, alg, f.signer(alg), jsonBytes(t, map[string]any{"alg": alg, "kid": kid, "typ": "JWT"}), jsonBytes(t, claims))
}

// signer is the published private key that fits alg.
func (f *authFixture) signer(alg string) any {
	if strings.HasPrefix(alg, "ES") {
		return f.keys.ec1
	}
	return f.keys.rsa1
}

func TestVerifyAttacks(t *testing.T) {
	f := newAuthFixture(t)
	v := f.verifier(t, supportedJWTAlgs()...)
	now := f.clock.now()
	rs1, ec1 := f.keys.rsa1, f.keys.ec1
	hdr := map[string]any{"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}
	valid := f.token(t, "RS256", "rsa-1", f.claims)
	sign := func(method string, key any, h, c map[string]any) string {
		return signWith(t, method, key, jsonBytes(t, h), jsonBytes(t, c))
	}
	signRaw := func(h, c string) string { return signWith(t, "RS256", rs1, []byte(h), []byte(c)) }
	claimsJSON := string(jsonBytes(t, f.claims))

	pubDER, err := x509.MarshalPKIXPublicKey(&rs1.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	parts := strings.Split(valid, ".")
	otherPayload := b64url(jsonBytes(t, claimsWith(f.claims, "sub", "admin")))
	oversize := claimsWith(f.claims, "padding", strings.Repeat("x", maxTokenBytes))

	tests := []struct {
		name   string
		header string // the Authorization header
		want   string // authError code; "" means the token is accepted
	}{
		{"valid", "Bearer " + valid, ""},
		{"scheme lower case", "bearer " + valid, ""},
		{"scheme upper case", "BEARER " + valid, ""},
		{"missing header", "", authCodeMissing},
		{"non-Bearer scheme", "Basic dXNlcjpwYXNz", authCodeMissing},
		{"token without scheme", valid, authCodeMissing},
		{"empty token", "Bearer ", authCodeMissing},
		{"scheme only", "Bearer", authCodeMissing},
		{"double space", "Bearer  " + valid, authCodeInvalid},
		{"alg none empty signature", "Bearer " + sign("none", nil, claimsWith(hdr, "alg", "none"), f.claims), authCodeInvalid},
		{"alg none with signature", "Bearer " + sign("none", nil, claimsWith(hdr, "alg", "none"), f.claims) + "AAAA", authCodeInvalid},
		{"alg NONE", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "alg", "NONE"), f.claims), authCodeInvalid},
		{"signature from another RSA key", "Bearer " + sign("RS256", f.keys.rsa2, hdr, f.claims), authCodeInvalid},
		{"signature from another EC key", "Bearer " + sign("ES256", f.keys.ec2, map[string]any{"alg": "ES256", "kid": "ec-1"}, f.claims), authCodeInvalid},
		{"HS256 with public key PEM as secret", "Bearer " + sign("HS256", pubPEM, claimsWith(hdr, "alg", "HS256"), f.claims), authCodeInvalid},
		{"HS256 with public key DER as secret", "Bearer " + sign("HS256", pubDER, claimsWith(hdr, "alg", "HS256"), f.claims), authCodeInvalid},
		{"HS256 with raw n bytes as secret", "Bearer " + sign("HS256", rs1.N.Bytes(), claimsWith(hdr, "alg", "HS256"), f.claims), authCodeInvalid},
		{"HS512 with public key PEM as secret", "Bearer " + sign("HS256", pubPEM, claimsWith(hdr, "alg", "HS512"), f.claims), authCodeInvalid},
		{"expired beyond leeway", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "exp", now.Add(-tokenLeeway-time.Second).Unix())), authCodeExpired},
		{"expired exactly at leeway", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "exp", now.Add(-tokenLeeway).Unix())), authCodeExpired},
		{"expired within leeway", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "exp", now.Add(-tokenLeeway+time.Second).Unix())), ""},
		{"exp fractional", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "exp", float64(now.Unix())+600.5)), ""},
		{"missing exp", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "exp", omitClaim{})), authCodeInvalid},
		{"exp as string", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "exp", fmt.Sprint(now.Add(time.Hour).Unix()))), authCodeInvalid},
		{"exp null", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "exp", nil)), authCodeInvalid},
		{"exp negative", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "exp", -1)), authCodeInvalid},
		{"exp huge", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "exp", 1e300)), authCodeInvalid},
		{"not yet valid", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "nbf", now.Add(5*time.Minute).Unix())), authCodeInvalid},
		{"nbf within leeway", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "nbf", now.Add(tokenLeeway-time.Second).Unix())), ""},
		{"nbf as string", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "nbf", "0")), authCodeInvalid},
		{"iat far in future", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "iat", now.Add(time.Hour).Unix())), authCodeInvalid},
		{"iat just within skew", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "iat", now.Add(maxIssuedAtSkew).Unix())), ""},
		{"iat as string", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "iat", "now")), authCodeInvalid},
		{"wrong issuer", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "iss", "https://evil.example")), authCodeInvalid},
		{"issuer with trailing slash", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "iss", f.iss.srv.URL+"/")), authCodeInvalid},
		{"missing issuer", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "iss", omitClaim{})), authCodeInvalid},
		{"wrong audience", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "aud", "https://other.api")), authCodeInvalid},
		{"aud array without ours", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "aud", []string{"a", "b"})), authCodeInvalid},
		{"aud array with ours", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "aud", []string{"a", authTestAudience})), ""},
		{"aud empty array", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "aud", []string{})), authCodeInvalid},
		{"aud missing", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "aud", omitClaim{})), authCodeInvalid},
		{"aud number", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "aud", 1)), authCodeInvalid},
		{"aud object", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "aud", map[string]any{"x": authTestAudience})), authCodeInvalid},
		{"tampered payload", "Bearer " + parts[0] + "." + otherPayload + "." + parts[2], authCodeInvalid},
		{"unknown kid", "Bearer " + f.token(t, "RS256", "no-such-key", f.claims), authCodeInvalid},
		{"missing kid", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "kid", omitClaim{}), f.claims), authCodeInvalid},
		{"empty kid", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "kid", ""), f.claims), authCodeInvalid},
		{"kid not a string", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "kid", 1), f.claims), authCodeInvalid},
		{"kid naming EC key with RS256", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "kid", "ec-1"), f.claims), authCodeInvalid},
		{"kid naming RSA key with ES256", "Bearer " + sign("ES256", ec1, map[string]any{"alg": "ES256", "kid": "rsa-1"}, f.claims), authCodeInvalid},
		{"key alg mismatch", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "kid", "rsa-1-rs512"), f.claims), authCodeInvalid},
		{"key alg match", "Bearer " + sign("RS512", rs1, claimsWith(hdr, "alg", "RS512", "kid", "rsa-1-rs512"), f.claims), ""},
		{"typ wrong", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "typ", "JOSE"), f.claims), authCodeInvalid},
		{"typ id token type", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "typ", "dpop+jwt"), f.claims), authCodeInvalid},
		{"typ not a string", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "typ", 1), f.claims), authCodeInvalid},
		{"typ null", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "typ", nil), f.claims), authCodeInvalid},
		{"typ at+JWT", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "typ", "at+JWT"), f.claims), ""},
		{"typ jwt lower case", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "typ", "jwt"), f.claims), ""},
		{"typ absent", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "typ", omitClaim{}), f.claims), ""},
		{"truncated token", "Bearer " + valid[:len(valid)-4], authCodeInvalid},
		{"truncated to two segments", "Bearer " + parts[0] + "." + parts[1], authCodeInvalid},
		{"two segments trailing dot", "Bearer " + parts[0] + "." + parts[1] + ".", authCodeInvalid},
		{"extra segments", "Bearer " + valid + "." + parts[2], authCodeInvalid},
		{"JWE-like five segments", "Bearer " + valid + ".a.b", authCodeInvalid},
		{"padding in segment", "Bearer " + parts[0] + "." + parts[1] + "==." + parts[2], authCodeInvalid},
		{"padding in signature", "Bearer " + valid + "==", authCodeInvalid},
		{"standard base64 alphabet", "Bearer " + parts[0] + "." + parts[1] + "." + "+/" + parts[2][2:], authCodeInvalid},
		{"non-canonical base64 in signature", "Bearer " + parts[0] + "." + parts[1] + "." + nonCanonical(t, parts[2]), authCodeInvalid},
		{"newline in payload", "Bearer " + parts[0] + "." + parts[1][:8] + "\n" + parts[1][8:] + "." + parts[2], authCodeInvalid},
		{"newline in signature", "Bearer " + parts[0] + "." + parts[1] + "." + parts[2][:8] + "\r\n" + parts[2][8:], authCodeInvalid},
		{"oversize token", "Bearer " + f.token(t, "RS256", "rsa-1", oversize), authCodeInvalid},
		{"jwk header", "Bearer " + sign("RS256", f.keys.rsa2, claimsWith(hdr, "jwk", rsaJWK("rsa-1", &f.keys.rsa2.PublicKey)), f.claims), authCodeInvalid},
		{"jwk header signed by issuer key", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "jwk", rsaJWK("rsa-1", &rs1.PublicKey)), f.claims), authCodeInvalid},
		{"jku header", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "jku", "https://evil.example/jwks"), f.claims), authCodeInvalid},
		{"x5u header", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "x5u", "https://evil.example/cert.pem"), f.claims), authCodeInvalid},
		{"x5c header", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "x5c", []string{b64url(pubDER)}), f.claims), authCodeInvalid},
		{"crit header", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "crit", []string{"exp"}), f.claims), authCodeInvalid},
		{"jku null", "Bearer " + sign("RS256", rs1, claimsWith(hdr, "jku", nil), f.claims), authCodeInvalid},
		{"ES256 raw signature", "Bearer " + sign("ES256", ec1, map[string]any{"alg": "ES256", "kid": "ec-1"}, f.claims), ""},
		{"ES256 signature with zero-padded S", "Bearer " + padS(t, sign("ES256", ec1, map[string]any{"alg": "ES256", "kid": "ec-1"}, f.claims)), authCodeInvalid},
		{"ES256 DER signature", "Bearer " + sign("ES256-DER", ec1, map[string]any{"alg": "ES256", "kid": "ec-1"}, f.claims), authCodeInvalid},
		{"ES256 zero signature", "Bearer " + strings.Join(strings.Split(sign("ES256", ec1, map[string]any{"alg": "ES256", "kid": "ec-1"}, f.claims), ".")[:2], ".") + "." + b64url(make([]byte, 64)), authCodeInvalid},
		{"empty sub", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "sub", "")), authCodeInvalid},
		{"missing sub", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "sub", omitClaim{})), authCodeInvalid},
		{"sub number", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "sub", 42)), authCodeInvalid},
		{"scope null", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "scope", nil)), authCodeInvalid},
		{"scope array", "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "scope", []string{"user/Patient.read"})), authCodeInvalid},
		{"duplicate claim key", "Bearer " + signRaw(`{"alg":"RS256","kid":"rsa-1"}`, strings.TrimSuffix(claimsJSON, "}")+`,"sub":"admin"}`), authCodeInvalid},
		{"duplicate exp", "Bearer " + signRaw(`{"alg":"RS256","kid":"rsa-1"}`, strings.TrimSuffix(claimsJSON, "}")+`,"exp":99999999999}`), authCodeInvalid},
		{"nested duplicate key", "Bearer " + signRaw(`{"alg":"RS256","kid":"rsa-1"}`, strings.TrimSuffix(claimsJSON, "}")+`,"x":{"a":1,"a":2}}`), authCodeInvalid},
		{"duplicate header key", "Bearer " + signRaw(`{"alg":"none","kid":"rsa-1","alg":"RS256"}`, claimsJSON), authCodeInvalid},
		{"header key case variant", "Bearer " + signRaw(`{"ALG":"RS256","kid":"rsa-1"}`, claimsJSON), authCodeInvalid},
		{"header not an object", "Bearer " + signRaw(`["RS256"]`, claimsJSON), authCodeInvalid},
		{"header trailing data", "Bearer " + signRaw(`{"alg":"RS256","kid":"rsa-1"}{}`, claimsJSON), authCodeInvalid},
		{"claims not JSON", "Bearer " + signRaw(`{"alg":"RS256","kid":"rsa-1"}`, `not json`), authCodeInvalid},
		{"claims trailing data", "Bearer " + signRaw(`{"alg":"RS256","kid":"rsa-1"}`, claimsJSON+`{}`), authCodeInvalid},
		{"claims null", "Bearer " + signRaw(`{"alg":"RS256","kid":"rsa-1"}`, `null`), authCodeInvalid},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			got, aerr := v.verify(t.Context(), tt.header)
			if tt.want == "" {
				if aerr != nil {
					t.Fatalf("verify() error = %v, want accepted", aerr)
				}
				if got.Subject != "user-1" {
					t.Errorf("verify() Subject = %q, want %q", got.Subject, "user-1")
				}
				return
			}
			if aerr == nil {
				t.Fatalf("verify() accepted the token (claims %+v), want %s", got, tt.want)
			}
			if aerr.Code != tt.want {
				t.Errorf("verify() code = %s (%s), want %s", aerr.Code, aerr.Description, tt.want)
			}
			if diff := cmp.Diff(tokenClaims{}, got); diff != "" {
				t.Errorf("verify() returned claims with an error (-want +got):\n%s", diff)
			}
			if aerr.Description == "" || strings.Contains(aerr.Description, "eyJ") || len(aerr.Description) > 100 {
				t.Errorf("verify() Description = %q, want a short sentence without the token", aerr.Description)
			}
		})
	}
	if got := f.iss.jwksFetches(); got != 1 {
		t.Errorf("JWKS fetches = %d, want 1 (unknown kids within the refetch interval must not fetch)", got)
	}
}

// nonCanonical sets an unused low bit in seg's last character: lenient
// decoders return the same bytes, so one token would have two spellings.
func nonCanonical(t *testing.T, seg string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	if len(seg)%4 == 0 {
		t.Fatalf("nonCanonical: segment length %d has no unused bits", len(seg))
	}
	last := strings.IndexByte(alphabet, seg[len(seg)-1])
	return seg[:len(seg)-1] + string(alphabet[last|1])
}

// padS re-encodes an ES256 token's signature as R || 0x00 || S (65 bytes):
// the same numbers, but not the fixed-width encoding RFC 7518 requires.
func padS(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		t.Fatalf("padS: bad signature")
	}
	padded := append(append(slices.Clone(sig[:32]), 0), sig[32:]...)
	return parts[0] + "." + parts[1] + "." + b64url(padded)
}

func TestVerifyClaims(t *testing.T) {
	f := newAuthFixture(t)
	v := f.verifier(t, "RS256")
	exp := f.clock.now().Add(10 * time.Minute)
	tests := []struct {
		name   string
		claims map[string]any
		want   tokenClaims
	}{
		{"one scope", f.claims, tokenClaims{Subject: "user-1", Scopes: []string{"user/Patient.read"}, ExpiresAt: exp}},
		{"no scope claim", claimsWith(f.claims, "scope", omitClaim{}), tokenClaims{Subject: "user-1", ExpiresAt: exp}},
		{"empty scope", claimsWith(f.claims, "scope", ""), tokenClaims{Subject: "user-1", ExpiresAt: exp}},
		{"several scopes extra spaces", claimsWith(f.claims, "scope", " openid  user/Patient.read system/Patient.write "),
			tokenClaims{Subject: "user-1", Scopes: []string{"openid", "user/Patient.read", "system/Patient.write"}, ExpiresAt: exp}},
		{"fractional exp", claimsWith(f.claims, "exp", float64(exp.Unix())+0.25),
			tokenClaims{Subject: "user-1", Scopes: []string{"user/Patient.read"}, ExpiresAt: exp.Add(250 * time.Millisecond)}},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			got, aerr := v.verify(t.Context(), "Bearer "+f.token(t, "RS256", "rsa-1", tt.claims))
			if aerr != nil {
				t.Fatalf("verify() error = %v", aerr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("verify() claims mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestVerifyAlgorithmAllowList signs a valid token with every supported
// algorithm; each passes when allowed and fails when everything else is.
func TestVerifyAlgorithmAllowList(t *testing.T) {
	f := newAuthFixture(t)
	for _, alg := range supportedJWTAlgs() {
		t.Run(alg, func(t *testing.T) {
			kid := "rsa-1"
			if alg == "ES256" {
				kid = "ec-1"
			}
			header := "Bearer " + f.token(t, alg, kid, f.claims)
			if _, aerr := f.verifier(t, alg).verify(t.Context(), header); aerr != nil {
				t.Errorf("allow-list [%s]: verify() error = %v, want accepted", alg, aerr)
			}
			others := slices.DeleteFunc(supportedJWTAlgs(), func(a string) bool { return a == alg })
			_, aerr := f.verifier(t, others...).verify(t.Context(), header)
			if aerr == nil || aerr.Code != authCodeInvalid {
				t.Errorf("allow-list %v: verify() error = %v, want %s", others, aerr, authCodeInvalid)
			}
		})
	}
	t.Run("default allow-list is RS256 only", func(t *testing.T) {
		cfg, err := parseAuthConfig(authEnv(map[string]string{"OIDC_ISSUER": f.iss.srv.URL, "OIDC_AUDIENCE": authTestAudience}))
		if err != nil {
			t.Fatal(err)
		}
		v := f.verifier(t, cfg.Algorithms...)
		if _, aerr := v.verify(t.Context(), "Bearer "+f.token(t, "RS256", "rsa-1", f.claims)); aerr != nil {
			t.Errorf("RS256: verify() error = %v, want accepted", aerr)
		}
		if _, aerr := v.verify(t.Context(), "Bearer "+f.token(t, "ES256", "ec-1", f.claims)); aerr == nil {
			t.Error("ES256: verify() accepted, want rejected by default allow-list")
		}
	})
}

// unknownKidToken is structurally valid but names a random kid; the
// signature is junk because kid lookup comes first.
func unknownKidToken(t *testing.T, f *authFixture, i int) string {
	h := b64url(jsonBytes(t, map[string]any{"alg": "RS256", "kid": fmt.Sprintf("attacker-%d", i)}))
	return "Bearer " + h + "." + b64url(jsonBytes(t, f.claims)) + "." + b64url(make([]byte, 256))
}

func TestUnknownKidRefetchRateLimit(t *testing.T) {
	f := newAuthFixture(t)
	v := f.verifier(t, "RS256") // fetch 1 at t0

	hammer := func(from int) {
		var wg sync.WaitGroup
		for i := range 1000 {
			wg.Go(func() {
				if _, aerr := v.verify(t.Context(), unknownKidToken(t, f, from+i)); aerr == nil || aerr.Code != authCodeInvalid {
					t.Errorf("unknown kid: verify() error = %v, want %s", aerr, authCodeInvalid)
				}
			})
		}
		wg.Wait()
	}

	hammer(0)
	if got := f.iss.jwksFetches(); got != 1 {
		t.Errorf("after 1000 concurrent unknown kids at t0: JWKS fetches = %d, want 1", got)
	}
	f.clock.advance(jwksRefetchInterval - time.Millisecond)
	hammer(1000)
	if got := f.iss.jwksFetches(); got != 1 {
		t.Errorf("after 1000 unknown kids just inside the interval: JWKS fetches = %d, want 1", got)
	}
	f.clock.advance(time.Millisecond)
	hammer(2000)
	if got := f.iss.jwksFetches(); got != 2 {
		t.Errorf("after 1000 concurrent unknown kids once the interval passed: JWKS fetches = %d, want 2 (one shared fetch)", got)
	}

	// 1000 more kids spread over 60 s of clock: at most one fetch per 15 s.
	for i := range 1000 {
		f.clock.advance(60 * time.Millisecond)
		if _, aerr := v.verify(t.Context(), unknownKidToken(t, f, 3000+i)); aerr == nil {
			t.Fatal("unknown kid accepted")
		}
	}
	f.iss.mu.Lock()
	times := slices.Clone(f.iss.jwksFetchTimes)
	f.iss.mu.Unlock()
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < jwksRefetchInterval {
			t.Errorf("JWKS fetches %d and %d were %v apart, want >= %v", i-1, i, gap, jwksRefetchInterval)
		}
	}
	if got, max := len(times), 2+4; got > max {
		t.Errorf("JWKS fetches = %d over 60 s of unknown kids, want <= %d", got, max)
	}
}

func TestKeyRotation(t *testing.T) {
	k := newAuthTestKeys(t)
	clock := newAuthClock()
	iss := newTestIssuer(t, clock, rsaJWK("key-a", &k.rsa1.PublicKey))
	f := &authFixture{keys: k, clock: clock, iss: iss}
	now := clock.now()
	claims := map[string]any{"iss": iss.srv.URL, "aud": authTestAudience, "sub": "user-1", "exp": now.Add(2 * time.Hour).Unix()}
	tokenA := "Bearer " + signWith(t, "RS256", k.rsa1, jsonBytes(t, map[string]any{"alg": "RS256", "kid": "key-a"}), jsonBytes(t, claims))
	tokenB := "Bearer " + signWith(t, "RS256", k.rsa2, jsonBytes(t, map[string]any{"alg": "RS256", "kid": "key-b"}), jsonBytes(t, claims))
	tokenC := "Bearer " + signWith(t, "ES256", k.ec1, jsonBytes(t, map[string]any{"alg": "ES256", "kid": "key-c"}), jsonBytes(t, claims))

	v := f.verifier(t, "RS256", "ES256")
	check := func(step, header string, wantOK bool, wantFetches int) {
		t.Helper()
		_, aerr := v.verify(t.Context(), header)
		if gotOK := aerr == nil; gotOK != wantOK {
			t.Errorf("%s: verify() error = %v, want accepted=%v", step, aerr, wantOK)
		}
		if got := iss.jwksFetches(); got != wantFetches {
			t.Errorf("%s: JWKS fetches = %d, want %d", step, got, wantFetches)
		}
	}
	check("key A before rotation", tokenA, true, 1)

	iss.publish(rsaJWK("key-b", &k.rsa2.PublicKey))
	clock.advance(time.Second)
	check("key B right after a fetch", tokenB, false, 1)
	clock.advance(jwksRefetchInterval - time.Second)
	check("key B after the interval", tokenB, true, 2)
	check("key B again, from cache", tokenB, true, 2)
	check("retired key A", tokenA, false, 2)

	// Many requests with a newly rotated kid arriving together all succeed
	// on one shared fetch: those arriving mid-fetch wait for it instead of
	// being turned away by the rate limit.
	clock.advance(jwksRefetchInterval)
	iss.publish(rsaJWK("key-a", &k.rsa1.PublicKey))
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if _, aerr := v.verify(t.Context(), tokenA); aerr != nil {
				t.Errorf("concurrent key A after re-rotation: verify() error = %v", aerr)
			}
		})
	}
	wg.Wait()
	if got := iss.jwksFetches(); got != 3 {
		t.Errorf("concurrent key A after re-rotation: JWKS fetches = %d, want 3", got)
	}

	clock.advance(time.Hour)
	iss.publish(rsaJWK("key-b", &k.rsa2.PublicKey), ecJWK("key-c", &k.ec1.PublicKey))
	check("key C with no recent fetch", tokenC, true, 4)
}

func TestRefreshFailures(t *testing.T) {
	k := newAuthTestKeys(t)
	good := rsaJWK("rsa-1", &k.rsa1.PublicKey)
	tests := []struct {
		name  string
		setup func(ti *testIssuer)
	}{
		{"discovery issuer mismatch", func(ti *testIssuer) {
			ti.discovery = map[string]any{"issuer": "https://evil.example", "jwks_uri": ti.srv.URL + "/jwks"}
		}},
		{"discovery issuer trailing slash", func(ti *testIssuer) {
			ti.discovery = map[string]any{"issuer": ti.srv.URL + "/", "jwks_uri": ti.srv.URL + "/jwks"}
		}},
		{"jwks_uri plain http off loopback", func(ti *testIssuer) {
			ti.discovery = map[string]any{"issuer": ti.srv.URL, "jwks_uri": "http://keys.example/jwks"}
		}},
		{"jwks_uri missing", func(ti *testIssuer) { ti.discovery = map[string]any{"issuer": ti.srv.URL} }},
		{"discovery unavailable", func(ti *testIssuer) { ti.discoveryFails = 1 }},
		{"jwks not JSON", func(ti *testIssuer) { ti.jwksRaw = []byte("<html>") }},
		{"jwks too large", func(ti *testIssuer) {
			// Valid apart from its size, so only the cap can reject it.
			ti.jwksRaw = []byte(`{"keys":[` + string(jsonBytes(t, good)) + `],"pad":"` + strings.Repeat("x", maxIssuerDocBytes) + `"}`)
		}},
		{"jwks without usable keys", func(ti *testIssuer) {
			ti.keys = []map[string]any{claimsWith(good, "use", "enc"), {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}}
		}},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			clock := newAuthClock()
			ti := newTestIssuer(t, clock, good)
			tt.setup(ti)
			v := newVerifier(authConfig{Enabled: true, Issuer: ti.srv.URL, Audience: authTestAudience, Algorithms: []string{"RS256"}},
				ti.srv.Client(), clock.now, slog.New(slog.DiscardHandler))
			if _, err := v.refresh(t.Context(), false); err == nil {
				t.Error("refresh() error = nil, want an error")
			}
			if v.ready() {
				t.Error("ready() = true, want false")
			}
			claims := map[string]any{"iss": ti.srv.URL, "aud": authTestAudience, "sub": "u", "exp": clock.now().Add(time.Hour).Unix()}
			tok := signWith(t, "RS256", k.rsa1, jsonBytes(t, map[string]any{"alg": "RS256", "kid": "rsa-1"}), jsonBytes(t, claims))
			before := ti.discoveryCount()
			if _, aerr := v.verify(t.Context(), "Bearer "+tok); aerr == nil {
				t.Error("verify() accepted a token without trusted keys")
			}
			// A failed attempt counts toward the refetch limit, so a down
			// issuer is not hit again by every request.
			if got := ti.discoveryCount(); got != before {
				t.Errorf("discovery requests after verify = %d, want %d (no refetch within the interval)", got, before)
			}
		})
	}
}

// pollUntil polls cond (real time) for background goroutines.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStart(t *testing.T) {
	k := newAuthTestKeys(t)
	newV := func(ti *testIssuer, clock *testClock) *verifier {
		v := newVerifier(authConfig{Enabled: true, Issuer: ti.srv.URL, Audience: authTestAudience, Algorithms: []string{"RS256"}},
			ti.srv.Client(), clock.now, slog.New(slog.DiscardHandler))
		v.retryMin, v.retryMax = time.Millisecond, 5*time.Millisecond
		return v
	}

	t.Run("retries until the issuer is up", func(t *testing.T) {
		clock := newAuthClock()
		ti := newTestIssuer(t, clock, rsaJWK("rsa-1", &k.rsa1.PublicKey))
		ti.discoveryFails = 3
		v := newV(ti, clock)
		if v.ready() {
			t.Fatal("ready() = true before start")
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		v.start(ctx)
		pollUntil(t, "ready", v.ready)
		if got := ti.discoveryCount(); got < 4 {
			t.Errorf("discovery requests = %d, want >= 4 (3 failures then success)", got)
		}
	})

	t.Run("discovery issuer mismatch stays not ready", func(t *testing.T) {
		clock := newAuthClock()
		ti := newTestIssuer(t, clock, rsaJWK("rsa-1", &k.rsa1.PublicKey))
		ti.discovery = map[string]any{"issuer": "https://evil.example", "jwks_uri": ti.srv.URL + "/jwks"}
		v := newV(ti, clock)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		v.start(ctx)
		// The third request means the first two attempts were fully handled.
		pollUntil(t, "three discovery attempts", func() bool { return ti.discoveryCount() >= 3 })
		if v.ready() {
			t.Error("ready() = true with a mismatched discovery issuer, want false")
		}
		if got := ti.jwksFetches(); got != 0 {
			t.Errorf("JWKS fetches = %d, want 0 (keys of an unverified issuer must not be fetched)", got)
		}
	})

	t.Run("auth disabled", func(t *testing.T) {
		v := newVerifier(authConfig{}, nil, nil, nil)
		v.start(t.Context())
		if !v.ready() {
			t.Error("ready() = false with auth disabled, want true")
		}
		if _, aerr := v.verify(t.Context(), "Bearer x.y.z"); aerr == nil || aerr.Code != authCodeInvalid {
			t.Errorf("verify() error = %v, want %s (fail closed)", aerr, authCodeInvalid)
		}
	})
}

func TestParseJWKS(t *testing.T) {
	k := newAuthTestKeys(t)
	good := rsaJWK("rsa-good", &k.rsa1.PublicKey)
	weakN := new(big.Int).Rsh(k.rsa1.N, 1) // 2047 bits: Go would accept it, we do not
	weakN.SetBit(weakN, 0, 1)
	ec := ecJWK("ec-good", &k.ec1.PublicKey)
	yBytes, _ := base64.RawURLEncoding.DecodeString(ec["y"].(string))
	offCurveY := new(big.Int).Add(new(big.Int).SetBytes(yBytes), big.NewInt(1))
	keys := []map[string]any{
		good,
		ec,
		claimsWith(good, "kid", "rsa-no-use", "use", omitClaim{}),
		claimsWith(good, "kid", "rsa-2047", "n", b64url(weakN.Bytes())),
		claimsWith(good, "kid", "rsa-enc", "use", "enc"),
		claimsWith(good, "kid", "rsa-keyops-encrypt", "key_ops", []string{"encrypt"}),
		claimsWith(good, "kid", "rsa-keyops-verify", "key_ops", []string{"verify"}),
		claimsWith(good, "kid", "rsa-even-e", "e", b64url([]byte{1, 0, 0})),
		claimsWith(good, "kid", "rsa-bad-n", "n", "!!"),
		claimsWith(good, "kid", omitClaim{}),
		claimsWith(ec, "kid", "ec-off-curve", "y", b64url(offCurveY.FillBytes(make([]byte, 32)))),
		claimsWith(ec, "kid", "ec-p384", "crv", "P-384"),
		claimsWith(ec, "kid", "ec-short-x", "x", b64url([]byte{1, 2, 3})),
		{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
		{"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64url(make([]byte, 32))},
		claimsWith(ec, "kty", "RSA"), // duplicate kid ec-good: first wins
	}
	got, skipped, err := parseJWKS(jsonBytes(t, map[string]any{"keys": keys}))
	if err != nil {
		t.Fatal(err)
	}
	var gotKids []string
	for kid := range got {
		gotKids = append(gotKids, kid)
	}
	slices.Sort(gotKids)
	want := []string{"ec-good", "rsa-good", "rsa-keyops-verify", "rsa-no-use"}
	if diff := cmp.Diff(want, gotKids); diff != "" {
		t.Errorf("parseJWKS() kids mismatch (-want +got):\n%s", diff)
	}
	if got["ec-good"].ec == nil {
		t.Error("ec-good: duplicate kid replaced the first key")
	}
	if len(skipped) != len(keys)-len(want) {
		t.Errorf("parseJWKS() skipped %d keys, want %d: %q", len(skipped), len(keys)-len(want), skipped)
	}
	if _, _, err := parseJWKS([]byte(`{"keys":`)); err == nil {
		t.Error("parseJWKS(truncated) error = nil, want error")
	}
}

// authEnv is a map-backed getenv.
func authEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseAuthConfig(t *testing.T) {
	const aud = "api://clinical"
	tests := []struct {
		name    string
		env     map[string]string
		want    authConfig
		wantErr string // substring; "" means no error
	}{
		{"nothing set", nil, authConfig{Algorithms: []string{"RS256"}}, ""},
		{"egfr optional without auth", map[string]string{"EGFR_AUTH": "optional"}, authConfig{Algorithms: []string{"RS256"}}, ""},
		{"https issuer", map[string]string{"OIDC_ISSUER": "https://auth.login.nhs.uk", "OIDC_AUDIENCE": aud},
			authConfig{Enabled: true, Issuer: "https://auth.login.nhs.uk", Audience: aud, Algorithms: []string{"RS256"}}, ""},
		{"https issuer with path", map[string]string{"OIDC_ISSUER": "https://am.example.nhs.uk/openam/oauth2/realms/root", "OIDC_AUDIENCE": aud},
			authConfig{Enabled: true, Issuer: "https://am.example.nhs.uk/openam/oauth2/realms/root", Audience: aud, Algorithms: []string{"RS256"}}, ""},
		{"http 127.0.0.1", map[string]string{"OIDC_ISSUER": "http://127.0.0.1:9000", "OIDC_AUDIENCE": aud},
			authConfig{Enabled: true, Issuer: "http://127.0.0.1:9000", Audience: aud, Algorithms: []string{"RS256"}}, ""},
		{"http 127.8.9.10", map[string]string{"OIDC_ISSUER": "http://127.8.9.10", "OIDC_AUDIENCE": aud},
			authConfig{Enabled: true, Issuer: "http://127.8.9.10", Audience: aud, Algorithms: []string{"RS256"}}, ""},
		{"http ipv6 loopback", map[string]string{"OIDC_ISSUER": "http://[::1]:9000", "OIDC_AUDIENCE": aud},
			authConfig{Enabled: true, Issuer: "http://[::1]:9000", Audience: aud, Algorithms: []string{"RS256"}}, ""},
		{"http localhost", map[string]string{"OIDC_ISSUER": "http://localhost:9000", "OIDC_AUDIENCE": aud},
			authConfig{Enabled: true, Issuer: "http://localhost:9000", Audience: aud, Algorithms: []string{"RS256"}}, ""},
		{"http remote host", map[string]string{"OIDC_ISSUER": "http://auth.example", "OIDC_AUDIENCE": aud}, authConfig{}, "https"},
		{"http localhost lookalike", map[string]string{"OIDC_ISSUER": "http://localhost.evil.example", "OIDC_AUDIENCE": aud}, authConfig{}, "https"},
		{"http private address", map[string]string{"OIDC_ISSUER": "http://10.0.0.1", "OIDC_AUDIENCE": aud}, authConfig{}, "https"},
		{"ftp scheme", map[string]string{"OIDC_ISSUER": "ftp://auth.example", "OIDC_AUDIENCE": aud}, authConfig{}, "https"},
		{"relative issuer", map[string]string{"OIDC_ISSUER": "auth.example", "OIDC_AUDIENCE": aud}, authConfig{}, "OIDC_ISSUER"},
		{"issuer with query", map[string]string{"OIDC_ISSUER": "https://auth.example?x=1", "OIDC_AUDIENCE": aud}, authConfig{}, "query"},
		{"issuer with user info", map[string]string{"OIDC_ISSUER": "https://u:p@auth.example", "OIDC_AUDIENCE": aud}, authConfig{}, "user info"},
		{"only issuer", map[string]string{"OIDC_ISSUER": "https://auth.example"}, authConfig{}, "OIDC_AUDIENCE"},
		{"only audience", map[string]string{"OIDC_AUDIENCE": aud}, authConfig{}, "OIDC_ISSUER"},
		{"algorithm list", map[string]string{"OIDC_ISSUER": "https://a.example", "OIDC_AUDIENCE": aud, "OIDC_ALGORITHMS": "RS512, ES256,PS256,RS512"},
			authConfig{Enabled: true, Issuer: "https://a.example", Audience: aud, Algorithms: []string{"RS512", "ES256", "PS256"}}, ""},
		{"unknown algorithm", map[string]string{"OIDC_ALGORITHMS": "RS256,ES384"}, authConfig{}, "ES384"},
		{"HS256 algorithm", map[string]string{"OIDC_ALGORITHMS": "HS256"}, authConfig{}, "HS256"},
		{"none algorithm", map[string]string{"OIDC_ALGORITHMS": "none"}, authConfig{}, "none"},
		{"lower-case algorithm", map[string]string{"OIDC_ALGORITHMS": "rs256"}, authConfig{}, "rs256"},
		{"empty algorithm item", map[string]string{"OIDC_ALGORITHMS": "RS256,,ES256"}, authConfig{}, "empty"},
		{"egfr required", map[string]string{"OIDC_ISSUER": "https://a.example", "OIDC_AUDIENCE": aud, "EGFR_AUTH": "required"},
			authConfig{Enabled: true, Issuer: "https://a.example", Audience: aud, Algorithms: []string{"RS256"}, EGFRRequired: true}, ""},
		{"egfr optional", map[string]string{"OIDC_ISSUER": "https://a.example", "OIDC_AUDIENCE": aud, "EGFR_AUTH": "optional"},
			authConfig{Enabled: true, Issuer: "https://a.example", Audience: aud, Algorithms: []string{"RS256"}}, ""},
		{"egfr required without issuer", map[string]string{"EGFR_AUTH": "required"}, authConfig{}, "EGFR_AUTH"},
		{"egfr unknown value", map[string]string{"OIDC_ISSUER": "https://a.example", "OIDC_AUDIENCE": aud, "EGFR_AUTH": "Required"}, authConfig{}, "EGFR_AUTH"},
		{"egfr off", map[string]string{"EGFR_AUTH": "off"}, authConfig{}, "EGFR_AUTH"},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			got, err := parseAuthConfig(authEnv(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("parseAuthConfig() error = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseAuthConfig() error = %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseAuthConfig() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHasScope(t *testing.T) {
	tests := []struct {
		scopes              []string
		wantRead, wantWrite bool
	}{
		{nil, false, false},
		{[]string{"openid", "profile"}, false, false},
		{[]string{"user/Patient.read"}, true, false},
		{[]string{"system/Patient.read"}, true, false},
		{[]string{"user/Patient.write"}, false, true},
		{[]string{"system/Patient.write"}, false, true},
		{[]string{"user/Patient.*"}, true, true},
		{[]string{"system/Patient.*"}, true, true},
		{[]string{"openid", "user/Patient.read", "system/Patient.write"}, true, true},
		{[]string{"patient/Patient.read"}, false, false},
		{[]string{"user/Observation.read"}, false, false},
		{[]string{"user/patient.read"}, false, false},
		{[]string{"user/Patient.read "}, false, false},
		{[]string{"user/*.*"}, false, false},
	}
	for _, tt := range tests {
		c := tokenClaims{Subject: "s", Scopes: tt.scopes}
		if got := hasScope(c, false); got != tt.wantRead {
			t.Errorf("hasScope(%q, read) = %v, want %v", tt.scopes, got, tt.wantRead)
		}
		if got := hasScope(c, true); got != tt.wantWrite {
			t.Errorf("hasScope(%q, write) = %v, want %v", tt.scopes, got, tt.wantWrite)
		}
	}
}

func TestSubjectHash(t *testing.T) {
	a, b := subjectHash("9000000009"), subjectHash("9000000017")
	if len(a) != 16 || strings.Trim(a, "0123456789abcdef") != "" {
		t.Errorf("subjectHash() = %q, want 16 lower-case hex digits", a)
	}
	if a == b {
		t.Errorf("subjectHash() of different subjects both = %q", a)
	}
	if subjectHash("9000000009") != a {
		t.Error("subjectHash() is not deterministic")
	}
	if strings.Contains(a, "9000000009") {
		t.Error("subjectHash() contains the subject")
	}
}

func TestAuthErrorChallenge(t *testing.T) {
	tests := []struct{ code, want string }{
		{authCodeMissing, `Bearer`},
		{authCodeInvalid, `Bearer error="invalid_token"`},
		{authCodeExpired, `Bearer error="invalid_token"`},
		{authCodeDenied, `Bearer error="insufficient_scope"`},
	}
	for _, tt := range tests {
		if got := (&authError{Code: tt.code}).challenge(); got != tt.want {
			t.Errorf("authError{%s}.challenge() = %q, want %q", tt.code, got, tt.want)
		}
	}
}

// TestVerifiedTokenCache: a token verified once is served from the cache, but its expiry is still
// checked on every use, and the cache never outlives the key set that verified it.
func TestVerifiedTokenCache(t *testing.T) {
	f := newAuthFixture(t)
	v := f.verifier(t, "RS256")
	claims := claimsWith(f.claims, "exp", f.clock.now().Add(time.Minute).Unix())
	tok := "Bearer " + f.token(t, "RS256", "rsa-1", claims)
	if _, aerr := v.verify(t.Context(), tok); aerr != nil {
		t.Fatalf("first use: %v", aerr)
	}
	if _, aerr := v.verify(t.Context(), tok); aerr != nil {
		t.Fatalf("second use (cached): %v", aerr)
	}
	if n := len(v.verified); n != 1 {
		t.Errorf("%d cached tokens, want 1", n)
	}
	f.clock.advance(time.Minute + tokenLeeway)
	if _, aerr := v.verify(t.Context(), tok); aerr == nil || aerr.Code != authCodeExpired {
		t.Errorf("cached token past exp+leeway: %v, want %s", aerr, authCodeExpired)
	}
	// A refresh that replaces the key set empties the cache.
	fresh := "Bearer " + f.token(t, "RS256", "rsa-1", claimsWith(f.claims, "exp", f.clock.now().Add(time.Hour).Unix()))
	v.verify(t.Context(), fresh)
	if _, err := v.refresh(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if n := len(v.verified); n != 0 {
		t.Errorf("%d cached tokens after a key refresh, want 0", n)
	}
}

// FuzzVerifyToken: no Authorization header an attacker can build without the key is accepted, and
// none makes the verifier panic.
func FuzzVerifyToken(f *testing.F) {
	li := localTestIssuer(f)
	good := li.token(f, allScopes)
	parts := strings.Split(good, ".")
	for _, s := range []string{"Bearer " + good[:len(good)-2] + "AA", "Bearer " + parts[0] + "." + parts[1] + ".", "Bearer a.b.c",
		"bearer " + parts[1] + "." + parts[0] + "." + parts[2], "Basic x", "Bearer " + strings.Repeat("A", 9000), ""} {
		f.Add(s)
	}
	v := testVerifier(f)
	f.Fuzz(func(t *testing.T, header string) {
		if strings.Contains(header, good) {
			return // the real token, possibly with harmless surroundings
		}
		if c, aerr := v.verify(t.Context(), header); aerr == nil {
			t.Fatalf("accepted %q as %+v", header, c)
		}
	})
}

// TestVerifierCounts: key fetches, failed fetches and verifications by outcome are counted for the
// metrics.
func TestVerifierCounts(t *testing.T) {
	v := testVerifier(t)
	iss := localTestIssuer(t)
	for _, h := range []string{"", "Basic x", "Bearer not.a.jwt", "Bearer " + iss.token(t, allScopes)} {
		v.verify(t.Context(), h)
	}
	var got [numTokenOutcomes]uint64
	for i := range got {
		got[i] = v.verifications[i].Load()
	}
	if want := [numTokenOutcomes]uint64{1, 2, 1, 0}; got != want { // valid, missing, invalid, expired
		t.Errorf("verifications %v, want %v", got, want)
	}
	if f, e := v.jwksFetches.Load(), v.jwksFailures.Load(); f != 1 || e != 0 {
		t.Errorf("fetches %d, failures %d; want 1, 0", f, e)
	}
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	cfg := iss.config()
	cfg.Issuer = down.URL
	dead := newVerifier(cfg, nil, time.Now, slog.New(slog.DiscardHandler))
	if _, err := dead.refresh(t.Context(), false); err == nil {
		t.Fatal("refresh from a closed server succeeded")
	}
	if f, e := dead.jwksFetches.Load(), dead.jwksFailures.Load(); f != 1 || e != 1 {
		t.Errorf("fetches %d, failures %d from a closed server; want 1, 1", f, e)
	}
}
