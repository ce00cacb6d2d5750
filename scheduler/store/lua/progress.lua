-- KEYS: job, events
-- ARGV: channel, events maxlen, lease, event type, progress
-- Records progress of a running job, if this lease still holds it. Returns 1 or 0.
local cur = redis.call('HMGET', KEYS[1], 'status', 'lease')
if cur[1] ~= 'in_progress' or cur[2] ~= ARGV[3] then
  return 0
end
redis.call('HSET', KEYS[1], 'progress', ARGV[5])
emit(KEYS[2], ARGV[1], ARGV[2],
  {type = ARGV[4], status = 'in_progress', progress = tonumber(ARGV[5]), t = now_ms()})
return 1
