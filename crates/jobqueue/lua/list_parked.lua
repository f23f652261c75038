-- One page of the jobs held back by their limit key (the `<prefix>:<key>:parked` zsets, scored
-- like {q}:ready: priority band then due ms), in (due ms, id) order after a cursor, merged over
-- the parked keys, so the pending listing shows what the pending count counts.
-- Bounded: the first ARGV[4] keys of {q}:parked_keys (as the count reads), per key and priority
-- band at most 20 reads of 200 entries, and never more than 2 x limit entries held.
-- KEYS[1]: {q}:parked_keys  KEYS[2]: per-key prefix ({q}:key)
-- ARGV[1]: cursor due ms ("" none)  ARGV[2]: cursor id  ARGV[3]: limit  ARGV[4]: most keys
-- Returns a flat list: id, due ms, id, due ms, ... (due ms: the score less its band)
local BAND = 4398046511104
local cs, cid = tonumber(ARGV[1]), ARGV[2]
local limit = tonumber(ARGV[3])
local kept = {}
-- once `kept` holds `limit` entries, the last of them: nothing after it is needed
local last = nil
local function before(a, b)
    return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end
local function trim()
    table.sort(kept, before)
    for i = #kept, limit + 1, -1 do
        kept[i] = nil
    end
    if #kept >= limit then
        last = kept[#kept]
    end
end
for _, k in ipairs(redis.call("zrange", KEYS[1], 0, tonumber(ARGV[4]) - 1)) do
    local parked = KEYS[2] .. ":" .. k .. ":parked"
    for band = 0, 9 do
        local lo = band * BAND
        local min, max = lo, "(" .. (lo + BAND)
        if cs then
            min = lo + cs
        end
        if last then
            max = lo + last[1]
        end
        if redis.call("zcount", parked, min, max) > 0 then
            local taken, offset = 0, 0
            for _ = 1, 20 do
                local page = redis.call("zrangebyscore", parked, min, max, "WITHSCORES", "LIMIT", offset, 200)
                for i = 1, #page, 2 do
                    local id, due = page[i], tonumber(page[i + 1]) - lo
                    local after = not cs or due > cs or (due == cs and id > cid)
                    if after and (not last or before({due, id}, last)) then
                        table.insert(kept, {due, id})
                        taken = taken + 1
                    end
                end
                if #page < 400 or taken >= limit then
                    break
                end
                offset = offset + 200
            end
            if #kept >= 2 * limit or (not last and #kept >= limit) then
                trim()
            end
        end
    end
end
trim()
local out = {}
for _, e in ipairs(kept) do
    table.insert(out, e[2])
    table.insert(out, tostring(e[1]))
end
return out
