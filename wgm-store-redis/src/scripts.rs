//! The server-side Lua scripts. Each runs atomically on the Redis server; the one that
//! writes state ([`APPLY`]) checks everything before its first write, because Redis never
//! rolls a script back.

use redis::Script;

/// Verify an optimistic transaction's read set, then apply its buffered writes.
///
/// `ARGV`, in order (`K` is an index into `KEYS`):
/// - `n`, then `n` checks: `S K PRESENT VALUE` (the string at K is VALUE, or absent when
///   PRESENT is `0`), `H K FIELD PRESENT VALUE` (one hash field), `A K m (FIELD VALUE)*m`
///   (the whole hash holds exactly these m fields);
/// - `t`, then `t` type checks `K TYPE` (the key is absent or of that type: a corrupt key
///   fails the script here, before anything is written);
/// - `w`, then `w` writes: `SET K V`, `DEL K`, `HSET K F V`, `HDEL K F`, `ZADD K SCORE M`,
///   `ZREM K M`, `FEED K SEQKEY MAXLEN SERVER REVISION` (XADD to the change feed, numbered
///   by INCR of SEQKEY).
///
/// Returns `{1}` when it wrote, `{0, i}` when check `i` failed (nothing written).
pub(crate) const APPLY: &str = r"
local i = 1
local function arg()
  local v = ARGV[i]
  i = i + 1
  return v
end
local function key()
  local k = KEYS[tonumber(arg())]
  if not k then return redis.error_reply('wgm: bad key index') end
  return k
end
local n = tonumber(arg())
for c = 1, n do
  local kind = arg()
  local k = key()
  if kind == 'S' then
    local present = arg()
    local want = arg()
    local got = redis.call('GET', k)
    if present == '1' then
      if got ~= want then return {0, c} end
    elseif got then
      return {0, c}
    end
  elseif kind == 'H' then
    local field = arg()
    local present = arg()
    local want = arg()
    local got = redis.call('HGET', k, field)
    if present == '1' then
      if got ~= want then return {0, c} end
    elseif got then
      return {0, c}
    end
  elseif kind == 'A' then
    local m = tonumber(arg())
    local same = redis.call('HLEN', k) == m
    for j = 1, m do
      local field = arg()
      local want = arg()
      if same and redis.call('HGET', k, field) ~= want then same = false end
    end
    if not same then return {0, c} end
  else
    return redis.error_reply('wgm: unknown check ' .. tostring(kind))
  end
end
local t = tonumber(arg())
for c = 1, t do
  local k = key()
  local want = arg()
  local got = redis.call('TYPE', k)['ok']
  if got ~= 'none' and got ~= want then
    return redis.error_reply('wgm: key ' .. k .. ' holds a ' .. got .. ', not a ' .. want)
  end
end
local w = tonumber(arg())
for c = 1, w do
  local op = arg()
  local k = key()
  if op == 'SET' then
    local v = arg()
    redis.call('SET', k, v)
  elseif op == 'DEL' then
    redis.call('DEL', k)
  elseif op == 'HSET' then
    local f = arg()
    local v = arg()
    redis.call('HSET', k, f, v)
  elseif op == 'HDEL' then
    local f = arg()
    redis.call('HDEL', k, f)
  elseif op == 'ZADD' then
    local score = arg()
    local m = arg()
    redis.call('ZADD', k, score, m)
  elseif op == 'ZREM' then
    local m = arg()
    redis.call('ZREM', k, m)
  elseif op == 'FEED' then
    local seqkey = key()
    local maxlen = arg()
    local server = arg()
    local revision = arg()
    local seq = redis.call('INCR', seqkey)
    redis.call('XADD', k, 'MAXLEN', '~', maxlen, '*', 's', server, 'r', revision, 'n', seq)
  else
    return redis.error_reply('wgm: unknown write ' .. tostring(op))
  end
end
return {1}
";

/// A server's body and head (`settings`), with its peer count (`overview`), or with its
/// peers and their statistics (`full`), in one atomic read.
/// `KEYS`: server, heads, peers, stats. `ARGV`: server id, mode.
pub(crate) const READ_SERVER: &str = r"
local body = redis.call('GET', KEYS[1])
if not body then return {} end
local head = redis.call('HGET', KEYS[2], ARGV[1])
if ARGV[2] == 'settings' then return {body, head} end
if ARGV[2] == 'overview' then return {body, head, redis.call('HLEN', KEYS[3])} end
return {body, head, redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4])}
";

/// The head of a server that exists. `KEYS`: server, heads. `ARGV`: server id.
pub(crate) const HEAD: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('HGET', KEYS[2], ARGV[1])
";

/// One peer, by id or through the peer index. `KEYS`: index, peers, stats. `ARGV`: index
/// field (empty: by id), peer id.
pub(crate) const FIND_PEER: &str = r"
local id = ARGV[2]
if ARGV[1] ~= '' then
  id = redis.call('HGET', KEYS[1], ARGV[1])
  if not id then return {} end
