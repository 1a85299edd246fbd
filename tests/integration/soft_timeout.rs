//! The soft loader timeout (`soft_timeout = "..."`): a caller holding a copy
//! past the TTL (`stale`, `fail_safe`) waits at most this long for the
//! loader, then the copy answers and the loader goes on in the background
//! and fills, under the race rules of every fill. On the in-process store,
//! on Redis, and on Redis with an in-process tier.
//!
//! The loader is held on a gate the test opens, so "slow" is a fact, not a
//! timing; the sleeps are what the cases measure (an entry's TTL passing).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, CacheOptions, CacheStatus, cached, invalidates, with_cache_status};
use tokio::sync::watch;

use integration_tests::wait_until;

use crate::common::Fixture;

const PAST_TTL: Duration = Duration::from_millis(450);
const WITHIN: Duration = Duration::from_secs(5);

/// The database: its value, whether loads fail, and a gate loads wait on.
struct Db {
    value: AtomicU64,
    fails: AtomicBool,
    loads: AtomicU32,
    finished: AtomicU32,
    gate: watch::Sender<bool>,
}

/// A repository the way users write one: cheap to clone, `&self` methods.
#[derive(Clone)]
struct Users {
    cache: Cache,
    db: Arc<Db>,
}

impl Users {
    fn new(cache: Cache) -> Users {
        Users {
            cache,
            db: Arc::new(Db {
                value: AtomicU64::new(1),
                fails: AtomicBool::new(false),
                loads: AtomicU32::new(0),
                finished: AtomicU32::new(0),
                gate: watch::Sender::new(true),
            }),
        }
    }

    fn loads(&self) -> u32 {
        self.db.loads.load(Ordering::SeqCst)
    }

    fn finished(&self) -> u32 {
        self.db.finished.load(Ordering::SeqCst)
    }

    /// Loads from now on wait until `open`.
    fn hold(&self) {
        self.db.gate.send_replace(false);
    }

    fn open(&self) {
        self.db.gate.send_replace(true);
    }

    /// Reads the value when it starts (as a query would), then waits on
    /// the gate (the query is slow).
    async fn load(&self, prefix: &str) -> Result<String, String> {
        self.db.loads.fetch_add(1, Ordering::SeqCst);
        let value = self.db.value.load(Ordering::SeqCst);
        let fails = self.db.fails.load(Ordering::SeqCst);
        let mut gate = self.db.gate.subscribe();
        let _ = gate.wait_for(|open| *open).await;
        self.db.finished.fetch_add(1, Ordering::SeqCst);
        if fails {
            return Err("database down".to_owned());
        }
        Ok(format!("{prefix}{value}"))
    }

    #[cached(cache = self.cache, key = "stale:{id}", ttl = "300ms", jitter = 0.0, stale = "1h", soft_timeout = "50ms")]
    async fn stale(&self, id: u64) -> Result<String, String> {
        self.load("v").await
    }

    #[cached(cache = self.cache, key = "safe:{name}", ttl = "300ms", jitter = 0.0, fail_safe = "1h", fail_safe_throttle = "1h", soft_timeout = "50ms")]
    async fn safe(&self, name: &str) -> Result<String, String> {
        self.load(name).await
    }

    /// A read without a soft timeout, called from one with it.
    #[cached(cache = self.cache, key = "inner:{name}", ttl = "1h")]
    async fn inner(&self, name: &str) -> Result<String, String> {
        self.load(name).await
    }

    #[cached(cache = self.cache, key = "wrap:{name}", ttl = "1h", fail_safe = "1h", soft_timeout = "50ms")]
    async fn wrap(&self, name: &str) -> Result<String, String> {
        self.inner(name).await
    }

    #[invalidates(cache = self.cache, keys = ["safe:{name}"])]
    async fn update(&self, name: &str, value: u64) -> Result<(), String> {
        let _ = name;
        self.db.value.store(value, Ordering::SeqCst);
        Ok(())
    }
}

crate::common::on_memory_redis_and_tier!(
    a_slow_refresh_is_answered_with_the_stale_copy_then_lands,
    a_slow_load_is_answered_with_the_fail_safe_copy_then_lands,
    a_fast_load_is_returned_not_the_copy,
    without_a_copy_the_caller_waits_for_the_loader,
    a_load_that_fails_after_the_soft_timeout_holds_the_loader_off,
    an_invalidation_during_the_background_load_refuses_its_fill,
    callers_during_the_slow_load_get_the_copy_and_it_runs_once,
    the_plain_api_answers_with_the_copy_too,
    a_forced_refresh_reaches_a_soft_timeout_read,
    a_hit_clones_nothing,
);

