//! Batch reads (`#[cached(batch, key = "user:{id}")]`,
//! [`Cache::get_many_or_load`]): each id is its own entry, under the key a
//! single read of it would use. The in-process copies answer first; one
//! `MGET` (one round trip) finds the rest that Redis holds; the loader is
//! called once with only the missing ids; their values are stored together
//! (absent ids too, with `cache_none`). A missing id that another caller is
//! loading already (a single read or another batch) is waited for, not
//! loaded twice: a batch first loads and lands the ids it leads, then waits,
//! so two overlapping batches never wait on each other. An id whose other
//! loader stored nothing is loaded by a second call of the loader.
//!
//! Every fill is the race-free fill of a single read: refused if an
//! invalidation came after the batch's fill token, read once before the
//! loader.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::adaptive::Adapt;
use crate::entry::{self, Meta};
use crate::events::now_ms;
use crate::flight::{self, Landed, Role};
use crate::observe::Source;
use crate::options::CacheOptions;
use crate::stats::Stats;
use crate::status::CacheStatus;
use crate::store::Token;
use crate::switch::Mode;
use crate::tier::LocalTier;
use crate::ttl::{millis, with_jitter};

use super::freshness::{self, Freshness, local_for};
use super::*;

/// One wanted id: its key, its entry's name, and what was found for it
/// (`Some(None)`: a cached absence).
struct Wanted<K, V> {
    id: K,
    key: String,
    entry: String,
    found: Option<Option<V>>,
}

impl Cache {
    /// A batch read through the cache: the values of `ids` (each cached
    /// under the key `key_of` gives it), from the cache where it holds
    /// them, and from one call of `load` with only the missing ids for the
    /// rest. Ids `load` does not return are absent: left out of the map,
    /// and cached as absent for the options'
    /// [`cache_none`](CacheOptions::cache_none) if it is set. An `Err` is
    /// returned as it is and nothing is stored. `links` gives each loaded
    /// value its tags and dependencies.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::collections::HashMap;
    /// use cache_runtime::{Cache, CacheOptions, Links};
    /// let cache = Cache::in_memory();
    /// let opts = CacheOptions::new("users");
    /// let load = |ids: Vec<u64>| async move {
    ///     Ok::<_, String>(ids.into_iter().map(|id| (id, format!("user {id}"))).collect::<Vec<_>>())
    /// };
    /// let key = |id: &u64| format!("user:{id}");
    /// let first = cache.get_many_or_load(&opts, &[1, 2], key, |_, _| Links::new(), load).await.unwrap();
    /// assert_eq!(first.len(), 2);
    /// // Only id 3 is loaded: 1 and 2 are cached.
    /// let users: HashMap<u64, String> =
    ///     cache.get_many_or_load(&opts, &[1, 2, 3], key, |_, _| Links::new(), load).await.unwrap();
    /// assert_eq!(users[&3], "user 3");
    /// assert_eq!((cache.stats().hits, cache.stats().misses), (2, 3));
    /// # }
    /// ```
    pub async fn get_many_or_load<K, V, E, F, Fut, G>(
        &self,
        options: &CacheOptions,
        ids: &[K],
        key_of: impl Fn(&K) -> String,
        links: G,
        load: F,
    ) -> Result<HashMap<K, V>, E>
    where
        K: Clone + Eq + Hash,
        V: Serialize + DeserializeOwned,
        F: FnMut(Vec<K>) -> Fut,
        Fut: Future<Output = Result<Vec<(K, V)>, E>>,
        G: Fn(&K, &V) -> Links,
    {
        let keys = ids.iter().map(key_of).collect();
        let pairs = self
            .read_batch(options, ids.to_vec(), keys, links, load)
            .await?;
        Ok(pairs.into_iter().collect())
    }

