--[[
  Dead-letters a delivery on demand: when the receipt is current, the message leaves the group and the
  stream and is added to the dead-letter stream with the caller's reason.

  Input:
    KEYS[1] the stream
    KEYS[2] the dead-letter stream

    ARGV[1] consumer group
    ARGV[2] entry id
    ARGV[3] delivery count (with ARGV[2], the receipt)
    ARGV[4] reason

  Output: 1 when dead-lettered, 0 when the receipt was stale
]]
-- @include common
local stream, dead, group = KEYS[1], KEYS[2], ARGV[1]
if not isCurrent(stream, group, ARGV[2], ARGV[3]) then return 0 end
local messageId, body, receives = take(stream, group, ARGV[2])
if messageId == nil then return 0 end
bury(dead, messageId, body, receives, ARGV[4])
return 1
