//! Retrying the invalidations that failed (see the `outbox` module for the
//! queue): reads wake the task, which holds the cache weakly.

use std::time::Duration;

use super::*;

use crate::spec::Spec;
use std::sync::atomic::Ordering;

/// The shortest pause between two retries, however often reads wake the
/// task.
const MIN_PAUSE: Duration = Duration::from_millis(50);
/// The first pause after a failure, and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(2);

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
}
