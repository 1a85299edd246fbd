//! [`CacheBuilder`]: the settings of a cache, their checks (a bad setting is
//! an error from `build`, never a panic), and the store they choose.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::codec::Codec;
use crate::error::{Error, ErrorKind};
use crate::flight::Flights;
use crate::key::{Layout, validate_namespace};
use crate::stats::Stats;
#[cfg(feature = "redis")]
use crate::store::SeqKeys;
use crate::store::memory::MemoryStore;
#[cfg(feature = "redis")]
use crate::store::redis::RedisStore;
use crate::store::{Backend, Guarded};
use crate::tier::LocalTier;

use super::*;

/// Builds a [`Cache`].
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), cache_runtime::Error> {
/// use std::time::Duration;
/// let cache = cache_runtime::Cache::builder()
///     .redis_url("redis://127.0.0.1:6379")
///     .namespace("blog")
///     .default_ttl(Duration::from_secs(600))
///     .timeout(Duration::from_millis(250))
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use]
pub struct CacheBuilder {
    store: StoreChoice,
    namespace: String,
    default_ttl: Duration,
    jitter: f32,
    codec: Codec,
    timeout: Duration,
    fill_window: Duration,
    max_value_size: usize,
    memory_capacity: u64,
    instance: Option<String>,
    lock_lease: Duration,
    local_ttl: Option<Duration>,
    local_capacity: u64,
    local_grace: Duration,
    apply_events: bool,
    invalidation_batch: usize,
}

#[derive(Debug)]
enum StoreChoice {
    Memory,
    #[cfg(feature = "redis")]
    RedisUrl(String),
    #[cfg(feature = "redis")]
    RedisClient(redis::Client),
    #[cfg(feature = "redis")]
    RedisCluster(Vec<String>),
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            store: StoreChoice::Memory,
            namespace: "cache".into(),
            default_ttl: Duration::from_secs(300),
            jitter: 0.1,
            codec: Codec::Json,
            timeout: Duration::from_millis(500),
            fill_window: Duration::from_secs(30),
            max_value_size: 1024 * 1024,
            memory_capacity: 100_000,
            instance: None,
            lock_lease: Duration::from_secs(10),
            local_ttl: None,
            local_capacity: 10_000,
            local_grace: Duration::from_secs(1),
            apply_events: true,
            invalidation_batch: crate::store::INVALIDATION_BATCH,
        }
    }
}

impl CacheBuilder {
    /// Keep entries in this process (the default).
    pub fn in_memory(mut self) -> Self {
        self.store = StoreChoice::Memory;
        self
    }

