package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
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
	if len(bytes.TrimSpace(body)) == 0 {
		return egfrRequest{}, []fieldError{badJSON([]string{"body"}, "json_invalid", "The request body is empty; send a JSON object.")}
	}
	if !utf8.Valid(body) {
		return egfrRequest{}, []fieldError{badJSON([]string{"body"}, "json_invalid", "The request body is not valid UTF-8.")}
	}
	raw, ok := scanEGFRObject(body)
	var structural []fieldError
	if !ok { // anything unusual: the full walk, which explains every problem
		raw, structural, ok = splitObject(body)
		if !ok {
			return egfrRequest{}, structural
		}
	}

	var byField [len(egfrFields)][]fieldError
	add := func(i int, e fieldError) { byField[i] = append(byField[i], e) }
	var req egfrRequest

	// sex (required)
	if v := raw[fieldSex]; v == nil {
		add(fieldSex, badValue(loc("sex"), "missing", "Field required."))
	} else if !isJSONString(v) {
		add(fieldSex, badJSON(loc("sex"), "string_type", "Input should be a string: \"male\" or \"female\"."))
	} else if jsonStringIs(v, string(male)) {
		req.Sex = male
	} else if jsonStringIs(v, string(female)) {
		req.Sex = female
	} else {
		add(fieldSex, badValue(loc("sex"), "literal_error", "Input should be \"male\" or \"female\" (lower case)."))
	}

	// serum_creatinine_umol_l (required)
	if v := raw[fieldCreatinine]; v == nil {
		add(fieldCreatinine, badValue(loc("serum_creatinine_umol_l"), "missing", "Field required."))
	} else if x, ok := jsonNumber(v); !ok {
		add(fieldCreatinine, badJSON(loc("serum_creatinine_umol_l"), "float_type", "Input should be a number (µmol/L)."))
	} else if math.IsInf(x, 0) {
		add(fieldCreatinine, badValue(loc("serum_creatinine_umol_l"), "finite_number", "Input should be a finite number (µmol/L)."))
	} else if x <= 0 {
		add(fieldCreatinine, badValue(loc("serum_creatinine_umol_l"), "greater_than_equal",
			fmt.Sprintf("Input should be a positive number of µmol/L, from %g to %g.", minCreatinine, maxCreatinine)))
	} else if x < minCreatinine {
		add(fieldCreatinine, badValue(loc("serum_creatinine_umol_l"), "greater_than_equal",
			fmt.Sprintf("Input should be at least %g µmol/L; %g looks like a value in mg/dL (mg/dL × 88.4 = µmol/L).", minCreatinine, x)))
	} else if x > maxCreatinine {
		add(fieldCreatinine, badValue(loc("serum_creatinine_umol_l"), "less_than_equal",
			fmt.Sprintf("Input should be at most %g µmol/L.", maxCreatinine)))
	} else {
		req.CreatUmolL = x
	}

	// age (required)
	if v := raw[fieldAge]; v == nil {
		add(fieldAge, badValue(loc("age"), "missing", "Field required."))
	} else if x, ok := jsonNumber(v); !ok {
		add(fieldAge, badJSON(loc("age"), "int_type", "Input should be a whole number of years."))
	} else if math.IsInf(x, 0) || x != math.Trunc(x) {
		add(fieldAge, badValue(loc("age"), "int_from_float", "Input should be a whole number of years, without a fractional part."))
	} else if x < minAge {
		add(fieldAge, badValue(loc("age"), "greater_than_equal",
			fmt.Sprintf("Input should be at least %d years: CKD-EPI is validated in adults only.", minAge)))
	} else if x > maxAge {
		add(fieldAge, badValue(loc("age"), "less_than_equal", fmt.Sprintf("Input should be at most %d years.", maxAge)))
	} else {
		req.Age = int(x)
	}

	// formula (optional)
	req.Formula = formula2021
	if v := raw[fieldFormula]; v != nil {
		if !isJSONString(v) {
			add(fieldFormula, badJSON(loc("formula"), "string_type", "Input should be a string: \"CKD-EPI 2021\" or \"CKD-EPI 2009\"."))
		} else if jsonStringIs(v, formula2009) {
			req.Formula = formula2009
		} else if !jsonStringIs(v, formula2021) {
			add(fieldFormula, badValue(loc("formula"), "literal_error", "Input should be \"CKD-EPI 2021\" or \"CKD-EPI 2009\"."))
		}
	}

	// serum_cystatin_c_mg_l (optional)
	if v := raw[fieldCystatin]; v != nil {
		if x, ok := jsonNumber(v); !ok {
			add(fieldCystatin, badJSON(loc("serum_cystatin_c_mg_l"), "float_type", "Input should be a number (mg/L)."))
		} else if math.IsInf(x, 0) {
			add(fieldCystatin, badValue(loc("serum_cystatin_c_mg_l"), "finite_number", "Input should be a finite number (mg/L)."))
		} else if x < minCystatinC {
			add(fieldCystatin, badValue(loc("serum_cystatin_c_mg_l"), "greater_than_equal", fmt.Sprintf("Input should be at least %g mg/L.", minCystatinC)))
		} else if x > maxCystatinC {
			add(fieldCystatin, badValue(loc("serum_cystatin_c_mg_l"), "less_than_equal", fmt.Sprintf("Input should be at most %g mg/L.", maxCystatinC)))
		} else if req.Formula == formula2009 {
			add(fieldCystatin, badValue(loc("serum_cystatin_c_mg_l"), "formula_mismatch",
				"Cystatin C is used only by the CKD-EPI 2021 creatinine-cystatin C equation; omit it, or omit \"formula\" (or send \"CKD-EPI 2021\")."))
		} else {
			req.CystatinC, req.HasCystatin = x, true
		}
	}

	var problems []fieldError
	for _, ps := range byField {
		problems = append(problems, ps...)
	}
	problems = append(problems, structural...)
	return req, problems
}

