//! Per-call options of a cached read, buildable in `const` context so the
//! macros can keep them in a `const` next to each function.

use std::time::Duration;

/// How long a caller waits for another process's loader by default.
pub(crate) const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(3);

/// How long a fail-safe copy answers without the loader being tried again,
/// by default.
pub(crate) const DEFAULT_FAIL_SAFE_THROTTLE: Duration = Duration::from_secs(5);

/// How long an entry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ttl {
    /// The cache's default TTL (see [`CacheBuilder::default_ttl`](crate::CacheBuilder::default_ttl)).
    Default,
    /// This long (before jitter).
    For(Duration),
    /// No expiry. Only when asked for explicitly.
    Forever,
}

/// Options of one cached read: TTL, jitter, negative caching, and the name it
/// is reported under.
///
/// ```
/// use std::time::Duration;
/// use cache_runtime::CacheOptions;
/// const POSTS: CacheOptions = CacheOptions::new("posts").ttl(Duration::from_secs(300)).jitter(0.2);
/// assert_eq!(POSTS.name(), "posts");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub struct CacheOptions {
    name: &'static str,
    ttl: Ttl,
    jitter: Option<f32>,
    cache_none: Option<Duration>,
    stale: Option<Duration>,
    early: Option<f32>,
    max_size: Option<usize>,
    single_flight: bool,
    distributed: bool,
    lock_wait: Option<Duration>,
    local_ttl: Option<Duration>,
    idle: Option<Duration>,
    fail_safe: Option<Duration>,
    fail_safe_throttle: Option<Duration>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions::new("")
    }
}

impl CacheOptions {
    /// Options with the cache's defaults, reported under `name`.
    pub const fn new(name: &'static str) -> Self {
        CacheOptions {
            name,
            ttl: Ttl::Default,
            jitter: None,
            cache_none: None,
            stale: None,
            early: None,
            max_size: None,
            single_flight: true,
            distributed: false,
            lock_wait: None,
            local_ttl: None,
            idle: None,
            fail_safe: None,
            fail_safe_throttle: None,
        }
    }

