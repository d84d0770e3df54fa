package main

// Calculator results as FHIR R4 Observations (POST /egfr and POST /crcl with Accept:
// application/fhir+json), coded with LOINC and UK SNOMED CT where a code exists for the equation. Every
// code and display below is cited beside it; where no code was found, the Observation says what it is
// in text only. observation_test.go validates every Observation against the official R4 JSON schema.

import (
	"fmt"
	"time"
)

// Code systems (FHIR R4 terminologies: loinc.html, snomedct.html, ucum.html).
const (
	loincSystem  = "http://loinc.org"
	snomedSystem = "http://snomed.info/sct"
	ucumSystem   = "http://unitsofmeasure.org"
)

// fhirInstant is the layout of FHIR instants and dateTimes this service writes (UTC, milliseconds).
const fhirInstant = "2006-01-02T15:04:05.000Z07:00"

// observation is an R4 Observation with the elements this service writes.
type observation struct {
	ResourceType      string                `json:"resourceType"`
	Status            string                `json:"status"`
	Category          []fhirCodeableConcept `json:"category"`
	Code              fhirCodeableConcept   `json:"code"`
	Subject           *fhirReference        `json:"subject,omitempty"`
	EffectiveDateTime string                `json:"effectiveDateTime"`
	ValueQuantity     fhirQuantity          `json:"valueQuantity"`
	Method            fhirCodeableConcept   `json:"method"`
	Note              []fhirAnnotation      `json:"note"`
}

// fhirReference, fhirQuantity and fhirAnnotation are the parts of those R4 types an Observation uses.
type (
	fhirReference struct {
		Reference string `json:"reference"`
	}
	fhirQuantity struct {
		Value  float64 `json:"value"`
		Unit   string  `json:"unit"`
		System string  `json:"system"`
		Code   string  `json:"code"`
	}
	fhirAnnotation struct {
		Text string `json:"text"`
	}
)

// equationCoding is how one equation's result is coded, and how its method is named.
type equationCoding struct {
	coding []fhirCoding // LOINC, then UK SNOMED CT; empty when no code exists
	text   string       // Observation.code.text
	method string       // Observation.method.text: the equation and its source
}

// LOINC and UK SNOMED CT codes, each with the source its code and display were read from.
var (
	// LOINC 98979-8, hl7ch/ch-lab-report@29c85782 input/fsh/examples/Observation/Observation_eGFR_CKD_EPI_2021.fsh
	// (and the LOINC knowledge base article "Choosing the Correct LOINC for Estimated Glomerular
	// Filtration Rate", D. Baorto, 2022-01-25).
	loincEGFRCr2021 = fhirCoding{System: loincSystem, Code: "98979-8",
		Display: "Glomerular filtration rate [Volume Rate/Area] in Serum, Plasma or Blood by Creatinine-based formula (CKD-EPI 2021)/1.73 sq M"}
	// LOINC 98980-6, the same two sources.
	loincEGFRCrCys2021 = fhirCoding{System: loincSystem, Code: "98980-6",
		Display: "Glomerular filtration rate [Volume Rate/Area] in Serum, Plasma or Blood by Creatinine and Cystatin C-based formula (CKD-EPI 2021)/1.73 sq M"}
	// LOINC 62238-1 (the CKD-EPI 2009 creatinine equation), hl7ch/ch-lab-report@29c85782
	// input/fsh/valuesets/ObservationCode_CKD_EPI_2009.fsh.
	loincEGFRCrCKDEPI = fhirCoding{System: loincSystem, Code: "62238-1",
		Display: "Glomerular filtration rate [Volume Rate/Area] in Serum, Plasma or Blood by Creatinine-based formula (CKD-EPI)/1.73 sq M"}
	// LOINC 50210-4, the one cystatin C-based eGFR code (not specific to an equation; the LOINC
	// article above: "LOINC does not have a specific code for reporting the exact equation used"),
	// zietzm/phenotype_standardization@92d1d95b omop_phenotypes/reduced_egfr/README.md (older display style).
	loincEGFRCys = fhirCoding{System: loincSystem, Code: "50210-4",
		Display: "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, Plasma or Blood by Cystatin-based formula"}
	// LOINC 50384-7 (any Schwartz creatinine formula), the same README and the LOINC article above.
	loincEGFRSchwartz = fhirCoding{System: loincSystem, Code: "50384-7",
		Display: "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, Plasma or Blood by Creatinine-based formula (Schwartz)"}
	// LOINC 35591-7, bvdh/dicom-terminology-in-fhir@cc69e5bc input/fsh/ValueSet-dicom-cid-10046-GFRMeasurement.fsh
	// (DICOM CID 10046, "Cockroft-Gault Formula estimation of GFR"); the display is LOINC's long common name.
	loincCrClCG = fhirCoding{System: loincSystem, Code: "35591-7", Display: "Creatinine renal clearance predicted by Cockcroft-Gault formula"}

	// UK SNOMED CT, opensafely/renal-short-data-report@1c1a5a66
	// codelists/user-ss808-estimated-glomerular-filtration-rate-egfr-recorded-tests.csv (OpenCodelists).
	snomedEGFRCrCKDEPI = fhirCoding{System: snomedSystem, Code: "1011481000000105",
		Display: "Estimated glomerular filtration rate using creatinine Chronic Kidney Disease Epidemiology Collaboration equation per 1.73 square metres"}
	snomedEGFRCysCKDEPI = fhirCoding{System: snomedSystem, Code: "1011491000000107",
		Display: "Estimated glomerular filtration rate using cystatin C Chronic Kidney Disease Epidemiology Collaboration equation per 1.73 square metres"}
	// UK SNOMED CT, opensafely/renal-short-data-report@acefdadf codelists/ukrr-creatinine-clearance-tests.csv
	// (UK Renal Registry list; the id's Verhoeff check digit is valid, so it is not a float-mangled id).
	snomedCrClCG = fhirCoding{System: snomedSystem, Code: "968191000000100", Display: "Estimated creatinine clearance using Cockcroft-Gault formula"}
)

