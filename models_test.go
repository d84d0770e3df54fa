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

// egfrRef is one published reference value from an independent implementation. A measurement the
// source did not use is 0 (not sent).
type egfrRef struct {
	source   string
	formula  string // the response's formula: the equation and form
	sex      string
	scrUmolL float64
	cysC     float64
	heightCm float64
	age      float64
	want     float64
	tol      float64 // 0.5 means the source publishes whole numbers: ours must round half up to want
}

// publishedEGFR are values published by independent implementations, with the commit read. Inputs
// given in mg/dL are converted with × 88.4 (exact decimals), heights in m with × 100. admiral divides by
// 88.42, so its 4-dp rows feed the µmol/L that gives admiral's mg/dL under our 88.4. Gathered and
// re-derived with an independent Python implementation; sources in each row.
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

	// CKD-EPI 2012 cystatin C. epocakir's expected values are closed forms typed from the paper's
	// constants (their tolerance 0.05; the number is that expression evaluated); the openEHR GDL test
	// cases print 2 dp (their cystatin field says "mg/dl" but the rule divides by 0.8: mg/L).
	{source: "alwinw/epocakir@45377a58 tests/testthat/test-ckd.R eGFR_adult_SCysC 133*(0.4/0.8)^-0.499*0.996^20*0.932", formula: formula2012CysC, sex: "female", cysC: 0.4, age: 20, want: 161.68446339620834, tol: 0.05},
	{source: "alwinw/epocakir@45377a58 tests/testthat/test-ckd.R eGFR_adult_SCysC 133*(0.4/0.8)^-0.499*0.996^30*0.932", formula: formula2012CysC, sex: "female", cysC: 0.4, age: 30, want: 155.33226458789954, tol: 0.05},
	{source: "alwinw/epocakir@45377a58 tests/testthat/test-ckd.R eGFR_adult_SCysC 133*(1.2/0.8)^-1.328*0.996^20*0.932", formula: formula2012CysC, sex: "female", cysC: 1.2, age: 20, want: 66.77365205410908, tol: 0.05},
	{source: "alwinw/epocakir@45377a58 tests/testthat/test-ckd.R eGFR_adult_SCysC 133*(1.2/0.8)^-1.328*0.996^30*0.932", formula: formula2012CysC, sex: "female", cysC: 1.2, age: 30, want: 64.15027375235394, tol: 0.05},
	{source: "alwinw/epocakir@45377a58 tests/testthat/test-ckd.R eGFR_adult_SCysC 133*(0.4/0.8)^-0.499*0.996^20", formula: formula2012CysC, sex: "male", cysC: 0.4, age: 20, want: 173.4811839015111, tol: 0.05},
	{source: "alwinw/epocakir@45377a58 tests/testthat/test-ckd.R eGFR_adult_SCysC 133*(0.4/0.8)^-0.499*0.996^30", formula: formula2012CysC, sex: "male", cysC: 0.4, age: 30, want: 166.6655199440982, tol: 0.05},
	{source: "alwinw/epocakir@45377a58 tests/testthat/test-ckd.R eGFR_adult_SCysC 133*(1.2/0.8)^-1.328*0.996^20", formula: formula2012CysC, sex: "male", cysC: 1.2, age: 20, want: 71.64554941428013, tol: 0.05},
	{source: "alwinw/epocakir@45377a58 tests/testthat/test-ckd.R eGFR_adult_SCysC 133*(1.2/0.8)^-1.328*0.996^30", formula: formula2012CysC, sex: "male", cysC: 1.2, age: 30, want: 68.83076582870594, tol: 0.05},
	// At the knee (0.8 mg/L): epocakir's closed forms at the commit that tested them, transcribed as
	// written less the factor (0.8/0.8)^-1.328, which is 1 (later commits moved these rows to 1.2 mg/L).
	{source: "alwinw/epocakir@8de25f5a tests/testthat/test-ckd.R eGFR.adult.SCysC 133*(0.8/0.8)^-1.328*0.996^20*0.932 (knee)", formula: formula2012CysC, sex: "female", cysC: 0.8, age: 20, want: 133 * math.Pow(0.996, 20) * 0.932, tol: 0.05},
	{source: "alwinw/epocakir@8de25f5a tests/testthat/test-ckd.R eGFR.adult.SCysC 133*(0.8/0.8)^-1.328*0.996^30*0.932 (knee)", formula: formula2012CysC, sex: "female", cysC: 0.8, age: 30, want: 133 * math.Pow(0.996, 30) * 0.932, tol: 0.05},
	{source: "alwinw/epocakir@8de25f5a tests/testthat/test-ckd.R eGFR.adult.SCysC 133*(0.8/0.8)^-1.328*0.996^20 (knee)", formula: formula2012CysC, sex: "male", cysC: 0.8, age: 20, want: 133 * math.Pow(0.996, 20), tol: 0.05},
	{source: "alwinw/epocakir@8de25f5a tests/testthat/test-ckd.R eGFR.adult.SCysC 133*(0.8/0.8)^-1.328*0.996^30 (knee)", formula: formula2012CysC, sex: "male", cysC: 0.8, age: 30, want: 133 * math.Pow(0.996, 30), tol: 0.05},
	{source: "openEHR/gdl-guideline-models@430af4dc guidelines/Estimated_GFR.v1.test.yml case 14 (below the knee)", formula: formula2012CysC, sex: "male", cysC: 0.7, age: 56, want: 113.58, tol: 0.005},
	{source: "openEHR/gdl-guideline-models@430af4dc guidelines/Estimated_GFR.v1.test.yml case 15", formula: formula2012CysC, sex: "male", cysC: 0.9, age: 56, want: 90.87, tol: 0.005},
	{source: "openEHR/gdl-guideline-models@430af4dc guidelines/Estimated_GFR.v1.test.yml case 16 (below the knee)", formula: formula2012CysC, sex: "female", cysC: 0.7, age: 56, want: 105.86, tol: 0.005},
	{source: "openEHR/gdl-guideline-models@430af4dc guidelines/Estimated_GFR.v1.test.yml case 17", formula: formula2012CysC, sex: "female", cysC: 0.9, age: 56, want: 84.70, tol: 0.005},

	// CKiD U25: the authors' own published values (ckidstudy/CKiD_U25@70d07cde, the only content commit;
	// unchanged at da0a6c3a). Shiny calculator outputs printed to 1 dp in "R Code for U25eGFR
	// calculation.R", and the Excel calculator's cached results (full precision). kidney.epi's published
	// examples are used only where its constants equal the authors' (under 15 for creatinine, not adult
	// women for cystatin C): at 15–18 (creatinine) and for women from 18 (cystatin C) kidney.epi 1.3.0/1.4.0
	// use other constants (equations.go), so the authors' rows at 15 and 20 are the references there.
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) M 11 y 1.2 m SCr 0.9 CysC 1.3", formula: formulaU25Cr, sex: "male", scrUmolL: 79.56, heightCm: 120, age: 11, want: 51.6, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) M 11 y 1.2 m SCr 0.9 CysC 1.3", formula: formulaU25CysC, sex: "male", cysC: 1.3, age: 11, want: 64.2, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) M 11 y 1.2 m SCr 0.9 CysC 1.3", formula: formulaU25Avg, sex: "male", scrUmolL: 79.56, cysC: 1.3, heightCm: 120, age: 11, want: 57.9, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) F 11 y 1.2 m SCr 0.9 CysC 1.3", formula: formulaU25Cr, sex: "female", scrUmolL: 79.56, heightCm: 120, age: 11, want: 47.8, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) F 11 y 1.2 m SCr 0.9 CysC 1.3", formula: formulaU25CysC, sex: "female", cysC: 1.3, age: 11, want: 61.2, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) F 11 y 1.2 m SCr 0.9 CysC 1.3", formula: formulaU25Avg, sex: "female", scrUmolL: 79.56, cysC: 1.3, heightCm: 120, age: 11, want: 54.5, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) M 15 y 1.6 m SCr 1.9 CysC 1.6", formula: formulaU25Cr, sex: "male", scrUmolL: 167.96, heightCm: 160, age: 15, want: 37.5, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) M 15 y 1.6 m SCr 1.9 CysC 1.6", formula: formulaU25CysC, sex: "male", cysC: 1.6, age: 15, want: 54.5, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) M 15 y 1.6 m SCr 1.9 CysC 1.6", formula: formulaU25Avg, sex: "male", scrUmolL: 167.96, cysC: 1.6, heightCm: 160, age: 15, want: 46.0, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) F 15 y 1.6 m SCr 1.9 CysC 1.6", formula: formulaU25Cr, sex: "female", scrUmolL: 167.96, heightCm: 160, age: 15, want: 32.5, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) F 15 y 1.6 m SCr 1.9 CysC 1.6", formula: formulaU25CysC, sex: "female", cysC: 1.6, age: 15, want: 46.1, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) F 15 y 1.6 m SCr 1.9 CysC 1.6", formula: formulaU25Avg, sex: "female", scrUmolL: 167.96, cysC: 1.6, heightCm: 160, age: 15, want: 39.3, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) M 20 y 1.81 m SCr 2.1 CysC 1.8", formula: formulaU25Cr, sex: "male", scrUmolL: 185.64, heightCm: 181, age: 20, want: 43.8, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) M 20 y 1.81 m SCr 2.1 CysC 1.8", formula: formulaU25CysC, sex: "male", cysC: 1.8, age: 20, want: 42.8, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) M 20 y 1.81 m SCr 2.1 CysC 1.8", formula: formulaU25Avg, sex: "male", scrUmolL: 185.64, cysC: 1.8, heightCm: 181, age: 20, want: 43.3, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) F 20 y 1.81 m SCr 2.1 CysC 1.8", formula: formulaU25Cr, sex: "female", scrUmolL: 185.64, heightCm: 181, age: 20, want: 35.7, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) F 20 y 1.81 m SCr 2.1 CysC 1.8", formula: formulaU25CysC, sex: "female", cysC: 1.8, age: 20, want: 37.9, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde R Code for U25eGFR calculation.R (Shiny) F 20 y 1.81 m SCr 2.1 CysC 1.8", formula: formulaU25Avg, sex: "female", scrUmolL: 185.64, cysC: 1.8, heightCm: 181, age: 20, want: 36.8, tol: 0.05},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 3 (F age 12: K_cr 36.1 exactly)", formula: formulaU25Cr, sex: "female", scrUmolL: 106.08, heightCm: 125, age: 12, want: 37.604166666666671, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 3 (F age 12: K_cr 36.1 exactly)", formula: formulaU25CysC, sex: "female", cysC: 1.8, age: 12, want: 44.388888888888893, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 3 (F age 12: K_cr 36.1 exactly)", formula: formulaU25Avg, sex: "female", scrUmolL: 106.08, cysC: 1.8, heightCm: 125, age: 12, want: 40.996527777777786, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 4 (M age 15: K_cys 87.2 exactly)", formula: formulaU25Cr, sex: "male", scrUmolL: 150.28, heightCm: 145, age: 15, want: 37.960555511029405, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 4 (M age 15: K_cys 87.2 exactly)", formula: formulaU25CysC, sex: "male", cysC: 2.0, age: 15, want: 43.6, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 4 (M age 15: K_cys 87.2 exactly)", formula: formulaU25Avg, sex: "male", scrUmolL: 150.28, cysC: 2.0, heightCm: 145, age: 15, want: 40.780277755514703, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 5", formula: formulaU25Cr, sex: "female", scrUmolL: 70.72, heightCm: 110, age: 8, want: 48.080366738027443, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 5", formula: formulaU25CysC, sex: "female", cysC: 1.2, age: 8, want: 65.528568699457963, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 5", formula: formulaU25Avg, sex: "female", scrUmolL: 70.72, cysC: 1.2, heightCm: 110, age: 8, want: 56.8044677187427, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 6 (adult K)", formula: formulaU25Cr, sex: "male", scrUmolL: 194.48, heightCm: 180, age: 21, want: 41.563636363636355, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 6 (adult K)", formula: formulaU25CysC, sex: "male", cysC: 1.6, age: 21, want: 48.187499999999993, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 6 (adult K)", formula: formulaU25Avg, sex: "male", scrUmolL: 194.48, cysC: 1.6, heightCm: 180, age: 21, want: 44.875568181818174, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 7 (adult K)", formula: formulaU25Cr, sex: "female", scrUmolL: 221, heightCm: 165, age: 20, want: 27.323999999999995, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 7 (adult K)", formula: formulaU25CysC, sex: "female", cysC: 2.2, age: 20, want: 31.045454545454543, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 7 (adult K)", formula: formulaU25Avg, sex: "female", scrUmolL: 221, cysC: 2.2, heightCm: 165, age: 20, want: 29.184727272727269, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 8", formula: formulaU25Cr, sex: "male", scrUmolL: 61.88, heightCm: 130, age: 14, want: 79.093810714285709, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 8", formula: formulaU25CysC, sex: "male", cysC: 0.9, age: 14, want: 95.834707110671516, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 8", formula: formulaU25Avg, sex: "male", scrUmolL: 61.88, cysC: 0.9, heightCm: 130, age: 14, want: 87.464258912478613, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 9", formula: formulaU25Cr, sex: "female", scrUmolL: 79.56, heightCm: 89, age: 5, want: 33.762218357024338, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 9", formula: formulaU25CysC, sex: "female", cysC: 1.2, age: 5, want: 64.748474929603702, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 9", formula: formulaU25Avg, sex: "female", scrUmolL: 79.56, cysC: 1.2, heightCm: 89, age: 5, want: 49.25534664331402, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 11 (decimal age)", formula: formulaU25Cr, sex: "male", scrUmolL: 159.12, heightCm: 130, age: 14.5, want: 31.443159617046764, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 11 (decimal age)", formula: formulaU25CysC, sex: "male", cysC: 1.5, age: 14.5, want: 57.816213850616528, tol: 1e-9},
	{source: "ckidstudy/CKiD_U25@70d07cde U25eGFR.excel_calculator.xlsx row 11 (decimal age)", formula: formulaU25Avg, sex: "male", scrUmolL: 159.12, cysC: 1.5, heightCm: 130, age: 14.5, want: 44.629686733831647, tol: 1e-9},
	{source: "scientific-tools-org/kidney.epi@d4e6f31b docs/reference/egfr.ckid_u25.cr.html (24.68; age 10: kidney.epi's constants are the authors' here)", formula: formulaU25Cr, sex: "male", scrUmolL: 123.76, heightCm: 90, age: 10, want: 24.68, tol: 0.005},
	{source: "scientific-tools-org/kidney.epi@d4e6f31b docs/reference/egfr.ckid_u25.cys.html (103.2; age 10: kidney.epi's constants are the authors' here)", formula: formulaU25CysC, sex: "male", cysC: 0.8, age: 10, want: 103.2, tol: 0.005},

	// CKiD U25, a second implementation: the openEHR GDL guideline CKID_U25_EGFR v0.0.4, whose K
	// functions are the authors' SAS code in every band (K_cr 39.0*1.045^(age-12) and 36.1*1.023^(age-12)
	// at 12-18, K_cys 68.3 for women from 18; not kidney.epi 1.3.0's 41.8/37.6 and 41.4), and its
	// fixture's results (whole numbers) at SCr 0.8 mg/dL, CysC 0.9 mg/L, 175 cm. Its average (case 18)
	// is not used: the guideline keeps one k for both markers, so the creatinine part there uses 68.3.
	{source: "openEHR/gdl-guideline-models@5135b4c3 fixtures/CKID_U25_EGFR.v0.0.4.fixture.yml case 06 M 10 y 84", formula: formulaU25Cr, sex: "male", scrUmolL: 70.72, heightCm: 175, age: 10, want: 84, tol: 0.5},
	{source: "openEHR/gdl-guideline-models@5135b4c3 fixtures/CKID_U25_EGFR.v0.0.4.fixture.yml case 07 M 15 y 97 (15-18: authors' K 39.0*1.045^(age-12))", formula: formulaU25Cr, sex: "male", scrUmolL: 70.72, heightCm: 175, age: 15, want: 97, tol: 0.5},
	{source: "openEHR/gdl-guideline-models@5135b4c3 fixtures/CKID_U25_EGFR.v0.0.4.fixture.yml case 08 M 19 y 111", formula: formulaU25Cr, sex: "male", scrUmolL: 70.72, heightCm: 175, age: 19, want: 111, tol: 0.5},
	{source: "openEHR/gdl-guideline-models@5135b4c3 fixtures/CKID_U25_EGFR.v0.0.4.fixture.yml case 09 F 10 y 78", formula: formulaU25Cr, sex: "female", scrUmolL: 70.72, heightCm: 175, age: 10, want: 78, tol: 0.5},
	{source: "openEHR/gdl-guideline-models@5135b4c3 fixtures/CKID_U25_EGFR.v0.0.4.fixture.yml case 10 F 15 y 85 (15-18: authors' K 36.1*1.023^(age-12))", formula: formulaU25Cr, sex: "female", scrUmolL: 70.72, heightCm: 175, age: 15, want: 85, tol: 0.5},
	{source: "openEHR/gdl-guideline-models@5135b4c3 fixtures/CKID_U25_EGFR.v0.0.4.fixture.yml case 11 F 19 y 91", formula: formulaU25Cr, sex: "female", scrUmolL: 70.72, heightCm: 175, age: 19, want: 91, tol: 0.5},
	{source: "openEHR/gdl-guideline-models@5135b4c3 fixtures/CKID_U25_EGFR.v0.0.4.fixture.yml case 12 M 10 y 92", formula: formulaU25CysC, sex: "male", cysC: 0.9, age: 10, want: 92, tol: 0.5},
	{source: "openEHR/gdl-guideline-models@5135b4c3 fixtures/CKID_U25_EGFR.v0.0.4.fixture.yml case 13 M 15 y 97", formula: formulaU25CysC, sex: "male", cysC: 0.9, age: 15, want: 97, tol: 0.5},
	{source: "openEHR/gdl-guideline-models@5135b4c3 fixtures/CKID_U25_EGFR.v0.0.4.fixture.yml case 14 M 19 y 86", formula: formulaU25CysC, sex: "male", cysC: 0.9, age: 19, want: 86, tol: 0.5},
	{source: "openEHR/gdl-guideline-models@5135b4c3 fixtures/CKID_U25_EGFR.v0.0.4.fixture.yml case 15 F 10 y 88", formula: formulaU25CysC, sex: "female", cysC: 0.9, age: 10, want: 88, tol: 0.5},
	{source: "openEHR/gdl-guideline-models@5135b4c3 fixtures/CKID_U25_EGFR.v0.0.4.fixture.yml case 16 F 16 y 80 (authors' K 79.9*0.974^(age-12))", formula: formulaU25CysC, sex: "female", cysC: 0.9, age: 16, want: 80, tol: 0.5},
	{source: "openEHR/gdl-guideline-models@5135b4c3 fixtures/CKID_U25_EGFR.v0.0.4.fixture.yml case 17 F 19 y 76 (woman from 18: authors' K 68.3)", formula: formulaU25CysC, sex: "female", cysC: 0.9, age: 19, want: 76, tol: 0.5},

	// Bedside Schwartz. Age is not in the equation: a source that gives none is sent with age 5.
	{source: "johnasher/transplantr@9662038 tests/testthat/test_egfr.R schwartz_US(0.6, 101) 69.5", formula: formulaSchwartz, sex: "male", scrUmolL: 53.04, heightCm: 101, age: 5, want: 69.5, tol: 0.05},
	{source: "johnasher/transplantr@9662038 docs/reference/schwartz_US.html schwartz_US(0.7, 101) 59.59", formula: formulaSchwartz, sex: "male", scrUmolL: 61.88, heightCm: 101, age: 5, want: 59.59, tol: 0.005},
	{source: "scientific-tools-org/kidney.epi@d4e6f31b docs/reference/egfr.schwartz.html (26.55)", formula: formulaSchwartz, sex: "male", scrUmolL: 123.76, heightCm: 90, age: 10, want: 26.55, tol: 0.005},
	{source: "alwinw/epocakir@45377a58 tests/testthat/test-ckd.R eGFR_child_SCr 41.3*(1.2/0.5)", formula: formulaSchwartz, sex: "male", scrUmolL: 44.2, heightCm: 120, age: 10, want: 99.12, tol: 0.05},
	{source: "johnasher/transplantr@9662038 docs/reference/schwartz.html schwartz(64, 101) 57.60156 (its µmol/L form rounds the constant to 36.5, 0.025% below 0.413 × 88.4: tolerance 0.05)", formula: formulaSchwartz, sex: "female", scrUmolL: 64, heightCm: 101, age: 5, want: 57.60156, tol: 0.05},
	{source: "gdl-lang/common-clinical-models@4a9eccc7 gdl2/Revised_Schwartz_guideline.v1.test.yml 180 cm SCr 2 mg/dL age 2", formula: formulaSchwartz, sex: "male", scrUmolL: 176.8, heightCm: 180, age: 2, want: 37.170, tol: 0.0005},
	{source: "gdl-lang/common-clinical-models@4a9eccc7 gdl2/Revised_Schwartz_guideline.v1.test.yml 180 cm SCr 0.8 mg/dL age 2", formula: formulaSchwartz, sex: "male", scrUmolL: 70.72, heightCm: 180, age: 2, want: 92.925, tol: 0.0005},
	{source: "gdl-lang/common-clinical-models@4a9eccc7 gdl2/Revised_Schwartz_guideline.v1.test.yml 180 cm SCr 1 mg/dL age 2", formula: formulaSchwartz, sex: "male", scrUmolL: 88.4, heightCm: 180, age: 2, want: 74.340, tol: 0.0005},
	{source: "gdl-lang/common-clinical-models@4a9eccc7 gdl2/Revised_Schwartz_guideline.v1.test.yml 180 cm SCr 1.9 mg/dL age 2", formula: formulaSchwartz, sex: "male", scrUmolL: 167.96, heightCm: 180, age: 2, want: 39.126, tol: 0.0005},
	{source: "gdl-lang/common-clinical-models@4a9eccc7 gdl2/Revised_Schwartz_guideline.v1.test.yml 180 cm SCr 1.4 mg/dL age 2", formula: formulaSchwartz, sex: "male", scrUmolL: 123.76, heightCm: 180, age: 2, want: 53.100, tol: 0.0005},
	{source: "gdl-lang/common-clinical-models@4a9eccc7 gdl2/Revised_Schwartz_guideline.v1.test.yml 180 cm SCr 3 mg/dL age 2", formula: formulaSchwartz, sex: "male", scrUmolL: 265.2, heightCm: 180, age: 2, want: 24.780, tol: 0.0005},
	{source: "gdl-lang/common-clinical-models@4a9eccc7 gdl2/Revised_Schwartz_guideline.v1.test.yml 180 cm SCr 5 mg/dL age 2", formula: formulaSchwartz, sex: "male", scrUmolL: 442, heightCm: 180, age: 2, want: 14.868, tol: 0.0005},
}

