-- ARGV: batch size, visibility ms, log maxlen, deliveries per endpoint at once,
--       then pairs of endpoint id and its deliveries this replica has in flight
-- Claims the webhook deliveries that are due: each moves a visibility timeout ahead, so
-- that if this replica dies mid-delivery another sends it again. A delivery whose
-- endpoint is gone or disabled ends here. Returns, per claimed delivery: outbox member,
-- url, body, attempt number, and the signing secrets (the old one during its grace).
local now = now_ms()
local batch, per_endpoint = tonumber(ARGV[1]), tonumber(ARGV[4])
local busy = {}
for i = 5, #ARGV, 2 do
  busy[ARGV[i]] = tonumber(ARGV[i + 1])
end
-- Looks past deliveries to endpoints at their bound, so one slow receiver does not
-- hold up the others.
local due = redis.call('ZRANGEBYSCORE', K_WH_OUTBOX, '-inf', now, 'LIMIT', 0, batch * 4)
local out = {}
for _, member in ipairs(due) do
  if #out >= batch then
    break
  end
  local evt, ep = string.match(member, '^(%S+) (%S+)$')
  local epk = K_WH_EP .. ep
  local f = redis.call('HMGET', epk, 'url', 'secret', 'old_secret', 'old_until_ms', 'disabled')
  local body = redis.call('HGET', K_WH_EVT .. evt, 'body')
  local why = nil
  if not f[1] then
    why = 'the endpoint was deleted'
  elseif f[5] and f[5] ~= '' then
    why = 'the endpoint is disabled: ' .. f[5]
  elseif not body then
    why = 'the event is gone'
  end
  if why then
    webhook_end(member, evt, ep, body, 0, 0, why, 'dropped', tonumber(ARGV[3]))
  elseif (busy[ep] or 0) < per_endpoint then
    busy[ep] = (busy[ep] or 0) + 1
    local dk = K_WH_DLV .. member
    local attempt = redis.call('HINCRBY', dk, 'attempt', 1)
    redis.call('HSETNX', dk, 'first_ms', now)
    redis.call('ZADD', K_WH_OUTBOX, now + tonumber(ARGV[2]), member)
    local secrets = f[2]
    if f[3] and f[3] ~= '' and tonumber(f[4]) > now then
      secrets = secrets .. ' ' .. f[3]
    end
    table.insert(out, {member, f[1], body, attempt, secrets})
  end
end
return out
