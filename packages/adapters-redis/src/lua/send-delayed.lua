--[[
  Sends messages that become visible after ARGV[1] ms: they wait in the delayed set, scored by their
  due time on the Redis clock, until a receive moves them into the stream.

  Input:
    KEYS[1] the delayed set

    ARGV[1] delay in ms (> 0)
    ARGV[2], ARGV[3], ... pairs of message id and body

  Output: how many messages were added
]]
-- @include common
local delayed = KEYS[1]
local due = nowMs() + tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call("ZADD", delayed, due, delayedMember(ARGV[i], 0, ARGV[i + 1]))
end
return (#ARGV - 1) / 2
