-- The part of drift_update.lua and drift_reset.lua they share: segstream.stream.drift.shared
-- sends this text before each of them, as one script (EVAL scripts cannot share functions).

-- A writer field's value "<sequence> <points> <unix seconds>" -> the three numbers.
local function writer_fields(text)
  local a, b, c = string.match(text, '^(%d+) (%d+) (%d+)$')
  return tonumber(a), tonumber(b), tonumber(c)
end

-- Remove from the drift hash `key` the epochs numbered `oldest_gone` or less, the writers
-- other than `writer` silent for more than `expiry` seconds at `now` (unix seconds; an expiry
-- below 0 removes them all), and the per-writer fields of the script before drift epochs.
local function sweep(key, oldest_gone, writer, expiry, now)
  local gone = {}
  for _, field in ipairs(redis.call('HKEYS', key)) do
    local kind = string.sub(field, 1, 2)
    if kind == 's:' or kind == 'p:' then
      gone[#gone + 1] = field
    elseif kind == 'e:' then
      local number = tonumber(string.sub(field, 3))
      if number == nil or number <= oldest_gone then
        gone[#gone + 1] = field
      end
    elseif kind == 'w:' and field ~= 'w:' .. writer then
      local _, _, seen = writer_fields(redis.call('HGET', key, field))
      if expiry < 0 or seen == nil or now - seen > expiry then
        gone[#gone + 1] = field
      end
    end
  end
  -- In slices: unpack() of thousands of values (a lowered epochs_kept) overflows Lua's stack.
  for first = 1, #gone, 1000 do
    redis.call('HDEL', key, unpack(gone, first, math.min(first + 999, #gone)))
  end
end

