//! Two tiers: an in-process tier in front of Redis, kept coherent across
//! instances (separate caches with their own connections) through pub/sub.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::future::{Future, IntoFuture};
use std::time::Instant;

use cache_runtime::{BreakerState, Cache, CacheBuilder, CacheOptions, Links, cached, invalidates};
use integration_tests::{CountingProxy, RedisServer, wait_until};

/// A table shared by every instance, as a database would be.
#[derive(Default)]
struct Table {
    rows: Mutex<HashMap<u64, String>>,
}

impl Table {
    fn set(&self, id: u64, value: &str) {
        self.rows.lock().unwrap().insert(id, value.to_owned());
    }

    fn get(&self, id: u64) -> String {
        self.rows
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }
}

/// One service instance: its own cache (own connections, own tier) over the
/// shared table.
struct Instance {
    cache: Cache,
    table: Arc<Table>,
    loads: AtomicU32,
}

impl Instance {
    fn loads(&self) -> u32 {
        self.loads.load(Ordering::SeqCst)
    }

    #[cached(cache = self.cache, key = "user:{id}", ttl = 60, tags = ["team:{team}"], version = "org:{team}")]
    async fn user(&self, id: u64, team: u64) -> String {
        let _ = team;
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.table.get(id)
    }

    #[cached(cache = self.cache, key = "card:{id}", ttl = 60, depends_on = ["user:{id}"])]
    async fn card(&self, id: u64) -> String {
        self.loads.fetch_add(1, Ordering::SeqCst);
        format!("card of {}", self.table.get(id))
    }

    #[invalidates(cache = self.cache, keys = ["user:{id}"])]
    async fn rename(&self, id: u64, name: &str) -> Result<(), String> {
        self.table.set(id, name);
        Ok(())
    }
}

fn builder(url: &str) -> CacheBuilder {
    Cache::builder()
        .redis_url(url)
        .namespace("tiers")
        .local_ttl(Duration::from_secs(30))
}

async fn instance(
    url: &str,
    table: &Arc<Table>,
    configure: impl FnOnce(CacheBuilder) -> CacheBuilder,
) -> Arc<Instance> {
    let cache = configure(builder(url)).build().unwrap();
    wait_until(
        "the instance subscribes",
        Duration::from_secs(5),
        async || cache.listening(),
    )
    .await;
    Arc::new(Instance {
        cache,
        table: table.clone(),
        loads: AtomicU32::new(0),
    })
}

#[tokio::test]
async fn a_hit_is_answered_in_process_without_a_round_trip() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port()).await;
    let table = Arc::new(Table::default());
    table.set(1, "ada");
    let a = instance(&proxy.url(), &table, |b| b).await;
    assert_eq!(a.user(1, 7).await, "ada");
    let sent = requests_during(&proxy, async || {
        for _ in 0..100 {
            assert_eq!(a.user(1, 7).await, "ada");
        }
    })
    .await;
    assert_eq!(sent, 0, "100 hits, no round trip");
    let stats = a.cache.stats();
    assert_eq!((stats.hits, stats.local_hits, a.loads()), (300, 300, 1));

    // Another instance finds it in Redis, and keeps it in its own tier.
    let b = instance(&proxy.url(), &table, |b| b).await;
    assert_eq!(b.user(1, 7).await, "ada");
    let sent = requests_during(&proxy, async || {
        assert_eq!(b.user(1, 7).await, "ada");
    })
    .await;
    assert_eq!(sent, 0);
    let stats = b.cache.stats();
    assert_eq!((stats.hits, stats.local_hits, b.loads()), (4, 3, 0));
}

/// The requests `work` sends through `proxy`, the fewest of three runs: the
/// subscriber's pings and the tier's watch go through the proxy too, on
/// their own schedule, and may fall inside one run.
async fn requests_during(proxy: &CountingProxy, mut work: impl AsyncFnMut()) -> u64 {
    let mut fewest = u64::MAX;
    for _ in 0..3 {
        let before = proxy.requests();
        work().await;
        fewest = fewest.min(proxy.requests() - before);
    }
    fewest
}

