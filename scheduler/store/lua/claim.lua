-- ARGV: job prefix, events prefix, channel prefix, owner, lease ms, pool, events maxlen,
--       pool cap (-1: the in-house fleet, whose endpoints' free slots are the cap),
--       order ('head': the tenant whose turn it is, then priority and submission;
--       'oldest': longest waiting),
--       finish ms (0: none; else a job whose deadline comes sooner than this is left in
--       line, as it could not finish on this pool before it), the policy's reason,
--       whether batch jobs may spill ('1'/'0'), the tenants' spend hash ('' when the
--       budget is not split by tenant), the monthly budget, the sum of the weights
-- Pops a queued job for the pool (interactive before batch; a spill takes no job kept
-- in-house, no batch job unless they may spill, and no job of a tenant past its share
-- of a split budget), unless the pool already runs `cap` jobs across all replicas (or,
-- in-house, no usable endpoint has a free slot); leases it to the owner, places it on
-- the freest in-house endpoint, and marks it in progress.
-- Returns the job's hash as a flat list, or false when there is none or no room.
local pool = ARGV[6]
local endpoint = ''
local inhouse = tonumber(ARGV[8]) < 0
local batch_ok = inhouse or ARGV[12] == '1'
if inhouse then
  endpoint = freest_endpoint()
  if not endpoint then
    return false
  end
elseif redis.call('SCARD', K_RUNNING .. pool) >= tonumber(ARGV[8]) then
  return false
end
local now = now_ms()
local finish_by = now + tonumber(ARGV[10])
local horizon = ARGV[10] ~= '0'

-- Whether a queued job may go to this pool: a spill must be allowed for it, and its
-- deadline must leave the time to finish.
local function fits(jk)
  if inhouse then
    return true
  end
  local f = redis.call('HMGET', jk, 'inhouse_only', 'class', 'deadline_ms', 'tenant')
  if f[1] == '1' or (f[2] == 'batch' and not batch_ok) then
    return false
  end
  if ARGV[13] ~= '' then
    local spent = tonumber(redis.call('HGET', ARGV[13], f[4]) or '0')
    local weight = tonumber(redis.call('HGET', K_TENANT_WEIGHTS, f[4]) or '1')
    if spent >= tonumber(ARGV[14]) * weight / tonumber(ARGV[15]) then
      return false
    end
  end
  local deadline = tonumber(f[3] or '0')
  return not horizon or deadline == 0 or deadline >= finish_by
end

-- The first job in a line (a sorted set of ids) that may go to this pool, looking past
-- at most `limit` that may not (they stay in line), so a claim's cost stays flat;
-- entries of jobs no longer queued are dropped on the way with `drop`.
local function first_in(line, limit, drop)
  local passed = 0
  while passed < limit do
    local head = redis.call('ZRANGE', line, passed, passed)
    if #head == 0 then
      return nil
    end
    local jk = ARGV[1] .. head[1]
    if redis.call('HGET', jk, 'status') ~= 'queued' then
      drop(head[1])
    elseif fits(jk) then
      return head[1]
    else
      passed = passed + 1
    end
  end
  return nil
end

-- The lines this claim may serve, in order.
local lanes = {LANES.interactive}
if batch_ok then
  table.insert(lanes, LANES.batch)
end

-- The next job for this pool. In 'oldest' order, the longest waiting; otherwise the head
-- (by priority, then submission) of the tenant whose turn it is: the lowest virtual time.
local function pick()
  for _, lane in ipairs(lanes) do
    if ARGV[9] == 'oldest' then
      local id = first_in(lane.queued_at, 33, dequeue)
      if id then
        return id
      end
    else
      for _, tenant in ipairs(redis.call('ZRANGE', lane.fair, 0, 31)) do
        local tq = lane.tq .. tenant
        if redis.call('ZCARD', tq) == 0 then
          leave_tenant_queue(lane, tenant, '')
        else
          local id = first_in(tq, 4, function(gone)
            dequeue(gone)
            leave_tenant_queue(lane, tenant, gone)
          end)
          if id then
            return id
          end
        end
      end
    end
  end
  -- A job in line but in no tenant's queue (queued before tenant queues existed) is
  -- still served, after every tenant's turn.
  return first_in(K_QUEUE, 1, dequeue)
end

local id = pick()
if not id then
  if redis.call('ZCARD', K_QUEUE) == 0 then
    -- Nothing left: drop the token so idle dispatchers block until the next submit.
    redis.call('DEL', K_WAKE)
  end
  return false
end
local jk = ARGV[1] .. id
local who = redis.call('HMGET', jk, 'tenant', 'class')
dequeue(id)
served(lane_of(who[2]), who[1])
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
  'started_ms', now, 'progress', 1, 'call_id', '', 'endpoint', endpoint,
  'placement', ARGV[11], 'render_started_ms', 0)
emit(ARGV[2] .. id, ARGV[3] .. id, ARGV[7],
  {type = 'dispatched', status = 'in_progress', progress = 1, t = now, pool = pool,
   reason = ARGV[11], endpoint = endpoint ~= '' and endpoint or nil})
-- The token says whether work is left: a dispatcher that took the last job blocks until
-- the next submit instead of deciding once more over an empty queue.
if redis.call('ZCARD', K_QUEUE) > 0 then
  wake()
else
  redis.call('DEL', K_WAKE)
end
return redis.call('HGETALL', jk)
