package main

// Tests of the eGFR equations and their rounding against published reference values, without HTTP
// (handlers_test.go sends the same values through POST /egfr).

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

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

func BenchmarkEquations(b *testing.B) {
	for _, bm := range []struct {
		name string
		f    func() float64
	}{
		{"2021", func() float64 { return ckdEPI2021(88/umolPerMgDL, 50, male) }},
		{"2009", func() float64 { return ckdEPI2009(88/umolPerMgDL, 50, female) }},
		{"2021CrCys", func() float64 { return ckdEPI2021CrCys(88/umolPerMgDL, 0.9, 50, male) }},
	} {
		b.Run(bm.name, func(b *testing.B) {
			var sink float64
			for b.Loop() {
				sink += bm.f()
			}
			_ = sink
		})
	}
}
