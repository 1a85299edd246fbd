//! The read-side strategies: single-flight, stale-while-revalidate, early
//! refresh (XFetch), negative caching with its own TTL, the size limit and
//! versions. Every case runs on the in-process store and on a real
//! `redis-server`, on a multi-threaded runtime so concurrent callers really
//! race; a few Redis-only cases count round trips or write raw entries.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cache_runtime::{Cache, CacheBuilder, CacheOptions, cached, invalidates};
use integration_tests::{RedisServer, wait_until};
use tokio::sync::{Barrier, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::common::Fixture;

/// Runs each `async fn case(fx: Fixture)` on both stores, on a two-worker
/// runtime, bounded so that a hang fails instead of stalling the run.
macro_rules! strategies_suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::bounded(super::$case(crate::common::Fixture::memory())).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::bounded(super::$case(crate::common::Fixture::redis().ready().await)).await
                }
            )*
        }
        /// Every case, one after another, on one three-master cluster.
        mod cluster {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn every_case() {
                let cluster = integration_tests::RedisCluster::start();
                $(
                    eprintln!("cluster case: {}", stringify!($case));
                    super::bounded(super::$case(crate::common::Fixture::cluster(
                        &cluster,
                        stringify!($case),
                    )))
                    .await;
                )*
            }
        }
    };
}

strategies_suite!(
    a_thousand_concurrent_misses_run_the_loader_once,
    an_error_is_shared_with_waiters_and_not_cached,
    an_error_that_cannot_be_shared_is_retried_one_leader_at_a_time,
    waiters_of_a_cancelled_leader_take_over_and_do_not_hang,
    without_single_flight_every_concurrent_miss_runs_the_loader,
    a_stale_entry_is_served_while_one_caller_refreshes,
    a_failed_refresh_serves_the_cached_value,
    past_the_stale_window_an_entry_is_a_plain_miss,
    early_refresh_happens_before_expiry_and_rarely,
    none_is_cached_for_its_own_ttl,
    values_over_the_size_limit_are_returned_but_not_stored,
    a_version_bump_orphans_only_the_entries_of_that_version,
);

/// The longest any one case may take.
const CASE_BOUND: Duration = Duration::from_secs(30);
/// The longest a group of callers may take to return.
const CALLERS_BOUND: Duration = Duration::from_secs(10);

async fn bounded(case: impl Future<Output = ()>) {
    timeout(CASE_BOUND, case)
        .await
        .expect("the case did not finish in time (a caller hung?)");
}

/// A repository of annotated methods whose loaders count their runs and can
/// be held at a gate, made to wait for a crowd of callers, or made to meet
/// at a barrier.
struct Lab {
    cache: Cache,
    /// Loader runs, all methods together.
    runs: AtomicU32,
    /// Callers started by [`spawn_crowd`].
    entered: AtomicUsize,
    /// How many callers `wait_for_crowd` waits for.
    crowd: AtomicUsize,
    /// What else `wait_for_crowd` waits for (on Redis: that the crowd's
    /// lookups were all answered).
    crowd_ready: OnceLock<ReadyCheck>,
    /// Loaders that hold wait here for a permit.
    gate: Semaphore,
    /// Signalled by the first run of [`Lab::held`].
    started: Notify,
    /// Loaders running right now, and the most at once.
    active: AtomicUsize,
    max_active: AtomicUsize,
    barrier: Barrier,
}

/// Callers of the method without single-flight, meeting at the barrier.
const UNSHARED_CALLERS: usize = 8;

impl Lab {
    fn new(cache: Cache) -> Arc<Lab> {
        Arc::new(Lab {
            cache,
            runs: AtomicU32::new(0),
            entered: AtomicUsize::new(0),
            crowd: AtomicUsize::new(0),
            crowd_ready: OnceLock::new(),
            gate: Semaphore::new(0),
            started: Notify::new(),
            active: AtomicUsize::new(0),
            max_active: AtomicUsize::new(0),
            barrier: Barrier::new(UNSHARED_CALLERS),
        })
    }

    fn runs(&self) -> u32 {
        self.runs.load(Ordering::SeqCst)
    }

