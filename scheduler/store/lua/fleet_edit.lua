-- ARGV: action ('add', 'drain', 'remove'), address, slots (for add)
-- Changes the in-house fleet's membership. `add` admits a new endpoint (or changes its
-- slots, and ends its drain); `drain` sends it no new work; `remove` forgets it, while
-- what runs there finishes. Returns 1 if the address was a member before, else 0.
local action, address = ARGV[1], ARGV[2]
local was = redis.call('HEXISTS', K_FLEET_SLOTS, address)
if action == 'add' then
  redis.call('HSET', K_FLEET_SLOTS, address, ARGV[3])
  redis.call('SREM', K_FLEET_DRAINING, address)
  wake()
elseif was == 1 and action == 'drain' then
  redis.call('SADD', K_FLEET_DRAINING, address)
elseif action == 'remove' then
  redis.call('HDEL', K_FLEET_SLOTS, address)
  redis.call('SREM', K_FLEET_DRAINING, address)
  redis.call('HDEL', K_FLEET_DOWN, address)
  redis.call('HDEL', K_FLEET_FAILS, address)
end
return was
