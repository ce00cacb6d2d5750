-- KEYS: lease
-- ARGV: owner, ttl ms
-- Takes the lease, or keeps it if the owner holds it. Returns 1 if the owner holds it.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
