package main

// The POST /egfr and POST /crcl request and response bodies: reading, validation (who each equation is
// for, and which inputs are plausible), and which equation a valid request gets. The equations
// themselves are in equations.go.

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Formula names exactly as the API accepts them in "formula" (the family) and returns them in the
// response's "formula" (the equation and form used, which the inputs sent decide: never a silent switch).
const (
	formula2021     = "CKD-EPI 2021" // request and response (the creatinine equation)
	formula2009     = "CKD-EPI 2009" // request and response
	formulaU25      = "CKiD U25"     // request only
	formulaSchwartz = "Bedside Schwartz"

	formula2021CrCysC = "CKD-EPI 2021 creatinine-cystatin C"
	formula2012CysC   = "CKD-EPI 2012 cystatin C"
	formulaU25Cr      = "CKiD U25 creatinine"
	formulaU25CysC    = "CKiD U25 cystatin C"
	formulaU25Avg     = "CKiD U25 creatinine-cystatin C average"

	formulaCG = "Cockcroft-Gault" // POST /crcl
)

// Validation bounds, shared with openapi.json (a test checks they agree).
const (
	minAge        = 18   // CKD-EPI and Cockcroft-Gault are for adults; UK labs do not report eGFR under 18
	maxAge        = 120  // plausibility; ages up to 110 occur and must be accepted
	minCreatinine = 20.0 // µmol/L; below this the value is most likely in mg/dL (1.2 "µmol/L" gives eGFR > 250)
	maxCreatinine = 3000.0
	minCystatinC  = 0.2 // mg/L; plausibility window around the adult reference range (~0.6–1.0)
	maxCystatinC  = 10.0

	// Children and young people. The CKiD U25 authors give these input ranges for their equations
	// (ckidstudy/CKiD_U25@da0a6c3a, every code file's header): age "1 to 25 years" (the Excel calculator
	// takes 1 ≤ age ≤ 25, decimals allowed), height "0.6 and 2 m", creatinine "0.1 and 10 mg/dL"
	// (8.84–884 µmol/L), IFCC cystatin C "0.2-8" mg/L. Bedside Schwartz was derived by the same group in the
	// same cohort (CKiD), so its creatinine and height take the same ranges.
	minAgeU25          = 1.0
	maxAgeU25          = 25.0
	minAgeSchwartz     = 1.0  // Schwartz 2009 derived it in children aged 1 to 16; NKF: "For use in children 1-18 years old"
	maxAgeSchwartz     = 18.0 // exclusive: from 18 the adult equations apply (nephro: "valid in the 1-17 years age range"; kidney.epi: 2 ≤ age < 18)
	minCreatinineChild = 8.84 // 0.1 mg/dL
	maxCreatinineChild = 884.0
	maxCystatinCChild  = 8.0
	minHeight          = 60.0 // cm
	maxHeight          = 200.0

	// KDIGO 2012 applies its GFR categories to children from 2 years (Pottel et al., Pediatr Nephrol
	// 2015;30:821-828: the cut-offs are "also applied for children older than 2 years of age"); under 2,
	// normal GFR is below 60 and the adult categories are not used (Children 2022;9(12):1995, citing KDIGO).
	minAgeKDIGO = 2.0

	// Plausibility limits for an adult's weight, a decision rather than a published limit (none was
	// found; kidney.epi only requires a positive weight): wide enough for the extremes of muscle mass
	// the MHRA names, narrow enough to catch a weight in grams (pounds cannot be told from kg by range).
	minWeight = 20.0 // kg
	maxWeight = 400.0
)

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

// gfrCategory is a KDIGO GFR category, or none ("", written as JSON null) for a child under 2, to
// whom KDIGO 2012 does not apply its categories.
type gfrCategory string

// MarshalJSON writes the category, or null when there is none.
func (c gfrCategory) MarshalJSON() ([]byte, error) {
	if c == "" {
		return []byte("null"), nil
	}
	return strconv.AppendQuote(nil, string(c)), nil
}

