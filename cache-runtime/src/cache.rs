//! The [`Cache`] handle, its [builder](CacheBuilder), and the read-through
//! path every cached call takes.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::broadcast;

use bytes::Bytes;

use crate::__private::Typed;
use crate::codec::Codec;
use crate::entry::{self, Meta};
use crate::error::{Error, ErrorKind};
use crate::events::InvalidationEvent;
use crate::events::now_ms;
use crate::flight::{self, Flights, Landed, Role, Sharer};
use crate::invalidation::Invalidation;
use crate::key::{Layout, validate_namespace};
use crate::lock::{Attempt, LockGuard};
use crate::observe::Source;
use crate::options::{CacheOptions, Ttl};
use crate::shape::{Fill, Plain, Res, Shape};
use crate::stats::{Stats, StatsSnapshot};
use crate::status::CacheStatus;
use crate::store::memory::MemoryStore;
use crate::store::memory::Shared;
use crate::store::{
    AnyValue, Applied, CoherenceChannel, FillRequest, InvalidationPlan, Lookup, SeqKeys, TagNames,
    Token, UNCONDITIONAL,
};
use crate::switch::Mode;
use crate::tier::LocalTier;
use crate::ttl::with_jitter;

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
pub(crate) enum Backend {
    Memory(MemoryStore),
    #[cfg(feature = "redis")]
    Redis(crate::store::redis::RedisStore),
}

