package main

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// The equations below are the published CKD-EPI equations; every constant is cited at its use.
// Inputs: serum creatinine in mg/dL, serum cystatin C in mg/L, age in whole years.
// Output: eGFR in mL/min/1.73 m², unrounded.

// sex is the sex term of the CKD-EPI equations, which have no third option.
type sex string

const (
	male   sex = "male"
	female sex = "female"
)

// Formula names exactly as the API accepts and returns them.
const (
	formula2021       = "CKD-EPI 2021"
	formula2009       = "CKD-EPI 2009"
	formula2021CrCysC = "CKD-EPI 2021 creatinine-cystatin C"
)

// umolPerMgDL converts creatinine: mg/dL = µmol/L ÷ 88.4 (molar mass 113.12 g/mol; the factor used by
// kidney.epi, clinPK and most journals; see shared/reference/egfr.md section 2).
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

// kdigoCategory is the KDIGO 2012 GFR category (also used by NICE CG182/NG203) of a reported whole
// number: G1 ≥90, G2 60–89, G3a 45–59, G3b 30–44, G4 15–29, G5 <15. Taking it from the reported whole
// number, not the unrounded value, means the API never says "eGFR 60, G3a".
func kdigoCategory(reported int) string {
	switch {
	case reported >= 90:
		return "G1"
	case reported >= 60:
		return "G2"
	case reported >= 45:
		return "G3a"
	case reported >= 30:
		return "G3b"
	case reported >= 15:
		return "G4"
	default:
		return "G5"
	}
}

// egfrResult is the response body of POST /egfr.
type egfrResult struct {
	EGFR     float64 `json:"egfr_ml_min_1_73m2"` // rounded half up to one decimal place
	Reported string  `json:"egfr_reported"`      // whole number, or ">90", as UK laboratories report
	Category string  `json:"kdigo_category"`
	Formula  string  `json:"formula"`
}

// appendJSON appends r as JSON, as encoding/json would write it (a test checks), without reflection:
// this is the hot path. The strings are fixed values that need no escaping.
func (r egfrResult) appendJSON(b []byte) []byte {
	b = append(b, `{"egfr_ml_min_1_73m2":`...)
	b = strconv.AppendFloat(b, r.EGFR, 'f', -1, 64)
	b = append(b, `,"egfr_reported":"`...)
	b = append(b, r.Reported...)
	b = append(b, `","kdigo_category":"`...)
	b = append(b, r.Category...)
	b = append(b, `","formula":"`...)
	b = append(b, r.Formula...)
	return append(b, "\"}\n"...)
}

// newEGFRResult rounds an unrounded eGFR for reporting. Both roundings start from the unrounded value
// (never rounding a rounded number), half up: 89.46 is 89.5 and "89". ">90" means the whole number
// is above 90, so 90.4 is "90" and 90.5 is ">90".
func newEGFRResult(egfr float64, formula string) egfrResult {
	whole := int(math.Round(egfr))
	reported := strconv.Itoa(whole)
	if whole > 90 {
		reported = ">90"
	}
	return egfrResult{
		EGFR:     math.Round(egfr*10) / 10,
		Reported: reported,
		Category: kdigoCategory(whole),
		Formula:  formula,
	}
}

// egfrRequest is a validated POST /egfr body.
type egfrRequest struct {
	Sex         sex
	CreatUmolL  float64
	Age         int
	Formula     string
	CystatinC   float64 // mg/L; 0 when not given
	HasCystatin bool
}

// compute applies the requested equation.
func (r egfrRequest) compute() egfrResult {
	scr := r.CreatUmolL / umolPerMgDL
	switch {
	case r.HasCystatin:
		return newEGFRResult(ckdEPI2021CrCys(scr, r.CystatinC, r.Age, r.Sex), formula2021CrCysC)
	case r.Formula == formula2009:
		return newEGFRResult(ckdEPI2009(scr, r.Age, r.Sex), formula2009)
	default:
		return newEGFRResult(ckdEPI2021(scr, r.Age, r.Sex), formula2021)
	}
}

// Validation bounds, shared with openapi.json (a test checks they agree).
const (
	minAge        = 18   // CKD-EPI is derived and validated in adults; UK labs do not report eGFR under 18
	maxAge        = 120  // plausibility; ages up to 110 occur and must be accepted
	minCreatinine = 20.0 // µmol/L; below this the value is most likely in mg/dL (1.2 "µmol/L" gives eGFR > 250)
	maxCreatinine = 3000.0
	minCystatinC  = 0.2 // mg/L; plausibility window around the adult reference range (~0.6–1.0)
	maxCystatinC  = 10.0
)

