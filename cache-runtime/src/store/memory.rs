//! The in-process store: the embedded default for a single process, and the
//! reference the Redis store is tested against.
//!
//! Entries live in a bounded `quick_cache` map (sharded, CLOCK-Pro
//! eviction, no maintenance work on reads: a read takes its shard's read
//! lock, and its tail stays that of a hash lookup). Each entry carries its
//! expiry, checked on every read: an expired entry is never served, and it is
//! dropped when a read finds it (under its shard's write lock), by the sweep
//! that runs every `SWEEP_EVERY` writes, or if eviction picks it (eviction
//! does not prefer expired entries: until the sweep they hold room).
//!
//! Writes (fills and invalidations) take one short lock around the sequence
//! number, markers and tag index, so that a fill's marker check and its
//! insert are atomic with respect to invalidations; reads take no
//! store-wide lock. That bookkeeping is swept in steps under the lock (at
//! most `STEP_VISITS` items of each kind every `STEP_EVERY` writes, going on
//! where the last step stopped), so no write waits behind a pass over all
//! of it; the pass over the entries runs outside it.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use indexmap::{IndexMap, IndexSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{AnyValue, Applied, Continuation, FillRequest, InvalidationPlan, Lookup, Store, Token};
use crate::error::Error;
use crate::key::{EntryName, Prefixes, glob_match};
use crate::ttl::after;

#[derive(Debug)]
pub(crate) struct MemEntry {
    pub(crate) bytes: Bytes,
    pub(crate) typed: Option<AnyValue>,
    /// When it expires, in ns on the store's clock (`NEVER`: it does not).
    /// A read of an entry with a time-to-idle moves it.
    expires: AtomicU64,
    /// Time-to-idle (ns), and the deadline no read extends it past.
    idle: Option<(u64, u64)>,
}

/// The `expires` of an entry that does not expire.
const NEVER: u64 = u64::MAX;

impl MemEntry {
    /// Whether it is still live at `now` (ns on the store's clock).
    fn live(&self, now: u64) -> bool {
        self.expires.load(Ordering::Relaxed) > now
    }
}

/// Entries are shared, so a hit clones one pointer.
pub(crate) type Shared = Arc<MemEntry>;

/// A map holding at most `capacity` entries: `quick_cache` gives each
/// shard its share rounded up, so the total is rounded down to a multiple
/// of the shards first.
pub(crate) fn bounded<V: Clone>(capacity: u64) -> quick_cache::sync::Cache<String, V> {
    let map = quick_cache::sync::Cache::new(usize::try_from(capacity).unwrap_or(usize::MAX));
    let shards = map.num_shards() as u64;
    if !capacity.is_multiple_of(shards) {
        map.set_capacity(capacity - capacity % shards);
    }
    map
}

/// The visits of a step over something that grew by `grew` since the last.
fn visits(grew: usize) -> usize {
    STEP_VISITS.saturating_add(grew.saturating_mul(2))
}

/// Visits at most `visits` items of `map` from `*at` on, up to its end (the
/// next call starts over), and drops those `keep` refuses.
fn sweep_from<V>(
    map: &mut IndexMap<String, V>,
    at: &mut usize,
    visits: usize,
    mut keep: impl FnMut(&str, &mut V) -> bool,
) {
    for _ in 0..visits {
        if *at >= map.len() {
            *at = 0;
            return;
        }
        let (name, value) = map.get_index_mut(*at).expect("in range");
        if keep(name, value) {
            *at += 1;
        } else {
            map.swap_remove_index(*at);
        }
    }
}

/// Nanoseconds of `d`, saturating ("never" for durations past ~584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NEVER)
}

