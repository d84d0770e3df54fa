package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
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

// fieldError is one problem with a request, in the shape FastAPI users know: loc names the field.
type fieldError struct {
	Loc    []string `json:"loc"`
	Msg    string   `json:"msg"`
	Type   string   `json:"type"`
	status int      // 400 for a body that is not the right JSON, 422 for a well-formed but invalid value
}

func badJSON(loc []string, typ, msg string) fieldError {
	return fieldError{Loc: loc, Msg: msg, Type: typ, status: 400}
}

func badValue(loc []string, typ, msg string) fieldError {
	return fieldError{Loc: loc, Msg: msg, Type: typ, status: 422}
}

// egfrFields are the body's fields in the order problems are reported.
var egfrFields = [...]string{"sex", "serum_creatinine_umol_l", "age", "formula", "serum_cystatin_c_mg_l"}

// parseEGFRRequest decodes and validates a POST /egfr body, reporting every problem at once in field
// order. encoding/json alone would accept `Sex` for `sex`, keep the last of duplicate keys and stop at
// the first type error, so the object is walked key by key.
func parseEGFRRequest(body []byte) (egfrRequest, []fieldError) {
	root := []string{"body"}
	if len(bytes.TrimSpace(body)) == 0 {
		return egfrRequest{}, []fieldError{badJSON(root, "json_invalid", "The request body is empty; send a JSON object.")}
	}
	if !utf8.Valid(body) {
		return egfrRequest{}, []fieldError{badJSON(root, "json_invalid", "The request body is not valid UTF-8.")}
	}
	raw, structural := splitObject(body)
	if raw == nil {
		return egfrRequest{}, structural
	}

	byField := map[string][]fieldError{}
	add := func(e fieldError) { byField[e.Loc[1]] = append(byField[e.Loc[1]], e) }
	var req egfrRequest

	// sex (required)
	if v, ok := raw["sex"]; !ok {
		add(badValue(loc("sex"), "missing", "Field required."))
	} else if s, ok := jsonString(v); !ok {
		add(badJSON(loc("sex"), "string_type", "Input should be a string: \"male\" or \"female\"."))
	} else if s != string(male) && s != string(female) {
		add(badValue(loc("sex"), "literal_error", "Input should be \"male\" or \"female\" (lower case)."))
	} else {
		req.Sex = sex(s)
	}

	// serum_creatinine_umol_l (required)
	if v, ok := raw["serum_creatinine_umol_l"]; !ok {
		add(badValue(loc("serum_creatinine_umol_l"), "missing", "Field required."))
	} else if x, ok := jsonNumber(v); !ok {
		add(badJSON(loc("serum_creatinine_umol_l"), "float_type", "Input should be a number (µmol/L)."))
	} else if math.IsInf(x, 0) {
		add(badValue(loc("serum_creatinine_umol_l"), "finite_number", "Input should be a finite number (µmol/L)."))
	} else if x <= 0 {
		add(badValue(loc("serum_creatinine_umol_l"), "greater_than_equal",
			fmt.Sprintf("Input should be a positive number of µmol/L, from %g to %g.", minCreatinine, maxCreatinine)))
	} else if x < minCreatinine {
		add(badValue(loc("serum_creatinine_umol_l"), "greater_than_equal",
			fmt.Sprintf("Input should be at least %g µmol/L; %g looks like a value in mg/dL (mg/dL × 88.4 = µmol/L).", minCreatinine, x)))
	} else if x > maxCreatinine {
		add(badValue(loc("serum_creatinine_umol_l"), "less_than_equal",
			fmt.Sprintf("Input should be at most %g µmol/L.", maxCreatinine)))
	} else {
		req.CreatUmolL = x
	}

	// age (required)
	if v, ok := raw["age"]; !ok {
		add(badValue(loc("age"), "missing", "Field required."))
	} else if x, ok := jsonNumber(v); !ok {
		add(badJSON(loc("age"), "int_type", "Input should be a whole number of years."))
	} else if math.IsInf(x, 0) || x != math.Trunc(x) {
		add(badValue(loc("age"), "int_from_float", "Input should be a whole number of years, without a fractional part."))
	} else if x < minAge {
		add(badValue(loc("age"), "greater_than_equal",
			fmt.Sprintf("Input should be at least %d years: CKD-EPI is validated in adults only.", minAge)))
	} else if x > maxAge {
		add(badValue(loc("age"), "less_than_equal", fmt.Sprintf("Input should be at most %d years.", maxAge)))
	} else {
		req.Age = int(x)
	}

	// formula (optional)
	req.Formula = formula2021
	if v, ok := raw["formula"]; ok {
		if s, ok := jsonString(v); !ok {
			add(badJSON(loc("formula"), "string_type", "Input should be a string: \"CKD-EPI 2021\" or \"CKD-EPI 2009\"."))
		} else if s != formula2021 && s != formula2009 {
			add(badValue(loc("formula"), "literal_error", "Input should be \"CKD-EPI 2021\" or \"CKD-EPI 2009\"."))
		} else {
			req.Formula = s
		}
	}

	// serum_cystatin_c_mg_l (optional)
	if v, ok := raw["serum_cystatin_c_mg_l"]; ok {
		if x, ok := jsonNumber(v); !ok {
			add(badJSON(loc("serum_cystatin_c_mg_l"), "float_type", "Input should be a number (mg/L)."))
		} else if math.IsInf(x, 0) {
			add(badValue(loc("serum_cystatin_c_mg_l"), "finite_number", "Input should be a finite number (mg/L)."))
		} else if x < minCystatinC {
			add(badValue(loc("serum_cystatin_c_mg_l"), "greater_than_equal", fmt.Sprintf("Input should be at least %g mg/L.", minCystatinC)))
		} else if x > maxCystatinC {
			add(badValue(loc("serum_cystatin_c_mg_l"), "less_than_equal", fmt.Sprintf("Input should be at most %g mg/L.", maxCystatinC)))
		} else if req.Formula == formula2009 {
			add(badValue(loc("serum_cystatin_c_mg_l"), "formula_mismatch",
				"Cystatin C is used only by the CKD-EPI 2021 creatinine-cystatin C equation; omit it, or omit \"formula\" (or send \"CKD-EPI 2021\")."))
		} else {
			req.CystatinC, req.HasCystatin = x, true
		}
	}

	var problems []fieldError
	for _, f := range egfrFields {
		problems = append(problems, byField[f]...)
	}
	problems = append(problems, structural...)
	return req, problems
}

