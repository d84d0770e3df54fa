package main

import (
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
)

// searchDays returns the day number (days since 1970-01-01) of a YYYY-MM-DD date, as dateValue holds it.
func searchDays(t testing.TB, s string) int32 {
	t.Helper()
	d, err := time.Parse(time.DateOnly, s)
	if err != nil {
		t.Fatalf("searchDays(%q): %v", s, err)
	}
	return int32(d.Unix() / 86400)
}

// ms returns the Unix milliseconds of an RFC 3339 time, as dateValue holds them.
func ms(t testing.TB, s string) int64 {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("ms(%q): %v", s, err)
	}
	return v.UnixMilli()
}

// searchIssue builds the issue parsePatientSearch reports: no expression.
func searchIssue(code, diagnostics string) fhirIssue {
	return fhirIssue{Severity: "error", Code: code, Diagnostics: diagnostics}
}

func TestParsePatientSearch(t *testing.T) {
	day := func(s string) int64 { return int64(searchDays(t, s)) * msPerDay }
	dayEnd := func(s string) int64 { return day(s) + msPerDay - 1 }
	tests := []struct {
		name       string
		give       url.Values
		strict     bool
		want       patientQuery
		wantSelf   url.Values
		wantIssues []fhirIssue
	}{
		{
			name:     "none",
			give:     url.Values{},
			want:     patientQuery{Count: 20},
			wantSelf: url.Values{"_count": {"20"}},
		},
		{
			name:     "id",
			give:     url.Values{"_id": {"a1,b-2.x"}},
			want:     patientQuery{IDs: [][]string{{"a1", "b-2.x"}}, Count: 20},
			wantSelf: url.Values{"_id": {"a1,b-2.x"}, "_count": {"20"}},
		},
		{
			name: "identifierForms",
			give: url.Values{"identifier": {`https://fhir.nhs.uk/Id/nhs-number|9000000009,A1,|B2,urn:x|,s\|1|v\,2`}},
			want: patientQuery{Identifiers: [][]tokenValue{{
				{System: "https://fhir.nhs.uk/Id/nhs-number", Value: "9000000009"},
				{Value: "A1", AnySystem: true},
				{Value: "B2"},
				{System: "urn:x"},
				{System: "s|1", Value: "v,2"},
			}}, Count: 20},
			wantSelf: url.Values{"identifier": {`https://fhir.nhs.uk/Id/nhs-number|9000000009,A1,|B2,urn:x|,s\|1|v\,2`}, "_count": {"20"}},
		},
		{
			name: "genderForms",
			give: url.Values{"gender": {"male,http://hl7.org/fhir/administrative-gender|female,|other", "http://hl7.org/fhir/administrative-gender|"}},
			want: patientQuery{Genders: [][]string{{"male", "female", "other"}, {""}}, Count: 20},
			wantSelf: url.Values{"gender": {"male,http://hl7.org/fhir/administrative-gender|female,|other", "http://hl7.org/fhir/administrative-gender|"},
				"_count": {"20"}},
		},
		{
			name: "stringModifiers",
			give: url.Values{"family": {"NÚÑEZ"}, "given:exact": {"Zoë"}, "name:contains": {"Straße,Ann"}, "given": {"a", "b"}},
			want: patientQuery{Strings: []stringClause{
				{Param: "family", Values: []string{"nunez"}},
				{Param: "given", Values: []string{"a"}},
				{Param: "given", Values: []string{"b"}},
				{Param: "given", Modifier: "exact", Values: []string{"Zoë"}},
				{Param: "name", Modifier: "contains", Values: []string{"strasse", "ann"}},
			}, Count: 20},
			wantSelf: url.Values{"family": {"NÚÑEZ"}, "given:exact": {"Zoë"}, "name:contains": {"Straße,Ann"}, "given": {"a", "b"},
				"_count": {"20"}},
		},
		{
			name: "stringEscapes",
			give: url.Values{"family": {`a\,b,c\\,d\$e,f\|g,h\x,i\`}},
			want: patientQuery{Strings: []stringClause{
				{Param: "family", Values: []string{"a,b", `c\`, "d$e", "f|g", `h\x`, `i\`}},
			}, Count: 20},
			wantSelf: url.Values{"family": {`a\,b,c\\,d\$e,f\|g,h\x,i\`}, "_count": {"20"}},
		},
		{
			name: "birthdatePrefixes",
			give: url.Values{"birthdate": {"1974,eq1974-06,ne1974-06-15,gt1974,lt1974,ge1974,le1974,sa1974,eb1974,ap1974", "ge2000-02-29"}},
			want: patientQuery{BirthDates: [][]dateValue{{
				{Prefix: "eq", Start: day("1974-01-01"), End: dayEnd("1974-12-31")},
				{Prefix: "eq", Start: day("1974-06-01"), End: dayEnd("1974-06-30")},
				{Prefix: "ne", Start: day("1974-06-15"), End: dayEnd("1974-06-15")},
				{Prefix: "gt", Start: day("1974-01-01"), End: dayEnd("1974-12-31")},
				{Prefix: "lt", Start: day("1974-01-01"), End: dayEnd("1974-12-31")},
				{Prefix: "ge", Start: day("1974-01-01"), End: dayEnd("1974-12-31")},
				{Prefix: "le", Start: day("1974-01-01"), End: dayEnd("1974-12-31")},
				{Prefix: "sa", Start: day("1974-01-01"), End: dayEnd("1974-12-31")},
				{Prefix: "eb", Start: day("1974-01-01"), End: dayEnd("1974-12-31")},
				{Prefix: "ap", Start: day("1974-01-01"), End: dayEnd("1974-12-31")},
			}, {
				{Prefix: "ge", Start: day("2000-02-29"), End: dayEnd("2000-02-29")},
			}}, Count: 20},
			wantSelf: url.Values{"birthdate": {"1974,eq1974-06,ne1974-06-15,gt1974,lt1974,ge1974,le1974,sa1974,eb1974,ap1974", "ge2000-02-29"},
				"_count": {"20"}},
		},
		{
			name: "birthdateMonthEnds",
			give: url.Values{"birthdate": {"1900-02,2024-02,1969-12"}},
			want: patientQuery{BirthDates: [][]dateValue{{
				{Prefix: "eq", Start: day("1900-02-01"), End: dayEnd("1900-02-28")},
				{Prefix: "eq", Start: day("2024-02-01"), End: dayEnd("2024-02-29")},
				{Prefix: "eq", Start: day("1969-12-01"), End: dayEnd("1969-12-31")},
			}}, Count: 20},
			wantSelf: url.Values{"birthdate": {"1900-02,2024-02,1969-12"}, "_count": {"20"}},
		},
		{
			name:     "countAndOffset",
			give:     url.Values{"_count": {"5"}, "_offset": {"10"}},
			want:     patientQuery{Count: 5, Offset: 10},
			wantSelf: url.Values{"_count": {"5"}, "_offset": {"10"}},
		},
		{
			name:     "countZeroTotalOnly",
			give:     url.Values{"_count": {"0"}, "_offset": {"0"}},
			want:     patientQuery{Count: 0},
			wantSelf: url.Values{"_count": {"0"}},
		},
		{
			name:     "countCapped",
			give:     url.Values{"_count": {"101"}},
			want:     patientQuery{Count: 100},
			wantSelf: url.Values{"_count": {"100"}},
		},
		{
			name:     "countHugeCapped",
			give:     url.Values{"_count": {"99999999999999999999999"}},
			want:     patientQuery{Count: 100},
			wantSelf: url.Values{"_count": {"100"}},
		},
		{
			name:     "unknownIgnoredFormatSilent",
			give:     url.Values{"address-city": {"Leeds"}, "_include": {"Patient:organization"}, "_format": {"json"}, "family": {"x"}},
			want:     patientQuery{Strings: []stringClause{{Param: "family", Values: []string{"x"}}}, Count: 20},
			wantSelf: url.Values{"family": {"x"}, "_count": {"20"}},
		},
		{
			name:     "strictFormatStillSilent",
			give:     url.Values{"_format": {"json"}},
			strict:   true,
			want:     patientQuery{Count: 20},
			wantSelf: url.Values{"_count": {"20"}},
		},
		{
			name:   "strictUnknown",
			give:   url.Values{"address-city": {"Leeds"}, "family:text": {"x"}, "family": {"y"}},
			strict: true,
			wantIssues: []fhirIssue{
				searchIssue("not-supported", "address-city: unknown search parameter (Prefer: handling=strict); the supported parameters are "+searchParamNames()+"."),
				searchIssue("not-supported", "family:text: the modifier :text is not supported; family allows :missing, :exact, :contains."),
			},
		},
		{
			name: "unsupportedModifiers",
			give: url.Values{"family:not": {"a"}, "identifier:of-type": {"a"}, "birthdate:not": {"1974"}, "active:exact": {"true"},
				"given:text": {"a"}, "name:above": {"a"}, "_count:x": {"1"}, "organization:Practitioner": {"p"}, "phone:contains": {"1"},
				"general-practitioner:Patient": {"x"}, "_sort:asc": {"family"}},
			wantIssues: []fhirIssue{
				searchIssue("not-supported", "_count:x: the modifier :x is not supported; _count takes no modifiers."),
				searchIssue("not-supported", "_sort:asc: the modifier :asc is not supported; _sort takes no modifiers."),
				searchIssue("not-supported", "active:exact: the modifier :exact is not supported; active allows :missing, :not."),
				searchIssue("not-supported", "birthdate:not: the modifier :not is not supported; birthdate allows :missing."),
				searchIssue("not-supported", "family:not: the modifier :not is not supported; family allows :missing, :exact, :contains."),
				searchIssue("not-supported", "general-practitioner:Patient: the modifier :Patient is not supported; general-practitioner allows :missing, :identifier, :Organization, :Practitioner, :PractitionerRole."),
				searchIssue("not-supported", "given:text: the modifier :text is not supported; given allows :missing, :exact, :contains."),
				searchIssue("not-supported", "identifier:of-type: the modifier :of-type is not supported; identifier allows :missing, :not."),
				searchIssue("not-supported", "name:above: the modifier :above is not supported; name allows :missing, :exact, :contains."),
				searchIssue("not-supported", "organization:Practitioner: the modifier :Practitioner is not supported; organization allows :missing, :identifier, :Organization."),
				searchIssue("not-supported", "phone:contains: the modifier :contains is not supported; phone allows :missing, :not."),
			},
		},
		{
			name:   "chained",
			give:   url.Values{"general-practitioner.name": {"x"}, "organization:Organization.name": {"y"}, "family.x": {"z"}},
			strict: true,
			wantIssues: []fhirIssue{
				searchIssue("not-supported", "family.x: unknown search parameter (Prefer: handling=strict); the supported parameters are "+searchParamNames()+"."),
				searchIssue("not-supported", "general-practitioner.name: chained parameters are not supported; search general-practitioner or organization by reference or :identifier."),
				searchIssue("not-supported", "organization:Organization.name: chained parameters are not supported; search general-practitioner or organization by reference or :identifier."),
			},
		},
		{
			name: "missing",
			give: url.Values{"gender:missing": {"true"}, "birthdate:missing": {"false"}, "_id:missing": {"true"},
				"general-practitioner:missing": {"false"}, "address-postalcode:missing": {"true"}},
			want: patientQuery{Missing: []missingClause{{"_id", true}, {"address-postalcode", true}, {"birthdate", false},
				{"gender", true}, {"general-practitioner", false}}, Count: 20},
			wantSelf: url.Values{"gender:missing": {"true"}, "birthdate:missing": {"false"}, "_id:missing": {"true"},
				"general-practitioner:missing": {"false"}, "address-postalcode:missing": {"true"}, "_count": {"20"}},
		},
		{
			name: "badMissing",
			give: url.Values{"gender:missing": {"yes"}, "family:missing": {"true,false"}, "phone:missing": {"TRUE"}},
			wantIssues: []fhirIssue{
				searchIssue("value", `family:missing: "true,false" must be true or false.`),
				searchIssue("value", `gender:missing: "yes" must be true or false.`),
				searchIssue("value", `phone:missing: "TRUE" must be true or false.`),
			},
		},
		{
			name: "not",
			give: url.Values{"gender:not": {"male,female"}, "active:not": {"true"}, "identifier:not": {"urn:x|"}, "_id:not": {"a", "b"},
				"telecom:not": {"x@y"}},
			want: patientQuery{Not: []patientQuery{
				{IDs: [][]string{{"a"}}}, {IDs: [][]string{{"b"}}},
				{Active: [][]bool{{true}}},
				{Genders: [][]string{{"male", "female"}}},
				{Identifiers: [][]tokenValue{{{System: "urn:x"}}}},
				{Telecoms: []telecomClause{{Param: "telecom", Values: []telecomValue{{Phone: "x@y", Other: "x@y"}}}}},
			}, Count: 20},
			wantSelf: url.Values{"gender:not": {"male,female"}, "active:not": {"true"}, "identifier:not": {"urn:x|"}, "_id:not": {"a", "b"},
				"telecom:not": {"x@y"}, "_count": {"20"}},
		},
		{
			name: "badNot",
			give: url.Values{"gender:not": {"fish"}, "active:not": {"maybe"}},
			wantIssues: []fhirIssue{
				searchIssue("value", `active:not: "maybe" is not true or false.`),
				searchIssue("value", `gender:not: "fish" is not a gender code; use one of male, female, other, unknown.`),
			},
		},
		{
			name:     "active",
			give:     url.Values{"active": {"true,false", "false"}},
			want:     patientQuery{Active: [][]bool{{true, false}, {false}}, Count: 20},
			wantSelf: url.Values{"active": {"true,false", "false"}, "_count": {"20"}},
		},
		{
			name: "badActive",
			give: url.Values{"active": {"yes", "http://hl7.org/fhir/special-values|true", "True"}},
			wantIssues: []fhirIssue{
				searchIssue("value", `active: "yes" is not true or false.`),
				searchIssue("value", `active: "http://hl7.org/fhir/special-values|true" is not true or false.`),
				searchIssue("value", `active: "True" is not true or false.`),
			},
		},
		{
			name: "telecoms",
			give: url.Values{"phone": {"07700 900-123,+44 (113) 496.0000"}, "email": {"Jo.Smith@Example.ORG"}, "telecom": {`(0113) 496\,1`}},
			want: patientQuery{Telecoms: []telecomClause{
				{Param: "email", Values: []telecomValue{{Other: "jo.smith@example.org"}}},
				{Param: "phone", Values: []telecomValue{{Phone: "07700900123"}, {Phone: "+441134960000"}}},
				{Param: "telecom", Values: []telecomValue{{Phone: "0113496,1", Other: "(0113) 496,1"}}},
			}, Count: 20},
			wantSelf: url.Values{"phone": {"07700 900-123,+44 (113) 496.0000"}, "email": {"Jo.Smith@Example.ORG"}, "telecom": {`(0113) 496\,1`},
				"_count": {"20"}},
		},
		{
			name: "badTelecoms",
			give: url.Values{"phone": {"a|b", "- ()"}, "email": {"|x"}},
			wantIssues: []fhirIssue{
				searchIssue("value", `email: "|x" has a "|": a ContactPoint is searched by its value alone; escape a literal | as \|.`),
				searchIssue("value", `phone: "a|b" has a "|": a ContactPoint is searched by its value alone; escape a literal | as \|.`),
				searchIssue("value", `phone: "- ()" has nothing left to compare once spaces, -, (, ) and . are removed.`),
			},
		},
		{
			name: "addresses",
			give: url.Values{"address": {"Leeds,Wiśniewska St"}, "address-postalcode": {"ls1 6ae"}, "address-postalcode:exact": {"LS1 6AE"},
				"address:contains": {"YORK"}},
			want: patientQuery{Strings: []stringClause{
				{Param: "address", Values: []string{"leeds", "wisniewska st"}},
				{Param: "address-postalcode", Values: []string{"ls16ae"}},
				{Param: "address-postalcode", Modifier: "exact", Values: []string{"LS1 6AE"}},
				{Param: "address", Modifier: "contains", Values: []string{"york"}},
			}, Count: 20},
			wantSelf: url.Values{"address": {"Leeds,Wiśniewska St"}, "address-postalcode": {"ls1 6ae"}, "address-postalcode:exact": {"LS1 6AE"},
				"address:contains": {"YORK"}, "_count": {"20"}},
		},
		{
			name:       "postalcodeOnlySpaces",
			give:       url.Values{"address-postalcode": {"   "}},
			wantIssues: []fhirIssue{searchIssue("value", `address-postalcode: "   " has an empty value between commas.`)},
		},
		{
			name: "references",
			give: url.Values{
				"general-practitioner":                  {"Organization/o1,p1,https://fhir.example.org/R4/Practitioner/p2/_history/3,urn:uuid:0b1e"},
				"general-practitioner:identifier":       {"https://fhir.nhs.uk/Id/ods-organization-code|Y12345,A1"},
				"general-practitioner:PractitionerRole": {"r1"},
				"organization:Organization":             {"o2"},
			},
			want: patientQuery{References: []referenceClause{
				{Param: "general-practitioner", Values: []referenceValue{{Type: "Organization", ID: "o1"}, {ID: "p1"},
					{Base: "https://fhir.example.org/R4", Type: "Practitioner", ID: "p2"}, {URL: "urn:uuid:0b1e"}}},
				{Param: "general-practitioner", Values: []referenceValue{{Type: "PractitionerRole", ID: "r1"}}},
				{Param: "general-practitioner", Identifier: true, Values: []referenceValue{
					{Token: tokenValue{System: "https://fhir.nhs.uk/Id/ods-organization-code", Value: "Y12345"}},
					{Token: tokenValue{Value: "A1", AnySystem: true}}}},
				{Param: "organization", Values: []referenceValue{{Type: "Organization", ID: "o2"}}},
			}, Count: 20},
			wantSelf: url.Values{
				"general-practitioner":                  {"Organization/o1,p1,https://fhir.example.org/R4/Practitioner/p2/_history/3,urn:uuid:0b1e"},
				"general-practitioner:identifier":       {"https://fhir.nhs.uk/Id/ods-organization-code|Y12345,A1"},
				"general-practitioner:PractitionerRole": {"r1"},
				"organization:Organization":             {"o2"},
				"_count":                                {"20"},
			},
		},
		{
			name: "badReferences",
			give: url.Values{"organization": {"Practitioner/1,a/b/c,bad id,Organization/bad id"}, "general-practitioner:Practitioner": {"Practitioner/1"},
				"general-practitioner:identifier": {"a|b|c"}, "general-practitioner": {"Patient/1"}},
			wantIssues: []fhirIssue{
				searchIssue("value", `general-practitioner: "Patient/1" names a Patient; general-practitioner refers to Organization, Practitioner, PractitionerRole.`),
				searchIssue("value", `general-practitioner:Practitioner: "Practitioner/1" is not an id (with :Practitioner the value is the Practitioner's id).`),
				searchIssue("value", `general-practitioner:identifier: "a|b|c" has more than one "|"; escape a literal | as \|.`),
				searchIssue("value", `organization: "Practitioner/1" names a Practitioner; organization refers to Organization.`),
				searchIssue("value", `organization: "a/b/c" is not an id, [type]/[id] or an absolute URL.`),
				searchIssue("value", `organization: "bad id" is not an id, [type]/[id] or an absolute URL.`),
				searchIssue("value", `organization: "Organization/bad id" is not an id, [type]/[id] or an absolute URL.`),
			},
		},
		{
			name: "dateTimes",
			give: url.Values{"death-date": {"ge2010-10-10T10:10+01:00,2010,lt2010-10-10T10:10:10.5Z"},
				"_lastUpdated": {"gt2026-01-01T00:00:00.123Z", "le2026-01-01T10:00 01:00", "2026-01-01T10:00:00.1234-05:30"}},
			want: patientQuery{
				DeathDates: [][]dateValue{{
					{Prefix: "ge", Start: ms(t, "2010-10-10T09:10:00Z"), End: ms(t, "2010-10-10T09:11:00Z") - 1},
					{Prefix: "eq", Start: ms(t, "2010-01-01T00:00:00Z"), End: ms(t, "2011-01-01T00:00:00Z") - 1},
					{Prefix: "lt", Start: ms(t, "2010-10-10T10:10:10.5Z"), End: ms(t, "2010-10-10T10:10:10.6Z") - 1},
				}},
				LastUpdated: [][]dateValue{
					{{Prefix: "gt", Start: ms(t, "2026-01-01T00:00:00.123Z"), End: ms(t, "2026-01-01T00:00:00.123Z")}},
					{{Prefix: "le", Start: ms(t, "2026-01-01T09:00:00Z"), End: ms(t, "2026-01-01T09:01:00Z") - 1}},
					{{Prefix: "eq", Start: ms(t, "2026-01-01T15:30:00.123Z"), End: ms(t, "2026-01-01T15:30:00.123Z")}},
				},
				Count: 20},
			wantSelf: url.Values{"death-date": {"ge2010-10-10T10:10+01:00,2010,lt2010-10-10T10:10:10.5Z"},
				"_lastUpdated": {"gt2026-01-01T00:00:00.123Z", "le2026-01-01T10:00 01:00", "2026-01-01T10:00:00.1234-05:30"}, "_count": {"20"}},
		},
		{
			name: "badDateTimes",
			give: url.Values{"death-date": {"2010-10-10T10", "2010T10:00", "2010-10-10T24:00", "2010-10-10T10:00+15:00", "2010-10-10T10:00:00.",
				"2010-10-10 10:00", "xx2010"}},
			wantIssues: []fhirIssue{
				searchIssue("value", `death-date: "2010-10-10T10" is not a valid date or time; use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.sss]] with an optional Z or +hh:mm, optionally after a prefix.`),
				searchIssue("value", `death-date: "2010T10:00" is not a valid date or time; use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.sss]] with an optional Z or +hh:mm, optionally after a prefix.`),
				searchIssue("value", `death-date: "2010-10-10T24:00" is not a valid date or time; use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.sss]] with an optional Z or +hh:mm, optionally after a prefix.`),
				searchIssue("value", `death-date: "2010-10-10T10:00+15:00" is not a valid date or time; use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.sss]] with an optional Z or +hh:mm, optionally after a prefix.`),
				searchIssue("value", `death-date: "2010-10-10T10:00:00." is not a valid date or time; use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.sss]] with an optional Z or +hh:mm, optionally after a prefix.`),
				searchIssue("value", `death-date: "2010-10-10 10:00" is not a valid date or time; use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.sss]] with an optional Z or +hh:mm, optionally after a prefix.`),
				searchIssue("value", `death-date: "xx2010" has the unknown prefix "xx"; use one of eq, ne, gt, lt, ge, le, sa, eb, ap.`),
			},
		},
		{
			name: "resultParams",
			give: url.Values{"_sort": {"family,-birthdate", "_id"}, "_summary": {"false"}, "_total": {"none"},
				"_elements": {"name,birthDate", "deceased,name"}},
			want: patientQuery{Sort: []sortKey{{Param: "family"}, {Param: "birthdate", Desc: true}, {Param: "_id"}}, Count: 20, NoTotal: true,
				Elements: []string{"birthDate", "deceased", "name"}},
			wantSelf: url.Values{"_sort": {"family,-birthdate", "_id"}, "_summary": {"false"}, "_total": {"none"},
				"_elements": {"name,birthDate", "deceased,name"}, "_count": {"20"}},
		},
		{
			name:     "summaryCount",
			give:     url.Values{"_summary": {"count"}, "_count": {"50"}, "_total": {"accurate"}},
			want:     patientQuery{Count: 0},
			wantSelf: url.Values{"_summary": {"count"}, "_total": {"accurate"}, "_count": {"0"}},
		},
		{
			name: "badResultParams",
			give: url.Values{"_sort": {"name,family,-family,+given"}, "_summary": {"true"}, "_total": {"maybe"}, "_elements": {"deceasedBoolean,Name,resourceType"}},
			wantIssues: []fhirIssue{
				searchIssue("value", `_elements: "deceasedBoolean" is not a top-level element of Patient; list elements such as identifier,name,birthDate (a choice by its base name: deceased, multipleBirth).`),
				searchIssue("value", `_elements: "Name" is not a top-level element of Patient; list elements such as identifier,name,birthDate (a choice by its base name: deceased, multipleBirth).`),
				searchIssue("value", `_elements: "resourceType" is not a top-level element of Patient; list elements such as identifier,name,birthDate (a choice by its base name: deceased, multipleBirth).`),
				searchIssue("not-supported", `_sort: "name" is not a sort this server supports; use family, given, birthdate, _lastUpdated, _id, each optionally after - for descending order.`),
				searchIssue("value", `_sort: "-family" sorts by family a second time.`),
				searchIssue("not-supported", `_sort: "+given" is not a sort this server supports; use family, given, birthdate, _lastUpdated, _id, each optionally after - for descending order.`),
				searchIssue("not-supported", `_summary: "true" is not supported; use count (the total only) or _elements to choose the elements returned.`),
				searchIssue("value", `_total: "maybe" is not a _total value; use none, estimate or accurate.`),
			},
		},
		{
			name:       "sortWindow",
			give:       url.Values{"_sort": {"family"}, "_offset": {"9981"}},
			wantIssues: []fhirIssue{searchIssue("too-costly", "_offset: with _sort, _offset + _count may be at most 10000; narrow the search, or page it without _sort (in id order).")},
		},
		{
			name:     "sortWindowEdge",
			give:     url.Values{"_sort": {"family"}, "_offset": {"9900"}, "_count": {"100"}},
			want:     patientQuery{Sort: []sortKey{{Param: "family"}}, Count: 100, Offset: 9900},
			wantSelf: url.Values{"_sort": {"family"}, "_offset": {"9900"}, "_count": {"100"}},
		},
		{
			name:     "sortWindowCountOnly",
			give:     url.Values{"_sort": {"family"}, "_offset": {"99999999"}, "_summary": {"count"}},
			want:     patientQuery{Sort: []sortKey{{Param: "family"}}, Count: 0, Offset: 99999999},
			wantSelf: url.Values{"_sort": {"family"}, "_offset": {"99999999"}, "_summary": {"count"}, "_count": {"0"}},
		},
		{
			name: "resultParamsOnce",
			give: url.Values{"_summary": {"count", "count"}, "_total": {"none", "none"}},
			wantIssues: []fhirIssue{
				searchIssue("value", "_summary: the parameter may appear only once."),
				searchIssue("value", "_total: the parameter may appear only once."),
			},
		},
		{
			name: "emptyValues",
			give: url.Values{"family": {""}, "given": {"a,"}, "identifier": {"|"}, "gender": {","}, "_id": {""}, "birthdate": {""}},
			wantIssues: []fhirIssue{
				searchIssue("value", "_id: the value is empty; give a value or leave the parameter out."),
				searchIssue("value", "birthdate: the value is empty; give a value or leave the parameter out."),
				searchIssue("value", "family: the value is empty; give a value or leave the parameter out."),
				searchIssue("value", `gender: "" is empty.`),
				searchIssue("value", `gender: "" is empty.`),
				searchIssue("value", `given: "a," has an empty value between commas.`),
				searchIssue("value", `identifier: "|" has neither a system nor a code.`),
			},
		},
		{
			name: "badDates",
			give: url.Values{"birthdate": {"1974-13", "1974-02-30", "1974-02-29", "xx1974", "74", "1974-6", "1974-06-15T10:00:00Z",
				"1974-06-15T10:00", "0000", "ge", "EQ1974", "2024-02-29"}},
			wantIssues: []fhirIssue{
				searchIssue("value", `birthdate: "1974-13" is not a valid date; use YYYY, YYYY-MM or YYYY-MM-DD (a real calendar date), optionally after a prefix.`),
				searchIssue("value", `birthdate: "1974-02-30" is not a valid date; use YYYY, YYYY-MM or YYYY-MM-DD (a real calendar date), optionally after a prefix.`),
				searchIssue("value", `birthdate: "1974-02-29" is not a valid date; use YYYY, YYYY-MM or YYYY-MM-DD (a real calendar date), optionally after a prefix.`),
				searchIssue("value", `birthdate: "xx1974" has the unknown prefix "xx"; use one of eq, ne, gt, lt, ge, le, sa, eb, ap.`),
				searchIssue("value", `birthdate: "74" is not a valid date; use YYYY, YYYY-MM or YYYY-MM-DD (a real calendar date), optionally after a prefix.`),
				searchIssue("value", `birthdate: "1974-6" is not a valid date; use YYYY, YYYY-MM or YYYY-MM-DD (a real calendar date), optionally after a prefix.`),
				searchIssue("not-supported", `birthdate: "1974-06-15T10:00:00Z" has a time; birthdate is a date, so give YYYY, YYYY-MM or YYYY-MM-DD.`),
				searchIssue("value", `birthdate: "1974-06-15T10:00" is not a valid date; use YYYY, YYYY-MM or YYYY-MM-DD (a real calendar date), optionally after a prefix.`),
				searchIssue("value", `birthdate: "0000" is not a valid date; use YYYY, YYYY-MM or YYYY-MM-DD (a real calendar date), optionally after a prefix.`),
				searchIssue("value", `birthdate: "ge" is not a valid date; use YYYY, YYYY-MM or YYYY-MM-DD (a real calendar date), optionally after a prefix.`),
				searchIssue("value", `birthdate: "EQ1974" is not a valid date; use YYYY, YYYY-MM or YYYY-MM-DD (a real calendar date), optionally after a prefix.`),
			},
		},
		{
			name: "badTokens",
			give: url.Values{"gender": {"Male", "urn:x|male", "fish"}, "identifier": {"a|b|c"}, "_id": {"bad id,ok", strings.Repeat("x", 65)}},
			wantIssues: []fhirIssue{
				searchIssue("value", `_id: "bad id" is not a valid id (1 to 64 of A-Z a-z 0-9 - .).`),
				searchIssue("value", `_id: "`+strings.Repeat("x", 65)+`" is not a valid id (1 to 64 of A-Z a-z 0-9 - .).`),
				searchIssue("value", `gender: "Male" is not a gender code; use one of male, female, other, unknown.`),
				searchIssue("value", `gender: "urn:x|male" names the system "urn:x"; gender codes belong to http://hl7.org/fhir/administrative-gender.`),
				searchIssue("value", `gender: "fish" is not a gender code; use one of male, female, other, unknown.`),
				searchIssue("value", `identifier: "a|b|c" has more than one "|"; escape a literal | as \|.`),
			},
		},
		{
			name: "badCount",
			give: url.Values{"_count": {"abc"}},
			wantIssues: []fhirIssue{
				searchIssue("value", `_count: "abc" is not a non-negative whole number.`),
			},
		},
		{
			name:       "negativeCount",
			give:       url.Values{"_count": {"-1"}},
			wantIssues: []fhirIssue{searchIssue("value", `_count: "-1" is not a non-negative whole number.`)},
		},
		{
			name:       "fractionalCount",
			give:       url.Values{"_count": {"1.5"}},
			wantIssues: []fhirIssue{searchIssue("value", `_count: "1.5" is not a non-negative whole number.`)},
		},
		{
			name:       "plusCount",
			give:       url.Values{"_count": {"+5"}},
			wantIssues: []fhirIssue{searchIssue("value", `_count: "+5" is not a non-negative whole number.`)},
		},
		{
			name:       "emptyCount",
			give:       url.Values{"_count": {""}},
			wantIssues: []fhirIssue{searchIssue("value", "_count: the value is empty; give a value or leave the parameter out.")},
		},
		{
			name:       "repeatedCount",
			give:       url.Values{"_count": {"1", "2"}},
			wantIssues: []fhirIssue{searchIssue("value", "_count: the parameter may appear only once.")},
		},
		{
			name: "badOffset",
			give: url.Values{"_offset": {"-3"}, "family": {"x"}},
			wantIssues: []fhirIssue{
				searchIssue("value", `_offset: "-3" is not a non-negative whole number.`),
			},
		},
		{
			name:       "hugeOffset",
			give:       url.Values{"_offset": {"99999999999999999999999"}},
			wantIssues: []fhirIssue{searchIssue("value", `_offset: "99999999999999999999999" is not a non-negative whole number.`)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, self, issues := parsePatientSearch(tt.give, tt.strict)
			if diff := cmp.Diff(tt.wantIssues, issues); diff != "" {
				t.Errorf("parsePatientSearch(%v) issues mismatch (-want +got):\n%s", tt.give, diff)
			}
			if diff := cmp.Diff(tt.want, q); diff != "" {
				t.Errorf("parsePatientSearch(%v) query mismatch (-want +got):\n%s", tt.give, diff)
			}
			if diff := cmp.Diff(tt.wantSelf, self); diff != "" {
				t.Errorf("parsePatientSearch(%v) self mismatch (-want +got):\n%s", tt.give, diff)
			}
		})
	}
}

func TestParsePatientSearchSelfEncodes(t *testing.T) {
	// The self link is built with Encode, which sorts keys: the same search always gives the same link.
	_, self, issues := parsePatientSearch(url.Values{"given": {"b", "a"}, "family": {"x"}, "junk": {"1"}, "_offset": {"40"}}, false)
	if issues != nil {
		t.Fatalf("parsePatientSearch issues = %v, want none", issues)
	}
	if got, want := self.Encode(), "_count=20&_offset=40&family=x&given=b&given=a"; got != want {
		t.Errorf("self.Encode() = %q, want %q", got, want)
	}
}

func TestFoldString(t *testing.T) {
	tests := []struct {
		give, want string
	}{
		{"Zoë", "zoe"},
		{"ZOE", "zoe"},
		{"zoe", "zoe"},
		{"Núñez", "nunez"},
		{"Straße", "strasse"},
		{"Æbelø", "aebelo"},
		{"Œuvre", "oeuvre"},
		{"Łukasiewicz", "lukasiewicz"},
		{"Đorđe", "dorde"},
		{"Þór", "thor"},
		{"Yıldız", "yildiz"},
		{"İnce", "ince"},
		{"Åsa Ørsted", "asa orsted"},
		{"Ayşe Ţepeş Ș", "ayse tepes s"},
		{"ÀÁÂÃÄÅàáâãäåÇçÈÉÊËèéêëÌÍÎÏìíîïÑñÒÓÔÕÖØòóôõöøÙÚÛÜùúûüÝýÿ", "aaaaaaaaaaaacceeeeeeeeiiiiiiiinnoooooooooooouuuuuuuuyyy"},
		{"ĀāĂăĄąĆćĈĉĊċČčĎďĐđĒēĔĕĖėĘęĚěĜĝĞğĠġĢģĤĥĦħĨĩĪīĬĭĮįİıĲĳĴĵĶķĸ", "aaaaaaccccccccddddeeeeeeeeeegggggggghhhhiiiiiiiiiiijijjjkkk"},
		{"ĹĺĻļĽľĿŀŁłŃńŅņŇňŉŊŋŌōŎŏŐőŒœŔŕŖŗŘřŚśŜŝŞşŠšŢţŤťŦŧŨũŪūŬŭŮůŰűŲųŴŵŶŷŸŹźŻżŽžſ",
			"llllllllllnnnnnnnnnoooooooeoerrrrrrssssssssttttttuuuuuuuuuuuuwwyyyzzzzzzs"},
		{"Ze\u0301lie", "zelie"}, // decomposed accent
		{"ΣΩΚΡΆΤΗΣ Иван", "σωκράτησ иван"},
		{"×÷", "×÷"},
	}
	for _, tt := range tests {
		if got := foldString(tt.give); got != tt.want {
			t.Errorf("foldString(%q) = %q, want %q", tt.give, got, tt.want)
		}
	}
}

// searchFixtures are real Patient bodies (checked with parsePatient) for the matching tests, keyed by id.
func searchFixtures() map[string]string {
	return map[string]string{
		"p01": `{"resourceType":"Patient","id":"p01","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9000000009"},
			{"system":"urn:oid:1.2.3","value":"A1"}],"name":[{"family":"Núñez","given":["Zoë"]}],"gender":"female","birthDate":"1974"}`,
		"p02": `{"resourceType":"Patient","id":"p02","identifier":[{"system":"http://hospital.example/mrn","value":"MRN-2"}],
			"name":[{"family":"Straße","given":["zoë"]}],"gender":"female","birthDate":"1974-06"}`,
		"p03": `{"resourceType":"Patient","id":"p03","name":[{"family":"Adams","given":["ZOE"]}],"gender":"male","birthDate":"1974-06-15"}`,
		"p04": `{"resourceType":"Patient","id":"p04","identifier":[{"value":"NOSYS-1"}],
			"name":[{"prefix":["Dr"],"family":"Møller","given":["Åsa"],"suffix":["PhD"]}],"gender":"other","birthDate":"1974-06-15"}`,
		"p05": `{"resourceType":"Patient","id":"p05","identifier":[{"system":"http://hospital.example/mrn","value":"NOSYS-1"}],
			"name":[{"use":"official","family":"O'Brien","given":["Ann","Marie"]},{"use":"nickname","text":"Annie Brown"}],
			"gender":"female","birthDate":"1973-12-31"}`,
		"p06": `{"resourceType":"Patient","id":"p06","name":[{"family":"Łukasiewicz","given":["Jan"]}],"gender":"male","birthDate":"1974-01-01"}`,
		"p07": `{"resourceType":"Patient","id":"p07","name":[{"family":"Æbelø","given":["Þór"]}],"gender":"male","birthDate":"1975"}`,
		"p08": `{"resourceType":"Patient","id":"p08","name":[{"family":"Œuvre","given":["Đorđe"]}],"gender":"male","birthDate":"1974-12-31"}`,
		"p09": `{"resourceType":"Patient","id":"p09","name":[{"family":"Smith","given":["John","Zed"]}],"gender":"male","birthDate":"1974-07"}`,
		"p10": `{"resourceType":"Patient","id":"p10","name":[{"family":"Smithson","given":["Jane"]}],"gender":"female","birthDate":"1974-06-30"}`,
		"p11": `{"resourceType":"Patient","id":"p11","name":[{"family":"Smyth"}]}`,
		"p12": `{"resourceType":"Patient","id":"p12","name":[{"family":"Lee","given":["Li"]}],"gender":"unknown","birthDate":"1980-02-29"}`,
		"p13": `{"resourceType":"Patient","id":"p13","name":[{"family":"Ghost"}],"gender":"male"}`,
		"p14": `{"resourceType":"Patient","id":"p14","name":[{"family":"Before"}],"identifier":[{"system":"urn:x","value":"OLD"}]}`,
		"p15": `{"resourceType":"Patient","id":"p15","name":[{"family":"Yıldız","given":["Ayşe"]}],"gender":"female","birthDate":"1974-06-01"}`,
		"p16": `{"resourceType":"Patient","id":"p16","name":[{"text":"Ms Ann Marie Smith"}],"active":true}`,
	}
}

// newSearchFixtureIndex builds an index from searchFixtures, then deletes p13 and updates p14 to family
// "After" with a new identifier, as the store's OnCommit would.
func newSearchFixtureIndex(t *testing.T) *patientIndex {
	t.Helper()
	ix := newPatientIndex()
	for id, body := range searchFixtures() {
		if _, issues, status := parsePatient([]byte(body), false); status != 0 {
			t.Fatalf("fixture %s is not a valid Patient: %v", id, issues)
		}
		ix.update(patientVersion{ID: id, Version: 1, Body: []byte(body)})
	}
	ix.update(patientVersion{ID: "p13", Version: 2, Deleted: true})
	ix.update(patientVersion{ID: "p14", Version: 2, Body: []byte(
		`{"resourceType":"Patient","id":"p14","name":[{"family":"After"}],"identifier":[{"system":"urn:x","value":"NEW"}]}`)})
	return ix
}

func TestPatientIndexSearch(t *testing.T) {
	ix := newSearchFixtureIndex(t)
	all := []string{"p01", "p02", "p03", "p04", "p05", "p06", "p07", "p08", "p09", "p10", "p11", "p12", "p14", "p15", "p16"}
	tests := []struct {
		name string
		give string // query string
		want []string
	}{
		{"all", "", all},
		// string: default prefix, case- and accent-insensitive
		{"givenZo", "given=Zo", []string{"p01", "p02", "p03"}},
		{"givenZOE", "given=ZOE", []string{"p01", "p02", "p03"}},
		{"givenzoe", "given=zoe", []string{"p01", "p02", "p03"}},
		{"givenZoeAccent", "given=Zoë", []string{"p01", "p02", "p03"}},
		{"givenNotInFamily", "given=Adams", nil},
		{"familyNunez", "family=nunez", []string{"p01"}},
		{"familyNUNAccent", "family=NÚÑ", []string{"p01"}},
		{"familyStrasse", "family=strasse", []string{"p02"}},
		{"familyStraßeUpper", "family=STRAẞE", nil}, // capital sharp s (U+1E9E) is outside the table
		{"familyMoller", "family=moller", []string{"p04"}},
		{"familyLuk", "family=luk", []string{"p06"}},
		{"familyAebelo", "family=aebelo", []string{"p07"}},
		{"familyOeuvre", "family=oeuvre", []string{"p08"}},
		{"familyYildiz", "family=yildiz", []string{"p15"}},
		{"givenThor", "given=thor", []string{"p07"}},
		{"givenDorde", "given=dorde", []string{"p08"}},
		{"givenAyse", "given=ayse", []string{"p15"}},
		{"familySmiPrefix", "family=smi", []string{"p09", "p10"}},
		{"familyShortPrefix", "family=s", []string{"p02", "p09", "p10", "p11"}},
		{"familyWholeValueOnly", "family=brien", nil},
		{"familyPunctuation", "family=o'b", []string{"p05"}},
		{"familySmithOr", "family=smithson,smyth", []string{"p10", "p11"}},
		// :exact is case- and accent-sensitive and whole
		{"exactZoe", "given:exact=Zoë", []string{"p01"}},
		{"exactzoe", "given:exact=zoë", []string{"p02"}},
		{"exactZOE", "given:exact=ZOE", []string{"p03"}},
		{"exactNoPrefix", "family:exact=Smith", []string{"p09"}},
		{"exactNoFold", "family:exact=Nunez", nil},
		{"exactShort", "given:exact=Li", []string{"p12"}},
		// :contains
		{"containsAss", "family:contains=ASS", []string{"p02"}},
		{"containsIth", "family:contains=ith", []string{"p09", "p10"}},
		{"containsAccent", "name:contains=ÑEZ", []string{"p01"}},
		{"containsFolded", "name:contains=ñe", []string{"p01", "p10"}}, // Núñez, Jane
		{"containsText", "name:contains=marie smith", []string{"p16"}},
		// name covers family, given, prefix, suffix and text of any HumanName
		{"namePrefix", "name=dr", []string{"p04"}},
		{"nameSuffix", "name=phd", []string{"p04"}},
		{"nameGiven", "name=marie", []string{"p05"}},
		{"nameFamily", "name=obrien", nil},
		{"nameText", "name=annie", []string{"p05"}},
		{"nameTextStart", "name=ms ann", []string{"p16"}},
		{"nameAnyPart", "name=ann", []string{"p05"}},
		{"nameExactText", "name:exact=Annie Brown", []string{"p05"}},
		{"familyNotText", "family=annie", nil},
		// token: identifier
		{"identSystemValue", "identifier=https://fhir.nhs.uk/Id/nhs-number|9000000009", []string{"p01"}},
		{"identWrongSystem", "identifier=urn:oid:1.2.3|9000000009", nil},
		{"identValueAnySystem", "identifier=9000000009", []string{"p01"}},
		{"identValueTwoSystems", "identifier=NOSYS-1", []string{"p04", "p05"}},
		{"identNoSystem", "identifier=|NOSYS-1", []string{"p04"}},
		{"identNoSystemAbsent", "identifier=|9000000009", nil},
		{"identSystemOnly", "identifier=http://hospital.example/mrn|", []string{"p02", "p05"}},
		{"identSystemAndValue", "identifier=http://hospital.example/mrn|NOSYS-1", []string{"p05"}},
		{"identCaseSensitive", "identifier=mrn-2", nil},
		{"identOr", "identifier=MRN-2,A1", []string{"p01", "p02"}},
		{"identAnd", "identifier=A1&identifier=9000000009", []string{"p01"}},
		{"identAndDisjoint", "identifier=A1&identifier=MRN-2", nil},
		{"identSystemOnlyAndValue", "identifier=http://hospital.example/mrn|&identifier=NOSYS-1", []string{"p05"}},
		// token: gender, _id
		{"genderOr", "gender=male,other", []string{"p03", "p04", "p06", "p07", "p08", "p09"}},
		{"genderSystem", "gender=http://hl7.org/fhir/administrative-gender|unknown", []string{"p12"}},
		{"genderNoSystem", "gender=|unknown", []string{"p12"}},
		{"genderAny", "gender=http://hl7.org/fhir/administrative-gender|", []string{"p01", "p02", "p03", "p04", "p05", "p06", "p07", "p08", "p09", "p10", "p12", "p15"}},
		{"genderAnd", "gender=male&gender=female", nil},
		{"id", "_id=p05", []string{"p05"}},
		{"idOr", "_id=p09,p01,nope", []string{"p01", "p09"}},
		{"idAnd", "_id=p01,p02&_id=p02,p03", []string{"p02"}},
		{"idWithFilter", "_id=p01,p03&gender=male", []string{"p03"}},
		// AND across parameters and repeated parameters
		{"givenAnd", "given=ann&given=marie", []string{"p05"}},
		{"givenAndSeparateNames", "given=john&given=zed", []string{"p09"}},
		{"givenAndNone", "given=ann&given=zoe", nil},
		{"familyGender", "family=smi&gender=female", []string{"p10"}},
		{"givenBirthdate", "given=zo&birthdate=1974-06", []string{"p02", "p03"}},
		{"nameIdentifier", "name=zoe&identifier=http://hospital.example/mrn|", []string{"p02"}},
		{"exactAndContains", "family:exact=Smithson&given:contains=an", []string{"p10"}},
		// birthdate against stored year (p01 1974, p07 1975), month (p02 1974-06, p09 1974-07) and day
		{"birthYear", "birthdate=1974", []string{"p01", "p02", "p03", "p04", "p06", "p08", "p09", "p10", "p15"}},
		{"birthMonth", "birthdate=1974-06", []string{"p02", "p03", "p04", "p10", "p15"}},
		{"birthDay", "birthdate=1974-06-15", []string{"p03", "p04"}},
		{"birthLeapDay", "birthdate=1980-02-29", []string{"p12"}},
		{"birthNe", "birthdate=ne1974", []string{"p05", "p07", "p12"}},
		{"birthOr", "birthdate=1975,1973", []string{"p05", "p07"}},
		{"birthRange", "birthdate=ge1974-06-15&birthdate=le1974-06-30", []string{"p01", "p02", "p03", "p04", "p10"}},
		{"birthStrictRange", "birthdate=sa1974-06-14&birthdate=eb1974-07-01", []string{"p03", "p04", "p10"}},
		// deleted and updated versions
		{"deletedByName", "family=ghost", nil},
		{"deletedByID", "_id=p13", nil},
		{"updatedOldName", "family=before", nil},
		{"updatedNewName", "family=after", []string{"p14"}},
		{"updatedOldIdentifier", "identifier=OLD", nil},
		{"updatedNewIdentifier", "identifier=urn:x|NEW", []string{"p14"}},
		// :not includes the Patients with no value; a comma list is negated whole
		{"genderNot", "gender:not=male", []string{"p01", "p02", "p04", "p05", "p10", "p11", "p12", "p14", "p15", "p16"}},
		{"genderNotEither", "gender:not=male,female", []string{"p04", "p11", "p12", "p14", "p16"}},
		{"genderNotTwice", "gender:not=male&gender:not=female", []string{"p04", "p11", "p12", "p14", "p16"}},
		{"identifierNot", "identifier:not=NOSYS-1", []string{"p01", "p02", "p03", "p06", "p07", "p08", "p09", "p10", "p11", "p12", "p14", "p15", "p16"}},
		{"identifierNotSystem", "identifier:not=http://hospital.example/mrn|", []string{"p01", "p03", "p04", "p06", "p07", "p08", "p09", "p10", "p11", "p12", "p14", "p15", "p16"}},
		{"idNot", "_id:not=p01,p02,p03,p04,p05,p06,p07,p08,p09,p10", []string{"p11", "p12", "p14", "p15", "p16"}},
		{"idNotAndID", "_id=p01,p02&_id:not=p02", []string{"p01"}},
		{"notWithName", "family=smi&gender:not=female", []string{"p09"}},
		{"activeTrue", "active=true", []string{"p16"}},
		{"activeNot", "active:not=true&family=s", []string{"p02", "p09", "p10", "p11"}},
		// :missing
		{"genderMissing", "gender:missing=true", []string{"p11", "p14", "p16"}},
		{"genderPresent", "gender:missing=false", []string{"p01", "p02", "p03", "p04", "p05", "p06", "p07", "p08", "p09", "p10", "p12", "p15"}},
		{"birthdateMissing", "birthdate:missing=true", []string{"p11", "p14", "p16"}},
		{"identifierMissing", "identifier:missing=true", []string{"p03", "p06", "p07", "p08", "p09", "p10", "p11", "p12", "p15", "p16"}},
		{"familyMissing", "family:missing=true", []string{"p16"}},
		{"givenMissing", "given:missing=true", []string{"p11", "p14", "p16"}},
		{"nameMissing", "name:missing=true", nil},
		{"idMissing", "_id:missing=true", nil},
		{"lastUpdatedMissing", "_lastUpdated:missing=true", nil},
		{"activeMissing", "active:missing=false", []string{"p16"}},
		{"missingAndValue", "gender=male&gender:missing=true", nil}, // R4: "will always return an empty list"
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			total, ids := searchQuery(t, ix, tt.give+"&_count=100", "")
			if diff := cmp.Diff(tt.want, ids); diff != "" || total != len(tt.want) {
				t.Errorf("search(%q) = %d (-want +got):\n%s", tt.give, total, diff)
			}
		})
	}
}

