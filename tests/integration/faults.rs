//! Redis stopped, unreachable or frozen: cached functions return the body's
//! value, invalidating functions return the body's `Ok`, every call is
//! bounded by the timeout, and the cache is used again once Redis is back.

use std::time::{Duration, Instant};

use cache_runtime::Cache;
use integration_tests::{RedisServer, closed_port, wait_until};

use crate::common::{Post, Repo};

fn cache_at(url: String, timeout: Duration) -> Cache {
    Cache::builder()
        .redis_url(url)
        .namespace("faults")
        .timeout(timeout)
        .build()
        .unwrap()
}

/// Waits (with a deadline) until reads are answered from Redis again.
async fn serves_hits_again(repo: &Repo) {
    wait_until(
        "the cache serves hits again",
        Duration::from_secs(10),
        async || {
            let hits = repo.cache.stats().hits;
            repo.get(3).await.unwrap();
            repo.cache.stats().hits > hits
        },
    )
    .await;
}

/// Starts a read of `key` whose loader reads `row` (the database) and then
/// waits for the sender before returning it; returns once it has read (its
/// fill token was read before).
async fn read_held_open(
    cache: &Cache,
    key: &'static str,
    row: &std::sync::Arc<std::sync::Mutex<&'static str>>,
) -> (
    tokio::task::JoinHandle<Result<String, ()>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (loaded, has_loaded) = tokio::sync::oneshot::channel();
    let (go, may_fill) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn({
        let (cache, row) = (cache.clone(), row.clone());
        async move {
            let options = cache_runtime::CacheOptions::new("row");
            cache
                .get_or_load::<String, (), _, _>(key, &options, || async move {
                    let value = *row.lock().unwrap();
                    loaded.send(()).unwrap();
                    may_fill.await.unwrap();
                    Ok(value.to_owned())
                })
                .await
        }
    });
    has_loaded.await.unwrap();
    (reader, go)
}

#[tokio::test]
async fn a_stopped_server_degrades_to_the_body_and_recovers() {
    let mut server = RedisServer::start();
    let repo = Repo::new(cache_at(server.url(), Duration::from_millis(300)));
    repo.get(1).await.unwrap();
    repo.get(1).await.unwrap();
    assert_eq!(repo.loads(), 1);

    server.kill();
    for _ in 0..3 {
        assert_eq!(repo.get(1).await.unwrap().title, "post 1");
    }
    assert_eq!(
        repo.loads(),
        4,
        "every read ran the body while Redis was down"
    );
    assert_eq!(
        repo.update(Post {
            id: 2,
            author_id: 7,
            title: "x".into()
        })
        .await,
        Ok(()),
        "the write's Ok stands"
    );
    assert!(repo.cache.stats().store_errors >= 4);

    server.restart();
    serves_hits_again(&repo).await;
}

/// `reads` concurrent reads of a warm entry, each on a task of its own: how
/// many were hits, and how many store errors they saw.
async fn concurrent_hits(repo: &std::sync::Arc<Repo>, reads: usize) -> (u64, u64) {
    let before = repo.cache.stats();
    let tasks: Vec<_> = (0..reads)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move { repo.get(1).await.unwrap() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().id, 1);
    }
    let after = repo.cache.stats();
    (
        after.hits - before.hits,
        after.store_errors - before.store_errors,
    )
}

/// A hit borrows a spare clone of the connection and gives it back; once
/// the connection is killed and a new one is up, no read takes a clone of
/// the dead one (kept by either worker thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_is_not_used_once_a_new_one_is_up() {
    let server = RedisServer::start();
    let repo = std::sync::Arc::new(Repo::new(cache_at(server.url(), Duration::from_secs(2))));
    repo.get(1).await.unwrap();
    for _ in 0..4 {
        concurrent_hits(&repo, 32).await;
    }
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query(&mut server.conn())
        .unwrap();
    assert!(killed >= 1, "the cache's connection was killed");
    serves_hits_again(&repo).await;
    for round in 0..8 {
        assert_eq!(
            concurrent_hits(&repo, 32).await,
            (32, 0),
            "round {round}: every read a hit, on the new connection"
        );
    }
}

