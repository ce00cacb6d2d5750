-- KEYS: leases, queue, wake
-- ARGV: job prefix, events prefix, channel prefix, events maxlen, max attempts,
--       retention ms, batch size
-- Requeues (or fails) jobs whose lease expired: their replica died or hung.
-- Returns the ids it reclaimed.
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(),
  'LIMIT', 0, tonumber(ARGV[7]))
for _, id in ipairs(expired) do
  local jk = ARGV[1] .. id
  if redis.call('HGET', jk, 'status') == 'in_progress' then
    requeue_or_fail(jk, ARGV[2] .. id, ARGV[3] .. id, ARGV[4], KEYS[1], KEYS[2], KEYS[3], id,
      tonumber(ARGV[5]), tonumber(ARGV[6]), 'lease_expired',
      'the scheduler replica running the job stopped renewing its lease')
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return expired
