package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// newTestServer is the full service handler with a discarded log, readiness up, an empty store and
// auth checked against the test issuer.
func newTestServer(t testing.TB) http.Handler {
	t.Helper()
	return newServer(slog.New(slog.DiscardHandler), testConfig(t), func() bool { return true }, openapiJSON, testDocs(t), testStore(t), testVerifier(t))
}

// testConfig is the configuration the handler tests run with: auth on, against the test issuer.
func testConfig(t testing.TB) config {
	return config{auth: localTestIssuer(t).config()}
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

// testStore is an empty journal store in a temporary directory, closed when the test ends.
func testStore(t testing.TB) patientStore {
	t.Helper()
	s, err := openJournalStore(t.TempDir(), slog.New(slog.DiscardHandler), time.Now, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
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
	checkContract(t, req, res, body)
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

// egfrRef is one published reference value from an independent implementation.
type egfrRef struct {
	source   string
	formula  string
	sex      string
	scrUmolL float64
	cysC     float64
	age      int
	want     float64
	tol      float64 // 0.5 means the source publishes whole numbers: ours must round half up to want
}

// publishedEGFR are values published by independent implementations, with the commit read. Inputs
// given in mg/dL are converted with × 88.4 (exact decimals). admiral divides by 88.42, so its 4-dp
// rows feed the µmol/L that gives admiral's mg/dL under our 88.4. Gathered and re-derived with an
// independent Python implementation; sources in each row.
var publishedEGFR = []egfrRef{
	{source: "scientific-tools-org/kidney.epi@d38527c4 docs/reference/egfr.ckdepi.cr.2021.html (57.54)", formula: "CKD-EPI 2021", sex: "male", scrUmolL: 123.76, age: 60, want: 57.54, tol: 0.005},
	{source: "pharmaverse/admiral@05459a5e tests/testthat/test-compute_kidney.R Test 01.01 (NKF 2021 calculator)", formula: "CKD-EPI 2021", sex: "male", scrUmolL: 96.356, age: 55, want: 80, tol: 0.5},
	{source: "pharmaverse/admiral@05459a5e tests/testthat/test-compute_kidney.R Test 01.02 (NKF 2021 calculator)", formula: "CKD-EPI 2021", sex: "female", scrUmolL: 85, age: 65, want: 66, tol: 0.5},
	{source: "pharmaverse/admiral@05459a5e tests/testthat/test-compute_kidney.R Test 01.07 P01-1001", formula: "CKD-EPI 2021", sex: "male", scrUmolL: 96.3 * 88.4 / 88.42, age: 55, want: 80.2293, tol: 5e-05},
	{source: "pharmaverse/admiral@05459a5e tests/testthat/test-compute_kidney.R Test 01.07 P01-1002", formula: "CKD-EPI 2021", sex: "female", scrUmolL: 70 * 88.4 / 88.42, age: 52, want: 89.7175, tol: 5e-05},
	{source: "pharmaverse/admiral@05459a5e tests/testthat/test-compute_kidney.R Test 01.07 P01-1003 (below male knee)", formula: "CKD-EPI 2021", sex: "male", scrUmolL: 77 * 88.4 / 88.42, age: 67, want: 94.5453, tol: 5e-05},
	{source: "pharmaverse/admiral@05459a5e tests/testthat/test-compute_kidney.R Test 01.07 P01-1004", formula: "CKD-EPI 2021", sex: "female", scrUmolL: 65 * 88.4 / 88.42, age: 76, want: 84.4646, tol: 5e-05},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R example 95.2 (below male knee)", formula: "CKD-EPI 2021", sex: "male", scrUmolL: 70.72, age: 70, want: 95.2, tol: 0.05},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R example 79.2", formula: "CKD-EPI 2021", sex: "female", scrUmolL: 70.72, age: 70, want: 79.2, tol: 0.05},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R (Inker 2021 Table S11)", formula: "CKD-EPI 2021", sex: "male", scrUmolL: 53.04, age: 50, want: 118, tol: 0.5},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R (Inker 2021 Table S11)", formula: "CKD-EPI 2021", sex: "male", scrUmolL: 88.4, age: 50, want: 92, tol: 0.5},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R (Inker 2021 Table S11)", formula: "CKD-EPI 2021", sex: "male", scrUmolL: 132.6, age: 50, want: 56, tol: 0.5},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R (Inker 2021 Table S11)", formula: "CKD-EPI 2021", sex: "male", scrUmolL: 176.8, age: 50, want: 40, tol: 0.5},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R (Inker 2021 Table S11)", formula: "CKD-EPI 2021", sex: "male", scrUmolL: 53.04, age: 75, want: 101, tol: 0.5},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R (Inker 2021 Table S11)", formula: "CKD-EPI 2021", sex: "male", scrUmolL: 88.4, age: 75, want: 78, tol: 0.5},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R (Inker 2021 Table S11)", formula: "CKD-EPI 2021", sex: "male", scrUmolL: 132.6, age: 75, want: 48, tol: 0.5},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R (Inker 2021 Table S11)", formula: "CKD-EPI 2021", sex: "male", scrUmolL: 176.8, age: 75, want: 34, tol: 0.5},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R (Inker 2021 Table S11)", formula: "CKD-EPI 2021", sex: "female", scrUmolL: 53.04, age: 50, want: 109, tol: 0.5},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R (Inker 2021 Table S11)", formula: "CKD-EPI 2021", sex: "female", scrUmolL: 88.4, age: 50, want: 69, tol: 0.5},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R (Inker 2021 Table S11)", formula: "CKD-EPI 2021", sex: "female", scrUmolL: 132.6, age: 50, want: 42, tol: 0.5},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R (Inker 2021 Table S11)", formula: "CKD-EPI 2021", sex: "female", scrUmolL: 176.8, age: 50, want: 30, tol: 0.5},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R (Inker 2021 Table S11)", formula: "CKD-EPI 2021", sex: "female", scrUmolL: 53.04, age: 75, want: 94, tol: 0.5},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R (Inker 2021 Table S11)", formula: "CKD-EPI 2021", sex: "female", scrUmolL: 88.4, age: 75, want: 59, tol: 0.5},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R (Inker 2021 Table S11)", formula: "CKD-EPI 2021", sex: "female", scrUmolL: 132.6, age: 75, want: 36, tol: 0.5},
	{source: "JMLuther/tabletools@017ced82 R/calculate_egfr_ckdepi.R (Inker 2021 Table S11)", formula: "CKD-EPI 2021", sex: "female", scrUmolL: 176.8, age: 75, want: 26, tol: 0.5},

	{source: "scientific-tools-org/kidney.epi@d38527c4 docs/reference/egfr.ckdepi.cr.2009.html (54.22; male: tabular = compact)", formula: "CKD-EPI 2009", sex: "male", scrUmolL: 123.76, age: 60, want: 54.22, tol: 0.005},
	{source: "scientific-tools-org/kidney.epi@d38527c4 docs/articles/gfr.html (67.70)", formula: "CKD-EPI 2009", sex: "male", scrUmolL: 103, age: 60, want: 67.7, tol: 0.005},
	{source: "johnasher/transplantr@1c84e30b docs/articles/egfr.html results row 1", formula: "CKD-EPI 2009", sex: "male", scrUmolL: 101, age: 45, want: 77.0, tol: 0.05},
	{source: "johnasher/transplantr@1c84e30b docs/articles/egfr.html results row 2 (compact form)", formula: "CKD-EPI 2009", sex: "female", scrUmolL: 201, age: 65, want: 21.9, tol: 0.05},
	{source: "johnasher/transplantr@1c84e30b docs/articles/egfr.html serial results row 1, 1 yr", formula: "CKD-EPI 2009", sex: "male", scrUmolL: 110, age: 46, want: 69.0, tol: 0.05},
	{source: "johnasher/transplantr@1c84e30b docs/articles/egfr.html serial results row 1, 5 yr", formula: "CKD-EPI 2009", sex: "male", scrUmolL: 115, age: 50, want: 63.6, tol: 0.05},
	{source: "johnasher/transplantr@1c84e30b docs/articles/egfr.html serial results row 2, 1 yr (compact form)", formula: "CKD-EPI 2009", sex: "female", scrUmolL: 220, age: 66, want: 19.5, tol: 0.05},
	{source: "johnasher/transplantr@1c84e30b docs/articles/egfr.html serial results row 2, 5 yr (compact form)", formula: "CKD-EPI 2009", sex: "female", scrUmolL: 201, age: 70, want: 21.1, tol: 0.05},
	{source: "alwinw/epocakir@0435f6d1 tests/testthat/test-ckd.R closed form 141*(1.5/0.9)^-1.209*0.993^20", formula: "CKD-EPI 2009", sex: "male", scrUmolL: 132.6, age: 20, want: 66.0676629118124, tol: 0.05},
	{source: "alwinw/epocakir@0435f6d1 tests/testthat/test-ckd.R closed form 141*(0.5/0.9)^-0.411*0.993^20", formula: "CKD-EPI 2009", sex: "male", scrUmolL: 44.2, age: 20, want: 155.99873697671453, tol: 0.05},
	{source: "alwinw/epocakir@0435f6d1 tests/testthat/test-ckd.R closed form 143.5*(0.5/0.7)^-0.329*0.993^20", formula: "CKD-EPI 2009", sex: "female", scrUmolL: 44.2, age: 20, want: 139.28777299479648, tol: 0.05},
	{source: "alwinw/epocakir@0435f6d1 tests/testthat/test-ckd.R closed form 143.5*(1.5/0.7)^-1.209*0.993^20", formula: "CKD-EPI 2009", sex: "female", scrUmolL: 132.6, age: 20, want: 49.62106362959784, tol: 0.05},
	{source: "ellessenne/SCREAM@0a4a9fb3 tests/testthat/test-ckd_epi.R (NKF calculator)", formula: "CKD-EPI 2009", sex: "male", scrUmolL: 50, age: 40, want: 129, tol: 0.5},
	{source: "ellessenne/SCREAM@0a4a9fb3 tests/testthat/test-ckd_epi.R (NKF calculator)", formula: "CKD-EPI 2009", sex: "female", scrUmolL: 50, age: 40, want: 116, tol: 0.5},
	{source: "ellessenne/SCREAM@0a4a9fb3 tests/testthat/test-ckd_epi.R (NKF calculator)", formula: "CKD-EPI 2009", sex: "male", scrUmolL: 30, age: 50, want: 148, tol: 0.5},
	{source: "ellessenne/SCREAM@0a4a9fb3 tests/testthat/test-ckd_epi.R (NKF calculator)", formula: "CKD-EPI 2009", sex: "female", scrUmolL: 30, age: 50, want: 128, tol: 0.5},
	{source: "ellessenne/SCREAM@0a4a9fb3 tests/testthat/test-ckd_epi.R (NKF calculator)", formula: "CKD-EPI 2009", sex: "male", scrUmolL: 60, age: 60, want: 104, tol: 0.5},
	{source: "ellessenne/SCREAM@0a4a9fb3 tests/testthat/test-ckd_epi.R (NKF calculator)", formula: "CKD-EPI 2009", sex: "female", scrUmolL: 60, age: 60, want: 95, tol: 0.5},
	{source: "ellessenne/SCREAM@0a4a9fb3 tests/testthat/test-ckd_epi.R (NKF calculator)", formula: "CKD-EPI 2009", sex: "male", scrUmolL: 100, age: 70, want: 65, tol: 0.5},
	{source: "ellessenne/SCREAM@0a4a9fb3 tests/testthat/test-ckd_epi.R (NKF calculator)", formula: "CKD-EPI 2009", sex: "female", scrUmolL: 100, age: 70, want: 49, tol: 0.5},

	{source: "scientific-tools-org/kidney.epi@d38527c4 docs/reference/egfr.ckdepi.cr_cys.2021.html (83.97)", formula: "CKD-EPI 2021 creatinine-cystatin C", sex: "male", scrUmolL: 123.76, cysC: 0.8, age: 60, want: 83.97, tol: 0.005},
	{source: "JMLuther/tabletools@e8e2de11 R/calculate_egfr_ckdepi_cysc.R example 54", formula: "CKD-EPI 2021 creatinine-cystatin C", sex: "female", scrUmolL: 88.4, cysC: 1.5, age: 50, want: 54, tol: 0.5},
	{source: "JMLuther/tabletools@e8e2de11 R/calculate_egfr_ckdepi_cysc.R example 115", formula: "CKD-EPI 2021 creatinine-cystatin C", sex: "female", scrUmolL: 53.04, cysC: 0.7, age: 50, want: 115, tol: 0.5},
	{source: "JMLuther/tabletools@e8e2de11 R/calculate_egfr_ckdepi_cysc.R example 123", formula: "CKD-EPI 2021 creatinine-cystatin C", sex: "male", scrUmolL: 53.04, cysC: 0.7, age: 50, want: 123, tol: 0.5},
	{source: "JMLuther/tabletools@e8e2de11 R/calculate_egfr_ckdepi_cysc.R example 111", formula: "CKD-EPI 2021 creatinine-cystatin C", sex: "female", scrUmolL: 53.04, cysC: 0.8, age: 50, want: 111, tol: 0.5},
	{source: "JMLuther/tabletools@e8e2de11 R/calculate_egfr_ckdepi_cysc.R example 118", formula: "CKD-EPI 2021 creatinine-cystatin C", sex: "male", scrUmolL: 53.04, cysC: 0.8, age: 50, want: 118, tol: 0.5},
}

