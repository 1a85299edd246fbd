//! The in-process tier in front of Redis: most hits never leave the process.
//!
//! It is an in-process store (bounded `moka`, per-entry expiry) holding the
//! same envelopes as Redis, under the same entry names, for at most the
//! tier's TTL and never past the entry's own freshness. It is kept coherent
//! by the cache's subscriber:
//!
//! - every invalidation on Redis publishes the names of the entries it removed
//!   (keys, tag members, cascades, pattern matches) and the versions it bumped
//!   on `ns#inv`; every instance removes them from its tier (the instance that
//!   invalidated does so from the script's reply, and ignores its own echo);
//! - a fill of the tier is refused when an invalidation of that entry arrived
//!   after the Redis read it came from (the same token-and-marker rule as the
//!   stores), so a message that overtakes a slow read still wins;
//! - while the subscriber is disconnected the tier is not trusted: hits are
//!   served for at most a short grace, then every read goes to Redis; on
//!   reconnect the tier is cleared, since messages may have been lost.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::store::memory::{MemoryStore, Shared};
use crate::store::{AnyValue, FillRequest, InvalidationPlan};

#[derive(Debug)]
pub(crate) struct LocalTier {
    store: MemoryStore,
    ttl: Duration,
    grace: Duration,
    /// The current value of version names, as last seen on Redis or in a
    /// bump message.
    versions: Mutex<HashMap<String, u64>>,
    connected: AtomicBool,
    /// When the subscriber lost its connection, in ms since `epoch` plus
    /// one (0: never connected).
    down_since: AtomicU64,
    epoch: Instant,
    marker_ttl: Duration,
    /// This instance's invalidations in flight (nonce -> the echo, if it
    /// came first), and those whose reply was lost (nonce -> when): their
    /// echo is applied instead of ignored.
    echoes: Mutex<Echoes>,
}

/// What an invalidation removed: entry names, and bumped versions.
type Removed = (Vec<String>, Vec<(String, u64)>);

#[derive(Debug, Default)]
struct Echoes {
    pending: HashMap<String, Option<Removed>>,
    lost: HashMap<String, Instant>,
}

impl LocalTier {
    pub(crate) fn new(
        capacity: u64,
        ttl: Duration,
        grace: Duration,
        marker_ttl: Duration,
    ) -> LocalTier {
        LocalTier {
            store: MemoryStore::new(capacity),
            ttl,
            grace,
            versions: Mutex::new(HashMap::new()),
            connected: AtomicBool::new(false),
            down_since: AtomicU64::new(0),
            epoch: Instant::now(),
            marker_ttl,
            echoes: Mutex::new(Echoes::default()),
        }
    }

