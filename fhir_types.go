package main

// The R4 element definitions the Patient validator (patient.go) checks against: Patient, its backbone
// elements and every datatype they or an extension value can hold, transcribed from the R4
// StructureDefinitions (reference/fhir.md sections 1-3).

// fhirOpenTypes are the R4 types allowed for Extension.value[x] (datatypes.html#open): all of them are
// supported, so no legal extension value is rejected for want of a definition.
const fhirOpenTypes = "base64Binary|boolean|canonical|code|date|dateTime|decimal|id|instant|integer|markdown|oid|" +
	"positiveInt|string|time|unsignedInt|uri|url|uuid|Address|Age|Annotation|Attachment|CodeableConcept|Coding|" +
	"ContactPoint|Count|Distance|Duration|HumanName|Identifier|Money|Period|Quantity|Range|Ratio|Reference|" +
	"SampledData|Signature|Timing|ContactDetail|Contributor|DataRequirement|Expression|ParameterDefinition|" +
	"RelatedArtifact|TriggerDefinition|UsageContext|Dosage|Meta"

// Required value sets used in more than one place.
const (
	fhirGenderCodes = "male|female|other|unknown"
	fhirTimeUnits   = "s|min|h|d|wk|mo|a"
	fhirComparators = "<|<=|>=|>"
	// fhirContactPointSystems is ContactPoint.system's binding; the index numbers telecoms by it.
	fhirContactPointSystems = "phone|fax|email|pager|url|sms|other"
)

// fhirElem defines one element of a complex type, as in the R4 StructureDefinitions.
type fhirElem struct {
	name    string // JSON name; a choice element ends in "[x]"
	typ     string // FHIR type; a choice lists its types "a|b"; "*" means fhirOpenTypes
	card    string // "0..1", "0..*", "1..1" or "1..*"
	binding string // codes of a required binding "a|b|c", or ""
}

// fhirQuantityElems is Quantity and its profiles (Age, Count, Distance, Duration, SimpleQuantity).
var fhirQuantityElems = []fhirElem{
	{"value", "decimal", "0..1", ""},
	{"comparator", "code", "0..1", fhirComparators},
	{"unit", "string", "0..1", ""},
	{"system", "uri", "0..1", ""},
	{"code", "code", "0..1", ""},
}

