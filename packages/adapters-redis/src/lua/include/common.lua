--[[
  Helpers every queue script shares, inlined where a script says "-- @include common".

  A stream entry holds b (the body) and, when they apply, m (the message id, when it differs from the
  entry id) and c (receives before this entry: a released or delayed message keeps its count).
  A delayed-set member is "<messageId>\n<receives>\n<body>" (ids and counts hold no newline).
]]

-- Redis server time in ms: every deadline is computed here, never on a client clock.
local function nowMs()
  local time = redis.call("TIME")
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

-- The message an entry carries: its id, body and receives before this entry.
local function messageOf(id, fields)
  return field(fields, "m") or id, field(fields, "b") or "", tonumber(field(fields, "c") or "0")
end

-- How often entry `id` was delivered in the group, or nil when it is not pending (acked, gone, or a
-- malformed id). A receipt is current only while this equals the count it was issued with.
local function pendingCount(stream, group, id)
  local pending = redis.pcall("XPENDING", stream, group, id, id, 1)
  if type(pending) ~= "table" or pending["err"] ~= nil or pending[1] == nil then return nil end
  return pending[1][4]
end

local function isCurrent(stream, group, id, count)
  local pending = pendingCount(stream, group, id)
  return pending ~= nil and pending == tonumber(count)
end

-- Takes a pending entry out of the stream and its group; returns its message and total receives.
local function take(stream, group, id)
  local entry = redis.call("XRANGE", stream, id, id)[1]
  local pending = pendingCount(stream, group, id)
  redis.call("XACK", stream, group, id)
  redis.call("XDEL", stream, id)
  if entry == nil then return nil end
  local messageId, body, before = messageOf(id, entry[2])
  return messageId, body, before + pending
end

-- Hides pending entries until `visibility` ms from now: their idle time becomes horizon - visibility,
-- so they expire when it reaches the horizon again. JUSTID: this is not a delivery and is not counted.
-- (The ids go last in one table: Lua passes only the first value of an unpack() that is not last.)
local function setVisibility(stream, group, consumer, ids, visibility, horizon)
  local args = { stream, group, consumer, 0 }
  for _, id in ipairs(ids) do args[#args + 1] = id end
  args[#args + 1] = "IDLE"
  args[#args + 1] = horizon - visibility
  args[#args + 1] = "JUSTID"
  redis.call("XCLAIM", unpack(args))
end

local function bury(dead, messageId, body, receives, reason)
  redis.call("XADD", dead, "*", "m", messageId, "b", body, "c", receives, "r", reason)
end

local function delayedMember(messageId, receives, body)
  return messageId .. "\n" .. receives .. "\n" .. body
end

-- Moves a delayed-set member into the stream as a new entry.
local function enqueueDelayed(stream, member)
  local a = string.find(member, "\n", 1, true)
  local b = string.find(member, "\n", a + 1, true)
  redis.call("XADD", stream, "*", "b", string.sub(member, b + 1), "m", string.sub(member, 1, a - 1),
    "c", string.sub(member, a + 1, b - 1))
end
