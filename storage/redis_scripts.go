package storage

import "github.com/redis/go-redis/v9"

// Lua scripts of the Redis backend. Each touches keys of one hash slot
// only: the keys it gets in KEYS and keys that extend KEYS[1] with a
// suffix (the message keys {P c:<conv>}m<seq>). They run with EVALSHA
// (redis.Script falls back to EVAL after a restart emptied the script
// cache); inside pipelines, where that fallback cannot work, with EVAL.
//
// Times are compared as H(t) strings byte by byte (gt below), never with
// Lua's < on strings, which follows the server's locale.

// luaLib is prepended to the scripts that need it.
const luaLib = `
local function gt(a, b)
  for j = 1, #a do
    local x, y = string.byte(a, j), string.byte(b, j)
    if x ~= y then return x > y end
  end
  return false
end
local function expireat(key, ms)
  if ms == '' then return end
  local t = redis.call('TIME')
  if tonumber(ms) > tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) then
    redis.call('PEXPIREAT', key, ms)
  end
end
local function convcheck(key, rev)
  if rev == '' then
    if redis.call('EXISTS', key) == 0 then return 'nf' end
    return false
  end
  local rec = redis.call('GET', key)
  if not rec then return 'nf' end
  if redis.sha1hex(rec) ~= rev then return 'stale' end
  return false
end
`

var (
	// scriptCASString: KEYS[1] string; ARGV old, new. Sets new when the
	// value is old; returns 1 or 0.
	scriptCASString = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0`)

	// scriptDelIfEqual: KEYS[1] string; ARGV value. Deletes the key when
	// it holds value; returns 1 or 0.
	scriptDelIfEqual = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

	// scriptCASHash: KEYS[1] hash; ARGV field, old, new.
	scriptCASHash = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0`)

	// scriptLoginFailure: KEYS user, failed counter. 0 for an unknown
	// user.
	scriptLoginFailure = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('INCR', KEYS[2])
return 1`)

	// scriptLoginSuccess: KEYS user, failed counter, events list; ARGV
	// event JSON, keep. Prepends "<failed>:<JSON>", resets the counter,
	// trims the list. 0 for an unknown user.
	scriptLoginSuccess = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local f = redis.call('GET', KEYS[2]) or '0'
redis.call('DEL', KEYS[2])
local keep = tonumber(ARGV[2])
if keep <= 0 then
  redis.call('DEL', KEYS[3])
  return 1
end
redis.call('LPUSH', KEYS[3], f .. ':' .. ARGV[1])
redis.call('LTRIM', KEYS[3], 0, keep - 1)
return 1`)

	// scriptPopIfTail: KEYS[1] a list; ARGV[1] a value. Removes the
	// list's last element if it is that value (1), else nothing (0).
	scriptPopIfTail = redis.NewScript(`
if redis.call('LINDEX', KEYS[1], -1) == ARGV[1] then
  redis.call('RPOP', KEYS[1])
  return 1
end
return 0`)

	// scriptPutCred: KEYS[1] token hash key; ARGV id, r, u, e, k. Writes
	// the credential unless another credential holds the hash (0).
	scriptPutCred = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'i')
if cur and cur ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'i', ARGV[1], 'r', ARGV[2], 'u', ARGV[3], 'e', ARGV[4], 'k', ARGV[5])
return 1`)

	// scriptCASCred: KEYS[1] token hash key; ARGV id, old r, old u,
	// old e, new r, new u, new e, new k.
	scriptCASCred = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'i', 'r', 'u', 'e')
if f[1] ~= ARGV[1] or f[2] ~= ARGV[2] or f[3] ~= ARGV[3] or f[4] ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], 'r', ARGV[5], 'u', ARGV[6], 'e', ARGV[7], 'k', ARGV[8])
return 1`)

	// scriptTouchCred: KEYS[1] token hash key; ARGV id, u, e (empty:
	// keep it). Returns {old e, kind} or nil when the key holds another id.
	scriptTouchCred = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'i', 'e', 'k')
