-- KEYS: job
-- ARGV: lease
-- Marks a running job's render as started, before its input reaches a renderer, if
-- this lease still holds it: from then on the job is never recalled. Returns 1 or 0.
local cur = redis.call('HMGET', KEYS[1], 'status', 'lease')
if cur[1] ~= 'in_progress' or cur[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'render_started_ms', now_ms())
return 1