// equation returns the pure function for a formula name.
func equation(formula string, scrUmolL, cysC float64, age int, s sex) float64 {
	scr := scrUmolL / umolPerMgDL
	switch formula {
	case formula2021:
		return ckdEPI2021(scr, age, s)
	case formula2009:
		return ckdEPI2009(scr, age, s)
	default:
		return ckdEPI2021CrCys(scr, cysC, age, s)
	}
}

// TestEquationsMatchPublishedValues checks the unrounded equations at each source's own precision.
func TestEquationsMatchPublishedValues(t *testing.T) {
	for _, ref := range publishedEGFR {
		got := equation(ref.formula, ref.scrUmolL, ref.cysC, ref.age, sex(ref.sex))
		ok := math.Abs(got-ref.want) <= ref.tol
		if ref.tol == 0.5 { // a published whole number: ours must round half up to it
			ok = math.Round(got) == ref.want
		}
		if !ok {
			t.Errorf("%s %s Scr %g µmol/L CysC %g age %d = %.6f, want %g ± %g (%s)",
				ref.formula, ref.sex, ref.scrUmolL, ref.cysC, ref.age, got, ref.want, ref.tol, ref.source)
		}
	}
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

// TestEquationStructure checks properties stated in the papers rather than values: continuity at
// the knee (κ), the sex factor above both knees, and that eGFR falls as creatinine and age rise.
func TestEquationStructure(t *testing.T) {
	for _, formula := range []string{formula2021, formula2009, formula2021CrCysC} {
		for _, s := range []sex{male, female} {
			kneeUmol := 0.9 * umolPerMgDL // 79.56
			if s == female {
				kneeUmol = 0.7 * umolPerMgDL // 61.88
			}
			for _, age := range []int{18, 50, 90} {
				at := equation(formula, kneeUmol, 1.2, age, s)
				for _, eps := range []float64{-1e-9, 1e-9} {
					near := equation(formula, kneeUmol*(1+eps), 1.2, age, s)
					if math.Abs(near-at)/at > 1e-8 {
						t.Errorf("%s %s age %d: discontinuous at the knee: %.12f vs %.12f", formula, s, age, at, near)
					}
				}
				prev := math.Inf(1)
				for scr := 20.0; scr <= 3000; scr *= 1.05 {
					e := equation(formula, scr, 1.2, age, s)
					if !(e < prev) || e <= 0 {
						t.Errorf("%s %s age %d: eGFR %.3f at %g µmol/L does not fall from %.3f", formula, s, age, e, scr, prev)
					}
					prev = e
				}
			}
			prev := math.Inf(1)
			for age := 18; age <= 120; age++ {
				e := equation(formula, 100, 1.2, age, s)
				if !(e < prev) {
					t.Errorf("%s %s: eGFR does not fall with age at %d", formula, s, age)
				}
				prev = e
			}
		}
	}
	// Above both knees the min() terms are 1, so female/male at the same Scr/κ is the sex factor.
	for _, tt := range []struct {
		formula string
		want    float64
	}{{formula2021, 1.012}, {formula2009, 1.018}, {formula2021CrCysC, 0.963}} {
		r := 1.7
		f := equation(tt.formula, 0.7*r*umolPerMgDL, 1.2, 60, female)
		m := equation(tt.formula, 0.9*r*umolPerMgDL, 1.2, 60, male)
		if got := f / m; math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("%s: female/male above the knee = %.15f, want %g", tt.formula, got, tt.want)
		}
	}
}