// equation evaluates the pure function of a result formula.
func equation(ref egfrRef) float64 {
	scr, age, s := ref.scrUmolL/umolPerMgDL, int(ref.age), sex(ref.sex)
	switch ref.formula {
	case formula2021:
		return ckdEPI2021(scr, age, s)
	case formula2009:
		return ckdEPI2009(scr, age, s)
	case formula2021CrCysC:
		return ckdEPI2021CrCys(scr, ref.cysC, age, s)
	case formula2012CysC:
		return ckdEPI2012Cys(ref.cysC, age, s)
	case formulaU25Cr:
		return ckidU25Cr(scr, ref.heightCm, ref.age, s)
	case formulaU25CysC:
		return ckidU25Cys(ref.cysC, ref.age, s)
	case formulaU25Avg:
		return ckidU25Avg(scr, ref.cysC, ref.heightCm, ref.age, s)
	case formulaSchwartz:
		return bedsideSchwartz(scr, ref.heightCm)
	}
	panic("unknown formula " + ref.formula)
}

// TestEquationsMatchPublishedValues checks the unrounded equations at each source's own precision.
func TestEquationsMatchPublishedValues(t *testing.T) {
	counts := map[string]int{}
	for _, ref := range publishedEGFR {
		counts[ref.formula]++
		got := equation(ref)
		ok := math.Abs(got-ref.want) <= ref.tol
		if ref.tol == 0.5 { // a published whole number: ours must round half up to it
			ok = math.Round(got) == ref.want
		}
		if !ok {
			t.Errorf("%s %s Scr %g µmol/L CysC %g height %g age %g = %.6f, want %g ± %g (%s)",
				ref.formula, ref.sex, ref.scrUmolL, ref.cysC, ref.heightCm, ref.age, got, ref.want, ref.tol, ref.source)
		}
	}
	for _, f := range []string{formula2012CysC, formulaU25Cr, formulaU25CysC, formulaU25Avg, formulaSchwartz} {
		if counts[f] < 4 {
			t.Errorf("%s has %d published reference values", f, counts[f])
		}
	}
	t.Logf("published reference values per formula: %v", counts)
}

