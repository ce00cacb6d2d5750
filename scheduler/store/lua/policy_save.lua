-- KEYS: policy, transitions
-- ARGV: expected version, state JSON, transition JSON ('' for none), transitions maxlen
-- Saves the spillover policy's state if no other replica saved since this one read it
-- (compare-and-set on the version), recording a mode change with it.
-- Returns 1, or 0 when the version moved on (re-read and decide again).
local version = redis.call('HGET', KEYS[1], 'version') or '0'
if version ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'version', tonumber(version) + 1)
if ARGV[3] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'd', ARGV[3])
end
return 1