// searchQuery parses query strictly and runs it on ix with base as the service base; it returns the
// total and the page's ids.
func searchQuery(t *testing.T, ix *patientIndex, query, base string) (int, []string) {
	t.Helper()
	params, err := url.ParseQuery(query)
	if err != nil {
		t.Fatal(err)
	}
	q, _, issues := parsePatientSearch(params, true)
	if issues != nil {
		t.Fatalf("parsePatientSearch(%q) issues: %v", query, issues)
	}
	q.Base = base
	return searchIDs(ix, q)
}

// contactFixtures are Patients for the telecom, address, reference, active and death-date tests (valid
// bodies, checked with parsePatient), keyed by id; the service base is contactBase.
func contactFixtures() map[string]string {
	return map[string]string{
		"c01": `{"resourceType":"Patient","active":true,"name":[{"family":"Smith"}],
			"telecom":[{"system":"phone","value":"07700 900123"},{"system":"email","value":"Jo.Smith@Example.org"}],
			"address":[{"line":["1 High St"],"city":"Leeds","district":"West Yorkshire","postalCode":"LS1 6AE","country":"GB"}],
			"generalPractitioner":[{"type":"Organization","identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"Y12345"}}],
			"managingOrganization":{"reference":"Organization/o1"}}`,
		"c02": `{"resourceType":"Patient","active":false,"telecom":[{"system":"sms","value":"07700-900-123"},{"system":"email","value":"a-b@x.org"}],
			"address":[{"line":["Flat 2","10 Park Row"],"city":"Bristol","postalCode":"BS1 4DJ"}],
			"generalPractitioner":[{"reference":"Practitioner/p1/_history/2"}],"deceasedDateTime":"2020-05-01T10:00:00+01:00"}`,
		"c03": `{"resourceType":"Patient","telecom":[{"system":"email","value":"ab@x.org"},{"system":"fax","value":"(0113) 496 0000"}],
			"address":[{"text":"Tŷ Newydd, Llanfair","postalCode":"ls16 5aa"}],
			"generalPractitioner":[{"reference":"https://fhir.example.nhs.uk/R4/Organization/o1"}],"deceasedBoolean":true}`,
		"c04": `{"resourceType":"Patient","address":[{"city":"Zürich","state":"ZH","country":"CH"}],
			"generalPractitioner":[{"reference":"Organization/o1","identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"A1"}}],
			"managingOrganization":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"X26"}},"deceasedDateTime":"2020"}`,
		"c05": `{"resourceType":"Patient"}`,
		"c06": `{"resourceType":"Patient","active":true,"telecom":[{"system":"url","value":"https://x.example/A"},{"system":"phone","value":"+44 113 496 0000"}],
			"generalPractitioner":[{"reference":"http://other.example/fhir/Organization/o1"},{"reference":"urn:uuid:0b1e"}],
			"deceasedDateTime":"2021-01-31","address":[{"use":"old"}]}`,
	}
}

