//! The distributed lock: several caches with their own connections (as
//! separate processes would have) share one `redis-server`; one loader runs
//! per key, waiters are woken by the landing, give up after their bound, and
//! a lock is only ever released by its holder.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, cached};
use integration_tests::{RedisServer, wait_until};
use tokio::sync::Semaphore;

/// One "process": its own cache (own connections, own subscriber) and a
/// repository over a table shared by every process.
struct Instance {
    cache: Cache,
    loads: Arc<AtomicU32>,
    /// The loader holds a permit while it runs (closed: it runs freely).
    gate: Arc<Semaphore>,
}

impl Instance {
    fn new(server: &RedisServer, loads: &Arc<AtomicU32>, gate: &Arc<Semaphore>) -> Instance {
        Instance::with(server, loads, gate, |b| b)
    }

    fn with(
        server: &RedisServer,
        loads: &Arc<AtomicU32>,
        gate: &Arc<Semaphore>,
        configure: impl FnOnce(cache_runtime::CacheBuilder) -> cache_runtime::CacheBuilder,
    ) -> Instance {
        let builder = Cache::builder().redis_url(server.url()).namespace("locks");
        Instance {
            cache: configure(builder).build().unwrap(),
            loads: loads.clone(),
            gate: gate.clone(),
        }
    }

    async fn load(&self, id: u64) -> String {
        self.loads.fetch_add(1, Ordering::SeqCst);
        // Waits for the test to let it go (or not at all once closed).
        let _ = self.gate.acquire().await;
        format!("report {id}")
    }

    #[cached(cache = self.cache, key = "report:{id}", ttl = 60, lock = "distributed", lock_wait = "20s")]
    async fn report(&self, id: u64) -> String {
        self.load(id).await
    }

    #[cached(cache = self.cache, key = "report:{id}", ttl = 60)]
    async fn report_locally_coalesced(&self, id: u64) -> String {
        self.load(id).await
    }

    #[cached(cache = self.cache, key = "report:{id}", ttl = 60, lock = "distributed", lock_wait = "300ms")]
    async fn report_impatient(&self, id: u64) -> String {
        self.load(id).await
    }
}

fn open_gate() -> Arc<Semaphore> {
    let gate = Arc::new(Semaphore::new(0));
    gate.close();
    gate
}

/// 4 instances x 25 callers on a cold key: the loader runs once, everyone
/// gets its value, and the waiting instances were woken by the landing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_loader_runs_across_instances() {
    let server = RedisServer::start();
    let loads = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let instances: Vec<Arc<Instance>> = (0..4)
        .map(|_| Arc::new(Instance::new(&server, &loads, &gate)))
        .collect();
    let mut calls = Vec::new();
    for instance in &instances {
        for _ in 0..25 {
            let instance = instance.clone();
            calls.push(tokio::spawn(async move { instance.report(1).await }));
        }
    }
    // Every instance is in: one loader holds the lock, the three others
    // wait on it.
    wait_until(
        "three instances wait on the lock",
        Duration::from_secs(10),
        async || {
            instances
                .iter()
                .filter(|i| i.cache.stats().lock_waits == 1)
                .count()
                == 3
        },
    )
    .await;
    assert_eq!(loads.load(Ordering::SeqCst), 1, "one loader while locked");
    gate.add_permits(1);
    for call in calls {
        assert_eq!(call.await.unwrap(), "report 1");
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "the loader ran once in all"
    );
    let stats: Vec<_> = instances.iter().map(|i| i.cache.stats()).collect();
    assert_eq!(stats.iter().map(|s| s.fills).sum::<u64>(), 1);
    assert_eq!(
        stats.iter().map(|s| s.lock_landed).sum::<u64>(),
        3,
        "the other instances took the landed value"
    );
    assert_eq!(
        stats.iter().map(|s| s.lock_woken).sum::<u64>(),
        3,
        "woken by the landing announcement, not by re-reading (every 5 s)"
    );
    assert_eq!(stats.iter().map(|s| s.lock_timeouts).sum::<u64>(), 0);
    assert_eq!(
        stats.iter().map(|s| s.coalesced).sum::<u64>(),
        96,
        "the other callers of each instance coalesced in process"
    );
}

