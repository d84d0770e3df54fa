package main

// Metrics: request rate, errors and latency per route, requests in flight, the store's and the
// verifier's figures and the Go runtime's, in the Prometheus text exposition format 0.0.4, written by
// hand (the standard library has no Prometheus client). Every label value comes from a closed set:
// the route pattern (never the raw path), the method (any method outside the standard ones is
// "_OTHER"), the status class, the token outcome; none carries patient data, a token or a path a
// caller chose. The cost on the hot path is two atomic adds, on a handle made when the route was
// registered, so a request builds no label and looks nothing up.
//
// The figures are served on their own port (METRICS_PORT), never on the API port: see README,
// "Operations".

import (
	"maps"
	"math"
	"net/http"
	rtmetrics "runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// numBuckets is the number of finite bucket bounds every histogram has (latencyBounds).
const numBuckets = 19

// latencyBounds are every histogram's bucket upper bounds ("le"): 10 µs to 10 s in a 1-2.5-5 series,
// which resolves /egfr's few microseconds, an fsync's milliseconds and a stalled client's seconds.
func latencyBounds() [numBuckets]time.Duration {
	return [numBuckets]time.Duration{
		10 * time.Microsecond, 25 * time.Microsecond, 50 * time.Microsecond,
		100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
		time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
		10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
		100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
		time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
	}
}

// histogram counts durations into latencyBounds' buckets. The zero value is ready to use, and it is
// safe for concurrent use.
type histogram struct {
	counts [numBuckets + 1]atomic.Uint64 // per bucket, not cumulative; the last is above every bound
	sum    atomic.Int64                  // nanoseconds
}

// observe records one duration.
func (h *histogram) observe(d time.Duration) {
	bounds := latencyBounds()
	i := 0
	for i < numBuckets && d > bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// histSnap is a histogram read once, so that its buckets, count and sum agree in one exposition.
type histSnap struct {
	counts [numBuckets + 1]uint64
	sum    float64 // seconds
}

// snapshot reads h.
func (h *histogram) snapshot() histSnap {
	var s histSnap
	for i := range s.counts {
		s.counts[i] = h.counts[i].Load()
	}
	s.sum = time.Duration(h.sum.Load()).Seconds()
	return s
}

// total is the number of observations.
func (s histSnap) total() uint64 {
	var n uint64
	for _, c := range s.counts {
		n += c
	}
	return n
}

// Method labels: the standard methods, and "_OTHER" for anything else a client sends (as
// OpenTelemetry's HTTP conventions do), so no request can add a label value.
const numMethods = 8

// methodIndex is the index of m's label in methodLabels.
func methodIndex(m string) int {
	switch m {
	case http.MethodGet:
		return 0
	case http.MethodHead:
		return 1
	case http.MethodPost:
		return 2
	case http.MethodPut:
		return 3
	case http.MethodDelete:
		return 4
	case http.MethodPatch:
		return 5
	case http.MethodOptions:
		return 6
	}
	return 7
}

// methodLabels are the method label values, by methodIndex.
func methodLabels() [numMethods]string {
	return [numMethods]string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "_OTHER"}
}

// numClasses is the number of status classes, 1xx to 5xx.
const numClasses = 5

// routeMetrics is one route pattern's request durations by method and status class. metrics.route
// makes one per pattern path at registration; withRoute attaches it to each request that route takes.
type routeMetrics struct {
	route    string // the pattern's path, "/Patient/{id}"
	byMethod [numMethods][numClasses]histogram
}

// observe records a request that was answered with status after d. Status 0 (nothing written) is
// the 200 net/http sends for it.
func (rm *routeMetrics) observe(method string, status int, d time.Duration) {
	c := min(max(status/100-1, 1), numClasses-1)
	if status >= 100 && status < 200 {
		c = 0
	}
	rm.byMethod[methodIndex(method)][c].observe(d)
}

// storeStats is what the metrics report about the patient store; a store that can tell implements
// statsReporter (journalStore does; a fork's other store may not, and then has no store metrics).
type storeStats struct {
	Patients      int           // current (not deleted) Patients
	JournalBytes  int64         // size of the journal file
	Fsyncs        *histogram    // how long each fsync of the journal took
	CheckpointAge time.Duration // since the index checkpoint was written; negative when there is none
}

// statsReporter is a patientStore that reports storeStats.
type statsReporter interface{ Stats() storeStats }

// metrics is the registry: fixed figures, counted by the middleware, the store and the verifier,
// and read by handleMetrics.
type metrics struct {
	limit    int64 // MAX_IN_FLIGHT; 0 means no cap (tests only: the configuration requires one)
	inFlight atomic.Int64
	refused  atomic.Uint64 // requests answered 503 by the cap
	none     *routeMetrics // requests no route took: refused before routing, or the mux's redirects

	mu     sync.Mutex
	routes map[string]*routeMetrics // by route label

	sources atomic.Pointer[metricsSources] // set once the store is open
}

// metricsSources are the parts of the service the metrics read but do not own; either may be nil.
type metricsSources struct {
	store statsReporter
	auth  *verifier
}

// newMetrics returns an empty registry for a service that allows limit requests in flight.
func newMetrics(limit int) *metrics {
	return &metrics{limit: int64(limit), none: &routeMetrics{route: "none"}, routes: map[string]*routeMetrics{}}
}

// route returns the handle for a route pattern such as "GET /Patient/{id}", made on first use. Its
// label is the pattern's path, shared by every method registered on it (and by the start-up server's
// routes of the same path), so no two handles ever write the same series.
func (m *metrics) route(pattern string) *routeMetrics {
	path := pattern[strings.IndexByte(pattern, ' ')+1:]
	m.mu.Lock()
	defer m.mu.Unlock()
	rm := m.routes[path]
	if rm == nil {
		rm = &routeMetrics{route: path}
		m.routes[path] = rm
	}
	return rm
}

// attach tells the metrics where the store's and the verifier's figures are (v is nil without auth).
func (m *metrics) attach(store patientStore, v *verifier) {
	st, _ := store.(statsReporter)
	m.sources.Store(&metricsSources{store: st, auth: v})
}

// handleMetrics serves the exposition (on the metrics port only).
func handleMetrics(m *metrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(m.appendExposition(nil))
	})
}

