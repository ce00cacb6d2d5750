-- KEYS: job
-- ARGV: id, lease
-- Lets the lease of a running job lapse now (this replica is shutting down and the
-- job's remote call goes on), so that any replica's next reclaim adopts it.
-- Returns 1, or 0 if this lease no longer holds the job.
local cur = redis.call('HMGET', KEYS[1], 'status', 'lease')
if cur[1] ~= 'in_progress' or cur[2] ~= ARGV[2] then
  return 0
end
redis.call('ZADD', K_LEASES, 'XX', 0, ARGV[1])
return 1
