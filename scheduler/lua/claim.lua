-- ARGV: job prefix, events prefix, channel prefix, owner, lease ms, pool, events maxlen,
--       pool cap (-1: the in-house fleet, whose endpoints' free slots are the cap),
--       order ('head': priority then submission; 'oldest': longest waiting),
--       finish ms (0: none; else a job whose deadline comes sooner than this is left in
--       line, as it could not finish on this pool before it)
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
local line = ARGV[9] == 'oldest' and K_QUEUED_AT or K_QUEUE
local now = now_ms()
local finish_by = now + tonumber(ARGV[10])
-- Jobs passed over for their deadline stay in line; looking past a bounded number keeps
-- a claim's cost flat.
local passed, max_passed = 0, ARGV[10] == '0' and 0 or 32
while true do
  local head = redis.call('ZRANGE', line, passed, passed)
  if #head == 0 or passed > max_passed then
    if passed == 0 then
      -- Nothing left: drop the token so idle dispatchers block until the next submit.
      redis.call('DEL', K_WAKE)
    end
    return false
  end
  local id = head[1]
  local jk = ARGV[1] .. id
  local f = redis.call('HMGET', jk, 'status', 'deadline_ms')
  local deadline = tonumber(f[2] or '0')
  if f[1] == 'queued' and deadline > 0 and deadline < finish_by then
    passed = passed + 1
  elseif f[1] ~= 'queued' then
    dequeue(id)
  else
    dequeue(id)
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
