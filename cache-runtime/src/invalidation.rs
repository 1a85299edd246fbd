//! Invalidations: keys, tags and patterns removed together, and an event
//! published once they are gone.

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use crate::cache::{Cache, InvalidationReport};
use crate::error::Error;
use crate::events::{EVENT_SCHEMA_VERSION, InvalidationEvent, entity_of, now_ms};
use crate::store::InvalidationPlan;

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
    keys: Vec<String>,
    tags: Vec<String>,
    patterns: Vec<String>,
    bumps: Vec<String>,
    publish: Option<String>,
}

impl<'c> Invalidation<'c> {
    pub(crate) fn new(cache: &'c Cache) -> Self {
        Invalidation {
            cache,
            keys: Vec::new(),
            tags: Vec::new(),
            patterns: Vec::new(),
            bumps: Vec::new(),
            publish: None,
        }
    }

    /// Delete the entry under `key`.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
        self
    }

    /// Delete the entries under `keys`.
    pub fn keys<I: IntoIterator<Item = S>, S: Into<String>>(mut self, keys: I) -> Self {
        self.keys.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Delete every entry tagged `tag`.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Delete every entry tagged with any of `tags`.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Delete every entry whose key matches the glob `pattern` (with `SCAN`,
    /// never `KEYS`).
    pub fn pattern(mut self, pattern: impl Into<String>) -> Self {
        self.patterns.push(pattern.into());
        self
    }

    /// Delete every entry matching any of `patterns`.
    pub fn patterns<I: IntoIterator<Item = S>, S: Into<String>>(mut self, patterns: I) -> Self {
        self.patterns.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Increment the version `name`: every entry read under the old version
    /// (`#[cached(version = "...")]`) is a miss from now on and expires by
    /// its TTL.
    pub fn bump(mut self, name: impl Into<String>) -> Self {
        self.bumps.push(name.into());
        self
    }

    /// Increment each of the versions `names`.
    pub fn bumps<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.bumps.extend(names.into_iter().map(Into::into));
        self
    }

    /// Publish an [`InvalidationEvent`] named `event` (for example
    /// `post:updated`) on the channel `<namespace>:<event>` once the entries
    /// are gone.
    pub fn publish(mut self, event: impl Into<String>) -> Self {
        self.publish = Some(event.into());
        self
    }

    /// Runs the invalidation. Patterns go first (a `SCAN` each); then keys,
    /// tags and the event in one round trip, so the event is only seen once
    /// everything it names is gone.
    ///
    /// If the store fails (Redis unreachable), the invalidation is kept in
    /// the cache's outbox and retried until it succeeds; until then this
    /// cache does not serve from Redis (reads go to the loader), so nothing
    /// it should have removed is served once Redis is back. The error is
    /// still returned.
    pub async fn run(self) -> Result<InvalidationReport, Error> {
        let cache = self.cache;
        let pending = crate::outbox::Pending {
            keys: self.keys.clone(),
            tags: self.tags.clone(),
            patterns: self.patterns.clone(),
            bumps: self.bumps.clone(),
            publish: self.publish.clone(),
        };
        let result = self.run_once().await;
        if let Err(e) = &result
            && e.kind() != crate::ErrorKind::Codec
        {
            cache.outbox_push(pending);
        }
        result
    }

    /// One attempt, without the outbox.
    pub(crate) async fn run_once(self) -> Result<InvalidationReport, Error> {
        use tracing::Instrument as _;
        let span = tracing::debug_span!(
            target: "cache_runtime",
            "cache.invalidate",
            cache = self.cache.namespace(),
            keys = self.keys.len(),
            tags = self.tags.len(),
            patterns = self.patterns.len(),
            bumps = self.bumps.len(),
            removed = tracing::field::Empty,
            store_ms = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let result = self.apply(started).instrument(span.clone()).await;
        span.record("store_ms", started.elapsed().as_secs_f64() * 1e3);
        match &result {
            Ok(report) => span
                .record("removed", report.removed)
                .record("outcome", "ok"),
            Err(_) => span.record("outcome", "failed"),
        };
        result
    }

    async fn apply(self, started: std::time::Instant) -> Result<InvalidationReport, Error> {
        let cache = self.cache;
        let mut removed = 0;
        // A failed pattern does not stop the rest: the keys, tags and event
        // still go; the first error is returned at the end.
        let mut first_error = None;
        for pattern in &self.patterns {
            match cache.delete_pattern(pattern).await {
                Ok(n) => removed += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let event = self.publish.as_ref().map(|name| InvalidationEvent {
            v: EVENT_SCHEMA_VERSION,
            namespace: cache.namespace().to_owned(),
            event: name.clone(),
            entity: entity_of(name).to_owned(),
            keys: self.keys.clone(),
            tags: self.tags.clone(),
            patterns: self.patterns.clone(),
            bumps: self.bumps.clone(),
            ts: now_ms(),
            instance: cache.instance().to_owned(),
            applied: true,
        });
        let plan = InvalidationPlan {
            keys: self.keys.iter().map(|k| cache.entry_names(k)).collect(),
            tags: self.tags.iter().map(|t| cache.tag_names(t)).collect(),
            bumps: self.bumps.iter().map(|v| cache.version_name(v)).collect(),
            publish: match &event {
                Some(e) => Some((
                    e.channel(),
                    serde_json::to_string(e).map_err(|e| {
                        Error::with_source(crate::ErrorKind::Codec, "encoding an event", e)
                    })?,
                )),
                None => None,
            },
            ..cache.plan()
        };
        if !plan.is_empty() {
            removed += cache.apply(&plan).await?.removed;
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        cache.count_families(&self.keys, &self.tags);
        cache.after_invalidation(removed, started.elapsed(), event);
        Ok(InvalidationReport { removed })
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