    fn run(&self) -> u32 {
        self.runs.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Expects a crowd of `n` callers, which will have looked the key up once
    /// `wait_for_crowd` returns (on Redis: once the server has answered
    /// their `n` lookups).
    fn expect_crowd(&self, fx: &Fixture, n: usize) {
        self.crowd.store(n, Ordering::SeqCst);
        if let Some(counter) = GetCounter::of(fx) {
            let target = counter.get_blocking() + LOOKUP_GETS * n as u64;
            let check: ReadyCheck = Arc::new(move || counter.get_blocking() >= target);
            assert!(self.crowd_ready.set(check).is_ok(), "one crowd per lab");
        }
    }

    /// Waits (polling) until every caller of the crowd has started its call
    /// and looked the key up, or half the callers' bound passed (a lookup
    /// that faulted never counts: the assertions then say what happened,
    /// instead of every caller hanging).
    async fn wait_for_crowd(&self) {
        let give_up = std::time::Instant::now() + CALLERS_BOUND / 2;
        while (self.entered.load(Ordering::SeqCst) < self.crowd.load(Ordering::SeqCst)
            || !self.crowd_ready().await)
            && std::time::Instant::now() < give_up
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Whether the crowd has looked the key up, as far as the server's
    /// counters tell (true in memory). The counters are read off the
    /// runtime: blocking it would starve the cache's own connections.
    async fn crowd_ready(&self) -> bool {
        match self.crowd_ready.get() {
            None => true,
            Some(ready) => {
                let ready = ready.clone();
                tokio::task::spawn_blocking(move || ready())
                    .await
                    .expect("the check")
            }
        }
    }

    /// Waits for a permit of the gate (the test releases it).
    async fn hold(&self) {
        self.gate
            .acquire()
            .await
            .expect("the gate is never closed")
            .forget();
    }

    /// Slow: waits until the whole crowd has looked the key up, then 200 ms
    /// more (room for the last lookups to join the flight); the result is
    /// shareable (`Clone + Send + Sync`). `id` 0 fails.
    #[cached(cache = self.cache, key = "slow:{id}", ttl = "1m")]
    async fn slow(&self, id: u64) -> Result<String, String> {
        let n = self.run();
        self.wait_for_crowd().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if id == 0 {
            Err(format!("failure {n}"))
        } else {
            Ok(format!("value {n}"))
        }
    }

    /// Always fails, with an error that is not `Clone` (so it cannot be
    /// handed to waiters); records how many loads overlap.
    #[cached(cache = self.cache, key = "opaque:{id}", ttl = "1m")]
    async fn opaque(&self, id: u64) -> Result<String, Opaque> {
        let n = self.run();
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_active.fetch_max(now, Ordering::SeqCst);
        self.wait_for_crowd().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.active.fetch_sub(1, Ordering::SeqCst);
        Err(Opaque(id, n))
    }

    /// Every run waits at the gate; the first one says it has started.
    #[cached(cache = self.cache, key = "held:{id}", ttl = "1m")]
    async fn held(&self, id: u64) -> String {
        let n = self.run();
        if n == 1 {
            self.started.notify_one();
        }
        self.hold().await;
        format!("value {n} of {id}")
    }

    /// Single-flight off: every run waits at the barrier for the others.
    #[cached(cache = self.cache, key = "unshared:{id}", ttl = "1m", single_flight = false)]
    async fn unshared(&self, id: u64) -> String {
        let n = self.run();
        self.barrier.wait().await;
        format!("value {n} of {id}")
    }

    /// Fresh for 1 s, then served stale for 10 s; every run but the first
    /// waits at the gate.
    #[cached(cache = self.cache, key = "swr:{id}", ttl = "1s", jitter = 0.0, stale = "10s")]
    async fn swr(&self, id: u64) -> String {
        let n = self.run();
        if n > 1 {
            self.hold().await;
        }
        format!("value {n} of {id}")
    }

    /// Fresh for 300 ms, then stale for 10 s; fails from its second run on.
    #[cached(cache = self.cache, key = "swr-err:{id}", ttl = "300ms", jitter = 0.0, stale = "10s")]
    async fn swr_failing(&self, id: u64) -> Result<String, String> {
        match self.run() {
            1 => Ok(format!("value 1 of {id}")),
            n => Err(format!("database down (run {n})")),
        }
    }

    /// Fresh for 1 s with early refresh; costs 50 ms to load.
    #[cached(cache = self.cache, key = "xfetch:{id}", ttl = "1s", jitter = 0.0, early = 1.0)]
    async fn xfetch(&self, id: u64) -> String {
        let n = self.run();
        tokio::time::sleep(Duration::from_millis(50)).await;
        format!("value {n} of {id}")
    }

    /// `None` for id 404, cached for 300 ms; `Some` for a minute.
    #[cached(cache = self.cache, key = "neg:{id}", ttl = "1m", jitter = 0.0, cache_none = "300ms")]
    async fn find(&self, id: u64) -> Option<String> {
        self.run();
        (id != 404).then(|| format!("row {id}"))
    }

    /// A string of `len` bytes; values over 256 encoded bytes are not stored.
    #[cached(cache = self.cache, key = "blob:{len}", ttl = "1m", max_size = 256)]
    async fn blob(&self, len: usize) -> String {
        self.run();
        "x".repeat(len)
    }

    #[cached(cache = self.cache, key = "profile:{id}", ttl = "1m", version = "user:{id}")]
    async fn profile(&self, id: u64) -> String {
        let n = self.run();
        format!("profile of {id}, run {n}")
    }

    #[cached(cache = self.cache, key = "settings:{id}", ttl = "1m", version = "user:{id}")]
    async fn settings(&self, id: u64) -> String {
        let n = self.run();
        format!("settings of {id}, run {n}")
    }

    #[invalidates(cache = self.cache, bump = ["user:{id}"])]
    async fn rename(&self, id: u64) -> Result<(), String> {
        let _ = id;
        Ok(())
    }

    #[invalidates(cache = self.cache, bump = ["user:{id}"])]
    async fn failing_rename(&self, id: u64) -> Result<(), String> {
        Err(format!("constraint violated on {id}"))
    }
}

type ReadyCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// An error that is neither `Clone` nor shareable: (id, run).
#[derive(Debug, PartialEq)]
struct Opaque(u64, u32);

/// Spawns `n` tasks that each count themselves in `entered`, then call.
fn spawn_crowd<F, Fut, T>(lab: &Arc<Lab>, n: usize, call: F) -> Vec<JoinHandle<T>>
where
    F: Fn(Arc<Lab>) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    (0..n)
        .map(|_| {
            let call = call(lab.clone());
            let lab = lab.clone();
            tokio::spawn(async move {
                lab.entered.fetch_add(1, Ordering::SeqCst);
                call.await
            })
        })
        .collect()
}

/// Every caller's result, failing if any of them takes too long.
async fn join_all<T>(handles: Vec<JoinHandle<T>>) -> Vec<T> {
    timeout(CALLERS_BOUND, async {
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await.expect("a caller panicked"));
        }
        out
    })
    .await
    .expect("callers did not return in time (hung waiting on a flight?)")
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_millis()).expect("ms fit in u64")
}

