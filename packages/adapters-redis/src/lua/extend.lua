--[[
  Extends deliveries: hides each message whose receipt is current for ARGV[3] ms from now, by setting
  its idle time to horizon - visibility. JUSTID: an extension is not a delivery and is not counted.

  Input:
    KEYS[1] the stream

    ARGV[1] consumer group
    ARGV[2] consumer name
    ARGV[3] visibility in ms (0 .. horizon)
    ARGV[4] horizon in ms
    ARGV[5], ARGV[6], ... pairs of entry id and delivery count (a receipt)

  Output: how many messages were extended
]]
-- @include common
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local ids = currentIds(stream, group, ARGV, 5)
if #ids > 0 then setVisibility(stream, group, consumer, ids, tonumber(ARGV[3]), tonumber(ARGV[4])) end
return #ids
