--[[
  Helpers every resource-limiter script shares, inlined where a script says "-- @include limiter".

  A bucket (a field of the buckets hash: the resource for its chunk bucket, "<resource>:items" for its
  item bucket) is "<rate> <burst> <tokens> <refilledAt>": chunks or items per second, the bucket's
  size, its tokens (below 0: debt) and when it was last refilled (ms, Redis time; ahead of now while
  reserved grants wait: the last grant's time). A slot is a member "<slot>:<permitId>" of the resource's sorted set,
  scored by its expiry (ms, Redis time). A wait is JSON with `since` and `until` (ms, Redis time).
]]

-- Redis server time in ms with its microseconds: rates and expiry are decided here, never on a
-- worker's clock (D5, D18).
local function serverMs()
  local time = redis.call("TIME")
  return tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
end

-- A number as text with all its digits: tostring keeps 14, and a number in a reply is cut to an integer.
local function exact(x)
  return string.format("%.17g", x)
end

local function parseBucket(text)
  local rate, burst, tokens, at = string.match(text, "^(%S+) (%S+) (%S+) (%S+)$")
  return tonumber(rate), tonumber(burst), tonumber(tokens), tonumber(at)
end

local function formatBucket(rate, burst, tokens, at)
  return exact(rate) .. " " .. exact(burst) .. " " .. exact(tokens) .. " " .. exact(at)
end

-- A wait as JSON: `prefix` is the holder's JSON object without its closing brace.
local function waitJson(prefix, since, till)
  return prefix .. ',"since":' .. exact(since) .. ',"until":' .. exact(till) .. '}'
end
