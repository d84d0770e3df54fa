-- wrk script for bench/scale.sh: seed a store with distinct, realistic Patients, or read them back.
-- Environment:
--   BENCH_MODE     seed | read | search
--   BENCH_TOKEN    bearer token
--   seed:   BENCH_N (Patients in all), BENCH_THREADS (wrk -t, so the threads split BENCH_N),
--           BENCH_DONE_DIR (each thread touches thread-<tid> there once all its creates are answered;
--           scale.sh then stops wrk with SIGINT)
--   read, search: BENCH_SAMPLE (file of "id nhs-number" lines; each request picks one at random)
-- done() prints one line "WRK_RESULT {json}" that bench/scale.sh reads.
--
-- Seeding: thread t of T (t = 1..T) walks k = t-1, t-1+T, t-1+2T, ... and maps k to the 9-digit prefix
-- 400000000 + (7919 k mod 400000000) (a permutation, 7919 being coprime to 4e8), which gives NHS
-- numbers in the 4xx-7xx ranges England issues; a prefix whose Modulus 11 check digit would be 10
-- has no valid NHS number and is skipped. The k are disjoint across threads, so every number is
-- unique. The other fields are drawn from lists by k, so bodies differ. bench/scale.sh replays the
-- same walk (nhs_numbers in its Python) to find the Patients again.
local mode = os.getenv("BENCH_MODE") or "read"
local token = os.getenv("BENCH_TOKEN") or ""
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk, bench_timespec *ts);
]]
local ts = ffi.new("bench_timespec")
local function now() -- CLOCK_MONOTONIC, seconds
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

wrk.headers["Authorization"] = "Bearer " .. token

local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

-- NHS number for candidate k, or nil when its check digit would be 10.
local function nhs_number(k)
  local prefix = string.format("%09d", 400000000 + (k * 7919) % 400000000)
  local sum = 0
  for i = 1, 9 do sum = sum + (prefix:byte(i) - 48) * (11 - i) end
  local check = 11 - sum % 11
  if check == 11 then check = 0 end
  if check == 10 then return nil end
  return prefix .. check
end

-- {display, ascii-for-email}; UTF-8 written as is (JSON allows it, and the service serves it byte for byte).
local families = {
  {"Smith", "smith"}, {"Jones", "jones"}, {"Williams", "williams"}, {"Taylor", "taylor"}, {"Brown", "brown"},
  {"Davies", "davies"}, {"Evans", "evans"}, {"Wilson", "wilson"}, {"Thomas", "thomas"}, {"Roberts", "roberts"},
  {"Ó Briain", "obriain"}, {"Müller", "muller"}, {"Nguyễn", "nguyen"}, {"Kowalczyk", "kowalczyk"},
  {"Okonkwo", "okonkwo"}, {"Patel", "patel"}, {"Khan", "khan"}, {"O'Connor", "oconnor"},
  {"Fernández", "fernandez"}, {"Søndergaard", "sondergaard"}, {"Lefèvre", "lefevre"}, {"Ahmed", "ahmed"},
  {"MacDonald", "macdonald"}, {"Wiśniewska", "wisniewska"}, {"Gonçalves", "goncalves"}, {"Chen", "chen"},
  {"Hughes", "hughes"}, {"ap Rhys", "aprhys"}, {"Nic Giolla Phádraig", "nicgiollaphadraig"}, {"Adeyemi", "adeyemi"},
}
local female = {
  {"Zoë", "zoe"}, {"Siân", "sian"}, {"Olivia", "olivia"}, {"Amelia", "amelia"}, {"Ngozi", "ngozi"},
  {"Aoife", "aoife"}, {"Chloé", "chloe"}, {"Małgorzata", "malgorzata"}, {"Priya", "priya"}, {"Fatima", "fatima"},
  {"Renée", "renee"}, {"Emily", "emily"}, {"Thi Mai", "thimai"}, {"Saoirse", "saoirse"}, {"Ana", "ana"},
}
local male = {
  {"José", "jose"}, {"Łukasz", "lukasz"}, {"Oliver", "oliver"}, {"George", "george"}, {"Chidi", "chidi"},
  {"Seán", "sean"}, {"Jürgen", "jurgen"}, {"Mohammed", "mohammed"}, {"Rhodri", "rhodri"}, {"Arjun", "arjun"},
  {"François", "francois"}, {"Harry", "harry"}, {"Văn Minh", "vanminh"}, {"Tomás", "tomas"}, {"Jack", "jack"},
}
local middle = {"Anne", "Marie", "James", "Elizabeth", "John", "Grace", "Louise", "David", "Rose", "Thomas"}
-- {city, district, postcode area, outward districts}
local places = {
  {"Leeds", "West Yorkshire", "LS", 28}, {"Manchester", "Greater Manchester", "M", 40},
  {"Birmingham", "West Midlands", "B", 48}, {"Bristol", "City of Bristol", "BS", 41},
  {"Newcastle upon Tyne", "Tyne and Wear", "NE", 30}, {"Sheffield", "South Yorkshire", "S", 36},
  {"Norwich", "Norfolk", "NR", 35}, {"Plymouth", "Devon", "PL", 35}, {"London", "Greater London", "SE", 28},
  {"Nottingham", "Nottinghamshire", "NG", 34}, {"Leicester", "Leicestershire", "LE", 19},
  {"Liverpool", "Merseyside", "L", 38}, {"York", "North Yorkshire", "YO", 32}, {"Exeter", "Devon", "EX", 39},
}
local streets = {"Park Row", "Church Street", "Station Road", "Victoria Road", "High Street", "Mill Lane",
  "Chapel Walk", "Albert Terrace", "Queen's Drive", "Green Lane", "St Mary's Close", "Kingsway"}
