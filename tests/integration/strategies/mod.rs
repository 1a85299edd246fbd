//! The read-side strategies: single-flight, stale-while-revalidate, early
//! refresh (XFetch), negative caching with its own TTL, the size limit and
//! versions. Every case runs on the in-process store and on a real
//! `redis-server`, on a multi-threaded runtime so concurrent callers really
//! race; a few Redis-only cases count round trips or write raw entries.
//!
//! The cases, by theme: `single_flight`, `freshness` (stale-while-revalidate
//! and early refresh), `entries` (negative caching, the size limit,
//! versions). The harness is here: the suite, the `Lab` repository and the
//! helpers the cases share.

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

mod entries;
mod freshness;
mod single_flight;

use entries::*;
use freshness::*;
use single_flight::*;

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
