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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// newTestServer is the full service handler with a discarded log, readiness up, an empty store and
// auth checked against the test issuer.
func newTestServer(t testing.TB) http.Handler {
	t.Helper()
	return newServer(slog.New(slog.DiscardHandler), testConfig(t), testMetrics(), func() bool { return true }, openapiJSON, testDocs(t), testStore(t), testVerifier(t), time.Now)
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
	return testJournalStore(t)
}

// testJournalStore is an empty journal store in a temporary directory, in either mode: for the tests
// of what only the journal has (its metrics, its fail-stop).
func testJournalStore(t testing.TB) *journalStore {
	t.Helper()
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

// refBody is the POST /egfr body that asks for a reference value: the measurements the source used
// and the formula family of its result.
func refBody(ref egfrRef) string {
	b := fmt.Appendf(nil, `{"sex":%q,"age":%s`, ref.sex, strconv.FormatFloat(ref.age, 'f', -1, 64))
	for _, m := range []struct {
		name  string
		value float64
	}{{"serum_creatinine_umol_l", ref.scrUmolL}, {"serum_cystatin_c_mg_l", ref.cysC}, {"height_cm", ref.heightCm}} {
		if m.value != 0 {
			b = fmt.Appendf(b, `,%q:%s`, m.name, strconv.FormatFloat(m.value, 'f', -1, 64))
		}
	}
	switch ref.formula {
	case formula2009, formulaSchwartz:
		b = fmt.Appendf(b, `,"formula":%q`, ref.formula)
	case formulaU25Cr, formulaU25CysC, formulaU25Avg:
		b = fmt.Appendf(b, `,"formula":%q`, formulaU25)
	}
	return string(b) + "}"
}

// TestEGFRMatchesPublishedValues checks the same references through POST /egfr: the one-decimal
// value within 0.05 of the published value (plus the source's precision), and a published whole
// number equal to egfr_reported.
func TestEGFRMatchesPublishedValues(t *testing.T) {
	h := newTestServer(t)
	for _, ref := range publishedEGFR {
		res := do(t, h, postEGFR(refBody(ref)))
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
					if got.Reported != e.reported || string(got.Category) != e.category {
						t.Errorf("%s %s age %d Scr %g (eGFR ≈ %g): got %q %s, want %q %s",
							formula, s, age, scr, e.target, got.Reported, got.Category, e.reported, e.category)
					}
				}
			}
		}
	}
}

// TestEGFRInputRanges sends the clinically significant inputs: the age limits, the creatinine
// window (20–3000 µmol/L) over ages 30 and 70, and both knees, for both sexes and formulas, and the
// age and cystatin C limits of CKD-EPI 2012 cystatin C (cystatin C without creatinine).
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
	cys := func(s string, age int, c float64) string {
		return fmt.Sprintf(`{"sex":%q,"age":%d,"serum_cystatin_c_mg_l":%g}`, s, age, c)
	}
	for _, s := range []string{"male", "female"} {
		for _, age := range []int{18, 19, 50, 119, 120} {
			for _, c := range []float64{0.2, 0.79, 0.8, 0.81, 10} {
				n++
				res := do(t, h, postEGFR(cys(s, age, c)))
				if got := decodeBody[egfrResult](t, res); res.StatusCode != 200 || got.Formula != formula2012CysC {
					t.Errorf("%s: status %d, formula %q, want 200 %q", cys(s, age, c), res.StatusCode, got.Formula, formula2012CysC)
				}
			}
		}
		for _, age := range []int{0, 17, 121} {
			n++
			rejected(t, h, postEGFR(cys(s, age, 1.1)), "age")
		}
		for _, c := range []float64{-1, 0, 0.19, 10.01, 100} {
			n++
			rejected(t, h, postEGFR(cys(s, 50, c)), "serum_cystatin_c_mg_l")
		}
	}
	t.Logf("%d range requests", n)
}