// contactBase is the base URL the contact tests search under.
const contactBase = "https://fhir.example.nhs.uk/R4"

// newContactIndex indexes contactFixtures, each version 1 last updated on 1 January 2026 at i hours.
func newContactIndex(t *testing.T) *patientIndex {
	t.Helper()
	ix := newPatientIndex()
	for id, body := range contactFixtures() {
		if _, issues, status := parsePatient([]byte(body), false); status != 0 {
			t.Fatalf("fixture %s is not a valid Patient: %v", id, issues)
		}
		hour, _ := strconv.Atoi(id[1:])
		ix.update(patientVersion{ID: id, Version: 1, Body: []byte(body), LastUpdated: time.Date(2026, 1, 1, hour, 0, 0, 0, time.UTC)})
	}
	return ix
}

func TestPatientIndexSearchContacts(t *testing.T) {
	ix := newContactIndex(t)
	all := []string{"c01", "c02", "c03", "c04", "c05", "c06"}
	tests := []struct {
		name string
		give string // query string
		want []string
	}{
		// phone, email, telecom: tokens on ContactPoint.value, normalised by system
		{"phone", "phone=07700900123", []string{"c01"}},
		{"phoneSeparators", "phone=(07700) 900.123", []string{"c01"}},
		{"phoneNotSMS", "phone=07700 900 124", nil},
		{"phoneInternational", "phone=%2B441134960000", []string{"c06"}},
		{"phoneNotPartial", "phone=07700", nil},
		{"telecomAnySystem", "telecom=07700900123", []string{"c01", "c02"}},
		{"telecomFax", "telecom=01134960000", []string{"c03"}},
		{"phoneNotFax", "phone=01134960000", nil},
		{"telecomURL", "telecom=https://x.example/a", []string{"c06"}},
		{"emailCase", "email=jo.smith@EXAMPLE.org", []string{"c01"}},
		{"emailPunctuationKept", "email=ab@x.org", []string{"c03"}},
		{"emailHyphen", "email=a-b@x.org", []string{"c02"}},
		{"emailNotPhone", "email=07700900123", nil},
		{"emailOr", "email=ab@x.org,a-b@x.org", []string{"c02", "c03"}},
		{"phoneNot", "phone:not=07700900123", []string{"c02", "c03", "c04", "c05", "c06"}},
		{"phoneMissing", "phone:missing=true", []string{"c02", "c03", "c04", "c05"}},
		{"emailMissing", "email:missing=false", []string{"c01", "c02", "c03"}},
		{"telecomMissing", "telecom:missing=true", []string{"c04", "c05"}},
		// address: any string part, folded, prefix
		{"addressCity", "address=leeds", []string{"c01"}},
		{"addressLine", "address=10 park", []string{"c02"}},
		{"addressLineStart", "address=park", nil},
		{"addressDistrict", "address=west york", []string{"c01"}},
		{"addressText", "address=ty newydd", []string{"c03"}},
		{"addressInternedAccent", "address=zurich", []string{"c04"}},
		{"addressState", "address=zh", []string{"c04"}},
		{"addressCountry", "address=gb", []string{"c01"}},
		{"addressPostcode", "address=bs1", []string{"c02"}},
		{"addressExact", "address:exact=Zürich", []string{"c04"}},
		{"addressExactCase", "address:exact=zürich", nil},
		{"addressContains", "address:contains=high", []string{"c01"}},
		{"addressContainsInterned", "address:contains=rich", []string{"c04"}},
		{"addressMissing", "address:missing=true", []string{"c05", "c06"}}, // c06's address has no string part
		// address-postalcode: folded, whitespace ignored, prefix
		{"postcodeSpaced", "address-postalcode=LS1 6AE", []string{"c01"}},
		{"postcodeUnspaced", "address-postalcode=ls16ae", []string{"c01"}},
		{"postcodePrefix", "address-postalcode=LS1", []string{"c01", "c03"}},
		{"postcodeShort", "address-postalcode=l", []string{"c01", "c03"}},
		{"postcodeExact", "address-postalcode:exact=LS1 6AE", []string{"c01"}},
		{"postcodeExactNoFold", "address-postalcode:exact=LS16AE", nil},
		{"postcodeContains", "address-postalcode:contains=4d", []string{"c02"}},
		{"postcodeNotCity", "address-postalcode=leeds", nil},
		{"postcodeMissing", "address-postalcode:missing=true", []string{"c04", "c05", "c06"}},
		// general-practitioner and organization: references, local or on the base, and :identifier
		{"gpID", "general-practitioner=o1", []string{"c03", "c04"}},
		{"gpTypeID", "general-practitioner=Organization/o1", []string{"c03", "c04"}},
		{"gpOnBase", "general-practitioner=" + contactBase + "/Organization/o1", []string{"c03", "c04"}},
		{"gpOtherServer", "general-practitioner=http://other.example/fhir/Organization/o1", []string{"c06"}},
		{"gpTypeModifier", "general-practitioner:Organization=o1", []string{"c03", "c04"}},
		{"gpWrongType", "general-practitioner:PractitionerRole=o1", nil},
		{"gpVersioned", "general-practitioner=Practitioner/p1", []string{"c02"}},
		{"gpURN", "general-practitioner=urn:uuid:0b1e", []string{"c06"}},
		{"gpIdentifierODS", "general-practitioner:identifier=https://fhir.nhs.uk/Id/ods-organization-code|Y12345", []string{"c01"}},
		{"gpIdentifierValue", "general-practitioner:identifier=A1", []string{"c04"}},
		{"gpIdentifierSystem", "general-practitioner:identifier=https://fhir.nhs.uk/Id/ods-organization-code|", []string{"c01", "c04"}},
		{"gpIdentifierCase", "general-practitioner:identifier=y12345", nil},
		{"gpIdentifierNotOrg", "general-practitioner:identifier=X26", nil},
		{"gpMissing", "general-practitioner:missing=true", []string{"c05"}},
		{"orgID", "organization=o1", []string{"c01"}},
		{"orgIdentifier", "organization:identifier=https://fhir.nhs.uk/Id/ods-organization-code|X26", []string{"c04"}},
		{"orgMissing", "organization:missing=false", []string{"c01", "c04"}},
		// active
		{"active", "active=true", []string{"c01", "c06"}},
		{"inactive", "active=false", []string{"c02"}},
		{"activeEither", "active=true,false", []string{"c01", "c02", "c06"}},
		{"activeNotFalse", "active:not=false", []string{"c01", "c03", "c04", "c05", "c06"}},
		// death-date: deceasedDateTime as a range; deceasedBoolean never matches
		{"deathDay", "death-date=2020-05-01", []string{"c02"}},
		{"deathYear", "death-date=2020", []string{"c02", "c04"}},
		{"deathInstantZone", "death-date=2020-05-01T09:00:00Z", []string{"c02"}},
		{"deathInstantOther", "death-date=2020-05-01T10:00:00Z", nil},
		{"deathYearContainsNotDay", "death-date=2020-05", []string{"c02"}}, // a stored year is wider than a month
		{"deathAfter", "death-date=gt2020-12-31", []string{"c06"}},         // a stored 2020 ends with 31 December, not after it
		{"deathBefore", "death-date=lt2020-05-01T09:00Z", []string{"c04"}},
		{"deathStartsAfter", "death-date=sa2020", []string{"c06"}},
		{"deathMissing", "death-date:missing=true", []string{"c01", "c03", "c05"}},
		// _lastUpdated: an instant; the value's precision sets the range
		{"updatedDay", "_lastUpdated=2026-01-01", all},
		{"updatedHour", "_lastUpdated=ge2026-01-01T03:00Z&_lastUpdated=lt2026-01-01T05:00Z", []string{"c03", "c04"}},
		{"updatedMinuteZone", "_lastUpdated=2026-01-01T07:00+01:00", []string{"c06"}},
		{"updatedAfterSecond", "_lastUpdated=gt2026-01-01T06:00:00Z", nil},
		{"updatedSinceYear", "_lastUpdated=gt2025", all},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			total, ids := searchQuery(t, ix, tt.give+"&_count=100", contactBase)
			if diff := cmp.Diff(tt.want, ids); diff != "" || total != len(tt.want) {
				t.Errorf("search(%q) = %d (-want +got):\n%s", tt.give, total, diff)
			}
		})
	}
}