/// `call`, which must not wait for the held loader.
async fn soon<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WITHIN, call)
        .await
        .expect("answered without waiting for the held loader")
}

/// Caches `v1` under `safe:{name}` and lets its TTL pass.
async fn expired(users: &Users, name: &str) {
    assert_eq!(users.safe(name).await, Ok(format!("{name}1")));
    tokio::time::sleep(PAST_TTL).await; // the TTL passes
    users.db.value.store(2, Ordering::SeqCst);
}

async fn a_slow_refresh_is_answered_with_the_stale_copy_then_lands(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    assert_eq!(users.stale(1).await, Ok("v1".to_owned()));
    tokio::time::sleep(PAST_TTL).await; // the TTL passes
    users.db.value.store(2, Ordering::SeqCst);
    users.hold();
    let (user, status) = soon(with_cache_status(users.stale(1))).await;
    assert_eq!(
        user,
        Ok("v1".to_owned()),
        "the copy answers the slow refresh"
    );
    assert_eq!(status, Some(CacheStatus::Stale));
    assert_eq!(
        (users.loads(), users.finished()),
        (2, 1),
        "the loader still runs"
    );
    users.open();
    // Watched in the store: a read of the function meanwhile would find
    // the stale entry and may rightly refresh it again.
    wait_until(
        "the background refresh stores its value",
        WITHIN,
        async || fx.cache.get::<String>("stale:1").await.as_deref() == Some("v2"),
    )
    .await;
    let (user, status) = with_cache_status(users.stale(1)).await;
    assert_eq!(
        (user, status),
        (Ok("v2".to_owned()), Some(CacheStatus::Hit))
    );
    assert_eq!(users.loads(), 2, "stored by the background load");
}

async fn a_slow_load_is_answered_with_the_fail_safe_copy_then_lands(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    expired(&users, "ann").await;
    users.hold();
    let (user, status) = soon(with_cache_status(users.safe("ann"))).await;
    assert_eq!(user, Ok("ann1".to_owned()));
    assert_eq!(status, Some(CacheStatus::FailSafe));
    assert_eq!(fx.cache.stats().fail_safe_served, 1);
    users.open();
    wait_until("the background load stores its value", WITHIN, async || {
        fx.cache.get::<String>("safe:ann").await.as_deref() == Some("ann2")
    })
    .await;
    let (user, status) = with_cache_status(users.safe("ann")).await;
    assert_eq!(
        (user, status),
        (Ok("ann2".to_owned()), Some(CacheStatus::Hit))
    );
    assert_eq!(users.loads(), 2);
}

async fn a_fast_load_is_returned_not_the_copy(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    expired(&users, "bob").await;
    let (user, status) = with_cache_status(users.safe("bob")).await;
    assert_eq!(
        user,
        Ok("bob2".to_owned()),
        "loaded within the soft timeout"
    );
    assert_eq!(status, Some(CacheStatus::Miss));
    assert_eq!(fx.cache.stats().fail_safe_served, 0);
}

async fn without_a_copy_the_caller_waits_for_the_loader(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    users.hold();
    let opener = {
        let users = users.clone();
        tokio::spawn(async move {
            // Opened once the load is well past the soft timeout.
            let deadline = std::time::Instant::now() + WITHIN;
            while users.loads() < 1 {
                assert!(std::time::Instant::now() < deadline, "the load starts");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await; // 4 soft timeouts
            users.open();
        })
    };
    let (user, status) = with_cache_status(users.safe("cid")).await;
    assert_eq!(user, Ok("cid1".to_owned()), "no copy: the loader's value");
    assert_eq!(status, Some(CacheStatus::Miss));
    opener.await.unwrap();
}

async fn a_load_that_fails_after_the_soft_timeout_holds_the_loader_off(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    expired(&users, "dan").await;
    users.db.fails.store(true, Ordering::SeqCst);
    users.hold();
    assert_eq!(soon(users.safe("dan")).await, Ok("dan1".to_owned()));
    users.open();
    wait_until("the background load fails", WITHIN, async || {
        users.finished() == 2
    })
    .await;
    // The failure, seen after the copy answered, holds the loader off (the
    // throttle is an hour); wait for that hold, not for a time.
    wait_until("the copy answers without the loader", WITHIN, async || {
        let before = users.loads();
        let (user, status) = with_cache_status(users.safe("dan")).await;
        assert_eq!(user, Ok("dan1".to_owned()));
        assert_eq!(status, Some(CacheStatus::FailSafe));
        users.loads() == before
    })
    .await;
    assert_eq!(
        fx.cache.get::<String>("safe:dan").await.as_deref(),
        Some("dan1")
    );
}

async fn an_invalidation_during_the_background_load_refuses_its_fill(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    expired(&users, "eve").await;
    users.hold();
    // The load read 2 when it started; the write of 3 commits and
    // invalidates while it runs.
    assert_eq!(soon(users.safe("eve")).await, Ok("eve1".to_owned()));
    users.update("eve", 3).await.unwrap();
    users.open();
    wait_until("the background load ends", WITHIN, async || {
        users.finished() == 2
    })
    .await;
    let (user, status) = with_cache_status(users.safe("eve")).await;
    assert_eq!(
        user,
        Ok("eve3".to_owned()),
        "the older value was not stored"
    );
    assert_eq!(status, Some(CacheStatus::Miss));
}

async fn callers_during_the_slow_load_get_the_copy_and_it_runs_once(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    expired(&users, "fay").await;
    users.hold();
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let users = users.clone();
            tokio::spawn(async move { soon(with_cache_status(users.safe("fay"))).await })
        })
        .collect();
    for caller in callers {
        let (user, status) = caller.await.unwrap();
        assert_eq!(user, Ok("fay1".to_owned()));
        assert_eq!(status, Some(CacheStatus::FailSafe));
    }
    assert_eq!(
        users.loads(),
        2,
        "one load for all of them (in one process)"
    );
    users.open();
    wait_until("the background load stores its value", WITHIN, async || {
        fx.cache.get::<String>("safe:fay").await.as_deref() == Some("fay2")
    })
    .await;
}

