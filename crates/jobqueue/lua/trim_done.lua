-- apalis keeps finished jobs forever in its {q}:done and {q}:dead SETs (no timestamp). Move them
-- into our {q}:finished and {q}:dead_at zsets stamped with the time we saw them (listings sort by
-- it), and delete done jobs older than the retention. Dead jobs stay until deleted or retried.
-- KEYS[1]: {q}:done  KEYS[2]: {q}:finished  KEYS[3]: {q}:data  KEYS[4]: meta prefix
-- KEYS[5]: {q}:dead  KEYS[6]: {q}:dead_at  KEYS[7]: errors prefix  KEYS[8]: {q}:cancelled
-- Cancelled jobs are kept like done ones.
-- ARGV[1]: now (ms)  ARGV[2]: retention (ms)  ARGV[3]: limit
-- Returns {stamped, deleted}
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
local fresh = redis.call("spop", KEYS[1], limit)
for _, id in ipairs(fresh) do
    redis.call("zadd", KEYS[2], now, id)
end
local dead = redis.call("spop", KEYS[5], limit)
for _, id in ipairs(dead) do
    redis.call("zadd", KEYS[6], now, id)
end
local old = redis.call("zrangebyscore", KEYS[2], "-inf", now - tonumber(ARGV[2]), "LIMIT", 0, limit)
for _, id in ipairs(old) do
    redis.call("hdel", KEYS[3], id)
    redis.call("del", KEYS[4] .. ":" .. id)
    redis.call("del", KEYS[7] .. ":" .. id)
    redis.call("zrem", KEYS[2], id)
end
local cancelled = redis.call("zrangebyscore", KEYS[8], "-inf", now - tonumber(ARGV[2]), "LIMIT", 0, limit)
for _, id in ipairs(cancelled) do
    redis.call("hdel", KEYS[3], id)
    redis.call("del", KEYS[4] .. ":" .. id)
    redis.call("del", KEYS[7] .. ":" .. id)
    redis.call("zrem", KEYS[8], id)
end
return {#fresh + #dead, #old + #cancelled}
