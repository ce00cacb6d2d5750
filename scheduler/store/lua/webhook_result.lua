-- ARGV: outbox member, attempt, outcome (delivered | retry | disabled | dropped),
--       status code, error, retry delay ms, retry window ms, log maxlen
-- Records one delivery attempt in the endpoint's log and ends or reschedules the
-- delivery. A stale attempt (the delivery was claimed again since) only logs. Returns
-- the outcome logged: a retry past the window gives up.
local now = now_ms()
local member = ARGV[1]
local evt, ep = string.match(member, '^(%S+) (%S+)$')
local dk = K_WH_DLV .. member
local current = tonumber(redis.call('HGET', dk, 'attempt') or '0') == tonumber(ARGV[2])
local outcome = ARGV[3]
local body = redis.call('HGET', K_WH_EVT .. evt, 'body')
if outcome == 'retry' then
  local first = tonumber(redis.call('HGET', dk, 'first_ms') or now)
  if now + tonumber(ARGV[6]) - first > tonumber(ARGV[7]) then
    outcome = 'gave_up'
  else
    outcome = 'retrying'
    if current then
      redis.call('ZADD', K_WH_OUTBOX, now + tonumber(ARGV[6]), member)
    end
  end
end
if outcome == 'disabled' then
  redis.call('HSET', K_WH_EP .. ep, 'disabled', 'the receiver answered 410 Gone',
    'updated_ms', now)
end
if outcome == 'retrying' or not current then
  webhook_log(ep, evt, body, tonumber(ARGV[2]), tonumber(ARGV[4]), ARGV[5], outcome,
    tonumber(ARGV[8]), now)
else
  webhook_end(member, evt, ep, body, tonumber(ARGV[2]), tonumber(ARGV[4]), ARGV[5], outcome,
    tonumber(ARGV[8]))
end
return outcome
