#!/usr/bin/env python3
"""bench/issuer.py: a throwaway OIDC issuer for the load scripts, on a port of your choice.

`clinicalapi dev-issuer` always listens on 127.0.0.1:9000; on a shared machine that port may be taken,
so bench/scale.sh runs this instead. Python 3 standard library only (no `cryptography`): it makes an
RSA-2048 key with Miller-Rabin primes and signs RS256 (RSASSA-PKCS1-v1_5, SHA-256) with pow().
It serves what the service's verifier fetches and what run.sh's dev issuer serves:

  GET /.well-known/openid-configuration   {"issuer", "jwks_uri", ...}
  GET /jwks                               the public key (kid = RFC 7638 thumbprint)
  GET /token                              a fresh 12-hour read-write token, as plain text

  python3 bench/issuer.py 18440 [audience]     # then OIDC_ISSUER=http://127.0.0.1:18440
DEVELOPMENT ONLY: loopback only, the key lives in memory and dies with the process.
"""
import base64, hashlib, http.server, json, secrets, sys, time

SMALL_PRIMES = [p for p in range(3, 2000) if all(p % q for q in range(2, int(p ** 0.5) + 1))]


def probable_prime(n, rounds=40):
    if any(n % p == 0 for p in SMALL_PRIMES):
        return n in SMALL_PRIMES
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def prime(bits, e):
    while True:  # top two bits set, so p*q has exactly 2*bits bits
        p = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        if probable_prime(p) and (p - 1) % e:
            return p


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def int_bytes(i):
    return i.to_bytes((i.bit_length() + 7) // 8, "big")


E = 65537
while True:
    P, Q = prime(1024, E), prime(1024, E)
    N = P * Q
    if P != Q and N.bit_length() == 2048:
        break
D = pow(E, -1, (P - 1) * (Q - 1))
JWK = {"kty": "RSA", "n": b64(int_bytes(N)), "e": b64(int_bytes(E))}
KID = b64(hashlib.sha256(('{"e":"%s","kty":"RSA","n":"%s"}' % (JWK["e"], JWK["n"])).encode()).digest())
JWK.update(kid=KID, use="sig", alg="RS256")
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def sign_rs256(claims):
    seg = lambda obj: b64(json.dumps(obj, separators=(",", ":")).encode())
    signing_input = seg({"alg": "RS256", "typ": "JWT", "kid": KID}) + "." + seg(claims)
    t = SHA256_DIGEST_INFO + hashlib.sha256(signing_input.encode()).digest()
    k = (N.bit_length() + 7) // 8
    em = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t  # EMSA-PKCS1-v1_5
    sig = pow(int.from_bytes(em, "big"), D, N).to_bytes(k, "big")
    return signing_input + "." + b64(sig)


PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 18440
AUDIENCE = sys.argv[2] if len(sys.argv) > 2 else "clinicalapi"
ISSUER = "http://127.0.0.1:%d" % PORT


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/.well-known/openid-configuration":
            body, ctype = json.dumps({"issuer": ISSUER, "jwks_uri": ISSUER + "/jwks",
                                      "id_token_signing_alg_values_supported": ["RS256"]}), "application/json"
        elif self.path == "/jwks":
            body, ctype = json.dumps({"keys": [JWK]}), "application/json"
        elif self.path == "/token":
            now = int(time.time())
            body, ctype = sign_rs256({"iss": ISSUER, "aud": AUDIENCE, "sub": "bench-user",
                                      "scope": "user/Patient.read user/Patient.write",
                                      "iat": now, "exp": now + 12 * 3600}), "text/plain; charset=utf-8"
        else:
            self.send_error(404)
            return
        b = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def log_message(self, *args):
        pass


srv = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print("# bench issuer at %s (DEVELOPMENT ONLY)" % ISSUER, flush=True)
try:
    srv.serve_forever()
except KeyboardInterrupt:
    pass
