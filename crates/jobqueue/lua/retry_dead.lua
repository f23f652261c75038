-- Revive a dead job: it is due now, with a fresh retry budget (via {q}:delayed, so a paused queue
-- holds it too); fetch.lua moves it into {q}:ready at its priority.
-- KEYS[1]: {q}:dead (apalis set)  KEYS[2]: {q}:dead_at (zset)  KEYS[3]: {q}:delayed  KEYS[4]: meta prefix
-- ARGV[1]: id  ARGV[2]: now (ms)
-- Returns 1 revived, 0 unknown id, -1 not dead.
local meta_key = KEYS[4] .. ":" .. ARGV[1]
if redis.call("exists", meta_key) == 0 then
    return 0
end
local was_dead = redis.call("srem", KEYS[1], ARGV[1]) + redis.call("zrem", KEYS[2], ARGV[1])
if was_dead == 0 then
    return -1
end
redis.call("hset", meta_key, "status", "Pending", "attempts", 0, "failures", 0, "next_run_ms", ARGV[2])
redis.call("zadd", KEYS[3], ARGV[2], ARGV[1])
return 1