/// Waits until the wall clock is past `ms` (Unix ms): for letting a TTL
/// pass, where time passing is the condition itself.
async fn wait_past(what: &str, ms: u64) {
    wait_until(what, Duration::from_secs(10), async || now_ms() > ms).await;
}

/// GETs a caller makes before it joins a flight: its lookup's `GET` of the
/// entry, and the fill token's script, which reads the sequence number and
/// the server id it belongs to (two `GET`s inside the script).
const LOOKUP_GETS: u64 = 3;

/// Counts the GET commands the fixture's Redis has run, on its one server
/// or on every node of its cluster (there is none in memory, where a
/// lookup does not yield).
struct GetCounter {
    clients: Vec<::redis::Client>,
}

impl GetCounter {
    fn of(fx: &Fixture) -> Option<GetCounter> {
        let urls = match (&fx._server, &fx.cluster) {
            (Some(server), _) => vec![server.url()],
            (None, Some(nodes)) => nodes.clone(),
            (None, None) => return None,
        };
        Some(GetCounter {
            clients: urls
                .iter()
                .map(|url| ::redis::Client::open(url.as_str()).expect("the server's URL"))
                .collect(),
        })
    }

    /// The count, read with blocking connections (call it off the runtime,
    /// or through `get`).
    fn get_blocking(&self) -> u64 {
        self.clients.iter().map(Self::gets_of).sum()
    }

    /// The count, read on a blocking thread.
    async fn get(&self) -> u64 {
        let clients = self.clients.clone();
        tokio::task::spawn_blocking(move || GetCounter { clients }.get_blocking())
            .await
            .expect("the count")
    }

    fn gets_of(client: &::redis::Client) -> u64 {
        let mut conn = client.get_connection().expect("connect to redis");
        let info: String = ::redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut conn)
            .expect("INFO commandstats");
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
            .map_or(0, |rest| {
                rest.split(',')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("a call count")
            })
    }
}

/// Another cache on the fixture's store, configured by `configure`.
fn same_store(fx: &Fixture, configure: impl FnOnce(CacheBuilder) -> CacheBuilder) -> Cache {
    let builder = Cache::builder().namespace("other").jitter(0.0);
    let builder = match (&fx._server, &fx.cluster) {
        (Some(server), _) => builder.redis_url(server.url()),
        (None, Some(nodes)) => builder.redis_cluster(nodes.clone()),
        (None, None) => builder,
    };
    configure(builder).build().unwrap()
}

// ---------------------------------------------------------------------------
// Single-flight

const CROWD: usize = 1000;

