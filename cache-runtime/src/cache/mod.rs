//! The [`Cache`] handle: one `Arc` shared by clones, holding the store, the
//! namespace's layout and every piece of state the read and write paths
//! share. The paths themselves live in the submodules:
//!
//! | module | what |
//! |---|---|
//! | `builder` | [`CacheBuilder`]: settings, their checks, the store chosen |
//! | `read` | read-through (`#[cached]`, `get_or_load`): the in-process check, the network path, fills |
//! | `lookup` | one look at the in-process copy or the store: whether it answers, the fill token, the server's epoch |
//! | `freshness` | whether a cached value answers: stale-while-revalidate, early refresh, time-to-idle, versions |
//! | `lock` | the distributed lock and the wait for another process's loader; `try_lock` |
//! | `write` | invalidations and write-through puts: one step per cache, the echo to tiers, pattern deletes |
//! | `invalidation` | the [`Invalidation`](crate::Invalidation) builder |
//! | `outbox` | retrying the invalidations that failed |
//! | `pubsub` | what pub/sub messages do to a cache: tier coherence, events from other services |
//! | `watch` | what a Redis cache checks about its server on its own |

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::codec::Codec;
use crate::error::Error;
use crate::events::InvalidationEvent;
use crate::flight::Flights;
use crate::key::Layout;
use crate::options::{CacheOptions, Ttl};
use crate::stats::{Stats, StatsSnapshot};
use crate::store::{CoherenceChannel, TagNames};
use crate::tier::LocalTier;
use crate::ttl::{millis, with_jitter};

pub(crate) mod batch;
pub(crate) mod builder;
pub(crate) mod fail_safe;
pub(crate) mod freshness;
pub(crate) mod invalidation;
pub(crate) mod lock;
pub(crate) mod lookup;
pub(crate) mod outbox;
#[cfg(feature = "redis")]
pub(crate) mod pubsub;
pub(crate) mod read;
pub(crate) mod reload;
pub(crate) mod remote;
pub(crate) mod soft;
#[cfg(feature = "redis")]
pub(crate) mod watch;
pub(crate) mod write;

pub use builder::CacheBuilder;
pub use lock::LockGuard;
pub(crate) use write::Since;
pub use write::{InvalidationReport, Put, Ticket};

/// A cache: a store, a namespace, and the defaults of every read. Cloning is
/// cheap (one `Arc`); clones share everything.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use cache_runtime::{Cache, CacheOptions};
/// let cache = Cache::in_memory();
/// let opts = CacheOptions::new("answer");
/// let v: Result<u32, std::io::Error> = cache.get_or_load("answer", &opts, || async { Ok(42) }).await;
/// assert_eq!(v.unwrap(), 42);
/// assert_eq!(cache.stats().misses, 1);
/// let v: Result<u32, std::io::Error> = cache.get_or_load("answer", &opts, || async { Ok(0) }).await;
/// assert_eq!(v.unwrap(), 42);
/// assert_eq!(cache.stats().hits, 1);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl AsRef<Cache> for Cache {
    fn as_ref(&self) -> &Cache {
        self
    }
}

/// A cache held weakly, by the tasks a cache starts (the outbox's retries,
/// the inbox, the subscriber's hooks): they never keep a dropped cache
/// alive.
#[derive(Debug, Clone)]
pub(crate) struct WeakCache(std::sync::Weak<Inner>);

impl WeakCache {
    /// The cache, while some handle to it is alive.
    pub(crate) fn upgrade(&self) -> Option<Cache> {
        self.0.upgrade().map(|inner| Cache { inner })
    }
}

