-- Apply the input events of several users, each user's in order, exactly once in effect;
-- return each user's state.
--
-- KEYS     two per user: the user's hash ("<app>:{u:42}") then the user's outbox ("...:ob");
--          then one more: the population counter hash of these users ("<app>:pop:{<tag>}",
--          keys.population_key: the same for every user of one call).
--          All keys of one call must share a hash slot on a Redis Cluster (the caller groups
--          users by slot there); a standalone server takes a whole batch in one call, which
--          is what makes a batch cost one script call instead of one per event.
-- ARGV[1]  JSON: one array per user, in KEYS order, of that user's events, in order, each
--   ["u", fence field, offset, age, gender, country, traffic_source]  (a profile)
--   ["o", fence field, offset, order_id, [brand, category, brand, category, ...]]  (an order)
--   ["f", fence field, offset]  (a fence only: the leave a returning user's events follow in
--   the same batch; settle.lua erased the user, this marks the leave applied in the new state)
--   Row changes of change data capture (domain/rows.py, docs/cdc.md), "1"/"0" = present/deleted:
--   ["ro", fence field, offset, order_id, present, lsn]  (an orders row of the user)
--   ["ri", fence field, offset, item_id, order_id, product_id, present, brand, category, lsn]
--   ["rp", fence field, offset, product_id, brand, category]  (a product's current values)
--   ["rt", fence field, offset, table, lsn]  (orders or order_items truncated at lsn)
--   lsn: the change's position in the database's log (decimal string).
--   where the fence field is "f:<topic>:<partition>", offsets and ids are decimal strings
--   (never Lua numbers: they could lose digits) and "" is a missing brand or category.
--   One JSON argument instead of thousands of plain ones: packing those cost the client more
--   than the scripts cost Redis.
-- ARGV[2]  the order dedupe window W (SEGSTREAM_ORDER_DEDUPE_WINDOW): how many order ids a user
--          remembers.
--
-- Fencing: an event whose offset is <= the one stored for its topic/partition was applied
-- before (a redelivery after a crash or rebalance) and changes nothing. An order_id already
-- counted (a re-sent order, e.g. a status update) changes nothing but the fence.
--
-- Order dedupe, bounded: a user remembers the W highest order ids it counted (fields o:<id>)
-- and "of", the highest id it forgot (the floor). An order is counted when its id is neither
-- remembered nor at or below the floor; counting one more than W forgets the lowest. So a user
-- with at most W orders is exact, and so is any order above the user's W-th highest; a re-sent
-- order older than that is taken as counted (not counted again), and so would be a new order
-- arriving with an id that low: order ids grow with time (thelook's, the generated data's), so
-- that is a re-send in practice. The rule depends only on the sequence of orders, never on how
-- they were batched. State written before the window existed (an o:<id> for every order, no
-- floor) is trimmed to the window the next time the user is touched (any call, a read too);
-- trimming changes no feature.
--
-- Hash fields: age gen cty src (profile), n (orders counted), o:<order_id> of (order window and
-- its floor),
-- b:<brand> c:<category> (item counts), tb tc (current most frequent brand and category),
-- fv (features version: how many calls changed the features, i.e. wrote a profile or counted
-- a new order; one increment per such call), seg mv ua cs (last segment queued, its model
-- version, its occurred_at, and how many changes were queued; written by settle.lua),
-- f:<topic>:<partition> (fences).
-- Row changes keep the rows themselves: ro:<order_id> (the user's orders rows, valued with
-- the newest lsn seen; n counts them) and ri:<item_id> (the order_items rows routed to the
-- user, a JSON array [order_id, product_id, brand, category, lsn]). A truncate removes the
-- rows of its table whose lsn is below its own. An item is counted in b:/c: exactly while ro:<its order>
-- exists (else it is held); every row change is idempotent by row identity and content, so
-- a change applied twice (a Connect restart re-sending it at a new offset) changes nothing.
-- Counts can fall, so after a row change the leaders tb/tc are recomputed from b:/c:.
--
-- fv is what a segment was computed from: settle.lua writes a segment only if fv is still
-- the one returned here, so a segment assigned from features that an event changed since
-- (the event landing between a caller's read and its write) is never stored, even when that
-- event left seg, mv and cs as they were. A few bytes per user; one HINCRBY per call.
--
-- Populations: a call that creates a user's hash counts the user as unassigned (field "u" of
-- the counter hash) in the same atomic step; settle.lua moves it between segments.
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

-- The user's remembered order ids, ascending (numbers: ids are at most 2^53 - 1, exact).
-- O(fields of the hash); only read for a user past the window.
local function load_window(key)
  local ids = {}
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.sub(field, 1, 2) == 'o:' then
      ids[#ids + 1] = tonumber(string.sub(field, 3))
    end
  end
  table.sort(ids)
  return ids
end

-- Forget the lowest ids of the ascending `ids` beyond `size`; return the new floor.
local function trim(key, ids, size, floor)
  local excess = #ids - size
  if excess <= 0 then
    return floor
  end
  local gone = {}
  for i = 1, excess do
    gone[i] = string.format('o:%d', ids[i])
  end
  redis.call('HDEL', key, unpack(gone))
  local highest = ids[excess]
  for i = 1, #ids - excess do
    ids[i] = ids[i + excess]
  end
  for i = #ids - excess + 1, #ids do
    ids[i] = nil
  end
  if floor == nil or highest > floor then
    return highest
  end
  return floor
end

-- Insert `id` into the ascending `ids`.
local function insert(ids, id)
  local i = #ids
  while i > 0 and ids[i] > id do
    ids[i + 1] = ids[i]
    i = i - 1
  end
  ids[i + 1] = id
end

-- Count (delta +1) or uncount (-1) one item's brand and category; a count reaching 0 is
-- removed, so b:/c: hold exactly the counted values.
local function count_item(key, brand, category, delta)
  if brand ~= '' then
    if redis.call('HINCRBY', key, 'b:' .. brand, delta) <= 0 then
      redis.call('HDEL', key, 'b:' .. brand)
    end
  end
  if category ~= '' then
    if redis.call('HINCRBY', key, 'c:' .. category, delta) <= 0 then
      redis.call('HDEL', key, 'c:' .. category)
    end
  end
end

-- The user's item rows as {field, {order_id, product_id, brand, category}}. O(hash fields);
-- read only when an order row comes or goes, or a product is refreshed.
local function item_rows(key)
  local rows = {}
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, 3) == 'ri:' then
      rows[#rows + 1] = {flat[i], cjson.decode(flat[i + 1])}
    end
  end
  return rows
end

-- Recompute tb and tc from b:/c: (counts may have fallen); ties to the byte-wise smaller.
local function recompute_leaders(key)
  local best = {['b:'] = {nil, 0}, ['c:'] = {nil, 0}}
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    local prefix = string.sub(flat[i], 1, 2)
    local top = best[prefix]
    if top ~= nil then
      local name, count = string.sub(flat[i], 3), tonumber(flat[i + 1])
      if top[1] == nil or count > top[2] or (count == top[2] and bytes_less(name, top[1])) then
        best[prefix] = {name, count}
      end
    end
  end
  for prefix, field in pairs({['b:'] = 'tb', ['c:'] = 'tc'}) do
    if best[prefix][1] then
      redis.call('HSET', key, field, best[prefix][1])
    else
      redis.call('HDEL', key, field)
    end
  end
end

-- Apply one row change (kind ro, ri or rp) to the user's rows; true when a feature may
-- have changed (a count or n moved).
local function apply_row(key, event)
  local kind = event[1]
  if kind == 'ro' then
    local id, present, lsn = event[4], event[5] == '1', event[6]
    local field = 'ro:' .. id
    local changed
    if present then
      local old = redis.call('HGET', key, field)
      if old and tonumber(old) >= tonumber(lsn) then
        return false
      end
      redis.call('HSET', key, field, lsn)
      changed = not old
    else
      changed = redis.call('HDEL', key, field) == 1
    end
    if not changed then
      return false
    end
    local delta = present and 1 or -1
    redis.call('HINCRBY', key, 'n', delta)
    for _, row in ipairs(item_rows(key)) do
      if row[2][1] == id then
        count_item(key, row[2][3], row[2][4], delta)
      end
    end
    return true
  elseif kind == 'ri' then
    local field = 'ri:' .. event[4]
    local old_text = redis.call('HGET', key, field)
    local new_text = nil
    if event[7] == '1' then
      new_text = cjson.encode({event[5], event[6], event[8], event[9], event[10]})
    end
    if not old_text and not new_text then
      return false
    end
    local old = old_text and cjson.decode(old_text) or nil
    if old and new_text and old[1] == event[5] and old[2] == event[6] and old[3] == event[8]
        and old[4] == event[9] then
      -- The same row again: only a newer log position is kept (what a truncate compares).
      if tonumber(event[10]) > tonumber(old[5] or '0') then
        redis.call('HSET', key, field, new_text)
      end
      return false
    end
    local changed = false
    if old then
      if redis.call('HEXISTS', key, 'ro:' .. old[1]) == 1 then
        count_item(key, old[3], old[4], -1)
        changed = true
      end
    end
    if new_text then
      redis.call('HSET', key, field, new_text)
      if redis.call('HEXISTS', key, 'ro:' .. event[5]) == 1 then
        count_item(key, event[8], event[9], 1)
        changed = true
      end
    else
      redis.call('HDEL', key, field)
    end
    return changed
  else -- rp
    local product, brand, category = event[4], event[5], event[6]
    local changed = false
    for _, row in ipairs(item_rows(key)) do
      local item = row[2]
      if item[2] == product and (item[3] ~= brand or item[4] ~= category) then
        local counted = redis.call('HEXISTS', key, 'ro:' .. item[1]) == 1
        if counted then
          count_item(key, item[3], item[4], -1)
          count_item(key, brand, category, 1)
          changed = true
        end
        redis.call('HSET', key, row[1],
          cjson.encode({item[1], item[2], brand, category, item[5] or '0'}))
      end
    end
    return changed
  end
end

-- A truncate of `table` at `lsn`: the user's rows of it written before then go.
local function truncate_rows(key, table_name, lsn)
  local changed = false
  local flat = redis.call('HGETALL', key)
  local stale_orders = {}
  for i = 1, #flat, 2 do
    local field, value = flat[i], flat[i + 1]
    if table_name == 'orders' and string.sub(field, 1, 3) == 'ro:'
        and tonumber(value) < lsn then
      stale_orders[string.sub(field, 4)] = true
      redis.call('HDEL', key, field)
      redis.call('HINCRBY', key, 'n', -1)
      changed = true
    end
  end
  for _, row in ipairs(item_rows(key)) do
    local item = row[2]
    if stale_orders[item[1]] then
      count_item(key, item[3], item[4], -1)
    elseif table_name == 'order_items' and tonumber(item[5] or '0') < lsn then
      if redis.call('HEXISTS', key, 'ro:' .. item[1]) == 1 then
        count_item(key, item[3], item[4], -1)
        changed = true
      end
      redis.call('HDEL', key, row[1])
    end
  end
  return changed
end

local users = cjson.decode(ARGV[1])
local window = tonumber(ARGV[2])
local reply = {}
local populations = KEYS[2 * #users + 1]
for u, events in ipairs(users) do
  local key, outbox = KEYS[2 * u - 1], KEYS[2 * u]
  -- Populations: is this the user's first state? (A read, with no events, never creates one.)
  local is_new = #events > 0 and redis.call('EXISTS', key) == 0
  local fences = {}     -- fence field -> last applied offset, read once per call
  local moved = {}      -- fence fields whose offset advanced, in first-seen order
  local applied, new_orders = 0, 0
  local profile = nil
  local tops = nil      -- {brand, brand count, category, category count}, read when needed
  local orders = nil    -- {orders counted before this call, floor}, read when needed
  local ids = nil       -- the remembered order ids, ascending, loaded when past the window
  local floor_moved = false
  local rows_changed = false  -- a row change moved a count: leaders recomputed, fv bumped
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
      local id = tonumber(event[4])
      if fresh and orders == nil then
        local o = redis.call('HMGET', key, 'n', 'of')
        orders = {tonumber(o[1] or '0'), o[2] and tonumber(o[2]) or nil}
      end
      if fresh and (orders[2] == nil or id > orders[2])
          and redis.call('HSETNX', key, 'o:' .. event[4], 1) == 1 then
        new_orders = new_orders + 1
        if ids ~= nil then
          insert(ids, id)
        elseif orders[1] + new_orders > window then
          -- Past the window (at most n ids are remembered, so not before): load it once.
          ids = load_window(key)
        end
        if ids ~= nil and #ids > window then
          local floor = trim(key, ids, window, orders[2])
          floor_moved = floor_moved or floor ~= orders[2]
          orders[2] = floor
        end
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
    elseif kind == 'ro' or kind == 'ri' or kind == 'rp' then
      if fresh and apply_row(key, event) then
        rows_changed = true
      end
    elseif kind == 'rt' then
      if fresh and truncate_rows(key, event[4], tonumber(event[5])) then
        rows_changed = true
      end
    elseif kind ~= 'f' then
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
  if floor_moved then
    writes[#writes + 1] = 'of'
    writes[#writes + 1] = string.format('%d', orders[2])
  end
  -- Fences alone never create a user (a leave's fence with no events of a new life after it).
  if #writes > 0 and (profile or new_orders > 0 or redis.call('EXISTS', key) == 1) then
    redis.call('HSET', key, unpack(writes))
  end
  if new_orders > 0 then
    redis.call('HINCRBY', key, 'n', new_orders)
  end
  if rows_changed then
    recompute_leaders(key)
  end
  if profile or new_orders > 0 or rows_changed then
    redis.call('HINCRBY', key, 'fv', 1)
  end
  -- Populations: a new user is unassigned until settle.lua stores its first segment.
  if is_new and redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', populations, 'u', 1)
  end

  local state = redis.call('HMGET', key, 'age', 'gen', 'cty', 'src', 'n', 'tb', 'tc', 'seg', 'mv',
    'cs', 'fv', 'of')
  if ids == nil and not state[12] and tonumber(state[5] or '0') > window then
    -- Written before the window existed (every id kept, no floor): trim it now.
    local loaded = load_window(key)
    local floor = trim(key, loaded, window, nil)
    if floor ~= nil then
      redis.call('HSET', key, 'of', string.format('%d', floor))
    end
  end
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
