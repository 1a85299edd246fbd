//! The first step of a read that the in-process check did not answer: the
//! store's lookup and a fresh hit, as a small future. Everything else (a
//! miss, a stale or early-refresh entry, another version or epoch, bytes
//! that do not decode) goes on in `read::read_network`, boxed, from what
//! this step found (`First`).

use std::future::Future;
use std::time::Instant;

use crate::entry::{self, Meta};
use crate::key::EntryName;
use crate::observe::Source;
use crate::options::CacheOptions;
use crate::shape::Shape;
use crate::stats::Stats;
use crate::status::CacheStatus;
use crate::store::{Lookup, Store, Typed};
use crate::switch::Mode;
use crate::tier::LocalTier;

use super::freshness::{self, Freshness, local_for};
use super::read::Read;
use super::*;

/// What the first step of a remote read (`read_remote`) found, handed to
/// the rest of the network path: when the fill window started (if it had
/// to start before the lookup: see `read_remote`), the entry's
/// name, the tier's token taken before the read, the lookup, and its value
/// decoded (`Some(None)`: bytes that did not decode, already reported),
/// and its freshness as checked.
pub(crate) struct First<T> {
    pub(crate) started: Option<Instant>,
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
    ///
    /// Not an `async fn`: an `async fn`'s future keeps its arguments twice
    /// (as passed, and moved into the body's locals on the first poll),
    /// where this block uses them where they were captured. This future is
    /// boxed, and so moved whole, on every read that leaves the process.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub(crate) fn read_remote<'a, S, R, L, Fut, G>(
        &'a self,
        read: Read<'a, R, S::Stored>,
        version_key: Option<String>,
        tags: G,
        load: L,
        mode: Mode,
    ) -> impl Future<Output = R> + 'a
    where
        S: Shape<R> + 'a,
        R: 'a,
        L: FnOnce() -> Fut + 'a,
        Fut: Future<Output = R> + 'a,
        G: FnOnce(Option<&S::Inner>) -> Links + 'a,
    {
        async move {
            let first = if mode == Mode::Normal && self.inner.outbox.is_empty() {
                // `first_step`, written out: this future, boxed on every read
                // that leaves the process, holds the store's future and no
                // other (each nested future is moved into the one around it).
                let inner = &*self.inner;
                let (version, idle) = (version_key.as_deref(), read.options.idle_choice());
                let plain = self.lookup_is_plain();
                // The fill window starts no later than the fill token's read
                // (`fill_after_load`). A plain read on Redis reads no token (a
                // miss reads it later, in `read_network`, which starts the
                // window then): a hit takes no clock reading.
                let started = (!plain || idle.is_some() || !self.is_redis()).then(Instant::now);
                let name = inner.layout.entry_name(&read.key);
                let local_token = inner.tier.as_deref().map(LocalTier::token);
                let found = if plain {
                    let result = inner.store.lookup(name, version, idle).await;
                    self.looked_up(result, version, None)
                } else {
                    Box::pin(self.lookup(name, version, idle)).await
                };
                match self.first_found::<S, R>(&read, version, started, local_token, found) {
                    Ok(hit) => return hit,
                    Err(first) => Some(first),
                }
            } else {
                None
            };
            Box::pin(self.read_network::<S, R, L, Fut, G>(
                read,
                version_key,
                tags,
                load,
                mode,
                first,
            ))
            .await
        }
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
        let started = Some(Instant::now());
        let name = inner.layout.entry_name(&read.key);
        // Taken before the store's read: a tier fill from it is refused
        // if an invalidation of the entry arrives in between.
        let local_token = inner.tier.as_deref().map(LocalTier::token);
        let found = self
            .lookup(name, version_key, read.options.idle_choice())
            .await;
        self.first_found::<S, R>(read, version_key, started, local_token, found)
    }

    /// What the store's lookup found (`found`, read after `started` and
    /// after the tier's `local_token` was taken): a fresh hit (`Ok`), or
    /// what the rest of the network path goes on from (`Err`).
    pub(crate) fn first_found<S: Shape<R>, R>(
        &self,
        read: &Read<'_, R, S::Stored>,
        version_key: Option<&str>,
        started: Option<Instant>,
        local_token: Option<u64>,
        found: Option<Lookup>,
    ) -> Result<R, Box<First<S::Stored>>> {
        debug_assert!(
            started.is_some() || found.as_ref().is_none_or(|l| l.token.is_none()),
            "a lookup that read the fill token started the fill window before it"
        );
        let name = self.inner.layout.entry_name(&read.key);
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
            let (kept, typed) = (lookup.typed.as_ref(), read.typed.as_ref());
            // The header first: the value of an entry of the current
            // version and epoch is decoded once its verdict is known, and
            // a fresh one straight into the value returned.
            match entry::decode(bytes) {
                Ok(env)
                    if freshness::version(&env.meta, Some(lookup.version))
                        && self.current_epoch(&env.meta) =>
                {
                    let verdict = freshness::check(&env.meta, read.options);
                    match self.decode_value::<S::Stored>(&read.key, &env, kept, typed) {
                        Some(stored) if matches!(verdict, Freshness::Fresh) => {
                            self.fresh_from_store::<S::Stored>(
                                lookup,
                                &env.meta,
                                &stored,
                                name,
                                version_key,
                                read.options,
                                typed,
                                local_token,
                            );
                            return Ok(S::join(stored));
                        }
                        Some(stored) => {
                            checked = Some(verdict);
                            decoded = Some(Some((env.meta, stored)));
                        }
                        None => decoded = Some(None),
                    }
                }
                // Another version or epoch (the rest of the path tells
                // which), or bytes that are not an entry (reported).
                _ => decoded = Some(self.decode_kept::<S::Stored>(&read.key, bytes, kept, typed)),
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

#[cfg(test)]
mod tests {
    use std::mem::{size_of, size_of_val};

    use crate::shape::Res;

    use super::*;

    /// A 200-byte value.
    type Value = Result<[u64; 24], std::io::Error>;

    /// The same future holds its arguments once: an `async fn` would keep
    /// them twice, as captured and as moved into its body on the first poll
    /// (664 bytes here, against 488 for the block).
    #[test]
    fn a_remote_read_holds_its_arguments_once() {
        let cache = Cache::builder().build().expect("an in-process cache");
        let options = CacheOptions::new("size");
        let tags = |_: Option<&[u64; 24]>| Links::default();
        let load = || async { Ok([0; 24]) };
        let arguments = size_of::<&Cache>()
            + size_of::<Read<'_, Value, [u64; 24]>>()
            + size_of::<Option<String>>()
            + size_of_val(&tags)
            + size_of_val(&load)
            + size_of::<Mode>();
        let name = cache.inner.layout.entry_name("k");
        let store = size_of_val(&cache.inner.store.lookup(name, None, None));
        let remote = size_of_val(&cache.read_remote::<Res, Value, _, _, _>(
            Read::new("k".into(), &options),
            None,
            tags,
            load,
            Mode::Normal,
        ));
        // What else it holds across the lookup: the version, `idle`, the
        // window's start, the tier's token, flags.
        let locals = 96;
        assert!(
            remote <= arguments + store + locals,
            "the read's future ({remote} bytes) holds more than its arguments ({arguments}), the store's lookup ({store}) and {locals} bytes of locals"
        );
    }

    /// The future of a read that leaves the process is boxed on every such
    /// read, hit or not, and moved whole into its box: it holds the
    /// store's future and no future of the steps around it. Holding the
    /// first step's future (`first_step`, which holds `lookup`'s) beside
    /// the read it goes on with would make it at least as big as the two;
    /// it was (896 bytes against 536 + 144 in a test build, 3,336 bytes in
    /// the comparison bench's release build, then 680, and 496 since the
    /// future is an `async` block rather than an `async fn`).
    #[test]
    fn a_remote_read_boxes_no_nested_futures() {
        let cache = Cache::builder().build().expect("an in-process cache");
        let options = CacheOptions::new("size");
        let remote = cache.read_remote::<Res, Value, _, _, _>(
            Read::new("k".into(), &options),
            None,
            |_: Option<&[u64; 24]>| Links::default(),
            || async { Ok([0; 24]) },
            Mode::Normal,
        );
        let read = Read::new("k".into(), &options);
        let first_step = cache.first_step::<Res, Value>(&read, None);
        let (remote, first_step, read) = (
            size_of_val(&remote),
            size_of_val(&first_step),
            size_of_val(&read),
        );
        assert!(
            remote < first_step + read,
            "the read's future ({remote} bytes) is the size of the first step's ({first_step}) and the read ({read})"
        );
    }
}
