-- One scheduling step, at most ARGV[2] jobs per part, so no Lua unpack ever sees more than that
-- (apalis' fetch_next unpacks every due job at once and dies at ~8,000).
-- 1. Retries that apalis parked in {q}:scheduled (score = whole seconds + attempt) move to our
--    {q}:retrying at the millisecond time the runner chose (meta next_run_ms); `attempts` is reset
--    so apalis' hard-coded limit of 25 never applies (we count failures ourselves).
-- 2. Unless the queue is paused, due jobs move from {q}:delayed and {q}:retrying to apalis'
--    {q}:active list and the signal is raised.
-- KEYS[1]: {q}:delayed  KEYS[2]: {q}:active  KEYS[3]: {q}:signal  KEYS[4]: {q}:scheduled  KEYS[5]: meta prefix
-- KEYS[6]: {q}:retrying  KEYS[7]: {q}:paused
-- ARGV[1]: now (ms)  ARGV[2]: limit  ARGV[3]: most jobs {q}:active may hold
-- The active list is kept short because apalis' acquire_leases.lua removes each fetched job with
-- LREM, which is O(length): with 20,000 jobs waiting there every job cost ~0.4 ms of Redis time.
-- Returns {due_moved, retries_parked, paused (0|1)}
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])

local retries = redis.call("zrange", KEYS[4], 0, limit - 1)
for _, id in ipairs(retries) do
    local meta_key = KEYS[5] .. ":" .. id
    local next_run = tonumber(redis.call("hget", meta_key, "next_run_ms")) or now
    redis.call("zadd", KEYS[6], next_run, id)
    redis.call("zrem", KEYS[4], id)
    redis.call("hset", meta_key, "attempts", 0)
end

if redis.call("exists", KEYS[7]) == 1 then
    return {0, #retries, 1}
end

local moved = 0
local room = math.min(limit, tonumber(ARGV[3]) - redis.call("llen", KEYS[2]))
for _, source in ipairs({KEYS[6], KEYS[1]}) do
    if room > 0 then
        local due = redis.call("zrangebyscore", source, "-inf", now, "LIMIT", 0, room)
        if #due > 0 then
            redis.call("rpush", KEYS[2], unpack(due))
            redis.call("zrem", source, unpack(due))
            for _, id in ipairs(due) do
                redis.call("hset", KEYS[5] .. ":" .. id, "status", "Pending")
            end
            moved = moved + #due
            room = room - #due
        end
    end
end
if moved > 0 then
    redis.call("del", KEYS[3])
    redis.call("lpush", KEYS[3], 1)
end
return {moved, #retries, 0}
