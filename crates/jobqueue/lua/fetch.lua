-- Take up to ARGV[2] due jobs for one worker in one call (replaces apalis' promote → active list
-- → fetch_next → acquire_leases chain: four round trips and an O(length) LREM per job).
-- Order: jobs handed back to apalis' active list (orphans, older versions), then due retries,
-- then due jobs by due time. Each taken job is in the worker's in-flight set and marked Running.
-- KEYS[1]: {q}:workers  KEYS[2]: {q}:active  KEYS[3]: in-flight set of this worker  KEYS[4]: {q}:data
-- KEYS[5]: meta prefix  KEYS[6]: {q}:retrying  KEYS[7]: {q}:delayed  KEYS[8]: {q}:paused  KEYS[9]: {q}:wake
-- KEYS[10]: {q}:events (a `started` event per job taken)
-- ARGV[1]: now (ms)  ARGV[2]: most jobs to take  ARGV[3]: worker name  ARGV[4]: now (s)
-- ARGV[5]: events kept (the stream's approximate MAXLEN; "0": no events)
-- Returns {next_due_ms (-1: none; only when fewer than ARGV[2] were taken), then per job:
--          id, job json, next_run_ms, failures, max_retry, timeout_ms}
local now = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
if not redis.call("zscore", KEYS[1], ARGV[3]) then
    -- reaped (stale heartbeat): its jobs were handed to others; the supervisor re-registers it
    return redis.error_reply("worker not registered")
end
if redis.call("exists", KEYS[8]) == 1 then
    return {-1}
end

local ids = {}
local handed_back = redis.call("lpop", KEYS[2], want)
if handed_back then
    for _, id in ipairs(handed_back) do
        table.insert(ids, id)
    end
end
for _, source in ipairs({KEYS[6], KEYS[7]}) do
    if #ids < want then
        local due = redis.call("zrangebyscore", source, "-inf", now, "LIMIT", 0, want - #ids)
        if #due > 0 then
            redis.call("zrem", source, unpack(due))
            for _, id in ipairs(due) do
                table.insert(ids, id)
            end
        end
    end
end

local next_due = -1
if #ids < want then
    for _, source in ipairs({KEYS[6], KEYS[7]}) do
        local head = redis.call("zrange", source, 0, 0, "WITHSCORES")
        if head[2] and (next_due < 0 or tonumber(head[2]) < next_due) then
            next_due = tonumber(head[2])
        end
    end
elseif redis.call("llen", KEYS[9]) == 0 then
    -- more may be due: wake another waiting worker
    redis.call("rpush", KEYS[9], 1)
end

local out = {next_due}
if #ids == 0 then
    return out
end
local data = redis.call("hmget", KEYS[4], unpack(ids))
for i, id in ipairs(ids) do
    -- a job deleted after it was queued has no data: drop it
    if data[i] then
        redis.call("sadd", KEYS[3], id)
        local meta_key = KEYS[5] .. ":" .. id
        redis.call("hset", meta_key, "status", "Running", "locked_at", ARGV[4], "locked_by", ARGV[3])
        local m = redis.call("hmget", meta_key, "next_run_ms", "failures", "max_retry", "timeout_ms")
        table.insert(out, id)
        table.insert(out, data[i])
        table.insert(out, m[1] or "0")
        table.insert(out, m[2] or "0")
        table.insert(out, m[3] or "0")
        table.insert(out, m[4] or "0")
        if ARGV[5] ~= "0" then
            redis.call("xadd", KEYS[10], "MAXLEN", "~", ARGV[5], "*", "job_id", id, "state", "started",
                "type", redis.call("hget", meta_key, "job_type") or "",
                "attempt", (tonumber(m[2]) or 0) + 1, "time", ARGV[1])
        end
    end
end
return out
