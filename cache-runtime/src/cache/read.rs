//! The read-through path of every cached call (`#[cached]`, `get_or_load`):
//! the in-process check (`lookup.rs`), then the network path (lookup, fill
//! token, single-flight, the distributed lock, the loader, the fill), and
//! the plain reads (`get`, `get_or_load*`). The bypass and the forced
//! refresh are `reload.rs`.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::adaptive::Adapt;
use crate::entry::{self, Meta};
use crate::events::now_ms;
use crate::flight::{self, Landed, Role, Sharer};
use crate::key::Key;
use crate::options::CacheOptions;
use crate::shape::{Fill, Plain, Res, Shape};
use crate::stats::Stats;
use crate::status::CacheStatus;
use crate::store::{AnyValue, Lookup, Token, Typed};
use crate::switch::Mode;
use crate::tier::LocalTier;
use crate::ttl::{millis, with_jitter};

use super::fail_safe::{Failure, HardTimeout, run_loader};
use super::freshness::{self, Freshness, local_for};
use super::lock::{LockWait, Step};
use super::remote::First;
use super::soft::Soft;
use super::*;

/// One cached read: the key, its options, the version namespace it belongs
/// to, and how to hand a non-stored outcome to coalesced callers.
#[derive(Debug)]
pub(crate) struct Read<'a, R, T> {
    /// In place when short (no allocation for a typical key).
    pub(crate) key: Key,
    pub(crate) options: &'a CacheOptions,
    pub(crate) version: Option<String>,
    pub(crate) share: Option<Sharer<R>>,
    /// How to keep the stored value decoded in process (`T` is the stored
    /// part of `R`).
    pub(crate) typed: Option<Typed<T>>,
    /// `hard_timeout`: how long the loader may run, and the outcome when it
    /// ran past that with no fail-safe copy to answer.
    pub(crate) hard_timeout: Option<HardTimeout<R>>,
    /// `soft_timeout`: how long a caller holding a copy waits for the
    /// loader before the copy answers (set only on a read running on its
    /// own task, which goes on to fill).
    pub(crate) soft: Option<Soft<R>>,
}

impl<'a, R, T> Read<'a, R, T> {
    pub(crate) fn new(key: Key, options: &'a CacheOptions) -> Self {
        Read {
            key,
            options,
            version: None,
            share: None,
            typed: None,
            hard_timeout: None,
            soft: None,
        }
    }
}

/// A cached read once the in-process check has run: the value of a hit in
/// process (`Ready`), or the rest of the read (`Pending`, a small future:
/// a box). A caller matches on it rather than awaiting one future that
/// holds either, so that neither the value nor a future the value's size
/// is moved through the caller's own future.
#[doc(hidden)]
#[derive(Debug)]
pub enum Begun<R, F> {
    Ready(R),
    Pending(F),
}

/// The rest of a read past the in-process check: the boxed network path,
/// in the call's span or, with no subscriber that wants it, in none.
#[doc(hidden)]
pub enum Remote<F> {
    Traced(std::pin::Pin<Box<tracing::instrument::Instrumented<F>>>),
    Quiet(std::pin::Pin<Box<F>>),
}

impl<F: Future> Future for Remote<F> {
    type Output = F::Output;

    #[inline]
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        match &mut *self {
            Remote::Traced(read) => read.as_mut().poll(cx),
            Remote::Quiet(read) => read.as_mut().poll(cx),
        }
    }
}

/// Finishes an `async fn` with a [`Begun`] read: returns its value at
/// once, or awaits the rest of the read. As the `#[cached]` expansion does,
/// the match is a statement of its own, so that the function's future
/// holds the rest (a box), not the `Begun` (a match scrutinee's temporary
/// would live across the `.await`). It `return`s: use it as the function's
/// last expression.
macro_rules! finish {
    ($begun:expr) => {{
        let rest = match $begun {
            $crate::cache::read::Begun::Ready(value) => return value,
            $crate::cache::read::Begun::Pending(rest) => rest,
        };
        rest.await
    }};
}
pub(crate) use finish;

/// The value kept decoded beside the bytes, else the bytes decoded; `None`
/// (not reported) when neither works.
pub(crate) fn decode_quietly<T: DeserializeOwned>(
    bytes: &[u8],
    kept: Option<&AnyValue>,
    typed: Option<&Typed<T>>,
) -> Option<(Meta, T)> {
    let env = entry::decode(bytes).ok()?;
    let value = match unpack_kept(kept, typed) {
        Some(value) => value,
        None => env.codec.decode::<T>(env.payload).ok()?,
    };
    Some((env.meta, value))
}

