-- finsent's story lookup (see pipeline/applier.py): what the applier needs to decide the stories
-- of a round of documents, read in one call.
-- ARGV[1]: one msgpack array: story_prefix, band keys...
-- Returns one msgpack array: {owners, stories}: owners[i] is the story id band key i points to
-- (false: none); stories lists each distinct owner whose representative signature still exists
-- as {story_id, signature, {member, score, member, score, ...}} (its documents, oldest first).
local A = cmsgpack.unpack(ARGV[1])
local SP = A[1]
local owners = {}
local seen = {}
local stories = {}
for i = 2, #A do
  local sid = redis.call('GET', SP .. 'b:' .. A[i])
  owners[i - 1] = sid
  if sid and not seen[sid] then
    seen[sid] = true
    local rep = redis.call('GET', SP .. 'r:' .. sid)
    if rep then
      stories[#stories + 1] = {sid, rep, redis.call('ZRANGE', SP .. 's:' .. sid, 0, -1, 'WITHSCORES')}
    end
  end
end
return cmsgpack.pack({owners, stories})
