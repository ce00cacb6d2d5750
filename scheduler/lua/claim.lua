-- KEYS: queue, leases, wake
-- ARGV: job prefix, events prefix, channel prefix, owner, lease ms, pool, events maxlen
-- Pops the first queued job, leases it to the owner and marks it in progress.
-- Returns the job's hash as a flat list, or false when the queue is empty.
while true do
  local popped = redis.call('ZPOPMIN', KEYS[1])
  if #popped == 0 then
    -- Nothing left: drop the token so idle dispatchers block until the next submit.
    redis.call('DEL', KEYS[3])
    return false
  end
  local id = popped[1]
  local jk = ARGV[1] .. id
  if redis.call('HGET', jk, 'status') == 'queued' then
    local now = now_ms()
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), id)
    redis.call('HINCRBY', jk, 'attempt', 1)
    redis.call('HSET', jk, 'status', 'in_progress', 'owner', ARGV[4], 'pool', ARGV[6],
      'started_ms', now, 'progress', 1)
    emit(ARGV[2] .. id, ARGV[3] .. id, ARGV[7],
      {type = 'dispatched', status = 'in_progress', progress = 1, t = now, pool = ARGV[6]})
    if redis.call('ZCARD', KEYS[1]) > 0 then
      wake(KEYS[3])
    end
    return redis.call('HGETALL', jk)
  end
end
