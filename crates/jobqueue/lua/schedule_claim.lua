-- Claim one tick of a schedule: the exactly-once step. The schedule's next tick moves from the
-- tick seen to the next one only if it still is the tick seen, so of any number of workers that
-- saw it exactly one wins. The winner records the claim (to enqueue the job, then confirm);
-- a claim never confirmed (its worker died) is enqueued again by any worker, under the same
-- unique key, so the job is stored once.
-- KEYS[1]: jobqueue:schedules:next  KEYS[2]: jobqueue:schedules:claims (zset "<tick>:<name>" ->
-- claimed at ms)  KEYS[3]: jobqueue:schedules:state:<name>
-- ARGV: name, tick seen (ms), next tick (ms), tick to run (ms; "0": skip this one), now ms
-- Returns 1 claimed, 0 lost (another worker claimed it, or the schedule was paused/deleted).
local score = redis.call("zscore", KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then
    return 0
end
redis.call("zadd", KEYS[1], ARGV[3], ARGV[1])
if ARGV[4] ~= "0" then
    redis.call("zadd", KEYS[2], ARGV[5], ARGV[4] .. ":" .. ARGV[1])
else
    redis.call("hincrby", KEYS[3], "skipped", 1)
end
return 1
