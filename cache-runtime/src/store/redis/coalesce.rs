//! Write coalescing for the connection to one Redis server: requests that
//! callers send while others are in flight go out in one write.
//!
//! `redis`'s multiplexed connection runs a driver task that takes the
//! requests queued on its channel, writes them, and reads the replies. A
//! request's send wakes the driver, and Tokio runs a task woken by the
//! running one next (its LIFO slot), so the driver finds one request and
//! writes it: one `writev` per request, however many tasks are reading
//! (docs/BENCHMARKS.md, issue 17, tenth part). That system call is most of
//! a hit's CPU time.
//!
//! Here the connection is made by this crate (plain TCP, as `redis` makes
//! it) and its driver is spawned inside [`Coalesced`], which holds a write
//! back only while there is company for it:
//!
//! - a request sent while none other is in flight goes out at once (a
//!   single caller waits no longer than with `redis` alone);
//! - otherwise the driver waits until the worker has run every task that is
//!   ready ([`tokio::task::yield_now`]: the scheduler wakes it once it has
//!   run out of ready tasks and polled for I/O), so that their requests
//!   share the write;
//! - but the [`BATCH`]-th request queued wakes it at once, so that the
//!   server gets work while the client still has replies to handle. (With
//!   no such bound the two sides take turns: the client idles while the
//!   server works through a large batch, and with 16 tasks that lost a
//!   third of the throughput.)
//!
//! A request is never held past the end of the scheduler's current round,
//! and every request goes through `redis`'s own channel and driver: what is
//! sent, in which order, and how replies are matched, is `redis`'s.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, RedisError};
use tokio::task::AbortHandle;

/// The queued requests that make the driver write at once (measured: 2 to
/// 4 did best with 16 and 64 tasks on one worker; docs/BENCHMARKS.md).
pub(crate) const BATCH: usize = 3;

/// What the callers of one connection tell its driver: how many requests
/// were queued since it last wrote, and how many are in flight.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// Requests sent to the driver since it last took its queue
    /// (approximate: a count for the policy, never for correctness).
    queued: AtomicUsize,
    /// Requests sent and not yet answered (or given up).
    in_flight: AtomicUsize,
    /// The driver's task, to wake at the [`BATCH`]-th request.
    driver: AtomicWaker,
}

impl Gate {
    /// Counts a request about to be sent; the guard counts it answered when
    /// dropped (after the reply, or when the caller gives up).
    pub(crate) fn sending(&self) -> Sending<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if self.queued.fetch_add(1, Ordering::Relaxed) + 1 == BATCH {
            self.driver.wake();
        }
        Sending(self)
    }
}

/// A request in flight on a coalesced connection (see [`Gate::sending`]).
#[must_use = "the request counts as in flight until the guard is dropped"]
pub(crate) struct Sending<'a>(&'a Gate);

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// `redis`'s connection driver, polled as the module says. `held`: the
    /// last poll held the queue back, so this one writes it.
    pub(crate) struct Coalesced<F, Y, M> {
        #[pin]
        driver: F,
        #[pin]
        yielding: Option<Y>,
        make_yield: M,
        gate: Arc<Gate>,
        held: bool,
    }
}

impl<F, Y, M> Future for Coalesced<F, Y, M>
where
    F: Future<Output = ()>,
    Y: Future<Output = ()>,
    M: Fn() -> Y,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let gate = &**this.gate;
        gate.driver.register(cx.waker());
        let queued = gate.queued.load(Ordering::Relaxed);
        if !*this.held
            && queued > 0
            && queued < BATCH
            && gate.in_flight.load(Ordering::Relaxed) > queued
        {
            // Polled once, to hand this task's waker to the scheduler (it
            // is woken after the ready tasks have run); dropped unfinished.
            *this.held = true;
            this.yielding.set(Some((this.make_yield)()));
            if let Some(yielding) = this.yielding.as_mut().as_pin_mut() {
                let _ = yielding.poll(cx);
            }
            return Poll::Pending;
        }
        *this.held = false;
        gate.queued.store(0, Ordering::Relaxed);
        this.driver.poll(cx)
    }
}