    /// Entries live for `ttl`, shortened by jitter.
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Ttl::For(ttl);
        self
    }

    /// Entries never expire (they still go when invalidated or evicted).
    pub const fn forever(mut self) -> Self {
        self.ttl = Ttl::Forever;
        self
    }

    /// Shorten each TTL by a random fraction of at most `jitter` (0.0 to
    /// 1.0) instead of the cache's default jitter.
    pub const fn jitter(mut self, jitter: f32) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// Also cache an absent value (`None`) for `ttl`.
    pub const fn cache_none(mut self, ttl: Duration) -> Self {
        self.cache_none = Some(ttl);
        self
    }

    /// Stale-while-revalidate: past its TTL, serve the entry for up to
    /// `window` more while one caller refreshes it; every other caller gets
    /// the stale value without waiting. A refresh that fails (`Err`) serves
    /// the cached value as well.
    pub const fn stale(mut self, window: Duration) -> Self {
        self.stale = Some(window);
        self
    }

    /// Probabilistic early refresh (XFetch, Vattani et al., VLDB 2015): each
    /// hit refreshes with a probability that grows as expiry nears and with
    /// what the value cost to load; `beta` 1.0 is the paper's default, larger
    /// refreshes earlier.
    pub const fn early(mut self, beta: f32) -> Self {
        self.early = Some(beta);
        self
    }

    /// Do not store values whose encoded size exceeds `bytes` (counted as
    /// `oversized`), instead of the cache's limit.
    pub const fn max_size(mut self, bytes: usize) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// Turn single-flight off: concurrent misses of one key each run the
    /// loader. On by default.
    pub const fn single_flight(mut self, on: bool) -> Self {
        self.single_flight = on;
        self
    }

    /// Distributed lock: on a miss, one caller across every process sharing
    /// the Redis store runs the loader (`SET NX PX` with a random token and
    /// a lease renewed while it loads); callers in other processes wait for
    /// the value to land (woken by pub/sub) for at most the
    /// [`lock_wait`](Self::lock_wait) bound, then run the loader themselves.
    /// In this process single-flight still coalesces callers. On the
    /// in-process store single-flight already is the lock.
    pub const fn distributed_lock(mut self) -> Self {
        self.distributed = true;
        self.single_flight = true;
        self
    }

    /// How long a caller waits for another process's loader before running
    /// the loader itself. Default 3 s.
    pub const fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = Some(wait);
        self
    }

    /// Keep this read's entries in the in-process tier (when the cache has
    /// one) for at most `ttl`, below the cache's `local_ttl`.
    pub const fn local_ttl(mut self, ttl: Duration) -> Self {
        self.local_ttl = Some(ttl);
        self
    }

    /// Time-to-idle (sliding expiry): an entry not read for `idle` expires;
    /// each hit extends it by `idle` again, in the same round trip as the
    /// read, but never past its TTL (the hard bound; with
    /// [`forever`](Self::forever), none). Ignored with `stale`, `early` or
    /// `fail_safe`, which act by the TTL. On Redis, reads with `idle` extend the
    /// entry (by the reader's `idle`); in process, every read extends it (by
    /// the `idle` it was stored with): give the functions that read and
    /// write an entry the same `idle`.
    pub const fn idle(mut self, idle: Duration) -> Self {
        // Below a millisecond the store could not express it: no idle.
        self.idle = if idle.as_millis() == 0 {
            None
        } else {
            Some(idle)
        };
        self
    }

    /// Fail-safe: when the loader fails (an `Err`, a panic, or the
    /// hard timeout of [`Cache::get_or_load_within`](crate::Cache::get_or_load_within)) and the entry expired less than
    /// `window` ago, return the expired copy instead of the failure, and
    /// serve it without trying the loader again for the
    /// [`fail_safe_throttle`](Self::fail_safe_throttle). The store keeps
    /// entries `window` past their TTL for this (they are not served as
    /// hits past it). An invalidation removes the copy: a fail-safe never
    /// answers with a value a write has invalidated.
    pub const fn fail_safe(mut self, window: Duration) -> Self {
        self.fail_safe = if window.as_millis() == 0 {
            None
        } else {
            Some(window)
        };
        self
    }

    /// How long a copy served by [`fail_safe`](Self::fail_safe) answers
    /// without the loader being tried again, in this process. Default 5 s.
    pub const fn fail_safe_throttle(mut self, throttle: Duration) -> Self {
        self.fail_safe_throttle = Some(throttle);
        self
    }

    /// The name statistics and traces report this read under.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) fn ttl_choice(&self) -> Ttl {
        self.ttl
    }

    pub(crate) fn jitter_choice(&self) -> Option<f32> {
        self.jitter
    }

    pub(crate) fn none_ttl(&self) -> Option<Duration> {
        self.cache_none
    }

    pub(crate) fn stale_window(&self) -> Option<Duration> {
        self.stale
    }

    pub(crate) fn early_beta(&self) -> Option<f32> {
        self.early
    }

    pub(crate) fn size_limit(&self) -> Option<usize> {
        self.max_size
    }

    pub(crate) fn coalesce(&self) -> bool {
        self.single_flight || self.distributed
    }

    /// The time-to-idle; none with `stale`, `early` or `fail_safe`, which
    /// act by the TTL (the macros refuse the combination).
    pub(crate) fn idle_choice(&self) -> Option<Duration> {
        match (self.stale, self.early, self.fail_safe) {
            (None, None, None) => self.idle,
            _ => None,
        }
    }

    pub(crate) fn local_ttl_choice(&self) -> Option<Duration> {
        self.local_ttl
    }

    pub(crate) fn distributed(&self) -> bool {
        self.distributed
    }

    pub(crate) fn fail_safe_window(&self) -> Option<Duration> {
        self.fail_safe
    }

    pub(crate) fn fail_safe_throttle_choice(&self) -> Duration {
        self.fail_safe_throttle
            .unwrap_or(DEFAULT_FAIL_SAFE_THROTTLE)
    }

    pub(crate) fn lock_wait_bound(&self) -> Duration {
        self.lock_wait.unwrap_or(DEFAULT_LOCK_WAIT)
    }
}
