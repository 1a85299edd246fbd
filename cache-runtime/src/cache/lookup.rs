//! One look at where an entry may be: the in-process copy (the in-process
//! store, or the tier in front of Redis) and whether it answers, the store's
//! lookup, the fill token, and what the instance knows of the server's epoch
//! (an entry of another epoch is never served).

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::entry::{self, Meta};
use crate::key::EntryName;
use crate::observe::Source;
use crate::options::CacheOptions;
use crate::shape::Shape;
use crate::stats::Stats;
use crate::status::CacheStatus;
use crate::store::memory::Shared;
use crate::store::{AnyValue, Lookup, Store, Token, Typed};
use crate::switch::Mode;

use super::freshness::{self, Freshness};
use super::read::{Read, decode_quietly, unpack_kept};
use super::*;

impl Cache {
    /// The span of a read that goes past the in-process check.
    pub(crate) fn read_span(&self, options: &CacheOptions, key: &str) -> tracing::Span {
        tracing::debug_span!(
            target: "cache_runtime",
            "cache.read",
            cache = self.namespace(),
            name = options.name(),
            key = %key,
            outcome = tracing::field::Empty,
            store_ms = tracing::field::Empty,
            load_ms = tracing::field::Empty,
        )
    }

    /// The in-process check of a read: a fresh hit in the tier, or in the
    /// in-process store.
    #[inline]
    pub(crate) fn in_process_read<S: Shape<R>, R>(
        &self,
        read: &Read<'_, R, S::Stored>,
        version_key: Option<&str>,
        mode: Mode,
    ) -> Option<R> {
        let inner = &*self.inner;
        // An in-process hit (tier, or the in-process store) builds the entry
        // name in a reused buffer: no allocation but the key's.
        // Only the lookup runs inside the borrow: decoding and cloning run
        // user code, which may itself read the cache.
        // With invalidations waiting to be retried, nothing cached may be
        // trusted: go the network path, which retries them first.
        let local = inner.tier.is_some() || !self.is_redis();
        if !(local && mode == Mode::Normal && inner.outbox.is_empty()) {
            return None;
        }
        let found = inner
            .layout
            .entry_name(&read.key)
            .with_str(|name| self.in_process_entry(name))?;
        self.in_process_hit::<S, R>(&found, version_key, read.options, read.typed.as_ref())
    }

    /// A fresh hit that needs no network: from the in-process tier, or from
    /// the in-process store.
    pub(crate) fn in_process_entry(&self, entry_key: &str) -> Option<Shared> {
        match self.inner.store.backend().as_memory() {
            Some(m) => m.entry(entry_key),
            None => self.inner.tier.as_deref()?.get(entry_key),
        }
    }