// invert solves a creatinine equation for the Scr (µmol/L) that gives eGFR target, with the
// published constants written out again here (not calling the code under test).
func invert(formula string, target float64, age int, s sex) float64 {
	type k struct{ a, kappa, alpha, beta, ageBase, sexF float64 }
	c := map[string]map[sex]k{
		formula2021: {male: {142, 0.9, -0.302, -1.200, 0.9938, 1}, female: {142, 0.7, -0.241, -1.200, 0.9938, 1.012}},
		formula2009: {male: {141, 0.9, -0.411, -1.209, 0.993, 1}, female: {141, 0.7, -0.329, -1.209, 0.993, 1.018}},
	}[formula][s]
	atKnee := c.a * math.Pow(c.ageBase, float64(age)) * c.sexF
	exp := c.beta
	if target > atKnee {
		exp = c.alpha
	}
	return c.kappa * math.Pow(target/atKnee, 1/exp) * 88.4
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

func TestNewEGFRResultRounding(t *testing.T) {
	tests := []struct {
		give float64
		want egfrResult
	}{
		{89.46, egfrResult{89.5, "89", "G2", formula2021}},
		{89.5, egfrResult{89.5, "90", "G1", formula2021}},
		{90.4999, egfrResult{90.5, "90", "G1", formula2021}},
		{90.5, egfrResult{90.5, ">90", "G1", formula2021}},
		{59.5, egfrResult{59.5, "60", "G2", formula2021}},
		{59.49, egfrResult{59.5, "59", "G3a", formula2021}},
		{14.5, egfrResult{14.5, "15", "G4", formula2021}},
		{0.86, egfrResult{0.9, "1", "G5", formula2021}},
		{0.04, egfrResult{0, "0", "G5", formula2021}},
		{150.25, egfrResult{150.3, ">90", "G1", formula2021}},
	}
	for _, tt := range tests {
		got := newEGFRResult(tt.give, formula2021)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("newEGFRResult(%v) (-want +got):\n%s", tt.give, diff)
		}
		// The hand-written encoder must write what encoding/json writes.
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		enc.Encode(got)
		if string(got.appendJSON(nil)) != want.String() {
			t.Errorf("appendJSON = %s, encoding/json = %s", got.appendJSON(nil), want.String())
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

func TestRequestIDs(t *testing.T) {
	h := newTestServer(t)
	uuidV4 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	long := strings.Repeat("a", 128)
	tests := []struct {
		name                   string
		reqID, corrID          []string
		wantStatus             int
		wantReqID, wantCorrID  string // "uuid" means a generated one
		wantDetailMentionsName string
	}{
		{"absent", nil, nil, 200, "uuid", "", ""},
		{"empty", []string{""}, nil, 200, "uuid", "", ""},
		{"echoed", []string{"abc-123_X.y:z"}, []string{"corr-1"}, 200, "abc-123_X.y:z", "corr-1", ""},
		{"128 characters", []string{long}, []string{long}, 200, long, long, ""},
		{"129 characters", []string{long + "a"}, nil, 400, "uuid", "", "X-Request-ID"},
		{"space", []string{"a b"}, nil, 400, "uuid", "", "X-Request-ID"},
		{"html", []string{"<script>"}, nil, 400, "uuid", "", "X-Request-ID"},
		{"non-ASCII", []string{"é"}, nil, 400, "uuid", "", "X-Request-ID"},
		{"sent twice", []string{"a", "b"}, nil, 400, "uuid", "", "X-Request-ID"},
		{"bad correlation", []string{"ok"}, []string{"a/b"}, 400, "ok", "", "X-Correlation-ID"},
		{"empty correlation", nil, []string{""}, 200, "uuid", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/livez", nil)
			for _, v := range tt.reqID {
				req.Header.Add("X-Request-ID", v)
			}
			for _, v := range tt.corrID {
				req.Header.Add("X-Correlation-ID", v)
			}
			res := do(t, h, req)
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d", res.StatusCode, tt.wantStatus)
			}
			got := res.Header.Get("X-Request-ID")
			if tt.wantReqID == "uuid" && !uuidV4.MatchString(got) || tt.wantReqID != "uuid" && got != tt.wantReqID {
				t.Errorf("X-Request-ID %q, want %s", got, tt.wantReqID)
			}
			if got := res.Header.Get("X-Correlation-ID"); got != tt.wantCorrID {
				t.Errorf("X-Correlation-ID %q, want %q", got, tt.wantCorrID)
			}
			if tt.wantStatus == 400 {
				p := decodeBody[problem](t, res)
				if !strings.Contains(p.Detail, tt.wantDetailMentionsName) || p.RequestID != got {
					t.Errorf("problem %+v does not name %s or carry request id %q", p, tt.wantDetailMentionsName, got)
				}
			}
		})
	}
	a := do(t, h, httptest.NewRequest("GET", "/livez", nil)).Header.Get("X-Request-ID")
	b := do(t, h, httptest.NewRequest("GET", "/livez", nil)).Header.Get("X-Request-ID")
	if a == b {
		t.Errorf("two generated request IDs are equal: %s", a)
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

// TestPanicRecovery: a panicking handler yields a generic 500 problem and a log line, and the
// server goes on serving.
func TestPanicRecovery(t *testing.T) {
	var logs bytes.Buffer
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) { panic("patient 9434765919 broke it") })
	mux.Handle("GET /livez", handleLivez())
	srv := httptest.NewServer(withRequestContext(slog.New(slog.NewJSONHandler(&logs, nil)), mux))
	defer srv.Close()

	res, err := http.Get(srv.URL + "/boom")
	if err != nil {
		t.Fatal(err)
	}
	got := decodeBody[problem](t, res)
	want := problem{Type: "about:blank", Title: "Internal Server Error", Status: 500,
		Detail: "The server could not complete the request.", RequestID: res.Header.Get("X-Request-ID")}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(fieldError{})); diff != "" {
		t.Errorf("500 body (-want +got):\n%s", diff)
	}
	if res, err := http.Get(srv.URL + "/livez"); err != nil || res.StatusCode != 200 {
		t.Errorf("after a panic: %v %v", res, err)
	}
	if !strings.Contains(logs.String(), `"msg":"panic"`) {
		t.Errorf("no panic log line in %s", logs.String())
	}
}

// TestRequestLog checks the one log line per request and that it carries no body or query data.
func TestRequestLog(t *testing.T) {
	var logs bytes.Buffer
	h := newServer(slog.New(slog.NewJSONHandler(&logs, nil)), testConfig(t), func() bool { return true }, openapiJSON, testDocs(t), testStore(t), testVerifier(t))
	req := postEGFR(`{"sex":"female","serum_creatinine_umol_l":77.7,"age":63}`)
	req.Header.Set("X-Correlation-ID", "corr-9")
	req.URL.RawQuery = "nhs=9434765919"
	h.ServeHTTP(httptest.NewRecorder(), req)
	var line map[string]any
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("log is not one JSON line: %v\n%s", err, logs.String())
	}
	delete(line, "time")
	if _, ok := line["duration_us"].(float64); !ok {
		t.Errorf("no duration_us in %v", line)
	}
	delete(line, "duration_us")
	want := map[string]any{"level": "INFO", "msg": "request", "method": "POST", "route": "POST /egfr",
		"status": float64(200), "request_id": testRequestID, "correlation_id": "corr-9"}
	if diff := cmp.Diff(want, line); diff != "" {
		t.Errorf("log line (-want +got):\n%s", diff)
	}
	for _, secret := range []string{"77.7", "female", "9434765919"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("log line leaks %q: %s", secret, logs.String())
		}
	}
}

// TestGracefulShutdown: when the context ends, /readyz turns 503 while the listener is still open,
// an in-flight request finishes with its 200, and serve returns nil.
func TestGracefulShutdown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	var up atomic.Bool
	started, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("GET /readyz", handleReadyz(up.Load))
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		writeJSON(w, 200, "application/json", health{"ok"})
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	up.Store(true)
	go func() { done <- serve(ctx, slog.New(slog.DiscardHandler), ln, mux, &up, 300*time.Millisecond) }()
	waitReady(t, base)

	slow := make(chan int, 1)
	go func() {
		res, err := http.Get(base + "/slow")
		if err != nil {
			slow <- 0
			return
		}
		res.Body.Close()
		slow <- res.StatusCode
	}()
	<-started
	cancel()
	deadline := time.Now().Add(2 * time.Second)
	for {
		res, err := http.Get(base + "/readyz")
		if err == nil && res.StatusCode == http.StatusServiceUnavailable {
			res.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never answered 503 during the drain (last %v %v)", res, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	if got := <-slow; got != 200 {
		t.Errorf("in-flight request: status %d, want 200", got)
	}
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// waitReady polls /readyz until it answers 200.
func waitReady(t *testing.T, base string) {
	t.Helper()
	for range 200 {
		res, err := http.Get(base + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s/readyz never became ready", base)
}

// startRun runs the whole program as main does, with a fake environment plus PORT=0, and returns
// its base URL once it listens, and a function that stops it and returns run's result.
func startRun(t *testing.T, env mapEnv) (base string, stop func() error) {
	t.Helper()
	env["PORT"] = "0"
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"clinicalapi"}, env.get, pw, io.Discard)
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	for lines.Scan() {
		var l struct{ Msg, Addr string }
		json.Unmarshal(lines.Bytes(), &l)
		if l.Msg == "listening" {
			_, port, _ := net.SplitHostPort(l.Addr)
			base = "http://127.0.0.1:" + port
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if base == "" {
		cancel()
		t.Fatalf("run never logged its address: %v", <-done)
	}
	return base, func() error { cancel(); return <-done }
}

// TestRun starts the whole program as main does, with a fake environment.
func TestRun(t *testing.T) {
	addr, stop := startRun(t, mapEnv{"DATA_DIR": t.TempDir()})
	waitReady(t, addr)
	res, err := http.Post(addr+"/egfr", "application/json", strings.NewReader(`{"sex": "male", "serum_creatinine_umol_l": 88, "age": 50}`))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("POST /egfr: %v %v", res, err)
	}
	if diff := cmp.Diff(egfrResult{92.2, ">90", "G1", formula2021}, decodeBody[egfrResult](t, res)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if err := stop(); err != nil {
		t.Errorf("run: %v", err)
	}
}

// mapEnv is a fake environment for run.
type mapEnv map[string]string

func (m mapEnv) get(k string) string { return m[k] }

func TestRunRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  mapEnv
		want string
	}{
		{"port not a number", nil, mapEnv{"PORT": "http"}, `config: PORT must be a TCP port number from 0 to 65535, got "http"`},
		{"port too big", nil, mapEnv{"PORT": "65536"}, `config: PORT must be a TCP port number from 0 to 65535, got "65536"`},
		{"port negative", nil, mapEnv{"PORT": "-1"}, `config: PORT must be a TCP port number from 0 to 65535, got "-1"`},
		{"argument", []string{"x", "--port=1"}, mapEnv{}, `unexpected argument "--port=1": configuration is read from environment variables only (the one subcommand is dev-issuer)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if args == nil {
				args = []string{"clinicalapi"}
			}
			err := run(t.Context(), args, tt.env.get, io.Discard, io.Discard)
			if err == nil || err.Error() != tt.want {
				t.Errorf("run() = %v, want %s", err, tt.want)
			}
		})
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

// ---- FHIR Patient over HTTP ----

const minimalPatient = `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9991234578"}],"name":[{"family":"Smith","given":["Jo"]}],"gender":"female","birthDate":"1974-12-25"}`

func postPatient(body string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/Patient", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("X-Request-ID", testRequestID)
	return req
}

func TestPatientCreateAndRead(t *testing.T) {
	h := newTestServer(t)
	before := time.Now().UTC().Truncate(time.Second)
	res := do(t, h, postPatient(`{"resourceType":"Patient","id":"not a valid id!","meta":{"versionId":"7","lastUpdated":"2001-01-01T00:00:00Z","security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}],"tag":[{"code":"t"}],"profile":["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]},"gender":"male","birthDate":"1974"}`))
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("create: status %d: %s", res.StatusCode, readAll(t, res.Body))
	}
	created := decodeAnyBody(t, res)
	id, _ := created["id"].(string)
	if !validFHIRID(id) || id == "not a valid id!" {
		t.Fatalf("server id %q", id)
	}
	meta := created["meta"].(map[string]any)
	lastUpdated, err := time.Parse(time.RFC3339Nano, meta["lastUpdated"].(string))
	if err != nil || lastUpdated.Before(before) || meta["versionId"] != "1" {
		t.Errorf("meta %v: want versionId 1 and a fresh lastUpdated", meta)
	}
	wantHeaders := map[string]string{
		"Location":      "/Patient/" + id + "/_history/1",
		"ETag":          `W/"1"`,
		"Last-Modified": lastUpdated.Format(http.TimeFormat),
		"Content-Type":  fhirContentType,
	}
	for k, want := range wantHeaders {
		if got := res.Header.Get(k); got != want {
			t.Errorf("create: %s %q, want %q", k, got, want)
		}
	}
	wantBody := map[string]any{"resourceType": "Patient", "gender": "male", "birthDate": "1974", "meta": map[string]any{
		"security": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}},
		"tag":      []any{map[string]any{"code": "t"}},
		"profile":  []any{"https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"},
	}}
	if diff := cmp.Diff(wantBody, withoutServerMeta(created)); diff != "" {
		t.Errorf("created body (-want +got):\n%s", diff)
	}

	read := do(t, h, httptest.NewRequest("GET", "/Patient/"+id, nil))
	if read.StatusCode != 200 || read.Header.Get("ETag") != `W/"1"` || read.Header.Get("Last-Modified") != wantHeaders["Last-Modified"] {
		t.Errorf("read: %d %v", read.StatusCode, read.Header)
	}
	if diff := cmp.Diff(wantBody, withoutServerMeta(decodeAnyBody(t, read))); diff != "" {
		t.Errorf("read body (-want +got):\n%s", diff)
	}
}

func decodeAnyBody(t testing.TB, res *http.Response) map[string]any {
	t.Helper()
	d := json.NewDecoder(res.Body)
	d.UseNumber()
	var v map[string]any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode %d body: %v", res.StatusCode, err)
	}
	return v
}

