--[[
  Receives up to ARGV[3] messages of one queue and hides each for ARGV[4] ms: see include/receive.lua
  for how (due delayed messages first, then expired deliveries, then new messages; dead-lettering after
  ARGV[6] receives; visibility kept in the pending list's idle time).

  Input:
    KEYS[1] the stream
    KEYS[2] the delayed set
    KEYS[3] the dead-letter stream
    KEYS[4] the XAUTOCLAIM cursor (a string; absent means "0-0")

    ARGV[1] consumer group
    ARGV[2] consumer name
    ARGV[3] max messages (>= 1)
    ARGV[4] visibility in ms (0 .. horizon)
    ARGV[5] horizon in ms
    ARGV[6] maxReceives
    ARGV[7] most delayed messages to move per call

  Output:
    { deliveries, nextDueMs, lastId }
    deliveries: flat list of entryId, pendingCount, messageId, body, receiveCount per delivered message
    nextDueMs: ms until the earliest delayed message is due, -1 when none
    lastId: the id of the stream's last entry ("0-0" when empty), to block on for newer ones
    (nextDueMs and lastId are only computed when nothing was delivered: -1 and "" otherwise)
]]
-- @include common
-- @include receive
return receive(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
