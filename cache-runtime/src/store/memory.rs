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
mod tests;