// appendExposition appends every metric family to b in the text format.
func (m *metrics) appendExposition(b []byte) []byte {
	e := exposition{b: b}
	m.appendRequests(&e)
	e.family("http_requests_in_flight", "gauge", "Requests being served now, on the API port.")
	e.sample("http_requests_in_flight", "", float64(m.inFlight.Load()))
	e.family("http_requests_in_flight_limit", "gauge", "MAX_IN_FLIGHT: beyond this many requests in flight, requests other than the probes are answered 503 at once.")
	e.sample("http_requests_in_flight_limit", "", float64(m.limit))
	e.family("http_requests_refused_total", "counter", "Requests answered 503 with Retry-After because MAX_IN_FLIGHT requests were already in flight.")
	e.sample("http_requests_refused_total", "", float64(m.refused.Load()))
	src := m.sources.Load()
	if src == nil {
		src = &metricsSources{}
	}
	appendAuth(&e, src.auth)
	if src.store != nil {
		st := src.store.Stats()
		e.family("clinicalapi_patients", "gauge", "Patients stored and not deleted.")
		e.sample("clinicalapi_patients", "", float64(st.Patients))
		e.family("clinicalapi_journal_bytes", "gauge", "Size of the Patient journal file in DATA_DIR.")
		e.sample("clinicalapi_journal_bytes", "", float64(st.JournalBytes))
		e.family("clinicalapi_journal_fsync_duration_seconds", "histogram", "How long each fsync of the Patient journal took (one per group commit).")
		e.histogram("clinicalapi_journal_fsync_duration_seconds", "", st.Fsyncs.snapshot())
		if st.CheckpointAge >= 0 {
			e.family("clinicalapi_checkpoint_age_seconds", "gauge", "Time since the index checkpoint (which shortens the replay at start) was last written.")
			e.sample("clinicalapi_checkpoint_age_seconds", "", st.CheckpointAge.Seconds())
		}
	}
	appendRuntime(&e)
	return e.b
}