#[tokio::test]
async fn an_unreachable_server_never_fails_a_call() {
    let repo = Repo::new(cache_at(
        format!("redis://127.0.0.1:{}/", closed_port()),
        Duration::from_millis(200),
    ));
    for id in 1..=3 {
        assert_eq!(repo.get(id).await.unwrap().id, id);
    }
    assert_eq!(repo.find(404).await, None);
    assert_eq!(
        repo.update(Post {
            id: 1,
            author_id: 7,
            title: "x".into()
        })
        .await,
        Ok(())
    );
    assert_eq!(repo.loads(), 4);
    assert!(repo.cache.stats().store_errors >= 5);
}

#[tokio::test]
async fn a_frozen_server_costs_at_most_the_timeout() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(200);
    let repo = Repo::new(cache_at(server.url(), timeout));
    repo.get(1).await.unwrap();
    server.pause();
    // The bound is generous against a loaded machine; what it rules out is
    // waiting on the frozen server (which would be forever).
    let bound = timeout * 10;
    let started = Instant::now();
    assert_eq!(repo.get(2).await.unwrap().id, 2);
    assert!(
        started.elapsed() < bound,
        "a read waited {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert_eq!(
        repo.update(Post {
            id: 1,
            author_id: 7,
            title: "x".into()
        })
        .await,
        Ok(())
    );
    assert!(
        started.elapsed() < bound,
        "an invalidation waited {:?}",
        started.elapsed()
    );
    server.resume();
    serves_hits_again(&repo).await;
}

/// A hit's `GET` on a connection that is up is not timed by the cache: the
/// connection's own response timeout (the cache's `timeout`) bounds it. On a
/// frozen server, the read still gives up after about the timeout, falls
/// back to the loader, and counts the fault; once the server answers again
/// the same connection serves hits.
#[tokio::test]
async fn a_read_on_a_connection_that_is_up_gives_up_after_the_timeout() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(300);
    let repo = Repo::new(cache_at(server.url(), timeout));
    repo.get(1).await.unwrap();
    assert_eq!(repo.get(1).await.unwrap().id, 1);
    assert_eq!(repo.loads(), 1, "the connection is up and the entry cached");
    server.pause();
    let started = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(10), repo.get(1))
        .await
        .expect("a read on a frozen server must not wait for it");
    let took = started.elapsed();
    server.resume();
    assert_eq!(read.unwrap().id, 1);
    assert_eq!(repo.loads(), 2, "the read fell back to the loader");
    assert!(repo.cache.stats().store_errors >= 1);
    // It waited on the server (this is the bounded path, not a refusal)...
    assert!(
        took >= timeout - Duration::from_millis(50),
        "gave up after {took:?}"
    );
    // ...and no longer than the timeout, give or take a loaded machine.
    assert!(took < timeout * 5 / 2, "a read waited {took:?}");
    serves_hits_again(&repo).await;
}

/// A write during a network cut: its invalidation fails, is kept in the
/// outbox, and is applied once Redis is reachable again, before anything is
/// served from the old data Redis still holds. Both on the instance that
/// wrote (at once) and on another instance (once the outbox drained).
#[tokio::test]
async fn an_invalidation_lost_to_a_network_cut_is_applied_when_redis_returns() {
    let server = RedisServer::start();
    let proxy = integration_tests::CountingProxy::start(server.port()).await;
    let writer = Repo::new(cache_at(proxy.url(), Duration::from_millis(200)));
    let other = Repo::new(cache_at(server.url(), Duration::from_millis(200)));
    assert_eq!(writer.get(1).await.unwrap().title, "post 1");
    assert_eq!(
        other.get(1).await.unwrap().title,
        "post 1",
        "cached in Redis"
    );

    proxy.sever();
    let updated = Post {
        id: 1,
        author_id: 7,
        title: "written during the cut".into(),
    };
    assert_eq!(
        writer.update(updated.clone()).await,
        Ok(()),
        "the write's Ok stands"
    );
    assert_eq!(
        writer.cache.stats().outbox_kept,
        1,
        "the failed invalidation is kept"
    );
    // While it is pending, the writer does not serve what Redis may hold.
    assert_eq!(writer.get(1).await.unwrap().title, updated.title);

    proxy.restore(); // Redis is back, with the old entry still in it
    assert_eq!(
        writer.get(1).await.unwrap().title,
        updated.title,
        "the writer's first read after the cut is fresh"
    );
    wait_until("the outbox drains", Duration::from_secs(5), async || {
        writer.cache.stats().outbox_retried == 1
    })
    .await;
    // The other instance read from the same Redis: the old entry is gone.
    other.rows.lock().unwrap().insert(1, updated.clone());
    assert_eq!(other.get(1).await.unwrap().title, updated.title);
    assert_eq!(writer.cache.stats().outbox_dropped, 0);
}

