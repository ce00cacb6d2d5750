-- ARGV: job prefix, events prefix, channel prefix, events maxlen, retention ms, batch size
-- Fails queued jobs whose deadline has passed, with code 'expired'; forgets the deadlines
-- of jobs that left the queue. Returns {ids failed, ms until the next deadline or -1}.
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', K_DEADLINES, '-inf', now, 'LIMIT', 0, tonumber(ARGV[6]))
local failed = {}
for _, id in ipairs(due) do
  redis.call('ZREM', K_DEADLINES, id)
  local jk = ARGV[1] .. id
  if redis.call('HGET', jk, 'status') == 'queued' then
    dequeue(id)
    finish(jk, ARGV[2] .. id, ARGV[3] .. id, ARGV[4], id, 'failed', 'expired',
      'its deadline passed while it waited in the queue', tonumber(ARGV[5]))
    failed[#failed + 1] = id
  end
end
local upcoming = redis.call('ZRANGE', K_DEADLINES, 0, 0, 'WITHSCORES')
return {failed, upcoming[2] and math.max(0, tonumber(upcoming[2]) - now) or -1}
