-- Online Boutique user mix for wrk, after the Locust loadgenerator of the Online Boutique demo
-- (the SPRIGHT paper drove its boutique experiments with it). Task weights:
--   index 1, setCurrency 2, browseProduct 10, addToCart 2, viewCart 3, checkout 1
-- As in the Locust file, addToCart is "GET the product page, then POST it to the cart" and
-- checkout is "addToCart, then POST the checkout form" (the checkout POST held back until the
-- add-to-cart is surely answered: see HOLD_MS below). The requests of a task are queued and
-- sent by whichever of the thread's connections is free next.
--
--   wrk -t1 -c32 -d15s -s boutique.lua http://127.0.0.1:18080 -- <product_ids.txt> [rate] [sessions] [tag]
--
--   product_ids.txt  one product id a line (examples/boutique/data/product_ids.txt)
--   rate             requests/s this wrk thread offers (paced through delay()); 0 = closed loop
--   sessions         active sessions per thread (default 8); each task picks one at random
--   tag              up to 4 characters starting every session id (default: random), so that
--                    runs against the same plane do not share carts
--
-- Every answer must be 200 with an HTML page containing "<title>"; anything else is counted
-- (non200, bad_body) and reported by done() in the "SPRIGHT-BENCH {json}" line.

local dir = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
package.path = dir .. "?.lua;" .. package.path
local common = require("common")

local CURRENCIES = { "USD", "EUR", "CAD", "JPY", "GBP", "TRY" }
local CHECKOUT_FORM = "email=someone%40example.com&street_address=1600+Amphitheatre+Parkway"
  .. "&zip_code=94043&city=Mountain+View&state=CA&country=United+States"
  .. "&credit_card_number=4432801561520454&credit_card_expiration_month=1"
  .. "&credit_card_expiration_year=2039&credit_card_cvv=672"
local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded" }

local products = {}
local sessions = {}    -- the active sessions of this thread
local queue = {}       -- requests of the current task still to send
local checkouts = {}   -- sessions waiting for their checkout: { s, not_before_ms, not_before_sent }
local tasks            -- { {weight, fn}, ... }
local total_weight = 0
local tag, tid = "", 1
local next_session = 0
local sent = 0
local hold_sent = 128

-- Checkout of an empty cart is an error (5xx), and requests of one thread go out on whichever
-- connection is free, so a checkout sent right after its add-to-cart could overtake it. So, as
-- in Locust, a checkout task adds to the session's cart, but then the session is retired (a
-- fresh one takes its place) and its checkout is sent once the session has had no request for
-- HOLD_MS and the thread has sent `hold_sent` (4 x connections) requests since: by then its
-- add-to-cart has long been answered. A cart holds at most 32 products: a session that has
-- added MAX_DISTINCT different ones is retired the same way (one extra checkout, rarely).
-- Session ids are at most 16 bytes (the boutique's limit).
local HOLD_MS = 1000
local MAX_DISTINCT = 24

local function pick(list)
  return list[math.random(#list)]
end

local function new_session()
  next_session = next_session + 1
  return { id = "s" .. tag .. tid .. "n" .. next_session, currency = "USD", distinct = 0, added = {} }
end

local function get(path)
  return wrk.format("GET", path)
end

local function post(path, body)
  return wrk.format("POST", path, FORM, body)
end

local function home(s)
  return get("/boutique/?session=" .. s.id .. "&currency=" .. s.currency)
end

local function product(s, id)
  return get("/boutique/product/" .. id .. "?session=" .. s.id .. "&currency=" .. s.currency)
end

local function view_cart(s)
  return get("/boutique/cart?session=" .. s.id .. "&currency=" .. s.currency)
end

local function retire(i)
  local s = sessions[i]
  sessions[i] = new_session()
  table.insert(checkouts, { s, common.mono_ms() + HOLD_MS, sent + hold_sent })
end

local function add_to_cart(i, id)
  local s = sessions[i]
  if not s.added[id] then
    s.added[id] = true
    s.distinct = s.distinct + 1
  end
  return post("/boutique/cart?session=" .. s.id,
    "product_id=" .. id .. "&quantity=" .. math.random(1, 10))
end

local function set_currency(s)
  s.currency = pick(CURRENCIES)
  return post("/boutique/setCurrency?session=" .. s.id, "currency_code=" .. s.currency)
end

local function checkout(s)
  return post("/boutique/cart/checkout?session=" .. s.id .. "&currency=" .. s.currency, CHECKOUT_FORM)
end

-- Each task: the index of the session it acts for -> the requests to send, in order.
tasks = {
  { 1, function(i) return { home(sessions[i]) } end },
  { 2, function(i) return { set_currency(sessions[i]) } end },
  { 10, function(i) return { product(sessions[i], pick(products)) } end },
  { 2, function(i)
    local id = pick(products)
    local out = { product(sessions[i], id), add_to_cart(i, id) }
    if sessions[i].distinct >= MAX_DISTINCT then
      retire(i)
    end
    return out
  end },
  { 3, function(i) return { view_cart(sessions[i]) } end },
  { 1, function(i)
    local id = pick(products)
    local out = { product(sessions[i], id), add_to_cart(i, id) }
    retire(i)   -- its checkout follows once the add-to-cart is surely done
    return out
  end },
}
for _, t in ipairs(tasks) do
  total_weight = total_weight + t[1]
end

local function next_task()
  local r = math.random() * total_weight
  for _, t in ipairs(tasks) do
    r = r - t[1]
    if r < 0 then
      return t[2]
    end
  end
  return tasks[#tasks][2]
end

setup = common.setup
done = common.done

function init(args)
  local path = args[1] or os.getenv("SPRIGHT_BOUTIQUE_PRODUCTS")
  if path == nil then
    error("boutique.lua: pass the product id file: wrk ... -s boutique.lua URL -- <product_ids.txt>")
  end
  local f = io.open(path, "r")
  if f == nil then
    error("boutique.lua: cannot open product id file " .. path)
  end
  for line in f:lines() do
    local id = string.match(line, "^%s*(%S+)%s*$")
    if id ~= nil and string.sub(id, 1, 1) ~= "#" then
      table.insert(products, id)
    end
  end
  f:close()
  if #products == 0 then
    error("boutique.lua: no product ids in " .. path)
  end

  tid = common.thread_id()
  -- The same request sequence for every plane: the seed depends on the thread only.
  math.randomseed(7919 * tid)
  local rate = tonumber(args[2] or "0") or 0
  local nsessions = tonumber(args[3] or "8") or 8
  tag = string.sub(args[4] or string.format("%x", math.floor(common.real_ms()) % 65536), 1, 4)
  hold_sent = 4 * nsessions
  for _ = 1, nsessions do
    table.insert(sessions, new_session())
  end

  if rate > 0 then
    delay = common.pacer(1000 / rate)
  else
    delay = nil   -- closed loop: wrk reads this after init() and then never calls delay()
  end
end

function request()
  sent = sent + 1
  local c = checkouts[1]
  if c ~= nil and sent >= c[3] and common.mono_ms() >= c[2] then
    table.remove(checkouts, 1)
    return checkout(c[1])
  end
  if #queue == 0 then
    queue = next_task()(math.random(#sessions))
  end
  return table.remove(queue, 1)
end

function response(status, headers, body)
  common.check(status, body, body ~= nil and string.find(body, "<title>", 1, true) ~= nil)
end
