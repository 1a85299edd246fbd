//! Counters of what a cache did, readable at any time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// A counter's type: one atomic, or [`Striped`] where named (`as Striped`).
macro_rules! counter_type {
    () => {
        AtomicU64
    };
    ($kind:ty) => {
        $kind
    };
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident $(as $kind:ty)?),* $(,)?) => {
        #[derive(Debug, Default)]
        pub(crate) struct Stats {
            $(pub(crate) $name: counter_type!($($kind)?),)*
        }

        /// A snapshot of a cache's counters since it was built.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
        #[non_exhaustive]
        pub struct StatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Stats {
            pub(crate) fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: Count::get(&self.$name),)* }
            }
        }
    };
}

counters! {
    /// Reads answered from the cache.
    hits as Striped,
    /// Reads that found nothing usable and ran the loader.
    misses,
    /// Values written to the cache after a miss.
    fills,
    /// Fills refused because an invalidation of the key or one of its tags
    /// happened after the read that missed (the race-free fill rule).
    fills_rejected,
    /// Stored values that could not be decoded (counted as misses, replaced).
    decode_errors,
    /// Store operations that failed or timed out (the caller was not failed).
    store_errors,
    /// Write-through stores (`#[cache_put]`, `Cache::put`).
    puts,
    /// Invalidations applied: one per call of an `#[invalidates]` function
    /// (however many attributes it has), per builder run, and per batch of
    /// changes a transaction held and applied together.
    invalidations,
    /// Entries removed by invalidations.
    entries_removed,
    /// Misses answered by another caller's load of the same key (single-flight).
    coalesced,
    /// Hits served past their TTL within the stale window.
    stale_served,
    /// Loads of a value that was still cached: by early refresh, or by a
    /// stale hit (not counted as misses).
    refreshes,
    /// Refreshes whose loader failed (an `Err`); the cached value was served
    /// instead.
    refresh_failures,
    /// Reads answered with an expired copy because the loader failed (an
    /// `Err`, a panic, the hard timeout) or was throttled after failing
    /// (`fail_safe`).
    fail_safe_served,
    /// Values not stored because they exceeded the size limit.
    oversized,
    /// Values that could not be encoded (not stored).
    encode_errors,
    /// Reads that ran the loader without the cache: the cache or the
    /// process switched off (`set_enabled(false)`), or a `condition` false.
    bypassed,
    /// Reads inside [`refreshing`](crate::refreshing) that reloaded and
    /// stored whatever was cached.
    forced_refreshes,
    /// Misses that found another process's loader holding the distributed
    /// lock, and waited for it.
    lock_waits,
    /// Waits ended by the landing announcement (not by re-reading).
    lock_woken,
    /// Waits that reached their bound; the caller ran the loader itself.
    lock_timeouts,
    /// Values served by another process's loader after a wait.
    lock_landed,
    /// Hits answered by the in-process tier (also counted in `hits`).
    local_hits as Striped,
    /// Coherence messages from other instances applied to the in-process
    /// tier.
    coherence_applied,
    /// Times the pub/sub subscriber (re)subscribed.
    subscriber_connects,
    /// Times the in-process tier found it had missed coherence messages (a
    /// sequence number skipped, or a check found the namespace's number
    /// past what was heard) and cleared itself.
    coherence_gaps,
    /// Times the circuit breaker opened after repeated store failures.
    breaker_trips,
    /// Store calls not made because the breaker was open (failed at once).
    breaker_skipped,
    /// Invalidations that failed and were kept in the outbox for retry.
    outbox_kept,
    /// Kept invalidations applied on a retry.
    outbox_retried,
    /// Kept invalidations dropped because the outbox was full.
    outbox_dropped,
    /// Invalidation events from other services applied.
    events_applied,
    /// Messages on event channels that are not valid events (ignored).
    events_rejected,
}

impl Stats {
    pub(crate) fn add(counter: &impl Count, n: u64) {
        counter.add(n);
    }
}

/// A counter: added to by any thread, read as a whole.
pub(crate) trait Count {
    fn add(&self, n: u64);
    fn get(&self) -> u64;
}

impl Count for AtomicU64 {
    #[inline]
    fn add(&self, n: u64) {
        self.fetch_add(n, Relaxed);
    }

    fn get(&self) -> u64 {
        self.load(Relaxed)
    }
}

/// Stripes of a counter or of spare connections: a thread uses its own, so
/// what it changes on every hit stays in its core's cache instead of moving
/// between cores on every change.
pub(crate) const STRIPES: usize = 8;

/// The calling thread's stripe (threads take them in turn).
#[inline]
pub(crate) fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static STRIPE: usize = NEXT.fetch_add(1, Relaxed) % STRIPES);
    STRIPE.with(|s| *s)
}

/// A counter added to on every hit: one atomic per stripe, each on a cache
/// line of its own; read as their sum (a read racing additions sees each
/// stripe's count at some moment of the read, as with one atomic).
#[derive(Debug, Default)]
pub(crate) struct Striped([Line; STRIPES]);

#[derive(Debug, Default)]
#[repr(align(128))]
struct Line(AtomicU64);

impl Count for Striped {
    #[inline]
    fn add(&self, n: u64) {
        self.0[stripe()].0.fetch_add(n, Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.iter().map(|line| line.0.load(Relaxed)).sum()
    }
}

/// Invalidations counted by family: the part of a key or tag before its
/// first `:` (`list:tag:rust` is in family `list`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct InvalidationCounts {
    /// Keys invalidated, by family.
    pub keys: std::collections::BTreeMap<String, u64>,
    /// Tags invalidated, by family.
    pub tags: std::collections::BTreeMap<String, u64>,
}

/// The running counts behind [`InvalidationCounts`].
#[derive(Debug, Default)]
pub(crate) struct Families {
    counts: std::sync::Mutex<InvalidationCounts>,
}

impl Families {
    pub(crate) fn count(&self, keys: &[String], tags: &[String]) {
        let family = |name: &str| name.split(':').next().unwrap_or(name).to_owned();
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            *counts.keys.entry(family(key)).or_default() += 1;
        }
        for tag in tags {
            *counts.tags.entry(family(tag)).or_default() += 1;
        }
    }

    pub(crate) fn snapshot(&self) -> InvalidationCounts {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Additions from more threads than there are stripes all count, and
    /// a snapshot reads their sum.
    #[test]
    fn a_striped_counter_counts_every_thread_s_additions() {
        let stats = Stats::default();
        std::thread::scope(|s| {
            for t in 0..(2 * STRIPES as u64) {
                let stats = &stats;
                s.spawn(move || {
                    for _ in 0..1_000 {
                        Stats::add(&stats.hits, 1);
                    }
                    Stats::add(&stats.local_hits, t);
                });
            }
        });
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.hits, 2 * STRIPES as u64 * 1_000);
        assert_eq!(snapshot.local_hits, (0..2 * STRIPES as u64).sum::<u64>());
    }
}
