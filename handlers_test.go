package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// newTestServer is the full service handler with a discarded log, readiness up, an empty store and
// auth checked against the test issuer.
func newTestServer(t testing.TB) http.Handler {
	t.Helper()
	return newServer(slog.New(slog.DiscardHandler), testConfig(t), func() bool { return true }, openapiJSON, testDocs(t), testStore(t), testVerifier(t))
}

// testConfig is the configuration the handler tests run with: auth on, against the test issuer (and
// the upstream's base, for what the handlers say about it, when the tests run against one).
func testConfig(t testing.TB) config {
	return config{auth: localTestIssuer(t).config(), upstream: upstreamConfig{base: os.Getenv(testUpstreamEnv)}}
}

// testIssuerAudience is the audience of the test tokens.
const testIssuerAudience = "clinicalapi-test"

// localIssuer is an OIDC issuer for the handler tests: one RSA-2048 key, discovery and JWKS on a
// loopback httptest server that lives as long as the test binary.
type localIssuer struct {
	key *rsa.PrivateKey
	kid string
	url string
}

var loadLocalIssuer = sync.OnceValues(func() (*localIssuer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	li := &localIssuer{key: key, kid: "test-key-1"}
	jwk := map[string]any{"kty": "RSA", "kid": li.kid, "use": "sig", "alg": "RS256",
		"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()), "e": "AQAB"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"issuer": li.url, "jwks_uri": li.url + "/jwks"})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"keys": []any{jwk}})
	})
	li.url = httptest.NewServer(mux).URL
	return li, nil
})

func localTestIssuer(t testing.TB) *localIssuer {
	t.Helper()
	li, err := loadLocalIssuer()
	if err != nil {
		t.Fatal(err)
	}
	return li
}

func (li *localIssuer) config() authConfig {
	return authConfig{Enabled: true, Issuer: li.url, Audience: testIssuerAudience, Algorithms: []string{"RS256"}}
}