// rejected checks that req gets a 422 whose errors name field.
func rejected(t *testing.T, h http.Handler, req *http.Request, field string) {
	t.Helper()
	res := do(t, h, req)
	got := decodeBody[problem](t, res)
	var fields []string
	for _, e := range got.Errors {
		fields = append(fields, e.Loc[len(e.Loc)-1])
	}
	if res.StatusCode != http.StatusUnprocessableEntity || !slices.Contains(fields, field) {
		t.Errorf("%s %s: status %d, errors on %v, want 422 naming %s", req.URL.Path, field, res.StatusCode, fields, field)
	}
}

// TestEGFRChildrenInputRanges sends the validity edges of the children's formulas: the ages
// (CKiD U25 1 to 25, Bedside Schwartz 1 to under 18; CKD-EPI's 17/18 are in TestEGFRInputRanges), the
// authors' height (for both forms that use it), creatinine and cystatin C ranges, the knee points of the CKiD U25 K functions
// (12, 15, 18), and that the KDIGO category is null under 2 years, for both sexes and every form.
func TestEGFRChildrenInputRanges(t *testing.T) {
	h := newTestServer(t)
	var n int
	send := func(body string, wantStatus int) egfrResult {
		t.Helper()
		n++
		res := do(t, h, postEGFR(body))
		if res.StatusCode != wantStatus {
			t.Errorf("%s: status %d, want %d", body, res.StatusCode, wantStatus)
		}
		if wantStatus != 200 {
			return egfrResult{}
		}
		return decodeBody[egfrResult](t, res)
	}
	u25 := func(s string, age float64, markers string) string {
		return fmt.Sprintf(`{"sex":%q,"age":%g,"formula":"CKiD U25"%s}`, s, age, markers)
	}
	schwartz := func(s string, age, scr, height float64) string {
		return fmt.Sprintf(`{"sex":%q,"age":%g,"formula":"Bedside Schwartz","serum_creatinine_umol_l":%g,"height_cm":%g}`, s, age, scr, height)
	}
	forms := []string{`,"serum_creatinine_umol_l":50,"height_cm":120`, `,"serum_cystatin_c_mg_l":1.1`, `,"serum_creatinine_umol_l":50,"height_cm":120,"serum_cystatin_c_mg_l":1.1`}
	for _, s := range []string{"male", "female"} {
		for _, m := range forms {
			for _, age := range []float64{0, 0.5, 0.99, 25.01, 25.5, 26, 30} {
				send(u25(s, age, m), 422)
			}
			for _, age := range []float64{1, 1.99, 2, 7.5, 11.99, 12, 14.99, 15, 17.99, 18, 24.99, 25} {
				got := send(u25(s, age, m), 200)
				if wantNull := age < 2; (got.Category == "") != wantNull {
					t.Errorf("CKiD U25 %s age %g: kdigo_category %q", s, age, got.Category)
				}
			}
		}
		for age, want := range map[float64]int{0.99: 422, 1: 200, 1.5: 200, 2: 200, 10: 200, 16: 200, 17: 200, 17.99: 200, 18: 422, 18.5: 422, 25: 422} {
			send(schwartz(s, age, 40, 120), want)
		}
		for _, v := range []float64{60, 60.5, 120, 199.9, 200} {
			send(schwartz(s, 10, 40, v), 200)
			send(u25(s, 10, fmt.Sprintf(`,"serum_creatinine_umol_l":40,"height_cm":%g`, v)), 200)
		}
		for _, v := range []float64{60, 60.5, 120, 199.9, 200} {
			send(u25(s, 10, fmt.Sprintf(`,"serum_creatinine_umol_l":40,"serum_cystatin_c_mg_l":1.1,"height_cm":%g`, v)), 200)
		}
		for _, v := range []float64{-1, 0, 1.5, 2.5, 59.99, 200.01, 250} {
			send(schwartz(s, 10, 40, v), 422)
			send(u25(s, 10, fmt.Sprintf(`,"serum_creatinine_umol_l":40,"height_cm":%g`, v)), 422)
			n++
			rejected(t, h, postEGFR(u25(s, 10, fmt.Sprintf(`,"serum_creatinine_umol_l":40,"serum_cystatin_c_mg_l":1.1,"height_cm":%g`, v))), "height_cm")
		}
		for _, v := range []float64{8.84, 10, 19.99, 20, 884} {
			send(schwartz(s, 10, v, 120), 200)
			send(u25(s, 10, fmt.Sprintf(`,"serum_creatinine_umol_l":%g,"height_cm":120`, v)), 200)
		}
		for _, v := range []float64{0.5, 8.83, 884.01, 3000} {
			send(schwartz(s, 10, v, 120), 422)
			send(u25(s, 10, fmt.Sprintf(`,"serum_creatinine_umol_l":%g,"height_cm":120`, v)), 422)
		}
		for v, want := range map[float64]int{0.19: 422, 0.2: 200, 0.8: 200, 8: 200, 8.01: 422, 10: 422} {
			send(u25(s, 10, fmt.Sprintf(`,"serum_cystatin_c_mg_l":%g`, v)), want)
		}
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
		unknown  = "Unknown field (field names are case-sensitive): expected one of sex, serum_creatinine_umol_l, age, formula, serum_cystatin_c_mg_l, height_cm, patient_id."
		required = "Field required."
		marker   = "Send serum_creatinine_umol_l (µmol/L), serum_cystatin_c_mg_l (mg/L), or both."
		adult    = "Input should be at least 18 years: CKD-EPI is validated in adults only. For ages 1 to 25 send \"formula\": \"CKiD U25\" (with height_cm when sending creatinine); for ages 1 to 17, \"Bedside Schwartz\" (with height_cm)."
		formulas = `Input should be "CKD-EPI 2021", "CKD-EPI 2009", "CKiD U25" or "Bedside Schwartz".`
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
			fe("formula", "string_type", `Input should be a string: "CKD-EPI 2021", "CKD-EPI 2009", "CKiD U25" or "Bedside Schwartz".`)}},
		{"cystatin as object", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"serum_cystatin_c_mg_l":{}}`, 400, []fieldError{
			fe("serum_cystatin_c_mg_l", "float_type", "Input should be a number (mg/L).")}},
		{"every type wrong", `{"sex":1,"serum_creatinine_umol_l":"88","age":"50","formula":[],"serum_cystatin_c_mg_l":"1"}`, 400, []fieldError{
			fe("sex", "string_type", `Input should be a string: "male" or "female".`),
			fe("serum_creatinine_umol_l", "float_type", "Input should be a number (µmol/L)."),
			fe("age", "int_type", "Input should be a whole number of years."),
			fe("formula", "string_type", `Input should be a string: "CKD-EPI 2021", "CKD-EPI 2009", "CKiD U25" or "Bedside Schwartz".`),
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
			fe("age", "greater_than_equal", adult),
		}},
		{"empty object", `{}`, 422, []fieldError{
			fe("sex", "missing", required), fe("serum_creatinine_umol_l", "missing", marker), fe("age", "missing", required),
			fe("serum_cystatin_c_mg_l", "missing", marker)}},
		{"nulls are absent", `{"sex":null,"serum_creatinine_umol_l":null,"age":null,"serum_cystatin_c_mg_l":null,"height_cm":null,"patient_id":null}`, 422, []fieldError{
			fe("sex", "missing", required), fe("serum_creatinine_umol_l", "missing", marker), fe("age", "missing", required),
			fe("serum_cystatin_c_mg_l", "missing", marker)}},
		{"sex capitalised", `{"sex":"Male","serum_creatinine_umol_l":88,"age":50}`, 422, []fieldError{fe("sex", "literal_error", sexMsg)}},
		{"sex other", `{"sex":"other","serum_creatinine_umol_l":88,"age":50}`, 422, []fieldError{fe("sex", "literal_error", sexMsg)}},
		{"sex empty", `{"sex":"","serum_creatinine_umol_l":88,"age":50}`, 422, []fieldError{fe("sex", "literal_error", sexMsg)}},
		{"age fractional", `{"sex":"male","serum_creatinine_umol_l":88,"age":50.5}`, 422, []fieldError{
			fe("age", "int_from_float", "Input should be a whole number of years, without a fractional part.")}},
		{"age 17", `{"sex":"male","serum_creatinine_umol_l":88,"age":17}`, 422, []fieldError{
			fe("age", "greater_than_equal", adult)}},
		{"age 121", `{"sex":"male","serum_creatinine_umol_l":88,"age":121}`, 422, []fieldError{
			fe("age", "less_than_equal", "Input should be at most 120 years.")}},
		{"age negative", `{"sex":"male","serum_creatinine_umol_l":88,"age":-50}`, 422, []fieldError{
			fe("age", "greater_than_equal", adult)}},
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
			fe("formula", "literal_error", formulas)}},
		{"formula case", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"formula":"ckd-epi 2009"}`, 422, []fieldError{
			fe("formula", "literal_error", formulas)}},
		{"formula is the cystatin name", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"formula":"CKD-EPI 2021 creatinine-cystatin C"}`, 422, []fieldError{
			fe("formula", "literal_error", formulas)}},
		{"cystatin low", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"serum_cystatin_c_mg_l":0.1}`, 422, []fieldError{
			fe("serum_cystatin_c_mg_l", "greater_than_equal", "Input should be at least 0.2 mg/L.")}},
		{"cystatin high", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"serum_cystatin_c_mg_l":11}`, 422, []fieldError{
			fe("serum_cystatin_c_mg_l", "less_than_equal", "Input should be at most 10 mg/L.")}},
		{"cystatin with 2009", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"formula":"CKD-EPI 2009","serum_cystatin_c_mg_l":1}`, 422, []fieldError{
			fe("serum_cystatin_c_mg_l", "formula_mismatch", `Cystatin C is not used by CKD-EPI 2009; omit it, or omit "formula" (or send "CKD-EPI 2021") for the CKD-EPI 2021 creatinine-cystatin C or CKD-EPI 2012 cystatin C equation.`)}},
		{"every value wrong, in field order", `{"serum_cystatin_c_mg_l":99,"formula":"x","age":10,"serum_creatinine_umol_l":5,"sex":"m"}`, 422, []fieldError{
			fe("sex", "literal_error", sexMsg),
			fe("serum_creatinine_umol_l", "greater_than_equal", "Input should be at least 20 µmol/L; 5 looks like a value in mg/dL (mg/dL × 88.4 = µmol/L)."),
			fe("age", "greater_than_equal", adult),
			fe("formula", "literal_error", formulas),
			fe("serum_cystatin_c_mg_l", "less_than_equal", "Input should be at most 10 mg/L."),
		}},
		{"every new field wrong, after the others", `{"patient_id":"no spaces","height_cm":1.2,"serum_cystatin_c_mg_l":9,"formula":"CKiD U25","age":30,"serum_creatinine_umol_l":900,"sex":"female"}`, 422, []fieldError{
			fe("serum_creatinine_umol_l", "less_than_equal", "Input should be at most 884 µmol/L, the CKiD authors' input range (0.1 to 10 mg/dL)."),
			fe("age", "less_than_equal", "Input should be at most 25 years: CKiD U25 is defined for ages 1 to 25 (Pierce et al., Kidney Int 2021); for adults send a CKD-EPI formula."),
			fe("serum_cystatin_c_mg_l", "less_than_equal", "Input should be at most 8 mg/L, the CKiD U25 authors' input range (IFCC-calibrated)."),
			fe("height_cm", "greater_than_equal", "Input should be at least 60 cm; 1.2 looks like a height in metres (m × 100 = cm)."),
			fe("patient_id", "string_pattern_mismatch", "Input should be a Patient id: 1 to 64 characters from A-Z, a-z, 0-9, '-' and '.'."),
		}},
		{"cystatin alone with 2009", `{"sex":"male","age":50,"formula":"CKD-EPI 2009","serum_cystatin_c_mg_l":1}`, 422, []fieldError{
			fe("serum_creatinine_umol_l", "missing", required),
			fe("serum_cystatin_c_mg_l", "formula_mismatch", `Cystatin C is not used by CKD-EPI 2009; omit it, or omit "formula" (or send "CKD-EPI 2021") for the CKD-EPI 2021 creatinine-cystatin C or CKD-EPI 2012 cystatin C equation.`)}},
		{"height with CKD-EPI", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"height_cm":180}`, 422, []fieldError{
			fe("height_cm", "formula_mismatch", `Height is used only by "CKiD U25" and "Bedside Schwartz"; omit it with CKD-EPI.`)}},
		{"U25 creatinine without height", `{"sex":"male","serum_creatinine_umol_l":60,"age":10,"formula":"CKiD U25","serum_cystatin_c_mg_l":1}`, 422, []fieldError{
			fe("height_cm", "missing", "Field required: CKiD U25 with serum creatinine needs the height in cm.")}},
		{"U25 cystatin alone with height", `{"sex":"male","age":10,"formula":"CKiD U25","serum_cystatin_c_mg_l":1,"height_cm":140}`, 422, []fieldError{
			fe("height_cm", "formula_mismatch", "Height is used only with serum creatinine; omit it when sending cystatin C alone.")}},
		{"U25 neither marker", `{"sex":"male","age":10,"formula":"CKiD U25"}`, 422, []fieldError{
			fe("serum_creatinine_umol_l", "missing", marker), fe("serum_cystatin_c_mg_l", "missing", marker)}},
		{"U25 age as string", `{"sex":"male","age":"10","formula":"CKiD U25","serum_cystatin_c_mg_l":1}`, 400, []fieldError{
			fe("age", "float_type", "Input should be a number of years (decimals allowed, such as 7.5).")}},
		{"U25 under 1", `{"sex":"male","age":0.99,"formula":"CKiD U25","serum_cystatin_c_mg_l":1}`, 422, []fieldError{
			fe("age", "greater_than_equal", "Input should be at least 1 year: CKiD U25 is defined for ages 1 to 25 (Pierce et al., Kidney Int 2021), and no equation here is validated under 1.")}},
		{"U25 creatinine in mg/dL", `{"sex":"male","age":10,"formula":"CKiD U25","serum_creatinine_umol_l":0.6,"height_cm":140}`, 422, []fieldError{
			fe("serum_creatinine_umol_l", "greater_than_equal", "Input should be at least 8.84 µmol/L, the CKiD authors' input range (0.1 to 10 mg/dL); 0.6 looks like a value in mg/dL (mg/dL × 88.4 = µmol/L).")}},
		{"U25 height too tall", `{"sex":"male","age":20,"formula":"CKiD U25","serum_creatinine_umol_l":80,"height_cm":200.5}`, 422, []fieldError{
			fe("height_cm", "less_than_equal", "Input should be at most 200 cm: the CKiD authors give 60 to 200 cm as the equations' height range.")}},
		{"U25 height too short", `{"sex":"male","age":1,"formula":"CKiD U25","serum_creatinine_umol_l":30,"height_cm":59}`, 422, []fieldError{
			fe("height_cm", "greater_than_equal", "Input should be at least 60 cm: the CKiD authors give 60 to 200 cm as the equations' height range.")}},
		{"Schwartz without creatinine or height", `{"sex":"female","age":8,"formula":"Bedside Schwartz"}`, 422, []fieldError{
			fe("serum_creatinine_umol_l", "missing", "Field required: bedside Schwartz is a creatinine equation (with height_cm)."),
			fe("height_cm", "missing", "Field required: Bedside Schwartz with serum creatinine needs the height in cm.")}},
		{"Schwartz with cystatin", `{"sex":"female","age":8,"formula":"Bedside Schwartz","serum_creatinine_umol_l":40,"height_cm":120,"serum_cystatin_c_mg_l":1}`, 422, []fieldError{
			fe("serum_cystatin_c_mg_l", "formula_mismatch", `Cystatin C is not used by bedside Schwartz; omit it, or send "formula": "CKiD U25", which has cystatin C forms.`)}},
		{"Schwartz at 18", `{"sex":"female","age":18,"formula":"Bedside Schwartz","serum_creatinine_umol_l":60,"height_cm":160}`, 422, []fieldError{
			fe("age", "less_than", `Input should be under 18 years: bedside Schwartz is for children aged 1 to 17; from 18 send a CKD-EPI formula (or "CKiD U25" up to 25).`)}},
		{"Schwartz under 1", `{"sex":"female","age":0.5,"formula":"Bedside Schwartz","serum_creatinine_umol_l":30,"height_cm":65}`, 422, []fieldError{
			fe("age", "greater_than_equal", "Input should be at least 1 year: bedside Schwartz is for children aged 1 to 17, and no equation here is validated under 1.")}},
		{"patient_id without a FHIR answer", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"patient_id":"abc"}`, 422, []fieldError{
			fe("patient_id", "representation_mismatch", "patient_id is used only in the FHIR Observation; send Accept: application/fhir+json, or omit it.")}},
		{"patient_id as number", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"patient_id":9000000009}`, 400, []fieldError{
			fe("patient_id", "string_type", "Input should be a string: the id of a Patient on this server.")}},
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
	h := newServer(slog.New(slog.DiscardHandler), testConfig(t), testMetrics(), up.Load, openapiJSON, testDocs(t), testStore(t), testVerifier(t), time.Now)
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
		`{"sex": "female", "age": 45, "serum_cystatin_c_mg_l": 1.1}`,
		`{"sex": "male", "age": 11, "formula": "CKiD U25", "serum_creatinine_umol_l": 79.56, "height_cm": 120, "serum_cystatin_c_mg_l": 1.3}`,
		`{"sex": "female", "age": 1.5, "formula": "CKiD U25", "serum_cystatin_c_mg_l": 0.9}`,
		`{"sex": "female", "age": 7.5, "formula": "Bedside Schwartz", "serum_creatinine_umol_l": 53.04, "height_cm": 101}`,
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
		if got.Category == "" && !strings.HasPrefix(got.Formula, formulaU25) && got.Formula != formulaSchwartz {
			t.Errorf("no category from %s", got.Formula)
		}
		if r, ok := categories[string(got.Category)]; got.Category != "" && (!ok || whole < r[0] || whole > r[1]) {
			t.Errorf("category %s for reported %q", got.Category, got.Reported)
		}
	})
}

// postCrCl is a POST /crcl request with a JSON body.
func postCrCl(body string) *http.Request {
	req := postEGFR(body)
	req.URL.Path = "/crcl"
	return req
}

// crclBody is a POST /crcl body.
func crclBody(s string, scr float64, age int, weight float64) string {
	return fmt.Sprintf(`{"sex":%q,"serum_creatinine_umol_l":%s,"age":%d,"weight_kg":%s}`, s,
		strconv.FormatFloat(scr, 'f', -1, 64), age, strconv.FormatFloat(weight, 'f', -1, 64))
}

// TestCrClMatchesPublishedValues sends the published Cockcroft-Gault values through POST /crcl: the
// one-decimal value within 0.05 of the published value (plus its precision), within 0.5 of a published
// whole number (97.47 is 97 to the source and 97.5 to us: rounding our one decimal again would be a
// second rounding), and the MHRA advice and the weight used in every answer.
func TestCrClMatchesPublishedValues(t *testing.T) {
	h := newTestServer(t)
	for _, ref := range publishedCrCl {
		res := do(t, h, postCrCl(crclBody(ref.sex, ref.scrUmolL, ref.age, ref.weightKg)))
		got := decodeBody[crclResult](t, res)
		want := crclResult{CrCl: got.CrCl, Formula: formulaCG, WeightUsed: "actual", Advice: mhraCrClAdvice}
		if diff := cmp.Diff(want, got); diff != "" || res.StatusCode != 200 {
			t.Errorf("%s: status %d (-want +got):\n%s", ref.source, res.StatusCode, diff)
		}
		ok := math.Abs(got.CrCl-ref.want) <= 0.05+ref.tol+1e-9
		if ref.tol == 0.5 {
			ok = math.Abs(got.CrCl-ref.want) <= 0.5+1e-9
		}
		if !ok {
			t.Errorf("%s: crcl %.1f, published %g", ref.source, got.CrCl, ref.want)
		}
	}
}

// TestCrClInputRanges sends the validity edges: adult ages (17/18, 120/121), the creatinine window
// and the weight bounds, for both sexes.
func TestCrClInputRanges(t *testing.T) {
	h := newTestServer(t)
	check := func(body string, want int) {
		t.Helper()
		if res := do(t, h, postCrCl(body)); res.StatusCode != want {
			t.Errorf("%s: status %d, want %d", body, res.StatusCode, want)
		}
	}
	for _, s := range []string{"male", "female"} {
		for _, age := range []int{18, 40, 75, 100, 120} {
			check(crclBody(s, 100, age, 70), 200)
		}
		for _, age := range []int{0, 17, 121} {
			check(crclBody(s, 100, age, 70), 422)
		}
		for _, scr := range []float64{20, 88.4, 3000} {
			check(crclBody(s, scr, 50, 70), 200)
		}
		for _, scr := range []float64{1.2, 19.99, 3000.01} {
			check(crclBody(s, scr, 50, 70), 422)
		}
		for _, w := range []float64{20, 45.5, 150, 400} {
			check(crclBody(s, 100, 50, w), 200)
		}
		for _, w := range []float64{-70, 0, 19.99, 400.01, 70000} {
			check(crclBody(s, 100, 50, w), 422)
		}
	}
}

// TestCrClValidation checks the problem bodies of POST /crcl, which follows POST /egfr's rules.
func TestCrClValidation(t *testing.T) {
	h := newTestServer(t)
	fe := func(field, typ, msg string) fieldError { return fieldError{Loc: loc(field), Msg: msg, Type: typ} }
	unknown := "Unknown field (field names are case-sensitive): expected one of sex, serum_creatinine_umol_l, age, weight_kg, patient_id."
	tests := []struct {
		name, body string
		wantStatus int
		wantErrs   []fieldError
	}{
		{"empty object", `{}`, 422, []fieldError{fe("sex", "missing", "Field required."), fe("serum_creatinine_umol_l", "missing", "Field required."),
			fe("age", "missing", "Field required."), fe("weight_kg", "missing", "Field required.")}},
		{"every value wrong", `{"weight_kg":1e6,"age":16,"serum_creatinine_umol_l":1.1,"sex":"F"}`, 422, []fieldError{
			fe("sex", "literal_error", `Input should be "male" or "female" (lower case).`),
			fe("serum_creatinine_umol_l", "greater_than_equal", "Input should be at least 20 µmol/L; 1.1 looks like a value in mg/dL (mg/dL × 88.4 = µmol/L)."),
			fe("age", "greater_than_equal", "Input should be at least 18 years: Cockcroft-Gault is for adults."),
			fe("weight_kg", "less_than_equal", "Input should be at most 400 kg; a larger value is most likely in grams."),
		}},
		{"weight too low", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"weight_kg":12}`, 422, []fieldError{
			fe("weight_kg", "greater_than_equal", "Input should be at least 20 kg (an adult's actual body weight).")}},
		{"types and keys", `{"sex":"male","serum_creatinine_umol_l":88,"age":50.5,"weight_kg":"70","weight_kg":70,"weight":70}`, 400, []fieldError{
			fe("age", "int_from_float", "Input should be a whole number of years, without a fractional part."),
			fe("weight_kg", "float_type", "Input should be a number (kg)."),
			fe("weight", "extra_forbidden", unknown),
			fe("weight_kg", "duplicate_key", "This key appears more than once; send it once."),
		}},
		{"patient_id without a FHIR answer", `{"sex":"male","serum_creatinine_umol_l":88,"age":50,"weight_kg":70,"patient_id":"p1"}`, 422, []fieldError{
			fe("patient_id", "representation_mismatch", "patient_id is used only in the FHIR Observation; send Accept: application/fhir+json, or omit it.")}},
		{"not an object", `[]`, 400, []fieldError{{Loc: []string{"body"}, Msg: "The request body should be a JSON object.", Type: "model_type"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := do(t, h, postCrCl(tt.body))
			want := problem{Type: "about:blank", Title: http.StatusText(tt.wantStatus), Status: tt.wantStatus,
				Detail: problemDetail(tt.wantErrs), Errors: tt.wantErrs, RequestID: testRequestID}
			if diff := cmp.Diff(want, decodeBody[problem](t, res), cmpopts.IgnoreUnexported(fieldError{})); diff != "" || res.StatusCode != tt.wantStatus {
				t.Errorf("status %d, problem body (-want +got):\n%s", res.StatusCode, diff)
			}
		})
	}
	for _, ct := range []string{"", "text/plain", "application/fhir+json"} {
		req := postCrCl(crclBody("male", 88, 50, 70))
		req.Header.Set("Content-Type", ct)
		if res := do(t, h, req); res.StatusCode != http.StatusUnsupportedMediaType {
			t.Errorf("Content-Type %q: status %d, want 415", ct, res.StatusCode)
		}
	}
	if res := do(t, h, postCrCl(crclBody("male", 88, 50, 70)+strings.Repeat(" ", 65536))); res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("over 64 KiB: status %d, want 413", res.StatusCode)
	}
}