// badJSON is a problem with the JSON itself (400); badValue one with a well-formed value (422).
func badJSON(loc []string, typ, msg string) *fieldError {
	return &fieldError{Loc: loc, Msg: msg, Type: typ, status: 400}
}

func badValue(loc []string, typ, msg string) *fieldError {
	return &fieldError{Loc: loc, Msg: msg, Type: typ, status: 422}
}

// egfrFields are the body's fields in the order problems are reported.
var egfrFields = [...]string{"sex", "serum_creatinine_umol_l", "age", "formula", "serum_cystatin_c_mg_l"}

// egfrMaxDepth caps the nesting of a POST /egfr body, whose valid form is one flat object.
const egfrMaxDepth = 16

// parseEGFRRequest decodes and validates a POST /egfr body, reporting every problem at once: first
// each field's, in egfrFields order, then unknown and duplicate keys in document order, then data
// after the object. The strict reader (json.go) keeps `Sex` apart from `sex` and reports duplicate
// keys, which encoding/json would accept silently; JSON null counts as absent.
//
// It reads with r, which the handler reuses (a pooled reader: the hot path allocates almost nothing).
func parseEGFRRequest(r *jsonReader, body []byte) (egfrRequest, []fieldError) {
	root, dups, jerr := r.read(body, egfrMaxDepth)
	if jerr != nil && jerr.kind != jsonTrailing {
		return egfrRequest{}, []fieldError{*egfrJSONError(jerr)}
	}
	field := func(name string) *jsonNode {
		if v := root.member(name); v != nil && v.kind != jsonNull {
			return v
		}
		return nil
	}
	var req egfrRequest
	var problems []fieldError
	add := func(e *fieldError) {
		if e != nil {
			problems = append(problems, *e)
		}
	}
	var err *fieldError
	req.Sex, err = parseSex(field("sex"))
	add(err)
	req.CreatUmolL, err = parseCreatinine(field("serum_creatinine_umol_l"))
	add(err)
	req.Age, err = parseAge(field("age"))
	add(err)
	req.Formula, err = parseFormula(field("formula"))
	add(err)
	if v := field("serum_cystatin_c_mg_l"); v != nil {
		req.CystatinC, err = parseCystatin(v, req.Formula)
		req.HasCystatin = err == nil
		add(err)
	}
	for _, k := range root.keys {
		if !slices.Contains(egfrFields[:], k) {
			add(badJSON([]string{"body", k}, "extra_forbidden",
				"Unknown field (field names are case-sensitive): expected one of "+strings.Join(egfrFields[:], ", ")+"."))
		}
	}
	for _, d := range dups {
		if len(d.path) == 1 { // a duplicate deeper down is inside a value of the wrong type, reported above
			add(badJSON([]string{"body", d.path[0].key}, "duplicate_key", "This key appears more than once; send it once."))
		}
	}
	if jerr != nil {
		add(badJSON([]string{"body"}, "json_invalid", "The request body has data after the JSON object; send exactly one object."))
	}
	return req, problems
}

// egfrJSONError words why a body could not be read as a JSON object.
func egfrJSONError(e *jsonError) *fieldError {
	root := []string{"body"}
	switch e.kind {
	case jsonEmpty:
		return badJSON(root, "json_invalid", "The request body is empty; send a JSON object.")
	case jsonNotUTF8:
		return badJSON(root, "json_invalid", "The request body is not valid UTF-8.")
	case jsonTruncated:
		return badJSON(root, "json_invalid", "The request body is not valid JSON: it ends too early.")
	case jsonTooDeep:
		return badJSON(root, "json_invalid", fmt.Sprintf("The request body nests JSON more than %d levels deep.", egfrMaxDepth))
	case jsonNotObject:
		return badJSON(root, "model_type", "The request body should be a JSON object.")
	}
	return badJSON(root, "json_invalid", fmt.Sprintf("The request body is not valid JSON (at byte offset %d).", e.offset))
}

// parseSex reads the required sex, male or female (lower case).
func parseSex(v *jsonNode) (sex, *fieldError) {
	switch {
	case v == nil:
		return "", badValue(loc("sex"), "missing", "Field required.")
	case v.kind != jsonString:
		return "", badJSON(loc("sex"), "string_type", "Input should be a string: \"male\" or \"female\".")
	case v.text == string(male):
		return male, nil
	case v.text == string(female):
		return female, nil
	}
	return "", badValue(loc("sex"), "literal_error", "Input should be \"male\" or \"female\" (lower case).")
}

