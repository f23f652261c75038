-- One page of a zset in (score, id) order after a cursor, so pages stay stable while jobs come
-- and go. Bounded: at most 20 reads of 200 entries per call.
-- KEYS[1]: the zset
-- ARGV[1]: lowest score  ARGV[2]: highest score  ARGV[3]: "asc" or "desc"
-- ARGV[4]: cursor score ("" none)  ARGV[5]: cursor id  ARGV[6]: limit
-- Returns a flat list: id, score, id, score, ...
local asc = ARGV[3] == "asc"
local lo, hi = ARGV[1], ARGV[2]
local cs, cid = tonumber(ARGV[4]), ARGV[5]
if cs then
    if asc then lo = ARGV[4] else hi = ARGV[4] end
end
local limit = tonumber(ARGV[6])
local out = {}
local offset = 0
for _ = 1, 20 do
    local page
    if asc then
        page = redis.call("zrangebyscore", KEYS[1], lo, hi, "WITHSCORES", "LIMIT", offset, 200)
    else
        page = redis.call("zrevrangebyscore", KEYS[1], hi, lo, "WITHSCORES", "LIMIT", offset, 200)
    end
    for i = 1, #page, 2 do
        local id, score = page[i], tonumber(page[i + 1])
        local after = true
        if cs and score == cs then
            if asc then after = id > cid else after = id < cid end
        end
        if after then
            table.insert(out, id)
            table.insert(out, page[i + 1])
            if #out >= 2 * limit then
                return out
            end
        end
    end
    if #page < 400 then
        return out
    end
    offset = offset + 200
end
return out
