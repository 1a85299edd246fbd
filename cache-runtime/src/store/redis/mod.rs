//! The Redis store: one multiplexed, self-reconnecting connection shared by
//! every task, and Lua scripts so that each logical step is one round trip.
//!
//! | step | commands | round trips |
//! |---|---|---|
//! | read (a hit) | `GET entry` (pipelined with `GET version` for versioned reads) | 1 |
//! | batch read | `MGET entry...` | 1 |
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
use futures_util::future::{BoxFuture, Either, FutureExt};
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};

use super::{
    Applied, Continuation, FillRequest, InvalidationPlan, Lookup, SeqKeys, Store, Token,
    UNCONDITIONAL,
};
use crate::error::Error;
use crate::key::EntryName;

mod coalesce;
mod link;
mod scripts;

pub(crate) use link::Link;
use scripts::{FILL, INVALIDATE, LOCK, READ_IDLE, RENEW, TOKEN, UNLOCK};

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

/// The shared connection: one server (reconnecting by itself, see
/// [`Link`]), or a cluster (routing by slot, following `MOVED`/`ASK`,
/// refreshing its map).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(Link),
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
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let conn = Link::new(client.clone(), config, timeout);
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

impl RedisStore {
    /// A read with a version or `idle` (a pipeline, or the time-to-idle
    /// script): boxed, so that the plain `GET` of a hit stays a small future.
    fn lookup_more<'a>(
        &'a self,
        entry: EntryName<'a>,
        version: Option<&'a str>,
        idle: Option<Duration>,
    ) -> BoxFuture<'a, Result<Lookup, Error>> {
        async move {
            let mut conn = self.conn.clone();
            if let Some(idle) = idle {
                let mut inv = self.read_idle.prepare_invoke();
                inv.key(entry).key(&self.seq.seq);
                if let Some(version) = version {
                    inv.key(version);
                }
                inv.arg(millis(idle)).arg(crate::events::now_ms());
                let (value, token, version, at_ms): LookupReply =
                    inv.invoke_async(&mut conn).await?;
                let token = token.map(|seq| Token { seq, at_ms });
                return Ok(found(value, token, version));
            }
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(entry).cmd("GET").arg(version);
            let (value, version): VersionedReply = pipe.query_async(&mut conn).await?;
            Ok(found(value, None, version))
        }
        .boxed()
    }

    /// A plain read (one `GET`) on the connection if it is up now: bounded
    /// by the connection's own response timeout, so the caller need not
    /// time it (`store::Guarded`). `None` on a cluster, for a read with a
    /// version or `idle`, or with no connection up.
    pub(crate) fn bounded_lookup<'a>(
        &'a self,
        entry: EntryName<'a>,
        version: Option<&str>,
        idle: Option<Duration>,
    ) -> Option<impl Future<Output = Result<Lookup, Error>> + Send + 'a> {
        let Conn::Single(link) = &self.conn else {
            return None;
        };
        if version.is_some() || idle.is_some() {
            return None;
        }
        let mut up = link.up()?;
        Some(async move {
            // Sized for its two arguments (the name written straight in):
            // no reallocation.
            let mut cmd = Cmd::with_capacity(2, 3 + entry.len());
            cmd.arg("GET").arg(entry);
            // Through the connection's boxed request (as a plain `GET`
            // on the connection is): a hit's future stays small.
            let reply = up.request(&cmd).await;
            up.check(link, &reply);
            link.keep(up);
            let value: Option<Vec<u8>> =
                redis::from_redis_value(reply?).map_err(redis::RedisError::from)?;
            Ok(found(value, None, None))
        })
    }

    /// Several entries in one round trip: one `MGET` (on a cluster every
    /// entry of a namespace is in one slot, so it is one node's command).
    pub(crate) async fn get_many(&self, entries: &[String]) -> Result<Vec<Option<Bytes>>, Error> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(entries)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(values.into_iter().map(|v| v.map(Bytes::from)).collect())
    }

    /// The entry alone: one `GET`.
    async fn get(&self, entry: EntryName<'_>) -> Result<Lookup, Error> {
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(entry)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(found(value, None, None))
    }
}

/// The fewest members a tag's set needs to be removed as a tombstone rather
/// than with a marker per member (see `INVALIDATE`): a fill checks every
/// tombstone newer than its token, so only big invalidations take one.
const TOMBSTONE_FROM: usize = 256;

impl Store for RedisStore {
    /// Reads the entry (and the version). The fill token is read with it
    /// only by the time-to-idle script (which runs anyway); otherwise the
    /// caller reads it on a miss (`seq`).
    fn lookup<'a>(
        &'a self,
        entry: EntryName<'a>,
        version: Option<&'a str>,
        idle: Option<Duration>,
    ) -> impl Future<Output = Result<Lookup, Error>> + Send + 'a {
        match (version, idle) {
            (None, None) => Either::Left(self.get(entry)),
            _ => Either::Right(self.lookup_more(entry, version, idle)),
        }
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
        inv.arg(&self.seq.patterns).arg(&req.prefixes.entry);
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
        inv.arg(TOMBSTONE_FROM);
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