// token signs a token for the test audience with the given scope, valid for ten minutes; extra
// claims (name, value pairs) override the defaults.
func (li *localIssuer) token(t testing.TB, scope string, extra ...any) string {
	t.Helper()
	now := time.Now()
	claims := map[string]any{"iss": li.url, "aud": testIssuerAudience, "sub": "clinician-1", "scope": scope,
		"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
	for i := 0; i+1 < len(extra); i += 2 {
		claims[extra[i].(string)] = extra[i+1]
	}
	tok, err := signRS256(li.key, li.kid, claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// testVerifier is a verifier for the test issuer with its keys loaded.
func testVerifier(t testing.TB) *verifier {
	t.Helper()
	v := newVerifier(localTestIssuer(t).config(), nil, time.Now, slog.New(slog.DiscardHandler))
	if _, err := v.refresh(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	return v
}

// allScopes may read and write Patients.
const allScopes = "user/Patient.read user/Patient.write"

// testUpstreamEnv runs the tests against an upstream FHIR server instead of the journal when set: the
// base URL of .ci/medplum-upstream.mjs, under which each store gets an empty tenant of its own
// (BASE/t/NAME/). .ci/run sets it for its second run of the tests.
const testUpstreamEnv = "CLINICALAPI_TEST_UPSTREAM"

// testingUpstream reports whether the tests run against an upstream FHIR server.
func testingUpstream() bool { return os.Getenv(testUpstreamEnv) != "" }

// journalOnly skips a test that holds only with the embedded journal, saying why, when the tests run
// against an upstream FHIR server.
func journalOnly(t testing.TB, why string) {
	t.Helper()
	if testingUpstream() {
		t.Skip("journal only: " + why)
	}
}

// testStore is an empty store closed when the test ends: a journal in a temporary directory, or
// (with CLINICALAPI_TEST_UPSTREAM) a new tenant of the upstream.
func testStore(t testing.TB) patientStore {
	t.Helper()
	if testingUpstream() {
		return testUpstreamStore(t, os.Getenv(testUpstreamEnv))
	}
	s, err := openJournalStore(t.TempDir(), slog.New(slog.DiscardHandler), time.Now, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testUpstreamStore is an upstream store on a new, empty tenant of the Medplum adapter at base.
func testUpstreamStore(t testing.TB, base string) *upstreamStore {
	t.Helper()
	cfg := upstreamConfig{base: upstreamTenant(t, base), timeout: 10 * time.Second}
	s, err := openUpstreamStore(cfg, slog.New(slog.DiscardHandler), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// upstreamTenant is the FHIR base of a new, empty tenant of the Medplum adapter at base, named for
// the test.
func upstreamTenant(t testing.TB, base string) string {
	tenant := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, t.Name())
	return strings.TrimRight(base, "/") + "/t/" + tenant[:min(len(tenant), 27)] + "-" + newUUID() + "/"
}

func testDocs(t testing.TB) fs.FS {
	t.Helper()
	docs, err := fs.Sub(docsFiles, "docs")
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

// do serves req through h, checks the response against openapi.json, and returns it with its body
// still readable. A Patient request without an Authorization header gets a read-write token: the
// auth tests send their own headers, or none through doRaw.
func do(t testing.TB, h http.Handler, req *http.Request) *http.Response {
	t.Helper()
	if strings.HasPrefix(req.URL.Path, "/Patient") && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+localTestIssuer(t).token(t, allScopes))
	}
	return doRaw(t, h, req)
}

// doRaw is do without the default token.
func doRaw(t testing.TB, h http.Handler, req *http.Request) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := rec.Result()
	body := readAll(t, res.Body)
	_, upstream := h.(upstreamHandler)
	checkContract(t, req, res, body, upstream || testingUpstream())
	res.Body = io.NopCloser(bytes.NewReader(body))
	return res
}

const testRequestID = "test-request-1"

func postEGFR(body string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/egfr", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-ID", testRequestID)
	return req
}

func decodeBody[T any](t testing.TB, res *http.Response) T {
	t.Helper()
	var v T
	if err := json.NewDecoder(res.Body).Decode(&v); err != nil {
		t.Fatalf("decode %d response: %v", res.StatusCode, err)
	}
	return v
}

func egfrBody(s string, scr float64, age int, extra string) string {
	return fmt.Sprintf(`{"sex":%q,"serum_creatinine_umol_l":%s,"age":%d%s}`, s, strconv.FormatFloat(scr, 'f', -1, 64), age, extra)
}

// TestEGFRMatchesPublishedValues checks the same references through POST /egfr: the one-decimal
// value within 0.05 of the published value (plus the source's precision), and a published whole
// number equal to egfr_reported.
func TestEGFRMatchesPublishedValues(t *testing.T) {
	h := newTestServer(t)
	for _, ref := range publishedEGFR {
		extra := ""
		switch {
		case ref.cysC > 0:
			extra = fmt.Sprintf(`,"serum_cystatin_c_mg_l":%g`, ref.cysC)
		case ref.formula == formula2009:
			extra = `,"formula":"CKD-EPI 2009"`
		}
		res := do(t, h, postEGFR(egfrBody(ref.sex, ref.scrUmolL, ref.age, extra)))
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", ref.source, res.StatusCode)
		}
		got := decodeBody[egfrResult](t, res)
		if got.Formula != ref.formula {
			t.Errorf("%s: formula %q, want %q", ref.source, got.Formula, ref.formula)
		}
		if ref.tol == 0.5 {
			want := strconv.Itoa(int(ref.want))
			if ref.want > 90 {
				want = ">90"
			}
			if got.Reported != want {
				t.Errorf("%s: egfr_reported %q, want %q", ref.source, got.Reported, want)
			}
			continue
		}
		if d := math.Abs(got.EGFR - ref.want); d > 0.05+ref.tol+1e-9 {
			t.Errorf("%s: egfr %.1f, published %g (off by %.3f)", ref.source, got.EGFR, ref.want, d)
		}
	}
}

// TestEGFRCategoryEdges puts the unrounded eGFR 0.7 and 0.3 below and 0.3 above each KDIGO cut-off
// and each side of the ">90" edge, for young, middle and old patients of both sexes, and checks the
// reported number and category: this catches the rounding mode, a category taken from the
// unrounded value, and an off-by-one at ">90".
func TestEGFRCategoryEdges(t *testing.T) {
	h := newTestServer(t)
	type edge struct {
		target   float64
		reported string
		category string
	}
	edges := []edge{
		{14.3, "14", "G5"}, {14.7, "15", "G4"}, {15.3, "15", "G4"},
		{29.3, "29", "G4"}, {29.7, "30", "G3b"}, {30.3, "30", "G3b"},
		{44.3, "44", "G3b"}, {44.7, "45", "G3a"}, {45.3, "45", "G3a"},
		{59.3, "59", "G3a"}, {59.7, "60", "G2"}, {60.3, "60", "G2"},
		{89.3, "89", "G2"}, {89.7, "90", "G1"}, {90.3, "90", "G1"}, {90.7, ">90", "G1"},
	}
	for _, formula := range []string{formula2021, formula2009} {
		for _, s := range []sex{male, female} {
			for _, age := range []int{25, 55, 85} {
				for _, e := range edges {
					scr := math.Round(invert(formula, e.target, age, s)*100) / 100
					res := do(t, h, postEGFR(egfrBody(string(s), scr, age, `,"formula":"`+formula+`"`)))
					got := decodeBody[egfrResult](t, res)
					if got.Reported != e.reported || got.Category != e.category {
						t.Errorf("%s %s age %d Scr %g (eGFR ≈ %g): got %q %s, want %q %s",
							formula, s, age, scr, e.target, got.Reported, got.Category, e.reported, e.category)
					}
				}
			}
		}
	}
}

// TestEGFRInputRanges sends the clinically significant inputs: the age limits, the creatinine
// window (20–3000 µmol/L) over ages 30 and 70, and both knees, for both sexes and formulas.
func TestEGFRInputRanges(t *testing.T) {
	h := newTestServer(t)
	var n int
	check := func(body string, wantStatus int) {
		t.Helper()
		n++
		res := do(t, h, postEGFR(body))
		if res.StatusCode != wantStatus {
			t.Errorf("%s: status %d, want %d", body, res.StatusCode, wantStatus)
		}
	}
	for _, s := range []string{"male", "female"} {
		for _, f := range []string{"", `,"formula":"CKD-EPI 2009"`, `,"serum_cystatin_c_mg_l":1.1`} {
			for _, scr := range []float64{50, 100, 250} {
				check(egfrBody(s, scr, 17, f), 422)
				for _, age := range []int{18, 19, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120} {
					check(egfrBody(s, scr, age, f), 200)
				}
				check(egfrBody(s, scr, 121, f), 422)
			}
			for _, age := range []int{30, 70} {
				check(egfrBody(s, 19.99, age, f), 422)
				for _, scr := range []float64{20, 30, 45, 61.87, 61.88, 61.89, 61.894, 62, 79.55, 79.56, 79.57, 79.578, 80, 100, 200, 500, 1000, 2000, 3000} {
					check(egfrBody(s, scr, age, f), 200)
				}
				check(egfrBody(s, 3000.01, age, f), 422)
			}
		}
	}
	for _, c := range []float64{0.2, 0.8, 10} {
		check(egfrBody("male", 88, 50, fmt.Sprintf(`,"serum_cystatin_c_mg_l":%g`, c)), 200)
	}
	for _, c := range []float64{0.19, 10.01} {
		check(egfrBody("male", 88, 50, fmt.Sprintf(`,"serum_cystatin_c_mg_l":%g`, c)), 422)
	}
	t.Logf("%d range requests", n)
}

// TestEGFRValidation checks each validation rule with the whole problem body.
func TestEGFRValidation(t *testing.T) {
	h := newTestServer(t)
	fe := func(field, typ, msg string) fieldError {
		l := []string{"body"}
		if field != "" {
			l = append(l, field)
		}
		return fieldError{Loc: l, Msg: msg, Type: typ}
	}
	const (
		sexMsg   = `Input should be "male" or "female" (lower case).`
		unknown  = "Unknown field (field names are case-sensitive): expected one of sex, serum_creatinine_umol_l, age, formula, serum_cystatin_c_mg_l."
		required = "Field required."
	)
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantErrs   []fieldError
	}{
		{"empty body", ``, 400, []fieldError{fe("", "json_invalid", "The request body is empty; send a JSON object.")}},
		{"whitespace body", "  \n", 400, []fieldError{fe("", "json_invalid", "The request body is empty; send a JSON object.")}},
		{"malformed", `{"sex": "male",}`, 400, []fieldError{fe("", "json_invalid", "The request body is not valid JSON (at byte offset 15).")}},
		{"truncated", `{"sex": "male"`, 400, []fieldError{fe("", "json_invalid", "The request body is not valid JSON: it ends too early.")}},
		{"array", `[1]`, 400, []fieldError{fe("", "model_type", "The request body should be a JSON object.")}},
		{"string", `"x"`, 400, []fieldError{fe("", "model_type", "The request body should be a JSON object.")}},
		{"null", `null`, 400, []fieldError{fe("", "model_type", "The request body should be a JSON object.")}},
		{"invalid utf-8", "{\"sex\": \"m\xffale\"}", 400, []fieldError{fe("", "json_invalid", "The request body is not valid UTF-8.")}},
		{"second value", `{"sex":"male","serum_creatinine_umol_l":88,"age":50} {}`, 400, []fieldError{
			fe("", "json_invalid", "The request body has data after the JSON object; send exactly one object.")}},
		{"age as string", `{"sex":"male","serum_creatinine_umol_l":88,"age":"50"}`, 400, []fieldError{
			fe("age", "int_type", "Input should be a whole number of years.")}},
		{"sex as number", `{"sex":1,"serum_creatinine_umol_l":88,"age":50}`, 400, []fieldError{
			fe("sex", "string_type", `Input should be a string: "male" or "female".`)}},
		{"creatinine as string", `{"sex":"male","serum_creatinine_umol_l":"88","age":50}`, 400, []fieldError{
			fe("serum_creatinine_umol_l", "float_type", "Input should be a number (µmol/L).")}},
		{"creatinine as bool", `{"sex":"male","serum_creatinine_umol_l":true,"age":50}`, 400, []fieldError{
			fe("serum_creatinine_umol_l", "float_type", "Input should be a number (µmol/L).")}},
		{"formula as number", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"formula":2009}`, 400, []fieldError{
			fe("formula", "string_type", `Input should be a string: "CKD-EPI 2021" or "CKD-EPI 2009".`)}},
		{"cystatin as object", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"serum_cystatin_c_mg_l":{}}`, 400, []fieldError{
			fe("serum_cystatin_c_mg_l", "float_type", "Input should be a number (mg/L).")}},
		{"every type wrong", `{"sex":1,"serum_creatinine_umol_l":"88","age":"50","formula":[],"serum_cystatin_c_mg_l":"1"}`, 400, []fieldError{
			fe("sex", "string_type", `Input should be a string: "male" or "female".`),
			fe("serum_creatinine_umol_l", "float_type", "Input should be a number (µmol/L)."),
			fe("age", "int_type", "Input should be a whole number of years."),
			fe("formula", "string_type", `Input should be a string: "CKD-EPI 2021" or "CKD-EPI 2009".`),
			fe("serum_cystatin_c_mg_l", "float_type", "Input should be a number (mg/L)."),
		}},
		{"unknown field", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"race":"black"}`, 400, []fieldError{fe("race", "extra_forbidden", unknown)}},
		{"key case Sex", `{"Sex":"male","serum_creatinine_umol_l":88,"age":50}`, 400, []fieldError{
			fe("sex", "missing", required), fe("Sex", "extra_forbidden", unknown)}},
		{"key case SEX", `{"SEX":"male","sex":"male","serum_creatinine_umol_l":88,"age":50}`, 400, []fieldError{fe("SEX", "extra_forbidden", unknown)}},
		{"duplicate key", `{"sex":"male","sex":"female","serum_creatinine_umol_l":88,"age":50}`, 400, []fieldError{
			fe("sex", "duplicate_key", "This key appears more than once; send it once.")}},
		{"type and value problems together", `{"sex":"Male","serum_creatinine_umol_l":"88","age":17}`, 400, []fieldError{
			fe("sex", "literal_error", sexMsg),
			fe("serum_creatinine_umol_l", "float_type", "Input should be a number (µmol/L)."),
			fe("age", "greater_than_equal", "Input should be at least 18 years: CKD-EPI is validated in adults only."),
		}},
		{"empty object", `{}`, 422, []fieldError{
			fe("sex", "missing", required), fe("serum_creatinine_umol_l", "missing", required), fe("age", "missing", required)}},
		{"nulls are absent", `{"sex":null,"serum_creatinine_umol_l":null,"age":null}`, 422, []fieldError{
			fe("sex", "missing", required), fe("serum_creatinine_umol_l", "missing", required), fe("age", "missing", required)}},
		{"sex capitalised", `{"sex":"Male","serum_creatinine_umol_l":88,"age":50}`, 422, []fieldError{fe("sex", "literal_error", sexMsg)}},
		{"sex other", `{"sex":"other","serum_creatinine_umol_l":88,"age":50}`, 422, []fieldError{fe("sex", "literal_error", sexMsg)}},
		{"sex empty", `{"sex":"","serum_creatinine_umol_l":88,"age":50}`, 422, []fieldError{fe("sex", "literal_error", sexMsg)}},
		{"age fractional", `{"sex":"male","serum_creatinine_umol_l":88,"age":50.5}`, 422, []fieldError{
			fe("age", "int_from_float", "Input should be a whole number of years, without a fractional part.")}},
		{"age 17", `{"sex":"male","serum_creatinine_umol_l":88,"age":17}`, 422, []fieldError{
			fe("age", "greater_than_equal", "Input should be at least 18 years: CKD-EPI is validated in adults only.")}},
		{"age 121", `{"sex":"male","serum_creatinine_umol_l":88,"age":121}`, 422, []fieldError{
			fe("age", "less_than_equal", "Input should be at most 120 years.")}},
		{"age negative", `{"sex":"male","serum_creatinine_umol_l":88,"age":-50}`, 422, []fieldError{
			fe("age", "greater_than_equal", "Input should be at least 18 years: CKD-EPI is validated in adults only.")}},
		{"age huge", `{"sex":"male","serum_creatinine_umol_l":88,"age":1e400}`, 422, []fieldError{
			fe("age", "int_from_float", "Input should be a whole number of years, without a fractional part.")}},
		{"creatinine mg/dL", `{"sex":"male","serum_creatinine_umol_l":1.2,"age":50}`, 422, []fieldError{
			fe("serum_creatinine_umol_l", "greater_than_equal", "Input should be at least 20 µmol/L; 1.2 looks like a value in mg/dL (mg/dL × 88.4 = µmol/L).")}},
		{"creatinine zero", `{"sex":"male","serum_creatinine_umol_l":0,"age":50}`, 422, []fieldError{
			fe("serum_creatinine_umol_l", "greater_than_equal", "Input should be a positive number of µmol/L, from 20 to 3000.")}},
		{"creatinine negative", `{"sex":"male","serum_creatinine_umol_l":-88,"age":50}`, 422, []fieldError{
			fe("serum_creatinine_umol_l", "greater_than_equal", "Input should be a positive number of µmol/L, from 20 to 3000.")}},
		{"creatinine too high", `{"sex":"male","serum_creatinine_umol_l":3001,"age":50}`, 422, []fieldError{
			fe("serum_creatinine_umol_l", "less_than_equal", "Input should be at most 3000 µmol/L.")}},
		{"creatinine infinite", `{"sex":"male","serum_creatinine_umol_l":1e999,"age":50}`, 422, []fieldError{
			fe("serum_creatinine_umol_l", "finite_number", "Input should be a finite number (µmol/L).")}},
		{"formula unknown", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"formula":"MDRD"}`, 422, []fieldError{
			fe("formula", "literal_error", `Input should be "CKD-EPI 2021" or "CKD-EPI 2009".`)}},
		{"formula case", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"formula":"ckd-epi 2009"}`, 422, []fieldError{
			fe("formula", "literal_error", `Input should be "CKD-EPI 2021" or "CKD-EPI 2009".`)}},
		{"formula is the cystatin name", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"formula":"CKD-EPI 2021 creatinine-cystatin C"}`, 422, []fieldError{
			fe("formula", "literal_error", `Input should be "CKD-EPI 2021" or "CKD-EPI 2009".`)}},
		{"cystatin low", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"serum_cystatin_c_mg_l":0.1}`, 422, []fieldError{
			fe("serum_cystatin_c_mg_l", "greater_than_equal", "Input should be at least 0.2 mg/L.")}},
		{"cystatin high", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"serum_cystatin_c_mg_l":11}`, 422, []fieldError{
			fe("serum_cystatin_c_mg_l", "less_than_equal", "Input should be at most 10 mg/L.")}},
		{"cystatin with 2009", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"formula":"CKD-EPI 2009","serum_cystatin_c_mg_l":1}`, 422, []fieldError{
			fe("serum_cystatin_c_mg_l", "formula_mismatch", `Cystatin C is used only by the CKD-EPI 2021 creatinine-cystatin C equation; omit it, or omit "formula" (or send "CKD-EPI 2021").`)}},
		{"every value wrong, in field order", `{"serum_cystatin_c_mg_l":99,"formula":"x","age":10,"serum_creatinine_umol_l":5,"sex":"m"}`, 422, []fieldError{
			fe("sex", "literal_error", sexMsg),
			fe("serum_creatinine_umol_l", "greater_than_equal", "Input should be at least 20 µmol/L; 5 looks like a value in mg/dL (mg/dL × 88.4 = µmol/L)."),
			fe("age", "greater_than_equal", "Input should be at least 18 years: CKD-EPI is validated in adults only."),
			fe("formula", "literal_error", `Input should be "CKD-EPI 2021" or "CKD-EPI 2009".`),
			fe("serum_cystatin_c_mg_l", "less_than_equal", "Input should be at most 10 mg/L."),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := do(t, h, postEGFR(tt.body))
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q", ct)
			}
			want := problem{
				Type: "about:blank", Title: http.StatusText(tt.wantStatus), Status: tt.wantStatus,
				Detail: problemDetail(tt.wantErrs), Errors: tt.wantErrs, RequestID: testRequestID,
			}
			got := decodeBody[problem](t, res)
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(fieldError{}), cmp.FilterPath(func(p cmp.Path) bool {
				return p.Last().String() == ".status"
			}, cmp.Ignore())); diff != "" {
				t.Errorf("problem body (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEGFRAcceptedForms covers inputs that look unusual but are valid.
func TestEGFRAcceptedForms(t *testing.T) {
	h := newTestServer(t)
	want := egfrResult{92.2, ">90", "G1", formula2021}
	for _, body := range []string{
		`{"sex": "male", "serum_creatinine_umol_l": 88, "age": 50}`,
		`{"age": 50.0, "serum_creatinine_umol_l": 88.0, "sex": "male"}`,
		`{"sex": "male", "serum_creatinine_umol_l": 8.8e1, "age": 5e1}`,
		`{"sex": "male", "serum_creatinine_umol_l": 88, "age": 50, "formula": null, "serum_cystatin_c_mg_l": null}`,
		`{"sex": "male", "serum_creatinine_umol_l": 88, "age": 50, "formula": "CKD-EPI 2021"}`,
		" \n{\"sex\": \"male\", \"serum_creatinine_umol_l\": 88, \"age\": 50}\n\t ",
	} {
		res := do(t, h, postEGFR(body))
		if res.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d", body, res.StatusCode)
			continue
		}
		if diff := cmp.Diff(want, decodeBody[egfrResult](t, res)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", body, diff)
		}
	}
}

func TestEGFRContentTypeAndSize(t *testing.T) {
	h := newTestServer(t)
	valid := `{"sex": "male", "serum_creatinine_umol_l": 88, "age": 50}`
	pad := func(n int) string { return valid + strings.Repeat(" ", n-len(valid)) }
	tests := []struct {
		name        string
		contentType string
		body        string
		want        int
	}{
		{"json", "application/json", valid, 200},
		{"upper case", "Application/JSON", valid, 200},
		{"charset utf-8", "application/json; charset=utf-8", valid, 200},
		{"charset UTF-8", "application/json; charset=UTF-8", valid, 200},
		{"other charset", "application/json; charset=latin1", valid, 415},
		{"other parameter", "application/json; foo=bar", valid, 415},
		{"missing", "", valid, 415},
		{"text", "text/plain", valid, 415},
		{"form", "application/x-www-form-urlencoded", valid, 415},
		{"fhir json", "application/fhir+json", valid, 415},
		{"malformed", "application/json; charset", valid, 415},
		{"exactly 64 KiB", "application/json", pad(65536), 200},
		{"one byte over", "application/json", pad(65537), 413},
		{"far over", "application/json", pad(1 << 20), 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := postEGFR(tt.body)
			req.Header.Del("Content-Type")
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			res := do(t, h, req)
			if res.StatusCode != tt.want {
				t.Errorf("status %d, want %d", res.StatusCode, tt.want)
			}
		})
	}
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	h := newTestServer(t)
	tests := []struct {
		method, path string
		want         problem
		allow        string
	}{
		{"GET", "/nowhere", problem{Title: "Not Found", Status: 404, Detail: "There is no resource at this path."}, ""},
		{"POST", "/egfr/", problem{Title: "Not Found", Status: 404, Detail: "There is no resource at this path."}, ""},
		{"GET", "/EGFR", problem{Title: "Not Found", Status: 404, Detail: "There is no resource at this path."}, ""},
		{"GET", "/egfr", problem{Title: "Method Not Allowed", Status: 405, Detail: "This path does not support GET; it supports POST."}, "POST"},
		{"PUT", "/egfr", problem{Title: "Method Not Allowed", Status: 405, Detail: "This path does not support PUT; it supports POST."}, "POST"},
		{"DELETE", "/livez", problem{Title: "Method Not Allowed", Status: 405, Detail: "This path does not support DELETE; it supports GET, HEAD."}, "GET, HEAD"},
		{"POST", "/readyz", problem{Title: "Method Not Allowed", Status: 405, Detail: "This path does not support POST; it supports GET, HEAD."}, "GET, HEAD"},
		{"OPTIONS", "/egfr", problem{Title: "Method Not Allowed", Status: 405, Detail: "This path does not support OPTIONS; it supports POST."}, "POST"},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(tt.method, tt.path, nil)
		req.Header.Set("X-Request-ID", testRequestID)
		res := do(t, h, req)
		tt.want.Type, tt.want.RequestID = "about:blank", testRequestID
		if diff := cmp.Diff(tt.want, decodeBody[problem](t, res), cmp.AllowUnexported(fieldError{})); diff != "" {
			t.Errorf("%s %s (-want +got):\n%s", tt.method, tt.path, diff)
		}
		if got := res.Header.Get("Allow"); got != tt.allow {
			t.Errorf("%s %s: Allow %q, want %q", tt.method, tt.path, got, tt.allow)
		}
		if ct := res.Header.Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("%s %s: Content-Type %q", tt.method, tt.path, ct)
		}
	}
}

func TestHealth(t *testing.T) {
	var up atomic.Bool
	h := newServer(slog.New(slog.DiscardHandler), testConfig(t), up.Load, openapiJSON, testDocs(t), testStore(t), testVerifier(t))
	check := func(path string, wantStatus int, want health) {
		t.Helper()
		res := do(t, h, httptest.NewRequest("GET", path, nil))
		if res.StatusCode != wantStatus {
			t.Errorf("GET %s: status %d, want %d", path, res.StatusCode, wantStatus)
		}
		if diff := cmp.Diff(want, decodeBody[health](t, res)); diff != "" {
			t.Errorf("GET %s (-want +got):\n%s", path, diff)
		}
	}
	check("/livez", 200, health{"ok"})
	check("/readyz", 503, health{"unavailable"})
	up.Store(true)
	check("/readyz", 200, health{"ready"})
	res := do(t, h, httptest.NewRequest("HEAD", "/livez", nil))
	if res.StatusCode != 200 {
		t.Errorf("HEAD /livez: status %d", res.StatusCode)
	}
}

func TestDocsAndSpec(t *testing.T) {
	h := newTestServer(t)
	res := do(t, h, httptest.NewRequest("GET", "/docs", nil))
	if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "/docs/" {
		t.Errorf("GET /docs: %d Location %q, want 301 /docs/", res.StatusCode, res.Header.Get("Location"))
	}
	tests := []struct {
		path, ctype, cache string
		contains           string
	}{
		{"/docs/", "text/html; charset=utf-8", "no-cache", `<script src="init.js"></script>`},
		{"/docs/init.js", "text/javascript; charset=utf-8", "no-cache", "validatorUrl: null"},
		{"/docs/swagger-ui-bundle.js", "text/javascript; charset=utf-8", "public, max-age=86400", "SwaggerUIBundle"},
		{"/docs/swagger-ui.css", "text/css; charset=utf-8", "public, max-age=86400", ".swagger-ui"},
		{"/docs/favicon-32x32.png", "image/png", "public, max-age=86400", "PNG"},
		{"/openapi.json", "application/json", "no-cache", `"openapi": "3.1.0"`},
	}
	for _, tt := range tests {
		res := do(t, h, httptest.NewRequest("GET", tt.path, nil))
		body := string(readAll(t, res.Body))
		if res.StatusCode != 200 || !strings.Contains(body, tt.contains) {
			t.Errorf("GET %s: status %d, body contains %q: %v", tt.path, res.StatusCode, tt.contains, strings.Contains(body, tt.contains))
		}
		hd := res.Header
		if hd.Get("Content-Type") != tt.ctype || hd.Get("Cache-Control") != tt.cache || hd.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: headers %v", tt.path, hd)
		}
		if strings.HasPrefix(tt.path, "/docs/") && hd.Get("Content-Security-Policy") != docsCSP {
			t.Errorf("GET %s: CSP %q", tt.path, hd.Get("Content-Security-Policy"))
		}
		etag := hd.Get("ETag")
		if etag == "" {
			t.Errorf("GET %s: no ETag", tt.path)
			continue
		}
		req := httptest.NewRequest("GET", tt.path, nil)
		req.Header.Set("If-None-Match", etag)
		if res := do(t, h, req); res.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match: status %d, want 304", tt.path, res.StatusCode)
		}
	}
	for _, p := range []string{"/docs/update.sh", "/docs/SHA256SUMS", "/docs/nope.js"} {
		res := do(t, h, httptest.NewRequest("GET", p, nil))
		if res.StatusCode != 404 || res.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("GET %s: status %d %s, want a 404 problem", p, res.StatusCode, res.Header.Get("Content-Type"))
		}
	}
}

// FuzzEGFRRequest: whatever the body, never a 5xx or a panic, and every 200 is self-consistent.
func FuzzEGFRRequest(f *testing.F) {
	for _, s := range []string{
		`{"sex": "male", "serum_creatinine_umol_l": 88, "age": 50}`,
		`{"sex": "female", "serum_creatinine_umol_l": 61.88, "age": 18, "formula": "CKD-EPI 2009"}`,
		`{"sex": "male", "serum_creatinine_umol_l": 3000, "age": 120, "serum_cystatin_c_mg_l": 10}`,
		`{"sex": "female", "serum_creatinine_umol_l": 20, "age": 18, "serum_cystatin_c_mg_l": 0.2}`,
		`{"sex":1,"sex":2,"Age":[],"serum_creatinine_umol_l":1e999}`, `[]`, `{`, ``, `{"a":{"b":[1,2,{"c":null}]}}`,
	} {
		f.Add(s)
	}
	h := newTestServer(f)
	categories := map[string][2]int{"G1": {90, 1 << 30}, "G2": {60, 89}, "G3a": {45, 59}, "G3b": {30, 44}, "G4": {15, 29}, "G5": {0, 14}}
	f.Fuzz(func(t *testing.T, body string) {
		res := do(t, h, postEGFR(body))
		switch res.StatusCode {
		case 200:
		case 400, 413, 422:
			return
		default:
			t.Fatalf("status %d for %q", res.StatusCode, body)
		}
		got := decodeBody[egfrResult](t, res)
		whole := 91
		if got.Reported != ">90" {
			n, err := strconv.Atoi(got.Reported)
			if err != nil || n > 90 {
				t.Fatalf("egfr_reported %q", got.Reported)
			}
			whole = n
		}
		if math.Abs(got.EGFR-float64(whole)) > 0.55 && whole <= 90 {
			t.Errorf("egfr %v but reported %q", got.EGFR, got.Reported)
		}
		if r := categories[got.Category]; whole < r[0] || whole > r[1] {
			t.Errorf("category %s for reported %q", got.Category, got.Reported)
		}
	})
}