async fn a_thousand_concurrent_misses_run_the_loader_once(fx: Fixture) {
    let lab = Lab::new(fx.cache.clone());
    lab.expect_crowd(&fx, CROWD);
    let callers = spawn_crowd(&lab, CROWD, |lab| async move { lab.slow(1).await });
    let results = join_all(callers).await;
    assert_eq!(lab.runs(), 1, "the loader ran once for {CROWD} callers");
    assert!(
        results.iter().all(|r| r.as_deref() == Ok("value 1")),
        "every caller gets the leader's value"
    );
    let stats = fx.cache.stats();
    assert_eq!(
        (stats.misses, stats.coalesced, stats.hits, stats.fills),
        (1, CROWD as u64 - 1, 0, 1),
        "one miss leads, the {} others are coalesced onto it: {stats:?}",
        CROWD - 1
    );
    assert_eq!(lab.slow(1).await.as_deref(), Ok("value 1"));
    assert_eq!(lab.runs(), 1, "and the value was stored");
    assert_eq!(fx.cache.stats().hits, 1);
}

async fn an_error_is_shared_with_waiters_and_not_cached(fx: Fixture) {
    let lab = Lab::new(fx.cache.clone());
    lab.expect_crowd(&fx, CROWD);
    let callers = spawn_crowd(&lab, CROWD, |lab| async move { lab.slow(0).await });
    let results = join_all(callers).await;
    assert_eq!(
        lab.runs(),
        1,
        "the failing loader ran once for {CROWD} callers"
    );
    assert!(
        results
            .iter()
            .all(|r| r.as_deref() == Err(&"failure 1".to_string())),
        "every caller gets the leader's error"
    );
    let stats = fx.cache.stats();
    assert_eq!((stats.misses, stats.coalesced), (1, CROWD as u64 - 1));
    assert_eq!(stats.fills, 0, "an Err is not stored");
    assert_eq!(fx.cache.get::<String>("slow:0").await, None);
    assert_eq!(
        lab.slow(0).await,
        Err("failure 2".to_string()),
        "the next call runs the body again"
    );
    assert_eq!(lab.runs(), 2);
}

async fn an_error_that_cannot_be_shared_is_retried_one_leader_at_a_time(fx: Fixture) {
    const CALLERS: usize = 4;
    let lab = Lab::new(fx.cache.clone());
    lab.expect_crowd(&fx, CALLERS);
    let callers = spawn_crowd(&lab, CALLERS, |lab| async move { lab.opaque(5).await });
    let results = join_all(callers).await;
    // Nothing can be handed over, so each caller ends up loading for itself,
    // but never two at once.
    assert_eq!(lab.runs(), CALLERS as u32);
    let runs: BTreeSet<u32> = results
        .into_iter()
        .map(|r| match r {
            Err(Opaque(5, run)) => run,
            other => panic!("expected this caller's own error, got {other:?}"),
        })
        .collect();
    assert_eq!(
        runs,
        (1..=CALLERS as u32).collect(),
        "each caller got the error of its own load"
    );
    assert_eq!(
        lab.max_active.load(Ordering::SeqCst),
        1,
        "retries lead one at a time"
    );
    let stats = fx.cache.stats();
    assert_eq!((stats.coalesced, stats.fills), (0, 0));
}

async fn waiters_of_a_cancelled_leader_take_over_and_do_not_hang(fx: Fixture) {
    const WAITERS: usize = 20;
    let lab = Lab::new(fx.cache.clone());
    let leader = {
        let lab = lab.clone();
        tokio::spawn(async move { lab.held(1).await })
    };
    timeout(CALLERS_BOUND, lab.started.notified())
        .await
        .expect("the leader's loader starts");
    let gets = GetCounter::of(&fx).map(|c| {
        let target = c.get_blocking() + LOOKUP_GETS * WAITERS as u64;
        (c, target)
    });
    let waiters = spawn_crowd(&lab, WAITERS, |lab| async move { lab.held(1).await });
    wait_until(
        "every waiter has looked the key up",
        Duration::from_secs(5),
        async || {
            lab.entered.load(Ordering::SeqCst) == WAITERS
                && match &gets {
                    Some((c, target)) => c.get().await >= *target,
                    None => true,
                }
        },
    )
    .await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "waiters wait for the leader"
    );
    assert_eq!(lab.runs(), 1);

    leader.abort();
    let cancelled = timeout(CALLERS_BOUND, leader)
        .await
        .expect("the aborted leader ends");
    assert!(cancelled.unwrap_err().is_cancelled());
    wait_until(
        "one waiter takes the load over",
        Duration::from_secs(5),
        async || lab.runs() == 2,
    )
    .await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "the others wait for the new leader"
    );
    lab.gate.add_permits(1); // releases the new leader only
    let results = join_all(waiters).await;
    assert!(
        results.iter().all(|v| v == "value 2 of 1"),
        "every waiter gets the new leader's value: {results:?}"
    );
    assert_eq!(lab.runs(), 2, "the loader ran at most twice");
    let stats = fx.cache.stats();
    // A waiter that re-reads after the new leader stored the value hits
    // instead of coalescing: both mean it did not load.
    assert_eq!(
        (stats.misses, stats.coalesced + stats.hits, stats.fills),
        (2, WAITERS as u64 - 1, 1),
        "{stats:?}"
    );
}

