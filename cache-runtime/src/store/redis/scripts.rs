//! The Lua scripts of the Redis store: each logical step of the cache (a
//! fill, an invalidation, a lock operation, a token read) is one script, so
//! one round trip, atomic on the server. What each does is written above
//! it; `store/memory.rs` implements the same semantics in process, and the
//! model test (`tests/integration/model.rs`) holds both to them.

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
///   starts a new epoch (`identity` says which). A new epoch also sets
///   the namespace's `#nodeps` flag (see `nodeps_key`).
/// - `nodeps_key(patk)`: the flag that says no entry of the namespace has
///   been filled with dependencies in this epoch, so no dependents set of
///   this epoch exists and an invalidation walks none. Set when the epoch
///   starts (an entry of an older epoch is never served, so neither are the
///   entries its dependents sets name), deleted by the first fill with a
///   dependency, never set again in the epoch. Missing means "may have
///   dependents": an evicted flag, or a namespace an earlier version
///   started, is walked as before.
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
-- The namespace's key prefix, from its pattern markers' name.
local function keys_of(patk)
  return string.sub(patk, 1, #patk - #'#patterns')
end
local function nodeps_key(patk)
  return keys_of(patk) .. '#nodeps'
end
local function server_seq(seqk, srvk, fresh, patk)
  local id = server_id()
  local cur, was = redis.call('GET', seqk), redis.call('GET', srvk)
  if cur and was == id then return tonumber(cur) end
  redis.call('SET', seqk, fresh)
  redis.call('SET', srvk, id)
  -- Pattern markers are numbered in the old epoch.
  redis.call('DEL', patk)
  redis.call('SET', nodeps_key(patk), 1)
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
/// version the entry was read under, 22 the namespace's pattern markers
/// (and tag tombstones, see `INVALIDATE`), 23 the entry prefix, then the
/// dependency keys (d).
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
pub(super) const FILL: &str = concat!(
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
local patk, eprefix = ARGV[22], ARGV[23]
local tombs = {}
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
  -- A pattern deleted after the token that matches this entry, or a tag
  -- invalidated after it whose tombstone holds this entry (see
  -- `INVALIDATE`; the dependencies are checked against them below).
  local deleted = redis.call('ZRANGEBYSCORE', patk, '(' .. string.format('%.0f', token), '+inf', 'WITHSCORES')
  for i = 1, #deleted, 2 do
    local p, m = deleted[i], tonumber(deleted[i + 1])
    if string.byte(p) == 1 then
      local tomb = string.sub(p, 2)
      if redis.call('ZSCORE', tomb, KEYS[1]) then return refuse(m) end
      tombs[#tombs + 1] = {tomb, m}
    elseif glob(p, KEYS[1]) then
      return refuse(m)
    end
  end
end
if ARGV[20] ~= '' and tonumber(redis.call('GET', ARGV[20]) or '0') ~= tonumber(ARGV[21]) then
  -- Bumped since the read: it would never be served.
  release()
  return 0
end
local deps, seen = {}, {}
for i = 1, d do
  local key = ARGV[23 + i]
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
    for _, tomb in ipairs(tombs) do
      if redis.call('ZSCORE', tomb[1], eprefix .. key) then return refuse(tomb[2]) end
    end
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
  if #deps > 0 then redis.call('DEL', nodeps_key(patk)) end
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
pub(super) const UNLOCK: &str = r#"
local held = redis.call('GET', KEYS[1]) == ARGV[1]
if held then redis.call('DEL', KEYS[1]) end
if ARGV[2] ~= '' then redis.pcall('PUBLISH', ARGV[2], ARGV[3]) end
if held then return 1 end
return 0
"#;

/// KEYS: lock, entry (optional). ARGV: token, lease ms.
/// 2 when the entry is there (it landed since the caller's read), else 1 if
/// the lock was taken, 0 if someone holds it.
pub(super) const LOCK: &str = r#"
if #KEYS > 1 and redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"#;

/// KEYS: lock. ARGV: token, lease ms. Extends a lease still held.
pub(super) const RENEW: &str = r#"
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
/// payloads (2e), published in order at the end, then the fewest members a
/// tag set needs to be removed as a tombstone (see `drain_whole`).
///
/// Members are removed in batches (`ZPOPMIN`: soonest to expire first), and
/// at most `budget` of them per
/// call, so that no call holds the server for long whatever a tag's size:
/// the sets not yet empty are returned, and the caller drains them in
/// further calls under the same sequence number. Markers of the keys and
/// tags are set in the first call, so no fill can slip in meanwhile. Every
/// removed entry gets a marker (or, a tag removed whole in this call, a
/// tombstone for all its members: see `drain_whole`) and its dependents
/// are removed in turn (breadth first, each entry once, so a cycle ends).
/// The names of the removed entries and the bumped versions are published
/// for the in-process tiers, and returned to a caller that has a tier (a
/// nonce given):
/// `{removed, names, version names, version values, seq, sets left, the
/// server's clock, the puts' checks that failed (1-based)}`.
pub(super) const INVALIDATE: &str = concat!(
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
-- No dependents set exists in this epoch (see `nodeps_key`): removed
-- entries are not walked for dependents.
local nodeps = redis.call('GET', nodeps_key(patk)) ~= false
-- Pattern markers: a fill whose name matches one newer than its token is
-- refused. Kept for the marker lifetime after the last, at most 1,000 of
-- them (past that the oldest go, and fills older than what went are
-- refused: the floor).
local patterns = {}
for i = 1, np do
  patterns[#patterns + 1] = ARGV[18 + i]
  redis.call('ZADD', patk, seq, ARGV[18 + i])
end
-- Trims the pattern markers (and tombstones, below) to the newest 1,000.
local function trim_patterns()
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
if np > 0 then trim_patterns() end
-- Puts taken after a ticket (c checks: the key's marker, the ticket): a
-- put whose key was invalidated since its ticket (a concurrent write that
-- may be newer than its value) is not stored. Checked before this step
-- marks anything.
local nc = tonumber(ARGV[19 + np])
local conflicts = {}
-- Whether a big tag invalidated after `since` removed `entry` (its
-- tombstone holds it; the floor, `*`, stands for tombstones trimmed away,
-- so it counts too). Patterns do not: an entry they removed has its marker,
-- as in process.
local function entombed(entry, since)
  local recent = redis.call('ZRANGEBYSCORE', patk, '(' .. string.format('%.0f', since), '+inf')
  for _, p in ipairs(recent) do
    if string.byte(p) == 1 then
      if redis.call('ZSCORE', string.sub(p, 2), entry) then return true end
    elseif p == '*' then
      return true
    end
  end
  return false
end
for i = 1, nc do
  local since = tonumber(ARGV[19 + np + 2 * i])
  local marker = ARGV[18 + np + 2 * i]
  local m = tonumber(redis.call('GET', marker))
  if epoch_of(since) ~= epoch_of(seq) or (m and epoch_of(m) == epoch_of(since) and m > since)
    or entombed(eprefix .. string.sub(marker, #mprefix + 1), since) then
    conflicts[#conflicts + 1] = i
  end
end
-- Markers only move forward: a later step of a big invalidation (an older
-- number) never hides the marker of a newer invalidation of the same name.
-- A marker of another epoch is older than anything of this one.
-- The first step's number was just taken, newer than every marker: it
-- needs no read.
local first = ARGV[14] == ''
local function mark(name)
  if not first then
    local cur = tonumber(redis.call('GET', name))
    if cur and epoch_of(cur) == epoch_of(seq) and cur >= seq then return end
  end
  redis.call('SET', name, seq, 'PX', mttl)
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
  if not nodeps then queue[#queue + 1] = key end
end
-- A big tag set (`ARGV[20 + np + 2 * nc + 2 * e]` members or more) that
-- fits in what is left of the budget is not drained member by member:
-- renamed, it becomes a tombstone, the record of the entries it held, kept
-- for the fill window and registered with the pattern markers (as `\1` and
-- its name), so that a fill of one of them whose token is older than this
-- invalidation is refused by it, as a marker on each would. Its members are
-- removed in batches, and only the members with dependents are walked
-- further (a cascade marks them). Small sets keep a marker per member: a
-- fill checks every tombstone newer than its token, and tombstones share
-- the pattern markers' 1,000 places, so only big invalidations take one.
-- The name, `ns#tomb:seq:` and the set's own kind and name, is one no
-- caller's tag or key can make.
local tombs = 0
local keys_prefix = keys_of(patk)
local least = tonumber(ARGV[20 + np + 2 * nc + 2 * tonumber(ARGV[4])])
local function drain_whole(set)
  local count = redis.call('ZCARD', set)
  if count == 0 then return true end
  if count < least or count > budget - popped then return false end
  local tomb = keys_prefix .. '#tomb:' .. string.format('%.0f', seq) .. ':' .. string.sub(set, #keys_prefix + 2)
  redis.call('RENAME', set, tomb)
  redis.call('PEXPIRE', tomb, mttl)
  redis.call('ZADD', patk, seq, '\1' .. tomb)
  tombs = tombs + 1
  popped = popped + count
  local skip = #eprefix + 1
  for from = 0, count - 1, 512 do
    local members = redis.call('ZRANGE', tomb, from, from + 511)
    removed = removed + redis.call('UNLINK', unpack(members))
    local walk = false
    if eprefix ~= '' and not nodeps then
      local sets = {}
      for i, m in ipairs(members) do sets[i] = dprefix .. string.sub(m, skip) end
      walk = redis.call('EXISTS', unpack(sets)) > 0
    end
    if walk then
      for _, m in ipairs(members) do gone(m) end
    else
      for _, m in ipairs(members) do names[#names + 1] = m end
    end
  end
  return true
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
  if not drain_whole(KEYS[i]) then drain(KEYS[i]) end
end
if tombs > 0 then trim_patterns() end
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
-- Only a caller with an in-process tier (which names its steps: a nonce)
-- drops the names it removed; the others are spared the reply.
if ARGV[12] == '' then names = {} end
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
pub(super) const TOKEN: &str = concat!(
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
pub(super) const READ_IDLE: &str = r#"
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
