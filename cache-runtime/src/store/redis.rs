//! The Redis store: one multiplexed, self-reconnecting connection shared by
//! every task, and Lua scripts so that each logical step is one round trip.
//!
//! | step | commands | round trips |
//! |---|---|---|
//! | read (a hit) | `GET entry` (pipelined with `GET version` for versioned reads) | 1 |
//! | the fill token, on a miss, before the loader | `EVALSHA token` (`GET seq`, created if missing) | 1 |
//! | read with a time-to-idle | `EVALSHA read_idle` (`GET`, `PEXPIRE`, `GET seq`) | 1 |
//! | fill after a miss | `EVALSHA fill` (check markers, `SET PX`, `ZADD` tags) | 1 |
//! | invalidate keys + tags + cascades + publish | `EVALSHA invalidate` | 1 per 10,000 entries removed |
//! | pattern delete | `SCAN MATCH COUNT`, then `EVALSHA invalidate` on the batch | 2 per batch |
//!
//! `KEYS` is never issued.
//!
//! On a Redis Cluster every name of a namespace carries the hash tag
//! `{namespace}` (see `key::Layout`), so all of them live in one slot: each
//! script's keys are on one node, and each step above stays one round trip.
//! Pattern scans go to the master that owns that slot.

use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};

use super::{
    Applied, Continuation, FillRequest, InvalidationPlan, Lookup, SeqKeys, Store, Token,
    UNCONDITIONAL,
};
use crate::error::Error;