// TestPatientIndexSort checks _sort: the lowest of a repeating value ascending and the highest
// descending, folded strings, partial birthDates by the start (ascending) or end (descending) of their
// range, Patients without a value last either way, ties broken by the next key and then the id.
func TestPatientIndexSort(t *testing.T) {
	ix := newPatientIndex()
	for hour, p := range []struct{ id, fields string }{
		{"b", `"name":[{"family":"brown","given":["amy","Xena"]}],"birthDate":"1980-06-15"`},
		{"c", `"name":[{"family":"Évans","given":["Bob"]}],"birthDate":"1979-12"`},
		{"a", `"name":[{"family":"Brown","given":["Zed"]},{"family":"Adams"}],"birthDate":"1980"`},
		{"e", `"name":[{"family":"Cole","given":["Ann"]}],"birthDate":"1980-06"`},
		{"d", `"gender":"male"`},
		{"f", `"name":[{"family":"Adams","given":["Carl"]}],"birthDate":"1980-01-01"`},
	} {
		ix.update(patientVersion{ID: p.id, Version: 1, Body: []byte(`{"resourceType":"Patient",` + p.fields + `}`),
			LastUpdated: time.Date(2026, 1, 1, hour, 0, 0, 0, time.UTC)})
	}
	tests := []struct {
		give      string
		wantTotal int
		want      []string
	}{
		{"_sort=family", 6, []string{"a", "f", "b", "e", "c", "d"}},
		{"_sort=-family", 6, []string{"c", "e", "a", "b", "f", "d"}},
		{"_sort=given", 6, []string{"b", "e", "c", "f", "a", "d"}},
		{"_sort=-given", 6, []string{"a", "b", "f", "c", "e", "d"}},
		{"_sort=birthdate", 6, []string{"c", "a", "f", "e", "b", "d"}},
		{"_sort=-birthdate", 6, []string{"a", "e", "b", "f", "c", "d"}},
		{"_sort=_lastUpdated", 6, []string{"b", "c", "a", "e", "d", "f"}},
		{"_sort=-_lastUpdated", 6, []string{"f", "d", "e", "a", "c", "b"}},
		{"_sort=family,given", 6, []string{"f", "a", "b", "e", "c", "d"}},
		{"_sort=family&_sort=-given", 6, []string{"a", "f", "b", "e", "c", "d"}},
		{"_sort=-_id", 6, []string{"f", "e", "d", "c", "b", "a"}},
		{"_sort=family&_count=2&_offset=2", 6, []string{"b", "e"}},
		{"_sort=family&_count=2&_offset=5", 6, []string{"d"}},
		{"_sort=family&_count=2&_offset=6", 6, nil},
		{"_sort=family&_count=0", 6, nil},
		{"_sort=-given&family=b", 2, []string{"a", "b"}},        // candidates from the name postings
		{"_sort=given&family=b", 2, []string{"b", "a"}},         // ...
		{"_sort=given&given:contains=e", 2, []string{"b", "a"}}, // a scan; b sorts by amy, its lowest given name
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			total, ids := searchQuery(t, ix, tt.give, "")
			if diff := cmp.Diff(tt.want, ids); diff != "" || total != tt.wantTotal {
				t.Errorf("search(%q) = %d (-want +got):\n%s", tt.give, total, diff)
			}
		})
	}
}

