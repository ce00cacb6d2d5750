-- KEYS: job, events, render samples, cold-start samples, the second fleet's renders (for
--       the spend meter), the month's spend by tenant
-- ARGV: channel, events maxlen, lease, progress, render ms, cold start ms (-1: warm),
--       samples kept, USD (0: nothing to meter), tenant, spend TTL s, container id (''
--       in-house), ms from its boot start to now (or, warm, from the render's start),
--       renders kept, 1 if the input waited for its container's boot (else 0)
-- A render of this lease succeeded. Records its samples, its container for the spend
-- meter and the tenant's share of the GPU time, once per lease however often this is
-- retried, and even when the job has moved on (the GPU time was spent); then marks the
-- job uploading if this lease still holds it. One round trip for what the policy learns
-- and what the caller sees. Returns 1, or 0 when stale.
local cur = redis.call('HMGET', KEYS[1], 'status', 'lease', 'observed')
if cur[3] ~= ARGV[3] then
  local kept = tonumber(ARGV[7]) - 1
  redis.call('LPUSH', KEYS[3], ARGV[5])
  redis.call('LTRIM', KEYS[3], 0, kept)
  if tonumber(ARGV[6]) >= 0 then
    redis.call('LPUSH', KEYS[4], ARGV[6])
    redis.call('LTRIM', KEYS[4], 0, kept)
  end
  if ARGV[11] ~= '' then
    local now = now_ms()
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[13], '*',
      'c', ARGV[11], 'b', now - tonumber(ARGV[12]), 'e', now, 'k', ARGV[14])
  end
  if tonumber(ARGV[8]) > 0 then
    redis.call('HINCRBYFLOAT', KEYS[6], ARGV[9], ARGV[8])
    redis.call('EXPIRE', KEYS[6], ARGV[10])
  end
  if cur[1] then
    redis.call('HSET', KEYS[1], 'observed', ARGV[3])
  end
end
if cur[1] ~= 'in_progress' or cur[2] ~= ARGV[3] then
  return 0
end
redis.call('HSET', KEYS[1], 'progress', ARGV[4])
emit(KEYS[2], ARGV[1], ARGV[2],
  {type = 'uploading', status = 'in_progress', progress = tonumber(ARGV[4]), t = now_ms()})
return 1