/// The driver's task, aborted when the last handle to it is dropped (as
/// `redis` does with the tasks it spawns).
#[derive(Debug)]
pub(crate) struct Driver {
    pub(crate) gate: Arc<Gate>,
    task: AbortHandle,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connection to `client`'s server with its driver spawned coalesced,
/// within `timeout` (connecting and the handshake, as `redis` bounds them);
/// `None` for an address this module does not connect itself (TLS, Unix
/// sockets: `redis` makes those as before).
pub(crate) async fn connect(
    client: &Client,
    config: &AsyncConnectionConfig,
    timeout: Duration,
) -> Option<Result<(MultiplexedConnection, Driver), RedisError>> {
    let info = client.get_connection_info();
    let ConnectionAddr::Tcp(host, port) = info.addr() else {
        return None;
    };
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
        stream.set_nodelay(info.tcp_settings().nodelay())?;
        let (conn, driver) =
            MultiplexedConnection::new_with_config(info.redis_settings(), stream, config.clone())
                .await?;
        let gate = Arc::new(Gate::default());
        let task = tokio::spawn(Coalesced {
            driver,
            yielding: None,
            make_yield: tokio::task::yield_now,
            gate: Arc::clone(&gate),
            held: false,
        });
        Ok((
            conn,
            Driver {
                gate,
                task: task.abort_handle(),
            },
        ))
    };
    Some(match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        // As `redis` reports a connection timeout.
        Err(_elapsed) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver stand-in that counts its polls and never finishes.
    fn counting(polls: &Arc<AtomicUsize>) -> impl Future<Output = ()> + use<> {
        let polls = Arc::clone(polls);
        std::future::poll_fn(move |_| {
            polls.fetch_add(1, Ordering::SeqCst);
            Poll::Pending
        })
    }

    fn coalesced(
        polls: &Arc<AtomicUsize>,
        gate: &Arc<Gate>,
    ) -> Pin<Box<impl Future<Output = ()> + use<>>> {
        Box::pin(Coalesced {
            driver: counting(polls),
            yielding: None,
            make_yield: tokio::task::yield_now,
            gate: Arc::clone(gate),
            held: false,
        })
    }

    fn poll_once(f: Pin<&mut impl Future<Output = ()>>) {
        let waker = std::task::Waker::noop();
        assert!(f.poll(&mut Context::from_waker(waker)).is_pending());
    }

    #[test]
    fn a_lone_request_is_written_at_once() {
        let (polls, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Gate::default()));
        let mut driver = coalesced(&polls, &gate);
        let _sending = gate.sending();
        poll_once(driver.as_mut());
        assert_eq!(polls.load(Ordering::SeqCst), 1, "nothing else in flight");
    }

    #[test]
    fn a_request_with_company_is_held_one_poll() {
        let (polls, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Gate::default()));
        let mut driver = coalesced(&polls, &gate);
        let first = gate.sending();
        poll_once(driver.as_mut());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // The first is written and awaits its reply; a second is queued.
        let _second = gate.sending();
        poll_once(driver.as_mut());
        assert_eq!(polls.load(Ordering::SeqCst), 1, "held back");
        poll_once(driver.as_mut());
        assert_eq!(polls.load(Ordering::SeqCst), 2, "written on the next poll");
        drop(first);
    }

    #[test]
    fn a_full_queue_is_written_at_once() {
        let (polls, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Gate::default()));
        let mut driver = coalesced(&polls, &gate);
        let _first = gate.sending();
        poll_once(driver.as_mut());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        let _queued: Vec<_> = (0..BATCH).map(|_| gate.sending()).collect();
        poll_once(driver.as_mut());
        assert_eq!(polls.load(Ordering::SeqCst), 2, "not held back");
    }

    #[test]
    fn the_batch_th_request_wakes_the_driver() {
        let gate = Arc::new(Gate::default());
        let woken = Arc::new(AtomicUsize::new(0));
        struct Count(Arc<AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        gate.driver
            .register(&std::task::Waker::from(Arc::new(Count(Arc::clone(&woken)))));
        let guards: Vec<_> = (1..BATCH).map(|_| gate.sending()).collect();
        assert_eq!(woken.load(Ordering::SeqCst), 0);
        let last = gate.sending();
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        drop((guards, last));
        assert_eq!(gate.in_flight.load(Ordering::SeqCst), 0);
    }
}
