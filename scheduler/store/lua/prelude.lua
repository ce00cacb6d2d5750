-- Shared by every script (prepended by scheduler/store/jobstore.py, after the K_* key
-- constants it generates from scheduler/store/keys.py). Times come from the Redis server so that
-- replicas with skewed clocks agree on leases and timestamps.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Appends an event to the job's capped stream and publishes it to live watchers.
local function emit(evkey, chan, maxlen, ev)
  local data = cjson.encode(ev)
  local eid = redis.call('XADD', evkey, 'MAXLEN', '~', maxlen, '*', 'd', data)
  redis.call('PUBLISH', chan, eid .. ' ' .. data)
  return eid
end

-- Keeps one token in the wake list, so an idle dispatcher blocked on it wakes up.
local function wake()
  if redis.call('LLEN', K_WAKE) == 0 then
    redis.call('LPUSH', K_WAKE, '1')
  end
end

-- Wakes a dispatcher while the queue may hold work.
local function wake_if_queued()
  if redis.call('ZCARD', K_QUEUE) > 0 then
    wake()
  end
end

-- The two lines a job may wait in, by its class: a claim serves the batch line only
-- when the interactive one has nothing for it. Each has its own wait index (so the
-- policy and the queue timeout see interactive waits alone) and its own fair share.
local LANES = {
  interactive = {queued_at = K_QUEUED_AT, tq = K_TENANT_QUEUE, fair = K_FAIR,
    vt = K_FAIR_VT},
  batch = {queued_at = K_BATCH_QUEUED_AT, tq = K_BATCH_TENANT_QUEUE, fair = K_BATCH_FAIR,
    vt = K_BATCH_FAIR_VT},
}

local function lane_of(class)
  return LANES[class] or LANES.interactive
end

-- Fair share: a tenant with queued work in a lane is in its `fair` set, scored by a
-- virtual time that grows by 1/weight for each job it is served; claims serve the
-- lowest first.
local function join_fair(lane, tenant)
  if redis.call('ZSCORE', lane.fair, tenant) then
    return
  end
  -- Back after a pause (or new), a tenant starts no earlier than the turn being served
  -- now (':clock', not a tenant name): it banked no credit while it had nothing queued.
  local saved = redis.call('HMGET', lane.vt, tenant, ':clock')
  redis.call('ZADD', lane.fair, math.max(tonumber(saved[1] or '0'), tonumber(saved[2] or '0')),
    tenant)
end

local function leave_tenant_queue(lane, tenant, id)
  local tq = lane.tq .. tenant
  redis.call('ZREM', tq, id)
  if redis.call('ZCARD', tq) == 0 then
    local vt = redis.call('ZSCORE', lane.fair, tenant)
    if vt then
      redis.call('HSET', lane.vt, tenant, vt)
      redis.call('ZREM', lane.fair, tenant)
    end
  end
end

-- Charges a claimed job to its tenant's turn; the turn it was served at becomes the
-- clock that tenants joining later start from.
local function served(lane, tenant)
  local step = 1 / tonumber(redis.call('HGET', K_TENANT_WEIGHTS, tenant) or '1')
  local vt = redis.call('ZSCORE', lane.fair, tenant)
  if vt then
    redis.call('ZINCRBY', lane.fair, step, tenant)
  else
    vt = redis.call('HGET', lane.vt, tenant) or '0'
    redis.call('HINCRBYFLOAT', lane.vt, tenant, step)
  end
  redis.call('HSET', lane.vt, ':clock', vt)
end

-- Puts a job in line: its place by priority and submission, in the queue and in its
-- tenant's queue of its class, and since when it waits.
local function enqueue(jk, id, seq)
  local now = now_ms()
  local f = redis.call('HMGET', jk, 'tenant', 'class', 'deadline_ms')
  local lane = lane_of(f[2])
  redis.call('ZADD', K_QUEUE, seq, id)
  redis.call('ZADD', lane.tq .. f[1], seq, id)
  join_fair(lane, f[1])
  redis.call('ZADD', lane.queued_at, now, id)
  redis.call('HSET', jk, 'queued_ms', now)
  -- A job back in line keeps its deadline, though it may have passed while it ran.
  if f[3] then
    redis.call('ZADD', K_DEADLINES, f[3], id)
  end
  wake_if_queued()
