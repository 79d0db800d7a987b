-- Record a user's new segment and queue its change event in the user's outbox, atomically;
-- return every change still waiting to be published.
--
-- KEYS[1]  the user's hash      KEYS[2]  the user's outbox list
-- ARGV[1], ARGV[2]  the segment and model version the caller saw ("" = none): the write
--                   happens only if they (and ARGV[7]) are still the stored ones, so a retried
--                   or stale call cannot queue the same change twice
-- ARGV[3], ARGV[4]  the new segment and model version
-- ARGV[5]  the change event (JSON), or "" to only read the outbox
-- ARGV[6]  the change's occurred_at (RFC 3339), stored as "ua": when the segment was set
-- ARGV[7]  the number of changes queued so far that the caller saw (hash field "cs", 0 when
--          absent); the new change is number ARGV[7] + 1 and its event_id is derived from it,
--          so no two changes of a user can share an event_id
--
-- The outbox is a list of the serialised change events, oldest first; entries are removed
-- (LREM by value) only after the broker acknowledged them, so a crash in between re-sends
-- the same bytes, with the same event_id.

if ARGV[5] ~= '' then
  local current = redis.call('HMGET', KEYS[1], 'seg', 'mv', 'cs')
  if (current[1] or '') == ARGV[1] and (current[2] or '') == ARGV[2]
      and (current[3] or '0') == ARGV[7] then
    redis.call('HSET', KEYS[1], 'seg', ARGV[3], 'mv', ARGV[4], 'ua', ARGV[6],
      'cs', tonumber(ARGV[7]) + 1)
    redis.call('RPUSH', KEYS[2], ARGV[5])
  end
end
return redis.call('LRANGE', KEYS[2], 0, -1)
