--[[
  Takes one rate token of a resource: refills its bucket up to now (never back in time) at its rate, up
  to its burst, and takes a token, going into debt when it is empty. The debt is how long the caller
  waits for its token; a caller that waits is recorded in the waits hash until its token is due.

  Input:
    KEYS[1] the buckets hash (field: resource)
    KEYS[2] the waits hash (field: the holder's run and unit)

    ARGV[1] resource
    ARGV[2] the holder's field in the waits hash
    ARGV[3] the wait's JSON without its closing brace (holder, resource, kind "rate")

  Output: nil when the resource has no rate limit, else { waitMs, grantedAt } as text (ms, Redis time)
]]
-- @include limiter
local bucket = redis.call("HGET", KEYS[1], ARGV[1])
if not bucket then return nil end
local rate, burst, tokens, at = parseBucket(bucket)
local now = serverMs()
local from = math.max(at, now)
tokens = math.min(burst, tokens + (from - at) / 1000 * rate) - 1
redis.call("HSET", KEYS[1], ARGV[1], formatBucket(rate, burst, tokens, from))
local waitMs = 0
if tokens < 0 then waitMs = -tokens / rate * 1000 end
local grantedAt = from + waitMs
if waitMs > 0 then redis.call("HSET", KEYS[2], ARGV[2], waitJson(ARGV[3], now, grantedAt)) end
return { exact(waitMs), exact(grantedAt) }