    /// The batch read behind `#[cached(batch)]` and `get_many_or_load`:
    /// `keys[i]` is the key of `ids[i]`. The pairs found, in the order of
    /// `ids` (each id once).
    pub(crate) async fn read_batch<K, V, E, L, Fut, G>(
        &self,
        options: &CacheOptions,
        ids: Vec<K>,
        keys: Vec<String>,
        links: G,
        mut load: L,
    ) -> Result<Vec<(K, V)>, E>
    where
        K: Clone + Eq + Hash,
        V: Serialize + DeserializeOwned,
        L: FnMut(Vec<K>) -> Fut,
        Fut: Future<Output = Result<Vec<(K, V)>, E>>,
        G: Fn(&K, &V) -> Links,
    {
        let inner = &*self.inner;
        // The loader is never asked for nothing (an empty `IN ()` is often
        // a syntax error).
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mode = crate::switch::mode(&inner.enabled);
        if mode == Mode::Bypass {
            Stats::add(&inner.stats.bypassed, 1);
            crate::status::record(CacheStatus::Bypass);
            return crate::adaptive::ignored(load(ids)).await;
        }
        if !inner.outbox.is_empty() {
            // As for a single read: nothing cached may be trusted while
            // invalidations wait to be retried.
            self.outbox_wake();
            crate::status::record(CacheStatus::Bypass);
            return crate::adaptive::ignored(load(ids)).await;
        }
        let mut seen = HashSet::with_capacity(ids.len());
        let mut wanted: Vec<Wanted<K, V>> = ids
            .into_iter()
            .zip(keys)
            .filter(|(id, _)| seen.insert(id.clone()))
            .map(|(id, key)| Wanted {
                entry: inner.layout.entry(&key),
                id,
                key,
                found: None,
            })
            .collect();
        drop(seen);
        // Inside `refreshing`, every id is loaded and stored.
        let local = if mode == Mode::Normal {
            self.batch_lookup(options, &mut wanted).await
        } else {
            0
        };
        let hits = wanted.iter().filter(|w| w.found.is_some()).count();
        Stats::add(&inner.stats.hits, hits as u64);
        if self.is_redis() {
            Stats::add(&inner.stats.local_hits, local as u64);
        }
        let missing: Vec<usize> = (0..wanted.len())
            .filter(|&i| wanted[i].found.is_none())
            .collect();
        Stats::add(&inner.stats.misses, missing.len() as u64);
        for at in 0..hits {
            let source = if at < local || !self.is_redis() {
                Source::Process
            } else {
                Source::Redis
            };
            inner.metrics.hit(options.name(), source);
        }
        for _ in 0..missing.len() {
            inner.metrics.miss(options.name());
        }
        crate::status::record(if missing.is_empty() {
            CacheStatus::Hit
        } else {
            CacheStatus::Miss
        });
        if !missing.is_empty() {
            self.batch_load(options, &mut wanted, missing, &links, &mut load)
                .await?;
        }
        Ok(wanted
            .into_iter()
            .filter_map(|w| Some((w.id, w.found??)))
            .collect())
    }

    /// Finds what the cache holds of `wanted`: in process first (the tier,
    /// or the in-process store), then one `MGET` for the rest on Redis.
    /// How many were found in process.
    async fn batch_lookup<K, V: DeserializeOwned>(
        &self,
        options: &CacheOptions,
        wanted: &mut [Wanted<K, V>],
    ) -> usize {
        for w in wanted.iter_mut() {
            if let Some(shared) = self.in_process_entry(&w.entry) {
                w.found = self.usable(&w.key, &shared.bytes, options, false);
            }
        }
        let local = wanted.iter().filter(|w| w.found.is_some()).count();
        #[cfg(feature = "redis")]
        self.batch_lookup_redis(options, wanted).await;
        local
    }

    /// The part of `batch_lookup` on Redis: one `MGET` for what the tier
    /// did not hold.
    #[cfg(feature = "redis")]
    async fn batch_lookup_redis<K, V: DeserializeOwned>(
        &self,
        options: &CacheOptions,
        wanted: &mut [Wanted<K, V>],
    ) {
        let inner = &*self.inner;
        let Some(redis) = self.redis_store() else {
            return;
        };
        let rest: Vec<usize> = (0..wanted.len())
            .filter(|&i| wanted[i].found.is_none())
            .collect();
        if rest.is_empty() {
            return;
        }
        // Which epoch's entries may be served (see `lookup`).
        if inner.store.epoch().get().is_none() && self.read_token().await.is_none() {
            return;
        }
        let local_token = inner.tier.as_deref().map(LocalTier::token);
        let names: Vec<String> = rest.iter().map(|&i| wanted[i].entry.clone()).collect();
        let values = match self.bounded("read", redis.get_many(&names)).await {
            Ok(values) => values,
            Err(e) => {
                self.report("read", &e);
                return;
            }
        };
        for (&i, bytes) in rest.iter().zip(values) {
            let Some(bytes) = bytes else { continue };
            let w = &mut wanted[i];
            w.found = self.usable(&w.key, &bytes, options, true);
            if let (Some(tier), Some(local_token), Some(_)) =
                (inner.tier.as_deref(), local_token, &w.found)
                && let Ok(env) = entry::decode(&bytes)
            {
                tier.fill(
                    &w.entry,
                    &bytes,
                    None,
                    local_for(&env.meta, options),
                    local_token,
                );
            }
        }
    }