#[tokio::test]
async fn the_tier_never_outlives_the_entry_or_its_local_ttl() {
    let server = RedisServer::start();
    let table = Arc::new(Table::default());
    table.set(1, "ada");
    let a = instance(&server.url(), &table, |b| {
        b.local_ttl(Duration::from_millis(200))
    })
    .await;
    a.user(1, 7).await;
    a.user(1, 7).await;
    assert_eq!(a.cache.stats().local_hits, 1);
    // Past the tier's 200 ms, the hit comes from Redis (and refills the tier).
    wait_until(
        "the tier copy expires",
        Duration::from_secs(5),
        async || {
            let before = a.cache.stats().local_hits;
            a.user(1, 7).await;
            a.cache.stats().local_hits == before
        },
    )
    .await;
    assert_eq!(a.loads(), 1, "Redis still had it");
}

/// Every kind of invalidation made by one instance reaches the other's
/// tier; the instance that made it sees the change at once.
#[tokio::test]
async fn every_invalidation_reaches_every_tier() {
    let server = RedisServer::start();
    let table = Arc::new(Table::default());
    let a = instance(&server.url(), &table, |b| b).await;
    let b = instance(&server.url(), &table, |b| b).await;

    type Change = fn(&Cache) -> cache_runtime::Invalidation<'_>;
    let changes: [(&str, Change); 4] = [
        ("key", |c| c.invalidate().key("user:1")),
        ("tag", |c| c.invalidate().tag("team:7")),
        ("pattern", |c| c.invalidate().pattern("user:*")),
        ("version bump", |c| c.invalidate().bump("org:7")),
    ];
    for (round, (what, change)) in changes.into_iter().enumerate() {
        let old = format!("name {round}");
        let new = format!("name {round}+1");
        table.set(1, &old);
        // Start from a clean slate, then cache the old value in both tiers.
        a.cache.invalidate().key("user:1").await.unwrap();
        wait_until(
            "both read the old value",
            Duration::from_secs(5),
            async || a.user(1, 7).await == old && b.user(1, 7).await == old,
        )
        .await;
        let local_before = b.cache.stats().local_hits;
        assert_eq!(b.user(1, 7).await, old);
        assert_eq!(
            b.cache.stats().local_hits,
            local_before + 1,
            "{what}: b's tier holds it"
        );

        table.set(1, &new);
        change(&a.cache).await.unwrap();
        assert_eq!(
            a.user(1, 7).await,
            new,
            "{what}: the invalidating instance sees it at once"
        );
        wait_until(
            &format!("{what}: the other instance sees the change"),
            Duration::from_secs(5),
            async || b.user(1, 7).await == new,
        )
        .await;
    }

    // A cascade: b's card depends on user 1; a's rename invalidates the user.
    table.set(1, "grace");
    a.cache.invalidate().key("user:1").await.unwrap();
    wait_until("b caches the card", Duration::from_secs(5), async || {
        b.card(1).await == "card of grace"
    })
    .await;
    a.rename(1, "hopper").await.unwrap();
    wait_until(
        "the cascade reaches b's tier",
        Duration::from_secs(5),
        async || b.card(1).await == "card of hopper",
    )
    .await;

    // An overwrite with `set` drops the other tiers' copies too.
    b.card(1).await;
    a.cache
        .set(
            "card:1",
            &"card set by a",
            Some(Duration::from_secs(60)),
            &[],
        )
        .await
        .unwrap();
    wait_until("b sees the overwrite", Duration::from_secs(5), async || {
        b.card(1).await == "card set by a"
    })
    .await;
}

/// A read that fetched the old value from Redis before an invalidation may
/// not put it in the tier after the invalidation's message arrived.
#[tokio::test]
async fn an_instance_ignores_its_own_echo() {
    let server = RedisServer::start();
    let table = Arc::new(Table::default());
    table.set(1, "ada");
    let a = instance(&server.url(), &table, |b| b).await;
    let b = instance(&server.url(), &table, |b| b).await;
    a.user(1, 7).await;
    // a invalidates, then re-caches at once (its tier included).
    a.rename(1, "lovelace").await.unwrap();
    assert_eq!(a.user(1, 7).await, "lovelace");
    // b invalidates something else; once a has heard b's message it has
    // heard its own earlier one too (one connection delivers in order).
    b.cache.invalidate().key("other").await.unwrap();
    wait_until("a hears b's message", Duration::from_secs(5), async || {
        a.cache.stats().coherence_applied == 1
    })
    .await;
    assert_eq!(
        a.cache.stats().coherence_applied,
        1,
        "a applied b's message and not the echo of its own"
    );
    let local_before = a.cache.stats().local_hits;
    assert_eq!(a.user(1, 7).await, "lovelace");
    assert_eq!(
        a.cache.stats().local_hits,
        local_before + 1,
        "its tier still holds what it cached after its own invalidation"
    );
    assert_eq!(a.loads(), 2);
}