/// While an invalidation waits in the outbox, a read runs its loader without
/// the cache and makes no store call: retrying is the background task's,
/// whatever it costs (a pattern is a whole `SCAN` loop). Before, a read
/// retried a batch itself, and a kept pattern held it for every `SCAN` step.
#[tokio::test]
async fn a_read_makes_no_store_call_for_the_outbox() {
    let server = RedisServer::start();
    let proxy = integration_tests::CountingProxy::start(server.port()).await;
    let cache = Cache::builder()
        .redis_url(proxy.url())
        .namespace("outbox-read")
        .timeout(Duration::from_millis(200))
        .apply_events(false)
        .build()
        .unwrap();
    let repo = Repo::new(cache);
    for page in 0..50 {
        repo.search("rust", page).await;
    }
    // The background task stops just before it retries.
    let retry = cache_runtime::__private::hooks::hold("outbox.retry", "outbox-read");
    proxy.sever();
    assert_eq!(repo.forget_search("rust").await, Ok(()));
    assert_eq!(repo.cache.stats().outbox_kept, 1, "the pattern is kept");
    proxy.restore();
    retry.reached(1).await;

    let (before, loads) = (proxy.requests(), repo.loads());
    assert_eq!(repo.search("rust", 7).await, vec![7, 4]);
    assert_eq!(repo.loads(), loads + 1, "the loader ran, without the cache");
    assert_eq!(proxy.requests(), before, "the read made no store call");

    retry.release();
    wait_until(
        "the task applies the pattern",
        Duration::from_secs(5),
        async || repo.cache.stats().outbox_retried == 1,
    )
    .await;
    let loads = repo.loads();
    repo.search("rust", 8).await;
    repo.search("rust", 8).await;
    assert_eq!(repo.loads(), loads + 1, "the cache is used again");
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("outbox-read:*")
        .query(&mut server.conn())
        .unwrap();
    assert_eq!(left.len(), 1, "only the entry read since remains: {left:?}");
}

/// A write-through put during a network cut: marking its key fails, so the
/// key is kept in the outbox, and once Redis is reachable again the old
/// entry Redis still holds is removed before anyone is served from it.
#[tokio::test]
async fn a_put_lost_to_a_network_cut_leaves_no_stale_entry() {
    let server = RedisServer::start();
    let proxy = integration_tests::CountingProxy::start(server.port()).await;
    let writer = Repo::new(cache_at(proxy.url(), Duration::from_millis(200)));
    let other = Repo::new(cache_at(server.url(), Duration::from_millis(200)));
    writer.get(1).await.unwrap();
    assert_eq!(other.get(1).await.unwrap().title, "post 1");
    assert_eq!(other.loads(), 0, "cached in Redis");

    proxy.sever();
    let updated = Post {
        id: 1,
        author_id: 7,
        title: "put during the cut".into(),
    };
    assert_eq!(
        writer.save(updated.clone()).await,
        Ok(updated.clone()),
        "the write's Ok stands"
    );
    assert_eq!(
        writer.cache.stats().outbox_kept,
        1,
        "the put's key is kept for invalidation"
    );
    proxy.restore();
    wait_until("the outbox drains", Duration::from_secs(5), async || {
        writer.cache.stats().outbox_retried == 1
    })
    .await;
    other.rows.lock().unwrap().insert(1, updated.clone());
    assert_eq!(other.get(1).await.unwrap().title, updated.title);
    assert_eq!(writer.get(1).await.unwrap().title, updated.title);
}

