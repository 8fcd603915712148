--[[
  Counts the queue's messages. Read-only.

  ready: new entries (after the group's last-delivered id), in-flight ones whose visibility expired
  (idle time at or past the horizon), and delayed ones that are due; in flight: pending entries not
  expired; delayed: delayed-set members not yet due; dead: the dead-letter stream's length.
  The oldest ready message became ready when it was added (new), when its visibility expired
  (horizon - idle time ago, expired), or at its due time (delayed).

  Input:
    KEYS[1] the stream
    KEYS[2] the delayed set
    KEYS[3] the dead-letter stream

    ARGV[1] consumer group
    ARGV[2] horizon in ms
    ARGV[3] most expired in-flight messages to count

  Output: { ready, inFlight, delayed, dead, oldestReadyAgeMs (-1 when nothing is ready) }
]]
-- @include common
local stream, delayed, dead = KEYS[1], KEYS[2], KEYS[3]
local group = ARGV[1]
local horizon = tonumber(ARGV[2])
local now = nowMs()

local pending, lastDelivered = 0, nil
local groups = redis.pcall("XINFO", "GROUPS", stream)
if groups["err"] == nil then
  for _, info in ipairs(groups) do
    if field(info, "name") == group then
      pending = field(info, "pending")
      lastDelivered = field(info, "last-delivered-id")
    end
  end
end

local readySince = nil
local function seen(at)
  if readySince == nil or at < readySince then readySince = at end
end

-- Every entry in the stream is either pending or not yet delivered: acks delete entries.
local fresh = redis.call("XLEN", stream) - pending
if fresh > 0 then
  local first = redis.call("XRANGE", stream, lastDelivered and "(" .. lastDelivered or "-", "+", "COUNT", 1)[1]
  if first then seen(tonumber(string.match(first[1], "^(%d+)"))) end
end

local expired = 0
if pending > 0 then
  local stale = redis.call("XPENDING", stream, group, "IDLE", horizon, "-", "+", tonumber(ARGV[3]))
  expired = #stale
  for _, entry in ipairs(stale) do seen(now - (entry[3] - horizon)) end
end

local due = redis.call("ZCOUNT", delayed, "-inf", now)
if due > 0 then seen(tonumber(redis.call("ZRANGE", delayed, 0, 0, "WITHSCORES")[2])) end
local waiting = redis.call("ZCARD", delayed) - due

local age = -1
if readySince ~= nil then age = math.max(0, now - readySince) end
return { fresh + expired + due, pending - expired, waiting, redis.call("XLEN", dead), age }
