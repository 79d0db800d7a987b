-- Forget a model version's drift without forgetting its epochs: the centres go back to the
-- trained ones, published at once as the next epoch (so a worker assigns with the trained
-- centres within its staleness bound), and the points learned and the writers are cleared.
-- The older epochs stay, numbered as they were: an assignment made with one of them can still
-- be reproduced, and no later epoch ever reuses its number.
--
-- KEYS[1]  the state's hash (see drift_update.lua for its fields).
-- ARGV[1]  how many epochs to keep (older ones are removed, as drift_update.lua does).
--
-- Runs after drift_common.lua (sweep), which segstream.stream.drift.shared puts before it.
--
-- Returns 1 when there was a drift state, 0 when there was none (nothing is written then).

local key = KEYS[1]
local kept = tonumber(ARGV[1])
local state = redis.call('HMGET', key, 'v', 't', 'e')
if state[2] == false then
  return 0
end
local epoch = tonumber(state[3] or '0') + 1
local clock = redis.call('TIME')
sweep(key, epoch - kept, '', -1, tonumber(clock[1]))
redis.call('HSET', key, 'v', tonumber(state[1] or '0') + 1, 'c', state[2], 'n', '0',
  'e', epoch, 'ea', string.format('%.6f', tonumber(clock[1]) + tonumber(clock[2]) / 1000000),
  'e:' .. epoch, state[2])
return 1
