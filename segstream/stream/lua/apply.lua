-- Apply one user's input events, in order, exactly once in effect; return the user's state.
--
-- KEYS[1]  the user's hash, e.g. "ss:{u:42}"     KEYS[2]  the user's outbox list ("...:ob")
-- ARGV[1]  number of events, then for each event:
--   kind ("u" profile | "o" order), fence field ("f:<topic>:<partition>"), offset,
--   "u": age, gender, country, traffic_source
--   "o": order_id, item count k, then k pairs of brand, category ("" = missing, not counted)
--
-- Fencing: an event whose offset is <= the one stored for its topic/partition was applied
-- before (a redelivery after a crash or rebalance) and changes nothing. An order_id already
-- counted (a re-sent order, e.g. a status update) changes nothing but the fence.
--
-- Hash fields: age gen cty src (profile), n (orders counted), o:<order_id> (counted orders),
-- b:<brand> c:<category> (item counts), tb tc (current most frequent brand and category),
-- seg mv ua cs (last segment queued, its model version, its occurred_at, and how many changes
-- were queued; written by settle.lua),
-- f:<topic>:<partition> (fences).
--
-- Returns {applied, age, gen, cty, src, n, tb, tc, seg, mv, pending, cs}: how many events
-- were fresh, the state after them (nil where missing), the outbox length and the number of
-- changes queued so far (the sequence number of the user's last change).

local key = KEYS[1]

-- Byte-wise a < b. Lua's own string "<" calls strcoll(), which follows the server's
-- LC_COLLATE; the SQL and Python order by bytes (code points), whatever the locale.
local function bytes_less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end

-- Count one more item of `name` and keep the most frequent one current in O(1): counts only
-- grow, so the new leader is either the old one or `name` (ties: the byte-wise smaller).
local function bump(prefix, top_field, name)
  if name == '' then
    return
  end
  local count = redis.call('HINCRBY', key, prefix .. name, 1)
  local top = redis.call('HGET', key, top_field)
  if top == name then
    return
  end
  if top then
    local top_count = tonumber(redis.call('HGET', key, prefix .. top))
    if count < top_count or (count == top_count and not bytes_less(name, top)) then
      return
    end
  end
  redis.call('HSET', key, top_field, name)
end

local pos = 2
local applied = 0
for _ = 1, tonumber(ARGV[1]) do
  local kind, fence, offset = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2]
  pos = pos + 3
  local seen = tonumber(redis.call('HGET', key, fence))
  local fresh = seen == nil or tonumber(offset) > seen
  if kind == 'u' then
    if fresh then
      redis.call('HSET', key, 'age', ARGV[pos], 'gen', ARGV[pos + 1], 'cty', ARGV[pos + 2],
        'src', ARGV[pos + 3], fence, offset)
    end
    pos = pos + 4
  elseif kind == 'o' then
    local order, k = ARGV[pos], tonumber(ARGV[pos + 1])
    pos = pos + 2
    if fresh then
      if redis.call('HSETNX', key, 'o:' .. order, 1) == 1 then
        redis.call('HINCRBY', key, 'n', 1)
        for i = 0, k - 1 do
          bump('b:', 'tb', ARGV[pos + 2 * i])
          bump('c:', 'tc', ARGV[pos + 2 * i + 1])
        end
      end
      redis.call('HSET', key, fence, offset)
    end
    pos = pos + 2 * k
  else
    return redis.error_reply('unknown event kind ' .. tostring(kind))
  end
  if fresh then
    applied = applied + 1
  end
end

local state = redis.call('HMGET', key, 'age', 'gen', 'cty', 'src', 'n', 'tb', 'tc', 'seg', 'mv')
local reply = {applied}
for i = 1, 9 do
  reply[i + 1] = state[i]
end
reply[11] = redis.call('LLEN', KEYS[2])
reply[12] = tonumber(redis.call('HGET', key, 'cs') or 0)
return reply
