//! The [`Cache`] handle, its [builder](CacheBuilder), and the read-through
//! path every cached call takes.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::broadcast;

use crate::codec::Codec;
use crate::entry;
use crate::error::{Error, ErrorKind};
use crate::events::InvalidationEvent;
use crate::invalidation::Invalidation;
use crate::key::{Layout, validate_namespace};
use crate::options::{CacheOptions, Ttl};
use crate::shape::{Fill, Plain, Res, Shape};
use crate::stats::{Stats, StatsSnapshot};
use crate::store::memory::MemoryStore;
use crate::store::{FillRequest, InvalidationPlan, Lookup, TagNames, UNCONDITIONAL};
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

#[derive(Debug)]
pub(crate) enum Backend {
    Memory(MemoryStore),
    #[cfg(feature = "redis")]
    Redis(crate::store::redis::RedisStore),
}

#[derive(Debug)]
struct Inner {
    backend: Backend,
    layout: Layout,
    seq_key: String,
    default_ttl: Duration,
    jitter: f32,
    codec: Codec,
    timeout: Duration,
    fill_window: Duration,
    instance: String,
    stats: Stats,
    events: broadcast::Sender<InvalidationEvent>,
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
    memory_capacity: u64,
    instance: Option<String>,
}

#[derive(Debug)]
enum StoreChoice {
    Memory,
    #[cfg(feature = "redis")]
    RedisUrl(String),
    #[cfg(feature = "redis")]
    RedisClient(redis::Client),
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
            memory_capacity: 100_000,
            instance: None,
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

    /// Keep entries in Redis through an existing client.
    #[cfg(feature = "redis")]
    pub fn redis_client(mut self, client: redis::Client) -> Self {
        self.store = StoreChoice::RedisClient(client);
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

    /// The most entries the in-process store holds. Default 100,000.
    pub fn memory_capacity(mut self, entries: u64) -> Self {
        self.memory_capacity = entries;
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
        };
        let layout = Layout::new(&self.namespace);
        let instance = self.instance.unwrap_or_else(default_instance_name);
        Ok(Cache {
            inner: Arc::new(Inner {
                backend,
                seq_key: layout.seq(),
                layout,
                default_ttl: self.default_ttl,
                jitter: self.jitter,
                codec: self.codec,
                timeout: self.timeout,
                fill_window: self.fill_window,
                instance,
                stats: Stats::default(),
                events: broadcast::channel(256).0,
            }),
        })
    }
}

