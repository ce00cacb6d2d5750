-- ARGV: job prefix, lease ms, then (id, lease) pairs
-- Extends the leases of the given jobs that these lease numbers still hold. Returns the
-- ids they no longer hold (cancelled, finished, or taken over by another attempt), so
-- that their attempts stop.
local deadline = now_ms() + tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local cur = redis.call('HMGET', ARGV[1] .. id, 'status', 'lease')
  if cur[1] == 'in_progress' and cur[2] == ARGV[i + 1] then
    redis.call('ZADD', K_LEASES, 'XX', deadline, id)
  else
    table.insert(lost, id)
  end
end
return lost
