-- Take up to ARGV[2] due jobs for one worker in one call (replaces apalis' promote → active list
-- → fetch_next → acquire_leases chain: four round trips and an O(length) LREM per job).
-- Due jobs of {q}:delayed and {q}:retrying first move into {q}:ready, scored by priority band
-- then due time (a delayed job never jumps ahead before it is due). Order taken: jobs handed back
-- to apalis' active list (orphans, older versions; with per-key limits they join {q}:ready first
-- within their band, so the key check applies to them too), then {q}:ready (higher priority
-- first, FIFO within a priority). Each taken job is in the worker's in-flight set, marked Running. The queue's
-- limits ({q}:limits: `concurrency`, `rate_max` per `rate_per_ms`) are decided here, for all
-- workers at once: at most `concurrency` jobs in the in-flight sets of the registered workers
-- (whatever path re-queues a dead worker's jobs — ours or apalis-redis' own
-- reenqueue_orphaned.lua — empties its set, so no slot can leak), at most
-- `rate_max` starts in {q}:started (a sliding log scored by Redis' own TIME, so worker clocks
-- do not matter) over the last `rate_per_ms`.
-- KEYS[1]: {q}:workers  KEYS[2]: {q}:active  KEYS[3]: in-flight set of this worker  KEYS[4]: {q}:data
-- KEYS[5]: meta prefix  KEYS[6]: {q}:retrying  KEYS[7]: {q}:delayed  KEYS[8]: {q}:paused  KEYS[9]: {q}:wake
-- KEYS[10]: {q}:ready  KEYS[11]: {q}:limits  KEYS[12]: in-flight set prefix ({q}:inflight)
-- KEYS[13]: {q}:started  KEYS[14]: per-key prefix ({q}:key; `<prefix>:<limit key>:running` set,
-- `:started` zset, `:parked` zset)  KEYS[15]: {q}:parked_keys (limit key -> when to look again,
-- Redis ms; 0: a slot freed)  KEYS[16]: {q}:events (a `started` event per job taken)
-- Per limit key (meta `limit_key`; {q}:limits `key_concurrency`, `key_rate_max` per
-- `key_rate_per_ms`): a ready job whose key is at its limit is parked in `<key>:parked` with its
-- score, so the jobs behind it (other keys) are reached; the key's jobs go back to {q}:ready when
-- its time in {q}:parked_keys comes (rate window) or a job of it ends (finish.lua sets 0).
-- ARGV[1]: now (ms)  ARGV[2]: most jobs to take  ARGV[3]: worker name  ARGV[4]: now (s)
-- ARGV[5]: events kept (the stream's approximate MAXLEN; "0": no events)
-- Returns {next_due_ms (-1: none; only when fewer than ARGV[2] were taken), limited (1: a limit
--          held due jobs back), then per job: id, job json, next_run_ms, failures, max_retry,
--          timeout_ms}
local now = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
-- 2^42 ms (~139 years) per priority band: scores stay below 2^46, exact in a double.
local BAND = 4398046511104
local PROMOTE = 1000
if not redis.call("zscore", KEYS[1], ARGV[3]) then
    -- reaped (stale heartbeat): its jobs were handed to others; the supervisor re-registers it
    return redis.error_reply("worker not registered")
end
if redis.call("exists", KEYS[8]) == 1 then
    return {-1, 0}
end

-- Due jobs into the ready set at their priority (absent: 5, as jobs stored by older versions).
for _, source in ipairs({KEYS[6], KEYS[7]}) do
    local due = redis.call("zrangebyscore", source, "-inf", now, "WITHSCORES", "LIMIT", 0, PROMOTE)
    if #due > 0 then
        local moved = {}
        for i = 1, #due, 2 do
            local id = due[i]
            local priority = tonumber(redis.call("hget", KEYS[5] .. ":" .. id, "priority")) or 5
            redis.call("zadd", KEYS[10], (10 - priority) * BAND + tonumber(due[i + 1]), id)
            table.insert(moved, id)
        end
        redis.call("zrem", source, unpack(moved))
    end
end

-- How many may start now.
local allow = want
local started_ms = nil
local limits = redis.call("hmget", KEYS[11], "concurrency", "rate_max", "rate_per_ms",
    "key_concurrency", "key_rate_max", "key_rate_per_ms")
local concurrency, rate_max, rate_per = tonumber(limits[1]), tonumber(limits[2]), tonumber(limits[3])
local key_concurrency, key_rate_max, key_rate_per = tonumber(limits[4]), tonumber(limits[5]), tonumber(limits[6])
local keyed = key_concurrency or (key_rate_max and key_rate_per)
if concurrency or rate_max or keyed then
    local t = redis.call("time")
    started_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local workers = nil
local function registered()
    if not workers then
        workers = redis.call("zrange", KEYS[1], 0, -1)
    end
    return workers
end
if concurrency then
    local running = 0
    for _, worker in ipairs(registered()) do
        running = running + redis.call("scard", KEYS[12] .. ":" .. worker)
    end
    allow = math.min(allow, math.max(concurrency - running, 0))
end
local rate_full = false
if rate_max and rate_per then
    redis.call("zremrangebyscore", KEYS[13], "-inf", started_ms - rate_per)
    local left = rate_max - redis.call("zcard", KEYS[13])
    if left < allow then
        allow = math.max(left, 0)
        rate_full = true
    end
end

-- Per-key limits: when key `k` may start its next job (nil: now; Redis ms; "+inf": when a job
-- of it ends).
local taken_now = {}
local function key_wait(k)
    local base = KEYS[14] .. ":" .. k
    if key_concurrency then
        local running = base .. ":running"
        if redis.call("scard", running) >= key_concurrency then
            -- forget ids no registered worker holds any more (re-queued by whatever path)
            for _, id in ipairs(redis.call("smembers", running)) do
                -- taken by this call: not in the worker's in-flight set yet
                local held = taken_now[id] or false
                for _, worker in ipairs(registered()) do
                    if redis.call("sismember", KEYS[12] .. ":" .. worker, id) == 1 then
                        held = true
                        break
                    end
                end
                if not held then
                    redis.call("srem", running, id)
                end
            end
            if redis.call("scard", running) >= key_concurrency then
                return "+inf"
            end
        end
    end
    if key_rate_max and key_rate_per then
        local window = base .. ":started"
        redis.call("zremrangebyscore", window, "-inf", started_ms - key_rate_per)
        if redis.call("zcard", window) >= key_rate_max then
            return tonumber(redis.call("zrange", window, 0, 0, "WITHSCORES")[2]) + key_rate_per
        end
    end
    return nil
end

local parked_now = 0
if keyed then
    -- keys whose time came: their parked jobs back into ready, at their scores
    for _, k in ipairs(redis.call("zrangebyscore", KEYS[15], "-inf", started_ms, "LIMIT", 0, 100)) do
        local parked = KEYS[14] .. ":" .. k .. ":parked"
        local jobs = redis.call("zrange", parked, 0, PROMOTE - 1, "WITHSCORES")
        for i = 1, #jobs, 2 do
            redis.call("zadd", KEYS[10], jobs[i + 1], jobs[i])
        end
        if #jobs > 0 then
            redis.call("zremrangebyrank", parked, 0, #jobs / 2 - 1)
        end
        if redis.call("exists", parked) == 0 then
            redis.call("zrem", KEYS[15], k)
        end
    end
end

-- Jobs handed back to apalis' active list (orphans re-queued by requeue_worker.lua or by
-- apalis-redis' reenqueue_orphaned.lua; older versions) get the same per-key decision as any
-- ready job: into ready, first within their priority band (due 0), even when nothing may start
-- now. Without key limits they are taken straight from the list below.
if keyed then
    local back = redis.call("lpop", KEYS[2], PROMOTE)
    if back then
        for _, id in ipairs(back) do
            local priority = tonumber(redis.call("hget", KEYS[5] .. ":" .. id, "priority")) or 5
            redis.call("zadd", KEYS[10], (10 - priority) * BAND, id)
        end
    end
end

local ids = {}
if allow > 0 then
    local handed_back = redis.call("lpop", KEYS[2], allow)
    if handed_back then
        for _, id in ipairs(handed_back) do
            table.insert(ids, id)
        end
    end
    if #ids < allow and keyed then
        local waits = {}
        local scanned = 0
        while #ids < allow and scanned < PROMOTE do
            local head = redis.call("zrange", KEYS[10], 0, 0, "WITHSCORES")
            if #head == 0 then
                break
            end
            scanned = scanned + 1
            local id = head[1]
            redis.call("zrem", KEYS[10], id)
            local k = redis.call("hget", KEYS[5] .. ":" .. id, "limit_key")
            local wait = nil
            if k then
                -- a key found held stays held for this call; an allowed one is checked again
                wait = waits[k] or key_wait(k)
            end
            if wait then
                waits[k] = wait
                parked_now = parked_now + 1
                redis.call("zadd", KEYS[14] .. ":" .. k .. ":parked", head[2], id)
                redis.call("zadd", KEYS[15], "LT", wait, k)
            else
                if k then
                    local base = KEYS[14] .. ":" .. k
                    if key_concurrency then
                        redis.call("sadd", base .. ":running", id)
                        taken_now[id] = true
                    end
                    if key_rate_max and key_rate_per then
                        redis.call("zadd", base .. ":started", started_ms, id .. ":" .. started_ms)
                        redis.call("pexpire", base .. ":started", key_rate_per)
                    end
                end
                table.insert(ids, id)
            end
        end
    elseif #ids < allow then
        local ready = redis.call("zpopmin", KEYS[10], allow - #ids)
        for i = 1, #ready, 2 do
            table.insert(ids, ready[i])
        end
    end
end

local limited = 0
local next_due = -1
if #ids < want then
    local held = parked_now > 0
        or (allow < want and (redis.call("zcard", KEYS[10]) > 0 or redis.call("llen", KEYS[2]) > 0))
    if held then
        limited = 1
        if rate_full then
            -- the window frees its next start when its oldest start leaves it (this call's
            -- starts are in it already); on the worker's clock, which sleeps until then
            local oldest = tonumber(redis.call("zrange", KEYS[13], 0, 0, "WITHSCORES")[2] or started_ms)
            next_due = now + math.max(oldest + rate_per - started_ms, 1)
        end
    end
    if keyed then
        -- a parked key whose rate window frees a start later: sleep until then (a freed slot
        -- wakes through finish.lua's marker)
        local first = redis.call("zrange", KEYS[15], 0, 0, "WITHSCORES")[2]
        if first and first ~= "inf" and tonumber(first) > started_ms then
            local due = now + tonumber(first) - started_ms
            if next_due < 0 or due < next_due then
                next_due = due
            end
        end
    end
    for _, source in ipairs({KEYS[6], KEYS[7]}) do
        local head = redis.call("zrange", source, 0, 0, "WITHSCORES")
        local due = tonumber(head[2])
        -- jobs already due wait behind the limit like the ready ones: no spinning on them
        if due and not (held and due <= now) and (next_due < 0 or due < next_due) then
            next_due = due
        end
    end
elseif redis.call("llen", KEYS[9]) == 0 then
    -- more may be due: wake another waiting worker
    redis.call("rpush", KEYS[9], 1)
end

local out = {next_due, limited}
if #ids == 0 then
    return out
end
local data = redis.call("hmget", KEYS[4], unpack(ids))
for i, id in ipairs(ids) do
    -- a job deleted after it was queued has no data: drop it
    if data[i] then
        redis.call("sadd", KEYS[3], id)
        local meta_key = KEYS[5] .. ":" .. id
        -- `started_ms`: the start in ms (apalis' `locked_at` has whole seconds), as the limits
        -- counted it (Redis' clock) in a limited queue, else the worker's clock
        redis.call("hset", meta_key, "status", "Running", "locked_at", ARGV[4], "locked_by", ARGV[3],
            "started_ms", started_ms or ARGV[1])
        if rate_max and rate_per then
            redis.call("zadd", KEYS[13], started_ms, id .. ":" .. started_ms)
            redis.call("pexpire", KEYS[13], rate_per)
        end
        local m = redis.call("hmget", meta_key, "next_run_ms", "failures", "max_retry", "timeout_ms",
            "job_type")
        table.insert(out, id)
        table.insert(out, data[i])
        table.insert(out, m[1] or "0")
        table.insert(out, m[2] or "0")
        table.insert(out, m[3] or "0")
        table.insert(out, m[4] or "0")
        if ARGV[5] ~= "0" then
            redis.call("xadd", KEYS[16], "MAXLEN", "~", ARGV[5], "*", "job_id", id, "state", "started",
                "type", m[5] or "",
                "attempt", (tonumber(m[2]) or 0) + 1, "time", ARGV[1])
        end
    end
end
return out