    /// Keep entries in Redis at `url` (`redis://`, with user and password if
    /// the server needs them). The connection is made lazily and re-made
    /// after failures; [`build`](Self::build) must run inside a Tokio runtime.
    #[cfg(feature = "redis")]
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.store = StoreChoice::RedisUrl(url.into());
        self
    }

    /// Keep entries in Redis through an existing client (for example one
    /// built with `redis::Client::build_with_tls` to trust a private CA).
    #[cfg(feature = "redis")]
    pub fn redis_client(mut self, client: redis::Client) -> Self {
        self.store = StoreChoice::RedisClient(client);
        self
    }

    /// Keep entries in a Redis Cluster reached through `nodes` (URLs of one
    /// or more of its nodes, `redis://` or `rediss://`, with user and
    /// password if needed; the others are discovered).
    ///
    /// All names of the namespace carry the hash tag `{namespace}`, so they
    /// share one slot and every step keeps its single round trip; spread the
    /// load over the cluster's masters with one namespace per service or per
    /// entity family. See ARCHITECTURE.md, "Redis Cluster".
    #[cfg(feature = "redis")]
    pub fn redis_cluster<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.store = StoreChoice::RedisCluster(nodes.into_iter().map(Into::into).collect());
        self
    }

    /// The prefix of every key (`namespace:key`): two applications sharing a
    /// Redis keep apart by using different namespaces. Default `cache`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The TTL of reads that do not name one. Default 5 minutes.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Shorten each TTL by a random fraction of at most `jitter` (0.0 to
    /// 1.0), so entries written together expire apart. Default 0.1.
    pub fn jitter(mut self, jitter: f32) -> Self {
        self.jitter = jitter;
        self
    }

    /// The format values are stored in. Default JSON.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The longest any store operation may take before the cache gives up on
    /// it and the call goes on without the cache. Default 500 ms.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long after an invalidation a fill that read before it is still
    /// recognised and refused; a loader that takes longer than this does not
    /// store its value at all. Default 30 s.
    pub fn fill_window(mut self, window: Duration) -> Self {
        self.fill_window = window;
        self
    }

    /// Values whose encoded size exceeds this are not stored (they are
    /// counted as `oversized`). Default 1 MiB.
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// The most entries the in-process store holds. Default 100,000. The
    /// bound is split evenly over the map's shards (of at least 32 entries
    /// each), and a fill into a full shard makes room by evicting from that
    /// shard (`quick_cache`'s CLOCK-Pro), so eviction may begin a little
    /// before the whole store is full. Expired entries nobody reads keep
    /// their room until a sweep (every 4,096 writes) drops them.
    pub fn memory_capacity(mut self, entries: u64) -> Self {
        self.memory_capacity = entries;
        self
    }

    /// The lease of a `lock = "distributed"` loader's lock: how long the lock
    /// outlives a loader that died. A live loader renews it every third of
    /// the lease. Default 10 s.
    pub fn lock_lease(mut self, lease: Duration) -> Self {
        self.lock_lease = lease;
        self
    }

    /// Turns on the in-process tier in front of Redis: hits are answered from
    /// the process when they can, and an entry lives there at most `ttl`
    /// (and never past its own freshness). Every instance's tier is kept
    /// coherent through Redis pub/sub. No effect on an in-process cache.
    pub fn local_ttl(mut self, ttl: Duration) -> Self {
        self.local_ttl = Some(ttl);
        self
    }

    /// The most entries the in-process tier holds (evicted as in
    /// [`memory_capacity`](Self::memory_capacity)). Default 10,000.
    pub fn local_capacity(mut self, entries: u64) -> Self {
        self.local_capacity = entries;
        self
    }

    /// How long the in-process tier still answers after its pub/sub
    /// connection is lost (it cannot hear invalidations then). Default 1 s.
    pub fn local_grace(mut self, grace: Duration) -> Self {
        self.local_grace = grace;
        self
    }

    /// Whether to apply invalidation events published by other services on
    /// `<namespace>:<event>` (see [`InvalidationEvent`]). Listening needs a
    /// connection of its own, opened at build on Redis caches. Default on.
    pub fn apply_events(mut self, on: bool) -> Self {
        self.apply_events = on;
        self
    }

    /// The most entries one invalidation call to Redis removes (tag
    /// members, cascades, pattern matches). A bigger invalidation runs in
    /// several calls, a round trip each, so that no single call holds the
    /// server for long; its markers are all set by the first, so no stale
    /// fill slips in between. Default 10,000 (about 0.1 s of server time);
    /// at least 1.
    pub fn invalidation_batch(mut self, entries: usize) -> Self {
        self.invalidation_batch = entries.max(1);
        self
    }

    /// The name this instance signs its events with. Default: host name,
    /// process id and a random suffix.
    pub fn instance(mut self, name: impl Into<String>) -> Self {
        self.instance = Some(name.into());
        self
    }

    /// Builds the cache. Fails only on configuration errors (a bad namespace,
    /// jitter or URL, or a Redis store built outside a Tokio runtime); it
    /// never waits for Redis.
    pub fn build(self) -> Result<Cache, Error> {
        validate_namespace(&self.namespace).map_err(Error::config)?;
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::config(format!(
                "jitter must be between 0.0 and 1.0, not {}",
                self.jitter
            )));
        }
        if self.timeout.is_zero() {
            return Err(Error::config("the timeout must be greater than zero"));
        }
        if self.lock_lease < self.timeout.saturating_mul(2) {
            return Err(Error::config(format!(
                "the lock lease ({:?}) must be at least twice the timeout ({:?}), so that a renewal that takes the whole timeout still lands inside the lease",
                self.lock_lease, self.timeout
            )));
        }
        if self.fill_window.is_zero() || self.fill_window > Duration::from_secs(86_400) {
            return Err(Error::config(
                "the fill window must be between zero and one day",
            ));
        }
        #[cfg(feature = "redis")]
        if !matches!(self.store, StoreChoice::Memory)
            && tokio::runtime::Handle::try_current().is_err()
        {
            return Err(Error::config(
                "a Redis-backed cache must be built inside a Tokio runtime (with time enabled, as `#[tokio::main]` does)",
            ));
        }
        #[cfg(feature = "redis")]
        let cluster = matches!(self.store, StoreChoice::RedisCluster(_));
        #[cfg(not(feature = "redis"))]
        let cluster = false;
        let layout = Layout::new(&self.namespace, cluster);
        #[cfg(feature = "redis")]
        let seq = SeqKeys {
            seq: layout.seq(),
            srv: layout.server_id(),
            patterns: layout.prefixes().patterns,
        };
        let backend = match self.store {
            StoreChoice::Memory => Backend::Memory(MemoryStore::new(self.memory_capacity)),
            #[cfg(feature = "redis")]
            StoreChoice::RedisUrl(url) => {
                let client = redis::Client::open(url.as_str()).map_err(|e| {
                    Error::with_source(ErrorKind::Config, format!("bad Redis URL `{url}`"), e)
                })?;
                Backend::Redis(RedisStore::new(client, self.timeout, seq)?)
            }
            #[cfg(feature = "redis")]
            StoreChoice::RedisClient(client) => {
                Backend::Redis(RedisStore::new(client, self.timeout, seq)?)
            }
            #[cfg(feature = "redis")]
            StoreChoice::RedisCluster(nodes) => {
                if nodes.is_empty() {
                    return Err(Error::config("a Redis Cluster needs at least one node URL"));
                }
                Backend::Redis(RedisStore::cluster(nodes, self.timeout, seq)?)
            }
        };
        let instance = self.instance.unwrap_or_else(default_instance_name);
        // Only a Redis cache has a tier in front of it.
        #[cfg(feature = "redis")]
        let tier = match self.local_ttl {
            Some(ttl) if backend.is_remote() => Some(Arc::new(LocalTier::new(
                self.local_capacity,
                ttl,
                self.local_grace,
                self.fill_window
                    .saturating_add(self.timeout.saturating_mul(2)),
            ))),
            _ => None,
        };
        #[cfg(not(feature = "redis"))]
        let tier = None;
        let stats = Arc::new(Stats::default());
        let metrics = Arc::new(crate::observe::Metrics::new(&self.namespace));
        let store = Guarded::new(
            backend,
            self.timeout,
            Arc::clone(&stats),
            Arc::clone(&metrics),
            &self.namespace,
        );
        let cache = Cache {
            inner: Arc::new(Inner {
                store,
                identity: std::sync::atomic::AtomicU8::new(0),
                eviction: std::sync::Mutex::new(None),
                layout,
                default_ttl: self.default_ttl,
                jitter: self.jitter,
                codec: self.codec,
                timeout: self.timeout,
                fill_window: self.fill_window,
                max_value_size: self.max_value_size,
                instance,
                families: crate::stats::Families::default(),
                outbox: crate::outbox::Outbox::default(),
                inbox: crate::inbox::Inbox::default(),
                metrics,
                coherence_id: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
                lock_lease: self.lock_lease,
                invalidation_batch: self.invalidation_batch,
                stats,
                flights: Flights::default(),
                fail_safe: Default::default(),
                events: broadcast::channel(256).0,
                tier,
                apply_events: self.apply_events,
                #[cfg(feature = "redis")]
                subscriber: std::sync::OnceLock::new(),
                enabled: std::sync::atomic::AtomicBool::new(true),
            }),
        };
        #[cfg(feature = "redis")]
        if cache.is_redis() {
            cache.start_eviction_check();
            if cache.inner.tier.is_some() || self.apply_events {
                let _ = cache.subscriber();
            }
        }
        Ok(cache)
    }
}

