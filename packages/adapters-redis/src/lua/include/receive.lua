--[[
  The receive that receive.lua runs, and ack.lua when it fetches the next messages; it needs
  "-- @include common" before it.

  receive(stream, delayed, dead, cursorKey, group, consumer, max, visibility, horizon, maxReceives,
    promoteLimit) receives up to max messages and hides each for visibility ms. In order: moves due
  delayed messages into the stream; reclaims in-flight messages whose visibility expired (XAUTOCLAIM,
  which counts a delivery); delivers new messages (XREADGROUP); dead-letters any message already
  received maxReceives times, with the reason; then sets the visibility deadline of every delivered
  message.

  Visibility lives in the pending list itself: a message has expired once its idle time reaches the
  horizon, so delivering it with visibility V sets its idle time to horizon - V
  (XCLAIM ... IDLE ... JUSTID, which does not count a delivery). Extend does the same.

  Returns { deliveries, nextDueMs, lastId }:
    deliveries: flat list of entryId, pendingCount, messageId, body, receiveCount per delivered message
    nextDueMs: ms until the earliest delayed message is due, -1 when none
    lastId: the id of the stream's last entry ("0-0" when empty), to block on for newer ones
    (nextDueMs and lastId are only computed when nothing was delivered: -1 and "" otherwise)
]]
local function receive(stream, delayed, dead, cursorKey, group, consumer, max, visibility, horizon, maxReceives,
                       promoteLimit)
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
    local n = #out
    out[n + 1] = id
    out[n + 2] = pending
    out[n + 3] = messageId
    out[n + 4] = body
    out[n + 5] = before + 1
  end

  -- 2. In-flight messages whose visibility expired: their idle time reached the horizon.
  -- XAUTOCLAIM passes up to 10 x max pending entries from the cursor, and reads the stream entry of
  -- each, expired or not. When the whole pending list is within that reach, it would end at the list's
  -- end ("0-0"): then one XPENDING IDLE, which reads the pending list alone, first tells whether any
  -- entry expired at all, and when none did, XAUTOCLAIM is skipped.
  local cursor = redis.call("GET", cursorKey) or "0-0"
  local claimed = redis.pcall("XPENDING", stream, group)
  if claimed["err"] == nil then
    if claimed[1] == 0 or
        (claimed[1] <= 10 * max and #redis.call("XPENDING", stream, group, "IDLE", horizon, "-", "+", 1) == 0) then
      claimed = { "0-0", {} }
    else
      claimed = redis.pcall("XAUTOCLAIM", stream, group, consumer, horizon, cursor, "COUNT", max)
    end
  end
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
end
