-- Record users' new segments and queue their change events in their outboxes, atomically per
-- call; return every change still waiting to be published.
--
-- KEYS     two per user: the user's hash, then the user's outbox list (same slot rules as
--          apply.lua: one call per hash slot on a Cluster, one per batch otherwise).
-- ARGV[1]  JSON: one array per user, in KEYS order, of seven strings:
--   1, 2  the segment and model version the caller saw ("" = none)
--   3, 4  the new segment and model version
--   5     the change event (JSON text), or "" to only read the outbox
--   6     the change's occurred_at (RFC 3339), stored as "ua": when the segment was set
--   7     the number of changes queued so far that the caller saw (hash field "cs", "0" when
--         absent); the new change is number (7) + 1 and its event_id is derived from it,
--         so no two changes of a user can share an event_id
-- The write happens only if the stored segment, model version and change count are still
-- the ones the caller saw, so a retried or stale call cannot queue the same change twice.
--
-- The outbox is a list of the serialised change events, oldest first; entries are removed
-- (LREM by value) only after the broker acknowledged them, so a crash in between re-sends
-- the same bytes, with the same event_id.
--
-- Returns one list per user, in KEYS order: its pending changes, oldest first.

local users = cjson.decode(ARGV[1])
local reply = {}
for u, a in ipairs(users) do
  local key, outbox = KEYS[2 * u - 1], KEYS[2 * u]
  if a[5] ~= '' then
    local current = redis.call('HMGET', key, 'seg', 'mv', 'cs')
    if (current[1] or '') == a[1] and (current[2] or '') == a[2]
        and (current[3] or '0') == a[7] then
      redis.call('HSET', key, 'seg', a[3], 'mv', a[4], 'ua', a[6],
        'cs', string.format('%d', tonumber(a[7]) + 1))
      redis.call('RPUSH', outbox, a[5])
    end
  end
  reply[u] = redis.call('LRANGE', outbox, 0, -1)
end
return reply