end

local function dequeue(id)
  redis.call('ZREM', K_QUEUE, id)
  local f = redis.call('HMGET', K_JOB .. id, 'tenant', 'class')
  local lane = lane_of(f[2])
  redis.call('ZREM', lane.queued_at, id)
  if f[1] then
    leave_tenant_queue(lane, f[1], id)
  end
end

-- Takes a job off its lease, its pool's in-flight set and its in-house endpoint, which
-- frees its capacity.
local function unrun(jk, id)
  redis.call('ZREM', K_LEASES, id)
  local placed = redis.call('HMGET', jk, 'pool', 'endpoint')
  if placed[1] and placed[1] ~= '' then
    redis.call('SREM', K_RUNNING .. placed[1], id)
  end
  if placed[2] and placed[2] ~= '' then
    redis.call('SREM', K_ENDPOINT .. placed[2], id)
  end
end

-- The in-house endpoints that may take work (members, not draining, not ejected), each
-- as {address, slots, busy}. Busy counts every job placed there by any replica.
local function usable_endpoints()
  local members = redis.call('HGETALL', K_FLEET_SLOTS)
  local usable = {}
  for i = 1, #members, 2 do
    local address = members[i]
    if redis.call('SISMEMBER', K_FLEET_DRAINING, address) == 0
        and redis.call('HEXISTS', K_FLEET_DOWN, address) == 0 then
      table.insert(usable, {address, tonumber(members[i + 1]),
        redis.call('SCARD', K_ENDPOINT .. address)})
    end
  end
  return usable
end

-- The usable endpoint with the most free slots, or nil when every one is full.
local function freest_endpoint()
  local best, best_free = nil, 0
  for _, e in ipairs(usable_endpoints()) do
    local free = e[2] - e[3]
    if free > best_free then
      best, best_free = e[1], free
    end
  end
  return best
end

