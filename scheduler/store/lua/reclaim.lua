-- ARGV: job prefix, events prefix, channel prefix, events maxlen, max attempts,
--       retention ms, batch size, owner, lease ms, pool whose remote calls the owner
--       can resume ('' for none)
-- Takes back jobs whose lease expired: their replica died, hung or handed them over.
-- A job whose remote call still runs on the owner's resumable pool is adopted (a new
-- lease for the owner; the call goes on); any other is requeued, or failed once out of
-- attempts. Returns {requeued ids, adopted job hashes as flat lists, failed ids}.
local expired = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', now_ms(),
  'LIMIT', 0, tonumber(ARGV[7]))
local requeued, adopted, failed = {}, {}, {}
for _, id in ipairs(expired) do
  local jk = ARGV[1] .. id
  local cur = redis.call('HMGET', jk, 'status', 'call_id', 'pool')
  if cur[1] ~= 'in_progress' then
    redis.call('ZREM', K_LEASES, id)
  elseif ARGV[10] ~= '' and cur[3] == ARGV[10] and cur[2] and cur[2] ~= '' then
    local now = now_ms()
    redis.call('ZADD', K_LEASES, now + tonumber(ARGV[9]), id)
    redis.call('HINCRBY', jk, 'lease', 1)
    redis.call('HSET', jk, 'owner', ARGV[8])
    emit(ARGV[2] .. id, ARGV[3] .. id, ARGV[4], {type = 'adopted', status = 'in_progress',
      progress = tonumber(redis.call('HGET', jk, 'progress') or '1'), t = now,
      pool = cur[3]})
    table.insert(adopted, redis.call('HGETALL', jk))
  else
    local result = requeue_or_fail(jk, ARGV[2] .. id, ARGV[3] .. id, ARGV[4], id,
      tonumber(ARGV[5]), tonumber(ARGV[6]), 'lease_expired',
      'the scheduler replica running the job stopped renewing its lease')
    table.insert(result == 'failed' and failed or requeued, id)
  end
end
return {requeued, adopted, failed}