impl Backend {
    /// Whether names must share one hash slot (a Redis Cluster).
    fn is_cluster(&self) -> bool {
        match self {
            Backend::Memory(_) => false,
            #[cfg(feature = "redis")]
            Backend::Redis(r) => r.is_cluster(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    backend: Backend,
    layout: Layout,
    /// The names of the sequence number (and its server's id).
    seq_keys: SeqKeys,
    /// What this instance knows of the server's epoch (Redis; see `epoch`).
    epoch: crate::epoch::Known,
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
    breaker: crate::breaker::Breaker,
    /// Signs coherence messages: random per cache, whatever `instance` says,
    /// so that replicas never mistake each other's messages for echoes.
    coherence_id: String,
    lock_lease: Duration,
    /// The most entries one invalidation step removes (Redis).
    invalidation_batch: usize,
    stats: Stats,
    flights: Flights,
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
    metrics: crate::observe::Metrics,
    /// `Cache::set_enabled`: off, reads bypass the cache.
    enabled: std::sync::atomic::AtomicBool,
}

/// One cached read: the key, its options, the version namespace it belongs
/// to, and how to hand a non-stored outcome to coalesced callers.
#[derive(Debug)]
pub(crate) struct Read<'a, R, T> {
    pub(crate) key: String,
    pub(crate) options: &'a CacheOptions,
    pub(crate) version: Option<String>,
    pub(crate) share: Option<Sharer<R>>,
    /// How to keep the stored value decoded in process (`T` is the stored
    /// part of `R`).
    pub(crate) typed: Option<Typed<T>>,
}

impl<'a, R, T> Read<'a, R, T> {
    pub(crate) fn new(key: String, options: &'a CacheOptions) -> Self {
        Read {
            key,
            options,
            version: None,
            share: None,
            typed: None,
        }
    }
}

/// The future of a cached read: a hit is ready at once (found before the
/// future was made); a miss is the boxed network path.
pub(crate) enum ReadThrough<R, F> {
    Hit(Option<R>),
    Miss(std::pin::Pin<Box<F>>),
}

// Never pinned structurally: the value is moved out, the miss is boxed.
impl<R, F> Unpin for ReadThrough<R, F> {}

impl<R, F: Future<Output = R>> Future for ReadThrough<R, F> {
    type Output = R;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<R> {
        match &mut *self {
            ReadThrough::Hit(value) => {
                std::task::Poll::Ready(value.take().expect("a ready read polled after completion"))
            }
            ReadThrough::Miss(miss) => miss.as_mut().poll(cx),
        }
    }
}

/// A caller's wait for another process's loader, across re-reads.
#[derive(Default)]
struct LockWait {
    deadline: Option<Instant>,
    #[cfg(feature = "redis")]
    landings: Option<broadcast::Receiver<String>>,
    waited: bool,
}

/// What the distributed lock says a flight leader does next.
enum Step {
    /// Load: with the lock, or without it (the store failed or the wait
    /// reached its bound).
    Load(Option<LockGuard>),
    /// Read again: the entry landed, or may have.
    ReadAgain,
}

/// Whether a cached value may be returned as it is.
enum Freshness {
    Fresh,
    /// Past its TTL, within the stale window.
    Stale,
    /// Fresh, but picked for an early refresh.
    RefreshEarly,
}

fn freshness(meta: &Meta, options: &CacheOptions) -> Freshness {
    // Without a refresh policy the store expires the entry at its TTL (and
    // the tier never keeps it past that): no clock needed.
    if meta.fresh_until_ms == 0
        || (options.stale_window().is_none() && options.early_beta().is_none())
    {
        return Freshness::Fresh;
    }
    let now = now_ms();
    if now >= meta.fresh_until_ms {
        // Without a stale window the store expires the entry at its TTL; a
        // value read a moment after is still the one the TTL allowed.
        return if options.stale_window().is_some() {
            Freshness::Stale
        } else {
            Freshness::Fresh
        };
    }
    if let Some(beta) = options.early_beta() {
        // XFetch: refresh when now - cost * beta * ln(U) >= expiry, U in (0, 1].
        let u = 1.0 - fastrand::f64();
        let ahead = -(f64::from(meta.cost_ms.max(1)) * f64::from(beta) * u.ln());
        if now as f64 + ahead >= meta.fresh_until_ms as f64 {
            return Freshness::RefreshEarly;
        }
    }
    Freshness::Fresh
}

thread_local! {
    /// The entry name of an in-process lookup, reused across calls.
    static ENTRY_NAME: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// The value kept decoded beside the bytes, else the bytes decoded; `None`
/// (not reported) when neither works.
fn decode_quietly<T: DeserializeOwned>(
    bytes: &[u8],
    kept: Option<&AnyValue>,
    typed: Option<&Typed<T>>,
) -> Option<(Meta, T)> {
    let env = entry::decode(bytes).ok()?;
    if let (Some(kept), Some(typed)) = (kept, typed)
        && let Some(value) = (typed.unpack)(&**kept)
    {
        return Some((env.meta, value));
    }
    env.codec
        .decode::<T>(env.payload)
        .ok()
        .map(|v| (env.meta, v))
}

/// What a leader lands for a value it does not store: the whole value for
/// types that can be shared (with the leader's token: a waiter whose own
/// token is newer does not take it), else `Retry`.
fn shared<R>(share: Option<&Sharer<R>>, value: &R, token: Option<(Token, u64)>) -> Landed {
    match (share, token) {
        (Some(s), Some((token, _))) => Landed::Shared((s.pack)(value), token.seq),
        _ => Landed::Retry,
    }
}

/// How much longer an entry is fresh (`None`: it does not expire).
fn fresh_for(meta: &Meta) -> Option<Duration> {
    (meta.fresh_until_ms != 0)
        .then(|| Duration::from_millis(meta.fresh_until_ms.saturating_sub(now_ms())))
}

/// How long the in-process tier may keep an entry: while it is fresh, and
/// no longer than the read's `local_ttl` (the tier caps it at its own) or
/// half its time-to-idle (the Redis entry lives `idle` from the read that
/// filled the tier, so a hot entry is read from Redis again, and extended
/// there, before it expires).
fn local_for(meta: &Meta, options: &CacheOptions) -> Option<Duration> {
    [
        options.local_ttl_choice(),
        options.idle_choice().map(|i| i / 2),
    ]
    .into_iter()
    .flatten()
    .fold(fresh_for(meta), |bound, d| {
        Some(bound.map_or(d, |b| b.min(d)))
    })
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

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

    /// The most entries the in-process store holds. Default 100,000.
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

    /// The most entries the in-process tier holds. Default 10,000.
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
        let backend = match self.store {
            StoreChoice::Memory => Backend::Memory(MemoryStore::new(self.memory_capacity)),
            #[cfg(feature = "redis")]
            StoreChoice::RedisUrl(url) => {
                let client = redis::Client::open(url.as_str()).map_err(|e| {
                    Error::with_source(ErrorKind::Config, format!("bad Redis URL `{url}`"), e)
                })?;
                Backend::Redis(crate::store::redis::RedisStore::new(client, self.timeout)?)
            }
            #[cfg(feature = "redis")]
            StoreChoice::RedisClient(client) => {
                Backend::Redis(crate::store::redis::RedisStore::new(client, self.timeout)?)
            }
            #[cfg(feature = "redis")]
            StoreChoice::RedisCluster(nodes) => {
                if nodes.is_empty() {
                    return Err(Error::config("a Redis Cluster needs at least one node URL"));
                }
                Backend::Redis(crate::store::redis::RedisStore::cluster(
                    nodes,
                    self.timeout,
                )?)
            }
        };
        let layout = Layout::new(&self.namespace, backend.is_cluster());
        let instance = self.instance.unwrap_or_else(default_instance_name);
        // Only a Redis cache has a tier in front of it.
        #[cfg(feature = "redis")]
        let tier = match (&backend, self.local_ttl) {
            (Backend::Redis(_), Some(ttl)) => Some(Arc::new(LocalTier::new(
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
        let cache = Cache {
            inner: Arc::new(Inner {
                backend,
                seq_keys: SeqKeys {
                    seq: layout.seq(),
                    srv: layout.server_id(),
                    patterns: layout.prefixes().patterns,
                },
                epoch: crate::epoch::Known::default(),
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
                breaker: crate::breaker::Breaker::default(),
                metrics: crate::observe::Metrics::new(&self.namespace),
                coherence_id: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
                lock_lease: self.lock_lease,
                invalidation_batch: self.invalidation_batch,
                stats: Stats::default(),
                flights: Flights::default(),
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

/// A write-through store, encoded and waiting for its function to succeed
/// (or its transaction to commit).
#[derive(Debug)]
pub struct Put {
    key: String,
    bytes: Vec<u8>,
    ttl: Option<Duration>,
    idle: Option<Duration>,
    links: Links,
    /// Why nothing is stored (the key is still marked: what it held is
    /// stale).
    skip: Option<Skip>,
    /// When the write began (see [`Ticket`]).
    since: Since,
}

/// Where a write began, for a write-through put: taken before the write
/// commits ([`Cache::ticket`]), so that its put is not stored if the key
/// was invalidated since (by a concurrent write, which may be newer than
/// this one's value). `#[cache_put]` takes one before running its body.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
/// use cache_runtime::{Cache, CacheOptions, Links};
/// let cache = Cache::in_memory();
/// let options = CacheOptions::new("posts");
/// let ticket = cache.ticket().await; // before the write
/// // ... UPDATE posts SET title = 'new' WHERE id = 1 (committed) ...
/// cache.put_after(&ticket, "post:1", &"new", &options, Links::new()).await?;
/// assert_eq!(cache.get::<String>("post:1").await.as_deref(), Some("new"));
///
/// let ticket = cache.ticket().await;
/// // ... a concurrent write commits a newer title and invalidates ...
/// cache.invalidate().key("post:1").await?;
/// cache.put_after(&ticket, "post:1", &"older", &options, Links::new()).await?;
/// assert_eq!(cache.get::<String>("post:1").await, None, "not stored: the key changed since");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Ticket(Since);

/// What a put knows of when its write began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Since {
    /// Not said (`Cache::put`): the put wins over every invalidation that
    /// came before its own step.
    Unchecked,
    /// The sequence number read before the write.
    Token(u64),
    /// The ticket could not be read (the store did not answer): nothing is
    /// stored, the key is only invalidated.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// Over the size limit.
    Oversized,
    /// The value did not encode (reported when it was encoded).
    Unencodable,
    /// Its ticket could not be read: whether the key changed since the
    /// write began is unknown.
    NoTicket,
    /// The key was invalidated after the write began.
    Overtaken,
}

impl Put {
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// A put whose value could not be encoded: nothing is stored, but the
    /// key is marked, so the value it held (now stale) goes.
    pub(crate) fn unencodable(key: String) -> Put {
        Put {
            key,
            bytes: Vec::new(),
            ttl: None,
            idle: None,
            links: Links::default(),
            skip: Some(Skip::Unencodable),
            since: Since::Unchecked,
        }
    }

    /// This put's write began at `ticket`.
    pub(crate) fn after(mut self, ticket: &Ticket) -> Put {
        self.since = ticket.0;
        if self.since == Since::Unknown && self.skip.is_none() {
            self.skip = Some(Skip::NoTicket);
        }
        self
    }

    pub(crate) fn since(&self) -> Since {
        self.since
    }
}

/// What an invalidation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidationReport {
    /// Entries removed (keys, tag members and pattern matches).
    pub removed: u64,
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
    /// without an in-process tier that has not needed one yet).
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
            store: match &inner.backend {
                Backend::Memory(_) => "memory",
                #[cfg(feature = "redis")]
                Backend::Redis(r) if r.is_cluster() => "redis-cluster",
                #[cfg(feature = "redis")]
                Backend::Redis(_) => "redis",
            },
            listening,
            last_heard_ms,
            tier_serving: inner.tier.as_ref().map(|tier| tier.trusted()),
            outbox: inner.outbox.len(),
            events_waiting: inner.inbox.len(),
            breaker: inner.breaker.state(),
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

    /// Cache-aside for a fallible loader: returns the cached value under
    /// `key`, or runs `load`, caches its `Ok` value and returns it. An `Err`
    /// is returned as it is and not cached. A cache fault never fails the
    /// call: the loader runs and the fault is reported.
    pub async fn get_or_load<T, E, F, Fut>(
        &self,
        key: &str,
        options: &CacheOptions,
        load: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.read_through::<Res, _, _, _, _>(
            Read::new(key.to_owned(), options),
            |_| Links::new(),
            load,
        )
        .await
    }

    /// Like [`get_or_load`](Self::get_or_load), for a loader that cannot fail,
    /// with tags (a `Vec<String>`) or [`Links`] computed from the loaded
    /// value.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use cache_runtime::{Cache, CacheOptions, Links};
    /// let cache = Cache::in_memory();
    /// let opts = CacheOptions::new("feed");
    /// let feed: Vec<u32> = cache
    ///     .get_or_load_tagged("feed:7", &opts, |_| Links::new().tag("user:7").depends_on("profile:7"), || async { vec![1, 2] })
    ///     .await;
    /// cache.invalidate().key("profile:7").await.unwrap();
    /// assert_eq!(cache.get::<Vec<u32>>("feed:7").await, None, "removed with what it depends on");
    /// # let _ = feed; }
    /// ```
    pub async fn get_or_load_tagged<T, F, Fut, G, L>(
        &self,
        key: &str,
        options: &CacheOptions,
        tags: G,
        load: F,
    ) -> T
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
        G: FnOnce(Option<&T>) -> L,
        L: Into<Links>,
    {
        self.read_through::<Plain, _, _, _, _>(
            Read::new(key.to_owned(), options),
            |v| tags(v).into(),
            load,
        )
        .await
    }

    /// The cached value under `key`, if there is one that decodes as `T`.
    /// It is read as stored: freshness and versions are not checked.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let lookup = self
            .lookup(&self.inner.layout.entry(key), None, None)
            .await?;
        let (meta, value) = self.decode_entry::<T>(key, &lookup.value?)?;
        // Not an entry a restarted server brought back from an older life.
        self.current_epoch(&meta).then_some(value)
    }

    /// Stores `value` under `key` for `ttl` (`None`: no expiry), as a member
    /// of `tags`, whatever was there.
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
        tags: &[&str],
    ) -> Result<(), Error> {
        // Stamped with the epoch readers know (learnt first if need be).
        if self.is_redis() && self.inner.epoch.get().is_none() {
            self.read_token().await;
        }
        let meta = Meta {
            fresh_until_ms: ttl.map_or(0, |t| now_ms().saturating_add(millis(t))),
            epoch: self.inner.epoch.get().unwrap_or(0),
            ..Meta::default()
        };
        let bytes = entry::encode(self.inner.codec, meta, value)?;
        let mut req = self.write_request(
            key,
            bytes,
            ttl,
            Links::from(tags.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>()),
            UNCONDITIONAL,
        );
        let entry = req.entry.clone();
        // Other instances' tiers drop their copies when they hear of it.
        req.overwrite = Some(self.coherence());
        let stored = self.store_fill(req).await;
        if let Some(tier) = &self.inner.tier {
            tier.apply(&[entry], &[]);
        }
        stored.map(|_| ())
    }

    /// Write-through: stores `value` under `key` with the TTL of `options`,
    /// as a member of `links`, and refuses every fill whose read came before
    /// it (an older value can never overwrite it). Entries that depend on
    /// `key` are invalidated, and other instances' tiers drop their copies.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// use cache_runtime::{Cache, CacheOptions, Links};
    /// let cache = Cache::in_memory();
    /// cache.put("post:1", &"fresh", &CacheOptions::new("posts"), Links::new().tag("author:7")).await?;
    /// assert_eq!(cache.get::<String>("post:1").await.as_deref(), Some("fresh"));
    /// # Ok(()) }
    /// ```
    pub async fn put<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: &CacheOptions,
        links: impl Into<Links>,
    ) -> Result<(), Error> {
        let put = self.encode_put(key.to_owned(), value, options, links.into())?;
        self.apply_put(put).await
    }

    /// A ticket for a write-through put, taken before the write commits:
    /// [`put_after`](Self::put_after) stores the value only if no
    /// invalidation touched its key since (see [`Ticket`]). One round trip
    /// on Redis; a store that does not answer gives a ticket whose put
    /// stores nothing (the key is still invalidated).
    pub async fn ticket(&self) -> Ticket {
        Ticket(match self.read_token().await {
            Some(token) => Since::Token(token.seq),
            None => Since::Unknown,
        })
    }

    /// Write-through after a write that began at `ticket`: like
    /// [`put`](Self::put), but the value is stored only if no invalidation
    /// touched `key` since the ticket was taken (a concurrent write to the
    /// same row, which may be newer, wins); the key is invalidated either
    /// way. What `#[cache_put]` does.
    pub async fn put_after<T: Serialize + ?Sized>(
        &self,
        ticket: &Ticket,
        key: &str,
        value: &T,
        options: &CacheOptions,
        links: impl Into<Links>,
    ) -> Result<(), Error> {
        let put = self.encode_put(key.to_owned(), value, options, links.into())?;
        self.apply_put(put.after(ticket)).await
    }

    pub(crate) fn encode_put<T: Serialize + ?Sized>(
        &self,
        key: String,
        value: &T,
        options: &CacheOptions,
        links: Links,
    ) -> Result<Put, Error> {
        let ttl = self.ttl_for(options);
        let meta = Meta {
            fresh_until_ms: ttl.map_or(0, |t| now_ms().saturating_add(millis(t))),
            ..Meta::default()
        };
        let bytes = entry::encode(self.inner.codec, meta, value)?;
        Ok(Put {
            key,
            since: Since::Unchecked,
            skip: (bytes.len() > options.size_limit().unwrap_or(self.inner.max_value_size))
                .then_some(Skip::Oversized),
            bytes,
            // A value stale past `ttl` is kept for the stale window too.
            ttl: ttl.map(|ttl| ttl.saturating_add(options.stale_window().unwrap_or_default())),
            idle: options.idle_choice(),
            links,
        })
    }

    /// Marks the key (so fills that read before now are refused, and
    /// dependents and other tiers let go), then stores the value
    /// unconditionally (see [`change`](Cache::change)).
    pub(crate) async fn apply_put(&self, put: Put) -> Result<(), Error> {
        self.change(Vec::new(), vec![put], true).await.map(drop)
    }

    /// Stores puts whose keys an invalidation (`marked`) has just marked,
    /// all sent at once. Filled with the marking's own number, as if read
    /// when it ran: a later invalidation or put of the key (a greater
    /// number) refuses them, an earlier read too. The first failure, if
    /// any.
    pub(crate) async fn store_puts(&self, puts: Vec<Put>, marked: &Applied) -> Option<Error> {
        let token = Token {
            seq: marked.seq,
            at_ms: marked.at_ms,
        };
        let mut reqs = Vec::with_capacity(puts.len());
        for (i, mut put) in puts.into_iter().enumerate() {
            if marked.conflicts.contains(&i) {
                put.skip.get_or_insert(Skip::Overtaken);
            }
            match put.skip {
                Some(Skip::Oversized) => Stats::add(&self.inner.stats.oversized, 1),
                Some(Skip::Overtaken | Skip::NoTicket) => {
                    Stats::add(&self.inner.stats.fills_rejected, 1);
                    self.inner.metrics.fill_rejected();
                    tracing::debug!(target: "cache_runtime", key = put.key, "put not stored: the key was invalidated after its write began");
                }
                Some(Skip::Unencodable) => {}
                None => reqs.push(self.put_request(put, token)),
            }
        }
        let results: Vec<Result<bool, Error>> = match &self.inner.backend {
            Backend::Memory(m) => reqs.into_iter().map(|req| Ok(m.fill(req))).collect(),
            #[cfg(feature = "redis")]
            Backend::Redis(r) => {
                let seq = &self.inner.seq_keys;
                futures_util::future::join_all(
                    reqs.into_iter()
                        .map(|req| self.bounded("fill", r.fill(seq, req))),
                )
                .await
            }
        };
        let mut first_error = None;
        for result in results {
            match result {
                Ok(true) => Stats::add(&self.inner.stats.puts, 1),
                Ok(false) => {
                    Stats::add(&self.inner.stats.fills_rejected, 1);
                    self.inner.metrics.fill_rejected();
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error
    }

    /// Starts an invalidation: add keys, tags, patterns and an event to
    /// publish, then `.await` it (or call [`run`](Invalidation::run)).
    pub fn invalidate(&self) -> Invalidation<'_> {
        Invalidation::new(self)
    }

    /// Deletes every entry whose key matches the glob `pattern` (namespace
    /// excluded), with `SCAN` in batches on Redis. Interpolate user data with
    /// [`render_part`](crate::render_part) so it cannot widen the pattern.
    pub async fn delete_pattern(&self, pattern: &str) -> Result<u64, Error> {
        let full = self.inner.layout.entry_pattern(pattern);
        // First the pattern marker: from now on, a fill that read before
        // this write and whose name matches is refused, cached yet or not.
        // In process this step also removes what matches; on Redis it
        // announces the pattern to every tier, and the scans follow.
        let marked = InvalidationPlan {
            patterns: vec![full.clone()],
            ..self.plan()
        };
        let applied = self.apply(&marked).await?;
        #[cfg(feature = "redis")]
        if let Some(r) = self.redis_store() {
            // The own tier at once (dropping is always safe), and again at
            // the end for copies a racing read put back.
            if let Some(tier) = &self.inner.tier {
                tier.apply_pattern(&full);
            }
            let mut cursor = 0;
            let mut removed = 0;
            loop {
                let (next, names) = self
                    .bounded("pattern scan", r.scan_step(&full, cursor))
                    .await?;
                removed += self.remove_entries(names).await?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            if let Some(tier) = &self.inner.tier {
                tier.apply_pattern(&full);
            }
            return Ok(removed);
        }
        Ok(applied.removed)
    }

    /// Removes entries named in full, as an invalidation of their keys does
    /// (markers, dependents).
    async fn remove_entries(&self, names: Vec<String>) -> Result<u64, Error> {
        let prefix = self.inner.layout.entry("");
        let keys: Vec<(String, String)> = names
            .iter()
            .filter_map(|name| name.strip_prefix(&prefix))
            .map(|key| self.entry_names(key))
            .collect();
        if keys.is_empty() {
            return Ok(0);
        }
        let plan = InvalidationPlan {
            keys,
            ..self.plan()
        };
        self.apply(&plan).await.map(|a| a.removed)
    }

    /// The read-through path behind `#[cached]` and `get_or_load`.
    ///
    /// One lookup (the value and, for versioned reads, the current version,
    /// in one round trip). A fresh hit returns. A caller about to load or
    /// wait reads the fill token first (`ensure_token`). A stale or
    /// early-refresh hit returns the cached value unless this caller takes
    /// the refresh. Otherwise the caller leads or joins the key's flight; the
    /// leader loads, fills (refused if an invalidation came after the read)
    /// and lands the outcome for the waiters.
    ///
    /// The in-process check runs first, without building the rest: the
    /// loader is a closure (its future is only made on a miss) and the
    /// network path is a boxed future, so a hit moves a few words, not the
    /// whole state of a miss.
    pub(crate) fn read_through<'a, S, R, L, Fut, G>(
        &'a self,
        read: Read<'a, R, S::Stored>,
        tags: G,
        load: L,
    ) -> ReadThrough<R, impl Future<Output = R> + 'a>
    where
        S: Shape<R> + 'a,
        R: 'a,
        L: FnOnce() -> Fut + 'a,
        Fut: Future<Output = R> + 'a,
        G: FnOnce(Option<&S::Inner>) -> Links + 'a,
    {
        let inner = &*self.inner;
        let mode = crate::switch::mode(&inner.enabled);
        let version_key = read.version.as_deref().map(|v| inner.layout.version(v));
        // An in-process hit (tier, or the in-process store) builds the entry
        // name in a reused buffer: no allocation but the key's.
        // Only the lookup runs inside the borrow: decoding and cloning run
        // user code, which may itself read the cache.
        // With invalidations waiting to be retried, nothing cached may be
        // trusted: go the network path, which retries them first.
        let found = if mode == Mode::Normal && inner.outbox.is_empty() {
            ENTRY_NAME.with_borrow_mut(|name| {
                name.clear();
                inner.layout.entry_into(&read.key, name);
                self.in_process_entry(name)
            })
        } else {
            None
        };
        let in_process = found.and_then(|found| {
            self.in_process_hit::<S, R>(
                &found,
                version_key.as_deref(),
                read.options,
                read.typed.as_ref(),
            )
        });
        match in_process {
            Some(hit) => ReadThrough::Hit(Some(hit)),
            None => {
                use tracing::Instrument as _;
                let span = tracing::debug_span!(
                    target: "cache_runtime",
                    "cache.read",
                    cache = self.namespace(),
                    name = read.options.name(),
                    key = %read.key,
                    outcome = tracing::field::Empty,
                    store_ms = tracing::field::Empty,
                    load_ms = tracing::field::Empty,
                );
                let network =
                    self.read_network::<S, R, L, Fut, G>(read, version_key, tags, load, mode);
                ReadThrough::Miss(Box::pin(network.instrument(span)))
            }
        }
    }

    /// The read-through path past the in-process check.
    async fn read_network<S, R, L, Fut, G>(
        &self,
        read: Read<'_, R, S::Stored>,
        version_key: Option<String>,
        tags: G,
        load: L,
        mode: Mode,
    ) -> R
    where
        S: Shape<R>,
        L: FnOnce() -> Fut,
        Fut: Future<Output = R>,
        G: FnOnce(Option<&S::Inner>) -> Links,
    {
        if mode == Mode::Bypass {
            return self.bypass(load).await;
        }
        // While invalidations that failed wait to be retried, nothing
        // cached may be trusted: the loader runs without the cache. The
        // read makes no store call for them; it wakes the task that
        // retries them.
        if !self.inner.outbox.is_empty() {
            self.outbox_wake();
            crate::status::record(CacheStatus::Bypass);
            return load().await;
        }
        if mode == Mode::Refresh {
            return self
                .reload::<S, R, L, Fut, G>(&read.key, read.options, tags, load)
                .await;
        }
        // The fill window runs from before the read: a marker must outlive
        // every fill whose read preceded its invalidation.
        let started = Instant::now();
        let inner = &*self.inner;
        let Read {
            key,
            options,
            version: _,
            share,
            typed,
        } = read;
        let key = key.as_str();
        let typed = typed.as_ref();
        let entry_key = inner.layout.entry(key);
        let tier = inner.tier.as_deref();
        // Taken before the Redis read: a tier fill from it is refused if an
        // invalidation of the entry arrives in between.
        let local_token = tier.map(LocalTier::token);
        let mut found = self
            .lookup(&entry_key, version_key.as_deref(), options.idle_choice())
            .await;
        let mut leader: Option<flight::Leader<'_>> = None;
        // The fill token this caller read when it became the leader.
        let mut leader_token: Option<u64> = None;
        let mut waiting = LockWait::default();
        let (lock, refreshing) = loop {
            let mut stale = None;
            if let Some(Lookup {
                value: Some(bytes),
                version: current,
                token,
                typed: kept,
            }) = &found
            {
                match self.decode_kept::<S::Stored>(key, bytes, kept.as_ref(), typed) {
                    Some((meta, stored))
                        if meta.version == *current && self.current_epoch(&meta) =>
                    {
                        match freshness(&meta, options) {
                            Freshness::Fresh => {
                                Stats::add(&inner.stats.hits, 1);
                                inner.metrics.hit(options.name(), Source::Redis);
                                crate::status::record(CacheStatus::Hit);
                                tracing::Span::current().record("outcome", "hit");
                                if let (Some(tier), Some(local_token)) = (tier, local_token) {
                                    if let Some(name) = &version_key {
                                        tier.saw_version(name, *current);
                                    }
                                    tier.fill(
                                        &entry_key,
                                        bytes,
                                        typed.map(|t| (t.pack)(&stored)),
                                        local_for(&meta, options),
                                        local_token,
                                    );
                                }
                                if let Some(leader) = leader.take() {
                                    // Another process's loader landed it. It
                                    // is at least as fresh as this caller's
                                    // token (read before this read).
                                    Stats::add(&inner.stats.lock_landed, 1);
                                    leader.land(Landed::Value {
                                        bytes: bytes.clone(),
                                        token: token.map(|t| t.seq).or(leader_token).unwrap_or(0),
                                        stored: true,
                                    });
                                }
                                return S::join(stored);
                            }
                            Freshness::Stale => stale = Some((stored, true)),
                            Freshness::RefreshEarly => stale = Some((stored, false)),
                        }
                    }
                    Some(_) => {
                        tracing::trace!(target: "cache_runtime", key, "entry of an older version or epoch")
                    }
                    None => {}
                }
            }
            if leader.is_none() {
                if !options.coalesce() && stale.is_none() {
                    break (None, None);
                }
                // A value landed a moment ago is offered to a caller whose
                // read found nothing at all (not to one about to refresh, or
                // to replace bytes it could not use).
                if found.as_ref().is_some_and(|l| l.value.is_none()) {
                    self.ensure_token(&mut found).await;
                }
                let token = found
                    .as_ref()
                    .filter(|l| l.value.is_none())
                    .and_then(|l| l.token)
                    .map(|t| t.seq);
                match inner.flights.join(&entry_key, token) {
                    Role::Leader(l) => {
                        leader = Some(l);
                        leader_token = found.as_ref().and_then(|l| l.token).map(|t| t.seq);
                    }
                    // Someone else is refreshing: serve what is cached, now.
                    Role::Waiter(_) if stale.is_some() => {
                        let (stored, past_ttl) = stale.expect("checked");
                        return self.serve_stale::<S, R>(options.name(), stored, past_ttl);
                    }
                    Role::Waiter(rx) | Role::Landed(rx) => {
                        // This caller's token, read after its read: the
                        // leader's value is taken only if no invalidation
                        // came between the leader's token and this one.
                        // Without a token of its own (the store did not
                        // answer) it takes nothing.
                        self.ensure_token(&mut found).await;
                        let mine = found.as_ref().and_then(|l| l.token).map(|t| t.seq);
                        let fresh =
                            |token| mine.is_some_and(|mine| flight::fresh_enough(token, mine));
                        match flight::wait(rx).await {
                            Landed::Value { bytes, token, .. } if fresh(token) => {
                                if let Some((_, stored)) =
                                    self.decode_entry::<S::Stored>(key, &bytes)
                                {
                                    Stats::add(&inner.stats.coalesced, 1);
                                    crate::status::record(CacheStatus::Miss);
                                    return S::join(stored);
                                }
                            }
                            Landed::Shared(any, token) if fresh(token) => {
                                if let Some(value) = share.as_ref().and_then(|s| (s.unpack)(&*any))
                                {
                                    Stats::add(&inner.stats.coalesced, 1);
                                    crate::status::record(CacheStatus::Miss);
                                    return value;
                                }
                            }
                            // The leader's value predates an invalidation this
                            // caller saw, or it had nothing to share: read again.
                            Landed::Value { .. } | Landed::Shared(..) | Landed::Retry => {}
                        }
                        found = self
                            .lookup(&entry_key, version_key.as_deref(), options.idle_choice())
                            .await;
                        continue;
                    }
                }
            }
            // This caller leads the key's flight in this process.
            // Without a store answering there is no lock to take.
            if !options.distributed() || !self.is_redis() || found.is_none() {
                break (None, stale);
            }
            // Ask the lock script whether the entry landed since this read
            // only when the read found nothing at all (bytes that did not
            // decode or were of an older version would be found again).
            let check_entry = found.as_ref().is_some_and(|l| l.value.is_none());
            match self
                .distributed_step(
                    key,
                    &entry_key,
                    options,
                    check_entry,
                    stale.is_some(),
                    &mut waiting,
                )
                .await
            {
                Step::Load(guard) => break (guard, stale),
                Step::ReadAgain => {
                    if let Some((stored, past_ttl)) = stale {
                        // Another process is refreshing it.
                        return self.serve_stale::<S, R>(options.name(), stored, past_ttl);
                    }
                }
            }
            found = self
                .lookup(&entry_key, version_key.as_deref(), options.idle_choice())
                .await;
        };
        let outcome = if refreshing.is_some() {
            Stats::add(&inner.stats.refreshes, 1);
            inner.metrics.refresh(options.name());
            "refresh"
        } else {
            Stats::add(&inner.stats.misses, 1);
            inner.metrics.miss(options.name());
            "miss"
        };
        tracing::Span::current().record("outcome", outcome);
        crate::status::record(CacheStatus::Miss);
        // Read before the loader starts: an invalidation before this read
        // came after its write committed, so the loader sees the write; one
        // after it has a greater number, and refuses the fill.
        self.ensure_token(&mut found).await;
        let loading = Instant::now();
        let load = load();
        let value = match &lock {
            // Renew the lease for as long as the loader runs.
            Some(guard) => {
                let mut load = std::pin::pin!(load);
                tokio::select! {
                    biased;
                    value = &mut load => value,
                    () = guard.keep_alive() => load.await,
                }
            }
            None => load.await,
        };
        let cost = loading.elapsed();
        inner.metrics.load(options.name(), cost);
        tracing::Span::current().record("load_ms", cost.as_secs_f64() * 1e3);
        let token = found
            .as_ref()
            .and_then(|l| l.token.map(|token| (token, l.version)));
        let landed = self
            .fill_after_load::<S, R, G>(
                key,
                version_key.as_deref(),
                options,
                tags,
                &value,
                token,
                cost,
                started,
                share.as_ref(),
                lock,
                local_token,
                typed,
            )
            .await;
        if let Some(leader) = leader {
            leader.land(landed);
        }
        if let Some((stored, past_ttl)) = refreshing
            && matches!(S::split(&value), Fill::Skip)
        {
            // Stale-if-error: a failed refresh keeps serving what is
            // cached (until the entry's stale window ends).
            Stats::add(&inner.stats.refresh_failures, 1);
            tracing::warn!(target: "cache_runtime", name = options.name(), key, "refresh failed; serving the cached value");
            return self.serve_stale::<S, R>(options.name(), stored, past_ttl);
        }
        value
    }

    /// Stores a freshly loaded value (when it is storable and no invalidation
    /// came after the read), and says what the flight's waiters get.
    #[allow(clippy::too_many_arguments)]
    async fn fill_after_load<S, R, G>(
        &self,
        key: &str,
        version_key: Option<&str>,
        options: &CacheOptions,
        tags: G,
        value: &R,
        token: Option<(Token, u64)>,
        cost: Duration,
        started: Instant,
        share: Option<&Sharer<R>>,
        lock: Option<LockGuard>,
        local_token: Option<u64>,
        typed: Option<&Typed<S::Stored>>,
    ) -> Landed
    where
        S: Shape<R>,
        G: FnOnce(Option<&S::Inner>) -> Links,
    {
        let inner = &*self.inner;
        let version = token.map_or(0, |(_, v)| v);
        let (stored, absent, inner_value) = match S::split(value) {
            Fill::Value { stored, inner } => (stored, false, Some(inner)),
            Fill::Absent(stored) => (stored, true, None),
            Fill::Skip => return shared(share, value, token),
        };
        let ttl = if absent {
            options.none_ttl().map(|ttl| {
                Some(with_jitter(
                    ttl,
                    options.jitter_choice().unwrap_or(inner.jitter),
                ))
            })
        } else {
            Some(self.ttl_for(options))
        };
        // Always recorded, so a tier never keeps a copy past it.
        let fresh_until_ms = match ttl {
            Some(Some(ttl)) => now_ms().saturating_add(millis(ttl)),
            _ => 0,
        };
        let meta = Meta {
            absent,
            fresh_until_ms,
            version,
            cost_ms: u32::try_from(cost.as_millis()).unwrap_or(u32::MAX),
            epoch: token.map_or(0, |(t, _)| crate::epoch::of(t.seq)),
        };
        let bytes = match entry::encode(inner.codec, meta, stored) {
            Ok(bytes) => bytes,
            Err(e) => {
                Stats::add(&inner.stats.encode_errors, 1);
                tracing::warn!(target: "cache_runtime", key, error = %e, "value does not encode; not cached");
                return shared(share, value, token);
            }
        };
        let shared = Bytes::from(bytes);
        let Some(read) = token.map(|(t, _)| t) else {
            // The read faulted: the store is not answering, so no fill (and no
            // second timeout); waiters still get the value.
            return Landed::Value {
                bytes: shared,
                token: 0,
                stored: false,
            };
        };
        let Some(ttl) = ttl else {
            // An absent value without negative caching: nothing to store.
            return Landed::Value {
                bytes: shared,
                token: read.seq,
                stored: false,
            };
        };
        if shared.len() > options.size_limit().unwrap_or(inner.max_value_size) {
            Stats::add(&inner.stats.oversized, 1);
            tracing::debug!(target: "cache_runtime", key, size = shared.len(), "value over the size limit; not cached");
            return Landed::Value {
                bytes: shared,
                token: read.seq,
                stored: false,
            };
        }
        if started.elapsed() >= inner.fill_window {
            Stats::add(&inner.stats.fills_rejected, 1);
            inner.metrics.fill_rejected();
            return Landed::Retry;
        }
        // A value stale past `ttl` is kept for the stale window too.
        let keep = ttl.map(|ttl| ttl.saturating_add(options.stale_window().unwrap_or_default()));
        let links = tags(inner_value);
        if links.not_stored {
            // `unless`: returned (and shared with waiters), not stored.
            return Landed::Value {
                bytes: shared,
                token: read.seq,
                stored: false,
            };
        }
        let mut req = self.fill_request(key, shared.to_vec(), keep, links, read);
        req.idle = options.idle_choice();
        req.version = version_key.map(|name| (name.to_owned(), version));
        req.release = lock.as_ref().map(LockGuard::release_parts);
        // Kept decoded in process: by the in-process store, or by the tier.
        let kept = match typed {
            Some(t) if !self.is_redis() || inner.tier.is_some() => Some((t.pack)(stored)),
            _ => None,
        };
        if !self.is_redis() {
            req.typed = kept.clone();
        }
        let filled = self.store_fill(req).await;
        if filled.is_ok() {
            // The fill released the lock and announced the landing.
            if let Some(lock) = lock {
                lock.released_elsewhere();
            }
        }
        match filled {
            Ok(true) => {
                Stats::add(&inner.stats.fills, 1);
                if let (Some(tier), Some(local_token)) = (&inner.tier, local_token) {
                    let ttl = local_for(&meta, options);
                    tier.fill(&inner.layout.entry(key), &shared, kept, ttl, local_token);
                }
                Landed::Value {
                    bytes: shared,
                    token: read.seq,
                    stored: true,
                }
            }
            Ok(false) => {
                Stats::add(&inner.stats.fills_rejected, 1);
                inner.metrics.fill_rejected();
                tracing::debug!(target: "cache_runtime", key, "fill refused: invalidated since the read");
                Landed::Retry
            }
            Err(e) => {
                self.report("fill", &e);
                Landed::Value {
                    bytes: shared,
                    token: read.seq,
                    stored: false,
                }
            }
        }
    }

    /// A fresh hit that needs no network: from the in-process tier, or from
    /// the in-process store.
    fn in_process_entry(&self, entry_key: &str) -> Option<Shared> {
        match &self.inner.backend {
            Backend::Memory(m) => m.entry(entry_key),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => self.inner.tier.as_deref()?.get(entry_key),
        }
    }

    /// Whether an in-process entry answers the read: current version (on
    /// the in-process store, the store's; in the tier, as last heard from
    /// Redis), and fresh.
    fn in_process_hit<S: Shape<R>, R>(
        &self,
        found: &Shared,
        version_key: Option<&str>,
        options: &CacheOptions,
        typed: Option<&Typed<S::Stored>>,
    ) -> Option<R> {
        // A value that does not decode is reported by the full path.
        let (meta, stored) =
            decode_quietly::<S::Stored>(&found.bytes, found.typed.as_ref(), typed)?;
        let current = match &self.inner.backend {
            Backend::Memory(m) => version_key.map_or(Some(0), |name| Some(m.version(name))),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => match (version_key, self.inner.tier.as_deref()) {
                (None, _) => Some(0),
                (Some(name), Some(tier)) => tier.version(name),
                (Some(_), None) => None,
            },
        };
        if current != Some(meta.version) || !matches!(freshness(&meta, options), Freshness::Fresh) {
            return None;
        }
        let stats = &self.inner.stats;
        Stats::add(&stats.hits, 1);
        if self.is_redis() {
            Stats::add(&stats.local_hits, 1);
        }
        self.inner.metrics.hit(options.name(), Source::Process);
        crate::status::record(CacheStatus::Hit);
        tracing::debug!(target: "cache_runtime", name = options.name(), outcome = "hit", source = "process");
        Some(S::join(stored))
    }

    fn serve_stale<S: Shape<R>, R>(
        &self,
        name: &'static str,
        stored: S::Stored,
        past_ttl: bool,
    ) -> R {
        Stats::add(&self.inner.stats.hits, 1);
        self.inner.metrics.hit(name, Source::Redis);
        if past_ttl {
            Stats::add(&self.inner.stats.stale_served, 1);
            self.inner.metrics.stale_served(name);
        }
        crate::status::record(if past_ttl {
            CacheStatus::Stale
        } else {
            CacheStatus::Hit
        });
        tracing::Span::current().record("outcome", if past_ttl { "stale" } else { "early" });
        S::join(stored)
    }

    /// One step of the distributed lock for the leader of a flight: take the
    /// lock, or wait (bounded) for the holder's value to land. A caller with
    /// a stale value does not wait: it serves that value.
    async fn distributed_step(
        &self,
        key: &str,
        entry_key: &str,
        options: &CacheOptions,
        check_entry: bool,
        has_stale: bool,
        waiting: &mut LockWait,
    ) -> Step {
        let inner = &*self.inner;
        let now = Instant::now();
        // A caller that waited past half the fill window could load a value
        // too late to store: wait at most that long.
        let bound = options.lock_wait_bound().min(inner.fill_window / 2);
        let deadline = *waiting
            .deadline
            .get_or_insert(crate::ttl::after(now, bound));
        // Listen before trying, so a landing right after the try is heard.
        #[cfg(feature = "redis")]
        if !has_stale
            && waiting.landings.is_none()
            && let Some(subscriber) = self.subscriber()
        {
            waiting.landings = Some(subscriber.landings());
        }
        // Ask whether the entry is there only once: a value that does not
        // decode must not send this caller round in circles.
        let unless_exists = check_entry.then_some(entry_key);
        let announce = Some((inner.layout.landed_channel(), entry_key.to_owned()));
        let attempt = self
            .lock_named(
                inner.layout.lock(key),
                inner.lock_lease,
                unless_exists,
                announce,
            )
            .await;
        match attempt {
            Ok(Attempt::Held(guard)) => Step::Load(Some(guard)),
            Ok(Attempt::Landed) => Step::ReadAgain,
            Err(e) => {
                self.report("lock", &e);
                Step::Load(None)
            }
            Ok(Attempt::Busy) if has_stale => Step::ReadAgain,
            Ok(Attempt::Busy) => {
                let now = Instant::now();
                if now >= deadline {
                    Stats::add(&inner.stats.lock_timeouts, 1);
                    tracing::warn!(target: "cache_runtime", key, "gave up waiting for another process's loader; loading here");
                    return Step::Load(None);
                }
                if !std::mem::replace(&mut waiting.waited, true) {
                    Stats::add(&inner.stats.lock_waits, 1);
                }
                // Re-read at a slow interval in case an announcement is lost.
                let poll = (bound / 4).max(Duration::from_millis(10));
                let slice = poll.min(deadline - now);
                #[cfg(feature = "redis")]
                let woken = match waiting.landings.as_mut() {
                    Some(rx) => crate::lock::wait_for_landing(rx, entry_key, slice).await,
                    None => {
                        tokio::time::sleep(slice).await;
                        false
                    }
                };
                #[cfg(not(feature = "redis"))]
                let woken = {
                    tokio::time::sleep(slice).await;
                    false
                };
                if woken {
                    Stats::add(&inner.stats.lock_woken, 1);
                }
                Step::ReadAgain
            }
        }
    }

    fn is_redis(&self) -> bool {
        !matches!(self.inner.backend, Backend::Memory(_))
    }

    /// The cache's pub/sub connection (Redis only), started on first use.
    #[cfg(feature = "redis")]
    pub(crate) fn subscriber(&self) -> Option<&crate::subscriber::Subscriber> {
        let Backend::Redis(r) = &self.inner.backend else {
            return None;
        };
        Some(self.inner.subscriber.get_or_init(|| {
            if self.inner.tier.is_some() {
                self.start_watch();
            }
            let layout = &self.inner.layout;
            crate::subscriber::Subscriber::start(
                r.pubsub_clients().to_vec(),
                crate::subscriber::Channels {
                    landed: layout.landed_channel(),
                    coherence: layout.coherence_channel(),
                    events: layout.events_pattern(),
                },
                self.inner.coherence_id.clone(),
                Arc::new(CacheHooks {
                    cache: self.downgrade(),
                }),
                self.inner.timeout,
                self.inner.tier.as_ref().map_or(SUBSCRIBER_PING, |tier| {
                    // Often enough that a live link keeps the tier trusted.
                    (tier.grace() / 4).clamp(Duration::from_millis(10), SUBSCRIBER_PING)
                }),
            )
        }))
    }

    /// Where invalidations are announced to in-process tiers.
    pub(crate) fn coherence(&self) -> CoherenceChannel {
        CoherenceChannel {
            channel: self.inner.layout.coherence_channel(),
            instance: self.inner.coherence_id.clone(),
        }
    }

    /// Claims the event `id` for this instance: whether it is the first to
    /// (on Redis, `SET NX` for `EVENT_CLAIM_TTL`, shared by every instance;
    /// in process there is nobody to share with). When the store does not
    /// answer, the event is applied anyway: twice is harmless, never is not.
    pub(crate) async fn claim_event(&self, id: &str) -> bool {
        #[cfg(feature = "redis")]
        if let Backend::Redis(r) = &self.inner.backend {
            let claim = self.inner.layout.event_claim(id);
            return match self
                .bounded("event claim", r.claim(&claim, EVENT_CLAIM_TTL))
                .await
            {
                Ok(first) => first,
                Err(e) => {
                    self.report("event claim", &e);
                    true
                }
            };
        }
        let _ = id;
        true
    }

    /// The Redis store, if this cache is on Redis.
    #[cfg(feature = "redis")]
    pub(crate) fn redis_store(&self) -> Option<&crate::store::redis::RedisStore> {
        match &self.inner.backend {
            Backend::Redis(r) => Some(r),
            Backend::Memory(_) => None,
        }
    }

    pub(crate) fn inner_eviction(&self) -> &std::sync::Mutex<Option<crate::health::Eviction>> {
        &self.inner.eviction
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    pub(crate) fn user_lock_name(&self, name: &str) -> String {
        self.inner.layout.user_lock(name)
    }

    /// The TTL of one entry: the option's or the default, with jitter;
    /// `None` for entries that never expire.
    fn ttl_for(&self, options: &CacheOptions) -> Option<Duration> {
        let jitter = options.jitter_choice().unwrap_or(self.inner.jitter);
        match options.ttl_choice() {
            Ttl::Default => Some(with_jitter(self.inner.default_ttl, jitter)),
            Ttl::For(ttl) => Some(with_jitter(ttl, jitter)),
            Ttl::Forever => None,
        }
    }

    /// The fill of a put, with `token` (its envelope stamped with the
    /// token's epoch: it was encoded before the token was known).
    fn put_request(&self, mut put: Put, token: Token) -> FillRequest {
        entry::set_epoch(&mut put.bytes, crate::epoch::of(token.seq));
        let mut req = self.fill_request(&put.key, put.bytes, put.ttl, put.links, token);
        req.idle = put.idle;
        req
    }

    /// A fill with `token`: refused if an invalidation came after it was
    /// read, or if the fill window passed since.
    fn fill_request(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        links: Links,
        token: Token,
    ) -> FillRequest {
        let mut req = self.write_request(key, value, ttl, links, token.seq);
        req.read_at_ms = Some(token.at_ms);
        req
    }

    fn write_request(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        links: Links,
        token: u64,
    ) -> FillRequest {
        let layout = &self.inner.layout;
        FillRequest {
            tags: links.tags.iter().map(|t| self.tag_names(t)).collect(),
            window: self.inner.fill_window,
            ttl,
            depends_on: links
                .depends_on
                .into_iter()
                .map(|k| crate::key::bound_key(&k).into_owned())
                .collect(),
            prefixes: layout.prefixes(),
            marker_ttl: self.marker_ttl(),
            ..FillRequest::new(layout.entry(key), layout.key_marker(key), value, token)
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

    /// Like `decode_entry`, but takes the value kept decoded beside the
    /// bytes when there is one (the header is still read from the bytes).
    fn decode_kept<T: DeserializeOwned>(
        &self,
        key: &str,
        bytes: &[u8],
        kept: Option<&AnyValue>,
        typed: Option<&Typed<T>>,
    ) -> Option<(Meta, T)> {
        decode_quietly(bytes, kept, typed).or_else(|| self.decode_entry(key, bytes))
    }

    fn decode_entry<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Option<(Meta, T)> {
        match entry::decode(bytes)
            .and_then(|env| env.codec.decode::<T>(env.payload).map(|v| (env.meta, v)))
        {
            Ok(v) => Some(v),
            Err(e) => {
                Stats::add(&self.inner.stats.decode_errors, 1);
                tracing::warn!(target: "cache_runtime", key, error = %e, "cached value does not decode; treating it as a miss");
                None
            }
        }
    }

    /// One read of the store: the entry, the fill token and the version.
    /// With `idle`, a hit on Redis also extends the entry's life (same round
    /// trip); the in-process store extends it on any read by the entry's own
    /// `idle`.
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    async fn lookup(
        &self,
        entry_key: &str,
        version_key: Option<&str>,
        idle: Option<Duration>,
    ) -> Option<Lookup> {
        match &self.inner.backend {
            Backend::Memory(m) => Some(m.lookup(entry_key, version_key)),
            #[cfg(feature = "redis")]
            Backend::Redis(r) => {
                // Which epoch's entries may be served: learnt first when it
                // may have changed unseen (the token read checks the
                // server), and kept as this read's fill token.
                let learnt = match self.inner.epoch.get() {
                    Some(_) => None,
                    None => Some(self.read_token().await?),
                };
                let started = Instant::now();
                let read = self.bounded(
                    "read",
                    r.lookup(entry_key, &self.inner.seq_keys, version_key, idle),
                );
                let result = read.await;
                // The store's latency, on the call's span (the first read's).
                tracing::Span::current().record("store_ms", started.elapsed().as_secs_f64() * 1e3);
                match result {
                    Ok(mut l) => {
                        if let (Some(tier), Some(name)) = (&self.inner.tier, version_key) {
                            tier.saw_version(name, l.version);
                        }
                        if learnt.is_some() {
                            l.token = learnt;
                        }
                        Some(l)
                    }
                    Err(e) => {
                        self.report("read", &e);
                        None
                    }
                }
            }
        }
    }

    /// Reads the fill token if the read did not (a Redis hit fetches the
    /// entry alone). A store that does not answer makes it a faulted read
    /// (`None`): nothing is filled from it.
    async fn ensure_token(&self, found: &mut Option<Lookup>) {
        if found.as_ref().is_none_or(|l| l.token.is_some()) {
            return;
        }
        let token = self.read_token().await;
        match (found.as_mut(), token) {
            (Some(lookup), Some(token)) => lookup.token = Some(token),
            _ => *found = None,
        }
    }

    /// The fill token of a load that starts after this call (`None`: the
    /// store did not answer; reported). On Redis it checks the server, and
    /// teaches this instance the epoch.
    pub(crate) async fn read_token(&self) -> Option<Token> {
        match &self.inner.backend {
            Backend::Memory(m) => Some(m.token()),
            #[cfg(feature = "redis")]
            Backend::Redis(r) => {
                let generation = self.inner.epoch.generation();
                match self.bounded("read", r.token(&self.inner.seq_keys)).await {
                    Ok((token, identity)) => {
                        self.learn_epoch(generation, token.seq);
                        self.inner.identity.store(
                            if identity { 1 } else { 2 },
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        Some(token)
                    }
                    Err(e) => {
                        self.report("read", &e);
                        None
                    }
                }
            }
        }
    }

    /// Learns the server's epoch from a number read in `generation`; if it
    /// changed, what the tier holds is of the older one and goes.
    #[cfg(feature = "redis")]
    fn learn_epoch(&self, generation: u32, seq: u64) {
        if self.inner.epoch.learn(generation, crate::epoch::of(seq)) {
            tracing::warn!(target: "cache_runtime", namespace = self.namespace(), "the Redis server's data was lost or rolled back (a new epoch): entries of the old one are not served");
            if let Some(tier) = &self.inner.tier {
                tier.clear();
            }
        }
    }

    /// Whether an entry read from the store may be served: on Redis, only
    /// in the epoch this instance knows (an entry of another epoch was
    /// brought back by a restart or failover, or the instance has not
    /// learnt the new epoch yet: either way a miss, and replaced).
    fn current_epoch(&self, meta: &Meta) -> bool {
        !self.is_redis() || self.inner.epoch.get() == Some(meta.epoch)
    }

    /// Stores a refreshed value whose load started after reading `token`:
    /// only if no invalidation of its key or tags came since (as a fill),
    /// whatever is cached (as a put: other tiers drop their copies); then
    /// the key is marked and its dependents removed, as a put does.
    pub(crate) async fn store_refreshed(&self, put: Put, token: Token) -> Result<(), Error> {
        if put.skip.is_some() {
            // Not stored: a put marks the key (what it held is stale now).
            return self.apply_put(put).await;
        }
        let key = put.key.clone();
        let mut req = self.put_request(put, token);
        req.overwrite = Some(self.coherence());
        let entry = req.entry.clone();
        let stored = self.store_fill(req).await;
        if let Some(tier) = &self.inner.tier {
            tier.apply(&[entry], &[]);
        }
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => {
                // What it holds may be stale: it goes once the store is back.
                self.outbox_push(crate::invalidation::Spec {
                    keys: vec![key],
                    ..Default::default()
                });
                return Err(e);
            }
        };
        if !stored {
            Stats::add(&self.inner.stats.fills_rejected, 1);
            self.inner.metrics.fill_rejected();
            return Ok(());
        }
        Stats::add(&self.inner.stats.puts, 1);
        let layout = &self.inner.layout;
        let plan = InvalidationPlan {
            tags: vec![TagNames {
                set: layout.dependents(&key),
                marker: layout.key_marker(&key),
            }],
            ..self.plan()
        };
        match self.apply(&plan).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // Its dependents may be stale: the key goes (and they with
                // it) once the store is back.
                self.outbox_push(crate::invalidation::Spec {
                    keys: vec![key],
                    ..Default::default()
                });
                Err(e)
            }
        }
    }

    async fn store_fill(&self, req: FillRequest) -> Result<bool, Error> {
        match &self.inner.backend {
            Backend::Memory(m) => Ok(m.fill(req)),
            #[cfg(feature = "redis")]
            Backend::Redis(r) => {
                self.bounded("fill", r.fill(&self.inner.seq_keys, req))
                    .await
            }
        }
    }

    /// Runs a plan of key deletes, tag invalidations and a publish, in one
    /// round trip on Redis, then drops what it removed from this instance's
    /// in-process tier (the other instances hear it on pub/sub).
    pub(crate) async fn apply(&self, plan: &InvalidationPlan) -> Result<Applied, Error> {
        match &self.inner.backend {
            Backend::Memory(m) => {
                let (removed, seq, at_ms, conflicts) = m.invalidate_seq(plan);
                Ok(Applied {
                    removed,
                    seq,
                    at_ms,
                    conflicts,
                    ..Applied::default()
                })
            }
            #[cfg(feature = "redis")]
            Backend::Redis(r) => {
                // Big invalidations run in steps (each bounded by the
                // timeout); a failed step fails the whole, which the outbox
                // then retries from the start.
                let mut total = Applied::default();
                let mut from = None;
                let generation = self.inner.epoch.generation();
                for step in 0u32.. {
                    let (applied, next) = self.invalidation_step(r, plan, from, step).await?;
                    if step == 0 {
                        total.seq = applied.seq;
                        total.at_ms = applied.at_ms;
                        total.conflicts = applied.conflicts;
                        self.learn_epoch(generation, applied.seq);
                    }
                    total.removed += applied.removed;
                    total.entries.extend(applied.entries);
                    total.versions.extend(applied.versions);
                    match next {
                        Some(next) => from = Some(next),
                        None => break,
                    }
                    crate::hooks::point("invalidate.step", self.namespace()).await;
                }
                Ok(total)
            }
        }
    }

    /// One step of an invalidation on Redis, keeping the tier coherent.
    #[cfg(feature = "redis")]
    async fn invalidation_step(
        &self,
        r: &crate::store::redis::RedisStore,
        plan: &InvalidationPlan,
        from: Option<crate::store::redis::Continuation>,
        step: u32,
    ) -> Result<(Applied, Option<crate::store::redis::Continuation>), Error> {
        let seq_key = &self.inner.seq_keys;
        let Some(tier) = &self.inner.tier else {
            let run = r.invalidate_step(seq_key, plan, from.as_ref(), "");
            return self.bounded("invalidate", run).await;
        };
        // The nonce (set by `plan()`, one per step) lets this instance tell
        // its own echo (ignored once the reply is applied) from a lost reply
        // (then the echo, naming everything removed, is applied).
        let nonce = match step {
            0 => plan.nonce.clone(),
            n => format!("{}.{n}", plan.nonce),
        };
        // Settled by the reply; dropped unsettled (the reply is lost, or
        // the caller gave up at this await), the echo is applied instead.
        let pending = tier.sending(&nonce);
        let run = r.invalidate_step(seq_key, plan, from.as_ref(), &nonce);
        let result = self.bounded("invalidate", run).await;
        match &result {
            Ok((applied, _)) => {
                tier.apply(&applied.entries, &applied.versions);
                pending.replied();
            }
            Err(_) => {
                // Whether it ran is unknown: drop what the plan names now,
                // and what it removed when its echo arrives.
                tier.apply(
                    &plan.keys.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>(),
                    &[],
                );
                drop(pending);
            }
        }
        result
    }

    /// A plan with this cache's prefixes, marker lifetime and coherence
    /// channel.
    pub(crate) fn plan(&self) -> InvalidationPlan {
        InvalidationPlan {
            budget: self.inner.invalidation_batch,
            marker_ttl: self.marker_ttl(),
            prefixes: self.inner.layout.prefixes(),
            coherence: self.coherence(),
            // Only a cache with a tier reads its echoes.
            nonce: if self.inner.tier.is_some() {
                format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
            } else {
                String::new()
            },
            ..InvalidationPlan::default()
        }
    }

    pub(crate) fn after_invalidation(
        &self,
        removed: u64,
        took: Duration,
        events: Vec<InvalidationEvent>,
    ) {
        self.inner.metrics.invalidation(removed, took);
        Stats::add(&self.inner.stats.invalidations, 1);
        Stats::add(&self.inner.stats.entries_removed, removed);
        for event in events {
            // No receiver is not an error: nobody in-process is listening.
            let _ = self.inner.events.send(event);
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) async fn bounded<T>(
        &self,
        what: &str,
        op: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let Some(permit) = self.inner.breaker.allow() else {
            Stats::add(&self.inner.stats.breaker_skipped, 1);
            return Err(Error::new(
                ErrorKind::Connection,
                format!("{what} not tried: the store failed repeatedly (circuit open)"),
            ));
        };
        let result = match tokio::time::timeout(self.inner.timeout, op).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(what, self.inner.timeout)),
        };
        match &result {
            Err(e) if matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Connection) => {
                // The server may have restarted, or failed over, meanwhile.
                self.inner.epoch.forget();
                if permit.failure() {
                    Stats::add(&self.inner.stats.breaker_trips, 1);
                    self.inner.metrics.circuit(true);
                    tracing::warn!(target: "cache_runtime", namespace = self.namespace(), "the store failed repeatedly: calls skip it for a while (circuit open)");
                }
            }
            // An error the store answered with: it is reachable. (Left
            // unreported, a probe would keep the breaker open for good.)
            Ok(_) | Err(_) => {
                if permit.success() {
                    self.inner.metrics.circuit(false);
                    tracing::info!(target: "cache_runtime", namespace = self.namespace(), "the store answers again (circuit closed)");
                }
            }
        }
        result
    }

    pub(crate) fn report(&self, op: &str, error: &Error) {
        Stats::add(&self.inner.stats.store_errors, 1);
        self.inner.metrics.store_error(op);
        tracing::warn!(target: "cache_runtime", op, namespace = self.namespace(), error = %error, "cache store failed; the call goes on without the cache");
    }
}

/// How long an applied foreign event is remembered (so that the other
/// instances, which heard it too, skip it).
#[cfg(feature = "redis")]
const EVENT_CLAIM_TTL: Duration = Duration::from_secs(60);

/// How often the subscriber checks that its connection still answers.
#[cfg(feature = "redis")]
const SUBSCRIBER_PING: Duration = Duration::from_secs(1);

/// What the subscriber's messages do to a cache (held weakly: the
/// subscriber does not keep a dropped cache alive).
#[cfg(feature = "redis")]
struct CacheHooks {
    cache: WeakCache,
}

#[cfg(feature = "redis")]
impl crate::subscriber::Hooks for CacheHooks {
    fn connected(&self) {
        let Some(cache) = self.cache.upgrade() else {
            return;
        };
        // The server may have changed while the link was down: its epoch,
        // and its settings.
        cache.inner.epoch.forget();
        cache.start_eviction_check();
        if let Some(tier) = cache.tier() {
            tier.connected();
            // Where the numbers start, before a second can pass.
            let check = cache.clone();
            tokio::spawn(async move { check.check_server().await });
        }
        Stats::add(&cache.inner.stats.subscriber_connects, 1);
        tracing::debug!(target: "cache_runtime", namespace = cache.namespace(), "subscribed");
    }

    fn disconnected(&self) {
        if let Some(cache) = self.cache.upgrade() {
            cache.inner.epoch.forget();
            if let Some(tier) = cache.tier() {
                tier.disconnected();
            }
            tracing::warn!(target: "cache_runtime", namespace = cache.namespace(), "pub/sub connection lost; the in-process tier stops answering within its grace");
        }
    }

    fn alive(&self, at: Instant) {
        if let Some(cache) = self.cache.upgrade()
            && let Some(tier) = cache.tier()
        {
            tier.alive(at);
        }
    }

    fn coherence(&self, message: crate::subscriber::Coherence) {
        if let Some(cache) = self.cache.upgrade()
            && let Some(tier) = cache.tier()
        {
            if tier.heard_seq(message.seq) {
                cache.lost_messages();
            }
            for pattern in &message.patterns {
                tier.apply_pattern(pattern);
            }
            let versions: Vec<(String, u64)> = message
                .version_names
                .into_iter()
                .zip(message.version_values)
                .collect();
            tier.apply(&message.entries, &versions);
            Stats::add(&cache.inner.stats.coherence_applied, 1);
        }
    }

    fn echo(&self, message: crate::subscriber::Coherence) {
        if let Some(cache) = self.cache.upgrade()
            && let Some(tier) = cache.tier()
        {
            if tier.heard_seq(message.seq) {
                cache.lost_messages();
            }
            if message.nonce.is_empty() {
                return;
            }
            let versions = message
                .version_names
                .into_iter()
                .zip(message.version_values)
                .collect();
            tier.echo(&message.nonce, message.entries, versions);
        }
    }

    fn event(&self, channel: &str, event: Result<InvalidationEvent, serde_json::Error>) {
        let Some(cache) = self.cache.upgrade() else {
            return;
        };
        let event = event.map_err(|e| e.to_string()).and_then(|e| {
            if e.v == crate::events::EVENT_SCHEMA_VERSION {
                Ok(e)
            } else {
                Err(format!("unknown schema version {}", e.v))
            }
        });
        match event {
            Err(e) => {
                Stats::add(&cache.inner.stats.events_rejected, 1);
                tracing::warn!(target: "cache_runtime", channel, error = %e, "malformed invalidation event ignored");
            }
            // Already applied by the instance that published it; tiers hear
            // what it removed on the coherence channel.
            Ok(event) if event.applied => {}
            Ok(event) if cache.inner.apply_events => cache.receive_event(event),
            Ok(_) => {}
        }
    }
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
