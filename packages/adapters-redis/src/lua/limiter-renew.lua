--[[
  Extends held slots of one resource: each member still in the set and not expired gets a new expiry,
  ARGV[1] ms from now. A slot that expired (and may be another's now) is not renewed.

  Input:
    KEYS[1] the resource's slots: a sorted set of "<slot>:<permitId>" scored by expiry (ms)

    ARGV[1] time to live in ms
    ARGV[2], ARGV[3], ... members "<slot>:<permitId>"

  Output: the members renewed
]]
-- @include limiter
local now = serverMs()
local expiry = exact(now + tonumber(ARGV[1]))
local renewed = {}
for i = 2, #ARGV do
  local score = tonumber(redis.call("ZSCORE", KEYS[1], ARGV[i]))
  if score and score > now then
    redis.call("ZADD", KEYS[1], "XX", expiry, ARGV[i])
    renewed[#renewed + 1] = ARGV[i]
  end
end
return renewed