func TestPatientPrefer(t *testing.T) {
	h := newTestServer(t)
	for _, tt := range []struct {
		prefer   string
		wantBody string // "", "Patient" or "OperationOutcome"
	}{
		{"", "Patient"}, {"return=representation", "Patient"}, {"return=minimal", ""},
		{"return=OperationOutcome", "OperationOutcome"}, {`handling=strict, return="minimal"`, ""},
	} {
		req := postPatient(minimalPatient)
		if tt.prefer != "" {
			req.Header.Set("Prefer", tt.prefer)
		}
		res := do(t, h, req)
		body := readAll(t, res.Body)
		if res.StatusCode != 201 || res.Header.Get("Location") == "" || res.Header.Get("ETag") != `W/"1"` {
			t.Errorf("Prefer %q: %d %v", tt.prefer, res.StatusCode, res.Header)
		}
		var got struct{ ResourceType string }
		json.Unmarshal(body, &got)
		if got.ResourceType != tt.wantBody || (tt.wantBody == "") != (len(body) == 0) {
			t.Errorf("Prefer %q: body %s, want %q", tt.prefer, body, tt.wantBody)
		}
	}
}

// TestPatientExamplesRoundTrip: every official example is accepted over HTTP and read back equal to
// what was sent, apart from the server-owned id and meta fields.
func TestPatientExamplesRoundTrip(t *testing.T) {
	h := newTestServer(t)
	examples := patientExamples(t, "valid")
	for name, b := range examples {
		res := do(t, h, postPatient(string(b)))
		if res.StatusCode != http.StatusCreated {
			t.Errorf("%s: status %d: %s", name, res.StatusCode, readAll(t, res.Body))
			continue
		}
		id := strings.Split(res.Header.Get("Location"), "/")[2]
		read := do(t, h, httptest.NewRequest("GET", "/Patient/"+id, nil))
		var sent map[string]any
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		if err := d.Decode(&sent); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(withoutServerMeta(sent), withoutServerMeta(decodeAnyBody(t, read))); diff != "" {
			t.Errorf("%s: read back differs (-sent +read):\n%s", name, diff)
		}
	}
	if len(examples) != 37 {
		t.Errorf("%d examples, want the 37 official ones", len(examples))
	}
}