// TestPatientIndexBirthdate checks every prefix at year, month and day precision against stored
// birthDates at year (Y: 1974), month (M: 1974-06) and day (D: 1974-06-15) precision; N has none and
// never matches, not even ne.
func TestPatientIndexBirthdate(t *testing.T) {
	ix := newPatientIndex()
	for id, bd := range map[string]string{"Y": `,"birthDate":"1974"`, "M": `,"birthDate":"1974-06"`, "D": `,"birthDate":"1974-06-15"`, "N": ""} {
		ix.update(patientVersion{ID: id, Version: 1, Body: []byte(`{"resourceType":"Patient","id":"` + id + `"` + bd + `}`)})
	}
	ymd := []string{"D", "M", "Y"}
	tests := []struct {
		give string
		want []string
	}{
		{"1974", ymd}, {"eq1974", ymd}, {"ne1974", nil}, {"gt1974", nil}, {"lt1974", nil},
		{"ge1974", ymd}, {"le1974", ymd}, {"sa1974", nil}, {"eb1974", nil}, {"ap1974", ymd},

		{"eq1974-06", []string{"D", "M"}}, {"ne1974-06", []string{"Y"}}, {"gt1974-06", []string{"Y"}},
		{"lt1974-06", []string{"Y"}}, {"ge1974-06", ymd}, {"le1974-06", ymd}, {"sa1974-06", nil},
		{"eb1974-06", nil}, {"ap1974-06", ymd},

		{"eq1974-06-15", []string{"D"}}, {"ne1974-06-15", []string{"M", "Y"}}, {"gt1974-06-15", []string{"M", "Y"}},
		{"lt1974-06-15", []string{"M", "Y"}}, {"ge1974-06-15", ymd}, {"le1974-06-15", ymd},
		{"sa1974-06-15", nil}, {"eb1974-06-15", nil}, {"ap1974-06-15", ymd},

		{"eq1974-06-16", nil}, {"ne1974-06-16", ymd}, {"gt1974-06-16", []string{"M", "Y"}},
		{"lt1974-06-16", ymd}, {"ge1974-06-16", []string{"M", "Y"}}, {"le1974-06-16", ymd},
		{"sa1974-06-16", nil}, {"eb1974-06-16", []string{"D"}}, {"ap1974-06-16", []string{"M", "Y"}},

		{"eq1974-06-14", nil}, {"gt1974-06-14", ymd}, {"lt1974-06-14", []string{"M", "Y"}},
		{"ge1974-06-14", ymd}, {"le1974-06-14", []string{"M", "Y"}}, {"sa1974-06-14", []string{"D"}},
		{"eb1974-06-14", nil}, {"ap1974-06-14", []string{"M", "Y"}},

		{"eq1974-07", nil}, {"ne1974-07", ymd}, {"gt1974-07", []string{"Y"}}, {"lt1974-07", ymd},
		{"ge1974-07", []string{"Y"}}, {"le1974-07", ymd}, {"sa1974-07", nil}, {"eb1974-07", []string{"D", "M"}},
		{"ap1974-07", []string{"Y"}},

		{"eq1974-05", nil}, {"gt1974-05", ymd}, {"lt1974-05", []string{"Y"}}, {"ge1974-05", ymd},
		{"le1974-05", []string{"Y"}}, {"sa1974-05", []string{"D", "M"}}, {"eb1974-05", nil}, {"ap1974-05", []string{"Y"}},

		{"eq1974-01-01", nil}, {"gt1974-01-01", ymd}, {"lt1974-01-01", nil}, {"ge1974-01-01", ymd},
		{"le1974-01-01", nil}, {"sa1974-01-01", []string{"D", "M"}}, {"eb1974-01-01", nil}, {"ap1974-01-01", []string{"Y"}},

		{"eq1974-12-31", nil}, {"gt1974-12-31", nil}, {"lt1974-12-31", ymd}, {"ge1974-12-31", nil},
		{"le1974-12-31", ymd}, {"sa1974-12-31", nil}, {"eb1974-12-31", []string{"D", "M"}}, {"ap1974-12-31", []string{"Y"}},

		{"eq1975", nil}, {"ne1975", ymd}, {"gt1975", nil}, {"lt1975", ymd}, {"ge1975", nil},
		{"le1975", ymd}, {"sa1975", nil}, {"eb1975", ymd}, {"ap1975", nil},

		{"eq1973", nil}, {"gt1973", ymd}, {"lt1973", nil}, {"ge1973", ymd}, {"le1973", nil},
		{"sa1973", ymd}, {"eb1973", nil}, {"ap1973", nil},

		{"eq1974-06,eq1974", ymd}, {"eb1974-06-15,sa1974-06-15", nil},
	}
	for _, tt := range tests {
		q, _, issues := parsePatientSearch(url.Values{"birthdate": {tt.give}}, false)
		if issues != nil {
			t.Fatalf("parsePatientSearch(birthdate=%s) issues: %v", tt.give, issues)
		}
		total, ids := searchIDs(ix, q)
		if diff := cmp.Diff(tt.want, ids); diff != "" {
			t.Errorf("search(birthdate=%s) mismatch (-want +got):\n%s", tt.give, diff)
		}
		if total != len(tt.want) {
			t.Errorf("search(birthdate=%s) total = %d, want %d", tt.give, total, len(tt.want))
		}
	}
}

