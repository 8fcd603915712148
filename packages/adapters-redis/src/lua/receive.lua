--[[
  Receives up to ARGV[3] messages of one queue and hides each for ARGV[4] ms.

  In order: moves due delayed messages into the stream; reclaims in-flight messages whose visibility
  expired (XAUTOCLAIM, which counts a delivery); delivers new messages (XREADGROUP); dead-letters any
  message already received ARGV[6] times, with the reason; then sets the visibility deadline of every
  delivered message.

  Visibility lives in the pending list itself: a message has expired once its idle time reaches the
  horizon ARGV[5], so delivering it with visibility V sets its idle time to horizon - V
  (XCLAIM ... IDLE ... JUSTID, which does not count a delivery). Extend does the same.

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
local stream, delayed, dead, cursorKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer = ARGV[1], ARGV[2]
local max = tonumber(ARGV[3])
local visibility = tonumber(ARGV[4])
local horizon = tonumber(ARGV[5])
local maxReceives = tonumber(ARGV[6])
local promoteLimit = tonumber(ARGV[7])
local now = nowMs()

-- 1. Due delayed messages go back into the stream.
local due = redis.call("ZRANGEBYSCORE", delayed, "-inf", now, "LIMIT", 0, promoteLimit)
for _, member in ipairs(due) do enqueueDelayed(stream, member) end
if #due > 0 then redis.call("ZREM", delayed, unpack(due)) end

local out = {}
local delivered = {}
local function deliver(id, pending, fields)
  local messageId, body, before = messageOf(id, fields)
  before = before + pending - 1
  if before >= maxReceives then
    bury(dead, messageId, body, before,
      "received " .. before .. " times without being acknowledged (maxReceives " .. maxReceives .. ")")
    redis.call("XACK", stream, group, id)
    redis.call("XDEL", stream, id)
    return
  end
  delivered[#delivered + 1] = id
  out[#out + 1] = id
  out[#out + 1] = pending
  out[#out + 1] = messageId
  out[#out + 1] = body
  out[#out + 1] = before + 1
end

-- 2. In-flight messages whose visibility expired: their idle time reached the horizon.
local cursor = redis.call("GET", cursorKey) or "0-0"
local claimed = redis.pcall("XAUTOCLAIM", stream, group, consumer, horizon, cursor, "COUNT", max)
if claimed["err"] ~= nil then
  -- The group goes with its stream (a flushed, or restarted and unpersisted, Redis): recreate it.
  if string.sub(claimed["err"], 1, 7) ~= "NOGROUP" then return redis.error_reply(claimed["err"]) end
  redis.call("XGROUP", "CREATE", stream, group, "0", "MKSTREAM")
  claimed = { "0-0", {} }
end
if claimed[1] ~= cursor then
  if claimed[1] == "0-0" then redis.call("DEL", cursorKey) else redis.call("SET", cursorKey, claimed[1]) end
end
for _, entry in ipairs(claimed[2]) do
  -- Redis 6.2 reports an entry deleted from the stream as nil (7.0 lists it apart).
  if type(entry) == "table" then deliver(entry[1], pendingCount(stream, group, entry[1]), entry[2]) end
end

-- 3. New messages.
if #delivered < max then
  local read = redis.call("XREADGROUP", "GROUP", group, consumer, "COUNT", max - #delivered, "STREAMS", stream, ">")
  if read then
    for _, entry in ipairs(read[1][2]) do deliver(entry[1], 1, entry[2]) end
  end
end

-- 4. Visibility deadlines.
if #delivered > 0 then
  setVisibility(stream, group, consumer, delivered, visibility, horizon)
  return { out, -1, "" }
end

local nextDue = -1
local first = redis.call("ZRANGE", delayed, 0, 0, "WITHSCORES")
if first[2] then nextDue = math.max(0, tonumber(first[2]) - now) end
local last = redis.call("XREVRANGE", stream, "+", "-", "COUNT", 1)
return { out, nextDue, last[1] and last[1][1] or "0-0" }