/// Killing and restarting redis-server between two instances: while the
/// subscriber is down the tier stops answering after its grace; on
/// reconnect it is cleared, so an invalidation made while the instance could
/// not hear it leaves nothing stale.
#[tokio::test]
async fn a_lost_subscriber_stops_the_tier_and_clears_it_on_reconnect() {
    let mut server = RedisServer::start();
    let table = Arc::new(Table::default());
    table.set(1, "before");
    let a = instance(&server.url(), &table, |b| b).await;
    let b = instance(&server.url(), &table, |b| {
        b.local_grace(Duration::from_millis(200))
    })
    .await;
    b.user(1, 7).await;
    b.user(1, 7).await;
    assert_eq!(b.cache.stats().local_hits, 1);

    server.kill();
    wait_until("b notices", Duration::from_secs(5), async || {
        !b.cache.listening()
    })
    .await;
    // Past the grace, reads leave the process (and Redis is down: the body
    // runs), so nothing the tier holds is served.
    wait_until(
        "the tier stops answering",
        Duration::from_secs(5),
        async || {
            let before = b.loads();
            b.user(1, 7).await;
            b.loads() == before + 1
        },
    )
    .await;
    let local_hits = b.cache.stats().local_hits;

    server.restart();
    // The row changes and a invalidates it, maybe before b is back.
    table.set(1, "after");
    wait_until(
        "a's invalidation lands",
        Duration::from_secs(10),
        async || a.cache.invalidate().key("user:1").await.is_ok(),
    )
    .await;
    wait_until("b resubscribes", Duration::from_secs(10), async || {
        b.cache.listening()
    })
    .await;
    assert_eq!(b.user(1, 7).await, "after", "nothing stale once b is back");
    assert_eq!(
        b.cache.stats().local_hits,
        local_hits,
        "that read was not local"
    );
    assert!(b.cache.stats().subscriber_connects >= 2);
}

/// `listening()` (and so `ready()`) turns true only once the cache has taken
/// the (re)connection in: its tier cleared, the epoch forgotten. Otherwise a
/// caller that waited for it and filled the tier at once could see the fill
/// wiped. Each round kills the subscriber's connection and watches the flag
/// from a thread that does nothing else, reading the count of connections
/// taken in as soon as the flag turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_means_the_connection_was_taken_in() {
    let server = RedisServer::start();
    let cache = builder(&server.url()).build().unwrap();
    let mut admin = server.conn();
    for round in 1..=20u64 {
        let watched = cache.clone();
        let connects = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !watched.listening() {
                assert!(Instant::now() < deadline, "round {round}: never subscribed");
                std::hint::spin_loop();
            }
            watched.stats().subscriber_connects
        })
        .await
        .unwrap();
        assert!(
            connects >= round,
            "round {round}: listening before the connection was taken in ({connects} counted)"
        );
        // None killed: the subscriber was already reconnecting (a ping
        // that timed out); the next round waits for that connection.
        let killed: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query(&mut admin)
            .unwrap();
        assert!(killed <= 1, "round {round}: one subscriber");
        // Down, or already back (the flag may be false for less than the
        // polling interval).
        wait_until("the cache notices", Duration::from_secs(5), async || {
            !cache.listening() || cache.stats().subscriber_connects > connects
        })
        .await;
    }
}