// fhirTypes is the read-only table of complex types: Patient, its backbone elements ("Patient.contact")
// and every datatype they or an extension value can hold. Every type also has the implicit elements
// id (string) and extension (Extension 0..*) unless it lists them itself; "Element" is a primitive's
// `_x` companion, which has only those two.
var fhirTypes = map[string][]fhirElem{
	"Patient": {
		{"id", "id", "0..1", ""},
		{"meta", "Meta", "0..1", ""},
		{"implicitRules", "uri", "0..1", ""},
		{"language", "code", "0..1", ""},
		{"text", "Narrative", "0..1", ""},
		{"contained", "Resource", "0..*", ""},
		{"extension", "Extension", "0..*", ""},
		{"identifier", "Identifier", "0..*", ""},
		{"active", "boolean", "0..1", ""},
		{"name", "HumanName", "0..*", ""},
		{"telecom", "ContactPoint", "0..*", ""},
		{"gender", "code", "0..1", fhirGenderCodes},
		{"birthDate", "date", "0..1", ""},
		{"deceased[x]", "boolean|dateTime", "0..1", ""},
		{"address", "Address", "0..*", ""},
		{"maritalStatus", "CodeableConcept", "0..1", ""},
		{"multipleBirth[x]", "boolean|integer", "0..1", ""},
		{"photo", "Attachment", "0..*", ""},
		{"contact", "Patient.contact", "0..*", ""},
		{"communication", "Patient.communication", "0..*", ""},
		{"generalPractitioner", "Reference", "0..*", ""},
		{"managingOrganization", "Reference", "0..1", ""},
		{"link", "Patient.link", "0..*", ""},
	},
	"Patient.contact": {
		{"relationship", "CodeableConcept", "0..*", ""},
		{"name", "HumanName", "0..1", ""},
		{"telecom", "ContactPoint", "0..*", ""},
		{"address", "Address", "0..1", ""},
		{"gender", "code", "0..1", fhirGenderCodes},
		{"organization", "Reference", "0..1", ""},
		{"period", "Period", "0..1", ""},
	},
	"Patient.communication": {
		{"language", "CodeableConcept", "1..1", ""},
		{"preferred", "boolean", "0..1", ""},
	},
	"Patient.link": {
		{"other", "Reference", "1..1", ""},
		{"type", "code", "1..1", "replaced-by|replaces|refer|seealso"},
	},
	"Element": {},
	"Extension": {
		{"url", "uri", "1..1", ""},
		{"value[x]", "*", "0..1", ""},
	},
	"Meta": {
		{"versionId", "id", "0..1", ""},
		{"lastUpdated", "instant", "0..1", ""},
		{"source", "uri", "0..1", ""},
		{"profile", "canonical", "0..*", ""},
		{"security", "Coding", "0..*", ""},
		{"tag", "Coding", "0..*", ""},
	},
	"Narrative": {
		{"status", "code", "1..1", "generated|extensions|additional|empty"},
		{"div", "xhtml", "1..1", ""},
	},
	"Identifier": {
		{"use", "code", "0..1", "usual|official|temp|secondary|old"},
		{"type", "CodeableConcept", "0..1", ""},
		{"system", "uri", "0..1", ""},
		{"value", "string", "0..1", ""},
		{"period", "Period", "0..1", ""},
		{"assigner", "Reference", "0..1", ""},
	},
	"HumanName": {
		{"use", "code", "0..1", "usual|official|temp|nickname|anonymous|old|maiden"},
		{"text", "string", "0..1", ""},
		{"family", "string", "0..1", ""},
		{"given", "string", "0..*", ""},
		{"prefix", "string", "0..*", ""},
		{"suffix", "string", "0..*", ""},
		{"period", "Period", "0..1", ""},
	},
	"ContactPoint": {
		{"system", "code", "0..1", fhirContactPointSystems},
		{"value", "string", "0..1", ""},
		{"use", "code", "0..1", "home|work|temp|old|mobile"},
		{"rank", "positiveInt", "0..1", ""},
		{"period", "Period", "0..1", ""},
	},
	"Address": {
		{"use", "code", "0..1", "home|work|temp|old|billing"},
		{"type", "code", "0..1", "postal|physical|both"},
		{"text", "string", "0..1", ""},
		{"line", "string", "0..*", ""},
		{"city", "string", "0..1", ""},
		{"district", "string", "0..1", ""},
		{"state", "string", "0..1", ""},
		{"postalCode", "string", "0..1", ""},
		{"country", "string", "0..1", ""},
		{"period", "Period", "0..1", ""},
	},
	"CodeableConcept": {
		{"coding", "Coding", "0..*", ""},
		{"text", "string", "0..1", ""},
	},
	"Coding": {
		{"system", "uri", "0..1", ""},
		{"version", "string", "0..1", ""},
		{"code", "code", "0..1", ""},
		{"display", "string", "0..1", ""},
		{"userSelected", "boolean", "0..1", ""},
	},
	"Period": {
		{"start", "dateTime", "0..1", ""},
		{"end", "dateTime", "0..1", ""},
	},
	"Reference": {
		{"reference", "string", "0..1", ""},
		{"type", "uri", "0..1", ""},
		{"identifier", "Identifier", "0..1", ""},
		{"display", "string", "0..1", ""},
	},
	"Attachment": {
		{"contentType", "code", "0..1", ""},
		{"language", "code", "0..1", ""},
		{"data", "base64Binary", "0..1", ""},
		{"url", "url", "0..1", ""},
		{"size", "unsignedInt", "0..1", ""},
		{"hash", "base64Binary", "0..1", ""},
		{"title", "string", "0..1", ""},
		{"creation", "dateTime", "0..1", ""},
	},
	// The remaining types are reachable only through Extension.value[x].
	"Quantity": fhirQuantityElems,
	"Age":      fhirQuantityElems,
	"Count":    fhirQuantityElems,
	"Distance": fhirQuantityElems,
	"Duration": fhirQuantityElems,
	"Money": {
		{"value", "decimal", "0..1", ""},
		{"currency", "code", "0..1", ""},
	},
	"Range": {
		{"low", "Quantity", "0..1", ""},
		{"high", "Quantity", "0..1", ""},
	},
	"Ratio": {
		{"numerator", "Quantity", "0..1", ""},
		{"denominator", "Quantity", "0..1", ""},
	},
	"Annotation": {
		{"author[x]", "Reference|string", "0..1", ""},
		{"time", "dateTime", "0..1", ""},
		{"text", "markdown", "1..1", ""},
	},
	"SampledData": {
		{"origin", "Quantity", "1..1", ""},
		{"period", "decimal", "1..1", ""},
		{"factor", "decimal", "0..1", ""},
		{"lowerLimit", "decimal", "0..1", ""},
		{"upperLimit", "decimal", "0..1", ""},
		{"dimensions", "positiveInt", "1..1", ""},
		{"data", "string", "0..1", ""},
	},
	"Signature": {
		{"type", "Coding", "1..*", ""},
		{"when", "instant", "1..1", ""},
		{"who", "Reference", "1..1", ""},
		{"onBehalfOf", "Reference", "0..1", ""},
		{"targetFormat", "code", "0..1", ""},
		{"sigFormat", "code", "0..1", ""},
		{"data", "base64Binary", "0..1", ""},
	},
	"Timing": {
		{"event", "dateTime", "0..*", ""},
		{"repeat", "Timing.repeat", "0..1", ""},
		{"code", "CodeableConcept", "0..1", ""},
	},
	"Timing.repeat": {
		{"bounds[x]", "Duration|Range|Period", "0..1", ""},
		{"count", "positiveInt", "0..1", ""},
		{"countMax", "positiveInt", "0..1", ""},
		{"duration", "decimal", "0..1", ""},
		{"durationMax", "decimal", "0..1", ""},
		{"durationUnit", "code", "0..1", fhirTimeUnits},
		{"frequency", "positiveInt", "0..1", ""},
		{"frequencyMax", "positiveInt", "0..1", ""},
		{"period", "decimal", "0..1", ""},
		{"periodMax", "decimal", "0..1", ""},
		{"periodUnit", "code", "0..1", fhirTimeUnits},
		{"dayOfWeek", "code", "0..*", "mon|tue|wed|thu|fri|sat|sun"},
		{"timeOfDay", "time", "0..*", ""},
		{"when", "code", "0..*", "MORN|MORN.early|MORN.late|NOON|AFT|AFT.early|AFT.late|EVE|EVE.early|EVE.late|" +
			"NIGHT|PHS|HS|WAKE|C|CM|CD|CV|AC|ACM|ACD|ACV|PC|PCM|PCD|PCV"},
		{"offset", "unsignedInt", "0..1", ""},
	},
	"ContactDetail": {
		{"name", "string", "0..1", ""},
		{"telecom", "ContactPoint", "0..*", ""},
	},
	"Contributor": {
		{"type", "code", "1..1", "author|editor|reviewer|endorser"},
		{"name", "string", "1..1", ""},
		{"contact", "ContactDetail", "0..*", ""},
	},
	"DataRequirement": {
		{"type", "code", "1..1", ""},
		{"profile", "canonical", "0..*", ""},
		{"subject[x]", "CodeableConcept|Reference", "0..1", ""},
		{"mustSupport", "string", "0..*", ""},
		{"codeFilter", "DataRequirement.codeFilter", "0..*", ""},
		{"dateFilter", "DataRequirement.dateFilter", "0..*", ""},
		{"limit", "positiveInt", "0..1", ""},
		{"sort", "DataRequirement.sort", "0..*", ""},
	},
	"DataRequirement.codeFilter": {
		{"path", "string", "0..1", ""},
		{"searchParam", "string", "0..1", ""},
		{"valueSet", "canonical", "0..1", ""},
		{"code", "Coding", "0..*", ""},
	},
	"DataRequirement.dateFilter": {
		{"path", "string", "0..1", ""},
		{"searchParam", "string", "0..1", ""},
		{"value[x]", "dateTime|Period|Duration", "0..1", ""},
	},
	"DataRequirement.sort": {
		{"path", "string", "1..1", ""},
		{"direction", "code", "1..1", "ascending|descending"},
	},
	"Expression": {
		{"description", "string", "0..1", ""},
		{"name", "id", "0..1", ""},
		{"language", "code", "1..1", ""},
		{"expression", "string", "0..1", ""},
		{"reference", "uri", "0..1", ""},
	},
	"ParameterDefinition": {
		{"name", "code", "0..1", ""},
		{"use", "code", "1..1", "in|out"},
		{"min", "integer", "0..1", ""},
		{"max", "string", "0..1", ""},
		{"documentation", "string", "0..1", ""},
		{"type", "code", "1..1", ""},
		{"profile", "canonical", "0..1", ""},
	},
	"RelatedArtifact": {
		{"type", "code", "1..1", "documentation|justification|citation|predecessor|successor|derived-from|depends-on|composed-of"},
		{"label", "string", "0..1", ""},
		{"display", "string", "0..1", ""},
		{"citation", "markdown", "0..1", ""},
		{"url", "url", "0..1", ""},
		{"document", "Attachment", "0..1", ""},
		{"resource", "canonical", "0..1", ""},
	},
	"TriggerDefinition": {
		{"type", "code", "1..1", "named-event|periodic|data-changed|data-added|data-modified|data-removed|data-accessed|data-access-ended"},
		{"name", "string", "0..1", ""},
		{"timing[x]", "Timing|Reference|date|dateTime", "0..1", ""},
		{"data", "DataRequirement", "0..*", ""},
		{"condition", "Expression", "0..1", ""},
	},
	"UsageContext": {
		{"code", "Coding", "1..1", ""},
		{"value[x]", "CodeableConcept|Quantity|Range|Reference", "1..1", ""},
	},
	"Dosage": {
		{"sequence", "integer", "0..1", ""},
		{"text", "string", "0..1", ""},
		{"additionalInstruction", "CodeableConcept", "0..*", ""},
		{"patientInstruction", "string", "0..1", ""},
		{"timing", "Timing", "0..1", ""},
		{"asNeeded[x]", "boolean|CodeableConcept", "0..1", ""},
		{"site", "CodeableConcept", "0..1", ""},
		{"route", "CodeableConcept", "0..1", ""},
		{"method", "CodeableConcept", "0..1", ""},
		{"doseAndRate", "Dosage.doseAndRate", "0..*", ""},
		{"maxDosePerPeriod", "Ratio", "0..1", ""},
		{"maxDosePerAdministration", "Quantity", "0..1", ""},
		{"maxDosePerLifetime", "Quantity", "0..1", ""},
	},
	"Dosage.doseAndRate": {
		{"type", "CodeableConcept", "0..1", ""},
		{"dose[x]", "Range|Quantity", "0..1", ""},
		{"rate[x]", "Ratio|Range|Quantity", "0..1", ""},
	},
}

// fhirImplicit are the elements every datatype and backbone element inherits from Element.
var fhirImplicit = []fhirElem{
	{"id", "string", "0..1", ""},
	{"extension", "Extension", "0..*", ""},
}
