-- Delete a job wherever it waits. A job a worker runs right now is refused (removing it would
-- make apalis' ack fail and stop that worker).
-- KEYS[1]: {q}:data  KEYS[2]: meta prefix  KEYS[3]: {q}:delayed  KEYS[4]: {q}:scheduled
-- KEYS[5]: {q}:active  KEYS[6]: {q}:done  KEYS[7]: {q}:dead  KEYS[8]: {q}:finished
-- KEYS[9]: {q}:retrying  KEYS[10]: {q}:dead_at  KEYS[11]: errors prefix  KEYS[12]: {q}:cancelled
-- KEYS[13]: {q}:ready  KEYS[14]: per-key prefix ({q}:key)
-- ARGV[1]: id.  Returns 1 deleted, 0 unknown, -1 running.
local id = ARGV[1]
local meta_key = KEYS[2] .. ":" .. id
if redis.call("hget", meta_key, "status") == "Running" then
    return -1
end
local limit_key = redis.call("hget", meta_key, "limit_key")
if limit_key then
    redis.call("zrem", KEYS[14] .. ":" .. limit_key .. ":parked", id)
end
local existed = redis.call("hdel", KEYS[1], id)
existed = existed + redis.call("del", meta_key)
redis.call("zrem", KEYS[3], id)
redis.call("zrem", KEYS[4], id)
redis.call("lrem", KEYS[5], 0, id)
redis.call("srem", KEYS[6], id)
redis.call("srem", KEYS[7], id)
redis.call("zrem", KEYS[8], id)
redis.call("zrem", KEYS[9], id)
redis.call("zrem", KEYS[10], id)
redis.call("del", KEYS[11] .. ":" .. id)
redis.call("zrem", KEYS[12], id)
redis.call("zrem", KEYS[13], id)
if existed > 0 then
    return 1
end
return 0
