-- Enqueue jobs in apalis-redis' own data/meta layout, but into OUR due-time set with a
-- millisecond score (apalis' batch_push only knows whole seconds: jobs fired up to ~1 s early),
-- deciding unique keys atomically.
-- KEYS[1]: {q}:data (hash id -> job json)  KEYS[2]: {q}:meta prefix  KEYS[3]: {q}:delayed (zset, due ms)
-- KEYS[4]: {q}:unique prefix (string per key: the job id holding it)  KEYS[5]: {q}:dead (apalis set)
-- KEYS[6]: {q}:dead_at (zset)  KEYS[7]: {q}:wake (list: a marker wakes a waiting worker)
-- KEYS[8]: {q}:ready (zset: due jobs by priority band, then due ms; see fetch.lua)
-- KEYS[9]: {q}:events (stream: a `registered` event per stored job)
-- ARGV[1]: events kept (the stream's approximate MAXLEN; "0": no events)
-- ARGV[2..]: repeating groups of 11: id, job_json, due_ms, max_retry, created_ms, timeout_ms,
--       job_type, unique_key ("" none), unique_for_ms (0: until the job is done or dead),
--       priority (1..=10; stored only when not the default 5), limit_key ("" none)
-- A job due by created_ms goes straight into {q}:ready; a later one waits in {q}:delayed until
-- fetch.lua moves it (so a delayed high-priority job never starts before it is due).
-- Returns one string per job: "" stored, else the id of the job already holding its unique key.
local out = {}
-- Waiting workers sleep until the earliest due time they saw: wake them when a job is due sooner.
local head = redis.call("zrange", KEYS[3], 0, 0, "WITHSCORES")[2]
local earliest = nil
local ready = false
-- 2^42 ms per priority band, as in fetch.lua
local BAND = 4398046511104

-- A key without expiry is held while its job exists and is neither done, dead nor cancelled.
local function still_held(lock)
    local holder = redis.call("get", lock)
    if not holder then
        return nil
    end
    if redis.call("pttl", lock) > 0 then
        return holder
    end
    local status = redis.call("hget", KEYS[2] .. ":" .. holder, "status")
    if not status or status == "Done" or status == "Killed" or status == "Cancelled"
        or redis.call("sismember", KEYS[5], holder) == 1
        or redis.call("zscore", KEYS[6], holder) then
        return nil
    end
    return holder
end

for i = 2, #ARGV, 11 do
    local id = ARGV[i]
    local unique_key = ARGV[i + 7]
    local holder = nil
    if #unique_key > 0 then
        local lock = KEYS[4] .. ":" .. unique_key
        holder = still_held(lock)
        if not holder then
            local ttl = tonumber(ARGV[i + 8])
            if ttl > 0 then
                redis.call("set", lock, id, "PX", ttl)
            else
                redis.call("set", lock, id)
            end
        end
    end
    if holder then
        table.insert(out, holder)
    else
        if redis.call("hsetnx", KEYS[1], id, ARGV[i + 1]) == 1 then
            -- Only what is read back (a field costs ~20 B per job); absent means 0 / none.
            local meta = { "status", "Pending", "run_at_ms", ARGV[i + 2], "next_run_ms", ARGV[i + 2],
                "max_retry", ARGV[i + 3], "created_ms", ARGV[i + 4], "job_type", ARGV[i + 6] }
            if ARGV[i + 5] ~= "0" then
                table.insert(meta, "timeout_ms")
                table.insert(meta, ARGV[i + 5])
            end
            if #unique_key > 0 then
                table.insert(meta, "unique_key")
                table.insert(meta, unique_key)
            end
            if #ARGV[i + 10] > 0 then
                table.insert(meta, "limit_key")
                table.insert(meta, ARGV[i + 10])
            end
            local priority = tonumber(ARGV[i + 9])
            if priority ~= 5 then
                table.insert(meta, "priority")
                table.insert(meta, priority)
            end
            -- one write of the meta hash, whatever options the job has
            redis.call("hset", KEYS[2] .. ":" .. id, unpack(meta))
            if ARGV[1] ~= "0" then
                redis.call("xadd", KEYS[9], "MAXLEN", "~", ARGV[1], "*", "job_id", id,
                    "state", "registered", "type", ARGV[i + 6], "attempt", 0, "time", ARGV[i + 4])
            end
            local due = tonumber(ARGV[i + 2])
            if due <= tonumber(ARGV[i + 4]) then
                redis.call("zadd", KEYS[8], (10 - priority) * BAND + due, id)
                ready = true
            else
                redis.call("zadd", KEYS[3], due, id)
                if not earliest or due < earliest then
                    earliest = due
                end
            end
        end
        table.insert(out, "")
    end
end
if (ready or (earliest and (not head or earliest < tonumber(head)))) and redis.call("llen", KEYS[7]) == 0 then
    redis.call("rpush", KEYS[7], 1)
end
return out
