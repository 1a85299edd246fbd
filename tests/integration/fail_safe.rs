//! Fail-safe (`fail_safe = "..."`) and the hard loader timeout
//! (`hard_timeout = "..."`): past its TTL, an entry's expired copy answers
//! when the loader fails (an `Err`, a panic, the hard timeout), and keeps
//! answering without the loader for the throttle; an invalidation removes
//! the copy. On the in-process store, on Redis, and on Redis with an
//! in-process tier.
//!
//! The sleeps here are what the cases measure (an entry's TTL, a throttle
//! running out), never a wait for something else to finish.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheOptions, CacheStatus, cached, invalidates, with_cache_status};
use integration_tests::RedisServer;

use crate::common::Fixture;

/// What the database does on the next load.
const WORKS: u8 = 0;
const FAILS: u8 = 1;
const PANICS: u8 = 2;
const HANGS: u8 = 3;

/// The TTL of the cases' entries, and how long they wait for it to pass.
const TTL: Duration = Duration::from_millis(300);
const PAST_TTL: Duration = Duration::from_millis(450);

struct Users {
    cache: Cache,
    loads: AtomicU32,
    db: AtomicU8,
    /// The value the database holds.
    value: AtomicU64,
}

impl Users {
    fn new(cache: Cache) -> Users {
        Users {
            cache,
            loads: AtomicU32::new(0),
            db: AtomicU8::new(WORKS),
            value: AtomicU64::new(1),
        }
    }

    fn loads(&self) -> u32 {
        self.loads.load(Ordering::SeqCst)
    }

    fn set(&self, db: u8) {
        self.db.store(db, Ordering::SeqCst);
    }

    async fn load(&self) -> Result<u64, String> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        match self.db.load(Ordering::SeqCst) {
            WORKS => Ok(self.value.load(Ordering::SeqCst)),
            FAILS => Err("database down".to_owned()),
            PANICS => panic!("the driver panicked"),
            _ => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(self.value.load(Ordering::SeqCst))
            }
        }
    }

    #[cached(cache = self.cache, key = "user:{id}", ttl = "300ms", jitter = 0.0, fail_safe = "1h", fail_safe_throttle = "400ms")]
    async fn user(&self, id: u64) -> Result<u64, String> {
        self.load().await
    }

    /// Without fail-safe: what the same failures do otherwise.
    #[cached(cache = self.cache, key = "plain:{id}", ttl = "300ms", jitter = 0.0)]
    async fn plain(&self, id: u64) -> Result<u64, String> {
        self.load().await
    }

    /// A fail-safe window shorter than the wait past it.
    #[cached(cache = self.cache, key = "brief:{id}", ttl = "300ms", jitter = 0.0, fail_safe = "500ms")]
    async fn brief(&self, id: u64) -> Result<u64, String> {
        self.load().await
    }

    /// Abandoned after 200 ms; with a fail-safe copy, the copy answers.
    #[cached(cache = self.cache, key = "bounded:{id}", ttl = "300ms", jitter = 0.0, fail_safe = "1h", hard_timeout = "200ms")]
    async fn bounded(&self, id: u64) -> Result<u64, String> {
        self.load().await
    }

    #[invalidates(cache = self.cache, keys = ["user:{id}"])]
    async fn update(&self, id: u64, value: u64) -> Result<(), String> {
        self.value.store(value, Ordering::SeqCst);
        Ok(())
    }
}

crate::common::on_memory_redis_and_tier!(
    an_error_past_the_ttl_is_answered_with_the_expired_copy,
    the_loader_is_held_off_for_the_throttle_then_tried_again,
    an_invalidated_entry_is_never_a_fail_safe_copy,
    a_panicking_loader_is_answered_with_the_copy,
    past_the_fail_safe_window_the_error_is_returned,
    a_loader_past_its_hard_timeout_is_abandoned,
    coalesced_callers_get_the_copy_and_the_loader_runs_once,
);