// egfrResult is the response body of POST /egfr.
type egfrResult struct {
	EGFR     float64     `json:"egfr_ml_min_1_73m2"` // rounded half up to one decimal place
	Reported string      `json:"egfr_reported"`      // whole number, or ">90", as UK laboratories report
	Category gfrCategory `json:"kdigo_category"`
	Formula  string      `json:"formula"`
}

// appendJSON appends r as JSON, as encoding/json would write it (a test checks), without reflection:
// this is the hot path. The strings are fixed values that need no escaping.
func (r egfrResult) appendJSON(b []byte) []byte {
	b = append(b, `{"egfr_ml_min_1_73m2":`...)
	b = strconv.AppendFloat(b, r.EGFR, 'f', -1, 64)
	b = append(b, `,"egfr_reported":"`...)
	b = append(b, r.Reported...)
	if r.Category == "" {
		b = append(b, `","kdigo_category":null,"formula":"`...)
	} else {
		b = append(b, `","kdigo_category":"`...)
		b = append(b, r.Category...)
		b = append(b, `","formula":"`...)
	}
	b = append(b, r.Formula...)
	return append(b, "\"}\n"...)
}

// newEGFRResult rounds an unrounded eGFR for reporting. Both roundings start from the unrounded value
// (never rounding a rounded number), half up: 89.46 is 89.5 and "89". ">90" means the whole number
// is above 90, so 90.4 is "90" and 90.5 is ">90". The same rules hold for children: the CKiD
// equations were derived in children with CKD (Schwartz 2009: median measured GFR 41.3), so values
// above 90 are no more precise there. Under age 2 there is no KDIGO category.
func newEGFRResult(egfr float64, formula string, age float64) egfrResult {
	whole := int(math.Round(egfr))
	reported := strconv.Itoa(whole)
	if whole > 90 {
		reported = ">90"
	}
	var category gfrCategory
	if age >= minAgeKDIGO {
		category = gfrCategory(kdigoCategory(whole))
	}
	return egfrResult{
		EGFR:     math.Round(egfr*10) / 10,
		Reported: reported,
		Category: category,
		Formula:  formula,
	}
}

// egfrRequest is a validated POST /egfr body. A measurement not sent is 0 (every valid one is positive).
type egfrRequest struct {
	Sex        sex
	CreatUmolL float64
	Age        float64 // whole years for the adult formulas
	Formula    string  // the family requested: formula2021, formula2009, formulaU25 or formulaSchwartz
	CystatinC  float64 // mg/L
	HeightCm   float64
	PatientID  string
}

// compute applies the equation the request's formula and inputs select.
func (r egfrRequest) compute() egfrResult {
	scr, age := r.CreatUmolL/umolPerMgDL, int(r.Age)
	var e float64
	var f string
	switch {
	case r.Formula == formula2009:
		e, f = ckdEPI2009(scr, age, r.Sex), formula2009
	case r.Formula == formulaSchwartz:
		e, f = bedsideSchwartz(scr, r.HeightCm), formulaSchwartz
	case r.Formula == formulaU25 && r.CystatinC == 0:
		e, f = ckidU25Cr(scr, r.HeightCm, r.Age, r.Sex), formulaU25Cr
	case r.Formula == formulaU25 && r.CreatUmolL == 0:
		e, f = ckidU25Cys(r.CystatinC, r.Age, r.Sex), formulaU25CysC
	case r.Formula == formulaU25:
		e, f = ckidU25Avg(scr, r.CystatinC, r.HeightCm, r.Age, r.Sex), formulaU25Avg
	case r.CystatinC == 0:
		e, f = ckdEPI2021(scr, age, r.Sex), formula2021
	case r.CreatUmolL == 0:
		e, f = ckdEPI2012Cys(r.CystatinC, age, r.Sex), formula2012CysC
	default:
		e, f = ckdEPI2021CrCys(scr, r.CystatinC, age, r.Sex), formula2021CrCysC
	}
	return newEGFRResult(e, f, r.Age)
}

