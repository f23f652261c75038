-- Enqueue delayed jobs in apalis-redis' own data/meta layout, but into OUR due-time set with a
-- millisecond score (apalis' batch_push only knows whole seconds: jobs fired up to ~1 s early).
-- KEYS[1]: {q}:data (hash id -> job json)   KEYS[2]: {q}:meta prefix   KEYS[3]: {q}:delayed (zset, due ms)
-- ARGV: repeating groups of: id, job_json, due_ms, max_retry, created_ms
-- Returns the number of jobs stored (an id that already exists is skipped).
local stored = 0
for i = 1, #ARGV, 5 do
    local id = ARGV[i]
    if redis.call("hsetnx", KEYS[1], id, ARGV[i + 1]) == 1 then
        local max_retry = tonumber(ARGV[i + 3])
        redis.call("hset", KEYS[2] .. ":" .. id,
            "attempts", 0, "max_attempts", max_retry + 1, "status", "Pending", "idempotency_key", "",
            "run_at_ms", ARGV[i + 2], "next_run_ms", ARGV[i + 2], "max_retry", max_retry,
            "failures", 0, "created_ms", ARGV[i + 4])
        redis.call("zadd", KEYS[3], ARGV[i + 2], id)
        stored = stored + 1
    end
end
return stored