-- Queues the webhook deliveries of a job's terminal status, one per endpoint of its
-- tenant that subscribes to it, in the same step as the status: no crash can lose one.
local function webhook_outbox(jk, id, status, code, message, now)
  if status ~= 'completed' and status ~= 'failed' then
    return
  end
  local etype = 'video.' .. status
  local targets = {}
  for _, ep in ipairs(redis.call('ZRANGE', K_WH_TENANT .. redis.call('HGET', jk, 'tenant'), 0, -1)) do
    local f = redis.call('HMGET', K_WH_EP .. ep, 'event_types', 'disabled')
    if f[1] and (not f[2] or f[2] == '')
        and string.find(',' .. f[1] .. ',', ',' .. etype .. ',', 1, true) then
      table.insert(targets, ep)
    end
  end
  if #targets == 0 then
    return
  end
  local evt = string.format('evt_%.0f%06d', now, redis.call('INCR', K_WH_SEQ) % 1000000)
  local data = {id = id, object = 'video', status = status}
  if code ~= '' then
    data.error = {code = code, message = message}
  end
  local body = cjson.encode({id = evt, object = 'event', type = etype,
    created_at = math.floor(now / 1000), data = data})
  redis.call('HSET', K_WH_EVT .. evt, 'body', body, 'pending', #targets)
  for _, ep in ipairs(targets) do
    redis.call('ZADD', K_WH_OUTBOX, now, evt .. ' ' .. ep)
  end
end

-- Moves a job to a terminal status: final fields, a terminal event, and a TTL on the
-- job and its events so finished jobs do not pile up.
local function finish(jk, evkey, chan, maxlen, id, status, code, message, retention_ms)
  local now = now_ms()
  unrun(jk, id)
  redis.call('HSET', jk, 'status', status, 'completed_ms', now,
    'expires_ms', now + retention_ms, 'error_code', code, 'error_message', message)
  local progress = tonumber(redis.call('HGET', jk, 'progress') or '0')
  if status == 'completed' then
    progress = 100
    redis.call('HSET', jk, 'progress', 100)
    -- The MP4 expires with the job: indexed in the same step, so no crash can leave
    -- an object that nothing will delete.
    local object = redis.call('HGET', jk, 'key')
    if object then
      redis.call('ZADD', K_OBJECT_EXPIRY, now + retention_ms, object)
    end
  end
  local ev = {type = status, status = status, progress = progress, t = now}
  if code ~= '' then
    ev.error_code = code
    ev.error_message = message
  end
  emit(evkey, chan, maxlen, ev)
  webhook_outbox(jk, id, status, code, message, now)
  redis.call('PEXPIRE', jk, retention_ms)
  redis.call('PEXPIRE', evkey, retention_ms)
  -- Capacity was freed and the fleet changed: a dispatcher decides again, even with
  -- nothing queued, so that what it reports (in-flight, spend) stays current.
  wake()
end

-- Puts a dispatched job back in line (a fresh attempt: no remote call to resume), or
-- fails it once it has used its attempts.
local function requeue_or_fail(jk, evkey, chan, maxlen, id, max_attempts, retention_ms,
                               code, message)
  local attempt = tonumber(redis.call('HGET', jk, 'attempt') or '0')
  if attempt >= max_attempts then
    finish(jk, evkey, chan, maxlen, id, 'failed', code,
      message .. ' (gave up after ' .. attempt .. ' attempts)', retention_ms)
    return 'failed'
  end
  unrun(jk, id)
  redis.call('HSET', jk, 'status', 'queued', 'progress', 0, 'owner', '', 'pool', '',
    'endpoint', '', 'call_id', '')
  enqueue(jk, id, redis.call('HGET', jk, 'seq'))
  emit(evkey, chan, maxlen, {type = 'requeued', status = 'queued', progress = 0,
    t = now_ms(), error_code = code, error_message = message})
  return 'requeued'
end

-- Cancels a job that is still queued or running; returns whether it did.
local function cancel_if_live(jk, evkey, chan, maxlen, id, message, retention_ms)
  local status = redis.call('HGET', jk, 'status')
  if status ~= 'queued' and status ~= 'in_progress' then
    return false
  end
  dequeue(id)
  finish(jk, evkey, chan, maxlen, id, 'cancelled', 'cancelled', message, retention_ms)
  return true
end

-- Appends one delivery attempt to a webhook endpoint's log, while the endpoint exists.
local function webhook_log(ep, evt, body, attempt, status_code, err, outcome, maxlen, now)
  if redis.call('EXISTS', K_WH_EP .. ep) == 0 then
    return
  end
  local entry = {event_id = evt, attempt = attempt, status_code = status_code, error = err,
    outcome = outcome, t = now}
  if body then
    local event = cjson.decode(body)
    entry.event_type = event.type
    entry.video_id = event.data.id
  end
  redis.call('XADD', K_WH_LOG .. ep, 'MAXLEN', '~', maxlen, '*', 'd', cjson.encode(entry))
end

-- Ends a webhook delivery (delivered, given up or dropped): off the outbox, logged, and
-- its event deleted once no delivery of it is pending.
local function webhook_end(member, evt, ep, body, attempt, status_code, err, outcome, maxlen)
  redis.call('ZREM', K_WH_OUTBOX, member)
  redis.call('DEL', K_WH_DLV .. member)
  webhook_log(ep, evt, body, attempt, status_code, err, outcome, maxlen, now_ms())
  if body and redis.call('HINCRBY', K_WH_EVT .. evt, 'pending', -1) <= 0 then
    redis.call('DEL', K_WH_EVT .. evt)
  end
end
