-- KEYS: the meter's lease, the meter's state, the month's spend
-- ARGV: owner, state JSON, USD to add (0: none), spend TTL s
-- Saves the spend meter's state and charges what it billed since its last save, in one
-- step and only while `owner` holds the meter's lease: a replica that lost the lease
-- (paused past its TTL, say) cannot charge the same container time as its successor.
-- Returns 1, or 0 when the lease is someone else's.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
if tonumber(ARGV[3]) > 0 then
  redis.call('INCRBYFLOAT', KEYS[3], ARGV[3])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
return 1
