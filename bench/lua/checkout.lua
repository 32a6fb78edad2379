-- POST /api/v1/orders as many buyers (BENCH_TOKENS: one access token per line)
-- over many products (BENCH_IDS), 1 to 3 distinct products of quantity 1 each,
-- every request with its own Idempotency-Key (BENCH_RUN + thread + counter).
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local ids = common.lines(os.getenv("BENCH_IDS"))
local tokens = common.lines(os.getenv("BENCH_TOKENS"))
local run = common.env("BENCH_RUN", "run")
local counter = 0
local address = '"shipping_address": {"recipient_name": "Bench Buyer", "line1": "1 Load Street", ' ..
  '"city": "Lisbon", "postal_code": "1000-001", "country_code": "PT"}'

function init(args)
  math.randomseed((thread_id or 1) * 15485863 + os.time())
end

function request()
  counter = counter + 1
  local count = math.random(3)
  local chosen, items = {}, {}
  while #items < count do
    local id = ids[math.random(#ids)]
    if not chosen[id] then
      chosen[id] = true
      items[#items + 1] = string.format('{"product_id": "%s", "quantity": 1}', id)
    end
  end
  local body = '{"items": [' .. table.concat(items, ", ") .. '], ' .. address .. '}'
  local headers = {
    ["Authorization"] = "Bearer " .. tokens[math.random(#tokens)],
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = string.format("%s-%d-%d", run, thread_id or 0, counter),
  }
  return wrk.format("POST", "/api/v1/orders", headers, body)
end

function response(status, headers, body)
  common.count(status)
end
