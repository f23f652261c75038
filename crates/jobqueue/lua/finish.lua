-- Record finished runs of one worker in one call (replaces apalis' handle_results.lua, which
-- retries 25 times at whole seconds, and our separate failure write): done jobs go to
-- {q}:finished, failed ones to {q}:retrying at the millisecond the runner chose or, on the last
-- allowed failure, to {q}:dead_at; runs the worker did not start (early, or released at shutdown)
-- go back to {q}:delayed. A job no longer in the worker's in-flight set (re-queued meanwhile) is
-- skipped, so sending the same result twice is harmless. Per-minute history counts are added.
-- KEYS[1]: in-flight set  KEYS[2]: meta prefix  KEYS[3]: {q}:finished  KEYS[4]: {q}:retrying
-- KEYS[5]: {q}:dead_at  KEYS[6]: errors prefix  KEYS[7]: history key of this minute
-- KEYS[8]: {q}:delayed  KEYS[9]: {q}:wake  KEYS[10]: {q}:cancelled  KEYS[11]: {q}:events
-- KEYS[12]: {q}:limits  KEYS[13]: {q}:ready  KEYS[14]: {q}:active
-- (a recorded end leaves the in-flight set: that frees the job's concurrency slot)
-- KEYS[15]: per-key prefix ({q}:key)  KEYS[16]: {q}:parked_keys: a job with a `limit_key` frees
-- its key's slot, and that key's parked jobs are looked at again (score 0)
-- KEYS[17]: {q}:data (a done job's short JSON moves into its meta: see slim_done)
-- ARGV[1]: now (ms)  ARGV[2]: now (s)  ARGV[3]: errors kept per job  ARGV[4]: history ttl (s)
-- ARGV[5]: events kept (the stream's approximate MAXLEN; "0": no events)
-- ARGV[6..]: groups of 7: id, kind (done|retry|dead|later|cancelled|progress), failures,
--            next_run_ms, last_error, error entry (JSON), data (done: the result JSON or "";
--            progress: the progress JSON)
-- Results and cancels: a done job keeps its result in meta (`o`, see slim_done); `progress`
-- entries (the latest report per running job, coalesced by the worker) only update meta
-- `progress` of a job still in flight here; a job whose cancel was asked for (meta
-- `cancel_requested`) ends cancelled ({q}:cancelled) whatever its run did, unless it finished
-- done. Each recorded end (done, retrying, dead, cancelled) and progress report is added to the
-- {q}:events stream: `job_id`, `state`, `type`, `attempt` (the run it concerns), `time` (ms),
-- progress: `progress`.
-- Returns the number of results recorded.
local recorded, processed, failed, rescheduled = 0, 0, 0, 0
local key_freed = false
-- `meta`: the job's meta hash as a table when the caller has read it already (done jobs)
local function event(id, state, progress, meta)
    if ARGV[5] == "0" then
        return
    end
    local m = meta and { meta.job_type, meta.failures }
        or redis.call("hmget", KEYS[2] .. ":" .. id, "job_type", "failures")
    -- failures is already counted for a failed run; the run of any other is the next one
    local attempt = tonumber(m[2]) or 0
    if state ~= "retrying" and state ~= "dead" then
        attempt = attempt + 1
    end
    if progress then
        redis.call("xadd", KEYS[11], "MAXLEN", "~", ARGV[5], "*", "job_id", id, "state", state,
            "type", m[1] or "", "attempt", attempt, "time", ARGV[1], "progress", progress)
    else
        redis.call("xadd", KEYS[11], "MAXLEN", "~", ARGV[5], "*", "job_id", id, "state", state,
            "type", m[1] or "", "attempt", attempt, "time", ARGV[1])
    end
end
-- A done job is kept `done_retention` (bytes per job): its meta is rewritten in the done layout,
-- which `store/reads.rs` expands back. It keeps what a reader of a done job needs, under short
-- names, times as offsets from its due time: `r` run_at_ms, `c` created_ms - r (absent: 0), `s`
-- start - r (`started_ms`, or `locked_at` in seconds for a job an older version started), `o` its
-- result, `d` its job JSON when short (moved out of {q}:data, ~130 B per entry of that
-- hashtable), and any rarer field unchanged. Dropped: `status` (its {q}:finished entry says done),
-- `job_type` (in its JSON), `next_run_ms`, `locked_by`, `done_at`, `max_retry` 0 (absent reads
-- as 0). Short values keep the hash a listpack (Redis' default hash-max-listpack-value, 64 B):
-- about 120 B for a short job instead of 180 B, one allocator size class less.
local DROPPED = { status = true, job_type = true, next_run_ms = true, locked_by = true,
    done_at = true, run_at_ms = true, created_ms = true, started_ms = true, locked_at = true }
-- `fields`: its HGETALL reply, `meta` the same as a table
local function slim_done(meta_key, id, result, fields, meta)
    local kept = {}
    for j = 1, #fields, 2 do
        local name, value = fields[j], fields[j + 1]
        if not DROPPED[name] and not (name == "max_retry" and value == "0") then
            table.insert(kept, name)
            table.insert(kept, value)
        end
    end
    local run_at = tonumber(meta.run_at_ms)
    if not run_at then
        -- not stored by our enqueue (apalis' own layout): only its state changes
        redis.call("hset", meta_key, "status", "Done")
        if #result > 0 then
            redis.call("hset", meta_key, "result", result)
        end
        return
    end
    table.insert(kept, "r")
    table.insert(kept, meta.run_at_ms)
    local created = tonumber(meta.created_ms)
    if created and created ~= run_at then
        table.insert(kept, "c")
        table.insert(kept, string.format("%d", created - run_at))
    end
    local start = tonumber(meta.started_ms)
    if not start and tonumber(meta.locked_at) then
        start = tonumber(meta.locked_at) * 1000
    end
    if start then
        table.insert(kept, "s")
        table.insert(kept, string.format("%d", start - run_at))
    end
    if #result > 0 then
        table.insert(kept, "o")
        table.insert(kept, result)
    end
    local job = redis.call("hget", KEYS[17], id)
    if job and #job <= 64 and #result <= 64 then
        table.insert(kept, "d")
        table.insert(kept, job)
        redis.call("hdel", KEYS[17], id)
    end
    -- one rewrite instead of an HDEL per dropped field and an HSET per renamed one
    redis.call("del", meta_key)
    redis.call("hset", meta_key, unpack(kept))
end
for i = 6, #ARGV, 7 do
    local id, kind = ARGV[i], ARGV[i + 1]
    local meta_key = KEYS[2] .. ":" .. id
    if kind == "progress" then
        if redis.call("sismember", KEYS[1], id) == 1 then
            redis.call("hset", meta_key, "progress", ARGV[i + 6])
            event(id, "progress", ARGV[i + 6])
        end
    elseif redis.call("srem", KEYS[1], id) == 1 then
        recorded = recorded + 1
        -- a done job's meta is read whole once: its limit key, its done event and the rewrite
        local fields, meta, limit_key
        if kind == "done" then
            fields = redis.call("hgetall", meta_key)
            meta = {}
            for j = 1, #fields, 2 do
                meta[fields[j]] = fields[j + 1]
            end
            limit_key = meta.limit_key
        else
            limit_key = redis.call("hget", meta_key, "limit_key")
        end
        if limit_key then
            local base = KEYS[15] .. ":" .. limit_key
            redis.call("srem", base .. ":running", id)
            if redis.call("exists", base .. ":parked") == 1 then
                redis.call("zadd", KEYS[16], 0, limit_key)
                key_freed = true
            end
        end
        if kind ~= "done" and redis.call("hexists", meta_key, "cancel_requested") == 1 then
            kind = "cancelled"
        end
        if kind == "done" then
            processed = processed + 1
            redis.call("zadd", KEYS[3], ARGV[1], id)
            event(id, "done", nil, meta)
            slim_done(meta_key, id, ARGV[i + 6], fields, meta)
        elseif kind == "cancelled" then
            redis.call("zadd", KEYS[10], ARGV[1], id)
            redis.call("hset", meta_key, "status", "Cancelled", "done_at", ARGV[2])
            event(id, "cancelled")
        elseif kind == "later" then
            rescheduled = rescheduled + 1
            redis.call("zadd", KEYS[8], ARGV[i + 3], id)
            redis.call("hset", meta_key, "status", "Pending")
            redis.call("hdel", meta_key, "locked_at", "locked_by")
        else
            failed = failed + 1
            local errors = KEYS[6] .. ":" .. id
            redis.call("lpush", errors, ARGV[i + 5])
            redis.call("ltrim", errors, 0, tonumber(ARGV[3]) - 1)
            redis.call("hset", meta_key, "failures", ARGV[i + 2], "last_error", ARGV[i + 4],
                "next_run_ms", ARGV[i + 3], "done_at", ARGV[2])
            if kind == "retry" then
                rescheduled = rescheduled + 1
                redis.call("zadd", KEYS[4], ARGV[i + 3], id)
                redis.call("hset", meta_key, "status", "Failed")
                event(id, "retrying")
            else
                redis.call("zadd", KEYS[5], ARGV[1], id)
                redis.call("hset", meta_key, "status", "Killed")
                event(id, "dead")
            end
        end
    end
end
if processed + failed > 0 then
    redis.call("hincrby", KEYS[7], "processed", processed)
    redis.call("hincrby", KEYS[7], "failed", failed)
    redis.call("expire", KEYS[7], ARGV[4])
end
-- a waiting worker computed its wake-up time before these were scheduled; or slots freed while
-- jobs wait on the queue's concurrency limit
local freed = recorded > 0 and redis.call("hexists", KEYS[12], "concurrency") == 1
    and (redis.call("zcard", KEYS[13]) > 0 or redis.call("llen", KEYS[14]) > 0)
if (rescheduled > 0 or freed or key_freed) and redis.call("llen", KEYS[9]) == 0 then
    redis.call("rpush", KEYS[9], 1)
end
return recorded
