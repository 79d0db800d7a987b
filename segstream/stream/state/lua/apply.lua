-- Apply the input events of several users, each user's in order, exactly once in effect;
-- return each user's state.
--
-- KEYS     two per user: the user's hash ("<app>:{u:42}") then the user's outbox ("...:ob").
--          All keys of one call must share a hash slot on a Redis Cluster (the caller groups
--          users by slot there); a standalone server takes a whole batch in one call, which
--          is what makes a batch cost one script call instead of one per event.
-- ARGV[1]  JSON: one array per user, in KEYS order, of that user's events, in order, each
--   ["u", fence field, offset, age, gender, country, traffic_source]  (a profile)
--   ["o", fence field, offset, order_id, [brand, category, brand, category, ...]]  (an order)
--   where the fence field is "f:<topic>:<partition>", offsets and ids are decimal strings
--   (never Lua numbers: they could lose digits) and "" is a missing brand or category.
--   One JSON argument instead of thousands of plain ones: packing those cost the client more
--   than the scripts cost Redis.
--
-- Fencing: an event whose offset is <= the one stored for its topic/partition was applied
-- before (a redelivery after a crash or rebalance) and changes nothing. An order_id already
-- counted (a re-sent order, e.g. a status update) changes nothing but the fence.
--
-- Hash fields: age gen cty src (profile), n (orders counted), o:<order_id> (counted orders),
-- b:<brand> c:<category> (item counts), tb tc (current most frequent brand and category),
-- fv (features version: how many calls changed the features, i.e. wrote a profile or counted
-- a new order; one increment per such call), seg mv ua cs (last segment queued, its model
-- version, its occurred_at, and how many changes were queued; written by settle.lua),
-- f:<topic>:<partition> (fences).
--
-- fv is what a segment was computed from: settle.lua writes a segment only if fv is still
-- the one returned here, so a segment assigned from features that an event changed since
-- (the event landing between a caller's read and its write) is never stored, even when that
-- event left seg, mv and cs as they were. A few bytes per user; one HINCRBY per call.
--
-- Returns, 13 values per user in KEYS order: applied (how many events were fresh), age, gen,
-- cty, src, n, tb, tc, seg, mv (nil where missing), the outbox length, cs and fv (0 if none).

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

-- Count one more item of `name` and return the (possibly new) leader and its count. Counts
-- only grow, so the new leader is either the old one or `name`; ties go to the byte-wise
-- smaller name, as in the SQL. O(1) whatever the user's history.
local function bump(key, prefix, name, top, top_count)
  if name == '' then
    return top, top_count
  end
  local count = redis.call('HINCRBY', key, prefix .. name, 1)
  if top == nil or count > top_count or (count == top_count and bytes_less(name, top)) then
    return name, count
  end
  return top, top_count
end

local users = cjson.decode(ARGV[1])
local reply = {}
for u, events in ipairs(users) do
  local key, outbox = KEYS[2 * u - 1], KEYS[2 * u]
  local fences = {}     -- fence field -> last applied offset, read once per call
  local moved = {}      -- fence fields whose offset advanced, in first-seen order
  local applied, new_orders = 0, 0
  local profile = nil
  local tops = nil      -- {brand, brand count, category, category count}, read when needed
  for _, event in ipairs(events) do
    local kind, fence, offset_text = event[1], event[2], event[3]
    local offset = tonumber(offset_text)
    local seen = fences[fence]
    if seen == nil then
      seen = tonumber(redis.call('HGET', key, fence)) or -1
      fences[fence] = seen
    end
    local fresh = offset > seen
    if fresh then
      if not moved[fence] then
        moved[fence] = true
        moved[#moved + 1] = fence
      end
      fences[fence] = offset
      applied = applied + 1
    end
    if kind == 'u' then
      if fresh then
        profile = {event[4], event[5], event[6], event[7]}
      end
    elseif kind == 'o' then
      if fresh and redis.call('HSETNX', key, 'o:' .. event[4], 1) == 1 then
        new_orders = new_orders + 1
        if tops == nil then
          local t = redis.call('HMGET', key, 'tb', 'tc')
          local tb = t[1] or nil
          local tc = t[2] or nil
          tops = {
            tb, tb and tonumber(redis.call('HGET', key, 'b:' .. tb)) or 0,
            tc, tc and tonumber(redis.call('HGET', key, 'c:' .. tc)) or 0,
          }
        end
        local items = event[5]
        for i = 1, #items, 2 do
          tops[1], tops[2] = bump(key, 'b:', items[i], tops[1], tops[2])
          tops[3], tops[4] = bump(key, 'c:', items[i + 1], tops[3], tops[4])
        end
      end
    else
      return redis.error_reply('unknown event kind ' .. tostring(kind))
    end
  end

  local writes = {}
  for _, fence in ipairs(moved) do
    writes[#writes + 1] = fence
    writes[#writes + 1] = string.format('%d', fences[fence])
  end
  if profile then
    writes[#writes + 1] = 'age'
    writes[#writes + 1] = profile[1]
    writes[#writes + 1] = 'gen'
    writes[#writes + 1] = profile[2]
    writes[#writes + 1] = 'cty'
    writes[#writes + 1] = profile[3]
    writes[#writes + 1] = 'src'
    writes[#writes + 1] = profile[4]
  end
  if tops then
    if tops[1] then
      writes[#writes + 1] = 'tb'
      writes[#writes + 1] = tops[1]
    end
    if tops[3] then
      writes[#writes + 1] = 'tc'
      writes[#writes + 1] = tops[3]
    end
  end
  if #writes > 0 then
    redis.call('HSET', key, unpack(writes))
  end
  if new_orders > 0 then
    redis.call('HINCRBY', key, 'n', new_orders)
  end
  if profile or new_orders > 0 then
    redis.call('HINCRBY', key, 'fv', 1)
  end

  local state = redis.call('HMGET', key, 'age', 'gen', 'cty', 'src', 'n', 'tb', 'tc', 'seg', 'mv',
    'cs', 'fv')
  local base = #reply
  reply[base + 1] = applied
  for i = 1, 9 do
    reply[base + 1 + i] = state[i]
  end
  reply[base + 11] = redis.call('LLEN', outbox)
  reply[base + 12] = tonumber(state[10] or 0)
  reply[base + 13] = tonumber(state[11] or 0)
end
return reply