// isChildFormula reports whether formula is one of the equations for children and young people.
func isChildFormula(formula string) bool { return formula == formulaU25 || formula == formulaSchwartz }

// badJSON is a problem with the JSON itself (400); badValue one with a well-formed value (422).
func badJSON(loc []string, typ, msg string) *fieldError {
	return &fieldError{Loc: loc, Msg: msg, Type: typ, status: 400}
}

func badValue(loc []string, typ, msg string) *fieldError {
	return &fieldError{Loc: loc, Msg: msg, Type: typ, status: 422}
}

// egfrFields are the POST /egfr body's fields in the order problems are reported.
var egfrFields = [...]string{"sex", "serum_creatinine_umol_l", "age", "formula", "serum_cystatin_c_mg_l", "height_cm", "patient_id"}

// egfrMaxDepth caps the nesting of a calculator body, whose valid form is one flat object.
const egfrMaxDepth = 16

// parseEGFRRequest decodes and validates a POST /egfr body with r (which the hot path reuses), reporting
// every problem at once: first each field's, in egfrFields order, then unknown and duplicate keys in
// document order, then data after the object. observation says whether the answer is a FHIR
// Observation, the only representation patient_id is used in. The strict reader (json.go) keeps `Sex`
// apart from `sex` and reports duplicate keys, which encoding/json would accept silently; JSON null
// counts as absent.
func parseEGFRRequest(r *jsonReader, body []byte, observation bool) (egfrRequest, []fieldError) {
	root, dups, trailing, jerr := readCalculatorBody(r, body)
	if jerr != nil {
		return egfrRequest{}, []fieldError{*jerr}
	}
	var req egfrRequest
	var errs [len(egfrFields)]*fieldError
	creat, cys := present(root, "serum_creatinine_umol_l"), present(root, "serum_cystatin_c_mg_l")
	req.Formula, errs[3] = parseFormula(present(root, "formula"))
	req.Sex, errs[0] = parseSex(present(root, "sex"))
	req.CreatUmolL, errs[1] = parseCreatinine(creat, req.Formula, cys != nil)
	req.Age, errs[2] = parseAge(present(root, "age"), req.Formula)
	req.CystatinC, errs[4] = parseCystatin(cys, req.Formula, creat != nil)
	req.HeightCm, errs[5] = parseHeight(present(root, "height_cm"), req.Formula, creat != nil)
	req.PatientID, errs[6] = parsePatientID(present(root, "patient_id"), observation)
	return req, bodyProblems(errs[:], root, egfrFields[:], dups, trailing)
}

// readCalculatorBody reads a calculator body as one JSON object; trailing reports data after it
// (which is still reported after the object's own problems), and err is why it is not an object at all.
func readCalculatorBody(r *jsonReader, body []byte) (root *jsonNode, dups []jsonDuplicate, trailing bool, err *fieldError) {
	root, dups, jerr := r.read(body, egfrMaxDepth)
	if jerr != nil && jerr.kind != jsonTrailing {
		return nil, nil, false, calculatorJSONError(jerr)
	}
	return root, dups, jerr != nil, nil
}

// present returns the value of the object member name, or nil when it is absent or null.
func present(root *jsonNode, name string) *jsonNode {
	if v := root.member(name); v != nil && v.kind != jsonNull {
		return v
	}
	return nil
}

// bodyProblems lists the fields' problems (errs, in field order), then unknown and duplicate keys in
// document order, then data after the object.
func bodyProblems(errs []*fieldError, root *jsonNode, fields []string, dups []jsonDuplicate, trailing bool) []fieldError {
	var problems []fieldError
	for _, e := range errs {
		if e != nil {
			problems = append(problems, *e)
		}
	}
	for _, k := range root.keys {
		if !slices.Contains(fields, k) {
			problems = append(problems, *badJSON([]string{"body", k}, "extra_forbidden",
				"Unknown field (field names are case-sensitive): expected one of "+strings.Join(fields, ", ")+"."))
		}
	}
	for _, d := range dups {
		if len(d.path) == 1 { // a duplicate deeper down is inside a value of the wrong type, reported above
			problems = append(problems, *badJSON([]string{"body", d.path[0].key}, "duplicate_key", "This key appears more than once; send it once."))
		}
	}
	if trailing {
		problems = append(problems, *badJSON([]string{"body"}, "json_invalid", "The request body has data after the JSON object; send exactly one object."))
	}
	return problems
}

