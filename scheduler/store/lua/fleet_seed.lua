-- ARGV: the seed (the SPILLWAY_INHOUSE_RENDERERS value), then (address, slots) pairs
-- Adds the configured endpoints to the fleet, unless this very value was seeded before:
-- a replica restarting with unchanged settings must not undo what an operator changed
-- since (a drain, a removal). Returns 1 if it seeded.
if redis.call('GET', K_FLEET_SEED) == ARGV[1] then
  return 0
end
for i = 2, #ARGV, 2 do
  redis.call('HSET', K_FLEET_SLOTS, ARGV[i], ARGV[i + 1])
  redis.call('SREM', K_FLEET_DRAINING, ARGV[i])
end
redis.call('SET', K_FLEET_SEED, ARGV[1])
wake()
return 1
