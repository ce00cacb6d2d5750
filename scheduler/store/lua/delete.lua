-- KEYS: job, events, tenant jobs
-- ARGV: id, channel, events maxlen, tenant, idempotency key prefix
-- Deletes a job of the tenant and everything that names it, cancelling it first if it
-- still runs. Returns {1 if it cancelled the job else 0, the job's hash as it was}, or
-- false if the tenant has no such job.
if redis.call('HGET', KEYS[1], 'tenant') ~= ARGV[4] then
  return false
end
-- Watchers see a terminal event before the job disappears.
local ended = cancel_if_live(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[1],
  'deleted on request', 60000)
local fields = redis.call('HGETALL', KEYS[1])
local idem = redis.call('HGET', KEYS[1], 'idem')
if idem and idem ~= '' then
  local ik = ARGV[5] .. idem
  if redis.call('GET', ik) == ARGV[1] then
    redis.call('DEL', ik)
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
dequeue(ARGV[1])
unrun(KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return {ended and 1 or 0, fields}