// calculatorJSONError words why a body could not be read as a JSON object.
func calculatorJSONError(e *jsonError) *fieldError {
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
	case v.text == string(male) || v.text == string(female):
		return sex(v.text), nil
	}
	return "", badValue(loc("sex"), "literal_error", "Input should be \"male\" or \"female\" (lower case).")
}

// sendAMarker is the message when neither marker is sent to a formula that can use either.
const sendAMarker = "Send serum_creatinine_umol_l (µmol/L), serum_cystatin_c_mg_l (mg/L), or both."

// parseCreatinine reads the serum creatinine in µmol/L: required by CKD-EPI 2009, Bedside Schwartz and
// Cockcroft-Gault, optional when cystatin C is sent to CKD-EPI 2021 or CKiD U25. A small positive value
// is most likely in mg/dL, and the message says so.
func parseCreatinine(v *jsonNode, formula string, cystatinSent bool) (float64, *fieldError) {
	const name = "serum_creatinine_umol_l"
	if v == nil {
		switch {
		case formula == formulaSchwartz:
			return 0, badValue(loc(name), "missing", "Field required: bedside Schwartz is a creatinine equation (with height_cm).")
		case formula == formula2009 || formula == formulaCG:
			return 0, badValue(loc(name), "missing", "Field required.")
		case !cystatinSent:
			return 0, badValue(loc(name), "missing", sendAMarker)
		}
		return 0, nil
	}
	lo, hi, why := minCreatinine, maxCreatinine, ""
	if isChildFormula(formula) {
		lo, hi, why = minCreatinineChild, maxCreatinineChild, ", the CKiD authors' input range (0.1 to 10 mg/dL)"
	}
	x, err := egfrNumber(v, name, "µmol/L")
	switch {
	case err != nil:
		return 0, err
	case x <= 0:
		return 0, badValue(loc(name), "greater_than_equal", fmt.Sprintf("Input should be a positive number of µmol/L, from %g to %g%s.", lo, hi, why))
	case x < lo:
		return 0, badValue(loc(name), "greater_than_equal",
			fmt.Sprintf("Input should be at least %g µmol/L%s; %g looks like a value in mg/dL (mg/dL × 88.4 = µmol/L).", lo, why, x))
	case x > hi:
		return 0, badValue(loc(name), "less_than_equal", fmt.Sprintf("Input should be at most %g µmol/L%s.", hi, why))
	}
	return x, nil
}

// parseCystatin reads the serum cystatin C in mg/L, which CKD-EPI 2021 (with or without creatinine)
// and CKiD U25 use, and CKD-EPI 2009 and Bedside Schwartz do not.
func parseCystatin(v *jsonNode, formula string, creatinineSent bool) (float64, *fieldError) {
	const name = "serum_cystatin_c_mg_l"
	switch {
	case v == nil && !creatinineSent && (formula == formula2021 || formula == formulaU25):
		return 0, badValue(loc(name), "missing", sendAMarker)
	case v == nil:
		return 0, nil
	}
	hi, why := maxCystatinC, ""
	if formula == formulaU25 {
		hi, why = maxCystatinCChild, ", the CKiD U25 authors' input range (IFCC-calibrated)"
	}
	x, err := egfrNumber(v, name, "mg/L")
	switch {
	case err != nil:
		return 0, err
	case x < minCystatinC:
		return 0, badValue(loc(name), "greater_than_equal", fmt.Sprintf("Input should be at least %g mg/L.", minCystatinC))
	case x > hi:
		return 0, badValue(loc(name), "less_than_equal", fmt.Sprintf("Input should be at most %g mg/L%s.", hi, why))
	case formula == formula2009:
		return 0, badValue(loc(name), "formula_mismatch",
			"Cystatin C is not used by CKD-EPI 2009; omit it, or omit \"formula\" (or send \"CKD-EPI 2021\") for the CKD-EPI 2021 creatinine-cystatin C or CKD-EPI 2012 cystatin C equation.")
	case formula == formulaSchwartz:
		return 0, badValue(loc(name), "formula_mismatch",
			"Cystatin C is not used by bedside Schwartz; omit it, or send \"formula\": \"CKiD U25\", which has cystatin C forms.")
	}
	return x, nil
}