func TestPatientErrors(t *testing.T) {
	h := newTestServer(t)
	big := `{"resourceType":"Patient","name":[{"text":"` + strings.Repeat("a", maxFHIRBody) + `"}]}`
	tests := []struct {
		name       string
		method     string
		path       string
		ctype      string
		accept     string
		body       string
		wantStatus int
		wantIssue  fhirIssue
	}{
		{"wrong content type", "POST", "/Patient", "text/plain", "", minimalPatient, 415,
			fhirIssue{"error", "not-supported", "Content-Type must be application/fhir+json or application/json (charset utf-8).", nil, nil}},
		{"xml content type", "POST", "/Patient", "application/fhir+xml", "", minimalPatient, 415,
			fhirIssue{"error", "not-supported", "Content-Type must be application/fhir+json or application/json (charset utf-8).", nil, nil}},
		{"accept xml", "POST", "/Patient", "application/fhir+json", "application/fhir+xml", minimalPatient, 406,
			fhirIssue{"error", "not-supported", "Accept must allow application/fhir+json or application/json: this server speaks FHIR JSON only.", nil, nil}},
		{"format xml", "GET", "/metadata?_format=xml", "", "", "", 406,
			fhirIssue{"error", "not-supported", "_format must be json, application/json or application/fhir+json: this server speaks FHIR JSON only.", nil, nil}},
		{"too large", "POST", "/Patient", "application/fhir+json", "", big, 413,
			fhirIssue{"error", "too-long", "The request body is larger than 1048576 bytes.", nil, nil}},
		{"not json", "POST", "/Patient", "application/json", "", `{"resourceType":`, 400,
			fhirIssue{Severity: "error", Code: "structure"}},
		{"bad birthDate", "POST", "/Patient", "application/fhir+json", "", `{"resourceType":"Patient","birthDate":"1974-02-30"}`, 400,
			fhirIssue{Severity: "error", Code: "value", Expression: []string{"Patient.birthDate"}}},
		{"bad NHS number", "POST", "/Patient", "application/fhir+json", "", `{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9991234579"}]}`, 422,
			fhirIssue{Severity: "error", Code: "business-rule", Expression: []string{"Patient.identifier[0].value"}}},
		{"unknown id", "GET", "/Patient/no-such-id", "", "", "", 404,
			fhirIssue{"error", "not-found", `There is no Patient with id "no-such-id".`, []string{"Patient.id"}, nil}},
		{"invalid id", "GET", "/Patient/bad_id", "", "", "", 400,
			fhirIssue{"error", "value", "The id in the URL must be 1 to 64 characters from A-Z, a-z, 0-9, '-' and '.'.", []string{"Patient.id"}, nil}},
		{"id too long", "GET", "/Patient/" + strings.Repeat("a", 65), "", "", "", 400,
			fhirIssue{"error", "value", "The id in the URL must be 1 to 64 characters from A-Z, a-z, 0-9, '-' and '.'.", []string{"Patient.id"}, nil}},
		{"unknown sub-path", "GET", "/Patient/abc/everything", "", "", "", 404,
			fhirIssue{"error", "not-found", "There is no resource at this path.", nil, nil}},
		{"patch not supported", "PATCH", "/Patient/abc", "", "", "", 405,
			fhirIssue{"error", "not-supported", "This path does not support PATCH; it supports DELETE, GET, HEAD, PUT.", nil, nil}},
		{"delete on type", "DELETE", "/Patient", "", "", "", 405,
			fhirIssue{"error", "not-supported", "This path does not support DELETE; it supports GET, HEAD, POST.", nil, nil}},
		{"metadata post", "POST", "/metadata", "", "", "", 405,
			fhirIssue{"error", "not-supported", "This path does not support POST; it supports GET, HEAD.", nil, nil}},
		{"bad request id on FHIR route", "GET", "/metadata", "", "", "", 400,
			fhirIssue{"error", "invalid", "X-Request-ID must be 1 to 128 characters from A-Z, a-z, 0-9, '.', '_', ':' and '-', sent once.", nil, nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			if tt.accept != "" {
				req.Header.Set("Accept", tt.accept)
			}
			if tt.name == "bad request id on FHIR route" {
				req.Header.Set("X-Request-ID", "bad id")
			}
			res := do(t, h, req)
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if ct := res.Header.Get("Content-Type"); ct != fhirContentType {
				t.Errorf("Content-Type %q", ct)
			}
			got := decodeBody[operationOutcome](t, res)
			if got.ResourceType != "OperationOutcome" || len(got.Issue) == 0 {
				t.Fatalf("not an OperationOutcome: %+v", got)
			}
			issue := got.Issue[0]
			if tt.wantIssue.Diagnostics == "" { // validator messages are tested in patient_test.go
				issue.Diagnostics = ""
			}
			if diff := cmp.Diff(tt.wantIssue, issue); diff != "" {
				t.Errorf("issue (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPatientBabyNHSNumberOverHTTP(t *testing.T) {
	h := newTestServer(t)
	for name, b := range patientExamples(t, "edge") {
		res := do(t, h, postPatient(string(b)))
		got := decodeBody[operationOutcome](t, res)
		if res.StatusCode != 422 || len(got.Issue) != 1 || got.Issue[0].Code != "business-rule" {
			t.Errorf("%s: %d %+v, want one 422 business-rule issue", name, res.StatusCode, got)
		}
	}
}

func TestAcceptHeader(t *testing.T) {
	tests := []struct {
		accept []string
		want   bool
	}{
		{nil, true},
		{[]string{"application/fhir+json"}, true},
		{[]string{"application/json"}, true},
		{[]string{"application/fhir+json;q=0.9, application/fhir+xml"}, true},
		{[]string{"*/*"}, true},
		{[]string{"application/*"}, true},
		{[]string{"text/html, application/xhtml+xml, */*;q=0.8"}, true},
		{[]string{"application/fhir+xml"}, false},
		{[]string{"application/json;q=0"}, false},
		{[]string{"text/html"}, false},
	}
	for _, tt := range tests {
		if got := acceptsFHIRJSON(tt.accept); got != tt.want {
			t.Errorf("acceptsFHIRJSON(%q) = %v, want %v", tt.accept, got, tt.want)
		}
	}
}

func TestMetadata(t *testing.T) {
	h := newTestServer(t)
	res := do(t, h, httptest.NewRequest("GET", "/metadata", nil))
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != fhirContentType {
		t.Fatalf("GET /metadata: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	var cs struct {
		FHIRVersion string   `json:"fhirVersion"`
		Kind        string   `json:"kind"`
		Format      []string `json:"format"`
		Rest        []struct {
			Mode     string
			Resource []struct {
				Type        string
				Interaction []struct{ Code string }
				Versioning  string
			}
		}
	}
	if err := json.NewDecoder(res.Body).Decode(&cs); err != nil {
		t.Fatal(err)
	}
	var interactions []string
	for _, i := range cs.Rest[0].Resource[0].Interaction {
		interactions = append(interactions, i.Code)
	}
	// The interactions declared must be exactly the Patient routes served.
	if diff := cmp.Diff([]string{"create", "read", "vread", "update", "delete", "history-instance", "search-type"}, interactions); diff != "" {
		t.Errorf("interactions (-want +got):\n%s", diff)
	}
	if cs.FHIRVersion != "4.0.1" || cs.Kind != "instance" || cs.Rest[0].Mode != "server" || cs.Rest[0].Resource[0].Type != "Patient" {
		t.Errorf("CapabilityStatement %+v", cs)
	}
}

// FuzzPatientCreate: whatever the body, POST /Patient never answers 5xx, and what it accepts reads back.
func FuzzPatientCreate(f *testing.F) {
	f.Add(minimalPatient)
	f.Add(`{"resourceType":"Patient","name":[{"given":["A",null],"_given":[null,{"extension":[{"url":"u","valueString":"x"}]}]}]}`)
	f.Add(`{"resourceType":"Patient","deceasedBoolean":true,"deceasedDateTime":"2020"}`)
	f.Add(`{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}}`)
	f.Add(`[]`)
	h := newTestServer(f)
	f.Fuzz(func(t *testing.T, body string) {
		res := do(t, h, postPatient(body))
		if res.StatusCode >= 500 {
			t.Fatalf("status %d for %q", res.StatusCode, body)
		}
		if res.StatusCode == http.StatusCreated {
			loc := res.Header.Get("Location")
			id := strings.Split(loc, "/")[2]
			if r := do(t, h, httptest.NewRequest("GET", "/Patient/"+id, nil)); r.StatusCode != 200 {
				t.Fatalf("created %s but read gave %d", loc, r.StatusCode)
			}
		}
	})
}

// fhirReq builds a FHIR request with an optional JSON body and headers given as name, value pairs.
func fhirReq(method, path, body string, headers ...string) *http.Request {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	return req
}

// TestPatientLifecycle walks one Patient through update, conditional update, history, vread, delete
// and resurrection, checking each status, ETag and body.
func TestPatientLifecycle(t *testing.T) {
	h := newTestServer(t)
	res := do(t, h, postPatient(minimalPatient))
	id := decodeAnyBody(t, res)["id"].(string)
	withID := func(extra string) string {
		return `{"resourceType":"Patient","id":"` + id + `","gender":"female"` + extra + `}`
	}
	type step struct {
		name       string
		req        *http.Request
		wantStatus int
		wantETag   string
		check      func(t *testing.T, res *http.Response)
	}
	versionOf := func(want string) func(t *testing.T, res *http.Response) {
		return func(t *testing.T, res *http.Response) {
			meta := decodeAnyBody(t, res)["meta"].(map[string]any)
			if meta["versionId"] != want {
				t.Errorf("meta.versionId %v, want %s", meta["versionId"], want)
			}
		}
	}
	issue := func(code string, expr ...string) func(t *testing.T, res *http.Response) {
		return func(t *testing.T, res *http.Response) {
			oo := decodeBody[operationOutcome](t, res)
			if len(oo.Issue) != 1 || oo.Issue[0].Code != code || !cmp.Equal(oo.Issue[0].Expression, expr, cmpopts.EquateEmpty()) {
				t.Errorf("issues %+v, want one %s at %v", oo.Issue, code, expr)
			}
		}
	}
	historyOf := func(wantVersions ...string) func(t *testing.T, res *http.Response) {
		return func(t *testing.T, res *http.Response) {
			var b bundle
			if err := json.NewDecoder(res.Body).Decode(&b); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range b.Entry {
				got = append(got, e.Request.Method+" "+e.Response.Etag)
				if e.FullURL != "http://example.com/Patient/"+id {
					t.Errorf("fullUrl %q", e.FullURL)
				}
			}
			if diff := cmp.Diff(wantVersions, got); diff != "" || b.Type != "history" || b.Total != len(wantVersions) {
				t.Errorf("history %s total %d (-want +got):\n%s", b.Type, b.Total, diff)
			}
		}
	}
	steps := []step{
		{"update", fhirReq("PUT", "/Patient/"+id, withID(""), "If-Match", `W/"1"`), 200, `W/"2"`, versionOf("2")},
		{"stale If-Match", fhirReq("PUT", "/Patient/"+id, withID(""), "If-Match", `W/"1"`), 412, "", issue("conflict")},
		{"strong If-Match form", fhirReq("PUT", "/Patient/"+id, withID(""), "If-Match", `"2"`), 200, `W/"3"`, versionOf("3")},
		{"malformed If-Match", fhirReq("PUT", "/Patient/"+id, withID(""), "If-Match", `W/"x"`), 400, "", issue("value")},
		{"If-Match zero", fhirReq("PUT", "/Patient/"+id, withID(""), "If-Match", `W/"0"`), 400, "", issue("value")},
		{"body id differs", fhirReq("PUT", "/Patient/"+id, `{"resourceType":"Patient","id":"other"}`), 400, "", issue("invalid", "Patient.id")},
		{"body id missing", fhirReq("PUT", "/Patient/"+id, `{"resourceType":"Patient"}`), 400, "", issue("invalid", "Patient.id")},
		{"invalid body", fhirReq("PUT", "/Patient/"+id, withID(`,"birthDate":"1974-13"`)), 400, "", issue("value", "Patient.birthDate")},
		{"invalid URL id before existence", fhirReq("PUT", "/Patient/a_b", `{"resourceType":"Patient","id":"a_b"}`), 400, "", issue("value", "Patient.id")},
		{"unconditional update", fhirReq("PUT", "/Patient/"+id, withID(`,"birthDate":"1974"`)), 200, `W/"4"`, versionOf("4")},
		{"history", fhirReq("GET", "/Patient/"+id+"/_history", ""), 200, "", historyOf(`PUT W/"4"`, `PUT W/"3"`, `PUT W/"2"`, `POST W/"1"`)},
		{"vread 1", fhirReq("GET", "/Patient/"+id+"/_history/1", ""), 200, `W/"1"`, versionOf("1")},
		{"vread missing", fhirReq("GET", "/Patient/"+id+"/_history/9", ""), 404, "", issue("not-found", "Patient.meta.versionId")},
		{"vread 0", fhirReq("GET", "/Patient/"+id+"/_history/0", ""), 400, "", issue("value", "Patient.meta.versionId")},
		{"vread 01", fhirReq("GET", "/Patient/"+id+"/_history/01", ""), 400, "", issue("value", "Patient.meta.versionId")},
		{"vread word", fhirReq("GET", "/Patient/"+id+"/_history/abc", ""), 400, "", issue("value", "Patient.meta.versionId")},
		{"delete", fhirReq("DELETE", "/Patient/"+id, ""), 204, `W/"5"`, nil},
		{"read deleted", fhirReq("GET", "/Patient/"+id, ""), 410, "", issue("deleted")},
		{"vread before delete", fhirReq("GET", "/Patient/"+id+"/_history/4", ""), 200, `W/"4"`, versionOf("4")},
		{"vread the deletion", fhirReq("GET", "/Patient/"+id+"/_history/5", ""), 410, `W/"5"`, issue("deleted")},
		{"delete again", fhirReq("DELETE", "/Patient/"+id, ""), 204, "", nil},
		{"history keeps all", fhirReq("GET", "/Patient/"+id+"/_history", ""), 200, "", historyOf(`DELETE W/"5"`, `PUT W/"4"`, `PUT W/"3"`, `PUT W/"2"`, `POST W/"1"`)},
		{"stale If-Match on deleted", fhirReq("PUT", "/Patient/"+id, withID(""), "If-Match", `W/"4"`), 412, "", issue("conflict")},
		{"resurrect", fhirReq("PUT", "/Patient/"+id, withID("")), 201, `W/"6"`, versionOf("6")},
		{"update-as-create", fhirReq("PUT", "/Patient/client-chosen-1", `{"resourceType":"Patient","id":"client-chosen-1"}`), 201, `W/"1"`, versionOf("1")},
		{"If-Match on unknown id", fhirReq("PUT", "/Patient/client-chosen-2", `{"resourceType":"Patient","id":"client-chosen-2"}`, "If-Match", `W/"1"`), 412, "", issue("conflict")},
		{"delete unknown", fhirReq("DELETE", "/Patient/never-was", ""), 204, "", nil},
		{"history unknown", fhirReq("GET", "/Patient/never-was/_history", ""), 404, "", issue("not-found", "Patient.id")},
		{"history invalid id", fhirReq("GET", "/Patient/a_b/_history", ""), 400, "", issue("value", "Patient.id")},
		{"delete invalid id", fhirReq("DELETE", "/Patient/a_b", ""), 400, "", issue("value", "Patient.id")},
	}
	for _, st := range steps {
		st.req.Host = "example.com"
		res := do(t, h, st.req)
		if res.StatusCode != st.wantStatus {
			t.Errorf("%s: status %d, want %d: %s", st.name, res.StatusCode, st.wantStatus, readAll(t, res.Body))
			continue
		}
		if got := res.Header.Get("ETag"); got != st.wantETag {
			t.Errorf("%s: ETag %q, want %q", st.name, got, st.wantETag)
		}
		if st.wantStatus == 201 && res.Header.Get("Location") != fmt.Sprintf("/Patient/%s/_history/%s", strings.Split(st.req.URL.Path, "/")[2], strings.Trim(st.wantETag, `W/"`)) {
			t.Errorf("%s: Location %q", st.name, res.Header.Get("Location"))
		}
		if st.check != nil {
			t.Run(st.name, func(t *testing.T) { st.check(t, res) })
		}
	}
}

// TestPatientsSurviveRestart writes through one store, reopens the directory as a restart does, and
// reads everything back byte for byte.
func TestPatientsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	open := func() (http.Handler, *journalStore) {
		s, err := openJournalStore(dir, slog.New(slog.DiscardHandler), time.Now, false)
		if err != nil {
			t.Fatal(err)
		}
		return newServer(slog.New(slog.DiscardHandler), testConfig(t), func() bool { return true }, openapiJSON, testDocs(t), s, testVerifier(t)), s
	}
	h, s := open()
	bodies := map[string][]byte{}
	for name, b := range patientExamples(t, "valid") {
		res := do(t, h, postPatient(string(b)))
		if res.StatusCode != 201 {
			t.Fatalf("%s: %d", name, res.StatusCode)
		}
		bodies[strings.Split(res.Header.Get("Location"), "/")[2]] = readAll(t, res.Body)
	}
	s.Close()
	h, s = open()
	defer s.Close()
	for id, want := range bodies {
		res := do(t, h, httptest.NewRequest("GET", "/Patient/"+id, nil))
		if got := readAll(t, res.Body); !bytes.Equal(got, want) {
			t.Errorf("after restart %s:\n got %s\nwant %s", id, got, want)
		}
	}
}

// TestHelperProcess is not a test: it runs the service when TestCrashLosesNoAcknowledgedWrite starts
// this test binary as a child process.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("CLINICALAPI_CHILD") != "1" {
		t.Skip("run as a child process only")
	}
	if err := run(context.Background(), []string{"clinicalapi"}, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// startChild runs the service in a child process on dataDir and returns its base URL.
func startChild(t *testing.T, dataDir string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	li := localTestIssuer(t)
	cmd.Env = append(os.Environ(), "CLINICALAPI_CHILD=1", "PORT=0", "DATA_DIR="+dataDir,
		"OIDC_ISSUER="+li.url, "OIDC_AUDIENCE="+testIssuerAudience)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		var l struct{ Msg, Addr string }
		json.Unmarshal(lines.Bytes(), &l)
		if l.Msg == "listening" {
			go io.Copy(io.Discard, out)
			_, port, _ := net.SplitHostPort(l.Addr)
			base := "http://127.0.0.1:" + port
			waitReady(t, base)
			return cmd, base
		}
	}
	t.Fatalf("child never logged its address")
	return nil, ""
}

// TestCrashLosesNoAcknowledgedWrite kills the service with SIGKILL in the middle of a burst of
// creates and updates from 16 clients, restarts it on the same DATA_DIR, and checks that every write
// that was acknowledged with a 2xx is there, at its version, byte for byte.
func TestCrashLosesNoAcknowledgedWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	cmd, base := startChild(t, dir)
	type ack struct {
		id      string
		version string
		body    []byte
	}
	var (
		mu    sync.Mutex
		acks  []ack
		count atomic.Int64
	)
	client := &http.Client{Timeout: 5 * time.Second}
	token := localTestIssuer(t).token(t, allScopes)
	send := func(method, url, body string) (*http.Response, []byte, error) {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/fhir+json")
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return res, b, err
	}
	var wg sync.WaitGroup
	for c := range 16 {
		wg.Go(func() {
			id := ""
			for i := 0; ; i++ {
				var res *http.Response
				var b []byte
				var err error
				if id == "" || i%3 == 0 {
					res, b, err = send("POST", base+"/Patient", fmt.Sprintf(`{"resourceType":"Patient","name":[{"family":"Client%d","given":["N%d"]}]}`, c, i))
				} else {
					res, b, err = send("PUT", base+"/Patient/"+id, fmt.Sprintf(`{"resourceType":"Patient","id":%q,"name":[{"family":"Client%d","given":["U%d"]}]}`, id, c, i))
				}
				if err != nil {
					return // the server is gone
				}
				if res.StatusCode != 200 && res.StatusCode != 201 {
					t.Errorf("status %d: %s", res.StatusCode, b)
					return
				}
				var p struct {
					ID   string
					Meta struct{ VersionID string }
				}
				if err := json.Unmarshal(b, &p); err != nil {
					t.Errorf("acknowledged body %s: %v", b, err)
					return
				}
				id = p.ID
				mu.Lock()
				acks = append(acks, ack{p.ID, p.Meta.VersionID, b})
				mu.Unlock()
				count.Add(1)
			}
		})
	}
	deadline := time.Now().Add(20 * time.Second)
	for count.Load() < 300 && time.Now().Before(deadline) && !t.Failed() {
		time.Sleep(time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	cmd.Wait()

	_, base = startChild(t, dir)
	for _, a := range acks {
		res, b, err := send("GET", base+"/Patient/"+a.id+"/_history/"+a.version, "")
		if err != nil || res.StatusCode != 200 || !bytes.Equal(b, a.body) {
			t.Errorf("acknowledged Patient/%s version %s after restart: %v %v\n got %s\nwant %s", a.id, a.version, res, err, b, a.body)
		}
	}
	t.Logf("%d acknowledged writes before SIGKILL, all present after restart", len(acks))
}

// ---- Authentication over HTTP ----

func TestPatientAuth(t *testing.T) {
	h := newTestServer(t)
	li := localTestIssuer(t)
	created := do(t, h, postPatient(minimalPatient))
	id := decodeAnyBody(t, created)["id"].(string)
	bearer := func(tok string) string { return "Bearer " + tok }
	tests := []struct {
		name       string
		method     string
		path       string
		auth       string // the Authorization header; "" sends none
		wantStatus int
		wantCode   string // NHSD-API-ErrorOrWarningCode, for 401/403
		wantIssue  string
		wantChall  string
	}{
		{"no token", "GET", "/Patient/" + id, "", 401, "ACCESS_TOKEN_MISSING", "login", `Bearer`},
		{"basic scheme", "GET", "/Patient/" + id, "Basic dXNlcjpwYXNz", 401, "ACCESS_TOKEN_MISSING", "login", `Bearer`},
		{"garbage token", "GET", "/Patient/" + id, "Bearer not.a.jwt", 401, "ACCESS_TOKEN_INVALID", "unknown", `Bearer error="invalid_token"`},
		{"expired", "GET", "/Patient/" + id, bearer(li.token(t, allScopes, "exp", time.Now().Add(-2*time.Minute).Unix())), 401, "ACCESS_TOKEN_EXPIRED", "expired", `Bearer error="invalid_token"`},
		{"wrong audience", "GET", "/Patient/" + id, bearer(li.token(t, allScopes, "aud", "someone-else")), 401, "ACCESS_TOKEN_INVALID", "unknown", `Bearer error="invalid_token"`},
		{"wrong issuer", "GET", "/Patient/" + id, bearer(li.token(t, allScopes, "iss", "https://evil.example")), 401, "ACCESS_TOKEN_INVALID", "unknown", `Bearer error="invalid_token"`},
		{"read scope cannot create", "POST", "/Patient", bearer(li.token(t, "user/Patient.read")), 403, "ACCESS_DENIED", "forbidden", `Bearer error="insufficient_scope"`},
		{"read scope cannot delete", "DELETE", "/Patient/" + id, bearer(li.token(t, "system/Patient.read")), 403, "ACCESS_DENIED", "forbidden", `Bearer error="insufficient_scope"`},
		{"write scope cannot read", "GET", "/Patient/" + id, bearer(li.token(t, "user/Patient.write")), 403, "ACCESS_DENIED", "forbidden", `Bearer error="insufficient_scope"`},
		{"no scope cannot read history", "GET", "/Patient/" + id + "/_history", bearer(li.token(t, "openid profile")), 403, "ACCESS_DENIED", "forbidden", `Bearer error="insufficient_scope"`},
		{"user read", "GET", "/Patient/" + id, bearer(li.token(t, "user/Patient.read")), 200, "", "", ""},
		{"system read", "GET", "/Patient/" + id + "/_history/1", bearer(li.token(t, "system/Patient.read")), 200, "", "", ""},
		{"wildcard create", "POST", "/Patient", bearer(li.token(t, "user/Patient.*")), 201, "", "", ""},
		{"system write update", "PUT", "/Patient/" + id, bearer(li.token(t, "system/Patient.write")), 200, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := ""
			switch tt.method {
			case "POST":
				body = minimalPatient
			case "PUT":
				body = `{"resourceType":"Patient","id":"` + id + `"}`
			}
			req := fhirReq(tt.method, tt.path, body)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			res := doRaw(t, h, req)
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tt.wantStatus, readAll(t, res.Body))
			}
			if got := res.Header.Get("WWW-Authenticate"); got != tt.wantChall {
				t.Errorf("WWW-Authenticate %q, want %q", got, tt.wantChall)
			}
			if tt.wantCode == "" {
				return
			}
			oo := decodeBody[operationOutcome](t, res)
			want := []fhirIssue{{Severity: "error", Code: tt.wantIssue, Details: &fhirCodeableConcept{Coding: []fhirCoding{{nhsdErrorSystem, tt.wantCode}}}}}
			if diff := cmp.Diff(want, oo.Issue, cmpopts.IgnoreFields(fhirIssue{}, "Diagnostics")); diff != "" {
				t.Errorf("issues (-want +got):\n%s", diff)
			}
			if tok, ok := strings.CutPrefix(tt.auth, "Bearer "); ok && strings.Contains(oo.Issue[0].Diagnostics, tok) {
				t.Errorf("diagnostics echo the token: %s", oo.Issue[0].Diagnostics)
			}
		})
	}
}

// TestAuthNotConfigured: without OIDC settings the Patient routes refuse everything and say which
// settings are missing; the open routes stay open.
func TestAuthNotConfigured(t *testing.T) {
	h := newServer(slog.New(slog.DiscardHandler), config{}, func() bool { return true }, openapiJSON, testDocs(t), testStore(t), nil)
	for _, req := range []*http.Request{postPatient(minimalPatient), fhirReq("GET", "/Patient/abc", "")} {
		req.Header.Set("Authorization", "Bearer "+localTestIssuer(t).token(t, allScopes))
		res := doRaw(t, h, req)
		oo := decodeBody[operationOutcome](t, res)
		if res.StatusCode != 401 || len(oo.Issue) != 1 || !strings.Contains(oo.Issue[0].Diagnostics, "OIDC_ISSUER") || !strings.Contains(oo.Issue[0].Diagnostics, "OIDC_AUDIENCE") {
			t.Errorf("%s %s: %d %+v, want 401 naming OIDC_ISSUER and OIDC_AUDIENCE", req.Method, req.URL.Path, res.StatusCode, oo)
		}
	}
	for _, req := range []*http.Request{postEGFR(`{"sex":"male","serum_creatinine_umol_l":88,"age":50}`), fhirReq("GET", "/metadata", ""), httptest.NewRequest("GET", "/livez", nil)} {
		req.Header.Set("Authorization", "Bearer garbage")
		if res := doRaw(t, h, req); res.StatusCode != 200 {
			t.Errorf("%s %s with a garbage token: %d, want 200 (open routes ignore Authorization)", req.Method, req.URL.Path, res.StatusCode)
		}
	}
}

func TestEGFRAuthRequired(t *testing.T) {
	cfg := testConfig(t)
	cfg.auth.EGFRRequired = true
	h := newServer(slog.New(slog.DiscardHandler), cfg, func() bool { return true }, openapiJSON, testDocs(t), testStore(t), testVerifier(t))
	const body = `{"sex":"male","serum_creatinine_umol_l":88,"age":50}`
	res := doRaw(t, h, postEGFR(body))
	p := decodeBody[problem](t, res)
	if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") != "Bearer" || p.Status != 401 || res.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("no token: %d %q %+v, want a 401 problem", res.StatusCode, res.Header.Get("WWW-Authenticate"), p)
	}
	req := postEGFR(body)
	req.Header.Set("Authorization", "Bearer "+localTestIssuer(t).token(t, "")) // any valid token, no scope needed
	if res := doRaw(t, h, req); res.StatusCode != 200 {
		t.Errorf("valid token without scopes: %d, want 200", res.StatusCode)
	}
}

func TestRequestLogHashesSubject(t *testing.T) {
	var logs bytes.Buffer
	h := newServer(slog.New(slog.NewJSONHandler(&logs, nil)), testConfig(t), func() bool { return true }, openapiJSON, testDocs(t), testStore(t), testVerifier(t))
	tok := localTestIssuer(t).token(t, allScopes)
	req := fhirReq("GET", "/Patient/unknown-1", "", "Authorization", "Bearer "+tok)
	h.ServeHTTP(httptest.NewRecorder(), req)
	var line struct {
		SubHash string `json:"sub_hash"`
	}
	json.Unmarshal(logs.Bytes(), &line)
	if line.SubHash != subjectHash("clinician-1") || strings.Contains(logs.String(), tok) || strings.Contains(logs.String(), "clinician-1") {
		t.Errorf("log line %s: want the subject's hash and neither token nor subject", logs.String())
	}
}

func TestServedSpec(t *testing.T) {
	schemes := func(b []byte) map[string]any {
		var doc map[string]any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		return doc["components"].(map[string]any)["securitySchemes"].(map[string]any)
	}
	on, err := servedSpec(openapiJSON, authConfig{Enabled: true, Issuer: "https://auth.login.nhs.uk", Audience: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if got := schemes(on)["openIdConnect"].(map[string]any)["openIdConnectUrl"]; got != "https://auth.login.nhs.uk/.well-known/openid-configuration" {
		t.Errorf("openIdConnectUrl %v", got)
	}
	off, err := servedSpec(openapiJSON, authConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := schemes(off)["openIdConnect"]; ok || schemes(off)["bearerAuth"] == nil {
		t.Errorf("without auth: schemes %v, want bearerAuth only", schemes(off))
	}
	if bytes.Contains(off, []byte(`\u003e`)) {
		t.Errorf("served spec escapes HTML characters")
	}
	req, _ := servedSpec(openapiJSON, authConfig{Enabled: true, Issuer: "https://x", EGFRRequired: true})
	var doc struct {
		Paths map[string]map[string]struct{ Security []map[string][]string }
	}
	json.Unmarshal(req, &doc)
	if diff := cmp.Diff([]map[string][]string{{"bearerAuth": {}}}, doc.Paths["/egfr"]["post"].Security); diff != "" {
		t.Errorf("EGFR_AUTH=required: /egfr security (-want +got):\n%s", diff)
	}
}

// TestReadinessWaitsForKeys: with an issuer that cannot be reached, the service is alive but not
// ready, so no traffic is routed to a server that would reject every token.
func TestReadinessWaitsForKeys(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	base, stop := startRun(t, mapEnv{"DATA_DIR": t.TempDir(), "OIDC_ISSUER": dead, "OIDC_AUDIENCE": "x"})
	for path, want := range map[string]int{"/livez": 200, "/readyz": 503} {
		res, err := http.Get(base + path)
		if err != nil || res.StatusCode != want {
			t.Errorf("GET %s: %v %v, want %d", path, res, err, want)
		}
	}
	stop()
}

// FuzzEGFRFastPath: wherever the allocation-free scanner accepts a body, the encoding/json walk
// must find no structural problem and the same raw values.
func FuzzEGFRFastPath(f *testing.F) {
	for _, s := range []string{
		`{"sex": "male", "serum_creatinine_umol_l": 88, "age": 50}`, `{}`, ` { } `, `{"age":null}`,
		`{"sex":"female","serum_creatinine_umol_l":61.88e0,"age":-0,"formula":"CKD-EPI 2009","serum_cystatin_c_mg_l":1E+1}`,
		`{"sex":"m\u0061le"}`, `{"sex":"male","sex":"male"}`, `{"x":1}`, `{"age":01}`, `{"age":1.}`, `{"age":.5}`,
		`{"age":1}x`, `{"age":1,}`, `{"age" 1}`, `{"age":nul}`, `{"age":"é"}`, "{\"sex\":\"a\tb\"}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		b := []byte(body)
		fast, ok := scanEGFRObject(b)
		if !ok || !utf8.Valid(b) {
			return
		}
		slow, problems, ok := splitObject(b)
		if !ok || len(problems) > 0 {
			t.Fatalf("fast path accepted %q; the full walk found %v", body, problems)
		}
		for i := range fast {
			if !bytes.Equal(fast[i], slow[i]) {
				t.Fatalf("%q field %s: fast %q, full walk %q", body, egfrFields[i], fast[i], slow[i])
			}
		}
	})
}

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

// ---- Search over HTTP (matching semantics are tested in search_test.go) ----

func TestPatientSearchHTTP(t *testing.T) {
	store := testStore(t)
	cfg := testConfig(t)
	cfg.baseURL = "https://fhir.example.nhs.uk/R4"
	h := newServer(slog.New(slog.DiscardHandler), cfg, func() bool { return true }, openapiJSON, testDocs(t), store, testVerifier(t))
	names := []string{"Núñez", "Nunes", "NUNN", "Smith", "Smyth", "Zoë"}
	ids := map[string]string{}
	for i, n := range names {
		res := do(t, h, postPatient(fmt.Sprintf(`{"resourceType":"Patient","identifier":[{"system":"urn:test","value":"v%d"}],"name":[{"family":%q}],"gender":"female","birthDate":"197%d"}`, i, n, i)))
		ids[n] = decodeAnyBody(t, res)["id"].(string)
	}
	search := func(t *testing.T, req *http.Request) (bundle, *http.Response) {
		t.Helper()
		res := do(t, h, req)
		if res.StatusCode != 200 {
			t.Fatalf("%s %s: %d %s", req.Method, req.URL, res.StatusCode, readAll(t, res.Body))
		}
		var b bundle
		if err := json.NewDecoder(res.Body).Decode(&b); err != nil {
			t.Fatal(err)
		}
		return b, res
	}
	families := func(b bundle) []string {
		var got []string
		for _, e := range b.Entry {
			var p struct{ Name []struct{ Family string } }
			json.Unmarshal(e.Resource, &p)
			got = append(got, p.Name[0].Family)
			if !strings.HasPrefix(e.FullURL, "https://fhir.example.nhs.uk/R4/Patient/") || e.Search == nil || e.Search.Mode != "match" {
				t.Errorf("entry %s %+v", e.FullURL, e.Search)
			}
		}
		slices.Sort(got)
		return got
	}
	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"family=nun", []string{"NUNN", "Nunes", "Núñez"}},
		{"family=nunez", []string{"Núñez"}},
		{"family:exact=Núñez", []string{"Núñez"}},
		{"family:exact=nunez", nil},
		{"family:contains=yth", []string{"Smyth"}},
		{"name=zoe", []string{"Zoë"}},
		{"family=sm,zo", []string{"Smith", "Smyth", "Zoë"}},
		{"family=sm&birthdate=1974", []string{"Smyth"}},
		{"identifier=urn:test|v3", []string{"Smith"}},
		{"identifier=v0", []string{"Núñez"}},
		{"birthdate=ge1973&birthdate=lt1975", []string{"Smith", "Smyth"}},
		{"gender=male", nil},
		{"_id=" + ids["Zoë"], []string{"Zoë"}},
		{"unknown=1&family=smi", []string{"Smith"}},
	} {
		b, _ := search(t, fhirReq("GET", "/Patient?"+tt.query, ""))
		if diff := cmp.Diff(tt.want, families(b)); diff != "" || b.Type != "searchset" || b.Total != len(tt.want) {
			t.Errorf("%s: %s total %d (-want +got):\n%s", tt.query, b.Type, b.Total, diff)
		}
	}

	// Paging: follow next links through every page, then back with previous.
	b, _ := search(t, fhirReq("GET", "/Patient?_count=2&unknown=x", ""))
	if b.Link[0].URL != "https://fhir.example.nhs.uk/R4/Patient?_count=2" {
		t.Errorf("self link %q: want unknown parameters left out", b.Link[0].URL)
	}
	var seen []string
	for pages := 0; ; pages++ {
		seen = append(seen, families(b)...)
		next := ""
		for _, l := range b.Link {
			if l.Relation == "next" {
				next = l.URL
			}
		}
		if next == "" {
			if pages != 2 || b.Total != 6 {
				t.Errorf("%d pages, total %d; want 3 pages of 6", pages+1, b.Total)
			}
			break
		}
		b, _ = search(t, fhirReq("GET", strings.TrimPrefix(next, "https://fhir.example.nhs.uk/R4"), ""))
		if !slices.ContainsFunc(b.Link, func(l bundleLink) bool { return l.Relation == "previous" }) {
			t.Errorf("page %d has no previous link", pages+2)
		}
	}
	slices.Sort(seen)
	sortedNames := slices.Clone(names)
	slices.Sort(sortedNames)
	if diff := cmp.Diff(sortedNames, seen); diff != "" {
		t.Errorf("paging did not visit every patient once (-want +got):\n%s", diff)
	}

	// POST /Patient/_search with a form body, merged with URL parameters.
	req := fhirReq("POST", "/Patient/_search?gender=female", "")
	req.Body = io.NopCloser(strings.NewReader("family=sm&family=smy"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if b, _ := search(t, req); !cmp.Equal(families(b), []string{"Smyth"}) {
		t.Errorf("POST _search: %v", families(b))
	}

	// A deleted patient is no longer found.
	do(t, h, fhirReq("DELETE", "/Patient/"+ids["Smyth"], ""))
	if b, _ := search(t, fhirReq("GET", "/Patient?family=sm", "")); !cmp.Equal(families(b), []string{"Smith"}) {
		t.Errorf("after delete: %v", families(b))
	}

	for _, tt := range []struct {
		name   string
		req    *http.Request
		status int
	}{
		{"malformed date", fhirReq("GET", "/Patient?birthdate=1974-13", ""), 400},
		{"negative count", fhirReq("GET", "/Patient?_count=-1", ""), 400},
		{"count not a number", fhirReq("GET", "/Patient?_count=abc", ""), 400},
		{"unknown modifier", fhirReq("GET", "/Patient?family:fuzzy=x", ""), 400},
		{"strict unknown parameter", fhirReq("GET", "/Patient?colour=blue", "", "Prefer", "handling=strict"), 400},
		{"POST without a form", fhirReq("POST", "/Patient/_search", `{"family":"x"}`), 415},
		{"GET _search", fhirReq("GET", "/Patient/_search", ""), 405},
		{"write-only token", fhirReq("GET", "/Patient", "", "Authorization", "Bearer "+localTestIssuer(t).token(t, "user/Patient.write")), 403},
	} {
		res := do(t, h, tt.req)
		if res.StatusCode != tt.status {
			t.Errorf("%s: %d, want %d: %s", tt.name, res.StatusCode, tt.status, readAll(t, res.Body))
		}
	}
}

// TestRunRefusesCorruptJournal: a journal damaged in the middle stops the start with an error that
// names the file and offset (main then exits non-zero), rather than serving partial data.
func TestRunRefusesCorruptJournal(t *testing.T) {
	dir := t.TempDir()
	s, err := openJournalStore(dir, slog.New(slog.DiscardHandler), time.Now, false)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		id := fmt.Sprintf("p%d", i)
		if _, err := s.Create(t.Context(), id, func(v int, tm time.Time) ([]byte, error) {
			return []byte(`{"resourceType":"Patient","id":"` + id + `"}`), nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	path := dir + "/" + journalFileName
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff // a byte inside the second record
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	err = run(t.Context(), []string{"clinicalapi"}, mapEnv{"PORT": "0", "DATA_DIR": dir}.get, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "offset") {
		t.Errorf("run() = %v, want an error naming %s and the offset", err, path)
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

// TestStartingServer: while the journal replays, the service is alive but not ready, and every
// other route answers 503 with Retry-After in its family's error format.
func TestStartingServer(t *testing.T) {
	h := newStartingServer(slog.New(slog.DiscardHandler))
	for _, tt := range []struct {
		req    *http.Request
		status int
		ctype  string
	}{
		{httptest.NewRequest("GET", "/livez", nil), 200, "application/json"},
		{httptest.NewRequest("GET", "/readyz", nil), 503, "application/json"},
		{postEGFR(`{"sex":"male","serum_creatinine_umol_l":88,"age":50}`), 503, "application/problem+json"},
		{fhirReq("GET", "/Patient/abc", ""), 503, fhirContentType},
		{fhirReq("GET", "/metadata", ""), 503, fhirContentType},
	} {
		res := do(t, h, tt.req)
		if res.StatusCode != tt.status || res.Header.Get("Content-Type") != tt.ctype {
			t.Errorf("%s %s: %d %s, want %d %s", tt.req.Method, tt.req.URL.Path, res.StatusCode, res.Header.Get("Content-Type"), tt.status, tt.ctype)
		}
		if tt.status == 503 && tt.req.URL.Path != "/readyz" && res.Header.Get("Retry-After") != "1" {
			t.Errorf("%s: no Retry-After", tt.req.URL.Path)
		}
	}
}

// FuzzPatientSearch: whatever the query string, GET /Patient answers 200 or 400, never 5xx.
func FuzzPatientSearch(f *testing.F) {
	for _, s := range []string{"family=smi", "birthdate=ge1974-02&birthdate=lt1975", "identifier=a%7Cb,%7Cc", "_count=0&_offset=5",
		"name:contains=%C3%A9", "gender=male,female", "_id=x&_id=y", "family:fuzzy=x", "birthdate=1974-02-30", "%zz", "identifier=a%5C%7Cb"} {
		f.Add(s)
	}
	h := newTestServer(f)
	do(f, h, postPatient(minimalPatient))
	f.Fuzz(func(t *testing.T, query string) {
		req := fhirReq("GET", "/Patient", "")
		req.URL.RawQuery = query
		res := do(t, h, req)
		if res.StatusCode != 200 && res.StatusCode != 400 {
			t.Fatalf("GET /Patient?%s: %d", query, res.StatusCode)
		}
	})
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