async fn without_single_flight_every_concurrent_miss_runs_the_loader(fx: Fixture) {
    let lab = Lab::new(fx.cache.clone());
    // Each load waits at a barrier for all the others: with single-flight
    // this would never complete.
    let callers = spawn_crowd(&lab, UNSHARED_CALLERS, |lab| async move {
        lab.unshared(1).await
    });
    let results = join_all(callers).await;
    assert_eq!(lab.runs(), UNSHARED_CALLERS as u32);
    let distinct: BTreeSet<&String> = results.iter().collect();
    assert_eq!(
        distinct.len(),
        UNSHARED_CALLERS,
        "each caller got its own load"
    );
    let stats = fx.cache.stats();
    assert_eq!(
        (stats.misses, stats.coalesced),
        (UNSHARED_CALLERS as u64, 0)
    );
    let cached = lab.unshared(1).await;
    assert!(results.contains(&cached));
    assert_eq!(
        lab.runs(),
        UNSHARED_CALLERS as u32,
        "one of the loads is cached"
    );
}

// ---------------------------------------------------------------------------
// Stale-while-revalidate

async fn a_stale_entry_is_served_while_one_caller_refreshes(fx: Fixture) {
    const READERS: usize = 50;
    let lab = Lab::new(fx.cache.clone());
    assert_eq!(lab.swr(1).await, "value 1 of 1");
    let filled_ms = now_ms();
    assert_eq!(lab.swr(1).await, "value 1 of 1");
    assert_eq!(lab.runs(), 1);
    wait_past("the 1 s TTL passes", filled_ms + 1000).await;

    // The refresh is held at the gate: the other readers can only return if
    // they do not wait for it. The refreshing reader loads inline (as
    // documented on `CacheOptions::stale`) and returns what it loaded.
    // The refreshing reader reads the fill token (a round trip) before it
    // loads: the others may all have returned before its load starts.
    let readers = spawn_crowd(&lab, READERS, |lab| async move { lab.swr(1).await });
    wait_until(
        "every reader but the refreshing one returns, and that one loads",
        Duration::from_secs(5),
        async || {
            readers.iter().filter(|r| r.is_finished()).count() >= READERS - 1 && lab.runs() >= 2
        },
    )
    .await;
    assert_eq!(lab.runs(), 2, "exactly one reader refreshes");
    assert_eq!(
        readers.iter().filter(|r| !r.is_finished()).count(),
        1,
        "the refreshing reader is still loading"
    );
    let stats = fx.cache.stats();
    assert_eq!(stats.refreshes, 1, "{stats:?}");
    assert_eq!(stats.stale_served, READERS as u64 - 1, "{stats:?}");

    lab.gate.add_permits(1);
    let results = join_all(readers).await;
    assert_eq!(
        results.iter().filter(|v| *v == "value 1 of 1").count(),
        READERS - 1,
        "the others got the old value: {results:?}"
    );
    assert_eq!(
        results.iter().filter(|v| *v == "value 2 of 1").count(),
        1,
        "the refreshing reader returns what it loaded"
    );
    assert_eq!(lab.swr(1).await, "value 2 of 1", "the new value is served");
    assert_eq!(lab.runs(), 2, "and it is fresh");
    let stats = fx.cache.stats();
    assert_eq!(
        (stats.refreshes, stats.stale_served),
        (1, READERS as u64 - 1)
    );
}

/// Stale-if-error: the refresh of a stale entry fails, and the caller gets
/// the cached value instead of the error; the entry stays, and the next
/// stale read tries again.
async fn a_failed_refresh_serves_the_cached_value(fx: Fixture) {
    let lab = Lab::new(fx.cache.clone());
    assert_eq!(lab.swr_failing(1).await.unwrap(), "value 1 of 1");
    let filled_ms = now_ms();
    wait_past("the 300 ms TTL passes", filled_ms + 300).await;
    assert_eq!(lab.swr_failing(1).await.unwrap(), "value 1 of 1");
    assert_eq!(lab.swr_failing(1).await.unwrap(), "value 1 of 1");
    assert_eq!(lab.runs(), 3, "each stale read tried a refresh");
    let stats = fx.cache.stats();
    assert_eq!(
        (stats.refreshes, stats.refresh_failures, stats.misses),
        (2, 2, 1),
        "refreshes are not misses"
    );
    assert_eq!(stats.stale_served, 2);
}