// parseHeight reads the height in cm, which the creatinine forms of the children's equations need and
// nothing else uses (a field sent is a field used).
func parseHeight(v *jsonNode, formula string, creatinineSent bool) (float64, *fieldError) {
	const name = "height_cm"
	needed := formula == formulaSchwartz || formula == formulaU25 && creatinineSent
	switch {
	case v == nil && needed:
		return 0, badValue(loc(name), "missing", fmt.Sprintf("Field required: %s with serum creatinine needs the height in cm.", formula))
	case v == nil:
		return 0, nil
	case !isChildFormula(formula):
		return 0, badValue(loc(name), "formula_mismatch", "Height is used only by \"CKiD U25\" and \"Bedside Schwartz\"; omit it with CKD-EPI.")
	case !needed:
		return 0, badValue(loc(name), "formula_mismatch", "Height is used only with serum creatinine; omit it when sending cystatin C alone.")
	}
	const why = ": the CKiD authors give 60 to 200 cm as the equations' height range"
	x, err := egfrNumber(v, name, "cm")
	switch {
	case err != nil:
		return 0, err
	case x > 0 && x <= 2.5:
		return 0, badValue(loc(name), "greater_than_equal", fmt.Sprintf("Input should be at least %g cm; %g looks like a height in metres (m × 100 = cm).", minHeight, x))
	case x < minHeight:
		return 0, badValue(loc(name), "greater_than_equal", fmt.Sprintf("Input should be at least %g cm%s.", minHeight, why))
	case x > maxHeight:
		return 0, badValue(loc(name), "less_than_equal", fmt.Sprintf("Input should be at most %g cm%s.", maxHeight, why))
	}
	return x, nil
}

// parsePatientID reads the optional id of the Patient an Observation is about. It is used only in the
// FHIR Observation, so a JSON answer refuses it rather than ignoring it.
func parsePatientID(v *jsonNode, observation bool) (string, *fieldError) {
	const name = "patient_id"
	switch {
	case v == nil:
		return "", nil
	case v.kind != jsonString:
		return "", badJSON(loc(name), "string_type", "Input should be a string: the id of a Patient on this server.")
	case !validFHIRID(v.text):
		return "", badValue(loc(name), "string_pattern_mismatch", "Input should be a Patient id: 1 to 64 characters from A-Z, a-z, 0-9, '-' and '.'.")
	case !observation:
		return "", badValue(loc(name), "representation_mismatch",
			"patient_id is used only in the FHIR Observation; send Accept: application/fhir+json, or omit it.")
	}
	return v.text, nil
}

// egfrNumber reads a number field in unit and checks it is present, a number and finite; the caller
// checks the bounds, whose messages depend on the field and the formula.
func egfrNumber(v *jsonNode, name, unit string) (float64, *fieldError) {
	if v == nil {
		return 0, badValue(loc(name), "missing", "Field required.")
	}
	x, ok := jsonFloat(v)
	switch {
	case !ok:
		return 0, badJSON(loc(name), "float_type", fmt.Sprintf("Input should be a number (%s).", unit))
	case math.IsInf(x, 0):
		return 0, badValue(loc(name), "finite_number", fmt.Sprintf("Input should be a finite number (%s).", unit))
	}
	return x, nil
}

