-- KEYS: job, events
-- ARGV: id, channel, events maxlen, lease, max attempts, retention ms, error code,
--       error message, counts as an attempt (1/0)
-- Gives a running job back to the queue (a retryable failure, or this replica shutting
-- down), if this lease still holds it. Returns 'requeued', 'failed' or 'stale'.
local cur = redis.call('HMGET', KEYS[1], 'status', 'lease')
if cur[1] ~= 'in_progress' or cur[2] ~= ARGV[4] then
  return 'stale'
end
if ARGV[9] == '0' then
  redis.call('HINCRBY', KEYS[1], 'attempt', -1)
end
return requeue_or_fail(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[1], tonumber(ARGV[5]),
  tonumber(ARGV[6]), ARGV[7], ARGV[8])
