-- finsent's story lookup (see pipeline/applier.py): what the applier needs to decide the stories
-- of a round of documents, read in one call.
-- ARGV[1]: one msgpack array: story_prefix, t_min, t_max, window (the round's documents are
-- published in [t_min, t_max]; ms), period (s), band keys (one string, 8 bytes a key). Band keys
-- live in per-period hashes (see commit.lua): this period's, else the previous one's.
-- Returns one msgpack array: {owners, stories}: owners[i] is the story id band key i points to
-- (false: none); stories lists each distinct owner whose representative signature still exists
-- as {story_id, signature, {member, score, ...}, count}: its documents that some round document
-- may or may not count (published in (t_min - window, t_max - window] or from t_min on), oldest
-- first, and how many it has in (t_max - window, t_min), which every round document counts. A
-- flood's story is then read as a number, not as all its copies.
local A = cmsgpack.unpack(ARGV[1])
local SP = A[1]
local tmin, tmax, w = A[2], A[3], A[4]
local owners = {}
local seen = {}
local stories = {}
local period = math.floor(tonumber(redis.call('TIME')[1]) / A[5])
local BP = SP .. 'B:' .. A[5] .. ':'
local packed = A[6]
local keys = {}
for i = 1, #packed / 8 do keys[i] = string.sub(packed, 8 * i - 7, 8 * i) end
local CHUNK = 4000 -- arguments per unpack(): Lua's stack is bounded
for c = 1, #keys, CHUNK do
  local e = math.min(c + CHUNK - 1, #keys)
  local cur = redis.call('HMGET', BP .. period, unpack(keys, c, e))
  local prev = redis.call('HMGET', BP .. (period - 1), unpack(keys, c, e))
  for j = c, e do owners[j] = cur[j - c + 1] or prev[j - c + 1] end
end
for i = 1, #keys do
  local sid = owners[i]
  if sid and not seen[sid] then
    seen[sid] = true
    local rep = redis.call('GET', SP .. 'r:' .. sid)
    if rep then
      local sk = SP .. 's:' .. sid
      local listed = redis.call('ZRANGEBYSCORE', sk, string.format('(%d', tmin - w), string.format('%d', tmax - w),
                                'WITHSCORES')
      for _, x in ipairs(redis.call('ZRANGEBYSCORE', sk, string.format('%d', math.max(tmin, tmax - w + 1)), '+inf',
                                    'WITHSCORES')) do
        listed[#listed + 1] = x
      end
      local count = redis.call('ZCOUNT', sk, string.format('(%d', tmax - w), string.format('(%d', tmin))
      stories[#stories + 1] = {sid, rep, listed, count}
    end
  end
end
return cmsgpack.pack({owners, stories})