// appendRequests writes the request counter and latency histogram, one series per route, method and
// status class that has seen a request, in a stable order.
func (m *metrics) appendRequests(e *exposition) {
	m.mu.Lock()
	rms := append([]*routeMetrics{m.none}, slices.Collect(maps.Values(m.routes))...)
	m.mu.Unlock()
	slices.SortFunc(rms, func(a, b *routeMetrics) int { return strings.Compare(a.route, b.route) })
	type series struct {
		labels string
		snap   histSnap
	}
	var all []series
	methods := methodLabels()
	for _, rm := range rms {
		for mi := range rm.byMethod {
			for ci := range rm.byMethod[mi] {
				if s := rm.byMethod[mi][ci].snapshot(); s.total() > 0 {
					labels := `route="` + escapeLabel(rm.route) + `",method="` + methods[mi] + `",status_class="` + strconv.Itoa(ci+1) + `xx"`
					all = append(all, series{labels, s})
				}
			}
		}
	}
	e.family("http_requests_total", "counter", "Requests answered, by route pattern, method and status class.")
	for _, s := range all {
		e.sample("http_requests_total", s.labels, float64(s.snap.total()))
	}
	e.family("http_request_duration_seconds", "histogram", "Time from reading a request's headers to its last handler write, by route pattern, method and status class.")
	for _, s := range all {
		e.histogram("http_request_duration_seconds", s.labels, s.snap)
	}
}

// appendAuth writes the verifier's counters: zeros when auth is not configured, so a dashboard shows
// "none" rather than "no data".
func appendAuth(e *exposition, v *verifier) {
	var fetches, failures uint64
	var outcomes [numTokenOutcomes]uint64
	if v != nil {
		fetches, failures = v.jwksFetches.Load(), v.jwksFailures.Load()
		for i := range outcomes {
			outcomes[i] = v.verifications[i].Load()
		}
	}
	e.family("clinicalapi_jwks_fetches_total", "counter", "Fetches of the issuer's discovery document and JWKS (at start, hourly, and on an unknown kid).")
	e.sample("clinicalapi_jwks_fetches_total", "", float64(fetches))
	e.family("clinicalapi_jwks_fetch_failures_total", "counter", "Fetches of the issuer's keys that failed (the previous keys stay in use).")
	e.sample("clinicalapi_jwks_fetch_failures_total", "", float64(failures))
	e.family("clinicalapi_token_verifications_total", "counter", "Bearer tokens checked, by outcome (valid, missing, invalid, expired).")
	for i, n := range outcomes {
		e.sample("clinicalapi_token_verifications_total", `outcome="`+tokenOutcomeLabels()[i]+`"`, float64(n))
	}
}

