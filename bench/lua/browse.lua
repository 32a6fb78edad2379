-- The browse mix: 70 % plain listings (four sorts, a few pages deep through the
-- first page only: keyset tokens are opaque), 20 % filtered or searched
-- listings (category, price range, in stock, a search word), 10 % product pages.
-- Inputs: BENCH_IDS (product ids), BENCH_CATEGORIES (category ids), BENCH_WORDS
-- (search words), one per line.
local common = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local ids = common.lines(os.getenv("BENCH_IDS"))
local categories = common.lines(os.getenv("BENCH_CATEGORIES"))
local words = common.lines(os.getenv("BENCH_WORDS"))
local sorts = { "newest", "price_asc", "price_desc", "name_asc" }

function init(args)
  math.randomseed((thread_id or 1) * 104729 + os.time())
end

local function pick(list) return list[math.random(#list)] end

function request()
  local roll = math.random(100)
  local path
  if roll <= 70 then
    path = "/api/v1/products?page_size=20&sort=" .. pick(sorts)
  elseif roll <= 90 then
    local kind = math.random(4)
    if kind == 1 then
      path = "/api/v1/products?page_size=20&category_id=" .. pick(categories)
    elseif kind == 2 then
      local low = math.random(0, 40) * 100
      path = string.format("/api/v1/products?page_size=20&currency=EUR&min_price=%d&max_price=%d&sort=price_asc",
        low, low + 1500)
    elseif kind == 3 then
      path = "/api/v1/products?page_size=20&in_stock=true&category_id=" .. pick(categories)
    else
      path = "/api/v1/products?page_size=20&q=" .. pick(words)
    end
  else
    path = "/api/v1/products/" .. pick(ids)
  end
  return wrk.format("GET", path)
end

function response(status, headers, body)
  common.count(status)
end