// codingFor is the coding of each result formula. No UK SNOMED CT concept was found for the
// creatinine-cystatin C, CKiD U25 or Schwartz equations, and no LOINC code names CKiD U25 (50384-7
// means a Schwartz formula); those are coded as far as a code exists, and otherwise in text only.
func codingFor(formula string) equationCoding {
	switch formula {
	case formula2021:
		return equationCoding{[]fhirCoding{loincEGFRCr2021, snomedEGFRCrCKDEPI}, "eGFR (CKD-EPI 2021 creatinine)",
			"CKD-EPI 2021 creatinine equation (Inker et al., N Engl J Med 2021;385:1737-49)"}
	case formula2009:
		return equationCoding{[]fhirCoding{loincEGFRCrCKDEPI, snomedEGFRCrCKDEPI}, "eGFR (CKD-EPI 2009 creatinine)",
			"CKD-EPI 2009 creatinine equation without the ethnicity coefficient (Levey et al., Ann Intern Med 2009;150:604-12; NICE NG203)"}
	case formula2021CrCysC:
		return equationCoding{[]fhirCoding{loincEGFRCrCys2021}, "eGFR (CKD-EPI 2021 creatinine-cystatin C)",
			"CKD-EPI 2021 creatinine-cystatin C equation (Inker et al., N Engl J Med 2021;385:1737-49)"}
	case formula2012CysC:
		return equationCoding{[]fhirCoding{loincEGFRCys, snomedEGFRCysCKDEPI}, "eGFR (CKD-EPI 2012 cystatin C)",
			"CKD-EPI 2012 cystatin C equation (Inker et al., N Engl J Med 2012;367:20-29)"}
	case formulaU25Cr:
		return equationCoding{nil, "eGFR (CKiD U25 creatinine)",
			"CKiD U25 creatinine equation (Pierce et al., Kidney Int 2021;99:948-956)"}
	case formulaU25CysC:
		return equationCoding{[]fhirCoding{loincEGFRCys}, "eGFR (CKiD U25 cystatin C)",
			"CKiD U25 cystatin C equation (Pierce et al., Kidney Int 2021;99:948-956)"}
	case formulaU25Avg:
		return equationCoding{nil, "eGFR (CKiD U25 creatinine-cystatin C average)",
			"Average of the CKiD U25 creatinine and cystatin C equations (Pierce et al., Kidney Int 2021;99:948-956)"}
	case formulaSchwartz:
		return equationCoding{[]fhirCoding{loincEGFRSchwartz}, "eGFR (bedside Schwartz)",
			"Bedside Schwartz equation, 0.413 × height / creatinine (Schwartz et al., J Am Soc Nephrol 2009;20:629-637)"}
	case formulaCG:
		return equationCoding{[]fhirCoding{loincCrClCG, snomedCrClCG}, "Creatinine clearance (Cockcroft-Gault)",
			"Cockcroft-Gault equation with actual body weight (Cockcroft & Gault, Nephron 1976;16:31-41)"}
	}
	panic("no coding for formula " + formula) // every result formula is listed above (a test checks)
}

// newObservation builds a final laboratory Observation (R4 CodeSystem observation-category) of value
// (in the UCUM unit code, shown as unit), effective at; the handler sets its subject.
func newObservation(formula string, value float64, code, unit, note string, at time.Time) observation {
	c := codingFor(formula)
	laboratory := fhirCoding{System: "http://terminology.hl7.org/CodeSystem/observation-category", Code: "laboratory", Display: "Laboratory"}
	return observation{
		ResourceType:      "Observation",
		Status:            "final",
		Category:          []fhirCodeableConcept{{Coding: []fhirCoding{laboratory}}},
		Code:              fhirCodeableConcept{Coding: c.coding, Text: c.text},
		EffectiveDateTime: at.UTC().Format(fhirInstant),
		ValueQuantity:     fhirQuantity{Value: value, Unit: unit, System: ucumSystem, Code: code},
		Method:            fhirCodeableConcept{Text: c.method},
		Note:              []fhirAnnotation{{Text: note}},
	}
}

// egfrObservation is an eGFR result as an Observation: the value is egfr_ml_min_1_73m2 (one decimal
// place) in UCUM mL/min/{1.73_m2} (as in the R4 example observation-example-f205-egfr), and the note
// gives the whole number as UK laboratories report it and the KDIGO category.
func egfrObservation(res egfrResult, at time.Time) observation {
	category := "no KDIGO GFR category under 2 years"
	if res.Category != "" {
		category = "KDIGO GFR category " + string(res.Category)
	}
	note := fmt.Sprintf("Reported as %s mL/min/1.73 m² (the whole number, as UK laboratories report eGFR); %s. "+
		"Not valid in acute kidney injury or other non-steady states, in pregnancy, or at extremes of muscle mass.", res.Reported, category)
	return newObservation(res.Formula, res.EGFR, "mL/min/{1.73_m2}", "mL/min/1.73m2", note, at)
}

// crclObservation is a creatinine clearance as an Observation, in mL/min, with the MHRA advice as its note.
func crclObservation(res crclResult, at time.Time) observation {
	return newObservation(res.Formula, res.CrCl, "mL/min", "mL/min", res.Advice, at)
}