async fn an_error_past_the_ttl_is_answered_with_the_expired_copy(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    assert_eq!(users.user(1).await, Ok(1));
    assert_eq!(users.plain(1).await, Ok(1));
    tokio::time::sleep(PAST_TTL).await; // the TTL passes
    users.set(FAILS);
    let (user, status) = with_cache_status(users.user(1)).await;
    assert_eq!(user, Ok(1), "the expired copy answers the error");
    assert_eq!(status, Some(CacheStatus::FailSafe));
    assert_eq!(users.loads(), 3, "the loader was tried");
    assert_eq!(fx.cache.stats().fail_safe_served, 1);
    assert_eq!(
        users.plain(1).await,
        Err("database down".to_owned()),
        "without fail_safe the error is returned"
    );
}

async fn the_loader_is_held_off_for_the_throttle_then_tried_again(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    assert_eq!(users.user(2).await, Ok(1));
    tokio::time::sleep(PAST_TTL).await; // the TTL passes
    users.set(FAILS);
    // The throttle starts after this instant, within the failing call.
    let before = Instant::now();
    assert_eq!(users.user(2).await, Ok(1));
    assert_eq!(users.loads(), 2);
    let (user, status) = with_cache_status(users.user(2)).await;
    // On a machine slow enough to take the throttle's 400 ms over two
    // calls, the loader may rightly be tried again: not asserted then.
    let held = before.elapsed() < Duration::from_millis(400);
    assert_eq!((user, status), (Ok(1), Some(CacheStatus::FailSafe)));
    if held {
        assert_eq!(
            users.loads(),
            2,
            "within the throttle the loader is not called"
        );
    }
    tokio::time::sleep(Duration::from_millis(450)).await; // the throttle runs out
    users.value.store(5, Ordering::SeqCst);
    users.set(WORKS);
    let (user, status) = with_cache_status(users.user(2)).await;
    assert_eq!(user, Ok(5), "tried again after the throttle, and it works");
    assert_eq!(status, Some(CacheStatus::Miss));
    assert_eq!(users.user(2).await, Ok(5), "and its value is cached");
    assert_eq!(fx.cache.stats().fail_safe_served, 2);
}

async fn an_invalidated_entry_is_never_a_fail_safe_copy(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    assert_eq!(users.user(3).await, Ok(1));
    tokio::time::sleep(PAST_TTL).await; // the TTL passes
    users.update(3, 2).await.unwrap();
    users.set(FAILS);
    assert_eq!(
        users.user(3).await,
        Err("database down".to_owned()),
        "the write removed the copy"
    );
    // And once a copy was served, a write still removes it, throttle or not.
    users.set(WORKS);
    assert_eq!(users.user(3).await, Ok(2));
    tokio::time::sleep(PAST_TTL).await; // the TTL passes
    users.set(FAILS);
    assert_eq!(users.user(3).await, Ok(2), "fail-safe");
    users.update(3, 3).await.unwrap();
    assert_eq!(
        users.user(3).await,
        Err("database down".to_owned()),
        "the throttle holds no copy of its own"
    );
    assert_eq!(fx.cache.stats().fail_safe_served, 1);
}

async fn a_panicking_loader_is_answered_with_the_copy(fx: Fixture) {
    let users = std::sync::Arc::new(Users::new(fx.cache.clone()));
    assert_eq!(users.user(4).await, Ok(1));
    tokio::time::sleep(PAST_TTL).await; // the TTL passes
    users.set(PANICS);
    let (user, status) = with_cache_status(users.user(4)).await;
    assert_eq!((user, status), (Ok(1), Some(CacheStatus::FailSafe)));
    // With no copy, the panic goes on unwinding.
    let u = users.clone();
    let outcome = tokio::spawn(async move { u.user(40).await }).await;
    assert!(
        outcome.unwrap_err().is_panic(),
        "no copy: the panic is the caller's"
    );
}

