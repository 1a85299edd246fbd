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
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Serialize, de::DeserializeOwned};

use crate::adaptive::Adapt;
use crate::shape::Res;
use crate::stats::Stats;
use crate::status::CacheStatus;

use super::read::Read;
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
    /// Still running past the soft timeout (it goes on, and fills).
    Slow,
}

impl Failure {
    fn as_str(self) -> &'static str {
        match self {
            Failure::Error => "error",
            Failure::Panic => "panic",
            Failure::Timeout => "timeout",
            Failure::Held => "held",
            Failure::Slow => "slow",
        }
    }
}

/// A loader abandoned after `after`; `outcome` is what the call returns
/// then, when no copy answers (built from a [`Timeout`](crate::Timeout)).
#[derive(Debug)]
pub struct HardTimeout<R> {
    pub(crate) after: Duration,
    pub(crate) outcome: fn(crate::Timeout) -> R,
}

impl<R> HardTimeout<R> {
    /// Abandon the loader after `after`; without a copy, return `outcome`.
    pub const fn new(after: Duration, outcome: fn(crate::Timeout) -> R) -> Self {
        HardTimeout { after, outcome }
    }
}

/// How a loader ended.
pub(crate) enum Loaded<R> {
    Value(R),
    Panicked(Box<dyn std::any::Any + Send>),
    TimedOut,
}

impl<R> Loaded<R> {
    /// Why it gave no value, if it did not.
    pub(crate) fn failure(&self) -> Option<Failure> {
        match self {
            Loaded::Value(_) => None,
            Loaded::Panicked(_) => Some(Failure::Panic),
            Loaded::TimedOut => Some(Failure::Timeout),
        }
    }

    /// The call's outcome when no copy answered: the value, the panic
    /// unwinding on, or the hard timeout's error.
    pub(crate) fn into_value(
        self,
        name: &'static str,
        key: &str,
        hard: Option<&HardTimeout<R>>,
    ) -> R {
        match self {
            Loaded::Value(value) => value,
            Loaded::Panicked(panic) => std::panic::resume_unwind(panic),
            Loaded::TimedOut => {
                let hard = hard.expect("only a hard timeout times out");
                tracing::warn!(target: "cache_runtime", name, key, after = ?hard.after, "loader ran past its hard timeout; abandoned");
                (hard.outcome)(crate::Timeout {
                    name,
                    after: hard.after,
                })
            }
        }
    }
}

/// Runs a loader: the distributed lock's lease renewed while it runs, a
/// panic caught (only a fail-safe copy answers it; otherwise it unwinds
/// on), the loader dropped past the hard timeout, and what it decided of
/// its entry ([`adapt`](crate::adapt)) collected.
pub(crate) async fn run_loader<R>(
    load: impl Future<Output = R>,
    lock: Option<&LockGuard>,
    hard: Option<&HardTimeout<R>>,
) -> (Loaded<R>, Adapt) {
    let load = crate::adaptive::collect(load);
    let run = async {
        match lock {
            Some(guard) => {
                let mut load = std::pin::pin!(load);
                tokio::select! {
                    biased;
                    value = &mut load => value,
                    () = guard.keep_alive() => load.await,
                }
            }
            None => load.await,
        }
    };
    let run = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run));
    let outcome = match hard {
        Some(hard) => tokio::time::timeout(hard.after, run).await.ok(),
        None => Some(run.await),
    };
    match outcome {
        Some(Ok((value, adapt))) => (Loaded::Value(value), adapt),
        Some(Err(panic)) => (Loaded::Panicked(panic), Adapt::default()),
        None => (Loaded::TimedOut, Adapt::default()),
    }
}

impl Cache {
    /// [`get_or_load`](Self::get_or_load) with a hard timeout: the loader is
    /// abandoned (dropped) after `hard_timeout`, and the call returns the
    /// fail-safe copy if the options keep one
    /// ([`fail_safe`](CacheOptions::fail_safe)), else
    /// `Err(E::from(Timeout))`. Callers coalesced on the same load get the
    /// same outcome.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use cache_runtime::{Cache, CacheOptions};
    /// let cache = Cache::in_memory();
    /// let opts = CacheOptions::new("slow");
    /// let slow = || async {
    ///     tokio::time::sleep(Duration::from_secs(60)).await;
    ///     Ok::<u32, std::io::Error>(1)
    /// };
    /// let v = cache.get_or_load_within("slow", &opts, Duration::from_millis(10), slow).await;
    /// assert_eq!(v.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    /// # }
    /// ```
    pub async fn get_or_load_within<T, E, F, Fut>(
        &self,
        key: &str,
        options: &CacheOptions,
        hard_timeout: Duration,
        load: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<crate::Timeout>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut read = Read::new(crate::key::Key::from(key), options);
        read.hard_timeout = Some(HardTimeout {
            after: hard_timeout,
            outcome: |t| Err(E::from(t)),
        });
        super::read::finish!(self.read_through::<Res, _, _, _, _>(read, |_| Links::new(), load))
    }

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
        if why == Failure::Slow {
            tracing::debug!(target: "cache_runtime", name = options.name(), entry, "loader past its soft timeout; serving the expired copy (fail-safe) while it goes on");
        } else if why != Failure::Held {
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