fn default_instance_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Any duration, weighted towards the edges: zero, a nanosecond, the
    /// largest there is, and what a `u64` of milliseconds holds.
    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::from_nanos(1)),
            Just(Duration::MAX),
            Just(Duration::from_millis(u64::MAX)),
            (0u64..100_000).prop_map(Duration::from_millis),
            any::<u64>().prop_map(Duration::from_secs),
        ]
    }

    proptest! {
        #![proptest_config(crate::fuzz_tests::config(64))]

        /// Whatever durations it is given, the builder answers with a cache
        /// or an error, and the cache it builds serves, stores and
        /// invalidates without panicking.
        #[test]
        fn extreme_settings_never_panic(
            timeout in duration(),
            window in duration(),
            lease in duration(),
            ttl in duration(),
            local in duration(),
            grace in duration(),
            per_read in duration(),
            jitter in 0.0f32..=1.0,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let configure = |b: CacheBuilder| {
                    b.timeout(timeout)
                        .fill_window(window)
                        .lock_lease(lease)
                        .default_ttl(ttl)
                        .local_ttl(local)
                        .local_grace(grace)
                        .jitter(jitter)
                };
                let options = CacheOptions::new("edge").ttl(per_read).local_ttl(per_read);
                if let Ok(cache) = configure(Cache::builder()).build() {
                    let v: Result<u8, ()> = cache.get_or_load("k", &options, || async { Ok(1) }).await;
                    assert_eq!(v, Ok(1));
                    cache.put("k", &2u8, &options, Links::new().tag("t")).await.unwrap();
                    cache.invalidate().tag("t").await.unwrap();
                    let _ = cache.get::<u8>("k").await;
                }
                #[cfg(feature = "redis")]
                if let Ok(cache) = configure(Cache::builder().redis_url("redis://127.0.0.1:1/")).build() {
                    let v: Result<u8, ()> = cache.get_or_load("k", &options, || async { Ok(1) }).await;
                    assert_eq!(v, Ok(1));
                }
            });
        }
    }

    #[test]
    fn configuration_errors_are_errors_not_panics() {
        let kind = |b: CacheBuilder| b.build().unwrap_err().kind();
        assert_eq!(kind(Cache::builder().namespace("a:b")), ErrorKind::Config);
        assert_eq!(kind(Cache::builder().jitter(1.5)), ErrorKind::Config);
        assert_eq!(
            kind(Cache::builder().timeout(Duration::ZERO)),
            ErrorKind::Config
        );
        #[cfg(feature = "redis")]
        {
            // No Tokio runtime here: refused, not a panic inside redis-rs.
            assert_eq!(
                kind(Cache::builder().redis_url("redis://127.0.0.1:1/")),
                ErrorKind::Config
            );
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                assert_eq!(
                    kind(Cache::builder().redis_url("not a url")),
                    ErrorKind::Config
                );
                assert!(
                    Cache::builder()
                        .redis_url("redis://127.0.0.1:1/")
                        .build()
                        .is_ok(),
                    "building never connects"
                );
            });
        }
    }
}
