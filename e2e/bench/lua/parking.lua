-- Parking-lot camera images for wrk: POST /parking with one PGM image a request, cycling over
-- the images of a directory, either periodically (one request every <period_ms> per thread,
-- paced through delay()) or closed loop (period 0).
--
--   wrk -t1 -c1 -d15s --timeout 30s -s parking.lua http://127.0.0.1:18080 -- <period_ms> <imgdir> [logdir] [check]
--
--   period_ms  time between requests of a thread; 0 = closed loop (no delay)
--   imgdir     made by `spright-parking-images <imgdir> <count>`: 0.pgm .. <count-1>.pgm and
--              plates.txt, the plate expected for image i on line i+1
--   logdir     where each thread writes req-<thread>.log ("t_start_ms latency_ms status 0");
--              "-" for none. Needs one connection per thread (-tN -cN).
--   check      "exact" (default): the answer must contain the plate of the image sent, which
--              needs one connection per thread; "any": it must contain one of the plates
--              (several connections per thread, where answers can't be matched to requests)
--
-- Request: Content-Type application/octet-stream, the image bytes as the body.
-- Expected answer: 200 with a text containing the plate read.

local dir = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
package.path = dir .. "?.lua;" .. package.path
local common = require("common")

local requests = {}   -- one preformatted request per image
local plates = {}
local next_image = 1
local last_image = nil
local exact = true

setup = common.setup
done = common.done

local function read_all(path)
  local f = io.open(path, "rb")
  if f == nil then
    error("parking.lua: cannot open " .. path)
  end
  local data = f:read("*a")
  f:close()
  return data
end

function init(args)
  local period = tonumber(args[1] or "0") or 0
  local imgdir = args[2]
  if imgdir == nil then
    error("parking.lua: pass the image directory: wrk ... -s parking.lua URL -- <period_ms> <imgdir>")
  end
  common.open_log(args[3])
  exact = (args[4] or "exact") ~= "any"

  local f = io.open(imgdir .. "/plates.txt", "r")
  if f == nil then
    error("parking.lua: cannot open " .. imgdir .. "/plates.txt")
  end
  for line in f:lines() do
    table.insert(plates, string.match(line, "^%s*(.-)%s*$"))
  end
  f:close()
  while #plates > 0 and plates[#plates] == "" do
    table.remove(plates)
  end
  if #plates == 0 then
    error("parking.lua: no plates in " .. imgdir .. "/plates.txt")
  end
  local headers = { ["Content-Type"] = "application/octet-stream" }
  for i = 1, #plates do
    local body = read_all(imgdir .. "/" .. (i - 1) .. ".pgm")
    requests[i] = wrk.format("POST", "/parking", headers, body)
  end
  -- Threads start at different images.
  next_image = ((common.thread_id() - 1) * 7) % #plates + 1

  if period > 0 then
    delay = common.pacer(period)
  else
    delay = nil
  end
end

function request()
  last_image = next_image
  next_image = next_image % #requests + 1
  common.mark_request(false)
  return requests[last_image]
end

local function has_plate(body)
  if body == nil then
    return false
  end
  if exact then
    return string.find(body, plates[last_image], 1, true) ~= nil
  end
  for _, p in ipairs(plates) do
    if string.find(body, p, 1, true) ~= nil then
      return true
    end
  end
  return false
end

function response(status, headers, body)
  common.mark_response(status)
  common.check(status, body, has_plate(body))
end
