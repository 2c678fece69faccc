-- finsent's commit point: applies a round of work items atomically (see pipeline/applier.py).
--
-- ARGV[1] is one msgpack array (packed by the applier: one argument instead of dozens per document,
-- because redis-py encodes every argument in Python). Its layout (strings and integers):
--   prefix, history_len, doc_ttl_s, story_prefix, story_window_ms, story_keep_ms, story_period_s,
--   n_fields, field_1..field_n, round_keys (every band key of the round's documents, 8 bytes
--   each), n_items, items...
-- item "D" (document): doc_id, text_hash, n_ticks, n_late, n_entries, stream,
--   ticks: symbol, expected_seq, as_of, num, den, seq, last_doc_id, model_version,
--          event_t, event_member, prune_cutoff, history_score, ticker_score_json, field values...
--   late symbols (the document was late for them: checked against this call's failures only)
--   entries: effect_id, topic, partition, key, value, scan_from
--   story: story_id ('' = no story detection), repeats_before, published_at, band keys (one
--          string, 8 bytes a key: key b is bytes 8b-7..8b), their owners as the applier read them
--          ({owner or ''...}, or 0: none has one), the keys to point at the story ({band numbers
--          b...}, or 1: all of them), representative signature ('' unless the document starts
--          the story)
-- item "L" (dead letter): guard_suffix, stream, message fingerprint, one entry
-- Returns per item {status, entry ids...}; status: ok | dup | dupid | conflict.
--
-- Band keys (band key -> story id) live in hashes, one per period of story_period_s seconds of
-- Redis time (TIME, the same clock for every worker): SP .. 'B:' .. story_period_s .. ':' .. period
-- (the length in the name keeps workers configured with another window apart). A key is written to
-- the current period's hash and read from it or else the previous one's, so it lives one to two
-- periods (a period is longer than a story is kept). Hashes of older periods are UNLINKed (freed
-- in the background), never left to expire: expiring a hash of millions of fields would block
-- Redis. One HMGET per hash reads the whole round's keys and one HSET writes its claims, instead
-- of a GET and a SET EX per key and document: the story's Redis cost is per round, not per key.
local A = cmsgpack.unpack(ARGV[1])
local P = A[1]
local hist_len = tonumber(A[2])
local ttl = A[3]
local SP = A[4]
local story_window = tonumber(A[5])
local story_keep = tonumber(A[6])
-- seconds: a band-key hash's period, and the TTL of a story's sorted set and representative
local story_period = tonumber(A[7])
local nf = tonumber(A[8])
local fields = {}
for i = 1, nf do fields[i] = A[8 + i] end
local pos = 9 + nf
local round_keys = A[pos]
local nitems = tonumber(A[pos + 1])
pos = pos + 2
local tick_size = 13 + nf
local tainted = {}
local out = {}

local CHUNK = 4000 -- arguments per unpack(): Lua's stack is bounded
local band_hash, prev_hash
local owner_of, claims = {}, {}

-- this period's and the previous period's band key hashes (sweeping older ones on first use)
local function band_hashes()
  if not band_hash then
    local period = math.floor(tonumber(redis.call('TIME')[1]) / story_period)
    local BP = SP .. 'B:' .. story_period .. ':'
    band_hash, prev_hash = BP .. period, BP .. (period - 1)
    -- BP .. 'swept': the newest period whose hash is gone (unset: none was ever written before);
    -- at most 16 periods a call, so a namespace idle for years costs one call a few more UNLINKs
    local swept = tonumber(redis.call('GET', BP .. 'swept') or period - 2)
    local upto = math.min(period - 2, swept + 16)
    for p = swept + 1, upto do redis.call('UNLINK', BP .. p) end
    if swept ~= upto then redis.call('SET', BP .. 'swept', upto) end
  end
  return band_hash, prev_hash
end

-- the round's band keys' owners, read in one go (false: none)
if #round_keys > 0 then
  local cur_hash, old_hash = band_hashes()
  local keys = {}
  for i = 1, #round_keys / 8 do keys[i] = string.sub(round_keys, 8 * i - 7, 8 * i) end
  for c = 1, #keys, CHUNK do
    local e = math.min(c + CHUNK - 1, #keys)
    local cur = redis.call('HMGET', cur_hash, unpack(keys, c, e))
    local prev = redis.call('HMGET', old_hash, unpack(keys, c, e))
    for j = c, e do owner_of[keys[j]] = cur[j - c + 1] or prev[j - c + 1] end
  end
end

-- the story a band key points to now ('' none): this call's claims, else what Redis held
local function owner(k)
  local o = claims[k] or owner_of[k]
  if o == nil then -- not among round_keys
    local cur_hash, old_hash = band_hashes()
    o = redis.call('HGET', cur_hash, k) or redis.call('HGET', old_hash, k)
    owner_of[k] = o
  end
  return o or ''
end

local function xadd(stream, i)
  return redis.call('XADD', stream, '*', 'e', A[i], 't', A[i + 1], 'p', A[i + 2],
                    'k', A[i + 3], 'v', A[i + 4], 'o', A[i + 5])
end

for it = 1, nitems do
  local kind = A[pos]
  if kind == 'D' then
    local doc_key = P .. 'doc:' .. A[pos + 1]
    local hash = A[pos + 2]
    local nt = tonumber(A[pos + 3])
    local nl = tonumber(A[pos + 4])
    local ne = tonumber(A[pos + 5])
    local stream = A[pos + 6]
    local tpos = pos + 7
    local lpos = tpos + nt * tick_size
    local epos = lpos + nl
    local spos = epos + 6 * ne
    local sid = A[spos]
    local packed = A[spos + 3]
    local nb = #packed / 8
    local bk = {}
    local fresh = false -- the document starts its story and no story of its id exists
    local status = 'ok'
    local stored = redis.call('GET', doc_key)
    if stored then
      if stored == hash then status = 'dup' else status = 'dupid' end
    else
      for t = 0, nt - 1 do
        local b = tpos + t * tick_size
        local sym = A[b]
        if tainted[sym] then status = 'conflict' break end
        local cur = tonumber(redis.call('HGET', P .. 'state:' .. sym, 'seq') or '0')
        if cur ~= tonumber(A[b + 1]) then status = 'conflict' break end
      end
      -- "late" was decided on the cached state, which a failed earlier item may have advanced
      for l = 0, nl - 1 do
        if tainted[A[lpos + l]] then status = 'conflict' break end
      end
      -- the story was decided on what the applier read: its band keys' owners and the story's
      -- documents before this one (a failed earlier item of this call left both unwritten)
      if status == 'ok' and sid ~= '' then
        local owners = A[spos + 4]
        for b = 1, nb do
          bk[b] = string.sub(packed, 8 * b - 7, 8 * b)
          if owner(bk[b]) ~= (owners == 0 and '' or owners[b]) then status = 'conflict' break end
        end
        if status == 'ok' then
          local sk = SP .. 's:' .. sid
          local t = tonumber(A[spos + 2])
          local before = 0
          -- a document that starts its story finds no story of its id, but for one from long ago
          fresh = A[spos + 6] ~= '' and redis.call('EXISTS', sk) == 0
          if not fresh then
            before = redis.call('ZCOUNT', sk, string.format('(%d', t - story_window), string.format('(%d', t))
            for _, m in ipairs(redis.call('ZRANGEBYSCORE', sk, t, t)) do
              if m < A[pos + 1] then before = before + 1 end
            end
          end
          if before ~= tonumber(A[spos + 1]) then status = 'conflict' end
        end
      end
    end
    if status == 'ok' then
      for t = 0, nt - 1 do
        local b = tpos + t * tick_size
        local sym = A[b]
        local sk = P .. 'state:' .. sym
        redis.call('HSET', sk, 'symbol', sym, 'as_of', A[b + 2], 'num', A[b + 3], 'den', A[b + 4],
                   'seq', A[b + 5], 'last_doc_id', A[b + 6], 'model_version', A[b + 7])
        redis.call('ZADD', sk .. ':events', A[b + 8], A[b + 9])
        redis.call('ZREMRANGEBYSCORE', sk .. ':events', '-inf', '(' .. A[b + 10])
        local hk = P .. 'ticker:' .. sym
        local hv = {}
        for f = 1, nf do
          hv[2 * f - 1] = fields[f]
          hv[2 * f] = A[b + 12 + f]
        end
        redis.call('HSET', hk, unpack(hv))
        redis.call('ZADD', hk .. ':history', A[b + 11], A[b + 12])
        redis.call('ZREMRANGEBYRANK', hk .. ':history', 0, -hist_len - 1)
        redis.call('SADD', P .. 'tickers', sym)
        redis.call('PUBLISH', P .. 'updates', A[b + 12])
      end
      if sid ~= '' then
        local sk = SP .. 's:' .. sid
        local t = tonumber(A[spos + 2])
        redis.call('ZADD', sk, t, A[pos + 1])
        if not fresh then redis.call('ZREMRANGEBYSCORE', sk, '-inf', string.format('(%d', t - story_keep)) end
        redis.call('EXPIRE', sk, story_period)
        local rep = A[spos + 6]
        if rep ~= '' then redis.call('SET', SP .. 'r:' .. sid, rep, 'EX', story_period)
        else redis.call('EXPIRE', SP .. 'r:' .. sid, story_period) end
        local claimed = A[spos + 5]
        if claimed == 1 then
          for b = 1, nb do claims[bk[b]] = sid end
        else
          for _, b in ipairs(claimed) do claims[bk[b]] = sid end
        end
      end
      redis.call('SET', doc_key, hash, 'EX', ttl)
      redis.call('INCR', P .. 'applied')
      local res = {'ok'}
      for e = 0, ne - 1 do res[#res + 1] = xadd(stream, epos + 6 * e) end
      out[it] = res
    else
      -- this call's later items must not build on a state this item did not write
      for t = 0, nt - 1 do tainted[A[tpos + t * tick_size]] = true end
      out[it] = {status}
    end
    pos = spos + 7
  elseif kind == 'L' then
    local stream = A[pos + 2]
    local guard = P .. A[pos + 1]
    local seen = redis.call('GET', guard)
    -- '1': a guard written before guards held the message's fingerprint
    if seen == A[pos + 3] or seen == '1' then
      out[it] = {'dup'}
    else
      redis.call('SET', guard, A[pos + 3], 'EX', ttl)
      out[it] = {'ok', xadd(stream, pos + 4)}
    end
    pos = pos + 10
  else
    return redis.error_reply('finsent apply: unknown item kind ' .. tostring(kind))
  end
end
if next(claims) then
  local kv = {}
  for k, sid in pairs(claims) do
    kv[#kv + 1] = k
    kv[#kv + 1] = sid
  end
  local cur_hash = band_hashes()
  for c = 1, #kv, CHUNK do redis.call('HSET', cur_hash, unpack(kv, c, math.min(c + CHUNK - 1, #kv))) end
end
return out
