//! The Redis store: one multiplexed, self-reconnecting connection shared by
//! every task, and Lua scripts so that each logical step is one round trip.
//!
//! | step | commands | round trips |
//! |---|---|---|
//! | read | pipeline `GET entry`, `GET seq` | 1 |
//! | fill after a miss | `EVALSHA fill` (check markers, `SET PX`, `SADD` tags) | 1 |
//! | invalidate keys + tags + publish | `EVALSHA invalidate` | 1 |
//! | pattern delete | `SCAN MATCH COUNT` + `UNLINK`, per batch | 1 per batch |
//!
//! `KEYS` is never issued.

use std::time::Duration;

use bytes::Bytes;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{FillRequest, InvalidationPlan, Lookup};
use crate::error::Error;

/// KEYS: entry, tag sets (n), entry marker, tag markers (n).
/// ARGV: token, value, ttl ms (0 = none), n.
const FILL: &str = r#"
local n = tonumber(ARGV[4])
local token = tonumber(ARGV[1])
for i = n + 2, 2 * n + 2 do
  local m = redis.call('GET', KEYS[i])
  if m and tonumber(m) > token then return 0 end
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
for i = 2, n + 1 do
  local existed = redis.call('EXISTS', KEYS[i])
  redis.call('SADD', KEYS[i], KEYS[1])
  if ttl == 0 then
    redis.call('PERSIST', KEYS[i])
  else
    local left = redis.call('PTTL', KEYS[i])
    if existed == 0 or (left >= 0 and left < ttl) then
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
  end
end
return 1
"#;

/// KEYS: seq, entries (k), entry markers (k), tag sets (t), tag markers (t),
/// versions (v).
/// ARGV: k, t, marker ttl ms, channel ('' = none), payload, v.
/// Tag members are removed in batches of 512 (`SPOP`) so no reply or
/// argument list grows with the tag's size.
const INVALIDATE: &str = r#"
local k = tonumber(ARGV[1])
local t = tonumber(ARGV[2])
local mttl = ARGV[3]
local seq = redis.call('INCR', KEYS[1])
local removed = 0
for i = 2, k + 1 do
  removed = removed + redis.call('UNLINK', KEYS[i])
  redis.call('SET', KEYS[i + k], seq, 'PX', mttl)
end
local base = 2 + 2 * k
for i = base, base + t - 1 do
  while true do
    local members = redis.call('SPOP', KEYS[i], 512)
    if #members == 0 then break end
    removed = removed + redis.call('UNLINK', unpack(members))
  end
  redis.call('SET', KEYS[i + t], seq, 'PX', mttl)
end
local vbase = 2 + 2 * k + 2 * t
for i = vbase, vbase + tonumber(ARGV[6]) - 1 do
  redis.call('INCR', KEYS[i])
end
if ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return removed
"#;

pub(crate) struct RedisStore {
    conn: ConnectionManager,
    fill: Script,
    invalidate: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

/// Milliseconds for `PX`: at least 1, and at most a century (Redis refuses
/// expiries past the range of its clock).
fn millis(d: Duration) -> u64 {
    crate::cache::millis(d).clamp(1, 100 * 365 * 86_400_000)
}

impl RedisStore {
    /// Connects lazily: building never waits on Redis, and a Redis that is
    /// down at start-up only means misses until it is back.
    pub(crate) fn new(client: redis::Client, timeout: Duration) -> Result<Self, Error> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(RedisStore {
            conn,
            fill: Script::new(FILL),
            invalidate: Script::new(INVALIDATE),
        })
    }

    pub(crate) async fn lookup(
        &self,
        entry: &str,
        seq: &str,
        version: Option<&str>,
    ) -> Result<Lookup, Error> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(entry).cmd("GET").arg(seq);
        if let Some(version) = version {
            pipe.cmd("GET").arg(version);
            let (value, token, version): (Option<Vec<u8>>, Option<u64>, Option<u64>) =
                pipe.query_async(&mut conn).await?;
            return Ok(Lookup {
                value: value.map(Bytes::from),
                token: token.unwrap_or(0),
                version: version.unwrap_or(0),
            });
        }
        let (value, token): (Option<Vec<u8>>, Option<u64>) = pipe.query_async(&mut conn).await?;
        Ok(Lookup {
            value: value.map(Bytes::from),
            token: token.unwrap_or(0),
            version: 0,
        })
    }

    pub(crate) async fn fill(&self, req: FillRequest) -> Result<bool, Error> {
        let mut inv = self.fill.prepare_invoke();
        inv.key(&req.entry);
        for tag in &req.tags {
            inv.key(&tag.set);
        }
        inv.key(&req.marker);
        for tag in &req.tags {
            inv.key(&tag.marker);
        }
        inv.arg(req.token)
            .arg(&req.value)
            .arg(req.ttl.map_or(0, millis))
            .arg(req.tags.len());
        let mut conn = self.conn.clone();
        let stored: i64 = inv.invoke_async(&mut conn).await?;
        Ok(stored == 1)
    }

    pub(crate) async fn invalidate(
        &self,
        seq: &str,
        plan: &InvalidationPlan,
    ) -> Result<u64, Error> {
        let mut inv = self.invalidate.prepare_invoke();
        inv.key(seq);
        for (entry, _) in &plan.keys {
            inv.key(entry);
        }
        for (_, marker) in &plan.keys {
            inv.key(marker);
        }
        for tag in &plan.tags {
            inv.key(&tag.set);
        }
        for tag in &plan.tags {
            inv.key(&tag.marker);
        }
        for version in &plan.bumps {
            inv.key(version);
        }
        let (channel, payload) = plan
            .publish
            .as_ref()
            .map_or(("", ""), |(c, p)| (c.as_str(), p.as_str()));
        inv.arg(plan.keys.len())
            .arg(plan.tags.len())
            .arg(millis(plan.marker_ttl))
            .arg(channel)
            .arg(payload)
            .arg(plan.bumps.len());
        let mut conn = self.conn.clone();
        let removed: u64 = inv.invoke_async(&mut conn).await?;
        Ok(removed)
    }

    /// One batch of a pattern delete: `SCAN` from `cursor`, `UNLINK` what
    /// matched. Returns the next cursor (0 when done) and how many went.
    pub(crate) async fn delete_pattern_step(
        &self,
        pattern: &str,
        cursor: u64,
    ) -> Result<(u64, u64), Error> {
        let mut conn = self.conn.clone();
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(512)
            .query_async(&mut conn)
            .await?;
        let removed = if keys.is_empty() {
            0
        } else {
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await?
        };
        Ok((next, removed))
    }
}
