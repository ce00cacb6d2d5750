-- ARGV: job prefix, events prefix, channel prefix, events maxlen, retention ms,
--       wait ms, batch size
-- Fails queued jobs that have waited at least `wait ms` (the policy found both fleets
-- full). Returns their ids.
local cutoff = now_ms() - tonumber(ARGV[6])
local ids = redis.call('ZRANGEBYSCORE', K_QUEUED_AT, '-inf', cutoff,
  'LIMIT', 0, tonumber(ARGV[7]))
local waited = math.floor(tonumber(ARGV[6]) / 1000)
for _, id in ipairs(ids) do
  local jk = ARGV[1] .. id
  dequeue(id)
  if redis.call('HGET', jk, 'status') == 'queued' then
    finish(jk, ARGV[2] .. id, ARGV[3] .. id, ARGV[4], id, 'failed', 'queue_timeout',
      'waited over ' .. waited .. ' s in the queue while both fleets were full',
      tonumber(ARGV[5]))
  end
end
return ids