/// A partition between one instance and Redis (the server stays up): an
/// invalidation made while the instance cannot hear it is not lost, because
/// the tier is cleared when the subscriber comes back.
#[tokio::test]
async fn an_invalidation_missed_while_partitioned_leaves_nothing_stale() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port()).await;
    let table = Arc::new(Table::default());
    table.set(1, "before");
    let a = instance(&server.url(), &table, |b| b).await;
    let b = instance(&proxy.url(), &table, |b| {
        b.local_grace(Duration::from_millis(100))
    })
    .await;
    b.user(1, 7).await;
    b.user(1, 7).await;
    assert_eq!(b.cache.stats().local_hits, 1);

    proxy.sever();
    wait_until("b notices", Duration::from_secs(5), async || {
        !b.cache.listening()
    })
    .await;
    // b cannot hear this one.
    table.set(1, "after");
    a.rename(1, "after").await.unwrap();
    proxy.restore();
    wait_until("b resubscribes", Duration::from_secs(10), async || {
        b.cache.listening()
    })
    .await;
    assert_eq!(
        b.user(1, 7).await,
        "after",
        "the tier was cleared on reconnect"
    );
}

/// A server that stops answering (frozen, connections open) counts as a
/// lost subscriber too.
#[tokio::test]
async fn a_frozen_server_stops_the_tier() {
    let server = RedisServer::start();
    let table = Arc::new(Table::default());
    table.set(1, "ada");
    let b = instance(&server.url(), &table, |b| {
        b.local_grace(Duration::from_millis(100))
            .timeout(Duration::from_millis(200))
    })
    .await;
    b.user(1, 7).await;
    server.pause();
    let stopped = async {
        wait_until(
            "the frozen subscriber is noticed",
            Duration::from_secs(10),
            async || !b.cache.listening(),
        )
        .await;
        wait_until(
            "the tier stops answering",
            Duration::from_secs(5),
            async || {
                let before = b.loads();
                b.user(1, 7).await;
                b.loads() == before + 1
            },
        )
        .await;
    };
    stopped.await;
    server.resume();
    wait_until("b resubscribes", Duration::from_secs(10), async || {
        b.cache.listening()
    })
    .await;
}

/// The tier answers only within its grace of the last proof that its
/// subscriber hears everything (a message, or an answered ping), not of
/// the moment a lost link is noticed: here a frozen server is noticed only
/// after a 2 s ping timeout, and the tier must stop within 300 ms (plus
/// scheduling slack) of the freeze. `health()` says so.
#[tokio::test]
async fn a_silent_link_stops_the_tier_within_its_grace() {
    let server = RedisServer::start();
    let table = Arc::new(Table::default());
    table.set(1, "ada");
    let grace = Duration::from_millis(300);
    let a = instance(&server.url(), &table, |b| {
        b.local_grace(grace).timeout(Duration::from_secs(2))
    })
    .await;
    a.user(1, 7).await;
    assert!(a.cache.in_local_tier("user:1"));
    let health = a.cache.health();
    assert_eq!(
        (
            health.store,
            health.listening,
            health.tier_serving,
            health.outbox,
            health.breaker
        ),
        ("redis", true, Some(true), 0, BreakerState::Closed)
    );
    assert!(
        health.last_heard_ms.is_some_and(|ms| ms < 1_000),
        "{health:?}"
    );

    server.pause();
    let frozen = Instant::now();
    wait_until(
        "the tier stops answering",
        grace + Duration::from_millis(200),
        async || !a.cache.in_local_tier("user:1"),
    )
    .await;
    let health = a.cache.health();
    assert_eq!(health.tier_serving, Some(false));
    assert!(
        health.listening,
        "stopped {:?} after the freeze, before the lost link was even noticed",
        frozen.elapsed()
    );
    server.resume();
    wait_until(
        "the tier answers again",
        Duration::from_secs(10),
        async || {
            a.user(1, 7).await;
            a.cache.in_local_tier("user:1")
        },
    )
    .await;
}

