//! What [`Cache::health`](crate::Cache::health) reports: whether this
//! instance reaches its store, hears invalidations, and has work waiting.

use serde::Serialize;

/// The state of a cache's links right now, for a `/health` endpoint or a
/// dashboard. Nothing in it is an error for callers: cached functions keep
/// answering from their loaders whatever it says.
///
/// ```
/// let cache = cache_runtime::Cache::in_memory();
/// let health = cache.health();
/// assert_eq!(health.store, "memory");
/// assert_eq!(health.outbox, 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// `memory`, `redis` or `redis-cluster`.
    pub store: &'static str,
    /// Whether the pub/sub subscriber is subscribed right now (`false` for
    /// an in-process cache, and for a Redis cache that has none: see the
    /// README on which features need it).
    pub listening: bool,
    /// Milliseconds since the server was last heard from on pub/sub (a
    /// message, or an answered ping as of when it was sent); `None` before
    /// the first time, or without a subscriber.
    pub last_heard_ms: Option<u64>,
    /// Whether the in-process tier answers hits right now: only within
    /// `local_grace` of the last proof of life. `None` without a tier.
    pub tier_serving: Option<bool>,
    /// Invalidations that failed and wait to be retried; while there are
    /// any, this instance reads past the cache (its loaders run).
    pub outbox: usize,
    /// Events from other services waiting to be applied.
    pub events_waiting: usize,
    /// The circuit breaker in front of the store.
    pub breaker: BreakerState,
    /// Whether this cache can tell that its Redis server restarted from a
    /// snapshot or failed over to a replica (its scripts read the server's
    /// `run_id` with `INFO`): `Some(false)` when an ACL denies `INFO` (then
    /// only a server that lost all its data is noticed); `None` before the
    /// first token read, and in process.
    pub server_identity: Option<bool>,
    /// The server's eviction settings, once read (`INFO memory`); `None`
    /// before, when `INFO` is denied, and in process.
    pub eviction: Option<Eviction>,
}

/// A Redis server's eviction settings, and what they mean for race-free
/// fills: the markers that refuse a stale fill are volatile keys with a
/// short TTL, the first that `volatile-ttl` evicts, and any `volatile-*` or
/// `allkeys-*` policy may evict them once `maxmemory` is reached. An
/// evicted marker lets a fill that read before its invalidation through.
/// Race-free fills hold with `maxmemory 0` (no limit) or
/// `maxmemory-policy noeviction` (writes fail when memory is full; the
/// cache reports them and the loader answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Eviction {
    /// `maxmemory`, in bytes (0: no limit).
    pub maxmemory: u64,
    /// `maxmemory-policy`.
    pub policy: String,
    /// Whether the server may evict markers (a limit, and a policy other
    /// than `noeviction`).
    pub evicts_markers: bool,
}

impl Eviction {
    pub(crate) fn new(maxmemory: u64, policy: String) -> Self {
        Eviction {
            evicts_markers: maxmemory > 0 && policy != "noeviction",
            maxmemory,
            policy,
        }
    }
}

/// The circuit breaker in front of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go to the store.
    Closed,
    /// The store failed repeatedly: calls skip it (and the cache) until the
    /// cool-down ends.
    Open,
    /// Cooled down: the next call probes the store.
    Probing,
}
