-- ARGV: job prefix, events prefix, channel prefix, events maxlen, retention ms, tenant,
--       batch size
-- Cancels up to a batch of the tenant's queued jobs (an operator's call); running ones
-- go on. Returns {how many it cancelled, how many entries it looked at}.
local cancelled = 0
local looked = 0
for _, lane in ipairs({LANES.interactive, LANES.batch}) do
  local ids = redis.call('ZRANGE', lane.tq .. ARGV[6], 0, tonumber(ARGV[7]) - looked - 1)
  for _, id in ipairs(ids) do
    if cancel_if_live(ARGV[1] .. id, ARGV[2] .. id, ARGV[3] .. id, ARGV[4], id,
        'cancelled by an operator', tonumber(ARGV[5])) then
      cancelled = cancelled + 1
    else
      leave_tenant_queue(lane, ARGV[6], id)
    end
  end
  looked = looked + #ids
  if looked >= tonumber(ARGV[7]) then
    break
  end
end
return {cancelled, looked}