// FuzzCrClRequest: whatever the body and Accept, POST /crcl never answers a 5xx or panics, and every
// 200 is a finite, positive clearance with the advice.
func FuzzCrClRequest(f *testing.F) {
	for _, s := range []string{
		`{"sex":"female","age":80,"weight_kg":60,"serum_creatinine_umol_l":110}`,
		`{"sex":"male","age":18,"weight_kg":400,"serum_creatinine_umol_l":20}`,
		`{"sex":"male","age":120,"weight_kg":20,"serum_creatinine_umol_l":3000,"patient_id":"x"}`,
		`{"weight_kg":[],"age":{},"sex":null}`, `[`, ``,
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	h := newTestServer(f)
	f.Fuzz(func(t *testing.T, body string, fhir bool) {
		req := postCrCl(body)
		if fhir {
			req = fhirRequest(req)
		}
		res := do(t, h, req)
		switch res.StatusCode {
		case 200:
		case 400, 401, 413, 422:
			return
		default:
			t.Fatalf("status %d for %q", res.StatusCode, body)
		}
		if fhir {
			if _, problems := r4Problems(t, readAll(t, res.Body)); len(problems) > 0 {
				t.Fatalf("%q: %v", body, problems)
			}
			return
		}
		got := decodeBody[crclResult](t, res)
		if !(got.CrCl > 0) || math.IsInf(got.CrCl, 0) || got.Advice != mhraCrClAdvice {
			t.Fatalf("%q: %+v", body, got)
		}
	})
}

// testMetrics is a metrics registry for tests, with a cap no test reaches unless it means to.
func testMetrics() *metrics { return newMetrics(1000) }