/// Coherence messages lost while the link stays up (between the nodes of a
/// cluster) are noticed from the sequence numbers, and the tier is cleared:
/// a message whose number skips one, and the namespace's number moving on
/// with no message heard (an invalidation whose message was lost; the
/// watch reads the number every second).
#[tokio::test]
async fn lost_coherence_messages_clear_the_tier() {
    let server = RedisServer::start();
    let table = Arc::new(Table::default());
    table.set(1, "ada");
    let a = instance(&server.url(), &table, |b| b).await;
    let b = instance(&server.url(), &table, |b| b).await;
    a.user(1, 7).await;
    assert!(a.cache.in_local_tier("user:1"));
    b.cache.invalidate().key("other").await.unwrap();
    wait_until("a hears b", Duration::from_secs(5), async || {
        a.cache.stats().coherence_applied == 1
    })
    .await;
    let mut conn = server.conn();
    let seq: u64 = redis::cmd("GET").arg("tiers#seq").query(&mut conn).unwrap();
    let skipped = format!(r#"{{"i":"elsewhere","k":[],"s":"{}"}}"#, seq + 2);
    let _: i64 = redis::cmd("PUBLISH")
        .arg("tiers#inv")
        .arg(skipped)
        .query(&mut conn)
        .unwrap();
    wait_until(
        "a skipped number clears the tier",
        Duration::from_secs(5),
        async || !a.cache.in_local_tier("user:1"),
    )
    .await;
    assert_eq!(a.cache.stats().coherence_gaps, 1);

    a.user(1, 7).await;
    assert!(a.cache.in_local_tier("user:1"));
    let _: u64 = redis::cmd("INCRBY")
        .arg("tiers#seq")
        .arg(3)
        .query(&mut conn)
        .unwrap();
    wait_until(
        "the watch notices a number it never heard",
        Duration::from_secs(5),
        async || !a.cache.in_local_tier("user:1"),
    )
    .await;
    assert_eq!(a.cache.stats().coherence_gaps, 2);
}

/// Polls `fut` once, with a waker that does nothing (the caller polls
/// again itself); whether it finished.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(fut).poll(&mut cx).is_ready()
}