async fn past_the_stale_window_an_entry_is_a_plain_miss(fx: Fixture) {
    // A TTL long enough for the second read to come within it on a loaded
    // machine (at 300 ms it once came after, on the cluster, and refreshed).
    const OPTS: CacheOptions = CacheOptions::new("short")
        .ttl(Duration::from_secs(1))
        .jitter(0.0)
        .stale(Duration::from_millis(500));
    let lab = Lab::new(fx.cache.clone());
    let load = || async { Ok::<_, Infallible>(format!("value {}", lab.run())) };
    let started = std::time::Instant::now();
    assert_eq!(
        fx.cache.get_or_load("short:1", &OPTS, load).await,
        Ok("value 1".into())
    );
    assert_eq!(
        fx.cache.get_or_load("short:1", &OPTS, load).await,
        Ok("value 1".into())
    );
    wait_until(
        "the entry is gone after TTL + stale window",
        Duration::from_secs(5),
        async || fx.cache.get::<String>("short:1").await.is_none(),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(1_450),
        "the entry was kept for the stale window too ({:?})",
        started.elapsed()
    );
    assert_eq!(
        fx.cache.get_or_load("short:1", &OPTS, load).await,
        Ok("value 2".into()),
        "past the window the loader runs and its value is returned"
    );
    let stats = fx.cache.stats();
    assert_eq!(
        (stats.stale_served, stats.refreshes, stats.misses),
        (0, 0, 2),
        "{stats:?}"
    );
}

// ---------------------------------------------------------------------------
// Early refresh (XFetch)

async fn early_refresh_happens_before_expiry_and_rarely(fx: Fixture) {
    let lab = Lab::new(fx.cache.clone());
    assert_eq!(lab.xfetch(1).await, "value 1 of 1");
    let filled_ms = now_ms();
    // Hits, about one a millisecond, until one of them refreshes; the entry
    // is fresh until at most `filled_ms + 1000`.
    let mut refresh_started_ms = None;
    while now_ms() < filled_ms + 1500 {
        let call_ms = now_ms();
        let value = lab.xfetch(1).await;
        if lab.runs() > 1 {
            assert_eq!(value, "value 2 of 1", "the refreshing caller loads inline");
            refresh_started_ms = Some(call_ms);
            break;
        }
        assert_eq!(value, "value 1 of 1");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let refresh_started_ms =
        refresh_started_ms.expect("no refresh within 1.5 s of a fill with a 1 s TTL");
    let stats = fx.cache.stats();
    assert!(
        refresh_started_ms < filled_ms + 1000,
        "the refresh started {} ms after the fill, past the TTL",
        refresh_started_ms - filled_ms
    );
    assert_eq!(
        stats.refreshes, 1,
        "one early refresh, not an expiry: {stats:?}"
    );
    assert!(
        stats.hits >= 20 * stats.refreshes,
        "early refreshes are rare among hits (< 5%): {stats:?}"
    );
    // The refreshed entry is fresh again: no more refreshes right away.
    for _ in 0..20 {
        assert_eq!(lab.xfetch(1).await, "value 2 of 1");
    }
    assert_eq!((lab.runs(), fx.cache.stats().refreshes), (2, 1));
}

/// The XFetch decision itself, measured on raw entries whose header sets the
/// time left before expiry and the load cost (the layout is documented in
/// `entry.rs`): a hit refreshes with probability `exp(-left / (cost * beta))`.
#[tokio::test]
async fn early_refresh_probability_follows_xfetch() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("xs")
        .build()
        .unwrap();
    // Subscribing forgets the server's epoch (it may have changed while
    // unsubscribed), and a read then takes the raw entries for another
    // epoch's: counted as a miss, not a refresh. Measure once subscribed.
    assert!(cache.ready(Duration::from_secs(10)).await, "subscribed");
    let mut conn = server.conn();
    // A cost so large that the test's own duration does not move the odds.
    let cost = f64::from(XS_COST_MS);
    let half = cost * std::f64::consts::LN_2; // exp(-half / cost) = 1/2

    // Counts are binomial over XS_TRIALS = 300; bounds are >= 5 sigma wide.
    let p_half = xfetch_refreshes(&cache, &mut conn, half, 1.0).await;
    assert!((100..=200).contains(&p_half), "p = 1/2: {p_half} of 300");
    let p_one = xfetch_refreshes(&cache, &mut conn, cost / 100.0, 1.0).await;
    assert!(p_one >= 285, "p = 0.99: {p_one} of 300");
    let p_zero = xfetch_refreshes(&cache, &mut conn, cost * 10.0, 1.0).await;
    assert!(p_zero <= 2, "p = 4.5e-5: {p_zero} of 300");
    // beta stretches the horizon: 4 * half ahead is 1/16 with beta 1, 1/2
    // with beta 4.
    let p_16th = xfetch_refreshes(&cache, &mut conn, 4.0 * half, 1.0).await;
    assert!((3..=45).contains(&p_16th), "p = 1/16: {p_16th} of 300");
    let p_beta4 = xfetch_refreshes(&cache, &mut conn, 4.0 * half, 4.0).await;
    assert!(
        (100..=200).contains(&p_beta4),
        "beta 4, p = 1/2: {p_beta4} of 300"
    );
    // Past its fresh-until time (no stale window) the value is served as it
    // is until the store expires it; no refresh.
    let past = xfetch_refreshes(&cache, &mut conn, -1000.0, 1.0).await;
    assert_eq!(past, 0);
}

