package main

// The dev issuer: a throwaway OIDC issuer so a newcomer can run the service with auth switched on,
// without an NHS CIS2 or NHS login registration:
//
//	go run . dev-issuer                      # prints exports and a token
//	OIDC_ISSUER=... OIDC_AUDIENCE=... go run .
//	curl -H "Authorization: Bearer $TOKEN" ...
//
// It only listens on loopback and the service only accepts http issuers on loopback, so production
// defaults are unchanged.

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"time"
)

// The dev issuer listens here and mints tokens for this audience, valid for a working day; the service
// trusts it only when OIDC_ISSUER names it.
const (
	devIssuerAddr     = "127.0.0.1:9000"
	devIssuerAudience = "clinicalapi"
	devIssuerTokenTTL = 12 * time.Hour
)

// runDevIssuer generates an RSA-2048 key in memory, serves discovery and JWKS on the loopback address
// addr, writes export lines and a signed token to stdout, and serves until ctx ends. The key dies with
// the process, so its tokens are useless anywhere else.
func runDevIssuer(ctx context.Context, addr string, audience string, stdout io.Writer) error {
	if strings.TrimSpace(audience) == "" {
		return errors.New("dev issuer: audience is required")
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("dev issuer: address %q: %w", addr, err)
	}
	if !isLoopbackHost(host) {
		return fmt.Errorf("dev issuer: address %q is not loopback (use 127.0.0.1, ::1 or localhost)", addr)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("dev issuer: generate key: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("dev issuer: %w", err)
	}
	// Use the bound port (addr may say :0) but keep the host as written, so the issuer string is
	// exactly what the user typed.
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	di := &devIssuer{key: key, issuer: "http://" + net.JoinHostPort(host, port), audience: audience}
	token, err := di.mint()
	if err != nil {
		ln.Close()
		return fmt.Errorf("dev issuer: sign token: %w", err)
	}
	fmt.Fprintf(stdout, "# dev issuer at %s (DEVELOPMENT ONLY; key is in memory, token valid %s)\n", di.issuer, devIssuerTokenTTL)
	fmt.Fprintf(stdout, "export OIDC_ISSUER=%s OIDC_AUDIENCE=%s\n", devShellQuote(di.issuer), devShellQuote(audience))
	fmt.Fprintf(stdout, "export TOKEN=%s\n", token)
	fmt.Fprintf(stdout, "# a fresh token any time: curl -s %s/token\n", di.issuer)

	srv := &http.Server{Handler: di.handler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("dev issuer: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("dev issuer: shutdown: %w", err)
	}
	return nil
}

// devIssuer is one running dev issuer: its key, its URL and the audience it mints tokens for.
type devIssuer struct {
	key              *rsa.PrivateKey
	issuer, audience string
}

// jwk is the issuer's public key as a JWK, its kid the RFC 7638 thumbprint (stable for the key).
func (di *devIssuer) jwk() map[string]string {
	jwk := map[string]string{
		"kty": "RSA",
		"n":   base64.RawURLEncoding.EncodeToString(di.key.N.Bytes()),
		"e":   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(di.key.E)).Bytes()),
	}
	canon := `{"e":"` + jwk["e"] + `","kty":"RSA","n":"` + jwk["n"] + `"}`
	sum := sha256.Sum256([]byte(canon))
	jwk["kid"], jwk["use"], jwk["alg"] = base64.RawURLEncoding.EncodeToString(sum[:]), "sig", "RS256"
	return jwk
}

// mint signs a fresh read-write token for the dev user.
func (di *devIssuer) mint() (string, error) {
	now := time.Now()
	return signRS256(di.key, di.jwk()["kid"], map[string]any{
		"iss":   di.issuer,
		"aud":   di.audience,
		"sub":   "dev-user",
		"scope": "user/Patient.read user/Patient.write",
		"iat":   now.Unix(),
		"exp":   now.Add(devIssuerTokenTTL).Unix(),
	})
}

// handler serves OIDC discovery, the JWKS, and GET /token, which hands out a fresh token as plain
// text so a shell can do curl -H "Authorization: Bearer $(curl -s 127.0.0.1:9000/token)".
func (di *devIssuer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		devIssuerJSON(w, map[string]any{
			"issuer":                                di.issuer,
			"jwks_uri":                              di.issuer + "/jwks",
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		devIssuerJSON(w, map[string]any{"keys": []any{di.jwk()}})
	})
	mux.HandleFunc("GET /token", func(w http.ResponseWriter, r *http.Request) {
		tok, err := di.mint()
		if err != nil {
			http.Error(w, "sign token", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte(tok))
	})
	return mux
}

// devIssuerJSON writes v as JSON; the dev issuer has no other response type.
func devIssuerJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b) // the client hung up; nothing to do
}

// signRS256 produces a compact JWS; only the dev issuer signs tokens.
func signRS256(key *rsa.PrivateKey, kid string, claims map[string]any) (string, error) {
	hdr, err := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": kid})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(payload)
	digest := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		return "", err
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// devShellQuote single-quotes s for a POSIX shell export line.
func devShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
