//! Write coalescing for the connection to one Redis server: requests that
//! callers send while others are in flight go out in one write.
//!
//! `redis`'s multiplexed connection runs a driver task that takes the
//! requests queued on its channel, writes them, and reads the replies. A
//! request's send wakes the driver, and Tokio's multi-thread scheduler runs
//! a task woken by the running one next (its LIFO slot), so the driver finds
//! one request and writes it: one `writev` per request, however many tasks
//! are reading (docs/BENCHMARKS.md, issue 17, tenth part: with the slot off,
//! the client's CPU per hit was 38% lower).
//!
//! Here the connection is made by this crate (plain TCP, resolved and
//! raced over its addresses as `redis` does, with `redis`'s handshake) and
//! its driver is spawned inside [`Coalesced`], which holds the driver back
//! (its writes, and its reading of replies) only while there is company:
//!
//! - a request sent while none other is in flight goes out at once (a
//!   single caller waits no longer than with `redis` alone);
//! - otherwise the driver hands its waker to the scheduler's deferred list
//!   ([`tokio::task::yield_now`]), so that the requests of the tasks that
//!   are ready share the write;
//! - but the [`BATCH`]-th request queued wakes it at once, so that the
//!   server gets work while the client still has replies to handle. (With
//!   no such bound the two sides take turns, the client idle while the
//!   server works through a large batch: a driver that woke itself to run
//!   after the ready tasks, where no send could bring it forward, ran at
//!   0.53x of the floor's throughput with 16 tasks.)
//!
//! Only on a multi-thread runtime of one worker. With more, a held driver
//! waits for the worker that holds it while another, idle, could have sent
//! the request and read its reply; and measured, it gained nothing beyond
//! the noise there (nor on a current-thread runtime, whose queue runs a
//! woken task last, so that its requests are shared already). Elsewhere
//! `redis` makes the connection as before.
//!
//! How long a hold lasts is the scheduler's: Tokio wakes its deferred tasks
//! when it looks for I/O events, that is when the worker runs out of ready
//! tasks, or every `event_interval` scheduler ticks (61 by default) while
//! it does not. With one worker a reply is seen at those moments only, held
//! or not; a hold puts a request's write off to the next one, and a second
//! hold may put off the reading of its reply to the one after: at most two
//! such intervals where the request would otherwise take one.
//!
//! Every request goes through `redis`'s own channel and driver: what is
//! sent, in which order, and how replies are matched, is `redis`'s.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use redis::aio::MultiplexedConnection;
use redis::io::tcp::TcpSettings;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, RedisError};
use tokio::task::AbortHandle;

/// The queued requests that make the driver write at once. Of 2, 3, 4 and
/// 8 (one worker, one or two runs each), 3 did best with 16 tasks and well
/// with 64; 4 fell below the floor with 16, 8 won most with 64 but lost a
/// quarter with 16 (docs/BENCHMARKS.md, issue 17, eleventh part).
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
    /// The driver's task while it is held, to wake at the [`BATCH`]-th
    /// request.
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
    /// last poll held the driver back, so this one polls it.
    pub(crate) struct Coalesced<F, M> {
        #[pin]
        driver: F,
        make_yield: M,
        gate: Arc<Gate>,
        held: bool,
    }
}