// appendRuntime writes Go runtime figures read from runtime/metrics (names as in its documentation).
func appendRuntime(e *exposition) {
	gauges := []struct{ name, typ, help, sample string }{
		{"go_goroutines", "gauge", "Goroutines that exist (/sched/goroutines:goroutines).", "/sched/goroutines:goroutines"},
		{"go_sched_gomaxprocs_threads", "gauge", "GOMAXPROCS, the CPUs Go code runs on at once (/sched/gomaxprocs:threads).", "/sched/gomaxprocs:threads"},
		{"go_memory_classes_heap_objects_bytes", "gauge", "Heap memory held by objects, live or not yet swept (/memory/classes/heap/objects:bytes).", "/memory/classes/heap/objects:bytes"},
		{"go_memory_classes_total_bytes", "gauge", "All memory the Go runtime has mapped (/memory/classes/total:bytes).", "/memory/classes/total:bytes"},
		{"go_gc_heap_goal_bytes", "gauge", "Heap size at which the next garbage collection starts (/gc/heap/goal:bytes).", "/gc/heap/goal:bytes"},
		{"go_gc_cycles_total", "counter", "Completed garbage collection cycles (/gc/cycles/total:gc-cycles).", "/gc/cycles/total:gc-cycles"},
	}
	samples := make([]rtmetrics.Sample, len(gauges)+1)
	for i, g := range gauges {
		samples[i].Name = g.sample
	}
	samples[len(gauges)].Name = "/sched/pauses/total/gc:seconds"
	rtmetrics.Read(samples)
	for i, g := range gauges {
		if samples[i].Value.Kind() == rtmetrics.KindUint64 {
			e.family(g.name, g.typ, g.help)
			e.sample(g.name, "", float64(samples[i].Value.Uint64()))
		}
	}
	if v := samples[len(gauges)].Value; v.Kind() == rtmetrics.KindFloat64Histogram {
		e.family("go_gc_pauses_seconds", "histogram", "Stop-the-world pauses for garbage collection (/sched/pauses/total/gc:seconds); the sum is estimated from the runtime's buckets.")
		e.histogram("go_gc_pauses_seconds", "", rebucket(v.Float64Histogram()))
	}
}

// rebucket moves a runtime histogram (seconds) into latencyBounds' buckets: each runtime bucket
// [lo, hi) goes to the first bound at or above hi, so every "le" count stays true. The sum takes each
// bucket's midpoint, as the runtime keeps no exact sum.
func rebucket(h *rtmetrics.Float64Histogram) histSnap {
	var s histSnap
	bounds := latencyBounds()
	for i, n := range h.Counts {
		if n == 0 {
			continue
		}
		lo, hi := h.Buckets[i], h.Buckets[i+1]
		j := 0
		for j < numBuckets && hi > bounds[j].Seconds() {
			j++
		}
		s.counts[j] += n
		switch {
		case math.IsInf(lo, -1):
			lo = 0
		case math.IsInf(hi, 1):
			hi = lo
		}
		s.sum += float64(n) * (lo + hi) / 2
	}
	return s
}

// exposition builds the text format: for each family a HELP and a TYPE line, then its samples.
type exposition struct{ b []byte }

// family starts a metric family.
func (e *exposition) family(name, typ, help string) {
	e.b = append(e.b, "# HELP "...)
	e.b = append(e.b, name...)
	e.b = append(e.b, ' ')
	e.b = append(e.b, strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(help)...)
	e.b = append(e.b, "\n# TYPE "...)
	e.b = append(e.b, name...)
	e.b = append(e.b, ' ')
	e.b = append(e.b, typ...)
	e.b = append(e.b, '\n')
}

// sample writes one sample line; labels is `k="v",...` without braces, or "".
func (e *exposition) sample(name, labels string, v float64) {
	e.b = append(e.b, name...)
	if labels != "" {
		e.b = append(e.b, '{')
		e.b = append(e.b, labels...)
		e.b = append(e.b, '}')
	}
	e.b = append(e.b, ' ')
	e.b = appendFloat(e.b, v)
	e.b = append(e.b, '\n')
}

// histogram writes a histogram's cumulative buckets, sum and count.
func (e *exposition) histogram(name, labels string, s histSnap) {
	sep := ""
	if labels != "" {
		sep = ","
	}
	bounds := latencyBounds()
	var cum uint64
	for i, c := range s.counts {
		cum += c
		le := "+Inf"
		if i < numBuckets {
			le = string(appendFloat(nil, bounds[i].Seconds()))
		}
		e.sample(name+"_bucket", labels+sep+`le="`+le+`"`, float64(cum))
	}
	e.sample(name+"_sum", labels, s.sum)
	e.sample(name+"_count", labels, float64(cum))
}

// appendFloat formats v as the text format wants it: Go float syntax, or +Inf, -Inf, NaN.
func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// escapeLabel escapes a label value (backslash, double quote, newline) for the text format.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}