// crclRef is one published Cockcroft-Gault value from an independent implementation.
type crclRef struct {
	source   string
	sex      string
	scrUmolL float64
	age      int
	weightKg float64
	want     float64
	tol      float64 // 0.5 means a published whole number
}

// publishedCrCl are Cockcroft-Gault values published by independent implementations (mg/dL × 88.4).
var publishedCrCl = []crclRef{
	{source: "johnasher/transplantr@9662038 tests/testthat/test_egfr.R cockcroft(88.4, 25, F, 60) 81.46", sex: "female", scrUmolL: 88.4, age: 25, weightKg: 60, want: 81.46, tol: 0.005},
	{source: "johnasher/transplantr@9662038 docs/reference/cockcroft.html 81.45833", sex: "female", scrUmolL: 88.4, age: 25, weightKg: 60, want: 81.45833, tol: 5e-6},
	{source: "InsightRX/clinPK@86e3ad93 tests/testthat/test_calc_egfr.R cockcroft_gault 40 M 80 kg 1 mg/dL 111", sex: "male", scrUmolL: 88.4, age: 40, weightKg: 80, want: 111, tol: 0.5},
	{source: "JMLuther/tabletools@1d659b06 R/calculate_creatclearance_cg.R example 68.05556", sex: "male", scrUmolL: 88.4, age: 70, weightKg: 70, want: 68.05556, tol: 5e-6},
	{source: "JMLuther/tabletools@1d659b06 R/calculate_creatclearance_cg.R example 87.5", sex: "male", scrUmolL: 88.4, age: 50, weightKg: 70, want: 87.5, tol: 5e-6},
	{source: "JMLuther/tabletools@1d659b06 R/calculate_creatclearance_cg.R example 74.375", sex: "female", scrUmolL: 88.4, age: 50, weightKg: 70, want: 74.375, tol: 5e-6},
	// Other creatinine values. admiral divides µmol/L by 88.42 (so its µmol/L row is fed as the value
	// that gives admiral's mg/dL under our 88.4). The openEHR GDL guideline rounds UP (ceil) to a whole
	// number, so its value is an upper bound: tolerance 1.
	{source: "pharmaverse/admiral@05459a5e tests/testthat/test-compute_kidney.R Test 01.03 (NKF calculator) 1.09 mg/dL 55 M 90 kg 97", sex: "male", scrUmolL: 96.356, age: 55, weightKg: 90, want: 97, tol: 0.5},
	{source: "pharmaverse/admiral@05459a5e tests/testthat/test-compute_kidney.R Test 01.04 (NKF calculator) 85 µmol/L 65 F 60 kg 55", sex: "female", scrUmolL: 85 * 88.4 / 88.42, age: 65, weightKg: 60, want: 55, tol: 0.5},
	{source: "InsightRX/clinPK@86e3ad93 tests/testthat/test_calc_egfr.R \"egfr cap applied\" 40 M 80 kg 3 mg/dL 37", sex: "male", scrUmolL: 265.2, age: 40, weightKg: 80, want: 37, tol: 0.5},
	{source: "dpastoor/clincalc@a2bd3b51 src/__tests__/renalFunction.test.ts renalFunction(60, 60, 0.5, false) \"133.33\"", sex: "male", scrUmolL: 44.2, age: 60, weightKg: 60, want: 133.33, tol: 0.005},
	{source: "dpastoor/clincalc@a2bd3b51 src/__tests__/renalFunction.test.ts renalFunction(60, 60, 0.5, true) \"113.33\"", sex: "female", scrUmolL: 44.2, age: 60, weightKg: 60, want: 113.33, tol: 0.005},
	{source: "openEHR/gdl-guideline-models@430af4dc guidelines/Creatinine_Clearance_Cockcroft_Gault.v1.test.yml female_24yo_54kg_5mg/dl 15 (ceil)", sex: "female", scrUmolL: 442, age: 24, weightKg: 54, want: 15, tol: 1},
	{source: "openEHR/gdl-guideline-models@430af4dc guidelines/Creatinine_Clearance_Cockcroft_Gault.v1.test.yml male_24yo_54kg_5mg/dl 18 (ceil)", sex: "male", scrUmolL: 442, age: 24, weightKg: 54, want: 18, tol: 1},
	{source: "openEHR/gdl-guideline-models@430af4dc guidelines/Creatinine_Clearance_Cockcroft_Gault.v1.test.yml female_68yo_68kg_5mg/dl 12 (ceil)", sex: "female", scrUmolL: 442, age: 68, weightKg: 68, want: 12, tol: 1},
	{source: "openEHR/gdl-guideline-models@430af4dc guidelines/Creatinine_Clearance_Cockcroft_Gault.v1.test.yml male_68yo_68kg_5mg/dl 14 (ceil)", sex: "male", scrUmolL: 442, age: 68, weightKg: 68, want: 14, tol: 1},
}