if f[1] ~= ARGV[1] then return false end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'u', ARGV[2], 'e', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'u', ARGV[2])
end
return {f[2] or '', f[3] or ''}`)

	// scriptDelCred: KEYS[1] token hash key; ARGV id, guard ('1': only
	// when e is ARGV[3]). Returns the deleted {r, u, e} or nil.
	scriptDelCred = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'i', 'r', 'u', 'e')
if f[1] ~= ARGV[1] then return false end
if ARGV[2] == '1' and f[4] ~= ARGV[3] then return false end
redis.call('DEL', KEYS[1])
return {f[2] or '', f[3] or '', f[4] or ''}`)

	// scriptDelIfID: KEYS[1] token hash key; ARGV id. Deletes the key
	// when it holds the credential id.
	scriptDelIfID = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'i') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

	// scriptZSetIf: KEYS[1] zset; ARGV member, seen score, new score
	// (empty: remove). Acts only when the score is still the seen one.
	scriptZSetIf = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1`)

	// scriptReserveMsg: KEYS {P x:m}i, {P x:m}e; ARGV id, conv, score,
	// member. Claims the message id for conv and adds the expiry entry;
	// 0 when another conversation holds the id.
	scriptReserveMsg = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cur ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1`)

	// scriptUnreserveMsg: KEYS as scriptReserveMsg; ARGV id, conv,
	// member, drop ('1' also releases the id).
	scriptUnreserveMsg = redis.NewScript(`
redis.call('ZREM', KEYS[2], ARGV[3])
if ARGV[4] == '1' and redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1`)

	// scriptAppend: KEYS conv record, seq, q, i, k; ARGV id, client key
	// (empty: none), H(ExpiresAt), JSON, H(SentAt), PEXPIREAT ms (empty:
	// none), the record's expected revision (empty: any). Returns {'ok',
	// seq}, {'nf'}, {'stale'}, {'conflict', H(stored ExpiresAt)} or {'dup',
	// seq, value, id taken (0/1)}.
	scriptAppend = redis.NewScript(luaLib + `
local gone = convcheck(KEYS[1], ARGV[7])
if gone then return {gone} end
if ARGV[2] ~= '' then
  local prev = redis.call('HGET', KEYS[5], ARGV[2])
  if prev then
    local v = redis.call('GET', KEYS[1] .. 'm' .. prev)
    if v and gt(string.sub(v, 1, 24), ARGV[5]) then
      return {'dup', prev, v, redis.call('HEXISTS', KEYS[4], ARGV[1])}
    end
  end
end
local taken = redis.call('HGET', KEYS[4], ARGV[1])
if taken then
  local v = redis.call('GET', KEYS[1] .. 'm' .. string.match(taken, '^(%d+)'))
  return {'conflict', v and string.sub(v, 1, 24) or ''}
end
local seq = redis.call('INCR', KEYS[2])
local mk = KEYS[1] .. 'm' .. seq
redis.call('SET', mk, ARGV[3] .. ARGV[4])
expireat(mk, ARGV[6])
redis.call('ZADD', KEYS[3], seq, seq)
redis.call('HSET', KEYS[4], ARGV[1], seq .. ':' .. ARGV[2])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[5], ARGV[2], seq) end
return {'ok', seq}`)

	// scriptAppendLocal is scriptReserveMsg and scriptAppend in one, for
	// a single Redis node, where a script may use keys of several slots.
	// KEYS {P x:m}i, {P x:m}e, then those of scriptAppend; ARGV those of
	// scriptAppend but the revision, then conv, score, member, revision.
	// Returns {'ok', seq}, {'nf'}, {'stale'}, {'conflict'} or {'dup', seq,
	// value}.
	scriptAppendLocal = redis.NewScript(luaLib + `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cur ~= ARGV[7] then return {'conflict'} end
local gone = convcheck(KEYS[3], ARGV[10])
if gone then return {gone} end
if ARGV[2] ~= '' then
  local prev = redis.call('HGET', KEYS[7], ARGV[2])
  if prev then
    local v = redis.call('GET', KEYS[3] .. 'm' .. prev)
    if v and gt(string.sub(v, 1, 24), ARGV[5]) then
      return {'dup', prev, v}
    end
  end
end
if redis.call('HEXISTS', KEYS[6], ARGV[1]) == 1 then return {'conflict'} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[8], ARGV[9])
local seq = redis.call('INCR', KEYS[4])
local mk = KEYS[3] .. 'm' .. seq
redis.call('SET', mk, ARGV[3] .. ARGV[4])
expireat(mk, ARGV[6])
redis.call('ZADD', KEYS[5], seq, seq)
redis.call('HSET', KEYS[6], ARGV[1], seq .. ':' .. ARGV[2])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[7], ARGV[2], seq) end
return {'ok', seq}`)

	// scriptGetMsg: KEYS conv record, i; ARGV id, H(now). Returns {seq,
	// value} or nil when absent or expired.
	scriptGetMsg = redis.NewScript(luaLib + `
local e = redis.call('HGET', KEYS[2], ARGV[1])
if not e then return false end
local seq = string.match(e, '^(%d+)')
local v = redis.call('GET', KEYS[1] .. 'm' .. seq)
if not v or not gt(string.sub(v, 1, 24), ARGV[2]) then return false end
return {seq, v}`)

	// scriptMsgsAfter: KEYS conv record, q; ARGV after seq, limit,
	// H(now). Returns {more (0/1), seq, value, seq, value, …} of the
	// unexpired messages after the seq.
	scriptMsgsAfter = redis.NewScript(luaLib + `
local limit = tonumber(ARGV[2])
local out = {0}
local start = '(' .. ARGV[1]
local batch = math.max(limit + 1, 32)
while true do
  local seqs = redis.call('ZRANGEBYSCORE', KEYS[2], start, '+inf', 'LIMIT', 0, batch)
  for _, s in ipairs(seqs) do
    local v = redis.call('GET', KEYS[1] .. 'm' .. s)
    if v and gt(string.sub(v, 1, 24), ARGV[3]) then
      if (#out - 1) / 2 >= limit then
        out[1] = 1
        return out
      end
      out[#out + 1] = s
      out[#out + 1] = v
    end
  end
  if #seqs < batch then return out end
  start = '(' .. seqs[#seqs]
end`)

	// scriptDelMsgs: KEYS conv record, q, i, k; ARGV pairs of id,
	// H(ExpiresAt). Deletes each message with its index entries, unless
	// the id now names a message with another expiry. Returns 1 (gone)
	// or 0 (kept) per pair.
	scriptDelMsgs = redis.NewScript(`
local res = {}
for j = 1, #ARGV, 2 do
  local id, exp = ARGV[j], ARGV[j + 1]
  local r = 1
  local e = redis.call('HGET', KEYS[3], id)
  if e then
    local seq, ck = string.match(e, '^(%d+):(.*)$')
    local mk = KEYS[1] .. 'm' .. seq
    local v = redis.call('GET', mk)
    if v and string.sub(v, 1, 24) ~= exp then
      r = 0
    else
      if v then redis.call('DEL', mk) end
      redis.call('ZREM', KEYS[2], seq)
      redis.call('HDEL', KEYS[3], id)
      if ck ~= '' and redis.call('HGET', KEYS[4], ck) == seq then
        redis.call('HDEL', KEYS[4], ck)
      end
    end
  end
  res[#res + 1] = r
end
return res`)

	// scriptUnindexMsgs: KEYS {P x:m}i, {P x:m}e; ARGV quadruples of
	// member, id, conv, gone ('1' also releases the id).
	scriptUnindexMsgs = redis.NewScript(`
for j = 1, #ARGV, 4 do
  redis.call('ZREM', KEYS[2], ARGV[j])
  if ARGV[j + 3] == '1' and redis.call('HGET', KEYS[1], ARGV[j + 1]) == ARGV[j + 2] then
    redis.call('HDEL', KEYS[1], ARGV[j + 1])
  end
end
return 1`)

	// scriptPutAtt: KEYS record, conversations set; ARGV value,
	// PEXPIREAT ms, conversation ids…. Returns 1, or H(ExpiresAt) of the
	// attachment that holds the id.
	scriptPutAtt = redis.NewScript(luaLib + `
if redis.call('SETNX', KEYS[1], ARGV[1]) == 0 then
  return string.sub(redis.call('GET', KEYS[1]), 1, 24)
end
redis.call('DEL', KEYS[2])
expireat(KEYS[1], ARGV[2])
if #ARGV > 2 then
  redis.call('SADD', KEYS[2], unpack(ARGV, 3))
  expireat(KEYS[2], ARGV[2])
end
return 1`)

	// scriptLinkAtt: KEYS record, conversations set; ARGV conv. Adds
	// conv when the attachment exists; the set expires with the record.
	scriptLinkAtt = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
local t = redis.call('PEXPIRETIME', KEYS[1])
if t > 0 then redis.call('PEXPIREAT', KEYS[2], t) end
return 1`)

	// scriptDelAtt: KEYS record, conversations set; ARGV H(ExpiresAt).
	// Deletes both unless the record has another expiry (0).
	scriptDelAtt = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 24) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1`)
)