func loc(field string) []string { return []string{"body", field} }

// splitObject walks a JSON object's top level. It returns each known field's raw value, with JSON null
// treated as absent, and the structural problems: unknown and duplicate keys, and whatever stops the
// walk (malformed JSON, a non-object, a second value). raw is nil when the body is unusable.
func splitObject(body []byte) (raw map[string]json.RawMessage, problems []fieldError) {
	root := []string{"body"}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	malformed := func(err error) []fieldError {
		msg := "The request body is not valid JSON."
		var se *json.SyntaxError
		if errors.As(err, &se) {
			msg = fmt.Sprintf("The request body is not valid JSON (at byte offset %d).", se.Offset)
		} else if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			msg = "The request body is not valid JSON: it ends too early."
		}
		return append(problems, badJSON(root, "json_invalid", msg))
	}
	if tok, err := dec.Token(); err != nil {
		return nil, malformed(err)
	} else if tok != json.Delim('{') {
		return nil, []fieldError{badJSON(root, "model_type", "The request body should be a JSON object.")}
	}
	raw = map[string]json.RawMessage{}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, malformed(err)
		}
		key := tok.(string) // inside an object, Token returns keys as strings
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, malformed(err)
		}
		switch {
		case seen[key]:
			problems = append(problems, badJSON([]string{"body", key}, "duplicate_key", "This key appears more than once; send it once."))
		case !isEGFRField(key):
			problems = append(problems, badJSON([]string{"body", key}, "extra_forbidden",
				"Unknown field (field names are case-sensitive): expected one of "+strings.Join(egfrFields[:], ", ")+"."))
		case string(v) != "null":
			raw[key] = v
		}
		seen[key] = true
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, malformed(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		problems = append(problems, badJSON(root, "json_invalid", "The request body has data after the JSON object; send exactly one object."))
	}
	return raw, problems
}

func isEGFRField(k string) bool {
	for _, f := range egfrFields {
		if k == f {
			return true
		}
	}
	return false
}

// jsonString reports the value of a raw JSON string.
func jsonString(v json.RawMessage) (string, bool) {
	if len(v) == 0 || v[0] != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", false
	}
	return s, true
}

// jsonNumber reports the value of a raw JSON number; a number too large for float64 is ±Inf.
func jsonNumber(v json.RawMessage) (float64, bool) {
	if len(v) == 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
		return 0, false
	}
	x, err := strconv.ParseFloat(string(v), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, false
	}
	return x, true
}

// problem is an RFC 9457 problem details body, with FastAPI-style errors and the request ID as extensions.
type problem struct {
	Type      string       `json:"type"`
	Title     string       `json:"title"`
	Status    int          `json:"status"`
	Detail    string       `json:"detail"`
	Errors    []fieldError `json:"errors,omitempty"`
	RequestID string       `json:"request_id"`
}
