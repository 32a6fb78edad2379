-- GET /api/v1/products/{id} over the product ids in BENCH_IDS (one per line),
-- each thread starting at its own offset.  Used for the edge overhead scenario
-- and the Starlette reference (which ignores the id).
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local ids = common.lines(os.getenv("BENCH_IDS"))
local prefix = common.env("BENCH_PATH", "/api/v1/products/")
local position = 0

function init(args)
  position = (thread_id or 1) * 7919 % #ids
end

function request()
  position = position % #ids + 1
  return wrk.format("GET", prefix .. ids[position])
end

function response(status, headers, body)
  common.count(status)
end
