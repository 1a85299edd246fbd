//! The outbox: invalidations that failed because the store was unreachable
//! are kept (up to a bound) and retried until they succeed, so that an entry
//! a write should have removed is never served once Redis is back.
//!
//! While the outbox holds anything, this cache reads past the store: reads
//! run the loader without the cache (no lookup, no fill, no tier), and make
//! no store call for the outbox either: they only wake the background task,
//! which retries (every 100 ms, backing off to 2 s while the store keeps
//! failing; at once when a read wakes it, but not twice within
//! `MIN_PAUSE`). So no read waits on a retry, whatever it holds (a pattern
//! is a whole `SCAN` loop), and the cache is used again within a moment of
//! the store answering. Invalidations that name no pattern are retried
//! together, up to `BATCH` in one round trip, so that the outbox of a long
//! outage drains in a few round trips. Past the bound the oldest
//! invalidation is dropped, counted in `outbox_dropped`, and logged.
//!
//! The task holds the cache weakly: a dropped cache's outbox is dropped
//! with it (its task ends at its next wake-up).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::cache::{Cache, WeakCache};
use crate::invalidation::Spec;

/// The most invalidations kept.
pub(crate) const OUTBOX_BOUND: usize = 10_000;
/// The most kept invalidations retried in one round trip.
const BATCH: usize = 256;
/// The shortest pause between two retries, however often reads wake the
/// task.
const MIN_PAUSE: Duration = Duration::from_millis(50);
/// The first pause after a failure, and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(2);

