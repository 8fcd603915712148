--[[
  Claims an in-flight slot of a resource: the lowest-numbered free slot up to the cap. Expired holders
  are removed first (their slots are free). While a live holder's slot is numbered above the cap (the
  cap was lowered), no slot is given: the holders drain down to the new cap. A caller given no slot is
  recorded as waiting (visible for ARGV[6] ms after its last poll, `since` kept across its polls); a
  caller given a slot, or finding no cap, stops waiting.

  Input:
    KEYS[1] the caps hash (field: resource, value: the in-flight cap)
    KEYS[2] the resource's slots: a sorted set of "<slot>:<permitId>" scored by expiry (ms)
    KEYS[3] the waits hash

    ARGV[1] resource
    ARGV[2] permit id (unique per claim)
    ARGV[3] time to live in ms
    ARGV[4] the holder's field in the waits hash
    ARGV[5] the wait's JSON without its closing brace (holder, resource, kind "in-flight")
    ARGV[6] how long a wait stays visible after a poll, in ms

  Output: -1 when the resource has no cap, 0 when every slot is taken, else the slot's number
]]
-- @include limiter
local cap = tonumber(redis.call("HGET", KEYS[1], ARGV[1]))
if not cap then
  redis.call("HDEL", KEYS[3], ARGV[4])
  return -1
end
local now = serverMs()
redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", exact(now))
local free = nil
-- Holding `cap` or more, every slot up to the cap is taken, or one above it is held.
if redis.call("ZCARD", KEYS[2]) < cap then
  local held, above = {}, false
  for _, member in ipairs(redis.call("ZRANGE", KEYS[2], 0, -1)) do
    local n = tonumber(string.match(member, "^(%d+):"))
    if n > cap then
      above = true
      break
    end
    held[n] = true
  end
  if not above then
    for n = 1, cap do
      if not held[n] then
        free = n
        break
      end
    end
  end
end
if free then
  redis.call("ZADD", KEYS[2], exact(now + tonumber(ARGV[3])), free .. ":" .. ARGV[2])
  redis.call("HDEL", KEYS[3], ARGV[4])
  return free
end
local since = now
local previous = redis.call("HGET", KEYS[3], ARGV[4])
if previous then
  local wait = cjson.decode(previous)
  if wait.resource == ARGV[1] and wait.kind == "in-flight" and wait["until"] > now then since = wait.since end
end
redis.call("HSET", KEYS[3], ARGV[4], waitJson(ARGV[5], since, now + tonumber(ARGV[6])))
return 0