func loc(field string) []string { return []string{"body", field} }

// egfrRaw holds each field's raw JSON value by its index in egfrFields; nil means absent or null.
type egfrRaw [len(egfrFields)][]byte

// Indexes into egfrFields and egfrRaw.
const (
	fieldSex = iota
	fieldCreatinine
	fieldAge
	fieldFormula
	fieldCystatin
)

// scanEGFRObject is the fast path for the common case, allocating nothing: a JSON object whose keys
// are known, unescaped and unique, and whose values are numbers, unescaped strings or null. It gives
// up (ok false) on anything else, and parseEGFRRequest then takes the full walk, which must agree
// with it wherever it succeeds (FuzzEGFRFastPath checks).
func scanEGFRObject(b []byte) (raw egfrRaw, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return raw, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		i = skipSpace(b, i+1)
		return raw, i == len(b)
	}
	var seen [len(egfrFields)]bool
	for {
		key, j, ok := scanPlainString(b, i)
		if !ok {
			return raw, false
		}
		f := slices.Index(egfrFields[:], string(key))
		if f < 0 || seen[f] {
			return raw, false
		}
		seen[f] = true
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return raw, false
		}
		i = skipSpace(b, i+1)
		switch {
		case i >= len(b):
			return raw, false
		case b[i] == '"':
			_, j, ok = scanPlainString(b, i)
		case b[i] == 'n':
			j, ok = i+4, bytes.HasPrefix(b[i:], []byte("null"))
		default:
			j = scanNumber(b, i)
			ok = j > i
		}
		if !ok {
			return raw, false
		}
		if b[i] != 'n' {
			raw[f] = b[i:j]
		}
		i = skipSpace(b, j)
		if i >= len(b) {
			return raw, false
		}
		if b[i] == '}' {
			return raw, skipSpace(b, i+1) == len(b)
		}
		if b[i] != ',' {
			return raw, false
		}
		i = skipSpace(b, i+1)
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanPlainString reads a JSON string at b[i] without escapes or control characters, returning its
// contents and the index after the closing quote.
func scanPlainString(b []byte, i int) (s []byte, end int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// scanNumber returns the end of the JSON number at b[i] (RFC 8259 grammar), or i if there is none.
func scanNumber(b []byte, i int) int {
	j := i
	if j < len(b) && b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && b[j] >= '1' && b[j] <= '9':
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
	default:
		return i
	}
	if j < len(b) && b[j] == '.' {
		k := j + 1
		for k < len(b) && b[k] >= '0' && b[k] <= '9' {
			k++
		}
		if k == j+1 {
			return i
		}
		j = k
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		k := j + 1
		if k < len(b) && (b[k] == '+' || b[k] == '-') {
			k++
		}
		d := k
		for k < len(b) && b[k] >= '0' && b[k] <= '9' {
			k++
		}
		if k == d {
			return i
		}
		j = k
	}
	return j
}

// splitObject walks a JSON object's top level with encoding/json. It returns each known field's raw
// value, with JSON null treated as absent, and the structural problems: unknown and duplicate keys,
// and whatever stops the walk (malformed JSON, a non-object, a second value); ok is false when the
// body is unusable.
func splitObject(body []byte) (raw egfrRaw, problems []fieldError, ok bool) {
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
		return raw, malformed(err), false
	} else if tok != json.Delim('{') {
		return raw, []fieldError{badJSON(root, "model_type", "The request body should be a JSON object.")}, false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return raw, malformed(err), false
		}
		key := tok.(string) // inside an object, Token returns keys as strings
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return raw, malformed(err), false
		}
		f := slices.Index(egfrFields[:], key)
		switch {
		case seen[key]:
			problems = append(problems, badJSON([]string{"body", key}, "duplicate_key", "This key appears more than once; send it once."))
		case f < 0:
			problems = append(problems, badJSON([]string{"body", key}, "extra_forbidden",
				"Unknown field (field names are case-sensitive): expected one of "+strings.Join(egfrFields[:], ", ")+"."))
		case string(v) != "null":
			raw[f] = v
		}
		seen[key] = true
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return raw, malformed(err), false
	}
	if _, err := dec.Token(); err != io.EOF {
		problems = append(problems, badJSON(root, "json_invalid", "The request body has data after the JSON object; send exactly one object."))
	}
	return raw, problems, true
}

// isJSONString reports whether a raw JSON value is a string.
func isJSONString(v []byte) bool { return len(v) > 0 && v[0] == '"' }

// jsonStringIs reports whether the raw JSON string v has the value want, without copying it unless
// it has escapes.
func jsonStringIs(v []byte, want string) bool {
	if !bytes.Contains(v, []byte{'\\'}) {
		return string(v[1:len(v)-1]) == want
	}
	var s string
	return json.Unmarshal(v, &s) == nil && s == want
}

// jsonNumber reports the value of a raw JSON number; a number too large for float64 is ±Inf.
func jsonNumber(v []byte) (float64, bool) {
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
