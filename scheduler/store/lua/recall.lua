-- KEYS: job, events
-- ARGV: id, channel, events maxlen, lease, reason
-- Takes a job off the second fleet while its render has not started, if this lease
-- still holds it, and puts it back in line, uncharged, at the place its submission gave
-- it (ahead of every job submitted after it): it already waited. The recalled attempt's
-- later writes find the job queued, or under a newer lease, and change nothing.
-- Returns 1, or 0 when the job moved on or its render started.
local cur = redis.call('HMGET', KEYS[1], 'status', 'lease', 'render_started_ms', 'pool')
if cur[1] ~= 'in_progress' or cur[2] ~= ARGV[4] or tonumber(cur[3] or '0') > 0 then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'attempt', -1)
unrun(KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'queued', 'progress', 0, 'owner', '', 'pool', '',
  'endpoint', '', 'call_id', '')
enqueue(KEYS[1], ARGV[1], redis.call('HGET', KEYS[1], 'seq'))
emit(KEYS[2], ARGV[2], ARGV[3], {type = 'recalled', status = 'queued', progress = 0,
  t = now_ms(), pool = cur[4], reason = ARGV[5]})
return 1
