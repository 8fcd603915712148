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
  -- A sent message has its body alone (the usual case, spared three scans).
  if #fields == 2 and fields[1] == "b" then return id, fields[2], 0 end
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

-- Whether stream id a comes before b (both "<ms>-<seq>", digits without leading zeros).
local function idBefore(a, b)
  local da, db = string.find(a, "-", 1, true), string.find(b, "-", 1, true)
  if da ~= db then return da < db end
  if #a == #b then return a < b end
  local ma, mb = string.sub(a, 1, da), string.sub(b, 1, db)
  if ma ~= mb then return ma < mb end
  return #a < #b
end

-- The entry ids of the current receipts among args[from], args[from + 1], ... (pairs of entry id and
-- delivery count), in their order. One XPENDING over the range of their ids answers for every receipt
-- it lists (usually all of them, at one call instead of one per receipt); each other one is checked
-- alone, so a range that also holds other deliveries, or a receipt outside it, is still judged right.
local function currentIds(stream, group, args, from)
  local ids = {}
  local last = #args - 1
  if last < from then return ids end
  local low, high = args[from], args[from]
  for i = from + 2, last, 2 do
    if idBefore(args[i], low) then low = args[i] elseif idBefore(high, args[i]) then high = args[i] end
  end
  local counts = {}
  local range = redis.pcall("XPENDING", stream, group, low, high, last - from + 1)
  if type(range) == "table" and range["err"] == nil then
    for _, entry in ipairs(range) do counts[entry[1]] = entry[4] end
  end
  for i = from, last, 2 do
    local id = args[i]
    local pending = counts[id]
    if pending == nil then pending = pendingCount(stream, group, id) end
    if pending ~= nil and pending == tonumber(args[i + 1]) then ids[#ids + 1] = id end
  end
  return ids
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
