--[[
  Reads what `settings` and `waits` show, at one Redis time: every setting, the live holders of the
  given resources' slots, and the current waits. Waits that ended are deleted here.

  Input:
    KEYS[1] the settings hash
    KEYS[2] the waits hash
    KEYS[3], KEYS[4], ... the slots sorted sets of the resources ARGV[1], ARGV[2], ...

    ARGV[i] the resource whose slots are KEYS[i + 2]

  Output: { now (text, ms), [resource, setting JSON]*, [live slots per ARGV resource], [wait JSON]* }
]]
-- @include limiter
local now = serverMs()
local inUse = {}
for i = 3, #KEYS do
  inUse[#inUse + 1] = redis.call("ZCOUNT", KEYS[i], "(" .. exact(now), "+inf")
end
local live, ended = {}, {}
local waits = redis.call("HGETALL", KEYS[2])
for i = 1, #waits, 2 do
  if cjson.decode(waits[i + 1])["until"] > now then
    live[#live + 1] = waits[i + 1]
  else
    ended[#ended + 1] = waits[i]
  end
end
-- In batches: unpack is bounded by Lua's stack.
for i = 1, #ended, 1000 do
  redis.call("HDEL", KEYS[2], unpack(ended, i, math.min(i + 999, #ended)))
end
return { exact(now), redis.call("HGETALL", KEYS[1]), inUse, live }
