//! Fail-safe (`fail_safe = "1h"`): when the loader fails (an `Err`, a panic,
//! or the hard timeout) and the entry expired less than the fail-safe window
//! ago, the expired copy answers instead of the failure, and keeps answering
//! without the loader for the throttle, so that a failing database is not
//! called on every read.
//!
//! The copy is the entry the store still holds: a fail-safe function's
//! entries are kept the window past their TTL (`freshness::kept_for`) and
//! read as `Freshness::FailSafe` there. An invalidation removes it like any
//! entry, so no later read can be answered with a value a write has
//! invalidated. The throttle is this process's: a map of entry names to the
//! instant the loader may be tried again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::stats::Stats;
use crate::status::CacheStatus;

use super::*;

/// Above this many throttled names, the ones whose throttle ended are
/// dropped on the next insert.
const PRUNE_ABOVE: usize = 1024;

/// The entries whose loader is not tried again before an instant.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    until: Mutex<HashMap<String, Instant>>,
}

impl Throttle {
    /// Whether the loader of `entry` is held off now.
    pub(crate) fn holds(&self, entry: &str) -> bool {
        let until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        until.get(entry).is_some_and(|&t| Instant::now() < t)
    }

    /// Holds off the loader of `entry` for `throttle`.
    pub(crate) fn hold(&self, entry: &str, throttle: Duration) {
        let now = Instant::now();
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if until.len() >= PRUNE_ABOVE {
            until.retain(|_, t| now < *t);
        }
        until.insert(entry.to_owned(), now + throttle);
    }

    /// The loader of `entry` succeeded: nothing to hold off.
    pub(crate) fn release(&self, entry: &str) {
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if !until.is_empty() {
            until.remove(entry);
        }
    }
}

/// Why a loader gave no value to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// It returned an error.
    Error,
    /// It panicked.
    Panic,
    /// It ran past the hard timeout.
    Timeout,
    /// Not tried by this caller: held off after a recent failure, or the
    /// loader of the single flight it joined failed.
    Held,
}

impl Failure {
    fn as_str(self) -> &'static str {
        match self {
            Failure::Error => "error",
            Failure::Panic => "panic",
            Failure::Timeout => "timeout",
            Failure::Held => "held",
        }
    }
}

impl Cache {
    /// Answers with the fail-safe copy of `entry` after the loader failed
    /// (`why`), and holds the loader off for the throttle (not extended by
    /// a read that did not try it).
    pub(crate) fn serve_fail_safe<S: crate::shape::Shape<R>, R>(
        &self,
        entry: &str,
        options: &CacheOptions,
        stored: S::Stored,
        why: Failure,
    ) -> R {
        let inner = &*self.inner;
        if why != Failure::Held {
            inner
                .fail_safe
                .hold(entry, options.fail_safe_throttle_choice());
            tracing::warn!(target: "cache_runtime", name = options.name(), entry, failure = why.as_str(), "loader failed; serving the expired copy (fail-safe)");
        }
        Stats::add(&inner.stats.fail_safe_served, 1);
        inner.metrics.fail_safe_served(options.name());
        crate::status::record(CacheStatus::FailSafe);
        tracing::Span::current().record("outcome", "fail-safe");
        S::join(stored)
    }
}
