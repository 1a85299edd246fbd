//! The reliability load test: 16 tasks of cached reads and invalidating
//! writes on one cache, against a real redis-server that a controller
//! freezes (SIGSTOP, then `DEBUG SLEEP`), cuts off (a proxy that drops every
//! connection) and kills and restarts, one fault after the other.
//!
//! Checked on every call: it returns the body's value (no error, no panic
//! from the cache), it waits at most a few timeouts (never for the fault to
//! end), and a read never returns a version older than a write that had
//! returned before the read started. Checked per fault: the circuit breaker
//! spares most writes the timeout while Redis is frozen, and the cache
//! serves hits again shortly after the fault is cleared. Checked at the end, once
//! the outbox drained: every key read through this instance and through a
//! fresh one (which can only answer from what Redis holds) is current.
//! `docs/RELIABILITY.md` has the figures.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached, invalidates};
use integration_tests::{CountingProxy, RedisServer, wait_until};

const ITEMS: u64 = 32;
const GROUPS: u64 = 4;
const TASKS: usize = 16;
/// The cache's bound on each Redis operation.
const TIMEOUT: Duration = Duration::from_millis(150);
/// The longest a call may take. A read makes at most three store calls in
/// a row (one batch of the outbox, the lookup, the fill), a write one (its
/// invalidation), each bounded by `TIMEOUT`, and once the breaker is open
/// they fail at once; the margin is for a loaded machine. Faults last longer
/// than this, so a call that waited for a fault to end fails it.
const BOUND: Duration = Duration::from_millis(3 * 150 + 500);
/// How long each fault lasts.
const HOLD: Duration = Duration::from_millis(1500);
/// How long the cache may take to serve hits again once a fault is cleared.
/// On the way: the breaker's cool-down (500 ms after the last failure, which
/// may be a probe that waited `TIMEOUT` on the frozen server), then one probe,
/// then the outbox, which reads retry themselves (one batch of up to 256
/// invalidations each): about 0.7 s. Twice that, for a loaded machine; and
/// under what the outbox's background task alone would take (it backs off
/// 100 ms, 200 ms, ... to 2 s: 1.6 to 3 s after a fault of `HOLD`).
const RECOVERY_BOUND: Duration = Duration::from_millis(1500);
/// Normal running before the first fault and after each recovery.
const SETTLE: Duration = Duration::from_millis(500);
/// What a query of the database costs (it also widens the window between a
/// read's lookup and its fill, where races live).
const DB_LATENCY: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGSTOP, SIGCONT after `HOLD`: connections stay open, nothing answers.
    Pause,
    /// `DEBUG SLEEP`: the server itself stops answering for `HOLD`.
    DebugSleep,
    /// The proxy drops every connection and refuses new ones; Redis stays
    /// up with its data.
    Cut,
    /// SIGKILL, then a restart on the same port: the data is gone.
    Kill,
}

/// In this order; the cut is last, so the run ends on Redis coming back
/// with old data while invalidations wait in the outbox.
const FAULTS: [Fault; 4] = [Fault::Kill, Fault::Pause, Fault::DebugSleep, Fault::Cut];
/// Windows of the run besides the faults (indexes into the tallies): from a
/// fault's end until the cache serves hits again, and normal running.
const RECOVERING: usize = FAULTS.len();
const NORMAL: usize = FAULTS.len() + 1;

/// The source of truth: a version per item, bumped by each write.
#[derive(Debug)]
struct Db {
    versions: Mutex<Vec<u64>>,
}

struct Items {
    cache: Cache,
    db: Arc<Db>,
}

impl Items {
    #[cached(cache = self.cache, key = "item:{id}", ttl = 60, tags = ["group:{group}"])]
    async fn version(&self, id: u64, group: u64) -> Result<u64, String> {
        let version = self.db.versions.lock().unwrap()[id as usize];
        tokio::time::sleep(DB_LATENCY).await;
        Ok(version)
    }