end
local body = redis.call('HGET', KEYS[2], id)
if not body then return {} end
return {body, redis.call('HGET', KEYS[3], id)}
";

/// A page of a sorted listing with each member's bodies. `KEYS`: the listing. `ARGV`:
/// prefix, start, stop, mode (`servers`: body, head and peer count of each server, the
/// head from `ARGV[5]`, the heads hash; `users`: each user's body).
pub(crate) const LIST: &str = r"
local members = redis.call('ZRANGE', KEYS[1], ARGV[2], ARGV[3])
local out = {}
for _, m in ipairs(members) do
  local at = string.find(m, '\1', 1, true)
  if not at then return redis.error_reply('wgm: bad listing member') end
  local id = string.sub(m, at + 1)
  if ARGV[4] == 'servers' then
    local body = redis.call('GET', ARGV[1] .. ':server:' .. id)
    local head = redis.call('HGET', ARGV[5], id)
    local count = redis.call('HLEN', ARGV[1] .. ':peers:' .. id)
    table.insert(out, {id, body, head, count})
  else
    table.insert(out, {id, redis.call('GET', ARGV[1] .. ':user:' .. id)})
  end
end
return out
";

/// A body found through an index hash. `KEYS`: the index. `ARGV`: field, body key
/// prefix (the id found is appended).
pub(crate) const BY_INDEX: &str = r"
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return false end
return redis.call('GET', ARGV[2] .. id)
";

/// The bodies of the ids of a hash's fields. `KEYS`: the hash. `ARGV`: body key prefix.
pub(crate) const BODIES_OF_FIELDS: &str = r"
local ids = redis.call('HKEYS', KEYS[1])
local out = {}
for _, id in ipairs(ids) do
  local body = redis.call('GET', ARGV[1] .. id)
  if body then table.insert(out, body) end
end
return out
";

/// Store the allocator state of a revision unless a later one is stored. `KEYS`: the
/// allocator hash. `ARGV`: revision (decimal), body. Revisions compare as decimal text
/// (exact for any `u64`).
pub(crate) const PUT_ALLOCATOR: &str = r"
local cur = redis.call('HGET', KEYS[1], 'revision')
local new = ARGV[1]
if cur then
  if not string.match(cur, '^%d+$') then return redis.error_reply('wgm: bad stored allocator revision') end
  if #cur > #new or (#cur == #new and cur > new) then return 0 end
end
redis.call('HSET', KEYS[1], 'revision', new, 'body', ARGV[2])
return 1
";

/// Update statistics of the server's existing peers, in order. `KEYS`: server, peers,
/// stats. `ARGV`: (peer id, stats JSON)*. Returns 0 when the server does not exist.
pub(crate) const UPDATE_STATS: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local t = redis.call('TYPE', KEYS[3])['ok']
if t ~= 'none' and t ~= 'hash' then return redis.error_reply('wgm: statistics key is a ' .. t) end
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  end
end
return 1
";

/// The position of the change feed: the id of its last entry (`0-0` when empty) and the
/// number of the last entry ever added. `KEYS`: feed, feed sequence.
pub(crate) const FEED_POSITION: &str = r"
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local seq = redis.call('GET', KEYS[2]) or '0'
if #last == 0 then return {'0-0', seq} end
return {last[1][1], seq}
";

/// Record the layout's version unless one is there; return the stored one. `KEYS`:
/// schema. `ARGV`: this build's version.
pub(crate) const SCHEMA: &str = r"
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
";

/// Every script, compiled (their SHA-1 computed) once per store.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) apply: Script,
    pub(crate) read_server: Script,
    pub(crate) head: Script,
    pub(crate) find_peer: Script,
    pub(crate) list: Script,
    pub(crate) by_index: Script,
    pub(crate) bodies_of_fields: Script,
    pub(crate) put_allocator: Script,
    pub(crate) update_stats: Script,
    pub(crate) feed_position: Script,
    pub(crate) schema: Script,
    pub(crate) throttle_read: Script,
    pub(crate) throttle_swap: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            apply: Script::new(APPLY),
            read_server: Script::new(READ_SERVER),
            head: Script::new(HEAD),
            find_peer: Script::new(FIND_PEER),
            list: Script::new(LIST),
            by_index: Script::new(BY_INDEX),
            bodies_of_fields: Script::new(BODIES_OF_FIELDS),
            put_allocator: Script::new(PUT_ALLOCATOR),
            update_stats: Script::new(UPDATE_STATS),
            feed_position: Script::new(FEED_POSITION),
            schema: Script::new(SCHEMA),
            throttle_read: Script::new(crate::throttle::READ),
            throttle_swap: Script::new(crate::throttle::SWAP),
        }
    }
}
