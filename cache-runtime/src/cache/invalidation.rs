//! Invalidations: keys, tags and patterns removed together, and an event
//! published once they are gone.

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use crate::cache::{Cache, InvalidationReport, Put};
use crate::error::Error;
use crate::events::{EVENT_SCHEMA_VERSION, InvalidationEvent, entity_of, event_id, now_ms};
use crate::spec::Spec;

/// An invalidation being put together; run it with `.await` or
/// [`run`](Self::run).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
/// let cache = cache_runtime::Cache::in_memory();
/// cache.set("post:1", &"hello", None, &["author:7"]).await?;
/// let report = cache.invalidate().tag("author:7").key("post:2").publish("post:updated").await?;
/// assert_eq!(report.removed, 1);
/// assert_eq!(cache.get::<String>("post:1").await, None);
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "an invalidation does nothing until it is awaited"]
pub struct Invalidation<'c> {
    cache: &'c Cache,
    spec: Spec,
    puts: Vec<Put>,
    /// A put whose value did not encode: returned by `run`.
    error: Option<Error>,
}

impl Spec {
    /// The event it publishes, naming what it invalidates.
    pub(crate) fn event(&self, cache: &Cache) -> Option<InvalidationEvent> {
        let name = self.publish.as_ref()?;
        let ts = now_ms();
        Some(InvalidationEvent {
            v: EVENT_SCHEMA_VERSION,
            namespace: cache.namespace().to_owned(),
            event: name.clone(),
            entity: entity_of(name).to_owned(),
            keys: self.keys.clone(),
            tags: self.tags.clone(),
            patterns: self.patterns.clone(),
            bumps: self.bumps.clone(),
            ts,
            instance: cache.instance().to_owned(),
            id: Some(event_id(cache.instance(), ts)),
            applied: true,
        })
    }
}

impl<'c> Invalidation<'c> {
    pub(crate) fn new(cache: &'c Cache) -> Self {
        Invalidation {
            cache,
            spec: Spec::default(),
            puts: Vec::new(),
            error: None,
        }
    }

    /// Delete the entry under `key`.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.spec.keys.push(key.into());
        self
    }

    /// Delete the entries under `keys`.
    pub fn keys<I: IntoIterator<Item = S>, S: Into<String>>(mut self, keys: I) -> Self {
        self.spec.keys.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Delete every entry tagged `tag`.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.spec.tags.push(tag.into());
        self
    }

    /// Delete every entry tagged with any of `tags`.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        self.spec.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Delete every entry whose key matches the glob `pattern` (with `SCAN`,
    /// never `KEYS`).
    pub fn pattern(mut self, pattern: impl Into<String>) -> Self {
        self.spec.patterns.push(pattern.into());
        self
    }

    /// Delete every entry matching any of `patterns`.
    pub fn patterns<I: IntoIterator<Item = S>, S: Into<String>>(mut self, patterns: I) -> Self {
        self.spec
            .patterns
            .extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Increment the version `name`: every entry read under the old version
    /// (`#[cached(version = "...")]`) is a miss from now on and expires by
    /// its TTL.
    pub fn bump(mut self, name: impl Into<String>) -> Self {
        self.spec.bumps.push(name.into());
        self
    }

    /// Increment each of the versions `names`.
    pub fn bumps<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.spec.bumps.extend(names.into_iter().map(Into::into));
        self
    }

    /// Publish an [`InvalidationEvent`] named `event` (for example
    /// `post:updated`) on the channel `<namespace>:<event>` once the entries
    /// are gone.
    pub fn publish(mut self, event: impl Into<String>) -> Self {
        self.spec.publish = Some(event.into());
        self
    }

    /// Also store `value` under `key` (write-through, as
    /// [`Cache::put`](crate::Cache::put) does) in the same step, after the
    /// invalidation: the put survives it even if the invalidation names its
    /// key or tags. A value that does not encode makes `run` return the
    /// error, and nothing is applied.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// use cache_runtime::{Cache, CacheOptions, Links};
    /// let cache = Cache::in_memory();
    /// cache.set("feed", &vec![1], None, &[]).await?;
    /// let options = CacheOptions::new("posts");
    /// cache
    ///     .invalidate()
    ///     .key("feed")
    ///     .put("post:2", &"second", &options, Links::new().tag("author:7"))
    ///     .publish("post:created")
    ///     .await?;
    /// assert_eq!(cache.get::<Vec<u32>>("feed").await, None);
    /// assert_eq!(cache.get::<String>("post:2").await.as_deref(), Some("second"));
    /// # Ok(()) }
    /// ```
    pub fn put<T: serde::Serialize + ?Sized>(
        self,
        key: impl Into<String>,
        value: &T,
        options: &crate::CacheOptions,
        links: impl Into<crate::Links>,
    ) -> Self {
        let put = self
            .cache
            .encode_put(key.into(), value, options, links.into());
        self.with_put(put)
    }

    /// Adds an encoded put, or keeps the error `run` will return.
    fn with_put(mut self, put: Result<Put, Error>) -> Self {
        match put {
            Ok(put) => self.puts.push(put),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Like [`put`](Self::put), for a write that began at `ticket`: the
    /// value is stored only if no invalidation touched `key` since (see
    /// [`Cache::put_after`](crate::Cache::put_after)).
    pub fn put_after<T: serde::Serialize + ?Sized>(
        self,
        ticket: &crate::Ticket,
        key: impl Into<String>,
        value: &T,
        options: &crate::CacheOptions,
        links: impl Into<crate::Links>,
    ) -> Self {
        let put = self
            .cache
            .encode_put(key.into(), value, options, links.into())
            .map(|put| put.after(ticket));
        self.with_put(put)
    }

    /// Runs the invalidation. Patterns go first (a `SCAN` each); then keys,
    /// tags and the event in one round trip, so the event is only seen once
    /// everything it names is gone; then the puts.
    ///
    /// If the store fails (Redis unreachable), the invalidation is kept in
    /// the cache's outbox and retried until it succeeds; until then this
    /// cache does not serve from Redis (reads go to the loader), so nothing
    /// it should have removed is served once Redis is back. The error is
    /// still returned.
    pub async fn run(self) -> Result<InvalidationReport, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.cache.change(vec![self.spec], self.puts, true).await
    }

    /// Runs the invalidation and reports a failure through `tracing` and the
    /// statistics instead of returning it (what `#[invalidates]` does: the
    /// function's own work has succeeded).
    pub async fn run_reported(self) -> Option<InvalidationReport> {
        let cache = self.cache;
        match self.run().await {
            Ok(report) => Some(report),
            Err(e) => {
                cache.report("invalidate", &e);
                None
            }
        }
    }
}

impl<'c> IntoFuture for Invalidation<'c> {
    type Output = Result<InvalidationReport, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'c>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}
