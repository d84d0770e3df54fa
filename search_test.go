package main

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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

// searchIssue builds the issue parsePatientSearch reports: no expression.
func searchIssue(code, diagnostics string) fhirIssue {
	return fhirIssue{Severity: "error", Code: code, Diagnostics: diagnostics}
}

func TestParsePatientSearch(t *testing.T) {
	day := func(s string) int32 { return searchDays(t, s) }
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
				{Prefix: "eq", Start: day("1974-01-01"), End: day("1974-12-31")},
				{Prefix: "eq", Start: day("1974-06-01"), End: day("1974-06-30")},
				{Prefix: "ne", Start: day("1974-06-15"), End: day("1974-06-15")},
				{Prefix: "gt", Start: day("1974-01-01"), End: day("1974-12-31")},
				{Prefix: "lt", Start: day("1974-01-01"), End: day("1974-12-31")},
				{Prefix: "ge", Start: day("1974-01-01"), End: day("1974-12-31")},
				{Prefix: "le", Start: day("1974-01-01"), End: day("1974-12-31")},
				{Prefix: "sa", Start: day("1974-01-01"), End: day("1974-12-31")},
				{Prefix: "eb", Start: day("1974-01-01"), End: day("1974-12-31")},
				{Prefix: "ap", Start: day("1974-01-01"), End: day("1974-12-31")},
			}, {
				{Prefix: "ge", Start: day("2000-02-29"), End: day("2000-02-29")},
			}}, Count: 20},
			wantSelf: url.Values{"birthdate": {"1974,eq1974-06,ne1974-06-15,gt1974,lt1974,ge1974,le1974,sa1974,eb1974,ap1974", "ge2000-02-29"},
				"_count": {"20"}},
		},
		{
			name: "birthdateMonthEnds",
			give: url.Values{"birthdate": {"1900-02,2024-02,1969-12"}},
			want: patientQuery{BirthDates: [][]dateValue{{
				{Prefix: "eq", Start: day("1900-02-01"), End: day("1900-02-28")},
				{Prefix: "eq", Start: day("2024-02-01"), End: day("2024-02-29")},
				{Prefix: "eq", Start: day("1969-12-01"), End: day("1969-12-31")},
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
			give:     url.Values{"address-city": {"Leeds"}, "_sort": {"family"}, "_format": {"json"}, "family": {"x"}},
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
				searchIssue("not-supported", "address-city: unknown search parameter (Prefer: handling=strict); the supported parameters are "+searchParamNames+"."),
				searchIssue("not-supported", "family:text: the modifier :text is not supported; family allows :exact and :contains."),
			},
		},
		{
			name: "unsupportedModifiers",
			give: url.Values{"_id:not": {"a"}, "identifier:of-type": {"a"}, "gender:missing": {"true"}, "birthdate:missing": {"true"},
				"given:text": {"a"}, "name:above": {"a"}, "_count:x": {"1"}},
			wantIssues: []fhirIssue{
				searchIssue("not-supported", "_count:x: the modifier :x is not supported; _count takes no modifiers."),
				searchIssue("not-supported", "_id:not: the modifier :not is not supported; _id takes no modifiers."),
				searchIssue("not-supported", "birthdate:missing: the modifier :missing is not supported; birthdate takes no modifiers."),
				searchIssue("not-supported", "gender:missing: the modifier :missing is not supported; gender takes no modifiers."),
				searchIssue("not-supported", "given:text: the modifier :text is not supported; given allows :exact and :contains."),
				searchIssue("not-supported", "identifier:of-type: the modifier :of-type is not supported; identifier takes no modifiers."),
				searchIssue("not-supported", "name:above: the modifier :above is not supported; name allows :exact and :contains."),
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			params, err := url.ParseQuery(tt.give)
			if err != nil {
				t.Fatal(err)
			}
			params.Set("_count", "100")
			q, _, issues := parsePatientSearch(params, true)
			if issues != nil {
				t.Fatalf("parsePatientSearch(%q) issues: %v", tt.give, issues)
			}
			total, ids := searchIDs(ix, q)
			if diff := cmp.Diff(tt.want, ids); diff != "" {
				t.Errorf("search(%q) ids mismatch (-want +got):\n%s", tt.give, diff)
			}
			if total != len(tt.want) {
				t.Errorf("search(%q) total = %d, want %d", tt.give, total, len(tt.want))
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

// indexedPart is one name part as the index keeps it.
type indexedPart struct {
	Kind          byte
	Exact, Folded string
}

// TestPatientIndexFieldsMatchParser checks that what the index keeps of a stored body (read again,
// without validation) is what parsePatient's searchFields reads, for every fixture: the identifiers,
// every name part as written and folded, gender and birthDate.
func TestPatientIndexFieldsMatchParser(t *testing.T) {
	fixtures := searchFixtures()
	fixtures["nulls"] = `{"resourceType":"Patient","name":[{"given":["A",null,"B"],"_given":[null,{"extension":[{"url":"http://e.example","valueString":"x"}]},null]}]}`
	for id, body := range fixtures {
		p, issues, status := parsePatient([]byte(body), false)
		if status != 0 {
			t.Fatalf("fixture %s: parsePatient issues %v", id, issues)
		}
		f := p.searchFields()
		var wantParts []indexedPart
		eachNamePart(f.Names, func(kind byte, s string) { wantParts = append(wantParts, indexedPart{kind, s, foldString(s)}) })
		ix := newPatientIndex()
		ix.update(patientVersion{ID: "x", Version: 1, Body: []byte(body)})
		i, _ := ix.slotOf("x")
		var gotIDs []patientIdentifier
		var gotParts []indexedPart
		ix.fieldsOf(i).eachIdentifier(func(sys uint32, v []byte) { gotIDs = append(gotIDs, patientIdentifier{ix.system(sys), string(v)}) })
		ix.fieldsOf(i).eachPart(func(kind byte, exact, folded []byte) {
			gotParts = append(gotParts, indexedPart{kind, string(exact), string(folded)})
		})
		if diff := cmp.Diff(f.Identifiers, gotIDs); diff != "" {
			t.Errorf("fixture %s: identifiers mismatch (-searchFields +index):\n%s", id, diff)
		}
		if diff := cmp.Diff(wantParts, gotParts); diff != "" {
			t.Errorf("fixture %s: name parts mismatch (-searchFields +index):\n%s", id, diff)
		}
		s := ix.slotAt(i)
		if g := slices.Index(genderCodes, f.Gender) + 1; int(s.gender) != g {
			t.Errorf("fixture %s: gender %d, want %d (%q)", id, s.gender, g, f.Gender)
		}
		if p := fhirDatePrecision(f.BirthDate, false); p > 0 {
			if lo, hi := dateRange(f.BirthDate, p); s.dateLo != lo || s.dateHi != hi {
				t.Errorf("fixture %s: birthDate range %d..%d, want %d..%d", id, s.dateLo, s.dateHi, lo, hi)
			}
		} else if s.dateLo <= s.dateHi {
			t.Errorf("fixture %s: birthDate range %d..%d, want none", id, s.dateLo, s.dateHi)
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

// benchSearchPatients is how many patients the search benchmarks index.
const benchSearchPatients = 100_000

// benchSearchBody returns a valid Patient body for benchmark patient i: two identifiers, an official name with one or two given names, gender and a day-precision birthDate.
func benchSearchBody(i int) []byte {
	families := []string{"Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas", "Johnson",
		"Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards", "Hughes", "Green", "Hall",
		"Núñez", "Müller", "O'Brien", "Łukasiewicz", "Straße"}
	givens := []string{"Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Noah", "Mia", "Jack", "Zoë", "Leo", "Lily"}
	family := families[i%len(families)] + fmt.Sprint(i%997) // ~25k distinct families, like a real register
	return fmt.Appendf(nil, `{"resourceType":"Patient","id":"b%06d","meta":{"versionId":"1","lastUpdated":"2024-01-01T00:00:00.000Z"},`+
		`"identifier":[{"system":"https://example.org/id/patient-number","value":"%010d"},{"system":"urn:oid:2.16.840.1.113883.2.1.4.1","value":"MRN%d"}],`+
		`"name":[{"use":"official","family":"%s","given":["%s","%s"],"prefix":["Mx"]}],"gender":"%s","birthDate":"%04d-%02d-%02d"}`,
		i, 4000000000+i, i, family, givens[i%len(givens)], givens[(i/7)%len(givens)],
		[]string{"male", "female", "other", "unknown"}[i%4], 1920+i%100, 1+i%12, 1+i%28)
}

// benchSearchIndex builds an index of benchSearchPatients patients.
func benchSearchIndex(b *testing.B) *patientIndex {
	b.Helper()
	ix := newPatientIndex()
	for i := range benchSearchPatients {
		ix.update(patientVersion{ID: fmt.Sprintf("b%06d", i), Version: 1, Body: benchSearchBody(i)})
	}
	return ix
}

func BenchmarkPatientSearch100k(b *testing.B) {
	ix := benchSearchIndex(b)
	tests := []struct {
		name string
		give url.Values
	}{
		{"identifier", url.Values{"identifier": {"https://example.org/id/patient-number|4000054321"}}},
		{"identifierAnySystem", url.Values{"identifier": {"MRN54321"}}},
		{"id", url.Values{"_id": {"b054321"}}},
		{"familyPrefix", url.Values{"family": {"smith12"}}},                           // 4 matches in 100k
		{"familyPrefixBroad", url.Values{"family": {"smi"}}},                          // 4,000 matches: one bucket, 20 on the page
		{"familyPrefixShort", url.Values{"family": {"s"}}},                            // 2 bytes or fewer: scan
		{"familyContains", url.Values{"family:contains": {"ez12"}}},                   // scan
		{"birthdateRange", url.Values{"birthdate": {"ge1950-01-01", "lt1951-01-01"}}}, // scan, 1,000 matches
		{"birthdateYear", url.Values{"birthdate": {"1950"}}},
		{"all", url.Values{}},
	}
	for _, tt := range tests {
		q, _, issues := parsePatientSearch(tt.give, false)
		if issues != nil {
			b.Fatalf("%s: %v", tt.name, issues)
		}
		b.Run(tt.name, func(b *testing.B) {
			for b.Loop() {
				searchIDs(ix, q)
			}
		})
	}
}

func BenchmarkPatientIndexUpdate(b *testing.B) {
	bodies := make([][]byte, 1000)
	for i := range bodies {
		bodies[i] = benchSearchBody(i)
	}
	b.Run("update", func(b *testing.B) {
		// Steady state against a full index: every version replaces a patient's previous one.
		ix := benchSearchIndex(b)
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
