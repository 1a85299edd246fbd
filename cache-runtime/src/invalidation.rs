//! Invalidations: keys, tags and patterns removed together, and an event
//! published once they are gone.

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use crate::cache::{Cache, InvalidationReport, Put};
use crate::error::Error;
use crate::events::{EVENT_SCHEMA_VERSION, InvalidationEvent, entity_of, event_id, now_ms};
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
    spec: Spec,
    puts: Vec<Put>,
    /// A put whose value did not encode: returned by `run`.
    error: Option<Error>,
}

/// One invalidation as written: an `#[invalidates]` attribute, or the
/// lists of an [`Invalidation`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Spec {
    pub(crate) keys: Vec<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) patterns: Vec<String>,
    pub(crate) bumps: Vec<String>,
    pub(crate) publish: Option<String>,
}

impl Spec {
    fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.tags.is_empty()
            && self.patterns.is_empty()
            && self.bumps.is_empty()
            && self.publish.is_none()
    }

    /// The event it publishes, naming what it invalidates.
    fn event(&self, cache: &Cache) -> Option<InvalidationEvent> {
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

impl Cache {
    /// Applies invalidations and write-through puts together, in this
    /// order: every pattern delete (a `SCAN` each); then one step (one
    /// round trip on Redis, per 10,000 entries removed) that removes every
    /// key and tag, bumps the versions, marks the keys of the puts (so no
    /// fill that read before now can land) and publishes each event, in
    /// the order given; then the puts, sent together, each stored with the
    /// step's sequence number (the last put of a key wins). So a put is
    /// never removed by the invalidations it is applied with.
    ///
    /// With `keep`, a failure of the step keeps the invalidations and the
    /// puts' keys in the outbox (an entry a committed write made stale must
    /// not outlive the outage); a failed pattern keeps the invalidations.
    /// The first error is returned; the rest of the work is still done.
    pub(crate) async fn change(
        &self,
        specs: Vec<Spec>,
        puts: Vec<Put>,
        keep: bool,
    ) -> Result<InvalidationReport, Error> {
        use tracing::Instrument as _;
        let specs: Vec<Spec> = specs.into_iter().filter(|s| !s.is_empty()).collect();
        let count = |f: fn(&Spec) -> usize| specs.iter().map(f).sum::<usize>();
        let span = tracing::debug_span!(
            target: "cache_runtime",
            "cache.invalidate",
            cache = self.namespace(),
            keys = count(|s| s.keys.len()),
            tags = count(|s| s.tags.len()),
            patterns = count(|s| s.patterns.len()),
            bumps = count(|s| s.bumps.len()),
            puts = puts.len(),
            removed = tracing::field::Empty,
            store_ms = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let result = self
            .change_once(&specs, puts, keep)
            .instrument(span.clone())
            .await;
        span.record("store_ms", started.elapsed().as_secs_f64() * 1e3);
        match &result {
            Ok(report) => span
                .record("removed", report.removed)
                .record("outcome", "ok"),
            Err(_) => span.record("outcome", "failed"),
        };
        result
    }

    async fn change_once(
        &self,
        specs: &[Spec],
        puts: Vec<Put>,
        keep: bool,
    ) -> Result<InvalidationReport, Error> {
        let started = std::time::Instant::now();
        let mut removed = 0;
        // A failed pattern does not stop the rest: the keys, tags, events
        // and puts still go; the first error is returned at the end.
        let mut first_error = None;
        let mut pattern_failed = false;
        for pattern in specs.iter().flat_map(|s| &s.patterns) {
            match self.delete_pattern(pattern).await {
                Ok(n) => removed += n,
                Err(e) => {
                    pattern_failed = true;
                    first_error.get_or_insert(e);
                }
            }
        }
        let events: Vec<InvalidationEvent> = specs.iter().filter_map(|s| s.event(self)).collect();
        let publish = events
            .iter()
            .map(|e| {
                serde_json::to_string(e)
                    .map(|payload| (e.channel(), payload))
                    .map_err(|e| {
                        Error::with_source(crate::ErrorKind::Codec, "encoding an event", e)
                    })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let puts = last_per_key(puts);
        // Each put taken after a ticket is checked in the step, before the
        // step marks its key (the checks are in the order of the puts).
        let mut put_checks = Vec::new();
        let mut checked = Vec::new();
        for (i, put) in puts.iter().enumerate() {
            if let crate::cache::Since::Token(since) = put.since() {
                put_checks.push((self.entry_names(put.key()).1, since));
                checked.push(i);
            }
        }
        let plan = InvalidationPlan {
            keys: specs
                .iter()
                .flat_map(|s| s.keys.iter().map(String::as_str))
                .chain(puts.iter().map(Put::key))
                .map(|k| self.entry_names(k))
                .collect(),
            tags: specs
                .iter()
                .flat_map(|s| &s.tags)
                .map(|t| self.tag_names(t))
                .collect(),
            bumps: specs
                .iter()
                .flat_map(|s| &s.bumps)
                .map(|v| self.version_name(v))
                .collect(),
            publish,
            put_checks,
            ..self.plan()
        };
        let kept = |puts: &[Put]| {
            let put_keys = Spec {
                keys: puts.iter().map(|p| p.key().to_owned()).collect(),
                ..Spec::default()
            };
            specs
                .iter()
                .cloned()
                .chain((!put_keys.keys.is_empty()).then_some(put_keys))
        };
        if !plan.is_empty() {
            match self.apply(&plan).await {
                Ok(mut applied) => {
                    removed += applied.removed;
                    // From indexes of the checks to indexes of the puts.
                    applied.conflicts = applied.conflicts.iter().map(|&c| checked[c]).collect();
                    if let Some(e) = self.store_puts(puts, &applied).await {
                        first_error.get_or_insert(e);
                    }
                }
                Err(e) => {
                    if keep && e.kind() != crate::ErrorKind::Codec {
                        for spec in kept(&puts) {
                            self.outbox_push(spec);
                        }
                    }
                    return Err(e);
                }
            }
        }
        if !specs.is_empty() {
            for spec in specs {
                self.count_families(&spec.keys, &spec.tags);
            }
            self.after_invalidation(removed, started.elapsed(), events);
        }
        match first_error {
            Some(e) => {
                // Only a failed pattern leaves something to retry: a failed
                // put's key was marked (its old value is gone).
                if keep && pattern_failed {
                    for spec in kept(&[]) {
                        self.outbox_push(spec);
                    }
                }
                Err(e)
            }
            None => Ok(InvalidationReport { removed }),
        }
    }
}

/// The puts in order, each key's last one only.
fn last_per_key(mut puts: Vec<Put>) -> Vec<Put> {
    if puts.len() > 1 {
        let mut seen = std::collections::HashSet::new();
        puts.reverse();
        puts.retain(|p| seen.insert(p.key().to_owned()));
        puts.reverse();
    }
    puts
}

impl<'c> IntoFuture for Invalidation<'c> {
    type Output = Result<InvalidationReport, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'c>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}
