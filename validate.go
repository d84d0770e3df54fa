package main

// POST /Patient/$validate: R4's Resource-validate operation at type level
// (hl7.fhir.r4.core@4.0.1 OperationDefinition-Resource-validate.json). The Patient is checked by the same
// validator as a create or update (patient.go), and nothing is stored. The answer is 200 whether or not
// the Patient is valid ("A 4xx or 5xx error means that the validation itself could not be performed",
// OperationDefinition.comment); this file's 400s are exactly those cases.

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
)

// fhirPatientProfile is the one profile this server validates against: base R4 Patient.
const fhirPatientProfile = "http://hl7.org/fhir/StructureDefinition/Patient"

// validateRequest is what $validate was asked: the Patient (a tree read by readFHIRJSON) and the mode.
type validateRequest struct {
	patient *jsonNode
	size    int    // the length of the body it came in
	mode    string // "" (general validation), "create" or "update"
}

// handlePatientValidate serves POST /Patient/$validate: the body is a Patient, or a Parameters holding
// it (resource) with optional mode and profile; mode and profile may also be URL parameters. 200 with
// every problem as an error issue, or one information issue when there is none. Prefer is ignored (an
// operation's result is its OperationOutcome).
func handlePatientValidate(log *slog.Logger, store patientStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := readBody(w, r, nil, maxFHIRBody, "application/fhir+json", "application/json")
		if !ok {
			return
		}
		req, issues := parseValidateRequest(body, r.URL.Query())
		if len(issues) > 0 {
			writeOutcome(w, http.StatusBadRequest, issues...)
			return
		}
		issues = validationOutcome(req)
		if req.mode == "" || issues[0].Severity != "information" { // no write to compare with the store, or one refused before it
			writeOutcome(w, http.StatusOK, issues...)
			return
		}
		self := "" // an update's own id (type-level $validate has no URL id) holds its number already
		if req.mode == "update" {
			self = req.patient.member("id").str()
		}
		nhs := nhsNumberOf(req.patient)
		holder, err := nhsNumberHolder(r.Context(), store, nhs, self)
		switch {
		case err != nil:
			writeStoreError(w, r, log, err, fhirIssue{}, fhirIssue{})
		case holder != "": // named, as $validate's callers may read Patients
			writeOutcome(w, http.StatusOK, fhirError("duplicate", "Patient.identifier", fmt.Sprintf(
				"The NHS number %s already belongs to Patient %q; a live Patient's NHS number belongs to no other (UK Core Patient.identifier:nhsNumber).", nhs, holder)))
		default:
			writeOutcome(w, http.StatusOK, issues...)
		}
	})
}

// validationOutcome validates req's Patient as its mode would and returns the issues of the answer:
// every problem, or one information issue (HAPI FHIR's wording) when there is none.
func validationOutcome(req validateRequest) []fhirIssue {
	_, issues, _ := checkPatient(req.patient, req.size, req.mode == "create")
	issues = append(issues, modeIssues(req.mode, req.patient)...)
	if len(issues) == 0 {
		return []fhirIssue{{Severity: "information", Code: "informational", Diagnostics: "No issues detected during validation"}}
	}
	return issues
}

// modeIssues adds what a mode checks beyond the Patient's own content. create ignores the id and
// server-owned meta, as POST /Patient does; update needs the id of the Patient to update, as PUT does
// (type-level $validate has no URL id, so the body's id stands for it).
//
// The store-wide rule of one live Patient per NHS number is checked by the handler, which has the
// store (nhsNumberHolder).
func modeIssues(mode string, patient *jsonNode) []fhirIssue {
	if mode == "update" && patient.member("id") == nil {
		return []fhirIssue{fhirError("required", "Patient.id",
			"Patient.id: mode update validates the Patient as PUT /Patient/{id} would, so it needs the id of the Patient to update.")}
	}
	return nil
}

// parseValidateRequest reads $validate's input from the body and the URL parameters mode and profile.
// Each parameter may be given once (all are 0..1), in either place. Any issue means validation cannot
// run (400).
func parseValidateRequest(body []byte, query url.Values) (validateRequest, []fhirIssue) {
	root, issues := readFHIRJSON(body)
	if len(issues) > 0 {
		return validateRequest{}, issues
	}
	params := map[string][]*jsonNode{}
	for _, name := range []string{"mode", "profile"} {
		for _, v := range query[name] {
			params[name] = append(params[name], &jsonNode{kind: jsonString, text: v})
		}
	}
	req := validateRequest{patient: root, size: len(body)}
	switch root.member("resourceType").str() {
	case "Patient":
	case "Parameters":
		issues = validateParameters(root, params)
		if len(issues) == 0 {
			req.patient = params["resource"][0]
		}
	default:
		return validateRequest{}, []fhirIssue{fhirError("structure", "",
			`The body must be a Patient, or a Parameters resource whose parameter "resource" holds one (R4 $validate).`)}
	}
	var modeProblems []fhirIssue
	req.mode, modeProblems = validateMode(params["mode"], params["profile"])
	return req, append(issues, modeProblems...)
}