    /// The versions of the group's items (`group`, `group + GROUPS`, ...).
    #[cached(cache = self.cache, key = "members:{group}", ttl = 60, tags = ["group:{group}"])]
    async fn members(&self, group: u64) -> Result<Vec<u64>, String> {
        let versions = members_of(&self.db.versions.lock().unwrap(), group);
        tokio::time::sleep(DB_LATENCY).await;
        Ok(versions)
    }

    #[invalidates(cache = self.cache, keys = ["item:{id}"], tags = ["group:{group}"])]
    async fn bump(&self, id: u64, group: u64) -> Result<u64, String> {
        tokio::time::sleep(DB_LATENCY).await;
        let mut versions = self.db.versions.lock().unwrap();
        versions[id as usize] += 1;
        Ok(versions[id as usize])
    }
}

/// The versions of the group's items, in `versions`.
fn members_of(versions: &[u64], group: u64) -> Vec<u64> {
    (group..ITEMS)
        .step_by(GROUPS as usize)
        .map(|id| versions[id as usize])
        .collect()
}

/// What the calls started during one window of the run did.
#[derive(Debug, Default)]
struct Window {
    calls: u64,
    writes: u64,
    /// Calls that took at least the timeout.
    slow: u64,
    /// Writes that took at least the timeout (a write's invalidation goes to
    /// Redis every time; a read's lookup does not while the outbox is
    /// waiting).
    slow_writes: u64,
    stale: u64,
    latencies: Vec<Duration>,
}

/// One task's record, merged at the end.
#[derive(Debug, Default)]
struct Tally {
    calls: u64,
    errors: u64,
    stale: u64,
    worst: Duration,
    windows: [Window; FAULTS.len() + 2],
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.stale += other.stale;
        self.worst = self.worst.max(other.worst);
        for (mine, theirs) in self.windows.iter_mut().zip(other.windows) {
            mine.calls += theirs.calls;
            mine.writes += theirs.writes;
            mine.slow += theirs.slow;
            mine.slow_writes += theirs.slow_writes;
            mine.stale += theirs.stale;
            mine.latencies.extend(theirs.latencies);
        }
    }
}

/// What the workers share.
struct Load {
    items: Items,
    /// The newest version whose write has returned, per item.
    floor: Vec<AtomicU64>,
    /// The window the run is in (an index into `FAULTS`, `RECOVERING` or
    /// `NORMAL`).
    window: AtomicU8,
    stop: AtomicBool,
}

async fn work(load: Arc<Load>) -> Tally {
    let mut tally = Tally::default();
    while !load.stop.load(Ordering::Relaxed) {
        let id = fastrand::u64(..ITEMS);
        let group = id % GROUPS;
        let window = usize::from(load.window.load(Ordering::SeqCst));
        let roll = fastrand::u8(..10);
        let started = Instant::now();
        // (returned Ok, was stale)
        let (ok, stale) = if roll == 0 {
            match load.items.bump(id, group).await {
                Ok(version) => {
                    load.floor[id as usize].fetch_max(version, Ordering::SeqCst);
                    (true, false)
                }
                Err(_) => (false, false),
            }
        } else if roll == 1 {
            let at_least: Vec<u64> = (group..ITEMS)
                .step_by(GROUPS as usize)
                .map(|id| load.floor[id as usize].load(Ordering::SeqCst))
                .collect();
            match load.items.members(group).await {
                Ok(seen) => (true, seen.iter().zip(&at_least).any(|(s, f)| s < f)),
                Err(_) => (false, false),
            }
        } else {
            let at_least = load.floor[id as usize].load(Ordering::SeqCst);
            match load.items.version(id, group).await {
                Ok(seen) => (true, seen < at_least),
                Err(_) => (false, false),
            }
        };
        let took = started.elapsed();
        tally.calls += 1;
        tally.errors += u64::from(!ok);
        tally.stale += u64::from(stale);
        tally.worst = tally.worst.max(took);
        let w = &mut tally.windows[window];
        w.calls += 1;
        w.writes += u64::from(roll == 0);
        w.slow += u64::from(took >= TIMEOUT);
        w.slow_writes += u64::from(took >= TIMEOUT && roll == 0);
        w.stale += u64::from(stale);
        if window != NORMAL {
            w.latencies.push(took);
        }
        // A hit never yields on its own: let the other tasks run.
        tokio::task::yield_now().await;
    }
    tally
}

