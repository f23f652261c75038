-- Revive a dead job: it runs again as soon as a worker is free, with a fresh retry budget.
-- KEYS[1]: {q}:dead  KEYS[2]: {q}:active  KEYS[3]: {q}:signal  KEYS[4]: meta prefix
-- ARGV[1]: id  ARGV[2]: now (ms)
-- Returns 1 revived, 0 unknown id, -1 not dead.
local meta_key = KEYS[4] .. ":" .. ARGV[1]
if redis.call("exists", meta_key) == 0 then
    return 0
end
if redis.call("srem", KEYS[1], ARGV[1]) == 0 then
    return -1
end
redis.call("hset", meta_key, "status", "Pending", "attempts", 0, "failures", 0, "next_run_ms", ARGV[2])
redis.call("rpush", KEYS[2], ARGV[1])
redis.call("del", KEYS[3])
redis.call("lpush", KEYS[3], 1)
return 1