const XS_COST_MS: u32 = 1_000_000;
const XS_TRIALS: usize = 300;

/// Writes an entry fresh for `left_ms` more and loaded at `XS_COST_MS`, reads
/// it through an `early = beta` read, and counts the reads that refreshed,
/// `XS_TRIALS` times.
async fn xfetch_refreshes(
    cache: &Cache,
    conn: &mut ::redis::Connection,
    left_ms: f64,
    beta: f32,
) -> usize {
    let opts = CacheOptions::new("xs")
        .ttl(Duration::from_secs(3600))
        .early(beta);
    let before = cache.stats().refreshes;
    // Written as the cache would in the server's current epoch (the high 32
    // bits of the sequence number; an entry of another epoch is a miss).
    cache.invalidate().key("epoch").await.unwrap();
    let seq: u64 = ::redis::cmd("GET").arg("xs#seq").query(conn).unwrap();
    let epoch = (seq >> 32) as u32;
    let mut refreshed = 0;
    for _ in 0..XS_TRIALS {
        let fresh_until = (now_ms() as f64 + left_ms) as u64;
        let mut entry = vec![0xCA, 2, 1, 0];
        entry.extend_from_slice(&fresh_until.to_le_bytes());
        entry.extend_from_slice(&0u64.to_le_bytes()); // version
        entry.extend_from_slice(&XS_COST_MS.to_le_bytes());
        entry.extend_from_slice(&epoch.to_le_bytes());
        entry.extend_from_slice(br#""cached""#);
        let _: () = ::redis::cmd("SET")
            .arg("xs:x:1")
            .arg(entry)
            .arg("PX")
            .arg(3_600_000)
            .query(conn)
            .unwrap();
        let got: Result<String, Infallible> = cache
            .get_or_load("x:1", &opts, || async { Ok("loaded".to_string()) })
            .await;
        match got.unwrap().as_str() {
            "loaded" => refreshed += 1,
            "cached" => {}
            other => panic!("unexpected value {other}"),
        }
    }
    let stats = cache.stats();
    assert_eq!(stats.refreshes - before, refreshed as u64, "{stats:?}");
    assert_eq!(stats.decode_errors, 0, "the raw entries decode");
    refreshed
}

// ---------------------------------------------------------------------------
// Negative caching

async fn none_is_cached_for_its_own_ttl(fx: Fixture) {
    let lab = Lab::new(fx.cache.clone());
    let started = std::time::Instant::now();
    assert_eq!(lab.find(404).await, None);
    assert_eq!(lab.find(404).await, None);
    assert_eq!(lab.runs(), 1, "None is cached");
    assert_eq!(lab.find(1).await.as_deref(), Some("row 1"));
    assert_eq!(lab.find(1).await.as_deref(), Some("row 1"));
    assert_eq!(lab.runs(), 2, "Some is cached");
    wait_until(
        "the cached None expires",
        Duration::from_secs(5),
        async || fx.cache.get::<Option<String>>("neg:404").await.is_none(),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "None was kept for its 300 ms ({:?})",
        started.elapsed()
    );
    assert_eq!(lab.find(404).await, None);
    assert_eq!(lab.runs(), 3, "an expired None is a miss");
    assert_eq!(lab.find(1).await.as_deref(), Some("row 1"));
    assert_eq!(lab.runs(), 3, "Some lives for the normal TTL");
}

// ---------------------------------------------------------------------------
// Size limit

async fn values_over_the_size_limit_are_returned_but_not_stored(fx: Fixture) {
    let lab = Lab::new(fx.cache.clone());
    assert_eq!(lab.blob(1000).await.len(), 1000);
    assert_eq!(lab.blob(1000).await.len(), 1000);
    assert_eq!(lab.runs(), 2, "the big value was not stored");
    assert_eq!(fx.cache.get::<String>("blob:1000").await, None);
    let stats = fx.cache.stats();
    assert_eq!((stats.oversized, stats.fills), (2, 0), "{stats:?}");
    assert_eq!(lab.blob(10).await, "x".repeat(10));
    assert_eq!(lab.blob(10).await, "x".repeat(10));
    assert_eq!(lab.runs(), 3, "a small value is stored");
    let stats = fx.cache.stats();
    assert_eq!((stats.oversized, stats.fills), (2, 1), "{stats:?}");

    // The cache's own limit, and an option that replaces it.
    let small = same_store(&fx, |b| b.max_value_size(128));
    let big = "y".repeat(1000);
    let load = || async { Ok::<_, Infallible>(big.clone()) };
    let default_opts = CacheOptions::new("big");
    let roomy_opts = CacheOptions::new("roomy").max_size(4096);
    for _ in 0..2 {
        assert_eq!(
            small.get_or_load("big", &default_opts, load).await.unwrap(),
            big
        );
    }
    let stats = small.stats();
    assert_eq!((stats.misses, stats.oversized), (2, 2), "{stats:?}");
    for _ in 0..2 {
        assert_eq!(
            small.get_or_load("roomy", &roomy_opts, load).await.unwrap(),
            big
        );
    }
    let stats = small.stats();
    assert_eq!(
        (stats.misses, stats.oversized, stats.hits),
        (3, 2, 1),
        "max_size on the options replaces the cache's limit: {stats:?}"
    );
}

// ---------------------------------------------------------------------------
// Versions

async fn a_version_bump_orphans_only_the_entries_of_that_version(fx: Fixture) {
    let lab = Lab::new(fx.cache.clone());
    for _ in 0..2 {
        assert_eq!(lab.profile(1).await, "profile of 1, run 1");
        assert_eq!(lab.settings(1).await, "settings of 1, run 2");
        assert_eq!(lab.profile(2).await, "profile of 2, run 3");
    }
    assert_eq!(lab.runs(), 3, "versioned entries hit");

    lab.rename(1).await.unwrap();
    assert_eq!(lab.profile(1).await, "profile of 1, run 4");
    assert_eq!(lab.settings(1).await, "settings of 1, run 5");
    assert_eq!(
        lab.profile(2).await,
        "profile of 2, run 3",
        "user:2 is another version"
    );
    assert_eq!(lab.profile(1).await, "profile of 1, run 4");
    assert_eq!(lab.runs(), 5, "refilled under the new version");

    assert!(lab.failing_rename(2).await.is_err());
    assert_eq!(
        lab.profile(2).await,
        "profile of 2, run 3",
        "an Err bumps nothing"
    );

    fx.cache.invalidate().bump("user:2").await.unwrap();
    assert_eq!(lab.profile(2).await, "profile of 2, run 6");
    assert_eq!(lab.profile(1).await, "profile of 1, run 4");
    assert_eq!(lab.runs(), 6);
}

#[tokio::test]
async fn a_versioned_hit_is_one_round_trip() {
    let crate::common::Counted {
        server: _server,
        proxy,
        cache,
    } = crate::common::Counted::start("ver").await;
    let lab = Lab::new(cache.clone());
    // Warm up: the connection handshake and loading the scripts.
    lab.profile(9).await;
    lab.rename(9).await.unwrap();
    lab.profile(9).await;

    let before = proxy.requests();
    lab.profile(1).await;
    assert_eq!(
        proxy.requests() - before,
        3,
        "a miss is the lookup (entry and version together), the fill token and the fill"
    );
    let before = proxy.requests();
    assert_eq!(lab.profile(1).await, "profile of 1, run 3");
    assert_eq!(
        proxy.requests() - before,
        1,
        "a versioned hit is one round trip"
    );
    let before = proxy.requests();
    lab.rename(1).await.unwrap();
    assert_eq!(proxy.requests() - before, 1, "a bump is one round trip");
    let before = proxy.requests();
    assert_eq!(lab.profile(1).await, "profile of 1, run 4");
    assert_eq!(proxy.requests() - before, 3, "the orphaned entry is a miss");
    let before = proxy.requests();
    lab.profile(1).await;
    assert_eq!(proxy.requests() - before, 1);
    assert_eq!(lab.runs(), 4);
}
