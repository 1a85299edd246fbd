//! Invalidations and write-through puts: `Cache::change` applies them
//! together (patterns' scans, then one step per cache: keys, tags, versions,
//! the puts' checks and markings, events; then the puts' fills); a step on
//! Redis keeps the instance's own tier coherent (its reply, or its echo);
//! `set`, `put`, `put_after` and the write-through types.

use std::time::Duration;

use serde::Serialize;

use crate::entry::{self, Meta};
use crate::error::Error;
use crate::events::{InvalidationEvent, now_ms};
use crate::options::CacheOptions;
use crate::stats::Stats;
use crate::store::{
    Applied, Continuation, FillRequest, InvalidationPlan, Store, TagNames, Token, UNCONDITIONAL,
};
use crate::ttl::millis;

use super::invalidation::Invalidation;
use super::*;
use crate::spec::Spec;

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
    /// Stores `value` under `key` for `ttl` (`None`: no expiry), as a member
    /// of `tags`, whatever was there.
    ///
    /// Not race-safe: a reader that loaded an older value before this call
    /// may still fill it over this one (and another instance's tier keeps
    /// its copy until it expires). For a value written to the database, use
    /// [`put`](Self::put) (or [`put_after`](Self::put_after), what
    /// `#[cache_put]` does), which refuses such fills. `set` suits values
    /// nothing else writes: seeding, tests, derived data.
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
        tags: &[&str],
    ) -> Result<(), Error> {
        // Stamped with the epoch readers know (learnt first if need be).
        if self.inner.store.epoch().get().is_none() {
            self.read_token().await;
        }
        let meta = Meta {
            fresh_until_ms: ttl.map_or(0, |t| now_ms().saturating_add(millis(t))),
            epoch: self.inner.store.epoch().get().unwrap_or(0),
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
            ttl: super::freshness::kept_for(ttl, options),
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
        let results: Vec<Result<bool, Error>> =
            futures_util::future::join_all(reqs.into_iter().map(|req| self.inner.store.fill(req)))
                .await;
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
        let mut removed = self.apply(&marked).await?.removed;
        // The own tier at once (dropping is always safe), and again at the
        // end for copies a racing read put back.
        if let Some(tier) = &self.inner.tier {
            tier.apply_pattern(&full);
        }
        let mut cursor = 0;
        loop {
            let (next, names) = self.inner.store.scan_step(&full, cursor).await?;
            if !names.is_empty() {
                removed += self.remove_entries(names).await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if let Some(tier) = &self.inner.tier {
            tier.apply_pattern(&full);
        }
        Ok(removed)
    }

    /// Removes entries named in full, as an invalidation of their keys does
    /// (markers, dependents).
    pub(crate) async fn remove_entries(&self, names: Vec<String>) -> Result<u64, Error> {
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

    /// The fill of a put, with `token` (its envelope stamped with the
    /// token's epoch: it was encoded before the token was known).
    pub(crate) fn put_request(&self, mut put: Put, token: Token) -> FillRequest {
        entry::set_epoch(&mut put.bytes, crate::epoch::of(token.seq));
        let mut req = self.fill_request(&put.key, put.bytes, put.ttl, put.links, token);
        req.idle = put.idle;
        req
    }

    /// A fill with `token`: refused if an invalidation came after it was
    /// read, or if the fill window passed since.
    pub(crate) fn fill_request(
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

    pub(crate) fn write_request(
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
                self.outbox_push(crate::spec::Spec {
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
                self.outbox_push(crate::spec::Spec {
                    keys: vec![key],
                    ..Default::default()
                });
                Err(e)
            }
        }
    }

    pub(crate) async fn store_fill(&self, req: FillRequest) -> Result<bool, Error> {
        self.inner.store.fill(req).await
    }

    /// Runs a plan of key deletes, tag invalidations and a publish, in one
    /// round trip on Redis, then drops what it removed from this instance's
    /// in-process tier (the other instances hear it on pub/sub).
    pub(crate) async fn apply(&self, plan: &InvalidationPlan) -> Result<Applied, Error> {
        // Big invalidations run in steps on Redis (each bounded by the
        // timeout); a failed step fails the whole, which the outbox then
        // retries from the start.
        let mut total = Applied::default();
        let mut from = None;
        let generation = self.inner.store.epoch().generation();
        for step in 0u32.. {
            let (applied, next) = self.invalidation_step(plan, from, step).await?;
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

    /// One step of an invalidation, keeping the tier coherent.
    pub(crate) async fn invalidation_step(
        &self,
        plan: &InvalidationPlan,
        from: Option<Continuation>,
        step: u32,
    ) -> Result<(Applied, Option<Continuation>), Error> {
        let store = &self.inner.store;
        let Some(tier) = &self.inner.tier else {
            return store.invalidate_step(plan, from.as_ref(), "").await;
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
        let result = store.invalidate_step(plan, from.as_ref(), &nonce).await;
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
