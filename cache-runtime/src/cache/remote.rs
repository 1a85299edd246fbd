//! The first step of a read that the in-process check did not answer: the
//! store's lookup and a fresh hit, as a small future. Everything else (a
//! miss, a stale or early-refresh entry, another version or epoch, bytes
//! that do not decode) goes on in `read::read_network`, boxed, from what
//! this step found (`First`).

use std::future::Future;
use std::time::Instant;

use crate::entry::Meta;
use crate::key::EntryName;
use crate::observe::Source;
use crate::options::CacheOptions;
use crate::shape::Shape;
use crate::stats::Stats;
use crate::status::CacheStatus;
use crate::store::{Lookup, Typed};
use crate::switch::Mode;
use crate::tier::LocalTier;

use super::freshness::{self, Freshness, local_for};
use super::read::Read;
use super::*;

/// What the first step of a remote read (`read_remote`) found, handed to
/// the rest of the network path: when the fill window started, the entry's
/// name, the tier's token taken before the read, the lookup, and its value
/// decoded (`Some(None)`: bytes that did not decode, already reported),
/// and its freshness as checked.
pub(crate) struct First<T> {
    pub(crate) started: Instant,
    pub(crate) entry_key: String,
    pub(crate) local_token: Option<u64>,
    pub(crate) found: Option<Lookup>,
    pub(crate) decoded: Option<Option<(Meta, T)>>,
    /// The freshness of `decoded`, when it was of the current version and
    /// epoch.
    pub(crate) checked: Option<Freshness>,
}

impl Cache {
    /// The read-through path past the in-process check, in two steps so
    /// that a hit in the store never builds the state of a miss: the
    /// store's lookup and a fresh hit are a small future; anything else
    /// (a miss, a stale entry, another version or epoch, bytes that do not
    /// decode) continues in [`read_network`](Self::read_network), boxed,
    /// from what the lookup found.
    pub(crate) async fn read_remote<S, R, L, Fut, G>(
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
        let first = if mode == Mode::Normal && self.inner.outbox.is_empty() {
            match self.first_step::<S, R>(&read, version_key.as_deref()).await {
                Ok(hit) => return hit,
                Err(first) => Some(first),
            }
        } else {
            None
        };
        Box::pin(self.read_network::<S, R, L, Fut, G>(read, version_key, tags, load, mode, first))
            .await
    }

    /// The store's lookup: a fresh hit (`Ok`), or what the rest of the
    /// network path goes on from (`Err`).
    pub(crate) async fn first_step<S: Shape<R>, R>(
        &self,
        read: &Read<'_, R, S::Stored>,
        version_key: Option<&str>,
    ) -> Result<R, Box<First<S::Stored>>> {
        let inner = &*self.inner;
        // The fill window runs from before the read: a marker must
        // outlive every fill whose read preceded its invalidation.
        let started = Instant::now();
        let name = inner.layout.entry_name(&read.key);
        // Taken before the store's read: a tier fill from it is refused
        // if an invalidation of the entry arrives in between.
        let local_token = inner.tier.as_deref().map(LocalTier::token);
        let found = self
            .lookup(name, version_key, read.options.idle_choice())
            .await;
        // Decoded and checked once (an early refresh is a random draw): a
        // fresh hit returns from here; anything else goes on to the network
        // path with what was found (`decoded`: `Some(None)` for bytes that
        // do not decode, already reported) and, for an entry of the current
        // version and epoch, its verdict (`checked`).
        let mut decoded = None;
        let mut checked = None;
        if let Some(lookup) = &found
            && let Some(bytes) = &lookup.value
        {
            match self.decode_kept::<S::Stored>(
                &read.key,
                bytes,
                lookup.typed.as_ref(),
                read.typed.as_ref(),
            ) {
                Some((meta, stored))
                    if freshness::version(&meta, Some(lookup.version))
                        && self.current_epoch(&meta) =>
                {
                    let verdict = freshness::check(&meta, read.options);
                    if matches!(verdict, Freshness::Fresh) {
                        self.fresh_from_store::<S::Stored>(
                            lookup,
                            &meta,
                            &stored,
                            name,
                            version_key,
                            read.options,
                            read.typed.as_ref(),
                            local_token,
                        );
                        return Ok(S::join(stored));
                    }
                    checked = Some(verdict);
                    decoded = Some(Some((meta, stored)));
                }
                other => decoded = Some(other),
            }
        }
        // Boxed: a hit's result is no bigger than its value.
        Err(Box::new(First {
            started,
            entry_key: name.to_owned(),
            local_token,
            found,
            decoded,
            checked,
        }))
    }

    /// Counts and reports a fresh hit read from the store, and keeps a copy
    /// in the tier (when there is one).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fresh_from_store<T>(
        &self,
        lookup: &Lookup,
        meta: &Meta,
        stored: &T,
        entry: EntryName<'_>,
        version_key: Option<&str>,
        options: &CacheOptions,
        typed: Option<&Typed<T>>,
        local_token: Option<u64>,
    ) {
        let inner = &*self.inner;
        Stats::add(&inner.stats.hits, 1);
        inner.metrics.hit(options.name(), Source::Redis);
        crate::status::record(CacheStatus::Hit);
        if tracing::level_enabled!(tracing::Level::DEBUG) {
            tracing::Span::current().record("outcome", "hit");
        }
        if let (Some(tier), Some(local_token), Some(bytes)) =
            (inner.tier.as_deref(), local_token, &lookup.value)
        {
            if let Some(name) = version_key {
                tier.saw_version(name, lookup.version);
            }
            let kept = typed.map(|t| (t.pack)(stored));
            let ttl = local_for(meta, options);
            entry.with_str(|entry| tier.fill(entry, bytes, kept, ttl, local_token));
        }
    }
}
