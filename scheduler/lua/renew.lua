-- ARGV: lease ms, ids...
-- Extends the leases of the given jobs that are still leased. Returns how many.
local deadline = now_ms() + tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', K_LEASES, 'XX', 'CH', deadline, ARGV[i])
end
return renewed