    fn versions(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether hits may be served: connected, or disconnected for less than
    /// the grace (never before the first connection).
    pub(crate) fn trusted(&self) -> bool {
        if self.connected.load(Ordering::Acquire) {
            return true;
        }
        let since = self.down_since.load(Ordering::Acquire);
        since != 0
            && self.since_epoch().saturating_sub(since - 1) < crate::cache::millis(self.grace)
    }

    /// The envelope under `entry` (and its decoded value, if kept), when
    /// the tier may serve it.
    pub(crate) fn get(&self, entry: &str) -> Option<Shared> {
        if !self.trusted() {
            return None;
        }
        self.store.entry(entry)
    }

    /// The token to fill with after a Redis read that starts now.
    pub(crate) fn token(&self) -> u64 {
        self.store.token()
    }

    /// The known current value of a version name.
    pub(crate) fn version(&self, name: &str) -> Option<u64> {
        self.versions().get(name).copied()
    }

    /// Records a version value seen on Redis (versions only grow).
    pub(crate) fn saw_version(&self, name: &str, value: u64) {
        let mut versions = self.versions();
        let v = versions.entry(name.to_owned()).or_insert(value);
        *v = (*v).max(value);
    }

    /// Keeps `bytes` under `entry` for at most `ttl` (and the tier's TTL),
    /// unless an invalidation of it arrived after the read behind `token`.
    pub(crate) fn fill(
        &self,
        entry: &str,
        bytes: &[u8],
        typed: Option<AnyValue>,
        ttl: Option<Duration>,
        token: u64,
    ) {
        if !self.connected.load(Ordering::Acquire) {
            return;
        }
        let ttl = ttl.map_or(self.ttl, |t| t.min(self.ttl));
        if ttl.is_zero() {
            return;
        }
        self.store.fill(FillRequest {
            entry: entry.to_owned(),
            marker: entry.to_owned(),
            tags: Vec::new(),
            value: bytes.to_vec(),
            typed,
            ttl: Some(ttl),
            idle: None,
            token,
            depends_on: Vec::new(),
            prefixes: crate::key::Prefixes::default(),
            marker_ttl: self.marker_ttl,
            release: None,
            overwrite: None,
        });
    }

    /// Removes entries (named in full) and records bumped versions.
    pub(crate) fn apply(&self, entries: &[String], versions: &[(String, u64)]) {
        for (name, value) in versions {
            self.saw_version(name, *value);
        }
        if entries.is_empty() {
            return;
        }
        self.store.invalidate(&InvalidationPlan {
            keys: entries.iter().map(|e| (e.clone(), e.clone())).collect(),
            marker_ttl: self.marker_ttl,
            ..InvalidationPlan::default()
        });
    }

    fn since_epoch(&self) -> u64 {
        crate::cache::millis(self.epoch.elapsed())
    }

    fn echoes(&self) -> std::sync::MutexGuard<'_, Echoes> {
        self.echoes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An invalidation of this instance is about to be sent under `nonce`.
    pub(crate) fn sending(&self, nonce: &str) {
        self.echoes().pending.insert(nonce.to_owned(), None);
    }

    /// Its reply was applied: the echo will be ignored.
    pub(crate) fn replied(&self, nonce: &str) {
        self.echoes().pending.remove(nonce);
    }

    /// Its reply was lost (timeout): apply the echo if it came already,
    /// else when it comes.
    pub(crate) fn reply_lost(&self, nonce: &str) {
        let stashed = {
            let mut echoes = self.echoes();
            let stashed = echoes.pending.remove(nonce).flatten();
            if stashed.is_none() {
                let now = Instant::now();
                echoes
                    .lost
                    .retain(|_, at| now.duration_since(*at) < Duration::from_secs(60));
                echoes.lost.insert(nonce.to_owned(), now);
            }
            stashed
        };
        if let Some((entries, versions)) = stashed {
            self.apply(&entries, &versions);
        }
    }

    /// This instance's own message came back.
    pub(crate) fn echo(&self, nonce: &str, entries: Vec<String>, versions: Vec<(String, u64)>) {
        let apply = {
            let mut echoes = self.echoes();
            if let Some(slot) = echoes.pending.get_mut(nonce) {
                // The reply is still to come: keep it in case it is lost.
                *slot = Some((entries, versions));
                None
            } else if echoes.lost.remove(nonce).is_some() {
                Some((entries, versions))
            } else {
                None
            }
        };
        if let Some((entries, versions)) = apply {
            self.apply(&entries, &versions);
        }
    }

    /// Drops every entry whose name matches the glob `pattern`.
    pub(crate) fn apply_pattern(&self, pattern: &str) {
        let names = self.store.matching(pattern);
        self.apply(&names, &[]);
    }

    pub(crate) fn connected(&self) {
        // Messages may have been missed while away: start empty.
        self.store.clear();
        self.versions().clear();
        self.connected.store(true, Ordering::Release);
    }

    pub(crate) fn disconnected(&self) {
        if self.connected.swap(false, Ordering::AcqRel) {
            self.down_since
                .store(self.since_epoch() + 1, Ordering::Release);
        }
    }
}
