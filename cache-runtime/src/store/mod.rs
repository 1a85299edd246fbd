//! Where entries live: the in-process store and Redis, behind one set of
//! operations with the same meaning on both.
//!
//! Every operation takes full names computed by the cache's key layout
//! (`ns:key` for entries, `ns#...` for bookkeeping), so both stores lay out
//! data identically.
//!
//! Race-free fills: every invalidation bumps the namespace's sequence number
//! and leaves a *marker* holding that number on each key and tag it touched
//! (markers live for the fill window). A caller about to load reads the
//! sequence number first (the fill token); a fill is accepted only if no
//! marker on its key or tags is newer than its token. So a value loaded
//! before an invalidation can never be stored after it. On Redis the number
//! also carries an epoch, drawn when the number is created: a server that
//! lost its data (and with it the markers) refuses fills whose token is from
//! before (`redis::new_epoch`).
//!
//! Dependency cascades: an entry that depends on the entry under key `K` is
//! a member of `K`'s *dependents* set (`ns#dependents:K`), filed exactly like a tag
//! member, and its fill checks `K`'s marker. The fill also files it under
//! everything `K` depends on (recorded in `ns#depsof:K` at `K`'s fill), so a
//! chain holds even when an entry in its middle has expired. Every entry an
//! invalidation removes (by key, tag or pattern) gets a marker and has its
//! dependents removed in turn, breadth first, each entry at most once (so
//! cycles end), inside the same step (one Lua script on Redis). A refused
//! fill leaves a marker on its own entry, so a value built from it (loaded
//! in the same stale window) is refused too.

use std::time::Duration;

use bytes::Bytes;

use crate::key::{EntryName, Prefixes};

mod guarded;
pub(crate) mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;

use std::future::Future;

pub(crate) use guarded::Guarded;

use crate::error::Error;

