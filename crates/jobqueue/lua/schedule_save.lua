-- Create, replace or apply (config) a schedule's definition; keep its next tick unless its timing
-- (cron + zone) changed, so a worker restart or a re-applied config never moves or repeats a tick.
-- KEYS[1]: jobqueue:schedules (hash name -> definition json)
-- KEYS[2]: jobqueue:schedules:next (zset name -> next tick ms; absent while paused)
-- KEYS[3]: jobqueue:schedules:state:<name> (hash)
-- ARGV: name, definition json, timing ("cron|zone"), first tick ms (the first after now),
--       mode ("create": only if absent, "replace": only if present, "apply": either), source
-- Returns 1 saved, 0 refused (exists for create, absent for replace).
local exists = redis.call("hexists", KEYS[1], ARGV[1]) == 1
if (ARGV[5] == "create" and exists) or (ARGV[5] == "replace" and not exists) then
    return 0
end
redis.call("hset", KEYS[1], ARGV[1], ARGV[2])
local timing = redis.call("hget", KEYS[3], "timing")
redis.call("hset", KEYS[3], "timing", ARGV[3], "source", ARGV[6])
if redis.call("hget", KEYS[3], "paused") == "1" then
    return 1
end
if timing ~= ARGV[3] or not redis.call("zscore", KEYS[2], ARGV[1]) then
    redis.call("zadd", KEYS[2], ARGV[4], ARGV[1])
end
return 1