impl<F, M, Y> Future for Coalesced<F, M>
where
    F: Future<Output = ()>,
    Y: Future<Output = ()>,
    M: Fn() -> Y,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let gate = &**this.gate;
        let queued = gate.queued.load(Ordering::Relaxed);
        if !*this.held
            && queued > 0
            && queued < BATCH
            && gate.in_flight.load(Ordering::Relaxed) > queued
            && {
                // Registered only to hold (the `BATCH`-th request wakes a
                // held driver, no other), then the count read again: a
                // request queued in between is not missed.
                gate.driver.register(cx.waker());
                gate.queued.load(Ordering::Relaxed) < BATCH
            }
        {
            // Polled once, to hand this task's waker to the scheduler's
            // deferred list (outside a runtime it wakes the task at once),
            // then dropped: the list keeps the waker.
            *this.held = true;
            let yielding = std::pin::pin!((this.make_yield)());
            let _ = yielding.poll(cx);
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
/// within `timeout` (resolving, connecting and the handshake, as `redis`
/// bounds them); `None` where this module does not make it (a runtime
/// other than one multi-thread worker, TLS, Unix sockets, or TCP settings
/// beyond `TCP_NODELAY` that only `redis` applies: `redis` makes those as
/// before).
pub(crate) async fn connect(
    client: &Client,
    config: &AsyncConnectionConfig,
    timeout: Duration,
) -> Option<Result<(MultiplexedConnection, Driver), RedisError>> {
    if !coalescing_pays(&tokio::runtime::Handle::try_current().ok()?) {
        return None;
    }
    let info = client.get_connection_info();
    let ConnectionAddr::Tcp(host, port) = info.addr() else {
        return None;
    };
    let tcp = info.tcp_settings();
    // Keepalive, `TCP_USER_TIMEOUT`, `SO_LINGER`: compared whole (the last
    // has no getter), so that a setting added to `redis` is not lost here.
    let others_default =
        format!("{:?}", tcp.clone().set_nodelay(false)) == format!("{:?}", TcpSettings::default());
    if !others_default {
        return None;
    }
    let attempt = async {
        // Every address of the host, tried at once, the first to connect
        // kept (as `redis` connects).
        let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), *port))
            .await?
            .collect();
        if addrs.is_empty() {
            return Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no address for the host",
            )));
        }
        let connecting = addrs
            .into_iter()
            .map(|addr| Box::pin(tokio::net::TcpStream::connect(addr)));
        let (stream, _) = futures_util::future::select_ok(connecting).await?;
        stream.set_nodelay(tcp.nodelay())?;
        let (conn, driver) =
            MultiplexedConnection::new_with_config(info.redis_settings(), stream, config.clone())
                .await?;
        let gate = Arc::new(Gate::default());
        let task = tokio::spawn(Coalesced {
            driver,
            make_yield: tokio::task::yield_now,
            gate: Arc::clone(&gate),
            held: false,
        });
        crate::hooks::coalesced();
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