/// What a cache asks of the place its entries live, in the cache's terms.
/// The in-process store and Redis implement it with the same meaning (see
/// the module's description); [`Backend`] is the one a cache chose, and
/// [`Guarded`] the same with the timeout and the breaker.
pub(crate) trait Store {
    /// The entry named `entry` and, for a versioned read, the current
    /// version of `version`; with `idle`, the read extends the entry's life.
    /// The fill token comes with it when the read fetches it anyway.
    fn lookup<'a>(
        &'a self,
        entry: EntryName<'a>,
        version: Option<&'a str>,
        idle: Option<Duration>,
    ) -> impl Future<Output = Result<Lookup, Error>> + Send + 'a;

    /// The fill token of a load that starts after this call (on Redis,
    /// checked against the server's identity: see `epoch`), and whether the
    /// server's identity could be read.
    fn token(&self) -> impl Future<Output = Result<(Token, bool), Error>> + Send;

    /// Stores a value unless an invalidation came after its token (see
    /// [`FillRequest`]); whether it was stored.
    fn fill(&self, req: FillRequest) -> impl Future<Output = Result<bool, Error>> + Send;

    /// One step of an invalidation: the whole plan (`from` = `None`), or the
    /// sets an earlier step left. What it did, and what is left. In process
    /// the first step does everything.
    fn invalidate_step(
        &self,
        plan: &InvalidationPlan,
        from: Option<&Continuation>,
        nonce: &str,
    ) -> impl Future<Output = Result<(Applied, Option<Continuation>), Error>> + Send;

    /// One batch of the entry names matching `pattern`: the next cursor (0
    /// when done) and the names. In process there is nothing to scan (the
    /// invalidation step applies the pattern itself).
    fn scan_step(
        &self,
        pattern: &str,
        cursor: u64,
    ) -> impl Future<Output = Result<(u64, Vec<String>), Error>> + Send;

    /// Takes the lock `name` with `token` for `lease`, unless it is held, or
    /// (on Redis) the entry `unless_exists` is there: 1 taken, 0 held, 2 the
    /// entry exists.
    fn try_lock(
        &self,
        name: &str,
        token: &str,
        lease: Duration,
        unless_exists: Option<&str>,
    ) -> impl Future<Output = Result<u8, Error>> + Send;

    /// Extends a lease still held with `token`.
    fn renew(
        &self,
        name: &str,
        token: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Releases the lock if still held with `token`, and announces the
    /// landing of `entry` on `channel` (if not empty) either way.
    fn unlock(
        &self,
        name: &str,
        token: &str,
        channel: &str,
        entry: &str,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Claims `key` for `ttl`: whether this caller is the first (in process
    /// there is nobody to share with: always).
    fn claim(&self, key: &str, ttl: Duration) -> impl Future<Output = Result<bool, Error>> + Send;
}

/// Where a step of an invalidation starts: the first step runs the whole
/// plan; later ones only drain the sets the previous step left.
#[derive(Debug, Default)]
pub(crate) struct Continuation {
    /// The invalidation's sequence number (markers of later steps).
    pub(crate) seq: u64,
    pub(crate) sets: Vec<String>,
}

/// The store a cache chose. The one place that tells the two apart.
#[derive(Debug)]
pub(crate) enum Backend {
    Memory(memory::MemoryStore),
    #[cfg(feature = "redis")]
    Redis(redis::RedisStore),
}

impl Backend {
    /// Whether the store is out of process (Redis).
    pub(crate) fn is_remote(&self) -> bool {
        !matches!(self, Backend::Memory(_))
    }

    /// A read that is bounded by the timeout without a timer of the
    /// cache's: on Redis, a plain `GET` on a connection that is up (see
    /// `RedisStore::bounded_lookup`); never in process (not timed anyway).
    #[cfg(feature = "redis")]
    pub(crate) fn bounded_lookup<'a>(
        &'a self,
        entry: EntryName<'a>,
        version: Option<&str>,
        idle: Option<Duration>,
    ) -> Option<impl Future<Output = Result<Lookup, Error>> + Send + 'a> {
        match self {
            Backend::Memory(_) => None,
            Backend::Redis(r) => r.bounded_lookup(entry, version, idle),
        }
    }

    #[cfg(not(feature = "redis"))]
    pub(crate) fn bounded_lookup(
        &self,
        _entry: EntryName<'_>,
        _version: Option<&str>,
        _idle: Option<Duration>,
    ) -> Option<std::future::Ready<Result<Lookup, Error>>> {
        None
    }

    /// `memory`, `redis` or `redis-cluster`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "memory",
            #[cfg(feature = "redis")]
            Backend::Redis(r) if r.is_cluster() => "redis-cluster",
            #[cfg(feature = "redis")]
            Backend::Redis(_) => "redis",
        }
    }

    /// The Redis store, for what only Redis does (pub/sub, streams, server
    /// settings).
    #[cfg(feature = "redis")]
    pub(crate) fn as_redis(&self) -> Option<&redis::RedisStore> {
        match self {
            Backend::Redis(r) => Some(r),
            Backend::Memory(_) => None,
        }
    }

    /// The in-process store, if that is the store.
    pub(crate) fn as_memory(&self) -> Option<&memory::MemoryStore> {
        match self {
            Backend::Memory(m) => Some(m),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => None,
        }
    }
}