func TestPatientIndexPaging(t *testing.T) {
	ix := newSearchFixtureIndex(t)
	tests := []struct {
		name      string
		give      string
		wantTotal int
		want      []string
	}{
		{"defaultCount", "", 15, []string{"p01", "p02", "p03", "p04", "p05", "p06", "p07", "p08", "p09", "p10", "p11", "p12", "p14", "p15", "p16"}},
		{"firstPage", "_count=4", 15, []string{"p01", "p02", "p03", "p04"}},
		{"secondPage", "_count=4&_offset=4", 15, []string{"p05", "p06", "p07", "p08"}},
		{"lastPartialPage", "_count=4&_offset=12", 15, []string{"p14", "p15", "p16"}},
		{"pastTheEnd", "_count=4&_offset=15", 15, nil},
		{"totalOnly", "_count=0", 15, nil},
		{"indexedPage", "gender=female&_count=2&_offset=1", 5, []string{"p02", "p05"}},
		{"namePage", "given=zoe&_count=2&_offset=2", 3, []string{"p03"}},
		{"nameTotalOnly", "family=smi&_count=0", 2, nil},
		{"identifierPage", "identifier=NOSYS-1&_count=1&_offset=1", 2, []string{"p05"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			params, err := url.ParseQuery(tt.give)
			if err != nil {
				t.Fatal(err)
			}
			q, _, issues := parsePatientSearch(params, false)
			if issues != nil {
				t.Fatalf("parsePatientSearch(%q) issues: %v", tt.give, issues)
			}
			total, ids := searchIDs(ix, q)
			if total != tt.wantTotal {
				t.Errorf("search(%q) total = %d, want %d", tt.give, total, tt.wantTotal)
			}
			if diff := cmp.Diff(tt.want, ids); diff != "" {
				t.Errorf("search(%q) ids mismatch (-want +got):\n%s", tt.give, diff)
			}
		})
	}
}