/// The control: without the distributed lock each instance loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_lock_each_instance_loads() {
    let server = RedisServer::start();
    let loads = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let instances: Vec<Arc<Instance>> = (0..4)
        .map(|_| Arc::new(Instance::new(&server, &loads, &gate)))
        .collect();
    let calls: Vec<_> = instances
        .iter()
        .map(|instance| {
            let instance = instance.clone();
            tokio::spawn(async move { instance.report_locally_coalesced(1).await })
        })
        .collect();
    wait_until(
        "every instance loads",
        Duration::from_secs(10),
        async || loads.load(Ordering::SeqCst) == 4,
    )
    .await;
    gate.close();
    for call in calls {
        assert_eq!(call.await.unwrap(), "report 1");
    }
}

/// A waiter whose bound passes runs the loader itself.
#[tokio::test]
async fn a_waiter_gives_up_after_its_bound() {
    let server = RedisServer::start();
    let loads = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let holder = Arc::new(Instance::new(&server, &loads, &gate));
    let stuck = {
        let holder = holder.clone();
        tokio::spawn(async move { holder.report(2).await })
    };
    wait_until("the holder loads", Duration::from_secs(5), async || {
        loads.load(Ordering::SeqCst) == 1
    })
    .await;
    let free = open_gate();
    let waiter = Instance::new(&server, &loads, &free);
    assert_eq!(waiter.report_impatient(2).await, "report 2");
    assert_eq!(loads.load(Ordering::SeqCst), 2, "it ran the loader itself");
    let stats = waiter.cache.stats();
    assert_eq!((stats.lock_waits, stats.lock_timeouts), (1, 1));
    stuck.abort();
}

/// A lock whose holder died (never released) is taken once its lease runs
/// out; a cancelled holder releases its lock at once.
#[tokio::test]
async fn a_dead_holder_lets_its_lease_run_out() {
    let server = RedisServer::start();
    let loads = Arc::new(AtomicU32::new(0));
    // A process took the lock for report:3 and died: 400 ms left.
    let _: () = redis::cmd("SET")
        .arg("locks#lock:report:3")
        .arg("dead-process/0")
        .arg("PX")
        .arg(400)
        .query(&mut server.conn())
        .unwrap();
    let instance = Instance::new(&server, &loads, &open_gate());
    assert_eq!(instance.report(3).await, "report 3");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let stats = instance.cache.stats();
    assert_eq!(
        (stats.lock_waits, stats.lock_timeouts),
        (1, 0),
        "it waited for the lease, not for its own bound"
    );

    // A holder whose call is cancelled releases the lock (from its drop).
    let gate = Arc::new(Semaphore::new(0));
    let holder = Arc::new(Instance::new(&server, &loads, &gate));
    let cancelled = {
        let holder = holder.clone();
        tokio::spawn(async move { holder.report(4).await })
    };
    wait_until("the holder loads", Duration::from_secs(5), async || {
        loads.load(Ordering::SeqCst) == 2
    })
    .await;
    cancelled.abort();
    let mut conn = server.conn();
    wait_until("the lock is released", Duration::from_secs(5), async || {
        !redis::cmd("EXISTS")
            .arg("locks#lock:report:4")
            .query::<bool>(&mut conn)
            .unwrap()
    })
    .await;
}

