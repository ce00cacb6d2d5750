-- KEYS: job, queue, events, idempotency, tenant jobs, wake, seq
-- ARGV: id, has idempotency key (1/0), retention ms, priority, channel, events maxlen,
--       job key prefix, field/value pairs...
-- Returns {1, job hash} for a new job, {0, job hash} for the job an idempotency key
-- created, each hash as a flat list.
if ARGV[2] == '1' then
  local existing = redis.call('GET', KEYS[4])
  if existing and redis.call('EXISTS', ARGV[7] .. existing) == 1 then
    return {0, redis.call('HGETALL', ARGV[7] .. existing)}
  end
end
local now = now_ms()
local retention = tonumber(ARGV[3])
local score = (9 - tonumber(ARGV[4])) * 1099511627776 + redis.call('INCR', KEYS[7])
redis.call('HSET', KEYS[1], 'seq', score, 'created_ms', now, 'expires_ms', now + retention,
  unpack(ARGV, 8))
if ARGV[2] == '1' then
  redis.call('SET', KEYS[4], ARGV[1], 'PX', retention)
end
redis.call('ZADD', KEYS[2], score, ARGV[1])
redis.call('ZADD', KEYS[5], 0, ARGV[1])
emit(KEYS[3], ARGV[5], ARGV[6], {type = 'queued', status = 'queued', progress = 0, t = now})
wake(KEYS[6])
return {1, redis.call('HGETALL', KEYS[1])}
