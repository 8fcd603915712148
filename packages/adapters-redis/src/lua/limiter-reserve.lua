--[[
  Takes a chunk's rate tokens on a resource, at one grant time: one token from its chunk bucket (when it
  has a chunks-per-second rate) and ARGV[4] tokens from its item bucket (when it has an items-per-second
  rate). Each bucket refills at its rate up to its burst from its last refill, which is never moved back
  in time: the bucket's level is taken at now, or at its last grant if that is later. The grant time is
  the earliest, now or later, when every bucket holds its cost (a cost above the burst: when the bucket,
  for it uncapped, holds it); the cost is taken from every bucket at that time, which becomes each
  bucket's last refill. A grant ahead of now is how long the caller waits (recorded in the waits hash
  until then). So chunks held back by one bucket do not bunch up on the other.

  Input:
    KEYS[1] the buckets hash (field: resource for its chunk bucket, "<resource>:items" for its item bucket)
    KEYS[2] the waits hash (field: the holder's run and unit)

    ARGV[1] resource
    ARGV[2] the holder's field in the waits hash
    ARGV[3] the wait's JSON without its closing brace (holder, resource, kind "rate")
    ARGV[4] item tokens to take: the chunk's planned size

  Output: nil when the resource has no rate limit, else { waitMs, grantedAt, items taken } as text (ms,
  Redis time; items 0 without an item bucket)
]]
-- @include limiter
local now = serverMs()
local fields = { ARGV[1], ARGV[1] .. ":items" }
local costs = { 1, tonumber(ARGV[4]) }
local draws = {}
local grant = now
for i = 1, 2 do
  local bucket = redis.call("HGET", KEYS[1], fields[i])
  if bucket then
    local rate, burst, tokens, at = parseBucket(bucket)
    local from = math.max(at, now)
    local level = math.min(burst, tokens + (from - at) / 1000 * rate)
    local due = from + math.max(0, costs[i] - level) / rate * 1000
    draws[#draws + 1] = { field = fields[i], rate = rate, burst = burst, cost = costs[i], from = from, level = level }
    grant = math.max(grant, due)
  end
end
if #draws == 0 then return nil end
local items = 0
for _, d in ipairs(draws) do
  local held = d.level + (grant - d.from) / 1000 * d.rate
  local tokens = math.min(math.max(d.burst, d.cost), held) - d.cost
  redis.call("HSET", KEYS[1], d.field, formatBucket(d.rate, d.burst, tokens, grant))
  if d.field ~= ARGV[1] then items = d.cost end
end
local waitMs = grant - now
if waitMs > 0 then redis.call("HSET", KEYS[2], ARGV[2], waitJson(ARGV[3], now, grant)) end
return { exact(waitMs), exact(grant), exact(items) }