async fn the_plain_api_answers_with_the_copy_too(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    let options = CacheOptions::new("plain")
        .ttl(Duration::from_millis(300))
        .jitter(0.0)
        .fail_safe(Duration::from_secs(3600));
    let soft = Duration::from_millis(50);
    let load = |users: &Users| {
        let users = users.clone();
        move || async move { users.load("p").await }
    };
    assert_eq!(
        fx.cache
            .get_or_load_soft("plain", &options, soft, load(&users))
            .await,
        Ok("p1".to_owned())
    );
    tokio::time::sleep(PAST_TTL).await; // the TTL passes
    users.db.value.store(2, Ordering::SeqCst);
    users.hold();
    let (value, status) = soon(with_cache_status(fx.cache.get_or_load_soft(
        "plain",
        &options,
        soft,
        load(&users),
    )))
    .await;
    assert_eq!(
        (value, status),
        (Ok("p1".to_owned()), Some(CacheStatus::FailSafe))
    );
    users.open();
    wait_until("the background load stores its value", WITHIN, async || {
        fx.cache.get::<String>("plain").await.as_deref() == Some("p2")
    })
    .await;
}

async fn a_forced_refresh_reaches_a_soft_timeout_read(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    assert_eq!(users.wrap("gus").await, Ok("gus1".to_owned()));
    users.db.value.store(2, Ordering::SeqCst);
    let reloaded = cache_runtime::refreshing(users.wrap("gus")).await;
    assert_eq!(
        reloaded,
        Ok("gus2".to_owned()),
        "the scope reached the read inside the loader"
    );
    assert_eq!(
        users.wrap("gus").await,
        Ok("gus2".to_owned()),
        "and both are stored"
    );
    assert_eq!(users.inner("gus").await, Ok("gus2".to_owned()));
    assert_eq!(users.loads(), 2);
}

/// Counts its clones: a soft-timeout read clones `&self` for its loader.
struct Counted {
    cache: Cache,
    clones: Arc<AtomicU32>,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Counted {
            cache: self.cache.clone(),
            clones: self.clones.clone(),
        }
    }
}

impl Counted {
    #[cached(cache = self.cache, key = "counted:{id}", fail_safe = "1h", soft_timeout = "50ms")]
    async fn get(&self, id: u64, label: &str) -> String {
        let _ = &self.cache;
        format!("{label}{id}")
    }

    fn clones(&self) -> u32 {
        self.clones.load(Ordering::SeqCst)
    }
}

async fn a_hit_clones_nothing(fx: Fixture) {
    let counted = Counted {
        cache: fx.cache.clone(),
        clones: Arc::default(),
    };
    assert_eq!(counted.get(1, "x").await, "x1");
    assert_eq!(counted.clones(), 1, "the miss made its loader");
    for _ in 0..10 {
        assert_eq!(counted.get(1, "x").await, "x1");
    }
    // In process or from Redis, a hit makes no loader and spawns nothing.
    assert_eq!(counted.clones(), 1);
    assert_eq!(fx.cache.stats().hits, 10);
}