#[derive(Debug)]
struct Inner {
    /// The store, behind the timeout and the breaker.
    store: crate::store::Guarded,
    layout: Layout,
    /// Whether the scripts can read the server's identity: 0 not known yet,
    /// 1 yes, 2 denied (an ACL without `+info`).
    identity: std::sync::atomic::AtomicU8,
    /// The server's eviction settings, once read (see `watch`).
    pub(crate) eviction: std::sync::Mutex<Option<crate::health::Eviction>>,
    default_ttl: Duration,
    jitter: f32,
    codec: Codec,
    timeout: Duration,
    fill_window: Duration,
    max_value_size: usize,
    instance: String,
    families: crate::stats::Families,
    outbox: crate::outbox::Outbox,
    /// Events from other services waiting to be applied.
    inbox: crate::inbox::Inbox,
    /// Signs coherence messages: random per cache, whatever `instance` says,
    /// so that replicas never mistake each other's messages for echoes.
    coherence_id: String,
    lock_lease: Duration,
    /// The most entries one invalidation step removes (Redis).
    invalidation_batch: usize,
    stats: Arc<Stats>,
    flights: Flights,
    /// Fail-safe copies answering without their loader for a while.
    fail_safe: fail_safe::Throttle,
    events: broadcast::Sender<InvalidationEvent>,
    /// The in-process tier in front of Redis, if turned on.
    tier: Option<Arc<LocalTier>>,
    /// Apply invalidation events published by other services.
    apply_events: bool,
    /// The pub/sub connection: started at build with a tier or events, else
    /// on the first distributed-lock wait.
    #[cfg(feature = "redis")]
    subscriber: std::sync::OnceLock<crate::subscriber::Subscriber>,
    /// Labels and handles of the metrics (feature `metrics`).
    metrics: Arc<crate::observe::Metrics>,
    /// `Cache::set_enabled`: off, reads bypass the cache.
    enabled: std::sync::atomic::AtomicBool,
}

/// What a cached entry is linked to: the tags it is filed under and the
/// keys of the entries it depends on. Invalidating a tag removes the entry;
/// invalidating (or removing by any means but expiry) an entry it depends on
/// removes it too, transitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Links {
    pub(crate) tags: Vec<String>,
    pub(crate) depends_on: Vec<String>,
    /// `store(false)`: the value is returned but not stored.
    pub(crate) not_stored: bool,
}

impl Links {
    /// No tags, no dependencies.
    pub fn new() -> Self {
        Links::default()
    }

    /// Also file the entry under `tag`.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Also make the entry depend on the entry under `key`.
    pub fn depends_on(mut self, key: impl Into<String>) -> Self {
        self.depends_on.push(key.into());
        self
    }

    /// Tags and dependencies already rendered (what `#[cached]` builds).
    pub fn of(tags: Vec<String>, depends_on: Vec<String>) -> Self {
        Links {
            tags,
            depends_on,
            not_stored: false,
        }
    }

    /// `false`: do not store this value (it is still returned, and handed
    /// to coalesced callers); what `#[cached(unless = ...)]` does. Decided
    /// from the loaded value in `get_or_load_tagged`'s links closure:
    /// `|post| Links::new().store(!post.is_some_and(|p| p.draft))`.
    pub fn store(mut self, on: bool) -> Self {
        self.not_stored = !on;
        self
    }
}

impl From<Vec<String>> for Links {
    fn from(tags: Vec<String>) -> Self {
        Links {
            tags,
            depends_on: Vec::new(),
            not_stored: false,
        }
    }
}

impl Cache {
    /// A builder with the defaults: in-process store, namespace `cache`,
    /// 5 minute TTL, 10% jitter, JSON.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// An in-process cache with the defaults.
    pub fn in_memory() -> Cache {
        Cache::builder()
            .build()
            .expect("the default configuration is valid")
    }

    /// Whether this cache's pub/sub connection is subscribed right now
    /// (always `false` for an in-process cache, and for a Redis cache
    /// without an in-process tier that has not needed one yet). It turns
    /// `true` once the cache has taken the (re)connection in (the tier
    /// cleared of what it held before), and `false` once it has taken the
    /// loss in.
    pub fn listening(&self) -> bool {
        #[cfg(feature = "redis")]
        if let Some(subscriber) = self.inner.subscriber.get() {
            return subscriber.is_listening();
        }
        false
    }

