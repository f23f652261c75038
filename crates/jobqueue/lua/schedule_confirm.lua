-- The job of a claimed tick is stored: drop the claim, remember the newest tick's job.
-- KEYS[1]: jobqueue:schedules:claims  KEYS[2]: jobqueue:schedules:state:<name>
-- ARGV: name, tick (ms), job id, whether the schedule still exists ("1"/"0")
redis.call("zrem", KEYS[1], ARGV[2] .. ":" .. ARGV[1])
if ARGV[4] ~= "1" then
    return 0
end
local last = tonumber(redis.call("hget", KEYS[2], "last_run_ms") or "0")
if tonumber(ARGV[2]) >= last then
    redis.call("hset", KEYS[2], "last_run_ms", ARGV[2], "last_job_id", ARGV[3])
end
return 1
