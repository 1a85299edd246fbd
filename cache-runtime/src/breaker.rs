//! A circuit breaker in front of the store: after repeated timeouts or
//! connection errors, calls stop waiting on a store that is not answering.
//!
//! Closed: every call goes to the store. After `THRESHOLD` consecutive
//! availability failures (timeouts, connection errors; not errors the store
//! answered with) it opens for `COOL_DOWN`: calls fail at once, without
//! waiting, and the cache falls back to the loader as for any fault. Then one
//! call probes: its success closes the breaker, its failure opens it again.
//! A probe whose caller is cancelled before the answer (a timeout or
//! `select!` around the cached call) counts as failed: otherwise the breaker
//! would wait for it forever, and never let a call through again.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker.
pub(crate) const THRESHOLD: u32 = 5;
/// How long it stays open before one call probes the store.
pub(crate) const COOL_DOWN: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(crate) struct Breaker {
    failures: AtomicU32,
    /// Until when it is open, in ms since `epoch`, plus one (0: closed).
    open_until: AtomicU64,
    probing: AtomicBool,
    epoch: Instant,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }
}

impl Breaker {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a call may go to the store now: a permit to report the
    /// outcome with.
    pub(crate) fn allow(&self) -> Option<Permit<'_>> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Some(Permit {
                breaker: self,
                probe: false,
            });
        }
        if self.now() + 1 < until {
            return None;
        }
        // Cooled down: one caller probes, the others keep failing fast.
        (!self.probing.swap(true, Ordering::AcqRel)).then_some(Permit {
            breaker: self,
            probe: true,
        })
    }

    /// Where it stands now.
    pub(crate) fn state(&self) -> crate::health::BreakerState {
        use crate::health::BreakerState;
        match self.open_until.load(Ordering::Acquire) {
            0 => BreakerState::Closed,
            until if self.now() + 1 < until => BreakerState::Open,
            _ => BreakerState::Probing,
        }
    }

    fn success(&self) {
        // Written only when not already so: every store call succeeds
        // through here, and a write (even of the same value) takes the
        // cache line from every other thread's core, where a read leaves it
        // shared. (A failure recorded between the read and the write it
        // saves is kept, as if this success had come first.)
        if self.failures.load(Ordering::Acquire) != 0 {
            self.failures.store(0, Ordering::Release);
        }
        if self.open_until.load(Ordering::Acquire) != 0 {
            self.open_until.store(0, Ordering::Release);
        }
        if self.probing.load(Ordering::Acquire) {
            self.probing.store(false, Ordering::Release);
        }
    }

    /// Records an availability failure; `true` when it opened the breaker.
    fn failure(&self) -> bool {
        let was_probing = self.probing.swap(false, Ordering::AcqRel);
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if was_probing || failures >= THRESHOLD {
            let closed = self.open_until.load(Ordering::Acquire) == 0;
            self.open_until.store(
                self.now() + u64::try_from(COOL_DOWN.as_millis()).unwrap_or(500) + 1,
                Ordering::Release,
            );
            return closed;
        }
        false
    }
}

/// One call let through to the store. Report its outcome with
/// [`success`](Self::success) or [`failure`](Self::failure); a probe dropped
/// without either (its caller was cancelled) counts as a failure.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Permit<'_> {
    /// The store answered (even with an error of its own); `true` when this
    /// was the probe that closed an open breaker.
    pub(crate) fn success(mut self) -> bool {
        let closed_it = std::mem::take(&mut self.probe);
        self.breaker.success();
        closed_it
    }

    /// A timeout or connection error; `true` when it opened the breaker.
    pub(crate) fn failure(mut self) -> bool {
        self.probe = false;
        self.breaker.failure()
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.failure();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_probes_once_cooled_down() {
        let b = Breaker::default();
        for _ in 0..THRESHOLD - 1 {
            assert!(!b.allow().unwrap().failure());
        }
        assert!(b.allow().unwrap().failure(), "the threshold opens it");
        assert!(b.allow().is_none(), "open: calls fail fast");
        // Cool down without sleeping: a deadline of 0 ms has passed.
        b.open_until.store(1, Ordering::Release);
        let probe = b.allow().expect("one probe");
        assert!(b.allow().is_none(), "only one");
        probe.success();
        assert!(b.allow().is_some() && b.allow().is_some(), "closed again");
        b.open_until.store(1, Ordering::Release);
        b.allow().expect("a probe").failure();
        assert!(b.allow().is_none(), "a failed probe opens it again at once");
    }

    #[test]
    fn a_probe_dropped_without_an_answer_counts_as_failed() {
        let b = Breaker::default();
        for _ in 0..THRESHOLD {
            b.allow().unwrap().failure();
        }
        b.open_until.store(1, Ordering::Release);
        drop(b.allow().expect("a probe")); // its caller was cancelled
        assert!(b.allow().is_none(), "open again, not waiting for it");
        b.open_until.store(1, Ordering::Release);
        assert!(b.allow().is_some(), "the next cool-down ends in a probe");
    }
}
