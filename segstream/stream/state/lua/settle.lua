-- Record users' new segments and model versions, queue their change events in their outboxes,
-- atomically per call; return every change still waiting to be published.
--
-- KEYS     two per user: the user's hash, then the user's outbox list (same slot rules as
--          apply.lua: one call per hash slot on a Cluster, one per batch otherwise); then the
--          population counter hash of these users (as in apply.lua).
-- ARGV[1]  JSON: one array per user, in KEYS order, of nine strings (eight from callers
--          before drift epochs: the ninth then counts as ""):
--   1, 2  the segment and model version the caller saw ("" = none)
--   3, 4  the new segment and model version
--   5     the change event (JSON text), or "" when the segment did not change
--   6     the change's occurred_at (RFC 3339), stored as "ua": when the segment was set
--   7     the number of changes queued so far that the caller saw (hash field "cs", "0" when
--         absent); the new change is number (7) + 1 and its event_id is derived from it,
--         so no two changes of a user can share an event_id
--   8     the features version the caller saw (hash field "fv", "0" when absent): the
--         features the new segment was computed from
--   9     drift mode: the drift epoch the new segment was assigned with, stored as "de" by
--         every write of the row; "" without drift (a write then removes "de")
--
--   A leave row is instead seven strings: "x", the leave's fence field and offset, the seen
--   segment, model version and change count (as 1, 2, 7 above), and the leave event (JSON
--   text): see leave() below.
--
-- Each row is one of (the caller picks; segstream.stream.domain.changes.plan_settle):
--   a change     (5) given: set seg mv ua, cs + 1, and queue the event;
--   an unassign  (5) given, (3) and (4) "": the user is no longer assignable (change data
--                capture took a feature away): remove seg mv ua de, cs + 1, and queue the
--                event (its segment null); the hash stays (the user still has rows and may
--                become assignable again: that is then a change from no segment);
--   version only (5) "", (4) differs from (2) or (9) given, (3) = (1): set mv (and de) only,
--                no event. A segment id means the same customers across model versions
--                (training aligns them), so downstream has nothing to learn; the stored
--                version and drift epoch still follow what assigned the user;
--   a read       (5) "", (4) = (2), (9) "": write nothing, only return the outbox.
-- A write happens only if the stored segment, model version, change count and features
-- version are still the ones the caller saw: a retried or stale call cannot queue the same
-- change twice, and a segment computed from features an event has changed since (another
-- writer's read-assign-write racing this one) is never stored. A hash that disappeared is
-- not recreated by a version-only row.
--
-- The outbox is a list of the serialised change events, oldest first; entries are removed
-- (LREM by value) only after the broker acknowledged them, so a crash in between re-sends
-- the same bytes, with the same event_id.
--
-- Populations: every stored write moves the user, in the counter hash, from the field of its
-- old segment and version ("s:<segment>:<version>", or "u" for a user not assigned yet or
-- unassigned) to the new one's ("u" for an unassign), in the same atomic step; a field that
-- falls to 0 is removed.
--
-- Returns one list per user, in KEYS order: its pending changes, oldest first; then one more
-- list: the positions (1-based, in KEYS order) of the users whose write was refused.

-- Populations: add `delta` to `field` of the counter hash, removing the field at 0.
local function count(populations, field, delta)
  if redis.call('HINCRBY', populations, field, delta) == 0 then
    redis.call('HDEL', populations, field)
  end
end

-- Populations: move the user of `key` from its stored bucket (`current`: seg, mv) to the
-- bucket of segment `seg` under version `mv` ("u" when `seg` is nil: unassigned). A hash
-- that does not exist was in none.
local function count_move(populations, key, current, seg, mv)
  local from = nil
  if current[1] and current[2] then
    from = 's:' .. current[1] .. ':' .. current[2]
  elseif redis.call('EXISTS', key) == 1 then
    from = 'u'
  end
  local to = 'u'
  if seg then
    to = 's:' .. seg .. ':' .. mv
  end
  if from ~= to then
    if from then
      count(populations, from, -1)
    end
    count(populations, to, 1)
  end
end

local users = cjson.decode(ARGV[1])
local reply = {}
local refused = {}
local populations = KEYS[2 * #users + 1]
-- A leave row (a user leaving, domain/leaving.py): erase the user of `key` and queue the
-- leave event `a[7]` in `outbox`, if the hash exists, the leave is fresh by its fence (a[2]:
-- field, a[3]: offset; a user who came back in the same batch stores the leave's fence) and
-- seg, mv and cs are still a[4], a[5], a[6] (the event was worded from them). Returns false
-- when refused (stale), true otherwise (erased, or nothing to erase).
local function leave(populations, key, outbox, a)
  if redis.call('EXISTS', key) == 0 then
    return true
  end
  local current = redis.call('HMGET', key, 'seg', 'mv', 'cs', a[2])
  if tonumber(current[4] or '-1') >= tonumber(a[3]) then
    return true
  end
  if (current[1] or '') ~= a[4] or (current[2] or '') ~= a[5] or (current[3] or '0') ~= a[6] then
    return false
  end
  if current[1] and current[2] then
    count(populations, 's:' .. current[1] .. ':' .. current[2], -1)
  else
    count(populations, 'u', -1)
  end
  redis.call('DEL', key)
  redis.call('RPUSH', outbox, a[7])
  return true
end

for u, a in ipairs(users) do
  local key, outbox = KEYS[2 * u - 1], KEYS[2 * u]
  local epoch = a[9] or ''
  local change, version_only = a[5] ~= '', a[5] == '' and (a[4] ~= a[2] or epoch ~= '')
  if a[1] == 'x' then  -- Lua 5.1: no goto, so a leave row skips the rest this way
    change, version_only = false, false
    if not leave(populations, key, outbox, a) then
      refused[#refused + 1] = u
    end
  end
  if change or version_only then
    local current = redis.call('HMGET', key, 'seg', 'mv', 'cs', 'fv')
    if (current[1] or '') == a[1] and (current[2] or '') == a[2]
        and (current[3] or '0') == a[7] and (current[4] or '0') == a[8] then
      if change and a[3] == '' then
        -- Unassign: no segment, so no model version or drift epoch either (epoch is "").
        count_move(populations, key, current, nil, nil)
        redis.call('HDEL', key, 'seg', 'mv', 'ua')
        redis.call('HSET', key, 'cs', string.format('%d', tonumber(a[7]) + 1))
        redis.call('RPUSH', outbox, a[5])
      elseif change then
        count_move(populations, key, current, a[3], a[4])
        redis.call('HSET', key, 'seg', a[3], 'mv', a[4], 'ua', a[6],
          'cs', string.format('%d', tonumber(a[7]) + 1))
        redis.call('RPUSH', outbox, a[5])
      else
        count_move(populations, key, current, current[1], a[4])
        redis.call('HSET', key, 'mv', a[4])
      end
      if epoch ~= '' then
        redis.call('HSET', key, 'de', epoch)
      else
        redis.call('HDEL', key, 'de')
      end
    else
      refused[#refused + 1] = u
    end
  end
  reply[u] = redis.call('LRANGE', outbox, 0, -1)
end
reply[#users + 1] = refused
return reply
