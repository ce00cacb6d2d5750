-- KEYS: job, events, idempotency, tenant jobs
-- ARGV: id, has idempotency key (1/0), retention ms, priority, channel, events maxlen,
--       job key prefix, queue bound, tenant, tenant's queue bound (0: none), tenant's
--       submits per second (0: no limit), their burst, field/value pairs...
-- Returns {1, job hash} for a new job, {0, job hash} for the job an idempotency key
-- created (each hash as a flat list), {-1, queued} when the queue is at its bound,
-- {-2, queued} when the tenant's is, or {-3, ms until a submit is allowed} when the
-- tenant submits faster than its rate. A refused submit writes nothing.
if ARGV[2] == '1' then
  local existing = redis.call('GET', KEYS[3])
  if existing and redis.call('EXISTS', ARGV[7] .. existing) == 1 then
    return {0, redis.call('HGETALL', ARGV[7] .. existing)}
  end
end
local queued = redis.call('ZCARD', K_QUEUE)
if queued >= tonumber(ARGV[8]) then
  return {-1, queued}
end
local tenant = ARGV[9]
local tenant_bound = tonumber(ARGV[10])
if tenant_bound > 0 then
  local mine = redis.call('ZCARD', K_TENANT_QUEUE .. tenant)
    + redis.call('ZCARD', K_BATCH_TENANT_QUEUE .. tenant)
  if mine >= tenant_bound then
    return {-2, mine}
  end
end
local now = now_ms()
local rate = tonumber(ARGV[11])
if rate > 0 then
  -- A token bucket per tenant: `burst` submits at once, refilled at `rate` a second.
  local burst = tonumber(ARGV[12])
  local bucket = K_SUBMIT_BUCKET .. tenant
  local b = redis.call('HMGET', bucket, 'tokens', 'at')
  local tokens = burst
  if b[1] then
    tokens = math.min(burst, tonumber(b[1]) + (now - tonumber(b[2])) / 1000 * rate)
  end
  if tokens < 1 then
    return {-3, math.ceil((1 - tokens) / rate * 1000)}
  end
  redis.call('HSET', bucket, 'tokens', tokens - 1, 'at', now)
  redis.call('PEXPIRE', bucket, math.ceil(burst / rate * 1000) + 1000)
end
local retention = tonumber(ARGV[3])
local score = (9 - tonumber(ARGV[4])) * 1099511627776 + redis.call('INCR', K_SEQ)
redis.call('HSET', KEYS[1], 'seq', score, 'created_ms', now, 'expires_ms', now + retention,
  unpack(ARGV, 13))
if ARGV[2] == '1' then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', retention)
end
-- enqueue() indexes the deadline.
local deadline_s = tonumber(redis.call('HGET', KEYS[1], 'deadline_s') or '0')
if deadline_s > 0 then
  redis.call('HSET', KEYS[1], 'deadline_ms', now + deadline_s * 1000)
end
redis.call('ZADD', KEYS[4], 0, ARGV[1])
emit(KEYS[2], ARGV[5], ARGV[6], {type = 'queued', status = 'queued', progress = 0, t = now})
enqueue(KEYS[1], ARGV[1], score)
return {1, redis.call('HGETALL', KEYS[1])}