/// Whether a driver spawned on `runtime` should be coalesced: one worker of
/// a multi-thread runtime (see the module's documentation).
fn coalescing_pays(runtime: &tokio::runtime::Handle) -> bool {
    runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        && runtime.metrics().num_workers() == 1
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::task::{Wake, Waker};

    use tokio::sync::{mpsc, oneshot};

    use super::*;

    /// A driver stand-in that counts its polls and never finishes.
    fn counting(polls: &Arc<AtomicUsize>) -> impl Future<Output = ()> + use<> {
        let polls = Arc::clone(polls);
        std::future::poll_fn(move |_| {
            polls.fetch_add(1, Ordering::SeqCst);
            Poll::Pending
        })
    }

    fn coalesced<F: Future<Output = ()>>(
        driver: F,
        gate: &Arc<Gate>,
    ) -> Pin<Box<impl Future<Output = ()> + use<F>>> {
        Box::pin(Coalesced {
            driver,
            make_yield: tokio::task::yield_now,
            gate: Arc::clone(gate),
            held: false,
        })
    }

    /// Counts the wakes of the task it stands for.
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once(f: Pin<&mut impl Future<Output = ()>>, wakes: &Arc<Wakes>) {
        let waker = Waker::from(Arc::clone(wakes));
        assert!(f.poll(&mut Context::from_waker(&waker)).is_pending());
    }

    fn setup() -> (Arc<AtomicUsize>, Arc<Gate>, Arc<Wakes>) {
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(Gate::default()),
            wakes,
        )
    }

    #[test]
    fn a_lone_request_is_written_at_once() {
        let (polls, gate, wakes) = setup();
        let mut driver = coalesced(counting(&polls), &gate);
        let _sending = gate.sending();
        poll_once(driver.as_mut(), &wakes);
        assert_eq!(polls.load(Ordering::SeqCst), 1, "nothing else in flight");
    }

    #[test]
    fn a_request_with_company_is_held_one_poll_and_asks_to_be_woken() {
        let (polls, gate, wakes) = setup();
        let mut driver = coalesced(counting(&polls), &gate);
        let first = gate.sending();
        poll_once(driver.as_mut(), &wakes);
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // The first is written and awaits its reply; a second is queued.
        let _second = gate.sending();
        poll_once(driver.as_mut(), &wakes);
        assert_eq!(polls.load(Ordering::SeqCst), 1, "held back");
        // Outside a runtime, `yield_now` wakes the task at once: the hold
        // asked the scheduler to wake the driver.
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "a wake is due");
        poll_once(driver.as_mut(), &wakes);
        assert_eq!(polls.load(Ordering::SeqCst), 2, "polled on the next poll");
        drop(first);
    }

    #[test]
    fn a_full_queue_is_written_at_once() {
        let (polls, gate, wakes) = setup();
        let mut driver = coalesced(counting(&polls), &gate);
        let _first = gate.sending();
        poll_once(driver.as_mut(), &wakes);
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        let _queued: Vec<_> = (0..BATCH).map(|_| gate.sending()).collect();
        poll_once(driver.as_mut(), &wakes);
        assert_eq!(polls.load(Ordering::SeqCst), 2, "not held back");
    }

    #[test]
    fn the_batch_th_request_wakes_the_driver() {
        let (_, gate, wakes) = setup();
        gate.driver.register(&Waker::from(Arc::clone(&wakes)));
        let guards: Vec<_> = (1..BATCH).map(|_| gate.sending()).collect();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        let last = gate.sending();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        drop((guards, last));
        assert_eq!(gate.in_flight.load(Ordering::SeqCst), 0, "all counted out");
    }

    /// A driver stand-in over a channel, as `redis`'s is: each poll takes
    /// every request queued, answers them, and records how many it took.
    fn answering(
        mut requests: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
        batches: Arc<Mutex<Vec<usize>>>,
    ) -> impl Future<Output = ()> {
        std::future::poll_fn(move |cx| {
            let mut taken = 0;
            loop {
                match requests.poll_recv(cx) {
                    Poll::Ready(Some(reply)) => {
                        taken += 1;
                        let _ = reply.send(());
                    }
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
            if taken > 0 {
                batches.lock().unwrap().push(taken);
            }
            Poll::Pending
        })
    }

    /// 16 tasks sending 50 requests each through a coalesced stand-in
    /// driver on `rt`: every request answered; the sizes of the batches.
    fn crowd(rt: tokio::runtime::Runtime) -> Vec<usize> {
        rt.block_on(async {
            let (send, requests) = mpsc::unbounded_channel();
            let batches = Arc::new(Mutex::new(Vec::new()));
            let gate = Arc::new(Gate::default());
            let driver = tokio::spawn(Coalesced {
                driver: answering(requests, Arc::clone(&batches)),
                make_yield: tokio::task::yield_now,
                gate: Arc::clone(&gate),
                held: false,
            });
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let (send, gate) = (send.clone(), Arc::clone(&gate));
                    tokio::spawn(async move {
                        for _ in 0..50 {
                            let _sending = gate.sending();
                            let (reply, answer) = oneshot::channel();
                            send.send(reply).unwrap();
                            answer.await.unwrap();
                        }
                    })
                })
                .collect();
            drop(send);
            tokio::time::timeout(Duration::from_secs(10), async {
                for task in tasks {
                    task.await.unwrap();
                }
                driver.await.unwrap();
            })
            .await
            .expect("every request answered");
            assert_eq!(gate.in_flight.load(Ordering::SeqCst), 0);
            let batches = batches.lock().unwrap().clone();
            assert_eq!(batches.iter().sum::<usize>(), 16 * 50);
            batches
        })
    }

    #[test]
    fn concurrent_requests_share_polls_and_are_all_answered() {
        // One worker: the LIFO slot would run the driver after every send.
        let one_worker = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let batches = crowd(one_worker);
        let largest = batches.iter().max().copied().unwrap_or(0);
        assert!(
            largest > 1,
            "some requests shared a poll ({} polls took one each)",
            batches.len()
        );
        assert!(largest <= 16, "no more than were sent at once");
        // On the current thread and on two workers, every request is
        // answered too (the deferred list is per worker).
        crowd(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        );
        crowd(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_client_with_tcp_settings_beyond_nodelay_is_left_to_redis() {
        use redis::IntoConnectionInfo;
        let client = |tcp: TcpSettings| {
            let info = "redis://127.0.0.1:1/"
                .into_connection_info()
                .unwrap()
                .set_tcp_settings(tcp);
            Client::open(info).unwrap()
        };
        let config = AsyncConnectionConfig::new();
        let linger = client(TcpSettings::default().set_linger_time(Duration::ZERO));
        let timeout = Duration::from_secs(1);
        assert!(connect(&linger, &config, timeout).await.is_none());
        // `TCP_NODELAY` is applied here: this one is tried (nothing
        // listens on port 1).
        let nodelay = client(TcpSettings::default().set_nodelay(true));
        assert!(matches!(
            connect(&nodelay, &config, timeout).await,
            Some(Err(_))
        ));
    }

    #[test]
    fn only_a_one_worker_multi_thread_runtime_coalesces() {
        let pays = |rt: tokio::runtime::Runtime| coalescing_pays(rt.handle());
        let multi = |workers| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .build()
                .unwrap()
        };
        assert!(pays(multi(1)));
        assert!(!pays(multi(2)));
        assert!(!pays(
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        ));
    }
}