/// A function that changes two caches, whose caller gives up while the
/// first cache's change waits on a frozen server: the second cache's change
/// is still applied (the changes run on a task of their own).
#[tokio::test]
async fn a_caller_that_gives_up_does_not_cancel_a_second_cache_s_change() {
    use cache_runtime::invalidates;
    struct TwoCaches {
        slow: Cache,
        local: Cache,
    }
    impl TwoCaches {
        #[invalidates(cache = self.slow, keys = ["a"])]
        #[invalidates(cache = self.local, keys = ["b"])]
        async fn write(&self) -> Result<(), String> {
            Ok(())
        }
    }
    let server = RedisServer::start();
    let two = TwoCaches {
        slow: cache_at(server.url(), Duration::from_millis(300)),
        local: Cache::in_memory(),
    };
    let options = cache_runtime::CacheOptions::new("b");
    two.local
        .put("b", &1, &options, cache_runtime::Links::new())
        .await
        .unwrap();
    two.slow.invalidate().key("warm-up").await.unwrap();
    server.pause();
    let gave_up = tokio::time::timeout(Duration::from_millis(50), two.write()).await;
    assert!(
        gave_up.is_err(),
        "the caller gave up during the first change"
    );
    wait_until(
        "the second cache's change is applied",
        Duration::from_secs(5),
        async || two.local.get::<i32>("b").await.is_none(),
    )
    .await;
    server.resume();
}

/// A frozen server: after a few calls pay the timeout, the circuit breaker
/// opens and calls stop waiting (they fail over to the body at once); once
/// the server answers again, a probe closes it and hits come back.
#[tokio::test]
async fn the_breaker_stops_paying_the_timeout_and_recovers() {
    let server = RedisServer::start();
    let repo = Repo::new(cache_at(server.url(), Duration::from_millis(100)));
    repo.get(3).await.unwrap();
    server.pause();
    for _ in 0..40 {
        assert_eq!(repo.get(1).await.unwrap().title, "post 1");
    }
    let stats = repo.cache.stats();
    assert!(stats.breaker_trips >= 1, "{stats:?}");
    assert!(
        stats.breaker_skipped >= 30,
        "most calls did not wait on the frozen server: {stats:?}"
    );
    server.resume();
    serves_hits_again(&repo).await;
}

/// Many invalidations kept during a network cut, and many readers once it
/// ends: each read retries the outbox first, concurrently with the others
/// and the background task. Every kept invalidation is applied (none is
/// taken off the outbox by a caller that did not apply it), so another
/// instance reads no entry a write should have removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_after_a_cut_apply_every_kept_invalidation() {
    const POSTS: u64 = 64;
    let post = |id: u64, title: &str| Post {
        id,
        author_id: 1000 + id, // a tag of its own: no invalidation covers another's
        title: title.into(),
    };
    let server = RedisServer::start();
    let proxy = integration_tests::CountingProxy::start(server.port()).await;
    let writer = std::sync::Arc::new(Repo::new(cache_at(proxy.url(), Duration::from_millis(200))));
    writer
        .rows
        .lock()
        .unwrap()
        .extend((1..=POSTS).map(|id| (id, post(id, "old"))));
    for id in 1..=POSTS {
        writer.get(id).await.unwrap();
    }

    proxy.sever();
    for id in 1..=POSTS {
        assert_eq!(writer.update(post(id, "new")).await, Ok(()));
    }
    assert_eq!(writer.cache.stats().outbox_kept, POSTS);
    proxy.restore();
    // Readers until the writer serves hits again (its outbox is empty).
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let writer = writer.clone();
            tokio::spawn(async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while writer.cache.stats().hits == 0 {
                    assert!(std::time::Instant::now() < deadline, "no hits again");
                    let id = fastrand::u64(1..=POSTS);
                    assert_eq!(writer.get(id).await.unwrap().title, "new");
                    // This body never waits: let the runtime's other tasks run.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for reader in readers {
        reader.await.unwrap();
    }
    let stats = writer.cache.stats();
    assert_eq!(
        (stats.outbox_retried, stats.outbox_dropped),
        (POSTS, 0),
        "each kept invalidation applied and taken off once: {stats:?}"
    );
    let other = Repo::new(cache_at(server.url(), Duration::from_millis(200)));
    other
        .rows
        .lock()
        .unwrap()
        .extend((1..=POSTS).map(|id| (id, post(id, "new"))));
    let mut stale = Vec::new();
    for id in 1..=POSTS {
        if other.get(id).await.unwrap().title != "new" {
            stale.push(id);
        }
    }
    assert!(stale.is_empty(), "Redis still held the old posts {stale:?}");
}

