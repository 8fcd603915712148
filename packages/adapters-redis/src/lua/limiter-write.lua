--[[
  Writes a resource's limits if its stored setting is still the one the caller read (compare and set:
  the caller decided the change from it, and tries again when another changed it first), and appends
  the change to the audit stream, both at Redis time. Each bucket (chunks, and items) first refills at
  its old rate and burst up to now (never back in time), then is capped by the new burst; a rate set
  where there was none starts full; a rate removed drops its bucket.

  Input:
    KEYS[1] the settings hash (field: resource, value: the setting's JSON)
    KEYS[2] the buckets hash (field: resource for its chunk bucket, "<resource>:items" for its item bucket)
    KEYS[3] the caps hash
    KEYS[4] the audit stream

    ARGV[1] resource
    ARGV[2] the stored setting the caller read ("" when there was none)
    ARGV[3] the new setting's JSON without updatedAt and its closing brace
    ARGV[4] chunks per second ("" for no rate)
    ARGV[5] the burst in effect (when there is a rate)
    ARGV[6] the in-flight cap ("" for none)
    ARGV[7] actor
    ARGV[8] reason
    ARGV[9] the limits before, as JSON ("" when the change creates the resource)
    ARGV[10] the limits after, as JSON
    ARGV[11] items per second ("" for no item rate)
    ARGV[12] the item burst in effect (when there is an item rate)

  Output: the stored setting, or nil when it changed since the caller read it
]]
-- @include limiter
local resource = ARGV[1]
if (redis.call("HGET", KEYS[1], resource) or "") ~= ARGV[2] then return nil end
local now = serverMs()
local stored = ARGV[3] .. ',"updatedAt":' .. exact(now) .. '}'
redis.call("HSET", KEYS[1], resource, stored)

local function rebucket(field, rate, burst)
  if not rate then
    redis.call("HDEL", KEYS[2], field)
    return
  end
  local tokens, at = burst, now
  local old = redis.call("HGET", KEYS[2], field)
  if old then
    local oldRate, oldBurst, oldTokens, oldAt = parseBucket(old)
    at = math.max(oldAt, now)
    tokens = math.min(burst, oldBurst, oldTokens + (at - oldAt) / 1000 * oldRate)
  end
  redis.call("HSET", KEYS[2], field, formatBucket(rate, burst, tokens, at))
end
rebucket(resource, tonumber(ARGV[4]), tonumber(ARGV[5]))
rebucket(resource .. ":items", tonumber(ARGV[11]), tonumber(ARGV[12]))

if ARGV[6] == "" then
  redis.call("HDEL", KEYS[3], resource)
else
  redis.call("HSET", KEYS[3], resource, ARGV[6])
end

redis.call("XADD", KEYS[4], "*", "at", exact(now), "actor", ARGV[7], "reason", ARGV[8], "resource", resource,
  "before", ARGV[9], "after", ARGV[10])
return stored
