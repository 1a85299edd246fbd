//! The store as the cache uses it: every call bounded by the timeout and
//! passed through the circuit breaker, once, here (never at call sites); an
//! availability failure (a timeout, a lost connection) also makes the
//! server's epoch unknown, since the server may have restarted meanwhile.
//! The in-process store answers at once: it is neither timed nor guarded.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{Applied, Backend, Continuation, FillRequest, InvalidationPlan, Lookup, Store, Token};
use crate::breaker::Breaker;
use crate::epoch::Known;
use crate::error::{Error, ErrorKind};
use crate::observe::Metrics;
use crate::stats::Stats;

#[derive(Debug)]
pub(crate) struct Guarded {
    backend: Backend,
    timeout: Duration,
    breaker: Breaker,
    /// What this instance knows of the server's epoch.
    epoch: Known,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    namespace: String,
}

impl Guarded {
    pub(crate) fn new(
        backend: Backend,
        timeout: Duration,
        stats: Arc<Stats>,
        metrics: Arc<Metrics>,
        namespace: &str,
    ) -> Self {
        Guarded {
            epoch: if backend.is_remote() {
                Known::default()
            } else {
                Known::fixed(0)
            },
            backend,
            timeout,
            breaker: Breaker::default(),
            stats,
            metrics,
            namespace: namespace.to_owned(),
        }
    }

    /// The store behind the guard (to ask what it is, or for what only one
    /// kind of store does).
    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }

    pub(crate) fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// What this instance knows of the server's epoch (in process: 0, for
    /// good).
    pub(crate) fn epoch(&self) -> &Known {
        &self.epoch
    }

    /// Runs `op` against the store, bounded by the timeout, unless the
    /// breaker is open (then it fails at once). `what` names the operation
    /// in errors.
    pub(crate) async fn call<T>(
        &self,
        what: &str,
        op: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        if !self.backend.is_remote() {
            return op.await;
        }
        let Some(permit) = self.breaker.allow() else {
            Stats::add(&self.stats.breaker_skipped, 1);
            return Err(Error::new(
                ErrorKind::Connection,
                format!("{what} not tried: the store failed repeatedly (circuit open)"),
            ));
        };
        let result = match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(what, self.timeout)),
        };
        match &result {
            Err(e) if matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Connection) => {
                // The server may have restarted, or failed over, meanwhile.
                self.epoch.forget();
                if permit.failure() {
                    Stats::add(&self.stats.breaker_trips, 1);
                    self.metrics.circuit(true);
                    tracing::warn!(target: "cache_runtime", namespace = self.namespace, "the store failed repeatedly: calls skip it for a while (circuit open)");
                }
            }
            // An error the store answered with: it is reachable. (Left
            // unreported, a probe would keep the breaker open for good.)
            Ok(_) | Err(_) => {
                if permit.success() {
                    self.metrics.circuit(false);
                    tracing::info!(target: "cache_runtime", namespace = self.namespace, "the store answers again (circuit closed)");
                }
            }
        }
        result
    }
}

impl Store for Guarded {
    fn lookup(
        &self,
        entry: &str,
        version: Option<&str>,
        idle: Option<Duration>,
    ) -> impl Future<Output = Result<Lookup, Error>> + Send {
        self.call("read", self.backend.lookup(entry, version, idle))
    }

    fn token(&self) -> impl Future<Output = Result<(Token, bool), Error>> + Send {
        self.call("read", self.backend.token())
    }

    fn fill(&self, req: FillRequest) -> impl Future<Output = Result<bool, Error>> + Send {
        self.call("fill", self.backend.fill(req))
    }

    fn invalidate_step(
        &self,
        plan: &InvalidationPlan,
        from: Option<&Continuation>,
        nonce: &str,
    ) -> impl Future<Output = Result<(Applied, Option<Continuation>), Error>> + Send {
        self.call(
            "invalidate",
            self.backend.invalidate_step(plan, from, nonce),
        )
    }

    fn scan_step(
        &self,
        pattern: &str,
        cursor: u64,
    ) -> impl Future<Output = Result<(u64, Vec<String>), Error>> + Send {
        self.call("pattern scan", self.backend.scan_step(pattern, cursor))
    }

    fn try_lock(
        &self,
        name: &str,
        token: &str,
        lease: Duration,
        unless_exists: Option<&str>,
    ) -> impl Future<Output = Result<u8, Error>> + Send {
        self.call(
            "lock",
            self.backend.try_lock(name, token, lease, unless_exists),
        )
    }

    fn renew(
        &self,
        name: &str,
        token: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, Error>> + Send {
        self.call("lock renewal", self.backend.renew(name, token, lease))
    }

    fn unlock(
        &self,
        name: &str,
        token: &str,
        channel: &str,
        entry: &str,
    ) -> impl Future<Output = Result<bool, Error>> + Send {
        self.call(
            "lock release",
            self.backend.unlock(name, token, channel, entry),
        )
    }

    fn claim(&self, key: &str, ttl: Duration) -> impl Future<Output = Result<bool, Error>> + Send {
        self.call("event claim", self.backend.claim(key, ttl))
    }
}