/// A read that looked Redis up before a restart and fills after it. The
/// restarted server lost the markers of the invalidations made before, and
/// its sequence number starts again from zero: the read's fill token, from
/// the old server, must not let it store a value it loaded before a write
/// that was invalidated in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_that_read_before_a_restart_is_refused_after_it() {
    // The old server's sequence number is past zero.
    fill_across_a_restart(3).await;
}

/// The same, on a server that had no sequence number yet when the reader
/// read its token: reading it creates one (with an epoch), so the fill is
/// still refused by the successor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_that_read_before_the_first_number_is_refused_after_a_restart() {
    fill_across_a_restart(0).await;
}

async fn fill_across_a_restart(invalidations_before: usize) {
    use std::sync::{Arc, Mutex};
    let mut server = RedisServer::start();
    let cache = cache_at(server.url(), Duration::from_millis(300));
    for _ in 0..invalidations_before {
        cache.invalidate().key("other").await.unwrap();
    }
    let row = Arc::new(Mutex::new("old"));
    // Looked up on the old server, loaded "old".
    let (reader, go) = read_held_open(&cache, "row:1", &row).await;
    *row.lock().unwrap() = "new";
    cache.invalidate().key("row:1").await.unwrap();
    server.restart();
    wait_until(
        "the cache reaches the new server",
        Duration::from_secs(10),
        async || cache.invalidate().key("other").await.is_ok(),
    )
    .await;
    go.send(()).unwrap();
    assert_eq!(
        reader.await.unwrap().unwrap(),
        "old",
        "its caller gets what it loaded"
    );
    let other = cache_at(server.url(), Duration::from_millis(300));
    assert_ne!(
        other.get::<String>("row:1").await.as_deref(),
        Some("old"),
        "a value loaded before the write was stored after its invalidation"
    );
}