/// An invalidation (by key, tag, pattern, or with a put) whose caller
/// gives up at an await point after it ran on Redis, before its reply was
/// read: the instance's own tier must not keep what Redis no longer holds.
/// (Before, its echo was kept for a reply that never came, and the tier
/// served the old value until `local_ttl`.)
#[tokio::test]
async fn an_invalidation_given_up_at_an_await_leaves_the_own_tier_correct() {
    let server = RedisServer::start();
    let table = Arc::new(Table::default());
    let a = instance(&server.url(), &table, |b| b).await;
    a.cache.invalidate().key("warm").await.unwrap(); // load the script
    let mut conn = server.conn();
    let put = CacheOptions::new("put");
    for op in ["key", "tag", "pattern", "put"] {
        table.set(1, &format!("before {op}"));
        a.cache.invalidate().key("user:1").await.unwrap();
        a.user(1, 7).await;
        assert!(a.cache.in_local_tier("user:1"), "{op}");
        let stored: Option<Vec<u8>> = redis::cmd("GET")
            .arg("tiers:user:1")
            .query(&mut conn)
            .unwrap();
        let now = format!("after {op}");
        table.set(1, &now);
        let change = match op {
            "key" => a.cache.invalidate().key("user:1"),
            "tag" => a.cache.invalidate().tag("team:7"),
            "pattern" => a.cache.invalidate().pattern("user:*"),
            _ => a.cache.invalidate().put("user:1", &now, &put, Links::new()),
        };
        let mut change = change.into_future();
        // Poll, then give the request time to run without polling again:
        // once Redis has changed, the reply is there but unread.
        let mut ran = false;
        for _ in 0..20 {
            if poll_once(&mut change) {
                break;
            }
            let waited = Instant::now();
            while !ran && waited.elapsed() < Duration::from_millis(200) {
                let held: Option<Vec<u8>> = redis::cmd("GET")
                    .arg("tiers:user:1")
                    .query(&mut conn)
                    .unwrap();
                ran = held != stored;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if ran {
                break;
            }
        }
        assert!(ran, "{op}: it ran on Redis before its caller gave up");
        drop(change);
        wait_until(
            &format!("{op}: the own tier lets go"),
            Duration::from_secs(3),
            async || !a.cache.in_local_tier("user:1"),
        )
        .await;
        assert_eq!(a.user(1, 7).await, now, "{op}");
    }
}

/// Events published by another service (as `redis-cli PUBLISH` would) are
/// applied once for all instances; malformed ones are counted and ignored.
#[tokio::test]
async fn events_from_other_services_invalidate_and_bad_ones_are_ignored() {
    let server = RedisServer::start();
    let table = Arc::new(Table::default());
    table.set(1, "one");
    table.set(2, "two");
    let a = instance(&server.url(), &table, |b| b).await;
    let b = instance(&server.url(), &table, |b| b).await;
    for instance in [&a, &b] {
        instance.user(1, 7).await;
        instance.user(2, 8).await;
    }
    let mut conn = server.conn();
    let publish = |conn: &mut redis::Connection, channel: &str, payload: &str| {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query(conn)
            .unwrap();
    };
    publish(&mut conn, "tiers:user:updated", "not json");
    publish(&mut conn, "tiers:user:updated", r#"{"v":1}"#);
    publish(
        &mut conn,
        "tiers:user:updated",
        r#"{"v":9,"namespace":"tiers","event":"x"}"#,
    );
    wait_until(
        "both reject the three bad events",
        Duration::from_secs(5),
        async || a.cache.stats().events_rejected == 3 && b.cache.stats().events_rejected == 3,
    )
    .await;

    table.set(1, "one, renamed");
    table.set(2, "two, renamed");
    publish(
        &mut conn,
        "tiers:user:updated",
        r#"{"v":1,"namespace":"tiers","event":"user:updated","keys":["user:1"],"tags":["team:8"],"instance":"billing-service","id":"billing-1"}"#,
    );
    for instance in [&a, &b] {
        wait_until(
            "the event reaches the instance",
            Duration::from_secs(5),
            async || {
                instance.user(1, 7).await == "one, renamed"
                    && instance.user(2, 8).await == "two, renamed"
            },
        )
        .await;
    }
    assert_eq!(
        a.cache.stats().events_applied + b.cache.stats().events_applied,
        1,
        "an event with an id is applied to Redis once for all instances"
    );
    // Our own events (`applied: true`) are not applied again.
    a.cache
        .invalidate()
        .key("user:1")
        .publish("user:updated")
        .await
        .unwrap();
    b.cache.invalidate().key("sync").await.unwrap();
    wait_until("a hears b", Duration::from_secs(5), async || {
        a.cache.stats().coherence_applied >= 1
    })
    .await;
    assert_eq!(
        a.cache.stats().events_applied + b.cache.stats().events_applied,
        1
    );
}

/// Another service sends the same event (no id) for two writes: each is
/// applied, by every instance. An event with an id is applied once for all
/// instances, and a second delivery of that id is skipped. (Before, any two
/// identical events within 60 s counted as one: the second write's
/// invalidation was lost.)
#[tokio::test]
async fn a_repeated_event_applies_each_time_unless_its_id_was_seen() {
    let server = RedisServer::start();
    let table = Arc::new(Table::default());
    let a = instance(&server.url(), &table, |b| b).await;
    let b = instance(&server.url(), &table, |b| b).await;
    let mut conn = server.conn();
    let mut publish = |payload: &str| {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("tiers:user:updated")
            .arg(payload)
            .query(&mut conn)
            .unwrap();
    };
    let applied = || a.cache.stats().events_applied + b.cache.stats().events_applied;
    let both_serve = async |value: &str| {
        for instance in [&a, &b] {
            wait_until(
                &format!("the instance serves {value:?}"),
                Duration::from_secs(5),
                async || instance.user(1, 7).await == value,
            )
            .await;
        }
    };
    let same = r#"{"v":1,"namespace":"tiers","event":"user:updated","keys":["user:1"]}"#;
    for (n, value) in ["first", "second"].into_iter().enumerate() {
        table.set(1, value);
        publish(same);
        both_serve(value).await;
        assert_eq!(applied(), 2 * (n as u64 + 1), "applied by both instances");
    }

    let with_id =
        r#"{"v":1,"namespace":"tiers","event":"user:updated","keys":["user:1"],"id":"billing-7"}"#;
    table.set(1, "third");
    publish(with_id);
    both_serve("third").await;
    assert_eq!(applied(), 5, "an event with an id is applied once");
    // The same delivery again (a producer's retry), then an event each
    // instance applies: once that one is applied, the repeat was seen.
    table.set(1, "fourth");
    publish(with_id);
    publish(r#"{"v":1,"namespace":"tiers","event":"user:updated","keys":["sync"]}"#);
    wait_until(
        "both apply the last event",
        Duration::from_secs(5),
        async || applied() == 7,
    )
    .await;
    assert_eq!(a.user(1, 7).await, "third", "the repeated id was skipped");
    assert_eq!(b.user(1, 7).await, "third");
}

/// A burst of events from other services is applied by one task at a time
/// per cache, in batches: it does not start a task per event (before, 2,000
/// events started up to 2,000 tasks, each waiting on its own round trip).
#[tokio::test]
async fn a_burst_of_events_does_not_start_a_task_each() {
    let server = RedisServer::start();
    let table = Arc::new(Table::default());
    let a = instance(&server.url(), &table, |b| b).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let mut pipe = redis::pipe();
    for i in 0..2_000 {
        pipe.cmd("PUBLISH").arg("tiers:user:updated").arg(format!(
            r#"{{"v":1,"namespace":"tiers","event":"user:updated","keys":["user:{i}"]}}"#
        ));
    }
    let _: () = pipe.query(&mut server.conn()).unwrap();
    let mut most = before;
    wait_until(
        "every event is applied",
        Duration::from_secs(20),
        async || {
            most = most.max(metrics.num_alive_tasks());
            a.cache.stats().events_applied == 2_000
        },
    )
    .await;
    assert!(
        most <= before + 2,
        "{most} tasks alive while applying, {before} before"
    );
}

/// An invalidation whose reply is lost (a timeout) may still run on Redis:
/// its echo, naming what it removed, is then applied to the instance's own
/// tier instead of being ignored.
#[tokio::test]
async fn an_invalidation_whose_reply_was_lost_still_reaches_the_own_tier() {
    let server = RedisServer::start();
    let table = Arc::new(Table::default());
    table.set(1, "old");
    let a = instance(&server.url(), &table, |b| {
        b.timeout(Duration::from_millis(150))
    })
    .await;
    // Warm up the invalidation script.
    a.cache.invalidate().key("warm").await.unwrap();
    a.user(1, 7).await;
    assert!(a.cache.in_local_tier("user:1"));
    // Writes wait 500 ms on the server: the invalidation times out here,
    // then runs.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(500)
        .arg("WRITE")
        .query(&mut server.conn())
        .unwrap();
    table.set(1, "new");
    assert!(a.cache.invalidate().tag("team:7").await.is_err());
    wait_until(
        "the echo drops the entry",
        Duration::from_secs(5),
        async || !a.cache.in_local_tier("user:1"),
    )
    .await;
    assert_eq!(a.user(1, 7).await, "new");
}

/// Pattern deletes reach other tiers even for entries Redis no longer has.
#[tokio::test]
async fn a_pattern_reaches_tiers_for_entries_gone_from_redis() {
    let server = RedisServer::start();
    let table = Arc::new(Table::default());
    table.set(1, "old");
    let a = instance(&server.url(), &table, |b| b).await;
    let b = instance(&server.url(), &table, |b| b).await;
    b.user(1, 7).await;
    assert!(b.cache.in_local_tier("user:1"));
    // Redis evicted it (simulated): SCAN cannot find it.
    let _: i64 = redis::cmd("DEL")
        .arg("tiers:user:1")
        .query(&mut server.conn())
        .unwrap();
    table.set(1, "new");
    a.cache.invalidate().pattern("user:*").await.unwrap();
    wait_until("b drops its copy", Duration::from_secs(5), async || {
        !b.cache.in_local_tier("user:1")
    })
    .await;
    assert_eq!(b.user(1, 7).await, "new");
}

/// A cache whose subscriber task ended with its runtime stops trusting its
/// tier (it can no longer hear invalidations).
#[test]
fn a_subscriber_that_died_with_its_runtime_stops_the_tier() {
    let server = RedisServer::start();
    let table = Arc::new(Table::default());
    table.set(1, "old");
    let first = tokio::runtime::Runtime::new().unwrap();
    let a = first.block_on(async {
        let a = instance(&server.url(), &table, |b| {
            b.local_grace(Duration::from_millis(1))
        })
        .await;
        a.user(1, 7).await;
        a
    });
    drop(first); // the subscriber task ends here
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        assert!(!a.cache.listening());
        tokio::time::sleep(Duration::from_millis(5)).await; // past the 1 ms grace
        assert!(!a.cache.in_local_tier("user:1"), "not trusted any more");
    });
}