impl Store for Backend {
    /// Not an `async fn`: the future is the store's own (no state of the
    /// other store's in it), as small as a hit's read can be.
    fn lookup<'a>(
        &'a self,
        entry: EntryName<'a>,
        version: Option<&'a str>,
        idle: Option<Duration>,
    ) -> impl Future<Output = Result<Lookup, Error>> + Send + 'a {
        match self {
            #[cfg(feature = "redis")]
            Backend::Memory(m) => {
                futures_util::future::Either::Left(m.lookup(entry, version, idle))
            }
            #[cfg(not(feature = "redis"))]
            Backend::Memory(m) => m.lookup(entry, version, idle),
            #[cfg(feature = "redis")]
            Backend::Redis(r) => {
                futures_util::future::Either::Right(r.lookup(entry, version, idle))
            }
        }
    }

    async fn token(&self) -> Result<(Token, bool), Error> {
        match self {
            Backend::Memory(m) => m.token().await,
            #[cfg(feature = "redis")]
            Backend::Redis(r) => r.token().await,
        }
    }

    async fn fill(&self, req: FillRequest) -> Result<bool, Error> {
        match self {
            Backend::Memory(m) => Store::fill(m, req).await,
            #[cfg(feature = "redis")]
            Backend::Redis(r) => r.fill(req).await,
        }
    }

    async fn invalidate_step(
        &self,
        plan: &InvalidationPlan,
        from: Option<&Continuation>,
        nonce: &str,
    ) -> Result<(Applied, Option<Continuation>), Error> {
        match self {
            Backend::Memory(m) => m.invalidate_step(plan, from, nonce).await,
            #[cfg(feature = "redis")]
            Backend::Redis(r) => r.invalidate_step(plan, from, nonce).await,
        }
    }

    async fn scan_step(&self, pattern: &str, cursor: u64) -> Result<(u64, Vec<String>), Error> {
        match self {
            Backend::Memory(m) => m.scan_step(pattern, cursor).await,
            #[cfg(feature = "redis")]
            Backend::Redis(r) => r.scan_step(pattern, cursor).await,
        }
    }

    async fn try_lock(
        &self,
        name: &str,
        token: &str,
        lease: Duration,
        unless_exists: Option<&str>,
    ) -> Result<u8, Error> {
        match self {
            Backend::Memory(m) => Store::try_lock(m, name, token, lease, unless_exists).await,
            #[cfg(feature = "redis")]
            Backend::Redis(r) => r.try_lock(name, token, lease, unless_exists).await,
        }
    }

    async fn renew(&self, name: &str, token: &str, lease: Duration) -> Result<bool, Error> {
        match self {
            Backend::Memory(m) => Store::renew(m, name, token, lease).await,
            #[cfg(feature = "redis")]
            Backend::Redis(r) => r.renew(name, token, lease).await,
        }
    }

    async fn unlock(
        &self,
        name: &str,
        token: &str,
        channel: &str,
        entry: &str,
    ) -> Result<bool, Error> {
        match self {
            Backend::Memory(m) => Store::unlock(m, name, token, channel, entry).await,
            #[cfg(feature = "redis")]
            Backend::Redis(r) => r.unlock(name, token, channel, entry).await,
        }
    }

    async fn claim(&self, key: &str, ttl: Duration) -> Result<bool, Error> {
        match self {
            Backend::Memory(m) => m.claim(key, ttl).await,
            #[cfg(feature = "redis")]
            Backend::Redis(r) => r.claim(key, ttl).await,
        }
    }
}

/// What a read found: the stored bytes, if any, the fill token, and the
/// current version of the read's version namespace (0 when it has none).
#[derive(Debug)]
pub(crate) struct Lookup {
    pub(crate) value: Option<Bytes>,
    /// The decoded value kept beside the bytes (in-process only).
    pub(crate) typed: Option<AnyValue>,
    /// The fill token; `None` when the read did not fetch it (a Redis read
    /// fetches the entry alone, and the token only once it is needed: see
    /// `Cache::ensure_token`).
    pub(crate) token: Option<Token>,
    pub(crate) version: u64,
}

/// A fill token: the namespace's sequence number as a caller read it before
/// its loader started, and the store's clock then (Unix ms on Redis, the
/// server's `TIME`; ms since the store started in process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) seq: u64,
    pub(crate) at_ms: u64,
}

/// A decoded value, kept beside its envelope in process so that a hit need
/// not decode it again.
pub(crate) type AnyValue = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// Keeps decoded values beside their bytes in process (in-process store and
/// tier), so that a hit clones the value instead of decoding it. Picked at
/// the expansion site for values that are `Clone + Send + Sync + 'static`.
pub struct Typed<T> {
    pub(crate) pack: fn(&T) -> AnyValue,
    pub(crate) unpack: fn(&(dyn ::std::any::Any + Send + Sync)) -> Option<T>,
}

