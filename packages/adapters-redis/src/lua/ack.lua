--[[
  Acknowledges deliveries: removes each message whose receipt is current from the group and the
  stream. A stale receipt (the message was delivered again since, released or dead-lettered) is skipped.
  With ARGV[3] > 0 it then receives up to that many messages in the same call, as receive.lua does
  (fetch-next): a consumer whose slots just freed gets its next messages without another round trip.
  A failed receive here fails nothing: the acks are done, and no message is returned.

  Input:
    KEYS[1] the stream
    KEYS[2] the delayed set
    KEYS[3] the dead-letter stream
    KEYS[4] the XAUTOCLAIM cursor (a string; absent means "0-0")

    ARGV[1] consumer group
    ARGV[2] consumer name
    ARGV[3] messages to receive after the acks (0: none)
    ARGV[4] their visibility in ms (0 .. horizon)
    ARGV[5] horizon in ms
    ARGV[6] maxReceives
    ARGV[7] most delayed messages to move per call
    ARGV[8], ARGV[9], ... pairs of entry id and delivery count (a receipt)

  Output:
    { acked, deliveries }
    acked: how many messages were acknowledged
    deliveries: the received messages as receive.lua lists them (entryId, pendingCount, messageId, body,
      receiveCount per message); empty when none were asked for or the receive failed
]]
-- @include common
-- @include receive
local stream, group = KEYS[1], ARGV[1]
local ids = currentIds(stream, group, ARGV, 8)
if #ids > 0 then
  redis.call("XACK", stream, group, unpack(ids))
  redis.call("XDEL", stream, unpack(ids))
end
local fetch = tonumber(ARGV[3])
if fetch > 0 then
  local ok, received = pcall(receive, stream, KEYS[2], KEYS[3], KEYS[4], group, ARGV[2], fetch, tonumber(ARGV[4]),
    tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
  if ok and received["err"] == nil then return { #ids, received[1] } end
end
return { #ids, {} }
