-- Pause a queue: set the flag (fetch.lua then takes nothing) and hand the jobs already
-- waiting in apalis' {q}:active list back to {q}:delayed at their due time, so only what a worker
-- has already fetched can still start. {q}:ready keeps its jobs (fetch.lua takes none while paused).
-- KEYS[1]: {q}:paused  KEYS[2]: {q}:active  KEYS[3]: {q}:delayed  KEYS[4]: meta prefix
-- ARGV[1]: now (ms).  Returns how many jobs were handed back.
redis.call("set", KEYS[1], ARGV[1])
local moved = 0
local id = redis.call("lpop", KEYS[2])
while id do
    local due = tonumber(redis.call("hget", KEYS[4] .. ":" .. id, "next_run_ms")) or tonumber(ARGV[1])
    redis.call("zadd", KEYS[3], due, id)
    moved = moved + 1
    id = redis.call("lpop", KEYS[2])
end
return moved