#[derive(Default)]
struct WriteState {
    /// marker name -> (sequence number, valid until)
    markers: IndexMap<String, (u64, Instant)>,
    /// tag set name -> member entry names
    tags: IndexMap<String, IndexSet<String>>,
    /// lock name -> (token, lease end)
    locks: HashMap<String, (String, Instant)>,
    /// entry name -> the keys it depends on, directly or not
    depends_of: IndexMap<String, Vec<String>>,
    /// Pattern markers: (pattern, sequence number, valid until), at most
    /// `PATTERNS`; fills older than the ones dropped past that are refused
    /// (`pattern_floor`).
    patterns: Vec<(String, u64, Instant)>,
    pattern_floor: u64,
    writes_since_sweep: usize,
    /// Where the stepped sweep goes on: in `markers`, in `depends_of`, and
    /// in `tags` (a tag, and a member of it).
    markers_at: usize,
    depends_at: usize,
    tags_at: (usize, usize),
    /// What the bookkeeping grew by since the last step: markers and
    /// dependency lists as they were then, tag members added since.
    markers_then: usize,
    depends_then: usize,
    members_added: usize,
    /// Fills whose token is below this are refused: everything was cleared
    /// after their read.
    floor: u64,
}

pub(crate) struct MemoryStore {
    /// Hashed with `quick_cache`'s default hasher (foldhash, keyed per
    /// process). Bounded per shard (`bounded`).
    entries: quick_cache::sync::Cache<String, Shared>,
    seq: AtomicU64,
    state: Mutex<WriteState>,
    /// version name -> its current value, and how long it must live: as
    /// long as the longest-lived entry stamped with it (a forgotten version
    /// starts over at 0, so none may outlive it). Read without the write
    /// lock; changed under it.
    versions: RwLock<HashMap<String, Version>>,
    /// The store's clock (tokens carry it).
    started: Instant,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

const SWEEP_EVERY: usize = 4096;
/// A step of the bookkeeping's sweep runs every `STEP_EVERY` writes and
/// visits `STEP_VISITS` markers, dependency lists and tag members each,
/// plus twice what each grew by since the last step: it outpaces what the
/// writes add, so a round over each takes a bounded share of the writes.
const STEP_EVERY: usize = 8;
const STEP_VISITS: usize = 64;
/// The most pattern markers kept (as on Redis).
const PATTERNS: usize = 1000;

/// A version's current value, and until when it must be kept (ms on the
/// store's clock; `u64::MAX`: for good).
#[derive(Debug, Default)]
struct Version {
    value: u64,
    until: u64,
}

impl MemoryStore {
    pub(crate) fn new(max_entries: u64) -> Self {
        MemoryStore {
            entries: bounded(max_entries),
            seq: AtomicU64::new(0),
            state: Mutex::new(WriteState::default()),
            versions: RwLock::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    /// The store's clock, in ms.
    fn now_ms(&self) -> u64 {
        crate::ttl::millis(self.started.elapsed())
    }

    /// `t` on the store's clock, in ns (entries' expiry): from an
    /// `Instant` the caller already took.
    fn ns(&self, t: Instant) -> u64 {
        nanos(t.saturating_duration_since(self.started))
    }

    fn versions(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Version>> {
        self.versions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn versions_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Version>> {
        self.versions.write().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WriteState> {
        // A panic while holding the lock leaves consistent data (every update
        // is a single map operation), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn read(&self, entry: &str, version: Option<&str>) -> Lookup {
        let token = self.current_token();
        let version = version.map_or(0, |v| self.version(v));
        let (value, typed) = self
            .entry(entry)
            .map_or((None, None), |e| (Some(e.bytes.clone()), e.typed.clone()));
        Lookup {
            value,
            typed,
            token: Some(token),
            version,
        }
    }

    /// The entry under `entry`, shared (a hit clones one pointer), unless
    /// it expired. A read of an entry with a time-to-idle extends it by that,
    /// up to its deadline.
    pub(crate) fn entry(&self, entry: &str) -> Option<Shared> {
        let found = self.entries.get(entry)?;
        if found.idle.is_none() && found.expires.load(Ordering::Relaxed) == NEVER {
            return Some(found);
        }
        let now = self.ns(Instant::now());
        if !found.live(now) {
            // Dropped now, unless a fill replaced it meanwhile.
            self.entries.remove_if(entry, |e| Arc::ptr_eq(e, &found));
            return None;
        }
        if let Some((idle, deadline)) = found.idle {
            // Only ever moved later: a reader with an older `now` must not
            // undo a newer reader's extension.
            found
                .expires
                .fetch_max(now.saturating_add(idle).min(deadline), Ordering::Relaxed);
        }
        Some(found)
    }

    /// Removes the entry under `name`; whether a live one was there.
    fn remove(&self, name: &str, now: u64) -> bool {
        self.entries.remove(name).is_some_and(|(_, e)| e.live(now))
    }

    /// The current version of a version name.
    pub(crate) fn version(&self, name: &str) -> u64 {
        self.versions().get(name).map_or(0, |v| v.value)
    }

    /// The current sequence number and clock: the token of a read
    /// starting now.
    pub(crate) fn current_token(&self) -> Token {
        Token {
            seq: self.seq.load(Ordering::Acquire),
            at_ms: self.now_ms(),
        }
    }

    pub(crate) fn fill_now(&self, req: FillRequest) -> bool {
        let mut state = self.state();
        let now = Instant::now();
        let marker_of = |state: &WriteState, name: &str| {
            state
                .markers
                .get(name)
                .filter(|(seq, until)| *until > now && *seq > req.token)
                .map(|(seq, _)| *seq)
        };
        // The dependencies, and what they depend on.
        let p = &req.prefixes;
        let mut deps: Vec<String> = Vec::new();
        for key in &req.depends_on {
            if !deps.contains(key) {
                deps.push(key.clone());
            }
        }
        let mut next = 0;
        while let Some(key) = deps.get(next).cloned() {
            next += 1;
            if let Some(up) = state.depends_of.get(&format!("{}{key}", p.entry)) {
                for k in up.clone() {
                    if !deps.contains(&k) {
                        deps.push(k);
                    }
                }
            }
        }
        // A pattern deleted after the read that matches the entry.
        let pattern = state
            .patterns
            .iter()
            .filter(|(pattern, seq, until)| {
                *until > now && *seq > req.token && glob_match(pattern, &req.entry)
            })
            .map(|(_, seq, _)| *seq)
            .chain((state.pattern_floor > req.token).then_some(state.pattern_floor))
            .max();
        let refusing = std::iter::once(req.marker.clone())
            .chain(req.tags.iter().map(|t| t.marker.clone()))
            .chain(deps.iter().map(|k| format!("{}{k}", p.key_marker)))
            .filter_map(|name| marker_of(&state, &name))
            .chain(pattern)
            .max();
        if let Some(release) = &req.release {
            Self::release(&mut state, &release.lock, &release.token);
        }
        if req.token < state.floor {
            return false;
        }
        // Its markers may be gone: too late to tell.
        if req
            .read_at_ms
            .is_some_and(|at| self.now_ms().saturating_sub(at) >= crate::ttl::millis(req.window))
        {
            return false;
        }
        if let Some((name, stamp)) = &req.version
            && self.version(name) != *stamp
        {
            // Bumped since the read: it would never be served.
            return false;
        }
        if let Some(seq) = refusing {
            // A value built from this one, read as early, is refused too.
            let until = after(now, req.marker_ttl);
            let mark = state
                .markers
                .entry(req.marker.clone())
                .or_insert((seq, until));
            if mark.0 < seq {
                *mark = (seq, until);
            }
            return false;
        }
        for tag in &req.tags {
            state
                .tags
                .entry(tag.set.clone())
                .or_default()
                .insert(req.entry.clone());
        }
        for key in &deps {
            state
                .tags
                .entry(format!("{}{key}", p.dependents))
                .or_default()
                .insert(req.entry.clone());
        }
        state.members_added += req.tags.len() + deps.len();
        if deps.is_empty() {
            state.depends_of.swap_remove(&req.entry);
        } else {
            state.depends_of.insert(req.entry.clone(), deps);
        }
        if let Some((name, _)) = &req.version {
            // The version outlives every entry stamped with it.
            let until = req.ttl.map_or(u64::MAX, |ttl| {
                self.now_ms().saturating_add(crate::ttl::millis(ttl))
            });
            let mut versions = self.versions_mut();
            let v = versions.entry(name.clone()).or_default();
            v.until = v.until.max(until);
        }
        let at = self.ns(now);
        let from_now = |d: Option<Duration>| d.map_or(NEVER, |d| at.saturating_add(nanos(d)));
        let idle = req.idle.map(|idle| (nanos(idle), from_now(req.ttl)));
        let expires = AtomicU64::new(from_now(req.expiry()));
        self.entries.insert(
            req.entry,
            Arc::new(MemEntry {
                expires,
                idle,
                bytes: Bytes::from(req.value),
                typed: req.typed,
            }),
        );
        if self.count_write(&mut state, now) {
            drop(state);
            self.sweep_entries();
        }
        true
    }

    /// Counts a fill or an invalidation: a step of the bookkeeping's sweep
    /// every `STEP_EVERY` of them, so neither a read-heavy nor a write-heavy
    /// load grows it; every `SWEEP_EVERY`, pattern markers, locks and
    /// version names past their life are dropped, and the entries are due a
    /// pass: `true` tells the caller to run `sweep_entries` once it has
    /// released the lock.
    #[must_use]
    fn count_write(&self, state: &mut WriteState, now: Instant) -> bool {
        state.writes_since_sweep += 1;
        if state.writes_since_sweep.is_multiple_of(STEP_EVERY) {
            self.sweep_step(state, now);
        }
        if state.writes_since_sweep < SWEEP_EVERY {
            return false;
        }
        state.writes_since_sweep = 0;
        // The few pattern markers and locks, whole.
        state.patterns.retain(|(_, _, until)| *until > now);
        state.locks.retain(|_, (_, until)| *until > now);
        // Under the lock: a fill stamps a version between checking it and
        // keeping it alive, and must not see it dropped in between.
        let now = self.now_ms();
        self.versions_mut().retain(|_, v| v.until > now);
        true
    }

    /// Drops expired entries, a shard at a time. Not under the write lock:
    /// a fill racing it waits for the shard, and its entry is live.
    fn sweep_entries(&self) {
        let at = self.ns(Instant::now());
        self.entries.retain(|_, e| e.live(at));
    }

    /// One step of the bookkeeping's sweep: tag members whose entries are
    /// gone, markers past their window, dependency lists of entries that
    /// are gone, each from where the last step stopped (an item moved by a
    /// removal in between may wait for the next round).
    fn sweep_step(&self, state: &mut WriteState, now: Instant) {
        let entries = &self.entries;
        let WriteState {
            markers,
            tags,
            depends_of,
            markers_at,
            depends_at,
            tags_at,
            markers_then,
            depends_then,
            members_added,
            ..
        } = state;
        let grew = markers.len().saturating_sub(*markers_then);
        sweep_from(markers, markers_at, visits(grew), |_, (_, until)| {
            *until > now
        });
        *markers_then = markers.len();
        let grew = depends_of.len().saturating_sub(*depends_then);
        sweep_from(depends_of, depends_at, visits(grew), |entry, _| {
            entries.contains_key(entry)
        });
        *depends_then = depends_of.len();
        let (tag, member) = tags_at;
        let mut visits = visits(std::mem::take(members_added));
        while visits > 0 {
            if *tag >= tags.len() {
                // A round is done: the next step starts the next one.
                (*tag, *member) = (0, 0);
                break;
            }
            let (_, members) = tags.get_index_mut(*tag).expect("in range");
            while *member < members.len() && visits > 0 {
                visits -= 1;
                if entries.contains_key(&members[*member]) {
                    *member += 1;
                } else {
                    members.swap_remove_index(*member);
                }
            }
            if *member >= members.len() {
                if members.is_empty() {
                    tags.swap_remove_index(*tag);
                } else {
                    *tag += 1;
                }
                *member = 0;
            }
        }
    }

    pub(crate) fn invalidate(&self, plan: &InvalidationPlan) -> u64 {
        self.invalidate_seq(plan).0
    }

    /// Invalidates, returning what was removed, the sequence number of
    /// this invalidation, the store's clock, and the put checks that failed.
    pub(crate) fn invalidate_seq(&self, plan: &InvalidationPlan) -> (u64, u64, u64, Vec<usize>) {
        let mut state = self.state();
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let now = Instant::now();
        let conflicts = plan
            .put_checks
            .iter()
            .enumerate()
            .filter(|(_, (marker, since))| {
                state
                    .markers
                    .get(marker)
                    .is_some_and(|(m, until)| *until > now && m > since)
            })
            .map(|(i, _)| i)
            .collect();
        let until = after(now, plan.marker_ttl);
        let at = self.ns(now);
        let mut removed = 0;
        let mut gone = Vec::new();
        for (entry, marker) in &plan.keys {
            removed += u64::from(self.remove(entry, at));
            state.markers.insert(marker.clone(), (seq, until));
            gone.push(entry.clone());
        }
        for tag in &plan.tags {
            if let Some(members) = state.tags.swap_remove(&tag.set) {
                for member in members {
                    removed += u64::from(self.remove(&member, at));
                    gone.push(member);
                }
            }
            state.markers.insert(tag.marker.clone(), (seq, until));
        }
        for pattern in &plan.patterns {
            // One pass, each shard under its lock once.
            let matched = RefCell::new(Vec::new());
            self.entries.retain(|name, e| {
                if !glob_match(pattern, name) {
                    return true;
                }
                if e.live(at) {
                    matched.borrow_mut().push(name.clone());
                }
                false
            });
            let matched = matched.into_inner();
            removed += matched.len() as u64;
            gone.extend(matched);
            if state.patterns.len() >= PATTERNS {
                let (_, oldest, _) = state.patterns.remove(0);
                state.pattern_floor = state.pattern_floor.max(oldest);
            }
            state.patterns.push((pattern.clone(), seq, until));
        }
        removed += self.cascade(&mut state, &plan.prefixes, gone, (seq, until), at);
        if !plan.bumps.is_empty() {
            // A version nobody read needs to live only as long as a read
            // racing the bump may fill.
            let until = self
                .now_ms()
                .saturating_add(crate::ttl::millis(plan.marker_ttl));
            let mut versions = self.versions_mut();
            for name in &plan.bumps {
                let v = versions
                    .entry(name.clone())
                    .or_insert(Version { value: 0, until });
                v.value += 1;
            }
        }
        if self.count_write(&mut state, Instant::now()) {
            drop(state);
            self.sweep_entries();
        }
        (removed, seq, self.now_ms(), conflicts)
    }

    /// Marks every removed entry and removes its dependents, breadth first,
    /// each entry once (a cycle ends where it started).
    /// `at` is the invalidation's time on the store's clock (what was live).
    fn cascade(
        &self,
        state: &mut WriteState,
        prefixes: &Prefixes,
        mut queue: Vec<String>,
        marker: (u64, Instant),
        at: u64,
    ) -> u64 {
        if prefixes.entry.is_empty() {
            return 0;
        }
        let mut seen = HashSet::new();
        let mut removed = 0;
        let mut next = 0;
        while let Some(entry) = queue.get(next).cloned() {
            next += 1;
            let Some(key) = entry.strip_prefix(&prefixes.entry) else {
                continue;
            };
            if !seen.insert(key.to_owned()) {
                continue;
            }
            state
                .markers
                .insert(format!("{}{key}", prefixes.key_marker), marker);
            if let Some(members) = state
                .tags
                .swap_remove(&format!("{}{key}", prefixes.dependents))
            {
                for member in members {
                    removed += u64::from(self.remove(&member, at));
                    queue.push(member);
                }
            }
        }
        removed
    }

    /// Removes every entry; fills that read before this are refused.
    pub(crate) fn clear(&self) {
        let mut state = self.state();
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        state.floor = seq;
        state.markers.clear();
        state.tags.clear();
        state.depends_of.clear();
        state.patterns.clear();
        self.entries.clear();
    }

    /// Takes the lock `name` for `lease` unless someone holds it.
    pub(crate) fn lock_now(&self, name: &str, token: &str, lease: Duration) -> bool {
        let mut state = self.state();
        let now = Instant::now();
        if state.locks.get(name).is_some_and(|(_, until)| *until > now) {
            return false;
        }
        state
            .locks
            .insert(name.to_owned(), (token.to_owned(), after(now, lease)));
        true
    }

    /// Extends the lease of a lock still held with `token`.
    pub(crate) fn renew_now(&self, name: &str, token: &str, lease: Duration) -> bool {
        let mut state = self.state();
        let now = Instant::now();
        match state.locks.get_mut(name) {
            Some((held, until)) if held == token && *until > now => {
                *until = after(now, lease);
                true
            }
            _ => false,
        }
    }

    /// Releases the lock `name` if it is still held with `token`.
    pub(crate) fn unlock_now(&self, name: &str, token: &str) -> bool {
        Self::release(&mut self.state(), name, token)
    }

    fn release(state: &mut WriteState, name: &str, token: &str) -> bool {
        let now = Instant::now();
        let held = state
            .locks
            .get(name)
            .is_some_and(|(held, until)| held == token && *until > now);
        if held {
            state.locks.remove(name);
        }
        held
    }

    #[cfg(test)]
    pub(crate) fn markers_kept(&self) -> usize {
        self.state().markers.len()
    }

    #[cfg(test)]
    pub(crate) fn tag_members(&self, set: &str) -> usize {
        self.state().tags.get(set).map_or(0, IndexSet::len)
    }

    #[cfg(test)]
    pub(crate) fn versions_kept(&self) -> usize {
        self.versions().len()
    }
}

/// The operations, answered at once (every future is ready when made).
impl Store for MemoryStore {
    /// An in-process entry's life is extended by its own `idle` on any
    /// read, so the read's is not needed.
    async fn lookup(
        &self,
        entry: EntryName<'_>,
        version: Option<&str>,
        _idle: Option<Duration>,
    ) -> Result<Lookup, Error> {
        Ok(entry.with_str(|entry| self.read(entry, version)))
    }

    /// The in-process store has no identity to check (it loses its data
    /// only with the process).
    async fn token(&self) -> Result<(Token, bool), Error> {
        Ok((self.current_token(), true))
    }

    async fn fill(&self, req: FillRequest) -> Result<bool, Error> {
        Ok(self.fill_now(req))
    }

    /// The whole plan in one step, patterns included.
    async fn invalidate_step(
        &self,
        plan: &InvalidationPlan,
        _from: Option<&Continuation>,
        _nonce: &str,
    ) -> Result<(Applied, Option<Continuation>), Error> {
        let (removed, seq, at_ms, conflicts) = self.invalidate_seq(plan);
        let applied = Applied {
            removed,
            seq,
            at_ms,
            conflicts,
            ..Applied::default()
        };
        Ok((applied, None))
    }

    /// Nothing to scan: the invalidation step applied the pattern.
    async fn scan_step(&self, _pattern: &str, _cursor: u64) -> Result<(u64, Vec<String>), Error> {
        Ok((0, Vec::new()))
    }

    /// Never `2`: a caller that takes the lock checks the entry after.
    async fn try_lock(
        &self,
        name: &str,
        token: &str,
        lease: Duration,
        _unless_exists: Option<&str>,
    ) -> Result<u8, Error> {
        Ok(u8::from(self.lock_now(name, token, lease)))
    }

    async fn renew(&self, name: &str, token: &str, lease: Duration) -> Result<bool, Error> {
        Ok(self.renew_now(name, token, lease))
    }

    /// Nobody else listens for landings in process: the channel is unused.
    async fn unlock(
        &self,
        name: &str,
        token: &str,
        _channel: &str,
        _entry: &str,
    ) -> Result<bool, Error> {
        Ok(self.unlock_now(name, token))
    }

    async fn claim(&self, _key: &str, _ttl: Duration) -> Result<bool, Error> {
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TagNames;

    fn fill(store: &MemoryStore, entry: &str, tags: &[&str], token: u64) -> bool {
        store.fill_now(FillRequest {
            tags: tags
                .iter()
                .map(|t| TagNames {
                    set: format!("s:{t}"),
                    marker: format!("m:{t}"),
                })
                .collect(),
            ..FillRequest::new(entry.into(), format!("m:{entry}"), b"v".to_vec(), token)
        })
    }

    #[test]
    fn the_tag_index_forgets_entries_that_are_gone() {
        let store = MemoryStore::new(100_000);
        for i in 0..10 {
            assert!(fill(&store, &format!("e{i}"), &["t"], 0));
        }
        assert_eq!(store.tag_members("s:t"), 10);
        // Removed by key: the tag index still lists them until a sweep.
        let plan = InvalidationPlan {
            keys: (0..10)
                .map(|i| (format!("e{i}"), format!("m:e{i}")))
                .collect(),
            marker_ttl: Duration::from_secs(30),
            ..Default::default()
        };
        assert_eq!(store.invalidate(&plan), 10);
        assert_eq!(store.tag_members("s:t"), 10);
        for i in 0..SWEEP_EVERY {
            fill(&store, &format!("other{i}"), &[], 1);
        }
        assert_eq!(
            store.tag_members("s:t"),
            0,
            "the sweep dropped members whose entries are gone"
        );
    }

    /// The bookkeeping is swept in bounded steps that go on where the last
    /// one stopped: no write does a pass over all of it (with nothing added
    /// since, a step drops at most `STEP_VISITS` tag members), and the steps
    /// together reach everything.
    #[test]
    fn the_bookkeeping_is_swept_in_bounded_steps_that_cover_it() {
        let store = MemoryStore::new(100_000);
        let n = 4 * STEP_VISITS + 100;
        for i in 0..n {
            assert!(fill(&store, &format!("e{i}"), &["t"], 0));
        }
        // Removed by key, with markers that outlive them only briefly.
        let marker_ttl = Duration::from_millis(20);
        let plan = InvalidationPlan {
            keys: (0..n)
                .map(|i| (format!("e{i}"), format!("m:e{i}")))
                .collect(),
            marker_ttl,
            ..Default::default()
        };
        assert_eq!(store.invalidate(&plan), n as u64);
        // The markers' lives started inside the call.
        let expired = Instant::now() + marker_ttl;
        assert_eq!(store.tag_members("s:t"), n);
        assert_eq!(store.markers_kept(), n);
        while Instant::now() <= expired {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut steps = 0;
        let mut written = 0;
        while store.tag_members("s:t") > 0 || store.markers_kept() > 0 {
            // Two more than the members need: a step may stop at the end
            // of a round and the first may start in the middle of one.
            assert!(
                steps <= n.div_ceil(STEP_VISITS) + 2,
                "{steps} steps did not reach every member and marker"
            );
            let members = store.tag_members("s:t");
            // Up to and including the next step.
            loop {
                fill(
                    &store,
                    &format!("other{written}"),
                    &[],
                    store.current_token().seq,
                );
                written += 1;
                if store.state().writes_since_sweep.is_multiple_of(STEP_EVERY) {
                    break;
                }
            }
            // The first step may also visit twice the members the last
            // fills of `e…` added after the step before it.
            let bound = if steps == 0 {
                visits(STEP_EVERY)
            } else {
                STEP_VISITS
            };
            steps += 1;
            let dropped = members - store.tag_members("s:t");
            assert!(dropped <= bound, "one step dropped {dropped} members");
        }
    }

    /// Steps outpace what writes add: writes that each leave 16 expired
    /// markers (twice what fixed steps of `STEP_VISITS` every `STEP_EVERY`
    /// writes would visit) do not pile them up.
    #[test]
    fn the_sweep_keeps_up_with_what_writes_add() {
        let store = MemoryStore::new(100_000);
        let per_write = 2 * STEP_VISITS / STEP_EVERY;
        for w in 0..2_000 {
            let plan = InvalidationPlan {
                keys: (0..per_write)
                    .map(|i| (format!("e{w}.{i}"), format!("m:e{w}.{i}")))
                    .collect(),
                // Past their window at once: the next step may drop them.
                marker_ttl: Duration::ZERO,
                ..Default::default()
            };
            store.invalidate(&plan);
        }
        let kept = store.markers_kept();
        assert!(
            kept <= 2 * per_write * STEP_EVERY,
            "{kept} markers kept after 2,000 writes of {per_write}"
        );
    }

    /// It never holds more entries than its capacity (the map's shares
    /// per shard are rounded down, not up), and uses nearly all of it.
    #[test]
    fn it_holds_at_most_its_capacity() {
        for capacity in [1, 100, 1_000, 1_001, 1_023] {
            let store = MemoryStore::new(capacity);
            for i in 0..capacity * 3 {
                fill(&store, &format!("e{i}"), &[], store.current_token().seq);
            }
            let held = store.entries.len() as u64;
            let shards = store.entries.num_shards() as u64;
            assert!(held <= capacity, "{held} held, capacity {capacity}");
            assert!(held + shards > capacity, "{held} held, capacity {capacity}");
        }
    }

    /// Expiry is checked on read: an expired entry is never served, does
    /// not count as removed, and is dropped by the sweep if nobody reads it.
    #[test]
    fn expired_entries_are_not_served_counted_or_kept() {
        let store = MemoryStore::new(100_000);
        let short = |entry: String| FillRequest {
            ttl: Some(Duration::from_millis(100)),
            ..FillRequest::new(entry.clone(), format!("m:{entry}"), b"v".to_vec(), 0)
        };
        for i in 0..100 {
            assert!(store.fill_now(short(format!("e{i}"))));
        }
        // Filled last, so expired last.
        assert!(store.fill_now(short("last".into())));
        assert!(store.entry("last").is_some());
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.entry("last").is_some() {
            assert!(Instant::now() < deadline, "served past its TTL");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(store.read("e1", None).value, None);
        let plan = InvalidationPlan {
            keys: vec![("e2".into(), "m:e2".into())],
            patterns: vec!["e1*".into()],
            marker_ttl: Duration::from_secs(30),
            ..Default::default()
        };
        assert_eq!(store.invalidate(&plan), 0, "nothing live was removed");
        assert!(store.entries.len() > 50, "unread, not yet dropped");
        for i in 0..SWEEP_EVERY {
            fill(&store, &format!("other{i}"), &[], store.current_token().seq);
        }
        assert_eq!(
            store.entries.len(),
            SWEEP_EVERY,
            "the sweep dropped the expired entries"
        );
    }

    /// Version names live as long as the entries stamped with them: bumped
    /// and never read, a name is dropped by the sweep after the marker
    /// lifetime (before, every name ever bumped was kept for good).
    #[test]
    fn versions_nobody_reads_are_swept() {
        let store = MemoryStore::new(100_000);
        let bump = |name: String| InvalidationPlan {
            bumps: vec![name],
            marker_ttl: Duration::from_millis(1),
            ..Default::default()
        };
        for i in 0..1_000 {
            store.invalidate(&bump(format!("v{i}")));
        }
        assert_eq!(store.version("v7"), 1);
        std::thread::sleep(Duration::from_millis(5));
        for i in 0..SWEEP_EVERY {
            fill(&store, &format!("other{i}"), &[], store.current_token().seq);
        }
        assert_eq!(store.versions_kept(), 0, "bumped, never read, swept");
        // A read-and-filled version lives as long as its entry.
        let versioned = |ttl| FillRequest {
            ttl,
            version: Some(("kept".into(), 0)),
            ..FillRequest::new(
                "e".into(),
                "m:e".into(),
                b"v".to_vec(),
                store.current_token().seq,
            )
        };
        let req = versioned(Some(Duration::from_secs(60)));
        assert!(store.fill_now(req));
        store.invalidate(&bump("kept".into()));
        for i in 0..SWEEP_EVERY {
            fill(&store, &format!("more{i}"), &[], store.current_token().seq);
        }
        assert_eq!(store.version("kept"), 1, "kept while its entry may be read");
        let req = versioned(None);
        assert!(
            !store.fill_now(req),
            "read under an older version: not stored"
        );
    }

    #[test]
    fn a_fill_older_than_an_invalidation_is_refused() {
        let store = MemoryStore::new(100);
        let token = store.read("e", None).token.expect("read in process").seq;
        let plan = InvalidationPlan {
            tags: vec![TagNames {
                set: "s:t".into(),
                marker: "m:t".into(),
            }],
            marker_ttl: Duration::from_secs(30),
            ..Default::default()
        };
        store.invalidate(&plan);
        assert!(
            !fill(&store, "e", &["t"], token),
            "tag invalidated after the read"
        );
        assert!(
            fill(&store, "f", &["u"], token),
            "another tag is unaffected"
        );
        assert!(
            !fill(&store, "e", &["u"], token),
            "the refused fill marked its entry: the same stale read cannot store it under other tags"
        );
        assert!(
            fill(&store, "e", &["t"], store.current_token().seq),
            "a read after the invalidation may fill"
        );
    }
}
