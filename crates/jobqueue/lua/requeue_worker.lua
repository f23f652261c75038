-- Give the in-flight jobs of workers back to the active list and forget those workers.
-- Used (a) for our own name before every (re)start of the apalis worker: apalis refuses to
-- register a name seen within `orphaned_duration` and only re-queues its own orphans after a
-- heartbeat interval; (b) as a reaper for workers whose heartbeat is older than ARGV[1]
-- (apalis waits heartbeat_interval x missed_heartbeats = 300 s by default).
-- KEYS[1]: {q}:workers (zset, last heartbeat in s)  KEYS[2]: {q}:active  KEYS[3]: {q}:wake (a marker wakes a waiting worker)
-- KEYS[4]: {q}:inflight prefix  KEYS[5]: meta prefix  KEYS[6]: worker metadata prefix ({q}:workers:metadata)
-- KEYS[7]: {q}:data (a job deleted while it ran is dropped, not re-queued: apalis' fetch_next
--          fails on an id without data and would stop every worker that fetches it)
-- KEYS[8]: {q}:cancelled  KEYS[9]: cancel list prefix ({q}:cancel:<worker>)
-- ARGV[1]: heartbeat score at or below which a worker is dead  ARGV[2]: (optional) only this worker
-- ARGV[3]: now (ms)
-- A job whose cancel was asked for while the worker held it (meta `cancel_requested`) ends
-- cancelled instead of running again.
-- Returns the number of jobs re-queued.
local workers
if ARGV[2] and #ARGV[2] > 0 then
    workers = {ARGV[2]}
else
    workers = redis.call("zrangebyscore", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, 100)
end
local requeued = 0
for _, worker in ipairs(workers) do
    local inflight = KEYS[4] .. ":" .. worker
    -- one id at a time: a dead worker may hold many, and unpack() is limited
    local id = redis.call("spop", inflight)
    while id do
        local meta_key = KEYS[5] .. ":" .. id
        if redis.call("hexists", meta_key, "cancel_requested") == 1 then
            redis.call("zadd", KEYS[8], ARGV[3], id)
            redis.call("hset", meta_key, "status", "Cancelled", "done_at", math.floor(tonumber(ARGV[3]) / 1000))
            redis.call("hdel", meta_key, "locked_at", "locked_by")
        elseif redis.call("hexists", KEYS[7], id) == 1 then
            redis.call("rpush", KEYS[2], id)
            redis.call("hset", meta_key, "status", "Pending")
            redis.call("hdel", meta_key, "locked_at", "locked_by")
            requeued = requeued + 1
        end
        id = redis.call("spop", inflight)
    end
    redis.call("zrem", KEYS[1], worker)
    redis.call("del", KEYS[6] .. ":" .. worker)
    redis.call("del", KEYS[9] .. ":" .. worker)
end
if requeued > 0 then
    redis.call("del", KEYS[3])
    redis.call("lpush", KEYS[3], 1)
end
return requeued
