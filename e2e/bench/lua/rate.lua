-- A fixed offered rate for the data-plane benchmark's light-load rows:
--
--   wrk -t1 -c4 -d20s -s rate.lua http://127.0.0.1:8184/noop/echo -- <rate> [method] [body]
--
-- Each connection that becomes free takes the next slot of one schedule (common.pacer), so the
-- thread offers <rate> requests per second however many connections wait for answers.

local dir = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
package.path = dir .. "?.lua;" .. package.path
local common = require("common")

local pace

function init(args)
  local rate = tonumber(args[1]) or error("rate.lua: the first argument is the rate")
  pace = common.pacer(1000 / rate)
  wrk.method = args[2] or "GET"
  wrk.body = args[3]
end

function delay()
  return pace()
end