func TestPatientIndexVersions(t *testing.T) {
	body := func(id, family string) []byte {
		return []byte(`{"resourceType":"Patient","id":"` + id + `","name":[{"family":"` + family + `"}]}`)
	}
	tests := []struct {
		name string
		give []patientVersion
		want []string // ids found by name=a (every family below starts with "a")
	}{
		{"created", []patientVersion{{ID: "x", Version: 1, Body: body("x", "Alpha")}}, []string{"x"}},
		{"deleted", []patientVersion{{ID: "x", Version: 1, Body: body("x", "Alpha")}, {ID: "x", Version: 2, Deleted: true}}, nil},
		{"recreated", []patientVersion{{ID: "x", Version: 1, Body: body("x", "Alpha")}, {ID: "x", Version: 2, Deleted: true},
			{ID: "x", Version: 3, Body: body("x", "Alpha")}}, []string{"x"}},
		{"renamedAway", []patientVersion{{ID: "x", Version: 1, Body: body("x", "Alpha")}, {ID: "x", Version: 2, Body: body("x", "Beta")}}, nil},
		{"olderVersionIgnored", []patientVersion{{ID: "x", Version: 2, Body: body("x", "Beta")}, {ID: "x", Version: 1, Body: body("x", "Alpha")}}, nil},
		{"olderThanDeleteIgnored", []patientVersion{{ID: "x", Version: 2, Deleted: true}, {ID: "x", Version: 1, Body: body("x", "Alpha")}}, nil},
		{"sameVersionIgnored", []patientVersion{{ID: "x", Version: 1, Body: body("x", "Alpha")}, {ID: "x", Version: 1, Body: body("x", "Beta")}}, []string{"x"}},
		{"undecodableKeptByID", []patientVersion{{ID: "x", Version: 1, Body: []byte("not json")}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := newPatientIndex()
			for _, v := range tt.give {
				ix.update(v)
			}
			q, _, _ := parsePatientSearch(url.Values{"name": {"a"}}, false)
			if _, ids := searchIDs(ix, q); !cmp.Equal(tt.want, ids) {
				t.Errorf("search(name=a) = %v, want %v", ids, tt.want)
			}
			// The scan path (no index) must agree with the name index.
			q, _, _ = parsePatientSearch(url.Values{"name:contains": {"a"}}, false)
			_, scanned := searchIDs(ix, q)
			wantScan := tt.want
			if tt.name == "renamedAway" || tt.name == "olderVersionIgnored" {
				wantScan = []string{"x"} // "Beta" contains an a
			}
			if !cmp.Equal(wantScan, scanned) {
				t.Errorf("search(name:contains=a) = %v, want %v", scanned, wantScan)
			}
		})
	}
	ix := newPatientIndex()
	ix.update(patientVersion{ID: "x", Version: 1, Body: []byte("not json")})
	if total, ids := searchIDs(ix, patientQuery{IDs: [][]string{{"x"}}, Count: 10}); total != 1 || !cmp.Equal(ids, []string{"x"}) {
		t.Errorf("undecodable body: search(_id=x) = %d, %v, want 1, [x]", total, ids)
	}
}

// searchIDs runs q on ix and returns the total and the page's ids.
func searchIDs(ix *patientIndex, q patientQuery) (int, []string) {
	total, hits := ix.search(q)
	var ids []string
	for _, h := range hits {
		ids = append(ids, h.id)
	}
	return total, ids
}

// indexedFields is what the index keeps of one Patient, decoded.
type indexedFields struct {
	Identifiers    []patientIdentifier
	Parts          []indexedPart
	Telecoms       []patientTelecom // value normalised
	References     []indexedReference
	Death          []int64 // [lo, hi] or nil
	Gender, Flags  uint8
	DateLo, DateHi int32
}

// indexedPart is one string part as the index keeps it.
type indexedPart struct {
	Kind          byte
	Exact, Folded string
}

// indexedReference is one reference as the index keeps it.
type indexedReference struct {
	Param      byte
	Reference  string
	Identifier patientIdentifier
}

// TestPatientIndexFieldsMatchParser checks that what the index keeps of a stored body (read again,
// without validation) is what parsePatient's searchFields reads, for every fixture: the identifiers,
// every name and address part as written and folded, the telecoms normalised, the references, the
// death range, gender, birthDate and active.
func TestPatientIndexFieldsMatchParser(t *testing.T) {
	fixtures := searchFixtures()
	maps.Copy(fixtures, contactFixtures())
	fixtures["nulls"] = `{"resourceType":"Patient","name":[{"given":["A",null,"B"],"_given":[null,{"extension":[{"url":"http://e.example","valueString":"x"}]},null]}]}`
	fixtures["empties"] = `{"resourceType":"Patient","identifier":[{"type":{"text":"x"}}],"telecom":[{"system":"phone","_value":{"id":"v"}}],` +
		`"generalPractitioner":[{"display":"Dr X"}],"address":[{"line":[null,"2 Low St"],"_line":[{"id":"l"},null]}]}`
	for id, body := range fixtures {
		p, issues, status := parsePatient([]byte(body), false)
		if status != 0 {
			t.Fatalf("fixture %s: parsePatient issues %v", id, issues)
		}
		f := p.searchFields()
		want := indexedFields{DateLo: 1, DateHi: 0}
		for _, i := range f.Identifiers {
			if i != (patientIdentifier{}) {
				want.Identifiers = append(want.Identifiers, i)
			}
		}
		part := func(kind byte, s string) { want.Parts = append(want.Parts, indexedPart{kind, s, foldString(s)}) }
		eachNamePart(f.Names, part)
		eachAddressPart(f.Addresses, part)
		for _, c := range f.Telecoms {
			if c.Value != "" {
				want.Telecoms = append(want.Telecoms, patientTelecom{c.System, telecomNorm(c.System, c.Value)})
			}
		}
		ref := func(param byte, refs []patientReference) {
			for _, r := range refs {
				if r != (patientReference{}) {
					want.References = append(want.References, indexedReference{param, r.Reference, r.Identifier})
				}
			}
		}
		ref('g', f.GeneralPractitioners)
		ref('o', f.ManagingOrganization)
		if lo, hi, ok := dateTimeRange(f.DeceasedDateTime); ok {
			want.Death = []int64{lo, hi}
		}
		want.Gender = uint8(slices.Index(genderCodes, f.Gender) + 1)
		want.Flags = map[string]uint8{"true": slotActiveTrue, "false": slotActiveFalse}[f.Active]
		if p := fhirDatePrecision(f.BirthDate, false); p > 0 {
			want.DateLo, want.DateHi = dateRange(f.BirthDate, p)
		}

		ix := newPatientIndex()
		ix.update(patientVersion{ID: "x", Version: 1, Body: []byte(body)})
		i, _ := ix.slotOf("x")
		fb, s := ix.fieldsOf(i), ix.slotAt(i)
		got := indexedFields{Gender: s.gender, Flags: s.flags, DateLo: s.dateLo, DateHi: s.dateHi}
		fb.eachIdentifier(func(sys uint32, v []byte) {
			got.Identifiers = append(got.Identifiers, patientIdentifier{ix.interned(sys), string(v)})
		})
		ix.eachPart(fb, "", func(kind byte, exact []byte, folded foldedView) bool {
			got.Parts = append(got.Parts, indexedPart{kind, string(exact), string(folded.appendTo(nil, false, -1))})
			return true
		})
		fb.eachTelecom(func(sys byte, v []byte) {
			got.Telecoms = append(got.Telecoms, patientTelecom{telecomSystem(sys), string(v)})
		})
		fb.eachReference(func(param byte, ref []byte, sys uint32, v []byte) {
			got.References = append(got.References, indexedReference{param, string(ref), patientIdentifier{ix.interned(sys), string(v)}})
		})
		if lo, hi, ok := fb.death(); ok {
			got.Death = []int64{lo, hi}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("fixture %s: indexed fields mismatch (-searchFields +index):\n%s", id, diff)
		}
	}
}

func TestPatientIndexConcurrent(t *testing.T) {
	ix := newSearchFixtureIndex(t)
	queries := []url.Values{{"family": {"smi"}}, {"gender": {"female"}}, {"identifier": {"NOSYS-1"}}, {"_id": {"p01"}}}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				id := fmt.Sprintf("w%d-%d", w, i%20)
				ix.update(patientVersion{ID: id, Version: i + 1, Deleted: i%3 == 2,
					Body: []byte(`{"resourceType":"Patient","name":[{"family":"Smith"}],"gender":"female"}`)})
			}
		})
		wg.Go(func() {
			for i := range 200 {
				q, _, _ := parsePatientSearch(queries[(w+i)%len(queries)], false)
				searchIDs(ix, q)
			}
		})
	}
	wg.Wait()
	q, _, _ := parsePatientSearch(url.Values{"family": {"smith"}, "_count": {"100"}}, false)
	total, ids := searchIDs(ix, q)
	// Each writer's last versions: i = 180..199 give ids i%20 with version i+1; deleted when i%3 == 2.
	var want []string
	for w := range 4 {
		for i := 180; i < 200; i++ {
			if i%3 != 2 {
				want = append(want, fmt.Sprintf("w%d-%d", w, i%20))
			}
		}
	}
	want = append(want, "p09", "p10") // Smith, Smithson
	slices.Sort(want)
	if total != len(want) || !cmp.Equal(want, ids) {
		t.Errorf("after concurrent writes, search(family=smith) = %d %v, want %d %v", total, ids, len(want), want)
	}
}

// benchSearchPatients is how many patients the search benchmarks index (BenchmarkPatientSearch1M
// indexes ten times as many).
const benchSearchPatients = 100_000

