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