/// The value kept decoded beside the bytes, when there is one of type `T`.
pub(crate) fn unpack_kept<T>(kept: Option<&AnyValue>, typed: Option<&Typed<T>>) -> Option<T> {
    let (kept, typed) = (kept?, typed?);
    (typed.unpack)(&**kept)
}

/// What a leader lands for a value it does not store: the whole value for
/// types that can be shared (with the leader's token: a waiter whose own
/// token is newer does not take it), else `Retry`.
pub(crate) fn shared<R>(
    share: Option<&Sharer<R>>,
    value: &R,
    token: Option<(Token, u64)>,
) -> Landed {
    match (share, token) {
        (Some(s), Some((token, _))) => Landed::Shared((s.pack)(value), token.seq),
        _ => Landed::Retry,
    }
}

impl Cache {
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
        finish!(self.read_through::<Res, _, _, _, _>(
            Read::new(Key::from(key), options),
            |_| Links::new(),
            load,
        ))
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
        finish!(self.read_through::<Plain, _, _, _, _>(
            Read::new(Key::from(key), options),
            |v| tags(v).into(),
            load,
        ))
    }

    /// [`get_or_load_tagged`](Self::get_or_load_tagged) for a fallible
    /// loader: an `Err` is returned as it is and not cached; the tags are
    /// computed from the `Ok` value (`None` when there is none to store).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use cache_runtime::{Cache, CacheOptions, Links};
    /// let cache = Cache::in_memory();
    /// let opts = CacheOptions::new("post");
    /// let tags = |post: Option<&(u32, String)>| match post {
    ///     Some((author, _)) => Links::new().tag(format!("author:{author}")),
    ///     None => Links::new(),
    /// };
    /// let failed: Result<(u32, String), String> = cache
    ///     .try_get_or_load_tagged("post:1", &opts, tags, || async { Err("database down".to_string()) })
    ///     .await;
    /// assert!(failed.is_err());
    /// let post: Result<(u32, String), String> = cache
    ///     .try_get_or_load_tagged("post:1", &opts, tags, || async { Ok((7, "hello".to_string())) })
    ///     .await;
    /// assert_eq!(post.unwrap().1, "hello", "the error was not cached");
    /// cache.invalidate().tag("author:7").await.unwrap();
    /// assert_eq!(cache.get::<(u32, String)>("post:1").await, None, "filed under its author");
    /// # }
    /// ```
    pub async fn try_get_or_load_tagged<T, E, F, Fut, G, L>(
        &self,
        key: &str,
        options: &CacheOptions,
        tags: G,
        load: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        G: FnOnce(Option<&T>) -> L,
        L: Into<Links>,
    {
        finish!(self.read_through::<Res, _, _, _, _>(
            Read::new(Key::from(key), options),
            |v| tags(v).into(),
            load,
        ))
    }

    /// The cached value under `key`, if there is one that decodes as `T`.
    /// It is read as stored: freshness and versions are not checked.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let lookup = self
            .lookup(self.inner.layout.entry_name(key), None, None)
            .await?;
        let (meta, value) = self.decode_entry::<T>(key, &lookup.value?)?;
        // Not an entry a restarted server brought back from an older life.
        self.current_epoch(&meta).then_some(value)
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
    /// whole state of a miss. A hit in process is returned as it is
    /// ([`Begun::Ready`]); the caller awaits the rest otherwise (`finish!`).
    pub(crate) fn read_through<'a, S, R, L, Fut, G>(
        &'a self,
        read: Read<'a, R, S::Stored>,
        tags: G,
        load: L,
    ) -> Begun<R, Remote<impl Future<Output = R> + 'a>>
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
        let in_process = self.in_process_read::<S, R>(&read, version_key.as_deref(), mode);
        match in_process {
            Some(hit) => Begun::Ready(hit),
            None => {
                use tracing::Instrument as _;
                let span = self.read_span(read.options, &read.key);
                let remote =
                    self.read_remote::<S, R, L, Fut, G>(read, version_key, tags, load, mode);
                if span.is_disabled() {
                    Begun::Pending(Remote::Quiet(Box::pin(remote)))
                } else {
                    Begun::Pending(Remote::Traced(Box::pin(remote.instrument(span))))
                }
            }
        }
    }

    /// The read-through path past the in-process check.
    pub(crate) async fn read_network<S, R, L, Fut, G>(
        &self,
        read: Read<'_, R, S::Stored>,
        version_key: Option<String>,
        tags: G,
        load: L,
        mode: Mode,
        first: Option<Box<First<S::Stored>>>,
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
            return crate::adaptive::ignored(load()).await;
        }
        if mode == Mode::Refresh {
            return self
                .reload::<S, R, L, Fut, G>(&read.key, read.options, tags, load)
                .await;
        }
        let inner = &*self.inner;
        let Read {
            key,
            options,
            version: _,
            share,
            typed,
            hard_timeout,
            mut soft,
        } = read;
        let key = key.as_str();
        // The entry's name, written out where a lookup uses it.
        let name = inner.layout.entry_name(key);
        let typed = typed.as_ref();
        let tier = inner.tier.as_deref();
        let First {
            started,
            entry_key,
            local_token,
            mut found,
            decoded: mut first_decoded,
            checked: mut first_checked,
        } = match first {
            Some(first) => *first,
            None => {
                // As in `read_remote`: the window starts before the read,
                // the tier's token is taken before it.
                let started = Instant::now();
                let entry_key = inner.layout.entry(key);
                let local_token = tier.map(LocalTier::token);
                let found = self
                    .lookup(name, version_key.as_deref(), options.idle_choice())
                    .await;
                First {
                    started: Some(started),
                    entry_key,
                    local_token,
                    found,
                    decoded: None,
                    checked: None,
                }
            }
        };
        // A plain first read on Redis read no fill token: the window starts
        // now, before any token is read.
        let started = started.unwrap_or_else(Instant::now);
        let mut leader: Option<flight::Leader<'_>> = None;
        // The fill token this caller read when it became the leader.
        let mut leader_token: Option<u64> = None;
        let mut waiting = LockWait::default();
        // The expired copy that answers if the loader fails (`fail_safe`),
        // as the last lookup found it: an invalidation since removes it.
        let mut fallback: Option<S::Stored>;
        let (lock, mut refreshing) = loop {
            let mut stale = None;
            fallback = None;
            // The first lookup's verdict, when `read_remote` checked it.
            let checked = first_checked.take();
            if let Some(
                lookup @ Lookup {
                    value: Some(bytes),
                    version: current,
                    token,
                    typed: kept,
                },
            ) = &found
            {
                // What `read_remote` decoded of the first lookup is not
                // decoded (nor reported) twice.
                let decoded = match first_decoded.take() {
                    Some(decoded) => decoded,
                    None => self.decode_kept::<S::Stored>(key, bytes, kept.as_ref(), typed),
                };
                match decoded {
                    Some((meta, stored))
                        if freshness::version(&meta, Some(*current))
                            && self.current_epoch(&meta) =>
                    {
                        match checked.unwrap_or_else(|| freshness::check(&meta, options)) {
                            Freshness::Fresh => {
                                self.fresh_from_store(
                                    lookup,
                                    &meta,
                                    &stored,
                                    name,
                                    version_key.as_deref(),
                                    options,
                                    typed,
                                    local_token,
                                );
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
                            Freshness::FailSafe => fallback = Some(stored),
                            Freshness::Expired => {}
                        }
                    }
                    Some(_) => {
                        tracing::trace!(target: "cache_runtime", key, "entry of an older version or epoch")
                    }
                    None => {}
                }
            }
            // The loader failed a moment ago: the copy answers without it.
            if let Some(stored) = fallback.take_if(|_| inner.fail_safe.holds(&entry_key)) {
                return self.serve_fail_safe::<S, R>(&entry_key, options, stored, Failure::Held);
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
                        let landed = match soft.as_ref().filter(|_| fallback.is_some()) {
                            Some(soft) => match soft.wait(rx).await {
                                Some(landed) => landed,
                                None => {
                                    let stored = fallback.take().expect("checked");
                                    return self.serve_fail_safe::<S, R>(
                                        &entry_key,
                                        options,
                                        stored,
                                        Failure::Slow,
                                    );
                                }
                            },
                            None => flight::wait(rx).await,
                        };
                        match landed {
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
                                    // The leader's loader failed: this
                                    // caller's copy answers, as the leader's.
                                    if matches!(S::split(&value), Fill::Skip)
                                        && let Some(stored) = fallback.take()
                                    {
                                        return self.serve_fail_safe::<S, R>(
                                            &entry_key,
                                            options,
                                            stored,
                                            Failure::Held,
                                        );
                                    }
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
                            .lookup(name, version_key.as_deref(), options.idle_choice())
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
                .lookup(name, version_key.as_deref(), options.idle_choice())
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
        let run = run_loader(load(), lock.as_ref(), hard_timeout.as_ref());
        // With a copy at hand and a soft timeout, the copy answers the
        // caller once the loader takes longer; the loader goes on (this
        // read runs on its own task) and fills as usual.
        let answer = soft
            .as_mut()
            .filter(|_| fallback.is_some() || refreshing.is_some())
            .and_then(Soft::take);
        let mut answered_fail_safe = None;
        let (outcome, adapt) = match answer {
            Some((after, answer)) => {
                let mut run = std::pin::pin!(run);
                match tokio::time::timeout(after, run.as_mut()).await {
                    Ok(done) => done,
                    Err(_) => {
                        answered_fail_safe = Some(fallback.is_some());
                        answer.send(self.answer_early::<S, R>(
                            &entry_key,
                            options,
                            fallback.take(),
                            refreshing.take(),
                        ));
                        run.await
                    }
                }
            }
            None => run.await,
        };
        // A copy answered at the soft timeout: a panic ends this task here
        // (nobody awaits it), counted first.
        if let (Some(fail_safe), Some(Failure::Panic)) = (answered_fail_safe, outcome.failure()) {
            self.after_soft_timeout(&entry_key, options, fail_safe, true);
        }
        if let Some(why) = outcome.failure()
            && (fallback.is_some() || refreshing.is_some())
        {
            // Waiters read again, and find the copy held.
            if let Some(leader) = leader.take() {
                leader.land(Landed::Retry);
            }
            if let Some(stored) = fallback {
                return self.serve_fail_safe::<S, R>(&entry_key, options, stored, why);
            }
            if why == Failure::Timeout
                && let Some((stored, past_ttl)) = refreshing.take()
            {
                Stats::add(&inner.stats.refresh_failures, 1);
                tracing::warn!(target: "cache_runtime", name = options.name(), key, "refresh ran past its hard timeout; serving the cached value");
                return self.serve_stale::<S, R>(options.name(), stored, past_ttl);
            }
        }
        let value = outcome.into_value(options.name(), key, hard_timeout.as_ref());
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
                adapt,
            )
            .await;
        let failed = matches!(S::split(&value), Fill::Skip);
        // Held before the waiters are told, so those that read again find
        // the copy held.
        let fail_safe = match fallback {
            Some(stored) if failed => {
                Some(self.serve_fail_safe::<S, R>(&entry_key, options, stored, Failure::Error))
            }
            Some(_) => {
                inner.fail_safe.release(&entry_key);
                None
            }
            None => {
                if let Some(fail_safe) = answered_fail_safe {
                    // The copy answered at the soft timeout; the loader's
                    // outcome is still counted, and sets the throttle.
                    self.after_soft_timeout(&entry_key, options, fail_safe, failed);
                }
                None
            }
        };
        if let Some(leader) = leader {
            leader.land(landed);
        }
        if let Some(answer) = fail_safe {
            return answer;
        }
        if let Some((stored, past_ttl)) = refreshing
            && failed
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
    pub(crate) async fn fill_after_load<S, R, G>(
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
        adapt: Adapt,
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
        // The loader's own TTL (`adapt`) is used as given.
        let ttl = if absent {
            options.none_ttl().map(|ttl| {
                Some(adapt.ttl.unwrap_or_else(|| {
                    with_jitter(ttl, options.jitter_choice().unwrap_or(inner.jitter))
                }))
            })
        } else {
            Some(adapt.ttl.or_else(|| self.ttl_for(options)))
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
        let keep = freshness::kept_for(ttl, options);
        let mut links = tags(inner_value);
        links.tags.extend(adapt.tags);
        if links.not_stored || adapt.skip {
            // `unless`, or the loader's `skip`: returned (and shared with
            // waiters), not stored.
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
}