impl Spec {
    /// Whether it can be retried together with others: the script applies
    /// any number of keys, tags, versions and events at once, but patterns
    /// take scans of their own.
    fn merges(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Adds what `other` names (each name once).
    fn absorb(&mut self, other: &Spec) {
        for (mine, theirs) in [
            (&mut self.keys, &other.keys),
            (&mut self.tags, &other.tags),
            (&mut self.bumps, &other.bumps),
        ] {
            for name in theirs {
                if !mine.contains(name) {
                    mine.push(name.clone());
                }
            }
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// Each kept invalidation with a number of its own (see `pop_through`).
    queue: Mutex<Queue>,
    len: AtomicUsize,
    /// Whether the background task is running.
    draining: AtomicBool,
    /// Wakes the background task (a read found the outbox not empty).
    wake: std::sync::Arc<tokio::sync::Notify>,
    /// Held by the one caller retrying the kept invalidations: two callers
    /// retrying the same front would each take one off, so the second would
    /// take off one that nobody applied.
    turn: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<(u64, Spec)>,
    next: u64,
}

impl Outbox {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether anything waits to be retried.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many invalidations wait to be retried.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Keeps `pending`; returns whether an older one was dropped.
    fn push(&self, pending: Spec) -> bool {
        let mut queue = self.queue();
        let dropped = queue.items.len() >= OUTBOX_BOUND && queue.items.pop_front().is_some();
        let id = queue.next;
        queue.next += 1;
        queue.items.push_back((id, pending));
        self.len.store(queue.items.len(), Ordering::Release);
        dropped
    }

    /// What to retry next: the oldest invalidations that merge (up to
    /// `BATCH`), applied in one step, or else the oldest alone; with the
    /// number of the last one it covers. Those without an event become one
    /// (each name once); each event keeps the invalidation it names.
    fn next_batch(&self) -> Option<(u64, Vec<Spec>)> {
        let queue = self.queue();
        let mut items = queue.items.iter();
        let (first_id, first) = items.next()?;
        let (mut last, mut batch) = (*first_id, vec![first.clone()]);
        if first.merges() {
            for (id, pending) in items.take(BATCH - 1).take_while(|(_, p)| p.merges()) {
                match batch.iter_mut().find(|b| b.publish.is_none()) {
                    Some(quiet) if pending.publish.is_none() => quiet.absorb(pending),
                    _ => batch.push(pending.clone()),
                }
                last = *id;
            }
        }
        Some((last, batch))
    }

    /// Takes off the invalidations numbered up to `last`, which were
    /// applied; how many. Only those still there: a full outbox may have
    /// dropped some while they were being applied, and the ones kept since
    /// (numbered after `last`) were not applied and stay.
    fn pop_through(&self, last: u64) -> u64 {
        let mut queue = self.queue();
        let mut popped = 0;
        while queue.items.front().is_some_and(|(id, _)| *id <= last) {
            queue.items.pop_front();
            popped += 1;
        }
        self.len.store(queue.items.len(), Ordering::Release);
        popped
    }
}

impl Cache {
    /// Keeps a failed invalidation for retry, and starts the retrying task.
    pub(crate) fn outbox_push(&self, pending: Spec) {
        let outbox = self.outbox();
        if outbox.push(pending) {
            crate::stats::Stats::add(&self.stats_ref().outbox_dropped, 1);
            tracing::error!(target: "cache_runtime", namespace = self.namespace(), "invalidation outbox full: the oldest invalidation was dropped");
        }
        crate::stats::Stats::add(&self.stats_ref().outbox_kept, 1);
        if !outbox.draining.swap(true, Ordering::AcqRel) {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(drain_in_background(self.downgrade()));
            } else {
                outbox.draining.store(false, Ordering::Release);
            }
        }
    }

    /// Asks the background task to retry now (a read found the outbox not
    /// empty and goes without the cache meanwhile).
    pub(crate) fn outbox_wake(&self) {
        self.outbox().wake.notify_one();
    }

    fn outbox_waker(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.outbox().wake.clone()
    }

    /// Retries the kept invalidations in order until one fails; whether the
    /// outbox is empty now. `false` at once if another caller is at it.
    pub(crate) async fn drain_outbox(&self) -> bool {
        let outbox = self.outbox();
        let Ok(_turn) = outbox.turn.try_lock() else {
            return false;
        };
        while let Some((last, pending)) = outbox.next_batch() {
            if self.change(pending, Vec::new(), false).await.is_err() {
                return false;
            }
            let popped = outbox.pop_through(last);
            crate::stats::Stats::add(&self.stats_ref().outbox_retried, popped);
        }
        true
    }
}

/// Retries the outbox until it is empty, pausing between failed tries (or
/// until a read wakes it); ends when the cache is dropped.
async fn drain_in_background(cache: WeakCache) {
    let mut pause = FIRST_PAUSE;
    loop {
        let Some(wake) = cache.upgrade().map(|c| c.outbox_waker()) else {
            return;
        };
        let slept = tokio::time::sleep(pause);
        tokio::select! {
            () = slept => {}
            () = wake.notified() => tokio::time::sleep(MIN_PAUSE).await,
        }
        let Some(cache) = cache.upgrade() else {
            return;
        };
        crate::hooks::point("outbox.retry", cache.namespace()).await;
        if cache.drain_outbox().await {
            let outbox = cache.outbox();
            outbox.draining.store(false, Ordering::Release);
            // A push may have come after the last look but before the
            // flag was cleared: take the task back if so.
            if outbox.is_empty() || outbox.draining.swap(true, Ordering::AcqRel) {
                return;
            }
            pause = FIRST_PAUSE;
        } else {
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(key: &str) -> Spec {
        Spec {
            keys: vec![key.to_owned()],
            tags: Vec::new(),
            patterns: Vec::new(),
            bumps: Vec::new(),
            publish: None,
        }
    }

    fn publishing(key: &str) -> Spec {
        Spec {
            publish: Some("post:updated".to_owned()),
            ..pending(key)
        }
    }

    fn patterned(key: &str) -> Spec {
        Spec {
            patterns: vec!["post:*".to_owned()],
            ..pending(key)
        }
    }

    /// A cache whose Redis never answers keeps an invalidation in its
    /// outbox; once every handle is dropped, the retrying task lets go of
    /// it (before, the task held a handle and retried forever).
    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn the_retrying_task_does_not_keep_a_dropped_cache_alive() {
        let cache = Cache::builder()
            .redis_url("redis://127.0.0.1:1/")
            .timeout(Duration::from_millis(50))
            .apply_events(false)
            .build()
            .unwrap();
        assert!(cache.invalidate().key("k").await.is_err());
        assert!(!cache.outbox().is_empty(), "kept for retry");
        let weak = cache.downgrade();
        drop(cache);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while weak.upgrade().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the outbox task still holds the cache"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn invalidations_without_patterns_are_retried_together() {
        let outbox = Outbox::default();
        outbox.push(pending("a"));
        outbox.push(pending("b"));
        outbox.push(pending("a"));
        outbox.push(publishing("c"));
        outbox.push(pending("d"));
        outbox.push(patterned("e"));
        outbox.push(pending("f"));
        let (last, batch) = outbox.next_batch().unwrap();
        assert_eq!(batch.len(), 2, "{batch:?}");
        assert_eq!(batch[0].keys, ["a", "b", "d"], "merged, each name once");
        assert_eq!(
            (&batch[1].keys, batch[1].publish.is_some()),
            (&vec!["c".to_owned()], true),
            "an event keeps what it names"
        );
        assert_eq!(outbox.pop_through(last), 5);
        let (last, batch) = outbox.next_batch().unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].keys, ["e"], "a pattern goes alone");
        assert_eq!(outbox.pop_through(last), 1);
        assert_eq!(outbox.next_batch().unwrap().1[0].keys, ["f"]);
    }

    #[test]
    fn only_the_applied_invalidations_are_taken_off() {
        let outbox = Outbox::default();
        outbox.push(pending("a"));
        let (last, _) = outbox.next_batch().unwrap();
        outbox.push(pending("b")); // kept while `a` was being applied
        assert_eq!(outbox.pop_through(last), 1);
        assert_eq!(
            outbox.pop_through(last),
            0,
            "a second caller that applied `a` does not take `b` off"
        );
        assert_eq!(outbox.next_batch().unwrap().1[0].keys, ["b"]);
    }

    #[test]
    fn an_invalidation_dropped_while_applied_takes_nothing_else_off() {
        let outbox = Outbox::default();
        outbox.push(patterned("first")); // retried alone
        for i in 1..OUTBOX_BOUND {
            assert!(!outbox.push(pending(&i.to_string())));
        }
        let (applying, _) = outbox.next_batch().unwrap();
        assert!(outbox.push(pending("new")), "full: the oldest is dropped");
        assert_eq!(outbox.pop_through(applying), 0);
        assert_eq!(
            outbox.next_batch().unwrap().1[0]
                .keys
                .first()
                .map(String::as_str),
            Some("1"),
            "not applied: kept"
        );
        assert!(!outbox.is_empty());
    }
}
