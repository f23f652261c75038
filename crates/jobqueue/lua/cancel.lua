-- Cancel one job. One that waits (scheduled, pending, retrying) leaves every queue key and is
-- recorded cancelled at once. One a worker holds is marked `cancel_requested` and its id pushed
-- to that worker's cancel list, which the worker BLPOPs: it drops the run and records the job
-- cancelled through finish.lua; should the worker die first, requeue_worker.lua honours the mark.
-- KEYS[1]: meta prefix  KEYS[2]: {q}:delayed  KEYS[3]: {q}:retrying  KEYS[4]: {q}:scheduled (apalis)
-- KEYS[5]: {q}:active  KEYS[6]: {q}:cancelled  KEYS[7]: {q}:finished  KEYS[8]: {q}:dead_at
-- KEYS[9]: {q}:dead (apalis)  KEYS[10]: cancel list prefix ({q}:cancel:<worker>)
-- KEYS[11]: {q}:events (a waiting job's cancel is added as an event)  KEYS[12]: {q}:ready
-- KEYS[13]: per-key prefix ({q}:key; a job parked behind its limit key waits in `<key>:parked`)
-- ARGV[1]: id  ARGV[2]: now (ms)  ARGV[3]: now (s)  ARGV[4]: events kept (approximate MAXLEN;
-- "0": no events)
-- Returns 1 cancelled, 2 running (cancel sent to its worker), 0 unknown, -1 already finished.
local id = ARGV[1]
local meta_key = KEYS[1] .. ":" .. id
local status = redis.call("hget", meta_key, "status")
if not status then
    -- a done job keeps no status (finish.lua): its {q}:finished entry says it ended
    if redis.call("zscore", KEYS[7], id) then
        return -1
    end
    return 0
end
if status == "Done" or status == "Killed" or status == "Cancelled"
    or redis.call("zscore", KEYS[6], id) or redis.call("zscore", KEYS[7], id)
    or redis.call("zscore", KEYS[8], id) or redis.call("sismember", KEYS[9], id) == 1 then
    return -1
end
if status == "Running" then
    local worker = redis.call("hget", meta_key, "locked_by")
    redis.call("hset", meta_key, "cancel_requested", ARGV[2])
    if worker then
        redis.call("rpush", KEYS[10] .. ":" .. worker, id)
    end
    return 2
end
redis.call("zrem", KEYS[2], id)
redis.call("zrem", KEYS[3], id)
redis.call("zrem", KEYS[4], id)
redis.call("zrem", KEYS[12], id)
local limit_key = redis.call("hget", meta_key, "limit_key")
if limit_key then
    redis.call("zrem", KEYS[13] .. ":" .. limit_key .. ":parked", id)
end
redis.call("lrem", KEYS[5], 0, id)
redis.call("zadd", KEYS[6], ARGV[2], id)
redis.call("hset", meta_key, "status", "Cancelled", "done_at", ARGV[3])
redis.call("hdel", meta_key, "locked_at", "locked_by")
if ARGV[4] ~= "0" then
    local m = redis.call("hmget", meta_key, "job_type", "failures")
    redis.call("xadd", KEYS[11], "MAXLEN", "~", ARGV[4], "*", "job_id", id, "state", "cancelled",
        "type", m[1] or "", "attempt", tonumber(m[2]) or 0, "time", ARGV[2])
end
return 1