impl<T> ::std::fmt::Debug for Typed<T> {
    fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
        f.write_str("Typed")
    }
}

impl<T: Clone + Send + Sync + 'static> Typed<T> {
    /// Values kept as `Arc<T>` and cloned out.
    #[inline]
    pub fn cloning() -> Self {
        Typed {
            pack: |v| ::std::sync::Arc::new(v.clone()),
            unpack: |any| any.downcast_ref::<T>().cloned(),
        }
    }
}

/// A tag as the store sees it: the set of its members and its marker. A
/// dependency on a key is the same pair: the key's dependents set and the
/// key's marker.
#[derive(Debug, Clone)]
pub(crate) struct TagNames {
    pub(crate) set: String,
    pub(crate) marker: String,
}

/// A conditional write after a miss.
#[derive(Debug)]
pub(crate) struct FillRequest {
    pub(crate) entry: String,
    pub(crate) marker: String,
    pub(crate) tags: Vec<TagNames>,
    pub(crate) value: Vec<u8>,
    /// The decoded value, for the in-process store to keep beside the bytes.
    pub(crate) typed: Option<AnyValue>,
    /// When the token was read, on the store's clock: the fill is refused
    /// at `window` past it (`None`: not checked, for a plain `set` and the
    /// tier).
    pub(crate) read_at_ms: Option<u64>,
    pub(crate) window: Duration,
    /// `None`: no expiry.
    pub(crate) ttl: Option<Duration>,
    /// Time-to-idle: the entry expires after this long without a read, and
    /// each read (with the same `idle`) extends it, never past `ttl`.
    pub(crate) idle: Option<Duration>,
    pub(crate) token: u64,
    /// Keys of the entries this one depends on. The store files the entry
    /// in the dependents set of each, and of everything they depend on
    /// (the closure recorded at their own fills), and refuses the fill if
    /// any of them was invalidated after the read.
    pub(crate) depends_on: Vec<String>,
    pub(crate) prefixes: Prefixes,
    /// How long a marker left by a refused fill lives.
    pub(crate) marker_ttl: Duration,
    /// A distributed lock to release (and its landing to announce) in the
    /// same step, stored or not.
    pub(crate) release: Option<Release>,
    /// A versioned entry's version key and the version it was read under:
    /// stored only if that is still current, and the key kept alive as
    /// long as the entry.
    pub(crate) version: Option<(String, u64)>,
    /// For an overwrite (not a fill after a miss): where to tell in-process
    /// tiers to drop their copies.
    pub(crate) overwrite: Option<CoherenceChannel>,
}

impl FillRequest {
    /// A fill of `value` under `entry` (its marker `marker`) with `token`:
    /// no tags, dependencies, expiry, window check, lock or version; the
    /// callers set what they need.
    pub(crate) fn new(entry: String, marker: String, value: Vec<u8>, token: u64) -> Self {
        FillRequest {
            entry,
            marker,
            tags: Vec::new(),
            value,
            typed: None,
            read_at_ms: None,
            window: Duration::from_secs(30),
            ttl: None,
            idle: None,
            token,
            depends_on: Vec::new(),
            prefixes: Prefixes::default(),
            marker_ttl: Duration::from_secs(30),
            release: None,
            overwrite: None,
            version: None,
        }
    }

    /// How long the store keeps the entry from now: `ttl`, or `idle` if
    /// that is shorter.
    pub(crate) fn expiry(&self) -> Option<Duration> {
        match (self.ttl, self.idle) {
            (Some(ttl), Some(idle)) => Some(ttl.min(idle)),
            (ttl, idle) => ttl.or(idle),
        }
    }
}

/// Where invalidations are announced to in-process tiers, and who
/// announces them.
#[derive(Debug, Clone, Default)]
pub(crate) struct CoherenceChannel {
    pub(crate) channel: String,
    pub(crate) instance: String,
}

