//! The outbox: invalidations that failed because the store was unreachable
//! are kept (up to a bound) and retried until they succeed, so that an entry
//! a write should have removed is never served once Redis is back.
//!
//! While the outbox holds anything, this cache reads past Redis: the
//! in-process fast path is skipped, and a read first tries to drain the
//! outbox (for at most the store timeout); if that does not empty it, the
//! loader runs without the cache. A background task drains it too (every
//! 100 ms, backing off to 2 s), so other instances see the change shortly
//! after Redis returns. One caller drains at a time; the others go on
//! without the cache meanwhile. Past the bound the oldest invalidation is
//! dropped, counted in `outbox_dropped`, and logged.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::cache::Cache;

/// The most invalidations kept.
pub(crate) const OUTBOX_BOUND: usize = 10_000;

/// A failed invalidation, as written.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) keys: Vec<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) patterns: Vec<String>,
    pub(crate) bumps: Vec<String>,
    pub(crate) publish: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// Each kept invalidation with a number of its own (see `pop`).
    queue: Mutex<Queue>,
    len: AtomicUsize,
    /// Whether the background task is running.
    draining: AtomicBool,
    /// Held by the one caller retrying the kept invalidations: two callers
    /// retrying the same front would each take one off, so the second would
    /// take off one that nobody applied.
    turn: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<(u64, Pending)>,
    next: u64,
}

impl Outbox {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether anything waits to be retried.
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Keeps `pending`; returns whether an older one was dropped.
    fn push(&self, pending: Pending) -> bool {
        let mut queue = self.queue();
        let dropped = queue.items.len() >= OUTBOX_BOUND && queue.items.pop_front().is_some();
        let id = queue.next;
        queue.next += 1;
        queue.items.push_back((id, pending));
        self.len.store(queue.items.len(), Ordering::Release);
        dropped
    }

    fn front(&self) -> Option<(u64, Pending)> {
        self.queue().items.front().cloned()
    }

    /// Takes off the invalidation numbered `id` if it is still the oldest
    /// (a full outbox may have dropped it while it was being applied: then
    /// the new oldest was not applied and stays); whether it did.
    fn pop(&self, id: u64) -> bool {
        let mut queue = self.queue();
        let popped = queue.items.front().is_some_and(|(front, _)| *front == id);
        if popped {
            queue.items.pop_front();
        }
        self.len.store(queue.items.len(), Ordering::Release);
        popped
    }
}

impl Cache {
    /// Keeps a failed invalidation for retry, and starts the retrying task.
    pub(crate) fn outbox_push(&self, pending: Pending) {
        let outbox = self.outbox();
        if outbox.push(pending) {
            crate::stats::Stats::add(&self.stats_ref().outbox_dropped, 1);
            tracing::error!(target: "cache_runtime", namespace = self.namespace(), "invalidation outbox full: the oldest invalidation was dropped");
        }
        crate::stats::Stats::add(&self.stats_ref().outbox_kept, 1);
        if !outbox.draining.swap(true, Ordering::AcqRel) {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let cache = self.clone();
                handle.spawn(async move { cache.drain_in_background().await });
            } else {
                outbox.draining.store(false, Ordering::Release);
            }
        }
    }

    async fn drain_in_background(self) {
        let mut pause = Duration::from_millis(100);
        loop {
            tokio::time::sleep(pause).await;
            if self.drain_outbox().await {
                let outbox = self.outbox();
                outbox.draining.store(false, Ordering::Release);
                // A push may have come after the last look but before the
                // flag was cleared: take the task back if so.
                if outbox.is_empty() || outbox.draining.swap(true, Ordering::AcqRel) {
                    return;
                }
                pause = Duration::from_millis(100);
            } else {
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }

    /// Retries the kept invalidations in order, until one fails; whether
    /// the outbox is empty now. `false` at once if another caller is at it.
    pub(crate) async fn drain_outbox(&self) -> bool {
        let outbox = self.outbox();
        let Ok(_turn) = outbox.turn.try_lock() else {
            return false;
        };
        while let Some((id, pending)) = outbox.front() {
            let mut inv = self
                .invalidate()
                .keys(pending.keys)
                .tags(pending.tags)
                .patterns(pending.patterns)
                .bumps(pending.bumps);
            if let Some(event) = pending.publish {
                inv = inv.publish(event);
            }
            if inv.run_once().await.is_err() {
                return false;
            }
            if outbox.pop(id) {
                crate::stats::Stats::add(&self.stats_ref().outbox_retried, 1);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(key: &str) -> Pending {
        Pending {
            keys: vec![key.to_owned()],
            tags: Vec::new(),
            patterns: Vec::new(),
            bumps: Vec::new(),
            publish: None,
        }
    }

    #[test]
    fn only_the_applied_invalidation_is_taken_off() {
        let outbox = Outbox::default();
        outbox.push(pending("a"));
        outbox.push(pending("b"));
        let (id, _) = outbox.front().unwrap();
        assert!(outbox.pop(id));
        assert!(
            !outbox.pop(id),
            "a second caller that applied `a` does not take `b` off"
        );
        assert_eq!(outbox.front().unwrap().1.keys, ["b"]);
    }

    #[test]
    fn an_invalidation_dropped_while_applied_takes_nothing_else_off() {
        let outbox = Outbox::default();
        for i in 0..OUTBOX_BOUND {
            assert!(!outbox.push(pending(&i.to_string())));
        }
        let (applying, _) = outbox.front().unwrap();
        assert!(outbox.push(pending("new")), "full: the oldest is dropped");
        assert!(!outbox.pop(applying));
        assert_eq!(outbox.front().unwrap().1.keys, ["1"], "not applied: kept");
        assert!(!outbox.is_empty());
    }
}
