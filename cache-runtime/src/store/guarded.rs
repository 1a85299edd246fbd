//! The store as the cache uses it: every call bounded by the timeout and
//! passed through the circuit breaker, once, here (never at call sites); an
//! availability failure (a timeout, a lost connection) also makes the
//! server's epoch unknown, since the server may have restarted meanwhile.
//! The in-process store answers at once: it is neither timed nor guarded.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;

use super::{Applied, Backend, Continuation, FillRequest, InvalidationPlan, Lookup, Store, Token};
use crate::breaker::{Breaker, Permit};
use crate::epoch::Known;
use crate::error::{Error, ErrorKind};
use crate::key::EntryName;
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
    pub(crate) fn call<'g, T, F>(&'g self, what: &'static str, op: F) -> Call<'g, F>
    where
        F: Future<Output = Result<T, Error>>,
    {
        self.start(what, op, |op, permit| Op::Timed {
            op: tokio::time::timeout(self.timeout, op),
            permit: Some(permit),
        })
    }

    /// [`call`](Self::call) without the timer, for an `op` that is bounded
    /// by the timeout on its own (a request on a connection that is up: see
    /// `store::redis::Link`).
    fn bounded<'g, T, F>(&'g self, what: &'static str, op: F) -> Call<'g, F, Untimed<F>>
    where
        F: Future<Output = Result<T, Error>>,
    {
        self.start(what, op, |op, permit| Op::Bounded {
            op,
            permit: Some(permit),
        })
    }

    /// A call: in process as it is, refused while the breaker is open,
    /// else let through as `go` wraps it.
    fn start<'g, F: Future, W>(
        &'g self,
        what: &'static str,
        op: F,
        go: impl FnOnce(F, Permit<'g>) -> Op<'g, F, W>,
    ) -> Call<'g, F, W> {
        let op = match self.permit() {
            Ok(None) => Op::InProcess { op },
            Ok(Some(permit)) => go(op, permit),
            Err(()) => Op::Refused,
        };
        Call {
            guarded: self,
            what,
            op,
        }
    }

    /// Whether a call may go: `Ok(None)` in process (not guarded),
    /// `Err(())` while the breaker is open.
    fn permit(&self) -> Result<Option<Permit<'_>>, ()> {
        if !self.backend.is_remote() {
            return Ok(None);
        }
        self.breaker.allow().map(Some).ok_or(())
    }

    /// Records the outcome of a call that was let through: an availability
    /// failure makes the epoch unknown and counts towards opening the
    /// breaker; any answer closes it.
    fn settle<T>(&self, permit: Permit<'_>, result: &Result<T, Error>) {
        match result {
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
    }
}

pin_project_lite::pin_project! {
    /// A store call through the guard: a hand-written future, so that the
    /// call's own future is held once, in place (an `async fn` taking it
    /// would keep it twice, and move it on every layer: a hit's read is
    /// most of its cost in copies otherwise).
    pub(crate) struct Call<'g, F: Future, W = tokio::time::Timeout<F>> {
        guarded: &'g Guarded,
        what: &'static str,
        #[pin]
        op: Op<'g, F, W>,
    }
}

pin_project_lite::pin_project! {
    #[project = OpProj]
    enum Op<'g, F: Future, W> {
        /// The in-process store: neither timed nor guarded.
        InProcess { #[pin] op: F },
        /// Timed by the cache.
        Timed { #[pin] op: W, permit: Option<Permit<'g>> },
        /// Bounded by the timeout on its own.
        Bounded { #[pin] op: F, permit: Option<Permit<'g>> },
        /// The breaker is open.
        Refused,
    }
}

/// The timer of a call that has none (never polled: a call is `Timed` only
/// with a real one).
pub(crate) type Untimed<F> =
    std::future::Pending<Result<<F as Future>::Output, tokio::time::error::Elapsed>>;

impl<T, F, W> Future for Call<'_, F, W>
where
    F: Future<Output = Result<T, Error>>,
    W: Future<Output = Result<Result<T, Error>, tokio::time::error::Elapsed>>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let guarded = *this.guarded;
        let (result, permit) = match this.op.project() {
            OpProj::InProcess { op } => return op.poll(cx),
            OpProj::Timed { op, permit } => match std::task::ready!(op.poll(cx)) {
                Ok(result) => (result, permit.take()),
                Err(_) => (
                    Err(Error::timeout(this.what, guarded.timeout)),
                    permit.take(),
                ),
            },
            OpProj::Bounded { op, permit } => (std::task::ready!(op.poll(cx)), permit.take()),
            OpProj::Refused => {
                Stats::add(&guarded.stats.breaker_skipped, 1);
                return Poll::Ready(Err(Error::new(
                    ErrorKind::Connection,
                    format!(
                        "{} not tried: the store failed repeatedly (circuit open)",
                        this.what
                    ),
                )));
            }
        };
        if let Some(permit) = permit {
            guarded.settle(permit, &result);
        }
        Poll::Ready(result)
    }
}

impl Store for Guarded {
    fn lookup<'a>(
        &'a self,
        entry: EntryName<'a>,
        version: Option<&'a str>,
        idle: Option<Duration>,
    ) -> impl Future<Output = Result<Lookup, Error>> + Send + 'a {
        // A hit's read on a connection that is up is bounded by the
        // connection's response timeout (the timeout): no second timer.
        match self.backend.bounded_lookup(entry, version, idle) {
            Some(read) => Either::Left(self.bounded("read", read)),
            // Timed: boxed, to keep the hit's future small (a read with a
            // version or `idle`, or one that has to wait for a connection).
            None => Either::Right(Box::pin(
                self.call("read", self.backend.lookup(entry, version, idle)),
            )),
        }
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