/// What an invalidation did on the store.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub(crate) removed: u64,
    /// Names of the entries removed (Redis only).
    pub(crate) entries: Vec<String>,
    /// Versions bumped, and their new values (Redis only).
    pub(crate) versions: Vec<(String, u64)>,
    /// The sequence number of this invalidation (its markers'): a write
    /// that must not be overwritten by anything older fills with it.
    pub(crate) seq: u64,
    /// The store's clock when it ran (as a token's).
    pub(crate) at_ms: u64,
    /// The `put_checks` that failed (indexes): those puts are not stored.
    pub(crate) conflicts: Vec<usize>,
}

/// A held lock, released by compare-and-delete: only by its own token.
#[derive(Debug, Clone)]
pub(crate) struct Release {
    pub(crate) lock: String,
    pub(crate) token: String,
    /// Where to announce that the entry landed (`''`: nowhere).
    pub(crate) channel: String,
}

/// Keys to delete and tags to invalidate in one step, and events to
/// publish once they are gone.
#[derive(Debug, Clone)]
pub(crate) struct InvalidationPlan {
    /// (entry, marker) pairs.
    pub(crate) keys: Vec<(String, String)>,
    pub(crate) tags: Vec<TagNames>,
    /// Version names to increment (orphaning entries of older versions).
    pub(crate) bumps: Vec<String>,
    /// Patterns of entry names (globs, in full) deleted by this step: they
    /// are kept as pattern markers for the fill window, and a fill whose
    /// name matches one newer than its token is refused. On Redis the step
    /// only records them (the matching entries are removed by scans); in
    /// process it also removes what matches.
    pub(crate) patterns: Vec<String>,
    /// Events to publish once everything is gone: (channel, JSON payload).
    pub(crate) publish: Vec<(String, String)>,
    pub(crate) marker_ttl: Duration,
    /// How to find the marker and dependents of a removed entry; with empty
    /// prefixes nothing cascades.
    pub(crate) prefixes: Prefixes,
    /// Where to announce what was removed ('' channel: nowhere).
    pub(crate) coherence: CoherenceChannel,
    /// Names this invalidation in its coherence message, so the instance
    /// that made it can tell its echo from a lost reply.
    pub(crate) nonce: String,
    /// The most entries one step removes (Redis).
    pub(crate) budget: usize,
    /// Puts taken after a ticket: (the key's marker, the ticket's sequence
    /// number). A key invalidated since its ticket fails its check (in the
    /// step, before the step marks anything), and its put is not stored.
    pub(crate) put_checks: Vec<(String, u64)>,
}

impl Default for InvalidationPlan {
    fn default() -> Self {
        InvalidationPlan {
            keys: Vec::new(),
            tags: Vec::new(),
            bumps: Vec::new(),
            patterns: Vec::new(),
            publish: Vec::new(),
            marker_ttl: Duration::ZERO,
            prefixes: Prefixes::default(),
            coherence: CoherenceChannel::default(),
            nonce: String::new(),
            budget: INVALIDATION_BATCH,
            put_checks: Vec::new(),
        }
    }
}

impl InvalidationPlan {
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.tags.is_empty()
            && self.bumps.is_empty()
            && self.patterns.is_empty()
            && self.publish.is_empty()
    }
}

/// The names that hold a namespace's sequence number: the number, and the
/// `run_id` of the server process its epoch was drawn on (see `epoch`).
#[derive(Debug, Clone)]
pub(crate) struct SeqKeys {
    pub(crate) seq: String,
    pub(crate) srv: String,
    /// The pattern markers, which belong to the number's epoch.
    pub(crate) patterns: String,
}

/// The most members one invalidation call removes by default (tags,
/// cascades, pattern matches): about 0.1 s of server time. Bigger
/// invalidations take several calls (`CacheBuilder::invalidation_batch`).
pub(crate) const INVALIDATION_BATCH: usize = 10_000;

/// The token of a write that no invalidation can refuse (a plain `set`).
pub(crate) const UNCONDITIONAL: u64 = i64::MAX as u64;