async fn past_the_fail_safe_window_the_error_is_returned(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    assert_eq!(users.brief(5).await, Ok(1));
    tokio::time::sleep(PAST_TTL).await; // the TTL passes
    users.set(FAILS);
    assert_eq!(users.brief(5).await, Ok(1), "within the window");
    tokio::time::sleep(Duration::from_millis(500)).await; // the window ends
    assert_eq!(users.brief(5).await, Err("database down".to_owned()));
}

async fn a_loader_past_its_hard_timeout_is_abandoned(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    users.set(HANGS);
    let started = Instant::now();
    let (user, status) = with_cache_status(users.bounded(6)).await;
    assert_eq!(
        user,
        Err(
            "the loader of `bounded` ran past its hard timeout of 200ms and was abandoned"
                .to_owned()
        ),
        "no copy: the timeout is the error"
    );
    assert_eq!(status, Some(CacheStatus::Miss));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "not the loader's minute"
    );
    users.set(WORKS);
    assert_eq!(users.bounded(6).await, Ok(1), "the error was not cached");
    tokio::time::sleep(PAST_TTL).await; // the TTL passes
    users.set(HANGS);
    let (user, status) = with_cache_status(users.bounded(6)).await;
    assert_eq!((user, status), (Ok(1), Some(CacheStatus::FailSafe)));
}

/// Many callers on one expired key: one runs the loader, which fails; every
/// caller gets the copy, whether it waited on that loader or came after
/// (the throttle is held before the waiters are told).
async fn coalesced_callers_get_the_copy_and_the_loader_runs_once(fx: Fixture) {
    let users = std::sync::Arc::new(Users::new(fx.cache.clone()));
    assert_eq!(users.user(7).await, Ok(1));
    tokio::time::sleep(PAST_TTL).await; // the TTL passes
    users.set(FAILS);
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let users = users.clone();
            tokio::spawn(async move { users.user(7).await })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap(), Ok(1));
    }
    assert_eq!(users.loads(), 2, "one load for the 20 callers");
    assert_eq!(fx.cache.stats().fail_safe_served, 20);
}

/// The plain API: `CacheOptions::fail_safe` and `get_or_load_within`.
#[tokio::test]
async fn the_plain_api_has_both() {
    let cache = Cache::in_memory();
    let opts = CacheOptions::new("user")
        .ttl(TTL)
        .jitter(0.0)
        .fail_safe(Duration::from_secs(60));
    let v: Result<u64, String> = cache.get_or_load("u:1", &opts, || async { Ok(1) }).await;
    assert_eq!(v, Ok(1));
    tokio::time::sleep(PAST_TTL).await; // the TTL passes
    let v: Result<u64, String> = cache
        .get_or_load("u:1", &opts, || async { Err("down".to_owned()) })
        .await;
    assert_eq!(v, Ok(1), "fail-safe");
    let v: Result<u64, std::io::Error> = cache
        .get_or_load_within("u:2", &opts, Duration::from_millis(50), || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(2)
        })
        .await;
    assert_eq!(v.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
}

/// On Redis the copy is kept the fail-safe window past the TTL: the key's
/// expiry says so.
#[tokio::test]
async fn redis_keeps_a_fail_safe_entry_past_its_ttl() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("fs")
        .jitter(0.0)
        .build()
        .unwrap();
    let users = Users::new(cache);
    assert_eq!(users.user(8).await, Ok(1));
    assert_eq!(users.plain(8).await, Ok(1));
    let mut conn = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let kept: i64 = ::redis::cmd("PTTL")
        .arg("fs:user:8")
        .query_async(&mut conn)
        .await
        .unwrap();
    let plain: i64 = ::redis::cmd("PTTL")
        .arg("fs:plain:8")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(kept > 3_000_000, "kept an hour past its TTL: {kept} ms");
    assert!(
        (0..=300).contains(&plain),
        "without fail_safe, its TTL: {plain} ms"
    );
}
