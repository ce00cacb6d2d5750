-- ARGV: address, '' if it served, else why it failed; failures that eject it
-- Records what a render or a health probe found. A failure counts toward ejection; the
-- endpoint is ejected once it has failed that many times in a row. A success clears the
-- count and re-admits an ejected endpoint, waking a dispatcher for the capacity.
-- Returns 'ejected' or 'readmitted' when that changed, else ''.
local address, failure = ARGV[1], ARGV[2]
if redis.call('HEXISTS', K_FLEET_SLOTS, address) == 0 then
  return ''
end
if failure == '' then
  redis.call('HDEL', K_FLEET_FAILS, address)
  if redis.call('HDEL', K_FLEET_DOWN, address) == 1 then
    wake()
    return 'readmitted'
  end
  return ''
end
local fails = redis.call('HINCRBY', K_FLEET_FAILS, address, 1)
if fails >= tonumber(ARGV[3]) then
  if redis.call('HSET', K_FLEET_DOWN, address, failure) == 1 then
    return 'ejected'
  end
end
return ''