// benchSearchBody returns a valid Patient body for benchmark patient i, shaped like bench/scale.lua's:
// two identifiers, an official name with two given names, gender, a day-precision birthDate, a phone
// and an email, a home address with a postcode, a GP practice by ODS code, active (false for 1 in
// 50) and, for 1 in 100, a deceasedDateTime.
func benchSearchBody(i int) []byte {
	families := []string{"Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas", "Johnson",
		"Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards", "Hughes", "Green", "Hall",
		"Núñez", "Müller", "O'Brien", "Łukasiewicz", "Straße"}
	givens := []string{"Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Noah", "Mia", "Jack", "Zoë", "Leo", "Lily"}
	places := [][3]string{{"Leeds", "West Yorkshire", "LS"}, {"Manchester", "Greater Manchester", "M"}, {"Bristol", "City of Bristol", "BS"},
		{"Norwich", "Norfolk", "NR"}, {"York", "North Yorkshire", "YO"}, {"Exeter", "Devon", "EX"}, {"London", "Greater London", "SE"}}
	family := families[i%len(families)] + fmt.Sprint(i%997) // ~25k distinct families, like a real register
	place := places[i%len(places)]
	deceased := ""
	if i%100 == 0 {
		deceased = fmt.Sprintf(`"deceasedDateTime":"%04d-%02d-%02dT10:00:00Z",`, 2000+i/100%25, 1+i%12, 1+i%28)
	}
	return fmt.Appendf(nil, `{"resourceType":"Patient","id":"b%06d","meta":{"versionId":"1","lastUpdated":"2024-01-01T00:00:00.000Z"},`+
		`"identifier":[{"system":"https://example.org/id/patient-number","value":"%010d"},{"system":"urn:oid:2.16.840.1.113883.2.1.4.1","value":"MRN%d"}],`+
		`"active":%t,"name":[{"use":"official","family":"%s","given":["%s","%s"],"prefix":["Mx"]}],`+
		`"telecom":[{"system":"phone","value":"07700 9%05d"},{"system":"email","value":"p%d@example.org"}],"gender":"%s","birthDate":"%04d-%02d-%02d",%s`+
		`"address":[{"line":["%d High Street"],"city":"%s","district":"%s","postalCode":"%s%d %d%c%c","country":"GB"}],`+
		`"generalPractitioner":[{"type":"Organization","identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"A%05d"}}]}`,
		i, 4000000000+i, i, i%50 != 0, family, givens[i%len(givens)], givens[(i/7)%len(givens)], i%100000, i,
		[]string{"male", "female", "other", "unknown"}[i%4], 1920+i%100, 1+i%12, 1+i%28, deceased,
		1+i%180, place[0], place[1], place[2], 1+i%30, 1+i%9, 'A'+i%20, 'A'+(i/20)%20, i%9000)
}

// benchSearchIndex builds an index of n patients.
func benchSearchIndex(b *testing.B, n int) *patientIndex {
	b.Helper()
	ix := newPatientIndex()
	for i := range n {
		ix.update(patientVersion{ID: fmt.Sprintf("b%06d", i), Version: 1, Body: benchSearchBody(i),
			LastUpdated: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)})
	}
	return ix
}

// benchSearchQueries are the searches the benchmarks time, one of each cost class: a posting of one
// or a few slots, a broad prefix posting, and scans (with and without a sort).
var benchSearchQueries = []struct{ name, give string }{
	{"id", "_id=b054321"},
	{"identifier", "identifier=https://example.org/id/patient-number%7C4000054321"},
	{"identifierAnySystem", "identifier=MRN54321"},
	{"phone", "phone=07700954321"},
	{"email", "email=p54321@example.org"},
	{"gpODS", "general-practitioner:identifier=https://fhir.nhs.uk/Id/ods-organization-code%7CA04321"}, // 1 in 9,000
	{"postcode", "address-postalcode=M22%207BQ"},                                                       // patient 54321's; the candidates are every postcode that starts m22
	{"familyPrefix", "family=smith12"},
	{"familyPrefixBroad", "family=smi"},            // 4% of patients: one bucket, 20 on the page
	{"familyPrefixShort", "family=s"},              // 2 bytes or fewer: scan
	{"familyContains", "family:contains=ez12"},     // scan
	{"address", "address=leeds"},                   // scan, 1 in 7 match
	{"addressContains", "address:contains=street"}, // scan, all match
	{"birthdateRange", "birthdate=ge1950-01-01&birthdate=lt1951-01-01"},
	{"deathDate", "death-date=ge2010"},
	{"lastUpdated", "_lastUpdated=gt2024-01-01T12:00:00Z"},
	{"activeFalse", "active=false"},
	{"genderMissing", "gender:missing=true"},
	{"not", "gender:not=male&family=smi"},
	{"all", ""},
	{"countAll", "_summary=count"},
	{"sortFamilyAll", "_sort=family"},
	{"sortLastUpdatedDesc", "_sort=-_lastUpdated&_count=1"},
	{"sortBirthdateDeep", "_sort=birthdate,family&_offset=9980"}, // the deepest page searchMaxSortWindow allows
	{"sortFamilyBroad", "family=smi&_sort=-given"},
}

// benchmarkSearches times every benchSearchQueries on an index of n patients.
func benchmarkSearches(b *testing.B, n int) {
	ix := benchSearchIndex(b, n)
	for _, tt := range benchSearchQueries {
		params, err := url.ParseQuery(tt.give)
		if err != nil {
			b.Fatal(err)
		}
		q, _, issues := parsePatientSearch(params, false)
		if issues != nil {
			b.Fatalf("%s: %v", tt.name, issues)
		}
		b.Run(tt.name, func(b *testing.B) {
			var total int
			for b.Loop() {
				total, _ = searchIDs(ix, q)
			}
			b.ReportMetric(float64(total), "matches")
		})
	}
}

func BenchmarkPatientSearch100k(b *testing.B) { benchmarkSearches(b, benchSearchPatients) }

// BenchmarkPatientSearch1M is the README's cost table: go test -run '^$' -bench PatientSearch1M.
func BenchmarkPatientSearch1M(b *testing.B) { benchmarkSearches(b, 10*benchSearchPatients) }

func BenchmarkPatientIndexUpdate(b *testing.B) {
	bodies := make([][]byte, 1000)
	for i := range bodies {
		bodies[i] = benchSearchBody(i)
	}
	b.Run("update", func(b *testing.B) {
		// Steady state against a full index: every version replaces a patient's previous one.
		ix := benchSearchIndex(b, benchSearchPatients)
		version := 1
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if i%len(bodies) == 0 {
				version++
			}
			ix.update(patientVersion{ID: fmt.Sprintf("b%06d", i%len(bodies)), Version: version, Body: bodies[i%len(bodies)]})
		}
	})
	b.Run("parsePatientSearchFields", func(b *testing.B) {
		// What update would cost per patient with the validating parser instead of json.Unmarshal.
		for i := 0; b.Loop(); i++ {
			p, issues, _ := parsePatient(bodies[i%len(bodies)], false)
			if p == nil {
				b.Fatalf("parsePatient: %v", issues)
			}
			p.searchFields()
		}
	})
	b.Run("replay100k", func(b *testing.B) {
		// A start-up replay through update, then the first scanning search (which sorts the ids).
		all := make([]patientVersion, benchSearchPatients)
		for i := range all {
			all[i] = patientVersion{ID: fmt.Sprintf("b%06d", i), Version: 1, Body: benchSearchBody(i)}
		}
		for b.Loop() {
			ix := newPatientIndex()
			for _, v := range all {
				ix.update(v)
			}
			searchIDs(ix, patientQuery{Count: 1})
		}
	})
}

// TestSlotSize keeps the slot at 56 bytes, a million of which are 53 MiB: the flags live in what was
// padding. A new field that grows it should be a deliberate choice.
func TestSlotSize(t *testing.T) {
	if got := unsafe.Sizeof(slot{}); got != 56 {
		t.Errorf("unsafe.Sizeof(slot{}) = %d, want 56", got)
	}
}

// TestFieldsBlobDamaged: a checkpoint's blobs are read (to link them) before its checksum is checked,
// so no truncation or flipped byte of a blob may make a reader panic or loop.
func TestFieldsBlobDamaged(t *testing.T) {
	ix := newContactIndex(t)
	good := slices.Clone([]byte(ix.fieldsOf(0)))
	for id := range contactFixtures() {
		i, _ := ix.slotOf(id)
		if b := ix.fieldsOf(i); len(b) > len(good) {
			good = slices.Clone([]byte(b))
		}
	}
	read := func(b fieldsBlob) {
		ix.eachKeyOf(b, func(uint64) {})
		b.eachIdentifier(func(uint32, []byte) {})
		ix.eachPart(b, "", func(byte, []byte, foldedView) bool { return true })
		ix.eachPart(b, "address-postalcode", func(byte, []byte, foldedView) bool { return true })
		b.eachTelecom(func(byte, []byte) {})
		b.eachReference(func(byte, []byte, uint32, []byte) {})
		b.death()
		ix.matchesString(b, "address", "", "x")
		b.hasTelecom("telecom", telecomValue{"1", "1"})
	}
	for n := range len(good) {
		read(fieldsBlob(good[:n]))
		for _, flip := range []byte{0x01, 0x40, 0x80, 0xff} {
			damaged := slices.Clone(good)
			damaged[n] ^= flip
			read(fieldsBlob(damaged))
		}
	}
}

// TestPatientIndexCheckpointRoundTrip: an index written to a checkpoint and read back has the same
// postings (they are saved, not rebuilt) and answers every search the same; and no flipped byte or
// truncation of the checkpoint makes reading it panic.
func TestPatientIndexCheckpointRoundTrip(t *testing.T) {
	ix := newSearchFixtureIndex(t)
	for id, body := range contactFixtures() {
		ix.update(patientVersion{ID: id, Version: 1, Body: []byte(body)})
	}
	ix.update(patientVersion{ID: "c02", Version: 2, Deleted: true})
	ix.update(patientVersion{ID: "p05", Version: 2, Body: []byte(`{"resourceType":"Patient","name":[{"family":"Renamed"}]}`)})
	snap := ix.snapshot()
	path := filepath.Join(t.TempDir(), "index")
	if err := writeFileAtomic(path, func(*os.File) error { return nil }, func(w io.Writer) error { return encodeSnapshot(w, snap) }); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	decode := func(b []byte) (*patientIndex, error) {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		got, _, _, _, err := decodeCheckpoint(f)
		return got, err
	}
	got, err := decode(good)
	if err != nil {
		t.Fatalf("decodeCheckpoint: %v", err)
	}
	norm := func(p postings) ([][]uint32, map[uint64]uint32) {
		var lists [][]uint32
		for _, l := range p.lists {
			lists = append(lists, append([]uint32{}, l...))
		}
		return lists, p.m
	}
	wantLists, wantMap := norm(ix.postings)
	gotLists, gotMap := norm(got.postings)
	if diff := cmp.Diff(wantMap, gotMap); diff != "" {
		t.Errorf("postings map mismatch (-written +read):\n%s", diff)
	}
	if diff := cmp.Diff(wantLists, gotLists); diff != "" {
		t.Errorf("posting lists mismatch (-written +read):\n%s", diff)
	}
	for _, query := range []string{"", "family=smi", "identifier=NOSYS-1", "phone=07700900123", "general-practitioner=o1",
		"address-postalcode=ls1", "family=renamed", "_id=c02", "_sort=-family&gender:missing=true", "email=ab@x.org"} {
		wantTotal, wantIDs := searchQuery(t, ix, query, contactBase)
		gotTotal, gotIDs := searchQuery(t, got, query, contactBase)
		if diff := cmp.Diff(wantIDs, gotIDs); diff != "" || gotTotal != wantTotal {
			t.Errorf("search(%q) after the round trip = %d, want %d (-before +after):\n%s", query, gotTotal, wantTotal, diff)
		}
	}
	for n := 0; n < len(good); n += 1 + len(good)/400 { // a sample of positions: every field kind is hit
		decode(good[:n])
		for _, flip := range []byte{0x01, 0x80} {
			damaged := slices.Clone(good)
			damaged[n] ^= flip
			if _, err := decode(damaged); err == nil {
				t.Errorf("byte %d ^ %#x: decodeCheckpoint accepted a damaged checkpoint", n, flip)
			}
		}
	}
}
