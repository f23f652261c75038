-- Delete a job wherever it waits. A job a worker holds right now stays in that worker's in-flight
-- set (removing it would make apalis' ack fail and stop that worker); its leftovers are trimmed later.
-- KEYS[1]: {q}:data  KEYS[2]: meta prefix  KEYS[3]: {q}:delayed  KEYS[4]: {q}:scheduled
-- KEYS[5]: {q}:active  KEYS[6]: {q}:done  KEYS[7]: {q}:dead  KEYS[8]: {q}:finished
-- ARGV[1]: id.  Returns 1 when the job existed.
local id = ARGV[1]
local existed = redis.call("hdel", KEYS[1], id)
existed = existed + redis.call("del", KEYS[2] .. ":" .. id)
redis.call("zrem", KEYS[3], id)
redis.call("zrem", KEYS[4], id)
redis.call("lrem", KEYS[5], 0, id)
redis.call("srem", KEYS[6], id)
redis.call("srem", KEYS[7], id)
redis.call("zrem", KEYS[8], id)
if existed > 0 then
    return 1
end
return 0
