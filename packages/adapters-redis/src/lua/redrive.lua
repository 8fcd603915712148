--[[
  Moves dead letters back into the queue, one batch per call: from the dead-letter entry after
  ARGV[1], up to ARGV[2] entries are looked at; those chosen (all, or those whose message id is listed)
  are added to the stream with their message id and a fresh receive count, and removed from the
  dead-letter stream. The caller repeats with the returned cursor until it is "".

  Input:
    KEYS[1] the stream
    KEYS[2] the dead-letter stream

    ARGV[1] start: "-" for the first batch, else the returned cursor
    ARGV[2] batch size
    ARGV[3], ... message ids to move (none: move all)

  Output: { moved, cursor ("" when the dead-letter stream was read to its end) }
]]
-- @include common
local stream, dead = KEYS[1], KEYS[2]
local batch = tonumber(ARGV[2])
local only = nil
if #ARGV > 2 then
  only = {}
  for i = 3, #ARGV do only[ARGV[i]] = true end
end
local entries = redis.call("XRANGE", dead, ARGV[1], "+", "COUNT", batch)
local moved = 0
for _, entry in ipairs(entries) do
  local messageId = field(entry[2], "m")
  if only == nil or only[messageId] then
    redis.call("XADD", stream, "*", "b", field(entry[2], "b"), "m", messageId)
    redis.call("XDEL", dead, entry[1])
    moved = moved + 1
  end
end
if #entries < batch then return { moved, "" } end
return { moved, "(" .. entries[#entries][1] }