fn percentile(latencies: &mut [Duration], p: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort_unstable();
    let at = ((latencies.len() as f64 - 1.0) * p).round() as usize;
    latencies[at]
}

/// Reads every item and group through `items`; the number of answers that
/// differ from the database (no write runs any more).
async fn stale_now(items: &Items) -> u64 {
    let versions = items.db.versions.lock().unwrap().clone();
    let mut stale = 0;
    for id in 0..ITEMS {
        let seen = items.version(id, id % GROUPS).await.unwrap();
        stale += u64::from(seen != versions[id as usize]);
    }
    for group in 0..GROUPS {
        let seen = items.members(group).await.unwrap();
        stale += u64::from(seen != members_of(&versions, group));
    }
    stale
}

fn cache_at(url: String) -> Cache {
    Cache::builder()
        .redis_url(url)
        .namespace("reliability")
        .timeout(TIMEOUT)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliability_under_load_with_faults() {
    let _alone = crate::common::one_load_at_a_time().await;
    let mut server = RedisServer::start();
    let proxy = CountingProxy::start(server.port()).await;
    let db = Arc::new(Db {
        versions: Mutex::new(vec![0; ITEMS as usize]),
    });
    let load = Arc::new(Load {
        items: Items {
            cache: cache_at(proxy.url()),
            db: db.clone(),
        },
        floor: (0..ITEMS).map(|_| AtomicU64::new(0)).collect(),
        window: AtomicU8::new(NORMAL as u8),
        stop: AtomicBool::new(false),
    });
    let cache = load.items.cache.clone();
    let started = Instant::now();
    let workers: Vec<_> = (0..TASKS)
        .map(|_| tokio::spawn(work(load.clone())))
        .collect();

    // The controller: each fault for `HOLD`, then the time until the cache
    // serves a hit again, then normal running.
    tokio::time::sleep(SETTLE).await;
    let mut recovered = Vec::new();
    for (i, fault) in FAULTS.iter().enumerate() {
        load.window.store(i as u8, Ordering::SeqCst);
        match fault {
            Fault::Pause => {
                server.pause();
                tokio::time::sleep(HOLD).await;
                server.resume();
            }
            Fault::DebugSleep => {
                tokio::task::block_in_place(|| server.debug_sleep(HOLD));
            }
            Fault::Cut => {
                proxy.sever();
                tokio::time::sleep(HOLD).await;
                proxy.restore();
            }
            Fault::Kill => {
                server.kill();
                tokio::time::sleep(HOLD).await;
                tokio::task::block_in_place(|| server.restart());
            }
        }
        let cleared = Instant::now();
        let hits = cache.stats().hits;
        load.window.store(RECOVERING as u8, Ordering::SeqCst);
        wait_until(
            &format!("the cache serves hits again after {fault:?}"),
            RECOVERY_BOUND,
            async || cache.stats().hits > hits,
        )
        .await;
        recovered.push(cleared.elapsed());
        load.window.store(NORMAL as u8, Ordering::SeqCst);
        tokio::time::sleep(SETTLE).await;
    }
    load.stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for worker in workers {
        match worker.await {
            Ok(t) => tally.merge(t),
            Err(panic) => {
                tally.errors += 1;
                eprintln!("a worker panicked: {panic}");
            }
        }
    }
    let ran_for = started.elapsed();

    // After the last fault: the outbox drains, and then nothing stale is
    // served, by this instance or by a fresh one reading Redis's entries.
    // (With no reads left, by the background task: within its longest
    // pause, 2 s.)
    wait_until("the outbox drains", Duration::from_secs(5), async || {
        let s = cache.stats();
        s.outbox_kept == s.outbox_retried + s.outbox_dropped
    })
    .await;
    let stale_after = stale_now(&load.items).await;
    let fresh = Items {
        cache: cache_at(server.url()),
        db: db.clone(),
    };
    let stale_fresh = stale_now(&fresh).await;
    let stats = cache.stats();

    let mut faulted: Vec<Duration> = tally.windows[..FAULTS.len()]
        .iter()
        .flat_map(|w| w.latencies.iter().copied())
        .collect();
    let p99_faulted = percentile(&mut faulted, 0.99);
    let writes: u64 = tally.windows.iter().map(|w| w.writes).sum();
    println!(
        "reliability: {} calls ({writes} writes) by {TASKS} tasks in {:.1?}, {} errors surfaced, \
         worst latency {} ms (bound {} ms), p99 while faulted {} ms, \
         {} stale reads during the run ({} while recovering), \
         {} after recovery (this instance) + {} (fresh instance); \
         cache used again after {}; breaker opened {} times, {} calls failed fast; \
         outbox kept {}, retried {}, dropped {}; {} hits, {} misses, {} store errors",
        tally.calls,
        ran_for,
        tally.errors,
        tally.worst.as_millis(),
        BOUND.as_millis(),
        p99_faulted.as_millis(),
        tally.stale,
        tally.windows[RECOVERING].stale,
        stale_after,
        stale_fresh,
        FAULTS
            .iter()
            .zip(&recovered)
            .map(|(f, d)| format!("{f:?} {} ms", d.as_millis()))
            .collect::<Vec<_>>()
            .join(", "),
        stats.breaker_trips,
        stats.breaker_skipped,
        stats.outbox_kept,
        stats.outbox_retried,
        stats.outbox_dropped,
        stats.hits,
        stats.misses,
        stats.store_errors,
    );
    let names = FAULTS
        .iter()
        .map(|f| format!("{f:?}"))
        .chain(["recovering".to_owned(), "normal".to_owned()]);
    for (name, w) in names.zip(&mut tally.windows) {
        let p99 = match percentile(&mut w.latencies, 0.99) {
            Duration::ZERO => String::new(),
            p99 => format!(", p99 {} ms", p99.as_millis()),
        };
        println!(
            "  {name}: {} calls, {} writes, {} stale, {} took the timeout or more \
             ({} writes){p99}",
            w.calls, w.writes, w.stale, w.slow, w.slow_writes,
        );
    }

    assert_eq!(tally.errors, 0, "a call failed or panicked");
    assert!(
        tally.worst < BOUND,
        "a call waited {:?}, more than {BOUND:?}",
        tally.worst
    );
    assert_eq!(
        tally.stale, 0,
        "a read returned a version older than a returned write"
    );
    assert_eq!(
        stale_after, 0,
        "this instance served stale entries after recovery"
    );
    assert_eq!(stale_fresh, 0, "Redis held stale entries after recovery");
    assert_eq!(stats.outbox_dropped, 0, "the outbox never filled up");
    for (fault, w) in FAULTS.iter().zip(&tally.windows) {
        assert!(w.writes > 0, "no write ran during {fault:?}");
        if matches!(fault, Fault::Pause | Fault::DebugSleep) {
            // Without the breaker, every write would pay the timeout.
            assert!(
                w.slow_writes * 10 < w.writes,
                "during {fault:?}, {} of {} writes paid the timeout",
                w.slow_writes,
                w.writes
            );
        }
    }
    assert!(
        stats.breaker_trips >= FAULTS.len() as u64,
        "it opened during each fault: {stats:?}"
    );
    assert!(stats.outbox_kept > 0, "invalidations failed and were kept");
    assert!(
        fresh.cache.stats().hits > 0,
        "the fresh instance read entries from Redis"
    );
}
