-- KEYS: job, events
-- ARGV: id, channel, events maxlen, tenant, retention ms
-- Puts a failed or cancelled job of the tenant back in line, with its attempts reset,
-- no expiry while it is live again, and no deadline (it was relative to a submit that
-- is over). Returns {1, hash} when it did, {0, hash} when
-- the job is not failed or cancelled, or false if the tenant has no such job.
if redis.call('HGET', KEYS[1], 'tenant') ~= ARGV[4] then
  return false
end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'failed' and status ~= 'cancelled' then
  return {0, redis.call('HGETALL', KEYS[1])}
end
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[1], 'status', 'queued', 'progress', 0, 'attempt', 0, 'owner', '',
  'pool', '', 'endpoint', '', 'call_id', '', 'error_code', '', 'error_message', '',
  'completed_ms', 0, 'placement', '', 'expires_ms', now_ms() + tonumber(ARGV[5]))
redis.call('HDEL', KEYS[1], 'deadline_ms', 'deadline_s')
emit(KEYS[2], ARGV[2], ARGV[3], {type = 'requeued', status = 'queued', progress = 0,
  t = now_ms(), error_code = 'retried', error_message = 'retried on request'})
enqueue(KEYS[1], ARGV[1], redis.call('HGET', KEYS[1], 'seq'))
return {1, redis.call('HGETALL', KEYS[1])}
