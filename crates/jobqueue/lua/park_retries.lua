-- Retries parked by apalis itself in {q}:scheduled (whole seconds; only jobs that failed under a
-- version that acked through apalis) move to our {q}:retrying at the millisecond time the runner
-- chose (meta next_run_ms), where fetch.lua takes them. Also says whether the queue is paused.
-- KEYS[1]: {q}:scheduled  KEYS[2]: meta prefix  KEYS[3]: {q}:retrying  KEYS[4]: {q}:paused
-- ARGV[1]: now (ms)  ARGV[2]: limit
-- Returns {retries_parked, paused (0|1)}
local now = tonumber(ARGV[1])
local retries = redis.call("zrange", KEYS[1], 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(retries) do
    local meta_key = KEYS[2] .. ":" .. id
    local next_run = tonumber(redis.call("hget", meta_key, "next_run_ms")) or now
    redis.call("zadd", KEYS[3], next_run, id)
    redis.call("zrem", KEYS[1], id)
    redis.call("hset", meta_key, "attempts", 0)
end
return {#retries, redis.call("exists", KEYS[4])}