local inward = "ABDEFGHJLNPQRSTUWXYZ" -- letters used in the inward code (no C I K M O V)
local marital = {{"M", "Married"}, {"S", "Never Married"}, {"D", "Divorced"}, {"W", "Widowed"}, {"U", "unmarried"}}
local surgeries = {"Park Row Surgery", "The Health Centre", "Riverside Medical Practice", "Station Road Surgery",
  "Abbey Medical Group", "Church View Practice"}

local function pick(list, k, mul) return list[(k * mul + 7) % #list + 1] end

local function patient(k, nhs)
  local gender = ({"female", "male", "female", "male", "female", "male", "other", "unknown"})[k % 8 + 1]
  local given = (gender == "male" or (gender ~= "female" and k % 2 == 0)) and pick(male, k, 13) or pick(female, k, 13)
  local family = pick(families, k, 31)
  local place = pick(places, k, 17)
  local a, b = (k * 7) % #inward + 1, (k * 11) % #inward + 1
  local postcode = string.format("%s%d %d%s%s", place[3], k % place[4] + 1, k % 9 + 1,
    inward:sub(a, a), inward:sub(b, b))
  local ms = pick(marital, k, 3)
  local line = string.format('"%d %s"', k % 180 + 1, pick(streets, k, 5))
  if k % 3 == 0 then line = string.format('"Flat %d",', k % 40 + 1) .. line end
  return string.format(
    '{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"%s"}],' ..
    '"active":true,"name":[{"use":"official","family":"%s","given":["%s","%s"]}],' ..
    '"telecom":[{"system":"phone","value":"07700 900%03d","use":"mobile"},' ..
    '{"system":"email","value":"%s.%s%d@example.com","use":"home"}],' ..
    '"gender":"%s","birthDate":"%04d-%02d-%02d",' ..
    '"address":[{"use":"home","line":[%s],"city":"%s","district":"%s","postalCode":"%s","country":"GB"}],' ..
    '"maritalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",' ..
    '"code":"%s","display":"%s"}]},' ..
    '"generalPractitioner":[{"type":"Organization","identifier":{"system":' ..
    '"https://fhir.nhs.uk/Id/ods-organization-code","value":"%s%05d"},"display":"%s"}]}',
    nhs, family[1], given[1], pick(middle, k, 7), k % 1000, given[2], family[2], k % 1000,
    gender, 1930 + k % 95, k % 12 + 1, k % 28 + 1,
    line, place[1], place[2], postcode, ms[1], ms[2],
    string.char(65 + k % 26), 80000 + k % 9000, pick(surgeries, k, 19))
end

local sent, answered, first_error = 0, 0, nil
created, failed, t_first, t_last = 0, 0, 0, 0 -- globals, so that done() can read them with thread:get

if mode == "seed" then
  local n_all = tonumber(os.getenv("BENCH_N"))
  local nthreads = tonumber(os.getenv("BENCH_THREADS"))
  local done_dir = os.getenv("BENCH_DONE_DIR")
  local quota, j
  -- wrk.format uses these headers instead of wrk.headers, so the token goes here too
  local post_headers = {["Content-Type"] = "application/fhir+json", ["Authorization"] = "Bearer " .. token}

  local function next_patient()
    while true do
      local k = (tid - 1) + nthreads * j
      j = j + 1
      local nhs = nhs_number(k)
      if nhs then return patient(k, nhs) end
    end
  end

  local verify_call
  function init(args)
    -- tid is set by setup() before init runs
    quota = math.floor(n_all / nthreads) + ((tid <= n_all % nthreads) and 1 or 0)
    j = 0
    -- wrk calls request() once on the first thread's state right after init, to check the script,
    -- and never sends that request: so that call must not use up a Patient. (Were it ever sent, a
    -- GET /livez is harmless: its 200 is not counted.)
    verify_call = tid == 1
  end

  function request()
    if verify_call then verify_call = false; return wrk.format("GET", "/livez") end
    if sent >= quota then return wrk.format("GET", "/livez") end -- only until the last answers arrive
    if t_first == 0 then t_first = now() end
    sent = sent + 1
    return wrk.format("POST", "/Patient", post_headers, next_patient())
  end

  function response(status, headers, body)
    if status == 200 then return end -- /livez
    answered = answered + 1
    if status == 201 then
      created = created + 1
    else
      failed = failed + 1
      if not first_error then
        first_error = status .. " " .. body:sub(1, 400)
        io.stderr:write("seed: POST /Patient answered " .. first_error .. "\n")
      end
    end
    if answered == quota then
      t_last = now()
      local f = assert(io.open(string.format("%s/thread-%d", done_dir, tid), "w"))
      f:write(string.format("%d %d\n", created, failed))
      f:close()
      wrk.thread:stop()
    end
  end

  function done(summary, latency, requests)
    local c, f, t0, t1 = 0, 0, math.huge, 0
    for _, t in ipairs(threads) do
      c, f = c + t:get("created"), f + t:get("failed")
      t0, t1 = math.min(t0, t:get("t_first")), math.max(t1, t:get("t_last"))
    end
    io.write(string.format(
      'WRK_RESULT {"created":%d,"failed":%d,"seconds":%.3f,"creates_per_s":%.1f,"p50_ms":%.3f,"p99_ms":%.3f}\n',
      c, f, t1 - t0, c / (t1 - t0), latency:percentile(50) / 1000, latency:percentile(99) / 1000))
  end
else
  local ids, nhs = {}, {}
  local f = os.getenv("BENCH_SAMPLE")
  if f and f ~= "" then
    for l in io.lines(f) do
      local id, number = l:match("^(%S+) (%d+)$")
      if id then ids[#ids + 1], nhs[#nhs + 1] = id, number end
    end
    assert(#ids > 0, "BENCH_SAMPLE " .. f .. " holds no \"id nhs-number\" lines")
  end

  function init(args)
    math.randomseed((tid or 1) * 7919 + os.time())
  end

  if mode == "read" then
    function request() return wrk.format("GET", "/Patient/" .. ids[math.random(#ids)]) end
  elseif mode == "search" then
    function request()
      return wrk.format("GET", "/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C" .. nhs[math.random(#nhs)])
    end
  end

  function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
      'WRK_RESULT {"requests":%d,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"errors":%d,"status_errors":%d}\n',
      summary.requests, summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
      latency:percentile(99) / 1000, e.connect + e.read + e.write + e.timeout, e.status))
  end
end
