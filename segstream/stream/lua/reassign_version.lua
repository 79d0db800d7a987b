-- Record that users keep their segment under a new model version (segstream reassign): set the
-- hash field mv, and nothing else, for each user whose stored segment, model version and change
-- count are still the ones the caller read (compare-and-set, as settle.lua): a worker that
-- re-assigned the user in between wins, and a repeated call changes nothing.
--
-- KEYS     the users' hashes (one call per hash slot on a Cluster: the caller sends one user a
--          call there).
-- ARGV[1]  JSON: one array per user, in KEYS order, of four strings: the segment, model version
--          and change count ("0" when absent) the caller read, and the new model version.
--
-- No change event is queued: the segment id is the same (ids are stable across versions), so
-- downstream has nothing to learn. A hash that disappeared meanwhile is not recreated.
--
-- Returns how many users were updated.

local rows = cjson.decode(ARGV[1])
local updated = 0
for u, a in ipairs(rows) do
  local current = redis.call('HMGET', KEYS[u], 'seg', 'mv', 'cs')
  if current[1] and current[1] == a[1] and (current[2] or '') == a[2]
      and (current[3] or '0') == a[3] then
    redis.call('HSET', KEYS[u], 'mv', a[4])
    updated = updated + 1
  end
end
return updated
