-- KEYS: job, events
-- ARGV: id, channel, events maxlen, lease, status (completed/failed), retention ms,
--       error code, error message, field/value pairs...
-- Ends a running job, if this lease still holds it. Returns 'ok', 'gone' when the job
-- was deleted, or 'stale' when it was cancelled or handed to another lease.
local cur = redis.call('HMGET', KEYS[1], 'status', 'lease')
if not cur[1] then
  return 'gone'
end
if cur[1] ~= 'in_progress' or cur[2] ~= ARGV[4] then
  return 'stale'
end
if #ARGV > 8 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 9))
end
finish(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[1], ARGV[5], ARGV[7], ARGV[8],
  tonumber(ARGV[6]))
return 'ok'
