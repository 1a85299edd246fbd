//! The outbox: invalidations that failed because the store was unreachable
//! are kept (up to a bound) and retried until they succeed, so that an entry
//! a write should have removed is never served once Redis is back.
//!
//! While the outbox holds anything, this cache reads past Redis: the
//! in-process fast path is skipped, and a read first tries to drain the
//! outbox; if that fails the loader runs without the cache. A background
//! task drains it too (every 100 ms, backing off to 2 s), so other
//! instances see the change shortly after Redis returns. Past the bound the
//! oldest invalidation is dropped, counted in `outbox_dropped`, and logged.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::cache::Cache;
use crate::error::Error;

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
    queue: Mutex<VecDeque<Pending>>,
    len: AtomicUsize,
    draining: AtomicBool,
}

impl Outbox {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether anything waits to be retried.
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Keeps `pending`; returns whether an older one was dropped.
    fn push(&self, pending: Pending) -> bool {
        let mut queue = self.queue();
        let dropped = queue.len() >= OUTBOX_BOUND && queue.pop_front().is_some();
        queue.push_back(pending);
        self.len.store(queue.len(), Ordering::Release);
        dropped
    }

    fn front(&self) -> Option<Pending> {
        self.queue().front().cloned()
    }

    fn pop(&self) {
        let mut queue = self.queue();
        queue.pop_front();
        self.len.store(queue.len(), Ordering::Release);
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
            if self.drain_outbox().await.is_ok() {
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

    /// Retries the kept invalidations in order, until one fails.
    pub(crate) async fn drain_outbox(&self) -> Result<(), Error> {
        let outbox = self.outbox();
        while let Some(pending) = outbox.front() {
            let mut inv = self
                .invalidate()
                .keys(pending.keys)
                .tags(pending.tags)
                .patterns(pending.patterns)
                .bumps(pending.bumps);
            if let Some(event) = pending.publish {
                inv = inv.publish(event);
            }
            inv.run_once().await?;
            outbox.pop();
            crate::stats::Stats::add(&self.stats_ref().outbox_retried, 1);
        }
        Ok(())
    }
}