// parseCreatinine reads the required serum creatinine in µmol/L. A small positive value is most
// likely in mg/dL, and the message says so.
func parseCreatinine(v *jsonNode) (float64, *fieldError) {
	x, err := egfrNumber(v, "serum_creatinine_umol_l", "µmol/L", maxCreatinine)
	switch {
	case err != nil:
		return 0, err
	case x <= 0:
		return 0, badValue(loc("serum_creatinine_umol_l"), "greater_than_equal",
			fmt.Sprintf("Input should be a positive number of µmol/L, from %g to %g.", minCreatinine, maxCreatinine))
	case x < minCreatinine:
		return 0, badValue(loc("serum_creatinine_umol_l"), "greater_than_equal",
			fmt.Sprintf("Input should be at least %g µmol/L; %g looks like a value in mg/dL (mg/dL × 88.4 = µmol/L).", minCreatinine, x))
	}
	return x, nil
}

// parseCystatin reads the optional serum cystatin C in mg/L, which only the 2021 equations use.
func parseCystatin(v *jsonNode, formula string) (float64, *fieldError) {
	x, err := egfrNumber(v, "serum_cystatin_c_mg_l", "mg/L", maxCystatinC)
	switch {
	case err != nil:
		return 0, err
	case x < minCystatinC:
		return 0, badValue(loc("serum_cystatin_c_mg_l"), "greater_than_equal", fmt.Sprintf("Input should be at least %g mg/L.", minCystatinC))
	case formula == formula2009:
		return 0, badValue(loc("serum_cystatin_c_mg_l"), "formula_mismatch",
			"Cystatin C is used only by the CKD-EPI 2021 creatinine-cystatin C equation; omit it, or omit \"formula\" (or send \"CKD-EPI 2021\").")
	}
	return x, nil
}

// egfrNumber reads a number field in unit and checks it is present, a number, finite and at most hi;
// the caller checks the lower bound, whose message depends on the field.
func egfrNumber(v *jsonNode, name, unit string, hi float64) (float64, *fieldError) {
	if v == nil {
		return 0, badValue(loc(name), "missing", "Field required.")
	}
	x, ok := jsonFloat(v)
	switch {
	case !ok:
		return 0, badJSON(loc(name), "float_type", fmt.Sprintf("Input should be a number (%s).", unit))
	case math.IsInf(x, 0):
		return 0, badValue(loc(name), "finite_number", fmt.Sprintf("Input should be a finite number (%s).", unit))
	case x > hi:
		return 0, badValue(loc(name), "less_than_equal", fmt.Sprintf("Input should be at most %g %s.", hi, unit))
	}
	return x, nil
}

// parseAge reads the required age in whole years, adults only.
func parseAge(v *jsonNode) (int, *fieldError) {
	if v == nil {
		return 0, badValue(loc("age"), "missing", "Field required.")
	}
	x, ok := jsonFloat(v)
	switch {
	case !ok:
		return 0, badJSON(loc("age"), "int_type", "Input should be a whole number of years.")
	case math.IsInf(x, 0) || x != math.Trunc(x):
		return 0, badValue(loc("age"), "int_from_float", "Input should be a whole number of years, without a fractional part.")
	case x < minAge:
		return 0, badValue(loc("age"), "greater_than_equal", fmt.Sprintf("Input should be at least %d years: CKD-EPI is validated in adults only.", minAge))
	case x > maxAge:
		return 0, badValue(loc("age"), "less_than_equal", fmt.Sprintf("Input should be at most %d years.", maxAge))
	}
	return int(x), nil
}

// parseFormula reads the optional formula; absent means CKD-EPI 2021.
func parseFormula(v *jsonNode) (string, *fieldError) {
	switch {
	case v == nil:
		return formula2021, nil
	case v.kind != jsonString:
		return formula2021, badJSON(loc("formula"), "string_type", "Input should be a string: \"CKD-EPI 2021\" or \"CKD-EPI 2009\".")
	case v.text == formula2009 || v.text == formula2021:
		return v.text, nil
	}
	return formula2021, badValue(loc("formula"), "literal_error", "Input should be \"CKD-EPI 2021\" or \"CKD-EPI 2009\".")
}

// loc is the errors[] location of a body field.
func loc(field string) []string { return []string{"body", field} }

// jsonFloat reports the value of a JSON number; a number too large for float64 is ±Inf.
func jsonFloat(v *jsonNode) (float64, bool) {
	if v.kind != jsonNumber {
		return 0, false
	}
	x, err := strconv.ParseFloat(v.text, 64)
	return x, err == nil || errors.Is(err, strconv.ErrRange)
}
