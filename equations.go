package main

// The kidney function equations, exactly as published; every constant is cited at its use. They are
// pure functions of the measured values: validation (who each equation is for, and which inputs are
// plausible) lives in models.go, and the published reference values they are tested against in
// models_test.go.
//
// Units: serum creatinine in mg/dL (the API takes µmol/L and divides by umolPerMgDL), serum cystatin C
// in mg/L (standardised, IFCC-traceable), height in cm, weight in kg, age in years. Results are
// unrounded: eGFR in mL/min/1.73 m², creatinine clearance in mL/min.

import "math"

// sex is the sex term of the equations, which have no third option.
type sex string

const (
	male   sex = "male"
	female sex = "female"
)

// umolPerMgDL converts creatinine: mg/dL = µmol/L ÷ 88.4 (molar mass 113.12 g/mol; the factor used by
// kidney.epi, transplantr, clinPK and most journals; see shared/reference/egfr.md section 2).
const umolPerMgDL = 88.4

// ckdEPI2021 is the race-free CKD-EPI 2021 creatinine equation (Inker et al., N Engl J Med 2021;385:1737-49):
// 142 × min(Scr/κ,1)^α × max(Scr/κ,1)^−1.200 × 0.9938^age × 1.012 [female], κ 0.7 F / 0.9 M, α −0.241 F / −0.302 M.
func ckdEPI2021(scrMgDL float64, age int, s sex) float64 {
	kappa, alpha, factor := 0.9, -0.302, 1.0
	if s == female {
		kappa, alpha, factor = 0.7, -0.241, 1.012
	}
	r := scrMgDL / kappa
	return 142 * math.Pow(math.Min(r, 1), alpha) * math.Pow(math.Max(r, 1), -1.200) *
		math.Pow(0.9938, float64(age)) * factor
}

// ckdEPI2009 is the CKD-EPI 2009 creatinine equation (Levey et al., Ann Intern Med 2009;150:604-12) in its
// compact form (141 × 1.018 for women, not Table 2's rounded 144) and without the 1.159 ethnicity
// coefficient, as NICE NG203 (2021) recommends for UK laboratories:
// 141 × min(Scr/κ,1)^α × max(Scr/κ,1)^−1.209 × 0.993^age × 1.018 [female], κ 0.7 F / 0.9 M, α −0.329 F / −0.411 M.
func ckdEPI2009(scrMgDL float64, age int, s sex) float64 {
	kappa, alpha, factor := 0.9, -0.411, 1.0
	if s == female {
		kappa, alpha, factor = 0.7, -0.329, 1.018
	}
	r := scrMgDL / kappa
	return 141 * math.Pow(math.Min(r, 1), alpha) * math.Pow(math.Max(r, 1), -1.209) *
		math.Pow(0.993, float64(age)) * factor
}

// ckdEPI2021CrCys is the CKD-EPI 2021 creatinine–cystatin C equation (Inker et al., N Engl J Med
// 2021;385:1737-49; coefficients as in kidney.epi R/egfr_ckdepi2021.R and nephro):
// 135 × min(Scr/κ,1)^α × max(Scr/κ,1)^−0.544 × min(Scys/0.8,1)^−0.323 × max(Scys/0.8,1)^−0.778 ×
// 0.9961^age × 0.963 [female], κ 0.7 F / 0.9 M, α −0.219 F / −0.144 M.
func ckdEPI2021CrCys(scrMgDL, cysMgL float64, age int, s sex) float64 {
	kappa, alpha, factor := 0.9, -0.144, 1.0
	if s == female {
		kappa, alpha, factor = 0.7, -0.219, 0.963
	}
	r, c := scrMgDL/kappa, cysMgL/0.8
	return 135 * math.Pow(math.Min(r, 1), alpha) * math.Pow(math.Max(r, 1), -0.544) *
		math.Pow(math.Min(c, 1), -0.323) * math.Pow(math.Max(c, 1), -0.778) *
		math.Pow(0.9961, float64(age)) * factor
}

// ckdEPI2012Cys is the CKD-EPI 2012 cystatin C equation (Inker et al., N Engl J Med 2012;367:20-29),
// which has never had a race term and which the 2021 refit left unchanged; constants as on the NKF page
// "CKD-EPI Cystatin C Equation (2012)" (kidney.org/content/ckd-epi-cystatin-c-equation-2012), in nephro
// CKDEpi.cys (cran/nephro@5d906c2d R/nephro.R) and epocakir eGFR_adult_SCysC (alwinw/epocakir@45377a58
// R/ckd.R): 133 × min(Scys/0.8,1)^−0.499 × max(Scys/0.8,1)^−1.328 × 0.996^age × 0.932 [female].
func ckdEPI2012Cys(cysMgL float64, age int, s sex) float64 {
	factor := 1.0
	if s == female {
		factor = 0.932
	}
	c := cysMgL / 0.8
	return 133 * math.Pow(math.Min(c, 1), -0.499) * math.Pow(math.Max(c, 1), -1.328) *
		math.Pow(0.996, float64(age)) * factor
}

