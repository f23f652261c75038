-- The rate limiter's one script (crates/api/src/ratelimit/lua.rs runs it): decides a batch of
-- clients of one bucket, each client's minute and hour windows atomically.
-- KEYS: the bucket's minute hash and hour hash. ARGV: minute ttl (s), hour ttl (s), then per
-- client: field, minute limit, hour limit, units wanted. Returns per client {units allowed,
-- minute count, hour count}. Counts first, then units beyond a limit are given back: an allowed
-- client (the common case) costs two commands.
local mk, hk = KEYS[1], KEYS[2]
local out = {}
for i = 0, (#ARGV - 2) / 4 - 1 do
  local a = 3 + 4 * i
  local field, want = ARGV[a], tonumber(ARGV[a + 3])
  local m = redis.call('HINCRBY', mk, field, want)
  local h = redis.call('HINCRBY', hk, field, want)
  local allowed = math.min(want, tonumber(ARGV[a + 1]) - m + want, tonumber(ARGV[a + 2]) - h + want)
  if allowed < want then
    if allowed < 0 then allowed = 0 end
    m = redis.call('HINCRBY', mk, field, allowed - want)
    h = redis.call('HINCRBY', hk, field, allowed - want)
  end
  out[3 * i + 1], out[3 * i + 2], out[3 * i + 3] = allowed, m, h
end
redis.call('EXPIRE', mk, ARGV[1], 'NX')
redis.call('EXPIRE', hk, ARGV[2], 'NX')
return out
