-- Helpers shared by the workload scripts (boutique.lua, motion.lua, parking.lua), loaded with
-- require() from the scripts' own directory. wrk runs each script in one Lua state per thread
-- plus a main state (setup() and done() run there), so everything here is per state.
--
-- What the scripts get:
--   clocks      mono_ms() / real_ms(): CLOCK_MONOTONIC / CLOCK_REALTIME in ms (LuaJIT ffi)
--   pacing      pacer(interval_ms): a delay() that hands connections the slots of a fixed schedule
--   checking    check(status, body, ok): counts non-200 answers and failed content checks
--   logging     open_log(dir) / log(): "t_start_ms latency_ms status first" per request
--   reporting   setup() and done(): one "SPRIGHT-BENCH {json}" line with wrk's summary, the
--               latency percentiles and the script's own counters summed over the threads

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } spright_bench_timespec;
int clock_gettime(int clk_id, spright_bench_timespec *tp);
]]

local M = {}

local CLOCK_REALTIME, CLOCK_MONOTONIC = 0, 1
local ts = ffi.new("spright_bench_timespec")

function M.mono_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1e3 + tonumber(ts.tv_nsec) / 1e6
end

function M.real_ms()
  ffi.C.clock_gettime(CLOCK_REALTIME, ts)
  return tonumber(ts.tv_sec) * 1e3 + tonumber(ts.tv_nsec) / 1e6
end

-- Per-thread id, set by setup() in the main state before the thread's init() runs.
function M.thread_id()
  return tonumber(wrk.thread:get("tid")) or 1
end

-- A delay() for a fixed offered rate: the thread keeps one schedule of send slots,
-- interval_ms apart, and each connection that becomes free takes the next slot, so the
-- thread offers 1000 / interval_ms requests per second however many of its connections are
-- waiting for answers. A connection is never ahead of the schedule; when every connection was
-- busy past a slot, the schedule catches up by at most `slack_ms` and otherwise restarts from
-- now (the offered rate then drops, and the achieved rate shows it). wrk sleeps whole
-- milliseconds; rounding is per slot, so it does not accumulate.
function M.pacer(interval_ms, slack_ms)
  slack_ms = slack_ms or math.max(interval_ms, 10)
  local next_slot = nil
  return function()
    M.arm()
    local now = M.mono_ms()
    if next_slot == nil or next_slot < now - slack_ms then
      next_slot = now
    end
    local wait = next_slot - now
    next_slot = next_slot + interval_ms
    if wait <= 0 then
      return 0
    end
    return math.floor(wait + 0.5)
  end
end

-- Answer checking. Counters are globals so done() can read them with thread:get().
non200 = 0
bad_body = 0
first_bad = ""

function M.check(status, body, ok)
  if status ~= 200 then
    non200 = non200 + 1
  elseif not ok then
    bad_body = bad_body + 1
  else
    return true
  end
  if first_bad == "" then
    first_bad = tostring(status) .. ": " .. string.sub(body or "", 1, 200)
  end
  return false
end

-- Per-request log: one file per thread, "t_start_ms latency_ms status first" per line, where
-- t_start_ms is CLOCK_REALTIME in ms at request(), latency_ms is CLOCK_MONOTONIC from
-- request() to response(), first is 1 for the first request of a burst (motion) or 0.
-- Only meaningful with one connection per thread, so that request() and response() alternate.
-- wrk calls request() once before the run to check what it returns (script_verify_request);
-- that request is never sent. Scripts with a delay() call arm() from it: wrk calls delay()
-- before every request it sends, so request() calls before the first delay() are the check.
local armed = false

function M.arm()
  armed = true
end

function M.armed()
  return armed
end

local log_file = nil
local pending_real, pending_mono, pending_first = nil, nil, 0
lost = 0   -- request() called again before the previous response (reconnect after an error)

function M.open_log(dir)
  if dir == nil or dir == "" or dir == "-" then
    return
  end
  local path = dir .. "/req-" .. M.thread_id() .. ".log"
  log_file = assert(io.open(path, "w"))
  log_file:setvbuf("full")
end

function M.mark_request(first)
  if log_file == nil or not armed then
    return
  end
  if pending_mono ~= nil then
    lost = lost + 1
  end
  pending_real, pending_mono, pending_first = M.real_ms(), M.mono_ms(), first and 1 or 0
end

function M.mark_response(status)
  if log_file == nil or pending_mono == nil then
    return
  end
  local latency = M.mono_ms() - pending_mono
  log_file:write(string.format("%.3f %.3f %d %d\n", pending_real, latency, status, pending_first))
  pending_mono = nil
  -- wrk exits through exit(), which flushes stdio, but a killed wrk would lose a full buffer.
  logged = (logged or 0) + 1
  if logged % 64 == 0 then
    log_file:flush()
  end
end

-- Main-state side: number the threads and collect them for done().
local threads = {}

function M.setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local function json_string(s)
  s = string.gsub(s, '[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return string.format("\\u%04x", string.byte(c))
  end)
  -- Keep the line valid JSON even if the body sample ends inside a multi-byte character.
  s = string.gsub(s, "[\128-\255]", "?")
  return '"' .. s .. '"'
end

local PERCENTILES = { 50, 90, 95, 99, 99.9, 99.99 }

function M.done(summary, latency, requests)
  local sum = { non200 = 0, bad_body = 0, lost = 0 }
  local sample = ""
  for _, t in ipairs(threads) do
    for k, _ in pairs(sum) do
      sum[k] = sum[k] + (tonumber(t:get(k)) or 0)
    end
    local fb = t:get("first_bad")
    if sample == "" and fb ~= nil and fb ~= "" then
      sample = fb
    end
  end
  local e = summary.errors
  local out = {}
  local function add(k, v)
    table.insert(out, '"' .. k .. '":' .. v)
  end
  add("requests", string.format("%d", summary.requests))
  add("duration_us", string.format("%d", summary.duration))
  add("bytes", string.format("%d", summary.bytes))
  add("errors", string.format('{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}',
    e.connect, e.read, e.write, e.status, e.timeout))
  add("non200", string.format("%d", sum.non200))
  add("bad_body", string.format("%d", sum.bad_body))
  add("lost", string.format("%d", sum.lost))
  add("sample", json_string(sample))
  local lat = { string.format('"min":%d,"max":%d,"mean":%.1f,"stdev":%.1f',
    latency.min, latency.max, latency.mean, latency.stdev) }
  for _, p in ipairs(PERCENTILES) do
    table.insert(lat, string.format('"p%s":%d', tostring(p), latency:percentile(p)))
  end
  add("latency_us", "{" .. table.concat(lat, ",") .. "}")
  -- The CDF: 100 points (p = 1 .. 100), then the tail.
  local cdf = {}
  for p = 1, 100 do
    table.insert(cdf, string.format("[%g,%d]", p, latency:percentile(p)))
  end
  for _, p in ipairs({ 99.5, 99.9, 99.95, 99.99 }) do
    table.insert(cdf, string.format("[%g,%d]", p, latency:percentile(p)))
  end
  add("cdf_us", "[" .. table.concat(cdf, ",") .. "]")
  io.write("SPRIGHT-BENCH {" .. table.concat(out, ",") .. "}\n")
end

return M