// validateMode checks the mode and profile parameters (each given at most once) and returns the mode.
// Of R4's resource-validation-mode codes, create and update apply at type level; delete and profile
// name an existing Patient, which only instance-level $validate (POST /Patient/{id}/$validate, not
// offered) has. The only profile is base R4 Patient, with or without its version.
func validateMode(modes, profiles []*jsonNode) (string, []fhirIssue) {
	var issues []fhirIssue
	if len(modes) > 1 || len(profiles) > 1 {
		issues = append(issues, fhirError("structure", "", "mode and profile may each be given once (in the URL or in the Parameters body, not both)."))
	}
	mode := ""
	if len(modes) > 0 {
		switch mode = modes[0].text; mode {
		case "create", "update":
		case "delete", "profile":
			issues = append(issues, fhirError("not-supported", "", fmt.Sprintf(
				"mode %s validates against an existing Patient, which needs POST /Patient/{id}/$validate; this server offers $validate at type level, for modes create and update.", mode)))
		default:
			issues = append(issues, fhirError("code-invalid", "", fmt.Sprintf(
				"mode %q is not a validation mode; use create or update (or leave it out for general validation).", mode)))
		}
	}
	if len(profiles) > 0 && profiles[0].text != fhirPatientProfile && profiles[0].text != fhirPatientProfile+"|4.0.1" {
		issues = append(issues, fhirError("not-supported", "", fmt.Sprintf(
			"This server validates against the base R4 Patient (%s) only, not %q.", fhirPatientProfile, profiles[0].text)))
	}
	return mode, issues
}

// validateParameters reads a Parameters body into params (name -> values; resource is the Patient,
// mode and profile their value's string), after any URL parameters already there. Parameters may hold
// id and meta (ignored) and parameter; each parameter a name and the one value its name takes: resource
// a Patient, mode a valueCode, profile a valueUri (R4) or valueCanonical (R5). Anything else is refused.
func validateParameters(root *jsonNode, params map[string][]*jsonNode) []fhirIssue {
	var issues []fhirIssue
	bad := func(code, path, format string, args ...any) {
		issues = append(issues, fhirError(code, path, path+": "+fmt.Sprintf(format, args...)))
	}
	for _, k := range root.keys {
		if !slices.Contains([]string{"resourceType", "id", "meta", "parameter"}, k) {
			bad("structure", "Parameters."+k, "$validate reads only parameter here.")
		}
	}
	list := root.member("parameter")
	if list == nil || list.kind != jsonArray || len(list.items) == 0 {
		bad("required", "Parameters.parameter", `must be a non-empty array holding the "resource" to validate.`)
		return issues
	}
	resources := 0 // resource parameters, valid or not
	for i, part := range list.items {
		name, v, problem := validateParameter(fmt.Sprintf("Parameters.parameter[%d]", i), part)
		if name == "resource" {
			resources++
		}
		if problem != nil {
			issues = append(issues, *problem)
			continue
		}
		params[name] = append(params[name], v)
	}
	if resources != 1 {
		bad("required", "Parameters.parameter", `must hold exactly one "resource", the Patient to validate (%d given).`, resources)
	}
	return issues
}

// validateParameter reads the Parameters.parameter at path at: its name and value, or the problem.
func validateParameter(at string, part *jsonNode) (name string, value *jsonNode, problem *fhirIssue) {
	bad := func(code, path, format string, args ...any) (string, *jsonNode, *fhirIssue) {
		is := fhirError(code, path, path+": "+fmt.Sprintf(format, args...))
		return name, nil, &is // the name, once known, so the caller can count the parameter
	}
	if part.kind != jsonObject {
		return bad("structure", at, "must be a JSON object, not %s.", part.kind.kindName())
	}
	want := map[string]string{"resource": "resource", "mode": "valueCode", "profile": "valueUri"}
	name = part.member("name").str()
	if want[name] == "" {
		return bad("not-supported", at+".name", `must be "resource", "mode" or "profile", the inputs of $validate (case-sensitive).`)
	}
	wantKind := jsonString
	if name == "resource" {
		wantKind = jsonObject
	}
	for i, k := range part.keys {
		switch {
		case k == "name":
		case value == nil && (k == want[name] || name == "profile" && k == "valueCanonical"):
			if value = part.items[i]; value.kind != wantKind {
				return bad("structure", at+"."+k, "must be %s, not %s.", wantKind.kindName(), value.kind.kindName())
			}
		default:
			return bad("structure", at+"."+k, "a %s parameter holds only its name and %s.", name, want[name])
		}
	}
	switch {
	case value == nil:
		return bad("required", at, "a %s parameter needs %s.", name, want[name])
	case name == "resource" && value.member("resourceType").str() != "Patient":
		return bad("not-supported", at+".resource", `must be a Patient (resourceType "Patient"): this is /Patient/$validate.`)
	}
	return name, value, nil
}
