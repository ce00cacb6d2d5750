-- KEYS: job, events
-- ARGV: id, channel, events maxlen, retention ms, tenant
-- Cancels a queued or running job of the tenant. A running job's owner sees the
-- cancelled event and stops its render. Returns {1 if this call ended the job else 0,
-- the job's hash}, or false if the tenant has no such job.
if redis.call('HGET', KEYS[1], 'tenant') ~= ARGV[5] then
  return false
end
local ended = cancel_if_live(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[1],
  'cancelled on request', tonumber(ARGV[4]))
return {ended and 1 or 0, redis.call('HGETALL', KEYS[1])}