// parseAge reads the required age in years: whole years, 18 to 120, for the adult formulas; years with
// decimals for the children's, as the CKiD authors' code takes it (1 to 25 for CKiD U25, 1 to under 18
// for Bedside Schwartz).
func parseAge(v *jsonNode, formula string) (float64, *fieldError) {
	switch {
	case v == nil:
		return 0, badValue(loc("age"), "missing", "Field required.")
	case !isChildFormula(formula):
		return parseAdultAge(v, formula)
	}
	x, ok := jsonFloat(v)
	switch {
	case !ok:
		return 0, badJSON(loc("age"), "float_type", "Input should be a number of years (decimals allowed, such as 7.5).")
	case math.IsInf(x, 0):
		return 0, badValue(loc("age"), "finite_number", "Input should be a finite number of years.")
	case formula == formulaU25 && x < minAgeU25:
		return 0, badValue(loc("age"), "greater_than_equal", "Input should be at least 1 year: CKiD U25 is defined for ages 1 to 25 (Pierce et al., Kidney Int 2021), and no equation here is validated under 1.")
	case formula == formulaU25 && x > maxAgeU25:
		return 0, badValue(loc("age"), "less_than_equal", "Input should be at most 25 years: CKiD U25 is defined for ages 1 to 25 (Pierce et al., Kidney Int 2021); for adults send a CKD-EPI formula.")
	case formula == formulaSchwartz && x < minAgeSchwartz:
		return 0, badValue(loc("age"), "greater_than_equal", "Input should be at least 1 year: bedside Schwartz is for children aged 1 to 17, and no equation here is validated under 1.")
	case formula == formulaSchwartz && x >= maxAgeSchwartz:
		return 0, badValue(loc("age"), "less_than", "Input should be under 18 years: bedside Schwartz is for children aged 1 to 17; from 18 send a CKD-EPI formula (or \"CKiD U25\" up to 25).")
	}
	return x, nil
}

// adultAgeHint is what an adult formula's message says to do for someone under 18.
const adultAgeHint = " For ages 1 to 25 send \"formula\": \"CKiD U25\" (with height_cm when sending creatinine); for ages 1 to 17, \"Bedside Schwartz\" (with height_cm)."

// parseAdultAge reads the age sent in whole years to an adult formula (CKD-EPI, Cockcroft-Gault).
func parseAdultAge(v *jsonNode, formula string) (float64, *fieldError) {
	x, ok := jsonFloat(v)
	switch {
	case !ok:
		return 0, badJSON(loc("age"), "int_type", "Input should be a whole number of years.")
	case math.IsInf(x, 0) || x != math.Trunc(x):
		return 0, badValue(loc("age"), "int_from_float", "Input should be a whole number of years, without a fractional part.")
	case x < minAge && formula == formulaCG:
		return 0, badValue(loc("age"), "greater_than_equal", fmt.Sprintf("Input should be at least %d years: Cockcroft-Gault is for adults.", minAge))
	case x < minAge:
		return 0, badValue(loc("age"), "greater_than_equal", fmt.Sprintf("Input should be at least %d years: CKD-EPI is validated in adults only.", minAge)+adultAgeHint)
	case x > maxAge:
		return 0, badValue(loc("age"), "less_than_equal", fmt.Sprintf("Input should be at most %d years.", maxAge))
	}
	return x, nil
}

// formulaChoices names the values "formula" accepts, for messages.
const formulaChoices = `"CKD-EPI 2021", "CKD-EPI 2009", "CKiD U25" or "Bedside Schwartz"`