// ckidU25K returns the age- and sex-dependent coefficients of the CKiD U25 equations (Pierce et al.,
// Kidney Int 2021;99(4):948-956), kCr for height (m) / creatinine (mg/dL) and kCys for 1 / cystatin C
// (mg/L), with age in years and decimals. They are the authors' own code (ckidstudy/CKiD_U25@da0a6c3a,
// "SAS Code for U25eGFR calculation.sas"; the Stata and Excel files there are the same):
//
//	kCr  male:   39.0 × 1.008^(age−12) under 12; 39.0 × 1.045^(age−12) from 12 to 18; 50.8 from 18
//	kCr  female: 36.1 × 1.008^(age−12) under 12; 36.1 × 1.023^(age−12) from 12 to 18; 41.4 from 18
//	kCys male:   87.2 × 1.011^(age−15) under 15; 87.2 × 0.960^(age−15) from 15 to 18; 77.1 from 18
//	kCys female: 79.9 × 1.004^(age−12) under 12; 79.9 × 0.974^(age−12) from 12 to 18; 68.3 from 18
//
// The paper's abstract agrees (K "from 35.7 for one-year-olds to 50.8" for males, 33.1 to 41.4 for
// females: 39.0 × 1.008^−11 and 36.1 × 1.008^−11). kidney.epi 1.3.0 and 1.4.0 differ from the authors
// and are not followed: creatinine K constant 41.8 (M) / 37.6 (F) from 15 to 18 (the paper's sex-only
// constants), and cystatin K 41.4 for women from 18 (the female creatinine K).
func ckidU25K(age float64, s sex) (kCr, kCys float64) {
	if s == male {
		switch {
		case age < 12:
			return 39.0 * math.Pow(1.008, age-12), 87.2 * math.Pow(1.011, age-15)
		case age < 15:
			return 39.0 * math.Pow(1.045, age-12), 87.2 * math.Pow(1.011, age-15)
		case age < 18:
			return 39.0 * math.Pow(1.045, age-12), 87.2 * math.Pow(0.960, age-15)
		}
		return 50.8, 77.1
	}
	switch {
	case age < 12:
		return 36.1 * math.Pow(1.008, age-12), 79.9 * math.Pow(1.004, age-12)
	case age < 18:
		return 36.1 * math.Pow(1.023, age-12), 79.9 * math.Pow(0.974, age-12)
	}
	return 41.4, 68.3
}

// ckidU25Cr is the CKiD U25 creatinine equation: kCr × height (m) / Scr (mg/dL) (ckidU25K).
func ckidU25Cr(scrMgDL, heightCm, age float64, s sex) float64 {
	kCr, _ := ckidU25K(age, s)
	return kCr * (heightCm / 100) / scrMgDL
}

// ckidU25Cys is the CKiD U25 cystatin C equation: kCys / cystatin C (mg/L) (ckidU25K).
func ckidU25Cys(cysMgL, age float64, s sex) float64 {
	_, kCys := ckidU25K(age, s)
	return kCys / cysMgL
}

// ckidU25Avg is the authors' combined estimate: the mean of the unrounded creatinine and cystatin C
// estimates ("eGFRU25ave = (eGFRU25scr + eGFRU25cys)/2", ckidstudy/CKiD_U25 SAS, R and Stata code).
func ckidU25Avg(scrMgDL, cysMgL, heightCm, age float64, s sex) float64 {
	return (ckidU25Cr(scrMgDL, heightCm, age, s) + ckidU25Cys(cysMgL, age, s)) / 2
}

// bedsideSchwartz is the bedside Schwartz equation (Schwartz et al., J Am Soc Nephrol 2009;20:629-637:
// "with height measured in cm, a bedside calculation of 0.413*(height/serum creatinine)", IDMS-traceable
// creatinine in mg/dL). With creatinine in µmol/L this is 0.413 × 88.4 = 36.51 × height / Scr, the
// "36.5" of the µmol/L form (transplantr uses 36.5); keeping the paper's 0.413 and the service's one
// conversion factor differs from 36.5 by 0.025%.
func bedsideSchwartz(scrMgDL, heightCm float64) float64 {
	return 0.413 * heightCm / scrMgDL
}

// cockcroftGault is the Cockcroft–Gault creatinine clearance (Cockcroft & Gault, Nephron 1976;16:31-41),
// in mL/min, not normalised to body surface area: (140 − age) × weight (kg) / (72 × Scr mg/dL) × 0.85
// [female]. The same form is in transplantr cockcroft (creatinine ÷ 88.4 first), nephro CG, clinPK and
// kidney.epi 1.4.0 egfr.cg.cr. The UK µmol/L shorthand (× 1.23 men, × 1.04 women, ÷ Scr µmol/L) rounds
// 88.4/72 = 1.2278 and × 0.85 = 1.0436, so it differs by +0.18% and −0.35%; the exact form is used.
func cockcroftGault(scrMgDL float64, age int, weightKg float64, s sex) float64 {
	crcl := float64(140-age) * weightKg / (72 * scrMgDL)
	if s == female {
		crcl *= 0.85
	}
	return crcl
}
