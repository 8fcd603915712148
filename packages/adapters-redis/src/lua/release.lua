--[[
  Releases a delivery: when the receipt is current, the message leaves the group and becomes visible
  again after ARGV[4] ms: at once as a new stream entry, or later through the delayed set. It keeps its
  message id and its receive count, less this delivery when ARGV[5] is 1: a prefetched message given
  back without reaching a handler was never received (D11).

  Input:
    KEYS[1] the stream
    KEYS[2] the delayed set

    ARGV[1] consumer group
    ARGV[2] entry id
    ARGV[3] delivery count (with ARGV[2], the receipt)
    ARGV[4] delay in ms
    ARGV[5] 1 when the delivery never reached a handler, else 0

  Output: 1 when released, 0 when the receipt was stale
]]
-- @include common
local stream, delayed, group = KEYS[1], KEYS[2], ARGV[1]
local delay = tonumber(ARGV[4])
if not isCurrent(stream, group, ARGV[2], ARGV[3]) then return 0 end
local messageId, body, receives = take(stream, group, ARGV[2])
if messageId == nil then return 0 end
if ARGV[5] == "1" then receives = receives - 1 end
local member = delayedMember(messageId, receives, body)
if delay <= 0 then
  enqueueDelayed(stream, member)
else
  redis.call("ZADD", delayed, nowMs() + delay, member)
end
return 1
