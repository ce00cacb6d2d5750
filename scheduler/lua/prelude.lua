-- Shared by every script (prepended by scheduler/store.py). Times come from the Redis
-- server so that replicas with skewed clocks agree on leases and timestamps.

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

-- Keeps one token in the wake list while the queue may hold work, so an idle
-- dispatcher blocked on it wakes up.
local function wake(wakekey)
  if redis.call('LLEN', wakekey) == 0 then
    redis.call('LPUSH', wakekey, '1')
  end
end

-- Moves a job to a terminal status: final fields, a terminal event, and a TTL on the
-- job and its events so finished jobs do not pile up.
local function finish(jk, evkey, chan, maxlen, leases, id, status, code, message, retention_ms)
  local now = now_ms()
  redis.call('ZREM', leases, id)
  redis.call('HSET', jk, 'status', status, 'completed_ms', now,
    'expires_ms', now + retention_ms, 'error_code', code, 'error_message', message)
  local progress = tonumber(redis.call('HGET', jk, 'progress') or '0')
  if status == 'completed' then
    progress = 100
    redis.call('HSET', jk, 'progress', 100)
  end
  local ev = {type = status, status = status, progress = progress, t = now}
  if code ~= '' then
    ev.error_code = code
    ev.error_message = message
  end
  emit(evkey, chan, maxlen, ev)
  redis.call('PEXPIRE', jk, retention_ms)
  redis.call('PEXPIRE', evkey, retention_ms)
end

-- Puts a dispatched job back in line, or fails it once it has used its attempts.
local function requeue_or_fail(jk, evkey, chan, maxlen, leases, queue, wakekey, id,
                               max_attempts, retention_ms, code, message)
  local attempt = tonumber(redis.call('HGET', jk, 'attempt') or '0')
  if attempt >= max_attempts then
    finish(jk, evkey, chan, maxlen, leases, id, 'failed', code,
      message .. ' (gave up after ' .. attempt .. ' attempts)', retention_ms)
    return 'failed'
  end
  redis.call('ZREM', leases, id)
  redis.call('HSET', jk, 'status', 'queued', 'progress', 0, 'owner', '', 'pool', '')
  redis.call('ZADD', queue, redis.call('HGET', jk, 'seq'), id)
  emit(evkey, chan, maxlen, {type = 'requeued', status = 'queued', progress = 0,
    t = now_ms(), error_code = code, error_message = message})
  wake(wakekey)
  return 'requeued'
end

-- Cancels a job that is still queued or running; returns whether it did.
local function cancel_if_live(jk, evkey, chan, maxlen, queue, leases, id, message,
                              retention_ms)
  local status = redis.call('HGET', jk, 'status')
  if status ~= 'queued' and status ~= 'in_progress' then
    return false
  end
  redis.call('ZREM', queue, id)
  finish(jk, evkey, chan, maxlen, leases, id, 'cancelled', 'cancelled', message, retention_ms)
  return true
end
