-- Motion-sensor events for wrk in bursts: <burst> requests back-to-back on each connection, then
-- <gap_ms> of silence (from the last answer of the burst), repeated until wrk's -d ends.
-- A gap longer than a plane's scale-to-zero grace period makes the first request of each
-- burst a cold start there.
--
--   wrk -t1 -c1 -d30s --timeout 30s -s motion.lua http://127.0.0.1:18080 -- <burst> <gap_ms> <logdir>
--
--   burst    requests per burst (default 20)
--   gap_ms   idle time between bursts (default 4000)
--   logdir   where each thread writes req-<thread>.log ("t_start_ms latency_ms status first",
--            first = 1 for a burst's first request); "-" for none. Use one connection per
--            thread (-tN -cN) when logging, so that requests and answers alternate.
--   Keep --timeout above gap_ms: wrk counts a connection that has been idle longer than the
--   timeout as a timeout error.
--
-- Request: POST /motion, body sensor=<1..16>&room=<1..8>&motion=<0|1>&lux=<0..1000>.
-- Expected answer: 200 with a text mentioning "room".

local dir = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
package.path = dir .. "?.lua;" .. package.path
local common = require("common")

local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local burst, gap_ms = 20, 4000
local sent = 0

setup = common.setup
done = common.done

function init(args)
  burst = tonumber(args[1] or "20") or 20
  gap_ms = tonumber(args[2] or "4000") or 4000
  if burst < 1 then
    burst = 1
  end
  common.open_log(args[3])
  math.randomseed(104729 * common.thread_id())
end

-- wrk calls delay() once before each request it sends: the burst bookkeeping lives here.
local next_first = true

function delay()
  common.arm()
  next_first = sent % burst == 0
  local wait = 0
  if sent > 0 and next_first then
    wait = gap_ms
  end
  sent = sent + 1
  return wait
end

local function event_body()
  return string.format("sensor=%d&room=%d&motion=%d&lux=%d",
    math.random(1, 16), math.random(1, 8), math.random(0, 1), math.random(0, 1000))
end

function request()
  common.mark_request(next_first)
  return wrk.format("POST", "/motion", FORM, event_body())
end

function response(status, headers, body)
  common.mark_response(status)
  common.check(status, body, body ~= nil and string.find(body, "room", 1, true) ~= nil)
end