    /// Whether an in-process entry answers the read: current version (on
    /// the in-process store, the store's; in the tier, as last heard from
    /// Redis), and fresh.
    pub(crate) fn in_process_hit<S: Shape<R>, R>(
        &self,
        found: &Shared,
        version_key: Option<&str>,
        options: &CacheOptions,
        typed: Option<&Typed<S::Stored>>,
    ) -> Option<R> {
        // A value that does not decode is reported by the full path.
        let (meta, stored) =
            decode_quietly::<S::Stored>(&found.bytes, found.typed.as_ref(), typed)?;
        let current = match (version_key, self.inner.store.backend().as_memory()) {
            (None, _) => Some(0),
            (Some(name), Some(m)) => Some(m.version(name)),
            (Some(name), None) => self.inner.tier.as_deref()?.version(name),
        };
        if !freshness::version(&meta, current)
            || !matches!(freshness::check(&meta, options), Freshness::Fresh)
        {
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

    /// Like `decode_entry`, but takes the value kept decoded beside the
    /// bytes when there is one (the header is still read from the bytes).
    pub(crate) fn decode_kept<T: DeserializeOwned>(
        &self,
        key: &str,
        bytes: &[u8],
        kept: Option<&AnyValue>,
        typed: Option<&Typed<T>>,
    ) -> Option<(Meta, T)> {
        decode_quietly(bytes, kept, typed).or_else(|| self.decode_entry(key, bytes))
    }

    /// The value of an entry whose header has been read (`env`): the copy
    /// kept decoded beside the bytes when there is one, else the payload
    /// decoded; a payload that does not decode is reported (as by
    /// [`decode_entry`](Self::decode_entry)) and gives `None`.
    pub(crate) fn decode_value<T: DeserializeOwned>(
        &self,
        key: &str,
        env: &entry::Envelope<'_>,
        kept: Option<&AnyValue>,
        typed: Option<&Typed<T>>,
    ) -> Option<T> {
        if let Some(value) = unpack_kept(kept, typed) {
            return Some(value);
        }
        match env.codec.decode::<T>(env.payload) {
            Ok(value) => Some(value),
            Err(e) => {
                self.decode_failed(key, &e);
                None
            }
        }
    }

    /// Counts and reports a cached value that does not decode.
    fn decode_failed(&self, key: &str, e: &Error) {
        Stats::add(&self.inner.stats.decode_errors, 1);
        tracing::warn!(target: "cache_runtime", key, error = %e, "cached value does not decode; treating it as a miss");
    }

    pub(crate) fn decode_entry<T: DeserializeOwned>(
        &self,
        key: &str,
        bytes: &[u8],
    ) -> Option<(Meta, T)> {
        match entry::decode(bytes)
            .and_then(|env| env.codec.decode::<T>(env.payload).map(|v| (env.meta, v)))
        {
            Ok(v) => Some(v),
            Err(e) => {
                self.decode_failed(key, &e);
                None
            }
        }
    }

    /// One read of the store: the entry, the fill token and the version.
    /// With `idle`, a hit on Redis also extends the entry's life (same round
    /// trip); the in-process store extends it on any read by the entry's own
    /// `idle`.
    pub(crate) async fn lookup(
        &self,
        entry_key: EntryName<'_>,
        version_key: Option<&str>,
        idle: Option<Duration>,
    ) -> Option<Lookup> {
        // Which epoch's entries may be served: learnt first when it may
        // have changed unseen (the token read checks the server), and kept
        // as this read's fill token.
        let learnt = match self.inner.store.epoch().get() {
            Some(_) => None,
            // Rare (after a connection error): boxed, to keep a hit's
            // future small.
            None => Some(Box::pin(self.read_token()).await?),
        };
        // Timed for the call's span only when it may be recorded.
        let started =
            (self.is_redis() && tracing::level_enabled!(tracing::Level::DEBUG)).then(Instant::now);
        let result = self.inner.store.lookup(entry_key, version_key, idle).await;
        if let Some(started) = started {
            // The store's latency, on the call's span (the first read's).
            tracing::Span::current().record("store_ms", started.elapsed().as_secs_f64() * 1e3);
        }
        self.looked_up(result, version_key, learnt)
    }

    /// Whether [`lookup`](Self::lookup) would be the store's lookup alone
    /// (the epoch known, no latency to record on the span): a hit then
    /// awaits the store's future itself, and hands its result to
    /// [`looked_up`](Self::looked_up), with no future of `lookup`'s around
    /// it.
    pub(crate) fn lookup_is_plain(&self) -> bool {
        self.inner.store.epoch().get().is_some()
            && !(self.is_redis() && tracing::level_enabled!(tracing::Level::DEBUG))
    }

    /// What the store's lookup found, as [`lookup`](Self::lookup) returns
    /// it: the version heard by the tier, the fill token learnt before it,
    /// a fault reported (and `None`).
    pub(crate) fn looked_up(
        &self,
        result: Result<Lookup, Error>,
        version_key: Option<&str>,
        learnt: Option<Token>,
    ) -> Option<Lookup> {
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

    /// Reads the fill token if the read did not (a Redis hit fetches the
    /// entry alone). A store that does not answer makes it a faulted read
    /// (`None`): nothing is filled from it.
    pub(crate) async fn ensure_token(&self, found: &mut Option<Lookup>) {
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
        let generation = self.inner.store.epoch().generation();
        match self.inner.store.token().await {
            Ok((token, identity)) => {
                self.learn_epoch(generation, token.seq);
                if self.is_redis() {
                    self.inner.identity.store(
                        if identity { 1 } else { 2 },
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                Some(token)
            }
            Err(e) => {
                self.report("read", &e);
                None
            }
        }
    }

    /// Learns the server's epoch from a number read in `generation`; if it
    /// changed, what the tier holds is of the older one and goes. (The
    /// in-process store's epoch is fixed.)
    pub(crate) fn learn_epoch(&self, generation: u32, seq: u64) {
        if self.is_redis()
            && self
                .inner
                .store
                .epoch()
                .learn(generation, crate::epoch::of(seq))
        {
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
    pub(crate) fn current_epoch(&self, meta: &Meta) -> bool {
        self.inner.store.epoch().get() == Some(meta.epoch)
    }
}