    /// An entry's value if it answers a read now: it decodes (an absence
    /// is `Some(None)`), is fresh and, from Redis, of the current epoch.
    fn usable<V: DeserializeOwned>(
        &self,
        key: &str,
        bytes: &[u8],
        options: &CacheOptions,
        from_store: bool,
    ) -> Option<Option<V>> {
        let (meta, value) = decode_batch::<V>(bytes).or_else(|| {
            // Reported once, as a single read would.
            self.decode_entry::<V>(key, bytes)
                .map(|(meta, v)| (meta, Some(v)))
        })?;
        let current = !from_store || self.current_epoch(&meta);
        (current && freshness::check(&meta, options) == Freshness::Fresh).then_some(value)
    }

    /// Loads the `missing` ids of `wanted`: leads or joins each one's
    /// flight, loads the ones it leads (one call), stores and lands them,
    /// then takes the others' values, and loads what they did not store (a
    /// second call).
    async fn batch_load<K, V, E, L, Fut, G>(
        &self,
        options: &CacheOptions,
        wanted: &mut [Wanted<K, V>],
        missing: Vec<usize>,
        links: &G,
        load: &mut L,
    ) -> Result<(), E>
    where
        K: Clone + Eq + Hash,
        V: Serialize + DeserializeOwned,
        L: FnMut(Vec<K>) -> Fut,
        Fut: Future<Output = Result<Vec<(K, V)>, E>>,
        G: Fn(&K, &V) -> Links,
    {
        let inner = &*self.inner;
        let started = std::time::Instant::now();
        let local_token = inner.tier.as_deref().map(LocalTier::token);
        // Read before the loader starts (see `ensure_token`).
        let token = self.read_token().await;
        let mut led = Vec::with_capacity(missing.len());
        let mut waits = Vec::new();
        for i in missing {
            if !options.coalesce() {
                led.push((i, None));
                continue;
            }
            match inner.flights.join(&wanted[i].entry, token.map(|t| t.seq)) {
                Role::Leader(l) => led.push((i, Some(l))),
                Role::Waiter(rx) | Role::Landed(rx) => waits.push((i, rx)),
            }
        }
        let mut leftovers = Vec::new();
        if !led.is_empty() {
            let ids = led.iter().map(|(i, _)| wanted[*i].id.clone()).collect();
            let loading = std::time::Instant::now();
            // On an `Err` the leaders are dropped: their waiters read again.
            let (loaded, adapt) = crate::adaptive::collect(load(ids)).await;
            let loaded = loaded?;
            inner.metrics.load(options.name(), loading.elapsed());
            let mut loaded: HashMap<K, V> = loaded.into_iter().collect();
            let indices: Vec<usize> = led.iter().map(|(i, _)| *i).collect();
            let landed = self
                .batch_fill(
                    options,
                    wanted,
                    &indices,
                    &mut loaded,
                    token,
                    links,
                    &adapt,
                    started,
                    local_token,
                )
                .await;
            for ((_, leader), landed) in led.into_iter().zip(landed) {
                if let Some(leader) = leader {
                    leader.land(landed);
                }
            }
        }
        let mine = token.map(|t| t.seq);
        for (i, rx) in waits {
            let w = &mut wanted[i];
            match flight::wait(rx).await {
                Landed::Value { bytes, token, .. }
                    if mine.is_some_and(|mine| flight::fresh_enough(token, mine)) =>
                {
                    match decode_batch::<V>(&bytes) {
                        Some((_, value)) => {
                            Stats::add(&inner.stats.coalesced, 1);
                            w.found = Some(value);
                        }
                        None => leftovers.push(i),
                    }
                }
                _ => leftovers.push(i),
            }
        }
        if !leftovers.is_empty() {
            let ids = leftovers.iter().map(|&i| wanted[i].id.clone()).collect();
            let (loaded, adapt) = crate::adaptive::collect(load(ids)).await;
            let mut loaded: HashMap<K, V> = loaded?.into_iter().collect();
            // Returned, not stored: this load has no token read before it
            // (the batch's is older than the invalidation that may have
            // refused the other loader's fill).
            let _ = self
                .batch_fill(
                    options,
                    wanted,
                    &leftovers,
                    &mut loaded,
                    None,
                    links,
                    &adapt,
                    started,
                    local_token,
                )
                .await;
        }
        Ok(())
    }

