--[[
  Acknowledges deliveries: removes each message whose receipt is current from the group and the
  stream. A stale receipt (the message was delivered again since, released or dead-lettered) is skipped.

  Input:
    KEYS[1] the stream

    ARGV[1] consumer group
    ARGV[2], ARGV[3], ... pairs of entry id and delivery count (a receipt)

  Output: how many messages were acknowledged
]]
-- @include common
local stream, group = KEYS[1], ARGV[1]
local ids = {}
for i = 2, #ARGV, 2 do
  if isCurrent(stream, group, ARGV[i], ARGV[i + 1]) then ids[#ids + 1] = ARGV[i] end
end
if #ids > 0 then
  redis.call("XACK", stream, group, unpack(ids))
  redis.call("XDEL", stream, unpack(ids))
end
return #ids