// parseFormula reads the optional formula; absent means CKD-EPI 2021.
func parseFormula(v *jsonNode) (string, *fieldError) {
	switch {
	case v == nil:
		return formula2021, nil
	case v.kind != jsonString:
		return formula2021, badJSON(loc("formula"), "string_type", "Input should be a string: "+formulaChoices+".")
	case v.text == formula2009 || v.text == formula2021 || v.text == formulaU25 || v.text == formulaSchwartz:
		return v.text, nil
	}
	return formula2021, badValue(loc("formula"), "literal_error", "Input should be "+formulaChoices+".")
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

// mhraCrClAdvice is the MHRA's advice on when to use creatinine clearance rather than eGFR (Drug Safety
// Update, October 2019, "Prescribing medicines in renal impairment: using the appropriate estimate of
// renal function to avoid the risk of adverse drug reactions"), which every POST /crcl answer carries.
const mhraCrClAdvice = "MHRA Drug Safety Update (October 2019): for most drugs and most adults of average build, " +
	"use eGFR to adjust doses; use this Cockcroft-Gault creatinine clearance instead for direct-acting oral " +
	"anticoagulants (DOACs), nephrotoxic drugs (such as vancomycin and amphotericin B), patients aged 75 or over, " +
	"extremes of muscle mass (BMI under 18 or over 40 kg/m²), and drugs largely renally excreted with a narrow " +
	"therapeutic index (such as digoxin and sotalol). Where the BNF gives no advice, consult the SmPC; reassess when " +
	"renal function changes quickly (acute kidney injury). Calculated with the actual body weight sent."

// weightActual is the only body weight the calculator uses: no UK source was found that says when to
// use ideal or adjusted body weight instead (SPS, "Calculating kidney function": "Controversy exists
// over which weight to use"), so the caller's weight is used as sent, and the answer says so.
const weightActual = "actual"

// crclResult is the response body of POST /crcl.
type crclResult struct {
	CrCl       float64 `json:"crcl_ml_min"` // mL/min, not per 1.73 m²; rounded half up to one decimal place
	Formula    string  `json:"formula"`
	WeightUsed string  `json:"weight_used"`
	Advice     string  `json:"advice"`
}

// crclRequest is a validated POST /crcl body.
type crclRequest struct {
	Sex        sex
	CreatUmolL float64
	Age        int
	WeightKg   float64
	PatientID  string
}

// compute applies Cockcroft-Gault, rounding as POST /egfr does (half up, one decimal place).
func (r crclRequest) compute() crclResult {
	crcl := cockcroftGault(r.CreatUmolL/umolPerMgDL, r.Age, r.WeightKg, r.Sex)
	return crclResult{CrCl: math.Round(crcl*10) / 10, Formula: formulaCG, WeightUsed: weightActual, Advice: mhraCrClAdvice}
}

// crclFields are the POST /crcl body's fields in the order problems are reported.
var crclFields = [...]string{"sex", "serum_creatinine_umol_l", "age", "weight_kg", "patient_id"}

// parseCrClRequest decodes and validates a POST /crcl body with the rules of POST /egfr's adult
// formulas, reporting every problem at once in the same order.
func parseCrClRequest(body []byte, observation bool) (crclRequest, []fieldError) {
	root, dups, trailing, jerr := readCalculatorBody(new(jsonReader), body)
	if jerr != nil {
		return crclRequest{}, []fieldError{*jerr}
	}
	var req crclRequest
	var errs [len(crclFields)]*fieldError
	var age float64
	req.Sex, errs[0] = parseSex(present(root, "sex"))
	req.CreatUmolL, errs[1] = parseCreatinine(present(root, "serum_creatinine_umol_l"), formulaCG, false)
	age, errs[2] = parseAge(present(root, "age"), formulaCG)
	req.Age = int(age)
	req.WeightKg, errs[3] = parseWeight(present(root, "weight_kg"))
	req.PatientID, errs[4] = parsePatientID(present(root, "patient_id"), observation)
	return req, bodyProblems(errs[:], root, crclFields[:], dups, trailing)
}

// parseWeight reads the required actual body weight in kg.
func parseWeight(v *jsonNode) (float64, *fieldError) {
	const name = "weight_kg"
	x, err := egfrNumber(v, name, "kg")
	switch {
	case err != nil:
		return 0, err
	case x < minWeight:
		return 0, badValue(loc(name), "greater_than_equal", fmt.Sprintf("Input should be at least %g kg (an adult's actual body weight).", minWeight))
	case x > maxWeight:
		return 0, badValue(loc(name), "less_than_equal", fmt.Sprintf("Input should be at most %g kg; a larger value is most likely in grams.", maxWeight))
	}
	return x, nil
}