    /// Takes each loaded value of `indices` out of `loaded` into `wanted`,
    /// stores them (and the absences, with `cache_none`) together, and says
    /// what each one's waiters get.
    #[allow(clippy::too_many_arguments)]
    async fn batch_fill<K, V, G>(
        &self,
        options: &CacheOptions,
        wanted: &mut [Wanted<K, V>],
        indices: &[usize],
        loaded: &mut HashMap<K, V>,
        token: Option<Token>,
        links: &G,
        adapt: &Adapt,
        started: std::time::Instant,
        local_token: Option<u64>,
    ) -> Vec<Landed>
    where
        K: Eq + Hash,
        V: Serialize,
        G: Fn(&K, &V) -> Links,
    {
        let inner = &*self.inner;
        let seq = token.map_or(0, |t| t.seq);
        let mut landed = Vec::with_capacity(indices.len());
        let mut fills = Vec::new();
        let mut reqs = Vec::new();
        for &i in indices {
            let w = &mut wanted[i];
            let value = loaded.remove(&w.id);
            // The loader's own TTL (`adapt`) is used as given.
            let ttl = match &value {
                Some(_) => adapt.ttl.or_else(|| self.ttl_for(options)),
                // The loader's TTL is for the rows it found, not for the
                // ids it did not.
                None => match options.none_ttl() {
                    Some(ttl) => Some(with_jitter(
                        ttl,
                        options.jitter_choice().unwrap_or(inner.jitter),
                    )),
                    None => {
                        // An absence not to be cached.
                        w.found = Some(None);
                        landed.push(Landed::Retry);
                        continue;
                    }
                },
            };
            let meta = Meta {
                absent: value.is_none(),
                fresh_until_ms: ttl.map_or(0, |ttl| now_ms().saturating_add(millis(ttl))),
                version: 0,
                cost_ms: 0,
                epoch: token.map_or(0, |t| crate::epoch::of(t.seq)),
            };
            let encoded = match &value {
                Some(v) => entry::encode(inner.codec, meta, v),
                None => entry::encode(inner.codec, meta, &None::<V>),
            };
            let bytes = match encoded {
                Ok(bytes) => Bytes::from(bytes),
                Err(e) => {
                    Stats::add(&inner.stats.encode_errors, 1);
                    tracing::warn!(target: "cache_runtime", key = w.key, error = %e, "value does not encode; not cached");
                    w.found = Some(value);
                    landed.push(Landed::Retry);
                    continue;
                }
            };
            let storable = bytes.len() <= options.size_limit().unwrap_or(inner.max_value_size)
                && started.elapsed() < inner.fill_window;
            let mut link = match &value {
                Some(v) => links(&w.id, v),
                None => Links::new(),
            };
            link.tags.extend(adapt.tags.iter().cloned());
            match token {
                Some(token) if storable && !link.not_stored && !adapt.skip => {
                    let keep = freshness::kept_for(ttl, options);
                    let req = self.fill_request(&w.key, bytes.to_vec(), keep, link, token);
                    fills.push((i, meta, bytes.clone()));
                    reqs.push(req);
                    landed.push(Landed::Value {
                        bytes,
                        token: seq,
                        stored: true,
                    });
                }
                _ => {
                    if bytes.len() > options.size_limit().unwrap_or(inner.max_value_size) {
                        Stats::add(&inner.stats.oversized, 1);
                    }
                    landed.push(Landed::Value {
                        bytes,
                        token: seq,
                        stored: false,
                    });
                }
            }
            w.found = Some(value);
        }
        // Sent together: on Redis one connection pipelines them.
        let results =
            futures_util::future::join_all(reqs.into_iter().map(|req| self.store_fill(req))).await;
        let mut refused = HashSet::new();
        for ((i, meta, bytes), result) in fills.into_iter().zip(results) {
            match result {
                Ok(true) => {
                    Stats::add(&inner.stats.fills, 1);
                    if let (Some(tier), Some(local_token)) = (&inner.tier, local_token) {
                        tier.fill(
                            &wanted[i].entry,
                            &bytes,
                            None,
                            local_for(&meta, options),
                            local_token,
                        );
                    }
                }
                Ok(false) => {
                    Stats::add(&inner.stats.fills_rejected, 1);
                    inner.metrics.fill_rejected();
                    refused.insert(i);
                }
                Err(e) => self.report("fill", &e),
            }
        }
        // A refused fill's waiters read again, as a single read's do.
        for (at, &i) in indices.iter().enumerate() {
            if refused.contains(&i) {
                landed[at] = Landed::Retry;
            }
        }
        landed
    }
}

/// An entry's header and value, an absence as `None`; `None` when the
/// bytes are not an entry of `V` (not reported).
fn decode_batch<V: DeserializeOwned>(bytes: &[u8]) -> Option<(Meta, Option<V>)> {
    let env = entry::decode(bytes).ok()?;
    if env.meta.absent {
        return Some((env.meta, None));
    }
    let value = env.codec.decode::<V>(env.payload).ok()?;
    Some((env.meta, Some(value)))
}