    /// Waits until this cache listens to pub/sub, for at most `wait`;
    /// whether it does. A cache that needs no subscription (in process, or
    /// on Redis with neither an in-process tier nor `apply_events`) is ready
    /// at once. `build()` never waits: call this at start-up when an event
    /// published right after start must not be missed (tests, services that
    /// announce themselves).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = cache_runtime::Cache::in_memory();
    /// assert!(cache.ready(std::time::Duration::from_secs(1)).await);
    /// # }
    /// ```
    pub async fn ready(&self, wait: Duration) -> bool {
        #[cfg(feature = "redis")]
        if let Some(subscriber) = self.inner.subscriber.get() {
            return subscriber.wait_listening(wait).await;
        }
        let _ = wait;
        true
    }

    /// The state of this cache's links right now: see [`Health`](crate::Health).
    pub fn health(&self) -> crate::Health {
        let inner = &*self.inner;
        #[cfg(feature = "redis")]
        let subscriber = inner.subscriber.get();
        #[cfg(feature = "redis")]
        let (listening, last_heard_ms) = subscriber.map_or((false, None), |s| {
            (s.is_listening(), s.last_heard().map(millis))
        });
        #[cfg(not(feature = "redis"))]
        let (listening, last_heard_ms) = (false, None);
        crate::Health {
            store: inner.store.backend().kind(),
            listening,
            last_heard_ms,
            tier_serving: inner.tier.as_ref().map(|tier| tier.trusted()),
            outbox: inner.outbox.len(),
            events_waiting: inner.inbox.len(),
            breaker: inner.store.breaker().state(),
            server_identity: match inner.identity.load(std::sync::atomic::Ordering::Relaxed) {
                1 => Some(true),
                2 => Some(false),
                _ => None,
            },
            eviction: inner
                .eviction
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Whether this instance's in-process tier holds `key` right now (and
    /// may serve it). For tests, benchmarks and debugging; a read does not
    /// need it.
    pub fn in_local_tier(&self, key: &str) -> bool {
        self.inner
            .tier
            .as_ref()
            .is_some_and(|tier| tier.get(&self.inner.layout.entry(key)).is_some())
    }

    /// Whether `other` is a handle to this same cache.
    pub(crate) fn same_as(&self, other: &Cache) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// This cache's namespace.
    pub fn namespace(&self) -> &str {
        self.inner.layout.namespace()
    }

    /// The name this instance signs its events with.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Turns this cache's reads on or off. Off, every read-through call
    /// (`#[cached]`, `get_or_load*`) runs its loader directly: nothing is
    /// read and nothing is stored. Invalidations and puts still run, so
    /// turning it back on never serves an entry that a write made stale
    /// while it was off. See also [`set_enabled`](crate::set_enabled) for
    /// the whole process.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use cache_runtime::{Cache, CacheOptions};
    /// let cache = Cache::in_memory();
    /// cache.set_enabled(false);
    /// let opts = CacheOptions::new("n");
    /// let _: Result<u32, ()> = cache.get_or_load("n", &opts, || async { Ok(1) }).await;
    /// let _: Result<u32, ()> = cache.get_or_load("n", &opts, || async { Ok(2) }).await;
    /// assert_eq!((cache.stats().hits, cache.stats().bypassed), (0, 2));
    /// # }
    /// ```
    pub fn set_enabled(&self, on: bool) {
        self.inner
            .enabled
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this cache's reads are on (its own switch; the process-wide
    /// one is [`enabled`](crate::enabled)).
    pub fn enabled(&self) -> bool {
        self.inner
            .enabled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The counters since the cache was built.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Invalidations made through this instance, counted by key and tag
    /// family (the part before the first `:`).
    pub fn invalidation_counts(&self) -> crate::stats::InvalidationCounts {
        self.inner.families.snapshot()
    }

    pub(crate) fn outbox(&self) -> &crate::outbox::Outbox {
        &self.inner.outbox
    }

    pub(crate) fn inbox(&self) -> &crate::inbox::Inbox {
        &self.inner.inbox
    }

    /// The in-process tier in front of Redis, if there is one.
    pub(crate) fn tier(&self) -> Option<&LocalTier> {
        self.inner.tier.as_deref()
    }

    /// The tier found that it missed coherence messages (and cleared
    /// itself).
    pub(crate) fn lost_messages(&self) {
        Stats::add(&self.inner.stats.coherence_gaps, 1);
        tracing::warn!(target: "cache_runtime", namespace = self.namespace(), "coherence messages were lost; the in-process tier was cleared");
    }

    /// A handle that does not keep the cache alive.
    pub(crate) fn downgrade(&self) -> WeakCache {
        WeakCache(Arc::downgrade(&self.inner))
    }

    pub(crate) fn stats_ref(&self) -> &Stats {
        &self.inner.stats
    }

    pub(crate) fn count_families(&self, keys: &[String], tags: &[String]) {
        self.inner.families.count(keys, tags);
    }

    /// Events of the invalidations this instance published, as they happen.
    pub fn local_events(&self) -> broadcast::Receiver<InvalidationEvent> {
        self.inner.events.subscribe()
    }

    pub(crate) fn is_redis(&self) -> bool {
        self.inner.store.backend().is_remote()
    }

    /// The Redis store, if this cache is on Redis.
    #[cfg(feature = "redis")]
    pub(crate) fn redis_store(&self) -> Option<&crate::store::redis::RedisStore> {
        self.inner.store.backend().as_redis()
    }

    pub(crate) fn inner_eviction(&self) -> &std::sync::Mutex<Option<crate::health::Eviction>> {
        &self.inner.eviction
    }

    /// The store, behind the timeout and the breaker: every call to it
    /// goes through here.
    pub(crate) fn store(&self) -> &crate::store::Guarded {
        &self.inner.store
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    pub(crate) fn user_lock_name(&self, name: &str) -> String {
        self.inner.layout.user_lock(name)
    }

    /// The TTL of one entry: the option's or the default, with jitter;
    /// `None` for entries that never expire.
    pub(crate) fn ttl_for(&self, options: &CacheOptions) -> Option<Duration> {
        let jitter = options.jitter_choice().unwrap_or(self.inner.jitter);
        match options.ttl_choice() {
            Ttl::Default => Some(with_jitter(self.inner.default_ttl, jitter)),
            Ttl::For(ttl) => Some(with_jitter(ttl, jitter)),
            Ttl::Forever => None,
        }
    }

    pub(crate) fn tag_names(&self, tag: &str) -> TagNames {
        TagNames {
            set: self.inner.layout.tag(tag),
            marker: self.inner.layout.tag_marker(tag),
        }
    }

    pub(crate) fn version_name(&self, name: &str) -> String {
        self.inner.layout.version(name)
    }

    pub(crate) fn entry_names(&self, key: &str) -> (String, String) {
        (
            self.inner.layout.entry(key),
            self.inner.layout.key_marker(key),
        )
    }

    /// How long invalidation markers live: the fill window, plus the
    /// longest a fill's own round trip may take after its window closed.
    pub(crate) fn marker_ttl(&self) -> Duration {
        self.inner
            .fill_window
            .saturating_add(self.inner.timeout.saturating_mul(2))
    }

    /// Runs an operation of only one kind of store (pub/sub, streams, the
    /// server's settings) with the timeout and the breaker.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) async fn bounded<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        self.inner.store.call(what, op).await
    }

    pub(crate) fn report(&self, op: &str, error: &Error) {
        Stats::add(&self.inner.stats.store_errors, 1);
        self.inner.metrics.store_error(op);
        tracing::warn!(target: "cache_runtime", op, namespace = self.namespace(), error = %error, "cache store failed; the call goes on without the cache");
    }

    /// Where invalidations are announced to in-process tiers.
    pub(crate) fn coherence(&self) -> CoherenceChannel {
        CoherenceChannel {
            channel: self.inner.layout.coherence_channel(),
            instance: self.inner.coherence_id.clone(),
        }
    }
}
