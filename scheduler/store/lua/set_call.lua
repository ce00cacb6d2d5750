-- KEYS: job
-- ARGV: lease, call id
-- Records the remote call that renders a running job, if this lease still holds it.
-- Returns 1 or 0.
local cur = redis.call('HMGET', KEYS[1], 'status', 'lease')
if cur[1] ~= 'in_progress' or cur[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'call_id', ARGV[2])
return 1