fn default_instance_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
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

    /// This cache's namespace.
    pub fn namespace(&self) -> &str {
        self.inner.layout.namespace()
    }

    /// The name this instance signs its events with.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// The counters since the cache was built.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
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
        self.read_through::<Res, _, _, _>(key, options, |_| Vec::new(), load())
            .await
    }

    /// Like [`get_or_load`](Self::get_or_load), for a loader that cannot fail,
    /// with tags computed from the loaded value.
    pub async fn get_or_load_tagged<T, F, Fut, G>(
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
        G: FnOnce(Option<&T>) -> Vec<String>,
    {
        self.read_through::<Plain, _, _, _>(key, options, tags, load())
            .await
    }

    /// The cached value under `key`, if there is one that decodes as `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let lookup = self.lookup(&self.inner.layout.entry(key)).await?;
        self.decode::<T>(key, &lookup.value?)
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
        let bytes = entry::encode(self.inner.codec, false, 0, value)?;
        let req = self.fill_request(
            key,
            bytes,
            ttl,
            tags.iter().map(|t| (*t).to_owned()).collect(),
            UNCONDITIONAL,
        );
        self.store_fill(req).await.map(|_| ())
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
        match &self.inner.backend {
            Backend::Memory(m) => Ok(m.delete_pattern(&full)),
            #[cfg(feature = "redis")]
            Backend::Redis(r) => {
                let mut cursor = 0;
                let mut removed = 0;
                loop {
                    let (next, n) = self
                        .bounded("pattern delete", r.delete_pattern_step(&full, cursor))
                        .await?;
                    removed += n;
                    if next == 0 {
                        return Ok(removed);
                    }
                    cursor = next;
                }
            }
        }
    }

    /// The read-through path behind `#[cached]` and `get_or_load`.
    pub(crate) async fn read_through<S, R, Fut, G>(
        &self,
        key: &str,
        options: &CacheOptions,
        tags: G,
        load: Fut,
    ) -> R
    where
        S: Shape<R>,
        Fut: Future<Output = R>,
        G: FnOnce(Option<&S::Inner>) -> Vec<String>,
    {
        let inner = &*self.inner;
        let entry_key = inner.layout.entry(key);
        let token = match self.lookup(&entry_key).await {
            Some(Lookup {
                value: Some(bytes),
                token,
            }) => match self.decode::<S::Stored>(key, &bytes) {
                Some(stored) => {
                    Stats::add(&inner.stats.hits, 1);
                    tracing::trace!(target: "cache_runtime", name = options.name(), key, "hit");
                    return S::join(stored);
                }
                None => Some(token),
            },
            Some(Lookup { value: None, token }) => Some(token),
            None => None,
        };
        Stats::add(&inner.stats.misses, 1);
        tracing::trace!(target: "cache_runtime", name = options.name(), key, "miss");
        let started = Instant::now();
        let value = load.await;
        // A read that faulted skips the fill: the store is not answering, and
        // the caller should not wait for a second timeout.
        let Some(token) = token else { return value };
        if started.elapsed() >= inner.fill_window {
            Stats::add(&inner.stats.fills_rejected, 1);
            return value;
        }
        let (bytes, ttl, tags) = match S::split(&value) {
            Fill::Value { stored, inner: v } => (
                entry::encode(inner.codec, false, 0, stored),
                self.ttl_for(options),
                tags(Some(v)),
            ),
            Fill::Absent(stored) => match options.none_ttl() {
                Some(ttl) => (
                    entry::encode(inner.codec, true, 0, stored),
                    Some(with_jitter(ttl, inner.jitter)),
                    tags(None),
                ),
                None => return value,
            },
            Fill::Skip => return value,
        };
        match bytes {
            Ok(bytes) => {
                let req = self.fill_request(key, bytes, ttl, tags, token);
                match self.store_fill(req).await {
                    Ok(true) => Stats::add(&inner.stats.fills, 1),
                    Ok(false) => {
                        Stats::add(&inner.stats.fills_rejected, 1);
                        tracing::debug!(target: "cache_runtime", key, "fill refused: invalidated since the read");
                    }
                    Err(e) => self.report("fill", &e),
                }
            }
            Err(e) => self.report("encode", &e),
        }
        value
    }

    fn ttl_for(&self, options: &CacheOptions) -> Option<Duration> {
        let jitter = options.jitter_choice().unwrap_or(self.inner.jitter);
        match options.ttl_choice() {
            Ttl::Default => Some(with_jitter(self.inner.default_ttl, jitter)),
            Ttl::For(ttl) => Some(with_jitter(ttl, jitter)),
            Ttl::Forever => None,
        }
    }

    fn fill_request(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        tags: Vec<String>,
        token: u64,
    ) -> FillRequest {
        let layout = &self.inner.layout;
        FillRequest {
            entry: layout.entry(key),
            marker: layout.key_marker(key),
            tags: tags.iter().map(|t| self.tag_names(t)).collect(),
            value,
            ttl,
            token,
        }
    }

    pub(crate) fn tag_names(&self, tag: &str) -> TagNames {
        TagNames {
            set: self.inner.layout.tag(tag),
            marker: self.inner.layout.tag_marker(tag),
        }
    }

    pub(crate) fn entry_names(&self, key: &str) -> (String, String) {
        (
            self.inner.layout.entry(key),
            self.inner.layout.key_marker(key),
        )
    }

    pub(crate) fn fill_window(&self) -> Duration {
        self.inner.fill_window
    }

    fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Option<T> {
        match entry::decode(bytes).and_then(|env| env.codec.decode::<T>(env.payload)) {
            Ok(v) => Some(v),
            Err(e) => {
                Stats::add(&self.inner.stats.decode_errors, 1);
                tracing::warn!(target: "cache_runtime", key, error = %e, "cached value does not decode; treating it as a miss");
                None
            }
        }
    }

    async fn lookup(&self, entry_key: &str) -> Option<Lookup> {
        match &self.inner.backend {
            Backend::Memory(m) => Some(m.lookup(entry_key)),
            #[cfg(feature = "redis")]
            Backend::Redis(r) => match self
                .bounded("read", r.lookup(entry_key, &self.inner.seq_key))
                .await
            {
                Ok(l) => Some(l),
                Err(e) => {
                    self.report("read", &e);
                    None
                }
            },
        }
    }

    async fn store_fill(&self, req: FillRequest) -> Result<bool, Error> {
        match &self.inner.backend {
            Backend::Memory(m) => Ok(m.fill(req)),
            #[cfg(feature = "redis")]
            Backend::Redis(r) => self.bounded("fill", r.fill(req)).await,
        }
    }

    /// Runs a plan of key deletes, tag invalidations and a publish, in one
    /// round trip on Redis.
    pub(crate) async fn apply(&self, plan: &InvalidationPlan) -> Result<u64, Error> {
        match &self.inner.backend {
            Backend::Memory(m) => Ok(m.invalidate(plan)),
            #[cfg(feature = "redis")]
            Backend::Redis(r) => {
                self.bounded("invalidate", r.invalidate(&self.inner.seq_key, plan))
                    .await
            }
        }
    }

    pub(crate) fn after_invalidation(&self, removed: u64, event: Option<InvalidationEvent>) {
        Stats::add(&self.inner.stats.invalidations, 1);
        Stats::add(&self.inner.stats.entries_removed, removed);
        if let Some(event) = event {
            // No receiver is not an error: nobody in-process is listening.
            let _ = self.inner.events.send(event);
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    async fn bounded<T>(
        &self,
        what: &str,
        op: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.inner.timeout, op).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(what, self.inner.timeout)),
        }
    }

    pub(crate) fn report(&self, op: &str, error: &Error) {
        Stats::add(&self.inner.stats.store_errors, 1);
        tracing::warn!(target: "cache_runtime", op, namespace = self.namespace(), error = %error, "cache store failed; the call goes on without the cache");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