/// A slow loader keeps its lock by renewing the lease: another instance
/// that arrives after several leases have passed still waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loader_renews_its_lease() {
    let server = RedisServer::start();
    let loads = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let slow = Arc::new(Instance::with(&server, &loads, &gate, |b| {
        b.lock_lease(Duration::from_millis(300))
            .timeout(Duration::from_millis(150))
    }));
    let holder = {
        let slow = slow.clone();
        tokio::spawn(async move { slow.report(5).await })
    };
    wait_until("the holder loads", Duration::from_secs(5), async || {
        loads.load(Ordering::SeqCst) == 1
    })
    .await;
    // Several leases pass while the loader runs.
    let mut conn = server.conn();
    let mut renewals_seen = 0;
    let mut last_ttl = i64::MAX;
    wait_until(
        "the lease is renewed three times",
        Duration::from_secs(10),
        async || {
            let ttl: i64 = redis::cmd("PTTL")
                .arg("locks#lock:report:5")
                .query(&mut conn)
                .unwrap();
            assert!(ttl > 0, "the lock must stay held while its loader runs");
            if ttl > last_ttl {
                renewals_seen += 1;
            }
            last_ttl = ttl;
            renewals_seen >= 3
        },
    )
    .await;
    let free = open_gate();
    let other = Arc::new(Instance::new(&server, &loads, &free));
    let late = {
        let other = other.clone();
        tokio::spawn(async move { other.report(5).await })
    };
    wait_until(
        "the late instance waits",
        Duration::from_secs(5),
        async || other.cache.stats().lock_waits == 1,
    )
    .await;
    gate.add_permits(1);
    assert_eq!(holder.await.unwrap(), "report 5");
    assert_eq!(late.await.unwrap(), "report 5");
    assert_eq!(loads.load(Ordering::SeqCst), 1, "the loader ran once");
}

/// The plain lock API: compare-and-delete never releases someone else's
/// lock.
#[tokio::test]
async fn a_lock_is_never_released_by_someone_else() {
    let server = RedisServer::start();
    let a = Cache::builder()
        .redis_url(server.url())
        .namespace("locks")
        .build()
        .unwrap();
    let b = Cache::builder()
        .redis_url(server.url())
        .namespace("locks")
        .build()
        .unwrap();
    let first = a
        .try_lock("job", Duration::from_millis(200))
        .await
        .unwrap()
        .expect("free");
    assert!(
        b.try_lock("job", Duration::from_secs(30))
            .await
            .unwrap()
            .is_none()
    );
    let mut second = None;
    wait_until(
        "the first lease runs out",
        Duration::from_secs(5),
        async || {
            second = b.try_lock("job", Duration::from_secs(30)).await.unwrap();
            second.is_some()
        },
    )
    .await;
    assert!(
        !first.release().await.unwrap(),
        "the first holder's lease had run out: nothing of its own to release"
    );
    assert!(
        a.try_lock("job", Duration::from_secs(30))
            .await
            .unwrap()
            .is_none(),
        "the second holder still holds it"
    );
    let second = second.unwrap();
    assert!(second.renew().await.unwrap());
    assert!(second.release().await.unwrap());
    assert!(
        a.try_lock("job", Duration::from_secs(30))
            .await
            .unwrap()
            .is_some()
    );
}

/// On the in-process store the distributed lock is single-flight.
#[tokio::test]
async fn in_process_the_lock_is_single_flight() {
    let loads = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let instance = Arc::new(Instance {
        cache: Cache::in_memory(),
        loads: loads.clone(),
        gate: gate.clone(),
    });
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let instance = instance.clone();
            tokio::spawn(async move { instance.report(6).await })
        })
        .collect();
    wait_until("the loader runs", Duration::from_secs(5), async || {
        loads.load(Ordering::SeqCst) == 1
    })
    .await;
    gate.add_permits(1);
    for call in calls {
        assert_eq!(call.await.unwrap(), "report 6");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

/// A lock request whose reply is lost (a timeout) may still have taken the
/// lock on the server: the caller releases it anyway, by its token, so the
/// lock is not left held for a whole lease with nobody loading.
#[tokio::test]
async fn a_lock_whose_reply_was_lost_is_released() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("locks")
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    // Warm up the connection and the script.
    drop(
        cache
            .try_lock("warm", Duration::from_secs(30))
            .await
            .unwrap(),
    );
    // The server holds writes for 400 ms: the lock script runs after the
    // caller gave up.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(400)
        .arg("WRITE")
        .query(&mut server.conn())
        .unwrap();
    assert!(
        cache
            .try_lock("job", Duration::from_secs(30))
            .await
            .is_err()
    );
    let mut conn = server.conn();
    wait_until(
        "the orphan lock is released",
        Duration::from_secs(5),
        async || {
            !redis::cmd("EXISTS")
                .arg("locks#ulock:job")
                .query::<bool>(&mut conn)
                .unwrap()
        },
    )
    .await;
}