/// Redis restarts from a snapshot taken before an invalidation (a crash of
/// a server with RDB or AOF persistence, or a failover to a replica that is
/// behind): the sequence number comes back with its old count, the markers
/// written since are gone, and the snapshot holds the entry the write had
/// invalidated. The load that read its token before the write is refused,
/// and the entry brought back is not served: the server is another process,
/// so the epoch is new. (Before, the epoch changed only when the number was
/// missing: the old load was stored, and the old entry served.)
#[tokio::test]
async fn a_restart_from_a_snapshot_brings_back_nothing_a_write_invalidated() {
    use std::sync::{Arc, Mutex};
    let mut server = RedisServer::start();
    let cache = cache_at(server.url(), Duration::from_millis(300));
    let options = cache_runtime::CacheOptions::new("row");
    let row = Arc::new(Mutex::new("old"));
    let read = |cache: &Cache, key: &'static str| {
        let (cache, row, options) = (cache.clone(), row.clone(), options);
        async move {
            cache
                .get_or_load::<String, (), _, _>(key, &options, || async move {
                    Ok(row.lock().unwrap().to_string())
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(
        read(&cache, "cached:1").await,
        "old",
        "cached before the snapshot"
    );
    // Read its token, loaded "old".
    let (reader, go) = read_held_open(&cache, "row:1", &row).await;
    server.save();
    *row.lock().unwrap() = "new";
    cache
        .invalidate()
        .keys(["row:1", "cached:1"])
        .await
        .unwrap();
    server.restart(); // from the snapshot: before the invalidation
    let restored: Option<Vec<u8>> = redis::cmd("GET")
        .arg("faults:cached:1")
        .query(&mut server.conn())
        .unwrap();
    assert!(
        restored.is_some(),
        "the snapshot brought the old entry back"
    );
    wait_until(
        "the cache reaches the restarted server",
        Duration::from_secs(10),
        async || cache.invalidate().key("other").await.is_ok(),
    )
    .await;
    go.send(()).unwrap();
    assert_eq!(
        reader.await.unwrap().unwrap(),
        "old",
        "its caller gets what it loaded"
    );

    let fresh = cache_at(server.url(), Duration::from_millis(300));
    assert_ne!(
        fresh.get::<String>("row:1").await.as_deref(),
        Some("old"),
        "a value loaded before the write was stored after its invalidation"
    );
    for (who, instance) in [("the writer", &cache), ("another instance", &fresh)] {
        assert_eq!(
            read(instance, "cached:1").await,
            "new",
            "{who} served the entry the snapshot brought back"
        );
    }
}

/// A fill that leaves in time but is held on the wire (here: in the socket
/// of a frozen server) until after the markers it must check expired: the
/// server's own clock says the fill window passed since the token was read,
/// and it is refused. (Before, the window was checked on the client's
/// clock, before sending: the fill landed after its marker expired, and
/// stored a value older than the invalidation.)
#[tokio::test]
async fn a_fill_held_on_the_wire_past_its_window_is_refused() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(100);
    let window = Duration::from_millis(300);
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("wire")
        .timeout(timeout)
        .fill_window(window)
        .apply_events(false)
        .build()
        .unwrap();
    let options = cache_runtime::CacheOptions::new("row");
    // Load the scripts: a fill frozen in the socket must not come back as
    // NOSCRIPT with nobody left to retry it.
    let _: Result<String, ()> = cache
        .get_or_load("warm", &options, || async { Ok("warm".into()) })
        .await;
    let row = std::sync::Arc::new(std::sync::Mutex::new("old"));
    let (reader, go) = read_held_open(&cache, "row:1", &row).await;
    cache.invalidate().key("row:1").await.unwrap();
    server.pause();
    go.send(()).unwrap(); // the fill leaves at once, well inside the window
    assert_eq!(reader.await.unwrap().unwrap(), "old");
    // The delay on the wire: longer than the marker lives (the window plus
    // two timeouts).
    tokio::time::sleep(window + timeout * 2 + Duration::from_millis(200)).await;
    server.resume();
    // Read on the same connection, after the fill.
    assert_eq!(
        cache.get::<String>("row:1").await,
        None,
        "the fill landed after its marker expired"
    );
    assert_eq!(cache.stats().fills, 1, "only the warm-up was stored");
}

/// Callers that give up (a timeout of their own around the call, shorter
/// than the cache's) while Redis is frozen: the breaker's probe is among the
/// calls cancelled. It counts as a failed probe, so the breaker probes again
/// later, and hits come back once Redis answers (instead of the breaker
/// waiting forever for the cancelled probe's outcome).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_probe_does_not_keep_the_breaker_open() {
    let server = RedisServer::start();
    let repo = Repo::new(cache_at(server.url(), Duration::from_millis(100)));
    repo.get(3).await.unwrap();
    server.pause();
    for _ in 0..10 {
        repo.get(1).await.unwrap(); // the first ones time out: it opens
    }
    // Past two cool-downs (500 ms each) of callers giving up after 20 ms: a
    // probe is cancelled. Holding the fault for a while is the point here.
    let until = std::time::Instant::now() + Duration::from_millis(1200);
    while std::time::Instant::now() < until {
        let _ = tokio::time::timeout(Duration::from_millis(20), repo.get(1)).await;
    }
    let stats = repo.cache.stats();
    assert!(stats.breaker_trips >= 1, "{stats:?}");
    server.resume();
    serves_hits_again(&repo).await;
}
