-- Shared by the wrk scripts of bench/: input files, pacing, per-status counts,
-- and done(), which prints one machine-readable line the runner parses:
--   BENCH_JSON {"requests": ..., "latency_us": {"p50": ...}, ...}
-- Each wrk thread has its own Lua state; setup() keeps the threads so done()
-- can add up their counters.

local M = {}

function M.lines(path)
  local found = {}
  local file = assert(io.open(path, "r"), "cannot open " .. tostring(path))
  for line in file:lines() do
    if line ~= "" then found[#found + 1] = line end
  end
  file:close()
  assert(#found > 0, "empty input file " .. path)
  return found
end

function M.env(name, default)
  local value = os.getenv(name)
  if value == nil or value == "" then return default end
  return value
end

-- Statuses counted per thread (globals, so thread:get() can read them).
counted = { 200, 201, 400, 401, 404, 409, 422, 429, 500, 502, 503, 504 }
for _, code in ipairs(counted) do _G["status_" .. code] = 0 end
status_other = 0

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
  threads[#threads + 1] = thread
end

function M.count(status)
  local key = "status_" .. status
  if _G[key] ~= nil then _G[key] = _G[key] + 1 else status_other = status_other + 1 end
end

-- Closed-loop pacing: with BENCH_DELAY_MS set, every connection waits about that
-- long between a response and its next request (how a fixed request rate is
-- approximated).  The pause is drawn uniformly from 0.5x to 1.5x, so connections
-- that start together drift apart instead of sending in synchronized bursts.
local pause = tonumber(M.env("BENCH_DELAY_MS", "0"))
local seeded = false
if pause > 0 then
  function delay()
    if not seeded then
      math.randomseed((thread_id or 1) * 7919 + os.time())
      seeded = true
    end
    return math.floor(pause * (0.5 + math.random()))
  end
end

local function json_number(value)
  if value ~= value or value == math.huge then return "null" end
  return string.format("%.3f", value)
end

function done(summary, latency, requests)
  local statuses = {}
  for _, code in ipairs(counted) do
    local total = 0
    for _, thread in ipairs(threads) do total = total + (thread:get("status_" .. code) or 0) end
    if total > 0 then statuses[#statuses + 1] = string.format('"%d": %d', code, total) end
  end
  local other = 0
  for _, thread in ipairs(threads) do other = other + (thread:get("status_other") or 0) end
  if other > 0 then statuses[#statuses + 1] = string.format('"other": %d', other) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %s, "mean": %s, "max": %s, "p50": %s, "p90": %s, "p99": %s, "p999": %s}, ' ..
    '"statuses": {%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    json_number(latency.min), json_number(latency.mean), json_number(latency.max),
    json_number(latency:percentile(50)), json_number(latency:percentile(90)),
    json_number(latency:percentile(99)), json_number(latency:percentile(99.9)),
    table.concat(statuses, ", ")))
end

return M
