-- Every in-house endpoint as {address, slots, busy, draining (0/1), down reason or '',
-- consecutive failures}, in address order.
local members = redis.call('HGETALL', K_FLEET_SLOTS)
local rows = {}
for i = 1, #members, 2 do
  local address = members[i]
  table.insert(rows, {address, tonumber(members[i + 1]),
    redis.call('SCARD', K_ENDPOINT .. address),
    redis.call('SISMEMBER', K_FLEET_DRAINING, address),
    redis.call('HGET', K_FLEET_DOWN, address) or '',
    tonumber(redis.call('HGET', K_FLEET_FAILS, address) or '0')})
end
table.sort(rows, function(a, b) return a[1] < b[1] end)
return rows
