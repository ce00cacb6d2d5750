-- ARGV: job prefix, events prefix, channel prefix, owner, lease ms, pool, events maxlen,
--       pool cap (-1: the in-house fleet, whose endpoints' free slots are the cap),
--       order ('head': priority then submission; 'oldest': longest waiting)
-- Pops a queued job for the pool, unless the pool already runs `cap` jobs across all
-- replicas (or, in-house, no usable endpoint has a free slot); leases it to the owner,
-- places it on the freest in-house endpoint, and marks it in progress.
-- Returns the job's hash as a flat list, or false when there is none or no room.
local pool = ARGV[6]
local endpoint = ''
if tonumber(ARGV[8]) < 0 then
  endpoint = freest_endpoint()
  if not endpoint then
    return false
  end
elseif redis.call('SCARD', K_RUNNING .. pool) >= tonumber(ARGV[8]) then
  return false
end
while true do
  local popped
  if ARGV[9] == 'oldest' then
    popped = redis.call('ZPOPMIN', K_QUEUED_AT)
  else
    popped = redis.call('ZPOPMIN', K_QUEUE)
  end
  if #popped == 0 then
    -- Nothing left: drop the token so idle dispatchers block until the next submit.
    redis.call('DEL', K_WAKE)
    return false
  end
  local id = popped[1]
  dequeue(id)
  local jk = ARGV[1] .. id
  if redis.call('HGET', jk, 'status') == 'queued' then
    local now = now_ms()
    redis.call('ZADD', K_LEASES, now + tonumber(ARGV[5]), id)
    redis.call('SADD', K_RUNNING .. pool, id)
    if endpoint ~= '' then
      redis.call('SADD', K_ENDPOINT .. endpoint, id)
    end
    redis.call('HINCRBY', K_DISPATCHED, pool, 1)
    redis.call('HSETNX', K_DISPATCHED, 'since', now)
    redis.call('HINCRBY', jk, 'attempt', 1)
    redis.call('HINCRBY', jk, 'lease', 1)
    redis.call('HSET', jk, 'status', 'in_progress', 'owner', ARGV[4], 'pool', pool,
      'started_ms', now, 'progress', 1, 'call_id', '', 'endpoint', endpoint)
    emit(ARGV[2] .. id, ARGV[3] .. id, ARGV[7],
      {type = 'dispatched', status = 'in_progress', progress = 1, t = now, pool = pool,
       endpoint = endpoint ~= '' and endpoint or nil})
    wake_if_queued()
    return redis.call('HGETALL', jk)
  end
end
