-- Add one worker's batch of centroid moves to the shared drifted centroids of a model version,
-- atomically: every worker's deltas are summed (none is lost to a concurrent write), each centre
-- is held within the maximum distance of its trained position, and the state's version grows by
-- one. Returns the state after the update, so the caller assigns its next batch with it.
--
-- KEYS[1]  the state's hash, "<app>:drift:<model version>" (one per model version: a new model
--          starts from its own trained centres).
-- ARGV[1]  the trained centres, 2k numbers separated by spaces (x0 y0 x1 y1 ...). Stored on the
--          first update; a later call must send the same text (same model), or it is refused.
-- ARGV[2]  the deltas, 2k numbers in the same order.
-- ARGV[3]  the maximum distance of a centre from its trained position (PCA units).
-- ARGV[4]  how many points the deltas were learned from.
-- ARGV[5]  the writer's id (one per worker process) and ARGV[6] its update sequence number
--          (1, 2, ...): an update whose number is not above the writer's last applied one is a
--          retry of an update already applied and changes nothing.
-- ARGV[7]  how long, in seconds, a writer that has not updated is remembered: each new epoch
--          removes the fields of writers silent for longer (a writer is one process start, so
--          without this the hash would grow by one writer per restart, for ever). It must
--          exceed the longest a retry can come after its update was applied.
-- ARGV[8]  the shortest time between two epochs, in seconds, and ARGV[9] how many epochs to
--          keep. An epoch is a numbered, immutable snapshot of the centres: workers assign
--          with the newest one, and change events name it (drift_epoch), so an assignment can
--          be reproduced later from the snapshot. An update that comes ARGV[8] or more after
--          the newest epoch was published (or finds none) publishes the centres it leaves as
--          the next epoch; epoch 0 is the trained centres and is never stored. Publishing
--          removes every epoch but the newest ARGV[9], and the expired writers: so that work,
--          which scans the hash, runs at most once per epoch, not once per update.
--
-- Runs after drift_common.lua (writer_fields, sweep), which segstream.stream.drift.shared puts
-- before it.
--
-- Numbers travel as text: "%.17g" and tonumber() round-trip a double exactly, where the Lua
-- JSON encoder keeps only 14 digits.
--
-- Hash fields: v (version: updates applied), c (current centres), t (trained centres), n (points
-- learned, all writers, forgotten ones included), ua (server time of the last update, unix
-- seconds), w:<writer> ("<last sequence> <points contributed> <unix seconds of its last
-- update>"), e (the newest epoch's number, from 1), ea (server time it was published, unix
-- seconds with microseconds), e:<n> (epoch n's centres). The per-writer fields of the script
-- before (s:<writer>, p:<writer>, with no time) are removed by the first new epoch after the
-- upgrade.
--
-- Returns {v, c, n, e, the centres of epoch e}; false (nil) where absent.

local key = KEYS[1]
local trained_text, delta_text = ARGV[1], ARGV[2]
local max_distance = tonumber(ARGV[3])
local learned = tonumber(ARGV[4])
local writer, sequence = ARGV[5], tonumber(ARGV[6])
local expiry = tonumber(ARGV[7])
local epoch_interval, epochs_kept = tonumber(ARGV[8]), tonumber(ARGV[9])

local state = redis.call('HMGET', key, 'v', 'c', 't', 'n', 'w:' .. writer, 'e', 'ea')
local version = tonumber(state[1] or '0')
local epoch = tonumber(state[6] or '0')
local last_sequence, contributed = 0, 0
if state[5] then
  local a, b = writer_fields(state[5])
  last_sequence, contributed = a or 0, b or 0
end
if last_sequence >= sequence then
  local published = epoch > 0 and redis.call('HGET', key, 'e:' .. epoch) or false
  return {version, state[2] or false, state[4] or false, epoch, published}
end
if state[3] and state[3] ~= trained_text then
  return redis.error_reply('drift state ' .. key .. ' was started from other trained centres')
end

local function numbers(text)
  local values = {}
  for word in string.gmatch(text, '%S+') do
    values[#values + 1] = tonumber(word)
  end
  return values
end

local trained = numbers(trained_text)
local centers = state[2] and numbers(state[2]) or numbers(trained_text)
local deltas = numbers(delta_text)
if #deltas ~= #trained or #centers ~= #trained or #trained % 2 ~= 0 then
  return redis.error_reply('drift update of ' .. #deltas .. ' numbers for ' .. #trained .. ' coordinates')
end

local out = {}
for i = 1, #trained, 2 do
  local x, y = centers[i] + deltas[i], centers[i + 1] + deltas[i + 1]
  local dx, dy = x - trained[i], y - trained[i + 1]
  local distance = math.sqrt(dx * dx + dy * dy)
  if distance > max_distance then
    -- Pulled back onto the circle of radius max_distance, in the direction it drifted.
    local scale = max_distance / distance
    x, y = trained[i] + dx * scale, trained[i + 1] + dy * scale
  end
  out[i] = string.format('%.17g', x)
  out[i + 1] = string.format('%.17g', y)
end

local text = table.concat(out, ' ')
local total = tonumber(state[4] or '0') + learned
local clock = redis.call('TIME')
local now = tonumber(clock[1])
local now_precise = now + tonumber(clock[2]) / 1000000

redis.call('HSET', key, 'v', version + 1, 'c', text, 't', trained_text,
  'n', string.format('%d', total), 'ua', string.format('%d', now),
  'w:' .. writer, string.format('%d %d %d', sequence, contributed + learned, now))

if epoch == 0 or state[7] == false or now_precise - tonumber(state[7]) >= epoch_interval then
  epoch = epoch + 1
  redis.call('HSET', key, 'e', epoch, 'ea', string.format('%.6f', now_precise),
    'e:' .. epoch, text)
  sweep(key, epoch - epochs_kept, writer, expiry, now)
end

return {version + 1, text, string.format('%d', total), epoch,
  redis.call('HGET', key, 'e:' .. epoch)}
