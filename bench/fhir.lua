-- wrk script for bench/run.sh: one fixed request with a bearer token, or (BENCH_SEED=1) a stream of
-- distinct Patients to seed the store. Environment:
--   BENCH_METHOD (GET), BENCH_TOKEN (bearer token), BENCH_BODY_FILE (body for POST/PUT),
--   BENCH_CTYPE (application/fhir+json), BENCH_SEED (1: POST /Patient with unique identifiers).
-- done() prints one line "WRK_RESULT {json}" that bench/run.sh reads.
local method = os.getenv("BENCH_METHOD") or "GET"
local token = os.getenv("BENCH_TOKEN")
local seed = os.getenv("BENCH_SEED") == "1"

wrk.method = method
if token and token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end
local f = os.getenv("BENCH_BODY_FILE")
if f and f ~= "" then
  local h = assert(io.open(f, "rb"))
  wrk.body = h:read("*a")
  h:close()
  wrk.headers["Content-Type"] = os.getenv("BENCH_CTYPE") or "application/fhir+json"
end

local thread_no = 0
function setup(thread)
  thread_no = thread_no + 1
  thread:set("tid", thread_no)
end

-- Seeding: each thread posts BENCH_SEED_PER_THREAD distinct Patients, then only GET /livez.
local n = 0
local per_thread = tonumber(os.getenv("BENCH_SEED_PER_THREAD") or "0")
if seed then request = function()
  n = n + 1
  if n > per_thread then return wrk.format("GET", "/livez") end
  local body = string.format(
    '{"resourceType":"Patient","identifier":[{"system":"urn:bench","value":"t%d-%d"}],' ..
    '"name":[{"family":"Family%d","given":["Given%d"]}],"gender":"female","birthDate":"19%02d-01-01"}',
    tid, n, n % 5000, n % 997, n % 100)
  return wrk.format("POST", "/Patient", {["Content-Type"] = "application/fhir+json",
    ["Authorization"] = "Bearer " .. token}, body)
end end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"errors":%d,"status_errors":%d}\n',
    summary.requests, summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, e.connect + e.read + e.write + e.timeout, e.status))
end
