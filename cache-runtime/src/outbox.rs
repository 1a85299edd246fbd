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

use crate::spec::Spec;

/// The most invalidations kept.
pub(crate) const OUTBOX_BOUND: usize = 10_000;
/// The most kept invalidations retried in one round trip.
const BATCH: usize = 256;

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// Each kept invalidation with a number of its own (see `pop_through`).
    queue: Mutex<Queue>,
    len: AtomicUsize,
    /// Whether the background task is running.
    pub(crate) draining: AtomicBool,
    /// Wakes the background task (a read found the outbox not empty).
    pub(crate) wake: std::sync::Arc<tokio::sync::Notify>,
    /// Held by the one caller retrying the kept invalidations: two callers
    /// retrying the same front would each take one off, so the second would
    /// take off one that nobody applied.
    pub(crate) turn: tokio::sync::Mutex<()>,
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
    pub(crate) fn push(&self, pending: Spec) -> bool {
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
    pub(crate) fn next_batch(&self) -> Option<(u64, Vec<Spec>)> {
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
    pub(crate) fn pop_through(&self, last: u64) -> u64 {
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