// TestCockcroftGaultMatchesPublishedValues checks the unrounded equation at each source's precision.
func TestCockcroftGaultMatchesPublishedValues(t *testing.T) {
	for _, ref := range publishedCrCl {
		got := cockcroftGault(ref.scrUmolL/umolPerMgDL, ref.age, ref.weightKg, sex(ref.sex))
		ok := math.Abs(got-ref.want) <= ref.tol
		if ref.tol == 0.5 {
			ok = math.Round(got) == ref.want
		}
		if !ok {
			t.Errorf("Cockcroft-Gault %+v = %.6f (%s)", ref, got, ref.source)
		}
	}
}

// TestCKiDU25Structure checks properties of the authors' K functions rather than values: K is
// continuous at the band edges inside childhood (12 for both, 15 for male cystatin C), and at 18 it
// steps to the adult constant by the small amounts the authors' rounding gives (50.786 to 50.8 and so
// on); the sex-only constants of the abstract bracket the age-dependent K at age 1.
func TestCKiDU25Structure(t *testing.T) {
	const eps = 1e-9
	for _, s := range []sex{male, female} {
		for _, edge := range []float64{12, 15} {
			crBelow, cysBelow := ckidU25K(edge-eps, s)
			crAt, cysAt := ckidU25K(edge, s)
			if math.Abs(crBelow-crAt) > 1e-6 || math.Abs(cysBelow-cysAt) > 1e-6 {
				t.Errorf("%s: K discontinuous at %g: cr %.9f vs %.9f, cys %.9f vs %.9f", s, edge, crBelow, crAt, cysBelow, cysAt)
			}
		}
		crBelow, cysBelow := ckidU25K(18-eps, s)
		crAt, cysAt := ckidU25K(18, s)
		if math.Abs(crBelow-crAt)/crAt > 0.002 || math.Abs(cysBelow-cysAt)/cysAt > 0.002 {
			t.Errorf("%s: K steps at 18 by more than 0.2%%: cr %.4f to %.4f, cys %.4f to %.4f", s, crBelow, crAt, cysBelow, cysAt)
		}
	}
	// Pierce et al. 2021 abstract: K (creatinine) "from 35.7 for one-year-olds to 50.8" (male), "33.1 to 41.4" (female).
	for _, tt := range []struct {
		s        sex
		age, kCr float64
	}{{male, 1, 35.7}, {male, 18, 50.8}, {female, 1, 33.1}, {female, 18, 41.4}} {
		if got, _ := ckidU25K(tt.age, tt.s); math.Abs(got-tt.kCr) > 0.05 {
			t.Errorf("%s age %g: K_cr %.3f, the paper's abstract says %g", tt.s, tt.age, got, tt.kCr)
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
				at := equation(egfrRef{formula: formula, sex: string(s), scrUmolL: kneeUmol, cysC: 1.2, age: float64(age)})
				for _, eps := range []float64{-1e-9, 1e-9} {
					near := equation(egfrRef{formula: formula, sex: string(s), scrUmolL: kneeUmol * (1 + eps), cysC: 1.2, age: float64(age)})
					if math.Abs(near-at)/at > 1e-8 {
						t.Errorf("%s %s age %d: discontinuous at the knee: %.12f vs %.12f", formula, s, age, at, near)
					}
				}
				prev := math.Inf(1)
				for scr := 20.0; scr <= 3000; scr *= 1.05 {
					e := equation(egfrRef{formula: formula, sex: string(s), scrUmolL: scr, cysC: 1.2, age: float64(age)})
					if !(e < prev) || e <= 0 {
						t.Errorf("%s %s age %d: eGFR %.3f at %g µmol/L does not fall from %.3f", formula, s, age, e, scr, prev)
					}
					prev = e
				}
			}
			prev := math.Inf(1)
			for age := 18; age <= 120; age++ {
				e := equation(egfrRef{formula: formula, sex: string(s), scrUmolL: 100, cysC: 1.2, age: float64(age)})
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
		f := equation(egfrRef{formula: tt.formula, sex: "female", scrUmolL: 0.7 * r * umolPerMgDL, cysC: 1.2, age: 60})
		m := equation(egfrRef{formula: tt.formula, sex: "male", scrUmolL: 0.9 * r * umolPerMgDL, cysC: 1.2, age: 60})
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
		got := newEGFRResult(tt.give, formula2021, 50)
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