/// Lua shared by the scripts that read or take sequence numbers:
///
/// - `server_seq(seq, srv, fresh)`: the namespace's sequence number, after
///   checking that it belongs to this server process. `srv` holds the
///   `run_id` the current epoch was drawn on; when the number is missing,
///   or `srv` names another process (a restart from a snapshot, a failover
///   to a replica), the number starts over at `fresh`, a new epoch (see
///   `epoch`), and `srv` is set to this process. Whatever that makes of
///   markers and tokens of the old epoch, they no longer compare. The
///   `run_id` comes from `INFO server`; a user denied `INFO` (an ACL
///   without `+info`) reads it as `?`, and then only a missing number
///   starts a new epoch (`identity` says which).
/// - `now_ms()`: the server's clock (`TIME`), in Unix ms.
macro_rules! prelude {
    () => {
        r#"
if redis.replicate_commands then redis.replicate_commands() end
local identity = 1
local function server_id()
  local info = redis.pcall('INFO', 'server')
  if type(info) ~= 'string' then
    identity = 0
    return '?'
  end
  local at = string.find(info, 'run_id:', 1, true)
  return at and string.sub(info, at + 7, at + 46) or '?'
end
local function server_seq(seqk, srvk, fresh, patk)
  local id = server_id()
  local cur, was = redis.call('GET', seqk), redis.call('GET', srvk)
  if cur and was == id then return tonumber(cur) end
  redis.call('SET', seqk, fresh)
  redis.call('SET', srvk, id)
  -- Pattern markers are numbered in the old epoch.
  redis.call('DEL', patk)
  return tonumber(fresh)
end
-- Redis's own glob (as `SCAN MATCH`): `*`, `?`, `[...]` with `^` and
-- ranges, `\` escapes.
local function glob(p, s)
  local function match(pi, si)
    while pi <= #p do
      local c = string.sub(p, pi, pi)
      if c == '*' then
        while string.sub(p, pi + 1, pi + 1) == '*' do pi = pi + 1 end
        if pi == #p then return true end
        for k = si, #s + 1 do
          if match(pi + 1, k) then return true end
        end
        return false
      elseif si > #s then
        return false
      elseif c == '?' then
        pi, si = pi + 1, si + 1
      elseif c == '[' then
        local j = pi + 1
        local negate = string.sub(p, j, j) == '^'
        if negate then j = j + 1 end
        local ch = string.byte(s, si)
        local found = false
        while j <= #p and string.sub(p, j, j) ~= ']' do
          if string.sub(p, j, j) == '\\' and j < #p then
            j = j + 1
            if string.byte(p, j) == ch then found = true end
            j = j + 1
          elseif string.sub(p, j + 1, j + 1) == '-' and j + 2 <= #p and string.sub(p, j + 2, j + 2) ~= ']' then
            local lo, hi = string.byte(p, j), string.byte(p, j + 2)
            if lo > hi then lo, hi = hi, lo end
            if ch >= lo and ch <= hi then found = true end
            j = j + 3
          else
            if string.byte(p, j) == ch then found = true end
            j = j + 1
          end
        end
        if negate then found = not found end
        if not found then return false end
        pi, si = j + 1, si + 1
      else
        if c == '\\' and pi < #p then
          pi = pi + 1
          c = string.sub(p, pi, pi)
        end
        if c ~= string.sub(s, si, si) then return false end
        pi, si = pi + 1, si + 1
      end
    end
    return si > #s
  end
  return match(1, 1)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function epoch_of(seq)
  return math.floor(seq / 4294967296)
end
"#
    };
}

/// KEYS: entry, tag sets (n), entry marker, tag markers (n), seq, server id
/// (`srv`, see `prelude`), lock (when a lock token is given).
/// ARGV: 1 token, 2 when it was read (server ms; '' = no window check),
/// 3 the fill window ms, 4 value, 5 ttl ms (0 = none), 6 how long the entry
/// itself lives (ms; 0: the ttl; shorter with a time-to-idle, while its tag
/// and dependents sets keep the ttl, since reads extend the entry up to
/// it), 7 n, 8 d, 9 lock token ('' = no lock), 10 landing channel,
/// 11 coherence channel ('' = none: an overwrite publishes the entry's name
/// so that in-process tiers drop their copies), 12 instance, 13 marker ttl
/// ms, 14 key marker prefix, 15 dependents prefix, 16 depends-of prefix,
/// 17 the entry's own depends-of set, 18 a new epoch (`new_epoch`),
/// 19 '1' for a conditional fill ('' for a plain `set`, which nothing
/// refuses), 20 the version key of a versioned entry ('' = none), 21 the
/// version the entry was read under, 22 the namespace's pattern markers,
/// then the dependency keys (d).
///
/// Tag and dependents sets are sorted sets scored by when each member
/// expires (server ms; `+inf` for an entry without expiry): every fill
/// drops the members already expired, so a hot tag whose entries expire
/// holds its live members only, and an invalidation pays only for them.
/// A versioned entry is stored only if its version is still current, and
/// keeps the version key alive at least as long as itself (a version key
/// that expired would start over at 0, and older entries stamped with a
/// low version could match again: none outlives the key).
///
/// A conditional fill is refused if its token is of another epoch than the
/// server's sequence number (checked against the server's identity, see
/// `prelude`), if it comes the fill window or more after its token was
/// read (on the server's clock: the markers it would have to check expire
/// on that clock too), or if a marker on the entry, a tag, a dependency or
/// anything a dependency depends on (transitively, from their depends-of
/// sets) is newer than the token; a fill refused for a marker marks its own
/// entry. A held lock is released by compare-and-delete and the landing
/// announced, whether the value was stored or refused. An overwrite (a
/// coherence channel given) takes a sequence number and publishes it with
/// the entry's name, as an invalidation does.
const FILL: &str = concat!(
    prelude!(),
    r#"
local n, d = tonumber(ARGV[7]), tonumber(ARGV[8])
local token = tonumber(ARGV[1])
local mttl, mprefix, dprefix, oprefix, own = ARGV[13], ARGV[14], ARGV[15], ARGV[16], ARGV[17]
local conditional = ARGV[19] == '1'
local seqk, srvk = KEYS[2 * n + 3], KEYS[2 * n + 4]
local function release()
  if ARGV[9] == '' then return end
  local lock = KEYS[2 * n + 5]
  if redis.call('GET', lock) == ARGV[9] then redis.call('DEL', lock) end
  redis.pcall('PUBLISH', ARGV[10], KEYS[1])
end
local function refuse(m)
  local cur = tonumber(redis.call('GET', KEYS[n + 2]))
  if not cur or epoch_of(cur) ~= epoch_of(m) or cur < m then
    redis.call('SET', KEYS[n + 2], m, 'PX', mttl)
  end
  release()
  return 0
end
-- A marker newer than the token (one of another epoch is older than
-- anything of the token's, which the server's own).
local function newer(m)
  m = tonumber(m)
  return m and epoch_of(m) == epoch_of(token) and m > token
end
local patk = ARGV[22]
local cur = server_seq(seqk, srvk, ARGV[18], patk)
if conditional then
  if epoch_of(cur) ~= epoch_of(token) then
    release()
    return 0
  end
  if ARGV[2] ~= '' and now_ms() - tonumber(ARGV[2]) >= tonumber(ARGV[3]) then
    release()
    return 0
  end
  for i = n + 2, 2 * n + 2 do
    local m = redis.call('GET', KEYS[i])
    if newer(m) then return refuse(tonumber(m)) end
  end
  -- A pattern deleted after the token that matches this entry.
  local deleted = redis.call('ZRANGEBYSCORE', patk, '(' .. string.format('%.0f', token), '+inf', 'WITHSCORES')
  for i = 1, #deleted, 2 do
    if glob(deleted[i], KEYS[1]) then return refuse(tonumber(deleted[i + 1])) end
  end
end
if ARGV[20] ~= '' and tonumber(redis.call('GET', ARGV[20]) or '0') ~= tonumber(ARGV[21]) then
  -- Bumped since the read: it would never be served.
  release()
  return 0
end
local deps, seen = {}, {}
for i = 1, d do
  local key = ARGV[22 + i]
  if not seen[key] then
    seen[key] = true
    deps[#deps + 1] = key
  end
end
local head = 1
while head <= #deps do
  local key = deps[head]
  head = head + 1
  if conditional then
    local m = redis.call('GET', mprefix .. key)
    if newer(m) then return refuse(tonumber(m)) end
  end
  for _, up in ipairs(redis.call('SMEMBERS', oprefix .. key)) do
    if not seen[up] then
      seen[up] = true
      deps[#deps + 1] = up
    end
  end
end
local ttl = tonumber(ARGV[5])
local px = tonumber(ARGV[6])
if px == 0 then px = ttl end
if px > 0 then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', px)
else
  redis.call('SET', KEYS[1], ARGV[4])
end
local now = now_ms()
local score = '+inf'
if ttl > 0 then score = now + ttl end
-- `set` (a tag's members, a key's dependents) lives as long as its
-- longest-lived member, and drops the members that expired.
local function file(set, member)
  local existed = redis.call('EXISTS', set)
  redis.call('ZADD', set, score, member)
  redis.call('ZREMRANGEBYSCORE', set, '-inf', '(' .. now)
  if ttl == 0 then
    redis.call('PERSIST', set)
  else
    local left = redis.call('PTTL', set)
    if existed == 0 or (left >= 0 and left < ttl) then
      redis.call('PEXPIRE', set, ttl)
    end
  end
end
for i = 2, n + 1 do file(KEYS[i], KEYS[1]) end
if own ~= '' then
  redis.call('DEL', own)
  for _, key in ipairs(deps) do
    file(dprefix .. key, KEYS[1])
    redis.call('SADD', own, key)
  end
  if #deps > 0 then
    if ttl > 0 then redis.call('PEXPIRE', own, ttl) end
  end
end
if ARGV[20] ~= '' then
  -- The version key outlives every entry stamped with it.
  local left = redis.call('PTTL', ARGV[20])
  if left == -2 then
    if ttl > 0 then
      redis.call('SET', ARGV[20], 0, 'PX', ttl)
    else
      redis.call('SET', ARGV[20], 0)
    end
  elseif ttl == 0 then
    redis.call('PERSIST', ARGV[20])
  elseif left >= 0 and left < ttl then
    redis.call('PEXPIRE', ARGV[20], ttl)
  end
end
if ARGV[11] ~= '' then
  -- An overwrite takes a sequence number, so that an instance whose tier
  -- misses its message notices (the numbers skip one).
  local s = redis.call('INCR', seqk)
  redis.pcall('PUBLISH', ARGV[11], cjson.encode({i = ARGV[12], k = {KEYS[1]}, s = string.format('%.0f', s)}))
end
release()
return 1
"#
);

/// KEYS: lock. ARGV: token, landing channel ('' = none), entry.
/// Compare-and-delete: a lock whose lease ran out and was taken by another
/// caller is never released by the first.
const UNLOCK: &str = r#"
local held = redis.call('GET', KEYS[1]) == ARGV[1]
if held then redis.call('DEL', KEYS[1]) end
if ARGV[2] ~= '' then redis.pcall('PUBLISH', ARGV[2], ARGV[3]) end
if held then return 1 end
return 0
"#;

/// KEYS: lock, entry (optional). ARGV: token, lease ms.
/// 2 when the entry is there (it landed since the caller's read), else 1 if
/// the lock was taken, 0 if someone holds it.
const LOCK: &str = r#"
if #KEYS > 1 and redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"#;

/// KEYS: lock. ARGV: token, lease ms. Extends a lease still held.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// KEYS: seq, entries (k), entry markers (k), tag sets (t), tag markers (t),
/// versions (v), sets left to drain by an earlier step (s).
/// ARGV: k, t, marker ttl ms, e (events), the server id key (`srv`, see
/// `prelude`), v, entry prefix,
/// key marker prefix, dependents prefix, coherence channel ('' = none),
/// instance, nonce (names this step in its coherence message), budget,
/// seq ('' = a new invalidation: take the next number), s, a new epoch
/// (`new_epoch`: the sequence number's start if it is missing), the
/// namespace's pattern markers, p, the patterns deleted (p, recorded as
/// pattern markers by the first step), c, the puts' checks (c pairs: the
/// key's marker, the put's ticket), then the events' channels and
/// payloads (2e), published in order at the end.
///
/// Members are removed in batches (`ZPOPMIN`: soonest to expire first), and
/// at most `budget` of them per
/// call, so that no call holds the server for long whatever a tag's size:
/// the sets not yet empty are returned, and the caller drains them in
/// further calls under the same sequence number. Markers of the keys and
/// tags are set in the first call, so no fill can slip in meanwhile. Every
/// removed entry gets a marker and its dependents are removed in turn
/// (breadth first, each entry once, so a cycle ends). The names of the
/// removed entries and the bumped versions are published for the
/// in-process tiers and returned:
/// `{removed, names, version names, version values, seq, sets left, the
/// server's clock, the puts' checks that failed (1-based)}`.
const INVALIDATE: &str = concat!(
    prelude!(),
    r#"
local k, t, v, s = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[6]), tonumber(ARGV[15])
local mttl = ARGV[3]
local eprefix, mprefix, dprefix = ARGV[7], ARGV[8], ARGV[9]
local budget = tonumber(ARGV[13])
local seq
local patk, np = ARGV[17], tonumber(ARGV[18])
if ARGV[14] == '' then
  server_seq(KEYS[1], ARGV[5], ARGV[16], patk)
  seq = redis.call('INCR', KEYS[1])
else
  seq = tonumber(ARGV[14])
  -- A later step on a server that changed since (a restart, a failover)
  -- marks in the server's current epoch.
  if epoch_of(server_seq(KEYS[1], ARGV[5], ARGV[16], patk)) ~= epoch_of(seq) then
    seq = redis.call('INCR', KEYS[1])
  end
end
-- Pattern markers: a fill whose name matches one newer than its token is
-- refused. Kept for the marker lifetime after the last, at most 1,000 of
-- them (past that the oldest go, and fills older than what went are
-- refused: the floor).
local patterns = {}
for i = 1, np do
  patterns[#patterns + 1] = ARGV[18 + i]
  redis.call('ZADD', patk, seq, ARGV[18 + i])
end
if np > 0 then
  local over = redis.call('ZCARD', patk) - 1000
  if over > 0 then
    local gone = redis.call('ZRANGE', patk, 0, over - 1, 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', patk, 0, over - 1)
    -- The floor: `*` matches every entry (real patterns start with the
    -- namespace).
    redis.call('ZADD', patk, gone[#gone], '*')
  end
  redis.call('PEXPIRE', patk, mttl)
end
-- Puts taken after a ticket (c checks: the key's marker, the ticket): a
-- put whose key was invalidated since its ticket (a concurrent write that
-- may be newer than its value) is not stored. Checked before this step
-- marks anything.
local nc = tonumber(ARGV[19 + np])
local conflicts = {}
for i = 1, nc do
  local since = tonumber(ARGV[19 + np + 2 * i])
  local m = tonumber(redis.call('GET', ARGV[18 + np + 2 * i]))
  if epoch_of(since) ~= epoch_of(seq) or (m and epoch_of(m) == epoch_of(since) and m > since) then
    conflicts[#conflicts + 1] = i
  end
end
-- Markers only move forward: a later step of a big invalidation (an older
-- number) never hides the marker of a newer invalidation of the same name.
-- A marker of another epoch is older than anything of this one.
local function mark(name)
  local cur = tonumber(redis.call('GET', name))
  if not cur or epoch_of(cur) ~= epoch_of(seq) or cur < seq then
    redis.call('SET', name, seq, 'PX', mttl)
  end
end
local removed, popped = 0, 0
local queue, seen, names, left = {}, {}, {}, {}
local function gone(entry)
  if eprefix == '' or string.sub(entry, 1, #eprefix) ~= eprefix then
    names[#names + 1] = entry
    return
  end
  local key = string.sub(entry, #eprefix + 1)
  if seen[key] then return end
  seen[key] = true
  names[#names + 1] = entry
  mark(mprefix .. key)
  queue[#queue + 1] = key
end
local function drain(set)
  while popped < budget do
    local pairs = redis.call('ZPOPMIN', set, math.min(512, budget - popped))
    if #pairs == 0 then return end
    local members = {}
    for i = 1, #pairs, 2 do members[#members + 1] = pairs[i] end
    popped = popped + #members
    removed = removed + redis.call('UNLINK', unpack(members))
    for _, m in ipairs(members) do gone(m) end
  end
  if redis.call('ZCARD', set) > 0 then left[#left + 1] = set end
end
for i = 2, k + 1 do
  removed = removed + redis.call('UNLINK', KEYS[i])
  mark(KEYS[i + k])
  gone(KEYS[i])
end
local base = 2 + 2 * k
for i = base, base + t - 1 do
  mark(KEYS[i + t])
  drain(KEYS[i])
end
local vnames, vvalues = {}, {}
local vbase = base + 2 * t
for i = vbase, vbase + v - 1 do
  vnames[#vnames + 1] = KEYS[i]
  local existed = redis.call('EXISTS', KEYS[i])
  vvalues[#vvalues + 1] = redis.call('INCR', KEYS[i])
  -- No entry reads a missing version (each keeps its own alive): this one
  -- needs to live only as long as a read racing the bump may fill.
  if existed == 0 then redis.call('PEXPIRE', KEYS[i], mttl) end
end
for i = vbase + v, vbase + v + s - 1 do
  drain(KEYS[i])
end
local head = 1
while head <= #queue do
  drain(dprefix .. queue[head])
  head = head + 1
end
-- Every invalidation announces itself with its sequence number (a string:
-- cjson would round it), even if it removed nothing: an instance whose tier
-- misses a message notices that the numbers skip one. Later steps announce
-- what they removed under the same number.
if ARGV[10] ~= '' and (ARGV[14] == '' or #names > 0 or #vnames > 0) then
  redis.pcall('PUBLISH', ARGV[10], cjson.encode({i = ARGV[11], n = ARGV[12], k = names, vn = vnames, vv = vvalues, p = patterns, s = string.format('%.0f', seq)}))
end
for i = 1, tonumber(ARGV[4]) do
  redis.call('PUBLISH', ARGV[18 + np + 2 * nc + 2 * i], ARGV[19 + np + 2 * nc + 2 * i])
end
return {removed, names, vnames, vvalues, seq, left, now_ms(), conflicts}
"#
);

/// KEYS: seq, server id (`srv`). ARGV: a new epoch (`new_epoch`), the
/// namespace's pattern markers.
///
/// The fill token: the sequence number (checked against the server's
/// identity, and created at the start of a new epoch if the server has
/// none, see `prelude`), the server's clock, and whether the identity
/// could be read: `{seq, ms, 1 or 0}`.
const TOKEN: &str = concat!(
    prelude!(),
    r#"
local seq = server_seq(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
return {seq, now_ms(), identity}
"#
);

/// KEYS: entry, seq, version (optional). ARGV: idle ms, the client's clock
/// (Unix ms).
///
/// A read that extends the entry's life: on a hit, the entry expires `idle`
/// from now, but never past its hard deadline, which is the "fresh until"
/// of its envelope (bytes 4..12, little endian; 0: none). An entry past its
/// deadline is not returned. Returns `{entry, seq, version, server ms}`; the
/// sequence number as stored (the fill script checks it against the server,
/// and a missing one is created by the token read).
const READ_IDLE: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local v = redis.call('GET', KEYS[1])
if v then
  local left = tonumber(ARGV[1])
  if #v >= 24 and string.byte(v, 1) == 202 then
    local hard = 0
    for i = 12, 5, -1 do hard = hard * 256 + string.byte(v, i) end
    if hard > 0 then left = math.min(left, hard - tonumber(ARGV[2])) end
  end
  if left > 0 then
    redis.call('PEXPIRE', KEYS[1], left)
  else
    v = false
  end
end
local version = false
if #KEYS > 2 then version = redis.call('GET', KEYS[3]) end
local t = redis.call('TIME')
return {v, redis.call('GET', KEYS[2]), version, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)}
"#;

/// What a read found: entry, fill token (if read) and version (0 when
/// missing).
fn found(value: Option<Vec<u8>>, token: Option<Token>, version: Option<u64>) -> Lookup {
    Lookup {
        value: value.map(Bytes::from),
        typed: None,
        token,
        version: version.unwrap_or(0),
    }
}

/// The shared connection: one server (reconnecting by itself), or a
/// cluster (routing by slot, following `MOVED`/`ASK`, refreshing its map).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
/// The invalidate script's reply: `{removed, names, version names, version
/// values, seq, sets left}` (parsed by redis-rs: a reply of another shape is
/// an error).
pub(crate) type InvalidateReply = (
    u64,
    Vec<String>,
    Vec<String>,
    Vec<u64>,
    u64,
    Vec<String>,
    u64,
    Vec<usize>,
);

/// The time-to-idle read's reply: the entry's bytes, the sequence number,
/// the version (only when the read has a version namespace), and the
/// server's clock.
pub(crate) type LookupReply = (Option<Vec<u8>>, Option<u64>, Option<u64>, u64);
/// A versioned read's pipelined reply: the entry's bytes and the version.
pub(crate) type VersionedReply = (Option<Vec<u8>>, Option<u64>);

pub(crate) struct RedisStore {
    /// Where the subscriber connects: the server, or each cluster node in
    /// turn (a classic `PUBLISH` reaches every node of a cluster).
    pubsub: Vec<redis::Client>,
    /// The names of the namespace's sequence number.
    seq: SeqKeys,
    conn: Conn,
    fill: Script,
    token: Script,
    read_idle: Script,
    invalidate: Script,
    unlock: Script,
    renew: Script,
    lock: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

/// The first number of a new epoch of the sequence number, for a server
/// that has none, or whose number was written by another server process
/// (see `prelude` and `epoch`): a random epoch in the high bits (under
/// 2^53, exact in Lua), the count of invalidations in the low 32.
///
/// Fill tokens are sequence numbers, checked against markers that only the
/// server's data holds. A read that looked up before Redis lost its data,
/// or rolled it back, and fills after has a token of the old epoch: its
/// fill is refused, where it would otherwise be stored (the markers of the
/// invalidations in between are gone, and the count may be back below the
/// token) and serve a value older than a write that had returned.
fn new_epoch() -> u64 {
    fastrand::u64(1..1 << 20) << 32
}

/// Milliseconds for `PX`: at least 1, and at most a century (Redis refuses
/// expiries past the range of its clock).
fn millis(d: Duration) -> u64 {
    crate::ttl::millis(d).clamp(1, 100 * 365 * 86_400_000)
}

impl RedisStore {
    /// Connects lazily: building never waits on Redis, and a Redis that is
    /// down at start-up only means misses until it is back.
    pub(crate) fn new(
        client: redis::Client,
        timeout: Duration,
        seq: SeqKeys,
    ) -> Result<Self, Error> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(RedisStore::with(Conn::Single(conn), vec![client], seq))
    }

    /// A store on the Redis Cluster reached through `nodes` (any of its
    /// nodes; the rest are discovered). Connects in the background.
    pub(crate) fn cluster(
        nodes: Vec<String>,
        timeout: Duration,
        seq: SeqKeys,
    ) -> Result<Self, Error> {
        let bad = |e| Error::with_source(crate::ErrorKind::Config, "bad Redis Cluster URL", e);
        let client = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .retries(1)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .build()
            .map_err(bad)?;
        let pubsub = nodes
            .iter()
            .map(|url| redis::Client::open(url.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        let config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        let conn = client.get_pending_async_connection_with_config(config);
        Ok(RedisStore::with(Conn::Cluster(conn), pubsub, seq))
    }

    fn with(conn: Conn, pubsub: Vec<redis::Client>, seq: SeqKeys) -> Self {
        RedisStore {
            pubsub,
            seq,
            conn,
            fill: Script::new(FILL),
            token: Script::new(TOKEN),
            read_idle: Script::new(READ_IDLE),
            invalidate: Script::new(INVALIDATE),
            unlock: Script::new(UNLOCK),
            renew: Script::new(RENEW),
            lock: Script::new(LOCK),
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// The shared connection (cheap to clone).
    pub(crate) fn connection(&self) -> Conn {
        self.conn.clone()
    }

    /// The clients the subscriber connects with, tried in turn.
    pub(crate) fn pubsub_clients(&self) -> &[redis::Client] {
        &self.pubsub
    }

    /// The server's `maxmemory` and `maxmemory-policy` (from `INFO memory`,
    /// which an ACL user with `+info` may read; `CONFIG` is not needed).
    /// On a cluster, of the master that holds `slot_key`.
    pub(crate) async fn memory_policy(&self, slot_key: &str) -> Result<(u64, String), Error> {
        let mut info = redis::cmd("INFO");
        info.arg("memory");
        let text: String = match &self.conn {
            Conn::Single(conn) => info.query_async(&mut conn.clone()).await?,
            Conn::Cluster(conn) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(slot_key, SlotAddr::Master);
                let reply = conn
                    .clone()
                    .route_command(
                        info,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                redis::from_redis_value(reply).map_err(redis::RedisError::from)?
            }
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let maxmemory = field("maxmemory").and_then(|v| v.parse().ok()).unwrap_or(0);
        let policy = field("maxmemory_policy").unwrap_or("unknown").to_owned();
        Ok((maxmemory, policy))
    }
}

impl Store for RedisStore {
    /// Reads the entry (and the version). The fill token is read with it
    /// only by the time-to-idle script (which runs anyway); otherwise the
    /// caller reads it on a miss (`seq`).
    async fn lookup(
        &self,
        entry: &str,
        version: Option<&str>,
        idle: Option<Duration>,
    ) -> Result<Lookup, Error> {
        let mut conn = self.conn.clone();
        if let Some(idle) = idle {
            let mut inv = self.read_idle.prepare_invoke();
            inv.key(entry).key(&self.seq.seq);
            if let Some(version) = version {
                inv.key(version);
            }
            inv.arg(millis(idle)).arg(crate::events::now_ms());
            let (value, token, version, at_ms): LookupReply = inv.invoke_async(&mut conn).await?;
            let token = token.map(|seq| Token { seq, at_ms });
            return Ok(found(value, token, version));
        }
        if let Some(version) = version {
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(entry).cmd("GET").arg(version);
            let (value, version): VersionedReply = pipe.query_async(&mut conn).await?;
            return Ok(found(value, None, version));
        }
        let value: Option<Vec<u8>> = redis::cmd("GET").arg(entry).query_async(&mut conn).await?;
        Ok(found(value, None, None))
    }

    /// The namespace's sequence number, checked against the server (and
    /// created, or started over at a new epoch: see `prelude`), with the
    /// server's clock: the token of a fill whose loader starts after this
    /// read.
    /// Also whether the server's identity could be read (see `prelude`).
    async fn token(&self) -> Result<(Token, bool), Error> {
        let mut conn = self.conn.clone();
        let mut inv = self.token.prepare_invoke();
        inv.key(&self.seq.seq)
            .key(&self.seq.srv)
            .arg(new_epoch())
            .arg(&self.seq.patterns);
        let (seq, at_ms, identity): (u64, u64, u8) = inv.invoke_async(&mut conn).await?;
        Ok((Token { seq, at_ms }, identity == 1))
    }

    async fn fill(&self, req: FillRequest) -> Result<bool, Error> {
        let mut inv = self.fill.prepare_invoke();
        inv.key(&req.entry);
        for tag in &req.tags {
            inv.key(&tag.set);
        }
        inv.key(&req.marker);
        for tag in &req.tags {
            inv.key(&tag.marker);
        }
        inv.key(&self.seq.seq).key(&self.seq.srv);
        let (lock, lock_token, channel) = req.release.as_ref().map_or(("", "", ""), |r| {
            (r.lock.as_str(), r.token.as_str(), r.channel.as_str())
        });
        if !lock.is_empty() {
            inv.key(lock);
        }
        let own = match req.entry.strip_prefix(req.prefixes.entry.as_str()) {
            Some(key) if !req.depends_on.is_empty() && !req.prefixes.entry.is_empty() => {
                format!("{}{key}", req.prefixes.depends_of)
            }
            _ => String::new(),
        };
        inv.arg(req.token)
            .arg(req.read_at_ms.map_or(String::new(), |at| at.to_string()))
            .arg(millis(req.window))
            .arg(&req.value)
            .arg(req.ttl.map_or(0, millis))
            .arg(req.expiry().map_or(0, millis))
            .arg(req.tags.len())
            .arg(req.depends_on.len())
            .arg(lock_token)
            .arg(channel)
            .arg(req.overwrite.as_ref().map_or("", |c| c.channel.as_str()))
            .arg(req.overwrite.as_ref().map_or("", |c| c.instance.as_str()))
            .arg(millis(req.marker_ttl))
            .arg(&req.prefixes.key_marker)
            .arg(&req.prefixes.dependents)
            .arg(&req.prefixes.depends_of)
            .arg(own)
            .arg(new_epoch())
            .arg(if req.token == UNCONDITIONAL { "" } else { "1" });
        match &req.version {
            Some((key, stamp)) => inv.arg(key).arg(*stamp),
            None => inv.arg("").arg(0),
        };
        inv.arg(&self.seq.patterns);
        for key in &req.depends_on {
            inv.arg(key);
        }
        let mut conn = self.conn.clone();
        let stored: i64 = inv.invoke_async(&mut conn).await?;
        Ok(stored == 1)
    }

    /// One step of an invalidation: the whole plan (`from` = `None`), or
    /// the sets an earlier step left. Returns what it did and what is left.
    async fn invalidate_step(
        &self,
        plan: &InvalidationPlan,
        from: Option<&Continuation>,
        nonce: &str,
    ) -> Result<(Applied, Option<Continuation>), Error> {
        let mut inv = self.invalidate.prepare_invoke();
        inv.key(&self.seq.seq);
        let first = from.is_none();
        let (keys, tags, bumps) = if first {
            (&plan.keys[..], &plan.tags[..], &plan.bumps[..])
        } else {
            (&[][..], &[][..], &[][..])
        };
        for (entry, _) in keys {
            inv.key(entry);
        }
        for (_, marker) in keys {
            inv.key(marker);
        }
        for tag in tags {
            inv.key(&tag.set);
        }
        for tag in tags {
            inv.key(&tag.marker);
        }
        for version in bumps {
            inv.key(version);
        }
        let sets = from.map_or(&[][..], |c| &c.sets[..]);
        for set in sets {
            inv.key(set);
        }
        let events = if first { &plan.publish[..] } else { &[][..] };
        inv.arg(keys.len())
            .arg(tags.len())
            .arg(millis(plan.marker_ttl))
            .arg(events.len())
            .arg(&self.seq.srv)
            .arg(bumps.len())
            .arg(&plan.prefixes.entry)
            .arg(&plan.prefixes.key_marker)
            .arg(&plan.prefixes.dependents);
        inv.arg(&plan.coherence.channel)
            .arg(&plan.coherence.instance)
            .arg(nonce)
            .arg(plan.budget)
            .arg(from.map_or(String::new(), |c| c.seq.to_string()))
            .arg(sets.len())
            .arg(new_epoch())
            .arg(&self.seq.patterns);
        let patterns = if first { &plan.patterns[..] } else { &[][..] };
        inv.arg(patterns.len());
        for pattern in patterns {
            inv.arg(pattern);
        }
        let checks = if first { &plan.put_checks[..] } else { &[][..] };
        inv.arg(checks.len());
        for (marker, since) in checks {
            inv.arg(marker).arg(*since);
        }
        for (channel, payload) in events {
            inv.arg(channel).arg(payload);
        }
        let mut conn = self.conn.clone();
        let (removed, entries, names, values, seq, left, at_ms, conflicts): InvalidateReply =
            inv.invoke_async(&mut conn).await?;
        let next = (!left.is_empty()).then_some(Continuation { seq, sets: left });
        Ok((
            Applied {
                removed,
                entries,
                versions: names.into_iter().zip(values).collect(),
                seq,
                at_ms,
                conflicts: conflicts.into_iter().map(|i| i - 1).collect(),
            },
            next,
        ))
    }

    /// `SET NX PX`: takes the lock unless someone holds it or `entry` is
    /// there. 1 taken, 0 held by someone, 2 the entry exists.
    async fn try_lock(
        &self,
        name: &str,
        token: &str,
        lease: Duration,
        entry: Option<&str>,
    ) -> Result<u8, Error> {
        let mut conn = self.conn.clone();
        let mut inv = self.lock.prepare_invoke();
        inv.key(name);
        if let Some(entry) = entry {
            inv.key(entry);
        }
        inv.arg(token).arg(millis(lease));
        Ok(inv.invoke_async(&mut conn).await?)
    }

    async fn renew(&self, name: &str, token: &str, lease: Duration) -> Result<bool, Error> {
        let mut conn = self.conn.clone();
        let renewed: i64 = self
            .renew
            .key(name)
            .arg(token)
            .arg(millis(lease))
            .invoke_async(&mut conn)
            .await?;
        Ok(renewed == 1)
    }

    /// Releases the lock if still held with `token`, and announces the
    /// landing of `entry` on `channel` (if not empty) either way.
    async fn unlock(
        &self,
        name: &str,
        token: &str,
        channel: &str,
        entry: &str,
    ) -> Result<bool, Error> {
        let mut conn = self.conn.clone();
        let released: i64 = self
            .unlock
            .key(name)
            .arg(token)
            .arg(channel)
            .arg(entry)
            .invoke_async(&mut conn)
            .await?;
        Ok(released == 1)
    }

    /// `SET key 1 NX PX ttl`: whether this caller is the first.
    async fn claim(&self, key: &str, ttl: Duration) -> Result<bool, Error> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }

    /// One batch of a pattern scan: the next cursor (0 when done) and the
    /// entry names that matched.
    async fn scan_step(&self, pattern: &str, cursor: u64) -> Result<(u64, Vec<String>), Error> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(512);
        match &self.conn {
            Conn::Single(conn) => Ok(scan.query_async(&mut conn.clone()).await?),
            Conn::Cluster(conn) => {
                // The pattern starts with the namespace's hash tag: every
                // name it can match lives on the master of that slot.
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(pattern, SlotAddr::Master);
                let reply = conn
                    .clone()
                    .route_command(
                        scan,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                Ok(redis::from_redis_value(reply).map_err(redis::RedisError::from)?)
            }
        }
    }
}
