//! Properties only Redis has: round trips, pub/sub, SCAN, foreign bytes, and
//! invalidations too big for one call. (Namespaces sharing one server:
//! `security.rs`.)

use std::time::Duration;

use cache_runtime::{Cache, InvalidationEvent, Links};
use integration_tests::{CountingProxy, RedisServer, closed_port, wait_until};

use crate::common::{Post, Repo};

#[tokio::test]
async fn a_hit_is_one_round_trip_a_miss_three_an_invalidation_one() {
    let server = RedisServer::start();
    let proxy = CountingProxy::start(server.port()).await;
    let cache = Cache::builder()
        .redis_url(proxy.url())
        .namespace("rt")
        .build()
        .unwrap();
    let repo = Repo::new(cache.clone());
    // Warm up: the connection handshake and loading the scripts.
    repo.get(2).await.unwrap();
    repo.update(Post {
        id: 2,
        author_id: 7,
        title: "x".into(),
    })
    .await
    .unwrap();
    repo.get(2).await.unwrap();

    let before = proxy.requests();
    repo.get(1).await.unwrap();
    assert_eq!(
        proxy.requests() - before,
        3,
        "a miss is the lookup, the fill token (read before the loader) and the fill"
    );

    let before = proxy.requests();
    repo.get(1).await.unwrap();
    assert_eq!(proxy.requests() - before, 1, "a hit is one round trip");

    let before = proxy.requests();
    cache
        .invalidate()
        .keys(["post:1", "find:1"])
        .tags(["author:7", "author:8"])
        .publish("post:updated")
        .await
        .unwrap();
    assert_eq!(
        proxy.requests() - before,
        1,
        "keys + tags + publish is one round trip"
    );
    assert_eq!(repo.loads(), 3);
}

#[tokio::test]
async fn events_reach_redis_subscribers_as_documented_json() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("blog")
        .build()
        .unwrap();
    let repo = Repo::new(cache.clone());
    let mut sub = server.conn();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("blog:post:created").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let post = repo.create(7, "hello").await.unwrap();
    let msg = pubsub.get_message().expect("an event within 5 s");
    assert_eq!(msg.get_channel_name(), "blog:post:created");
    let payload: String = msg.get_payload().unwrap();
    let event: InvalidationEvent = serde_json::from_str(&payload).unwrap();
    assert_eq!(event.tags, vec![format!("author:{}", post.author_id)]);
    assert_eq!(
        (
            event.namespace.as_str(),
            event.entity.as_str(),
            event.event.as_str()
        ),
        ("blog", "post", "post:created")
    );
    assert_eq!(event.instance, cache.instance());
}

#[tokio::test]
async fn pattern_deletes_scan_and_never_issue_keys() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("scan")
        .build()
        .unwrap();
    let repo = Repo::new(cache.clone());
    for page in 0..1200 {
        repo.search("rust", page).await;
    }
    repo.search("go", 1).await;
    repo.forget_search("rust").await.unwrap();
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.conn())
        .unwrap();
    assert!(
        !stats.contains("cmdstat_keys:"),
        "KEYS was issued:\n{stats}"
    );
    let scans = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_scan:"))
        .expect("SCAN was used");
    assert!(scans.contains("calls="), "{scans}");
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("scan:search:*")
        .query(&mut server.conn())
        .unwrap();
    assert_eq!(left.len(), 1, "only the `go` entry is left: {left:?}");
}

#[tokio::test]
async fn foreign_bytes_under_a_key_are_a_miss_and_are_replaced() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("corrupt")
        .build()
        .unwrap();
    let repo = Repo::new(cache.clone());
    let mut redis = server.conn();
    let raw = || -> Vec<u8> {
        redis::cmd("GET")
            .arg("corrupt:post:1")
            .query(&mut server.conn())
            .unwrap()
    };
    repo.get(1).await.unwrap();
    let good = raw();
    assert_eq!(good[..3], [0xCA, 2, 1], "the cache's own envelope");
    let (header, _) = good.split_at(28);
    let with = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        b
    };
    // (what, bytes, whether the read counts it as undecodable)
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("text", b"not an entry".to_vec(), true),
        ("nothing", Vec::new(), true),
        (
            "a header cut short",
            vec![0xCA, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'{', b'"'],
            true,
        ),
        ("0xFF bytes", vec![0xFF; 64], true),
        ("a header and no value", header.to_vec(), true),
        ("an entry cut short", good[..good.len() - 5].to_vec(), true),
        (
            "an entry with bytes after it",
            [&good[..], b"garbage"].concat(),
            true,
        ),
        ("an unknown envelope version", with(1, &[9]), true),
        ("the first envelope version", with(1, &[1]), true),
        ("an unknown codec", with(2, &[9]), true),
        (
            "a value of another type",
            [header, br#""a string, not a post""#].concat(),
            true,
        ),
        (
            "a value that is not UTF-8",
            [header, b"{\"id\":1,\"author_id\":7,\"title\":\"\xff\xfe\"}"].concat(),
            true,
        ),
        (
            "100,000 opening brackets",
            [header, "[".repeat(100_000).as_bytes()].concat(),
            true,
        ),
        // Decodes, but was stamped by another version of the data: a miss
        // that is no decode error.
        (
            "a version stamp of u64::MAX",
            with(12, &u64::MAX.to_le_bytes()),
            false,
        ),
        // Decodes, but from another epoch of the server (one that restarted
        // from a snapshot brings such entries back): a miss too.
        (
            "another epoch",
            with(
                24,
                &(u32::from_le_bytes(good[24..28].try_into().unwrap()) ^ 1).to_le_bytes(),
            ),
            false,
        ),
    ];
    for (what, bytes, undecodable) in cases {
        let _: () = redis::cmd("SET")
            .arg("corrupt:post:1")
            .arg(&bytes)
            .query(&mut redis)
            .unwrap();
        let (loads, decode_errors) = (repo.loads(), cache.stats().decode_errors);
        assert_eq!(repo.get(1).await.unwrap().title, "post 1", "{what}");
        assert_eq!(repo.loads(), loads + 1, "{what}: a miss, the body ran");
        assert_eq!(
            cache.stats().decode_errors,
            decode_errors + u64::from(undecodable),
            "{what}"
        );
        let stored = raw();
        assert_eq!(stored[..3], [0xCA, 2, 1], "{what}: replaced by an entry");
        assert_eq!(stored[12..20], [0; 8], "{what}: of version 0");
        assert_eq!(stored[28..], good[28..], "{what}: holding the loaded value");
        assert_eq!(repo.get(1).await.unwrap().title, "post 1", "{what}");
        assert_eq!(repo.loads(), loads + 1, "{what}: the next call is a hit");
    }
    assert_eq!(cache.stats().store_errors, 0);

    // The header has no length field: its numbers are stamps, and extreme
    // ones over a good value are read as they are (a hit), without overflow.
    let mut extreme = with(4, &u64::MAX.to_le_bytes());
    extreme[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    let _: () = redis::cmd("SET")
        .arg("corrupt:post:1")
        .arg(&extreme)
        .query(&mut redis)
        .unwrap();
    let loads = repo.loads();
    assert_eq!(repo.get(1).await.unwrap().title, "post 1");
    assert_eq!(repo.loads(), loads, "fresh until the end of time: a hit");

    // Not a string at all: `GET` fails with WRONGTYPE. The call goes on
    // without the cache (a store error, not a breaker trip); nothing can be
    // stored over it without a read token, so it stays until invalidated.
    let _: () = redis::cmd("DEL")
        .arg("corrupt:post:1")
        .query(&mut redis)
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg("corrupt:post:1")
        .arg("x")
        .query(&mut redis)
        .unwrap();
    let loads = repo.loads();
    assert_eq!(repo.get(1).await.unwrap().title, "post 1");
    assert_eq!(repo.get(1).await.unwrap().title, "post 1");
    assert_eq!(repo.loads(), loads + 2, "each call ran the body");
    let stats = cache.stats();
    assert_eq!((stats.store_errors, stats.breaker_trips), (2, 0));
    cache.invalidate().key("post:1").await.unwrap();
    repo.get(1).await.unwrap();
    repo.get(1).await.unwrap();
    assert_eq!(repo.loads(), loads + 3, "cached again once invalidated");
}

/// Writes `n` entries `big:<name>:<i>` filed in the set `set`, raw (one
/// pipeline), as fills would have (entries without expiry: score `+inf`).
fn file_entries(server: &RedisServer, set: &str, name: &str, n: usize) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        let entry = format!("big:{name}:{i}");
        pipe.cmd("SET").arg(&entry).arg("x").ignore();
        pipe.cmd("ZADD").arg(set).arg("+inf").arg(&entry).ignore();
    }
    pipe.query::<()>(&mut server.conn()).unwrap();
}

fn count_matching(server: &RedisServer, pattern: &str) -> usize {
    let mut conn = server.conn();
    redis::Commands::scan_match::<_, String>(&mut conn, pattern)
        .unwrap()
        .count()
}

#[tokio::test]
async fn big_invalidations_run_in_bounded_steps() {
    let crate::common::Counted {
        server,
        proxy,
        cache,
    } = crate::common::Counted::start("big").await;
    cache.invalidate().tag("warm-up").await.unwrap();
    file_entries(&server, "big#tagged:small", "small", 10_000);
    file_entries(&server, "big#tagged:large", "large", 25_000);
    file_entries(&server, "big#dependents:root", "dependent", 15_000);
    // As the fill script does when it files a dependents set: the
    // namespace is no longer one without dependencies.
    redis::cmd("DEL")
        .arg("big#nodeps")
        .query::<()>(&mut server.conn())
        .unwrap();

    let before = proxy.requests();
    let report = cache.invalidate().tag("small").await.unwrap();
    assert_eq!(report.removed, 10_000);
    assert_eq!(proxy.requests() - before, 1, "10,000 entries: one call");

    let before = proxy.requests();
    let report = cache.invalidate().tag("large").await.unwrap();
    assert_eq!(report.removed, 25_000);
    assert_eq!(
        proxy.requests() - before,
        3,
        "25,000 entries: three calls of at most 10,000"
    );
    assert_eq!(count_matching(&server, "big:large:*"), 0);

    // A cascade that outgrows one call goes on in the next.
    redis::cmd("SET")
        .arg("big:root")
        .arg("x")
        .query::<()>(&mut server.conn())
        .unwrap();
    let before = proxy.requests();
    let report = cache.invalidate().key("root").await.unwrap();
    assert_eq!(report.removed, 15_001);
    assert_eq!(proxy.requests() - before, 2);
    assert_eq!(count_matching(&server, "big:dependent:*"), 0);
    // Every removed dependent got its marker, so no older fill lands.
    assert_eq!(count_matching(&server, "big#inv:k:dependent:*"), 15_000);
}

/// A big invalidation runs in steps. Between two of them, a reader reads
/// its token and loads a member the next step will remove (its entry is
/// already gone, by a key invalidation), then a write invalidates that key
/// (a newer number) and returns. The later step must not set the member's
/// marker back to its own older number: the reader's fill, older than the
/// write, is refused. (Before, each step marked what it removed without
/// comparing, hid the newer marker, and the stale value was stored.)
#[tokio::test]
async fn a_later_step_of_a_big_invalidation_never_hides_a_newer_marker() {
    use std::sync::{Arc, Mutex};
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("steps")
        .invalidation_batch(2)
        .jitter(0.0)
        .apply_events(false)
        .build()
        .unwrap();
    let lasting = |secs| cache_runtime::CacheOptions::new("steps").ttl(Duration::from_secs(secs));
    // Filed under `t`; `x` lives longest, so the second step drains it.
    for (key, secs) in [("a", 60), ("b", 60), ("x", 120)] {
        cache
            .put(key, &"v1", &lasting(secs), Links::new().tag("t"))
            .await
            .unwrap();
    }
    cache.invalidate().key("x").await.unwrap(); // still a member of `t`
    let step = cache_runtime::__private::hooks::hold("invalidate.step", "steps");
    let tag = tokio::spawn({
        let cache = cache.clone();
        async move { cache.invalidate().tag("t").await.unwrap() }
    });
    step.reached(1).await; // the first step ran: `t` and `a`, `b` marked

    let row = Arc::new(Mutex::new("v1"));
    let (loaded, has_loaded) = tokio::sync::oneshot::channel();
    let (go, may_fill) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn({
        let (cache, row) = (cache.clone(), row.clone());
        async move {
            cache
                .get_or_load::<String, (), _, _>("x", &lasting(60), || async move {
                    let value = row.lock().unwrap().to_string();
                    loaded.send(()).unwrap();
                    may_fill.await.unwrap();
                    Ok(value)
                })
                .await
        }
    });
    has_loaded.await.unwrap(); // token read after the first step; loaded v1
    *row.lock().unwrap() = "v2";
    cache.invalidate().key("x").await.unwrap(); // the write returns

    step.release();
    assert_eq!(tag.await.unwrap().removed, 2, "a and b; x was gone");
    go.send(()).unwrap();
    assert_eq!(
        reader.await.unwrap().unwrap(),
        "v1",
        "its caller gets what it loaded"
    );
    assert_eq!(
        cache.get::<String>("x").await,
        None,
        "a value read before the write was stored after it"
    );
}

/// A hot tag whose entries expire: 6,000 fills of 1-second entries under
/// one tag that stays alive (one of its entries lives a minute), in three
/// waves, each after the last one's entries expired. The tag's set holds
/// the live members only (each fill drops the expired ones), so it stays
/// at the size of one wave. (Before, members were
/// removed only by an invalidation of the tag: the set held all 6,000, and
/// every later invalidation paid for each.)
#[tokio::test]
async fn a_tag_s_set_holds_only_its_live_members() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("hot")
        .jitter(0.0)
        .apply_events(false)
        .build()
        .unwrap();
    let options = cache_runtime::CacheOptions::new("hot").ttl(Duration::from_secs(1));
    // One member that lives on keeps the tag's set alive between waves.
    let lasting = cache_runtime::CacheOptions::new("hot").ttl(Duration::from_secs(60));
    cache
        .put("lasting", &0, &lasting, Links::new().tag("hot"))
        .await
        .unwrap();
    let mut conn = server.conn();
    let mut most = 0;
    for wave in 0..3 {
        let mut puts = cache.invalidate();
        for i in 0..2_000 {
            puts = puts.put(
                format!("w{wave}:{i}"),
                &i,
                &options,
                Links::new().tag("hot"),
            );
        }
        puts.await.unwrap();
        let members: usize = redis::cmd("ZCARD")
            .arg("hot#tagged:hot")
            .query(&mut conn)
            .unwrap();
        most = most.max(members);
        wait_until("the wave expires", Duration::from_secs(10), async || {
            let left: usize = redis::cmd("EXISTS")
                .arg(format!("hot:w{wave}:1999"))
                .query(&mut server.conn())
                .unwrap();
            left == 0
        })
        .await;
    }
    assert!(
        most <= 2_001 + 10,
        "the set held {most} members for 2,001 live entries"
    );
}

/// Markers are volatile keys with a short TTL: under memory pressure a
/// server with `maxmemory` and an evicting policy (`volatile-ttl` evicts
/// them first) may drop one, and let a stale fill through. The cache reads
/// the settings at start-up and reports the risk; with no limit, or with
/// `noeviction`, there is none.
#[tokio::test]
async fn an_eviction_policy_that_can_drop_markers_is_reported() {
    for (args, evicts) in [
        (
            &["--maxmemory", "4mb", "--maxmemory-policy", "volatile-ttl"][..],
            true,
        ),
        (
            &["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"][..],
            true,
        ),
        (
            &["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"][..],
            false,
        ),
        (&[][..], false),
    ] {
        let server = RedisServer::start_with(|_, _| args.iter().map(|a| a.to_string()).collect());
        let cache = Cache::builder()
            .redis_url(server.url())
            .namespace("evict")
            .apply_events(false)
            .build()
            .unwrap();
        wait_until(
            "the settings are read",
            Duration::from_secs(10),
            async || cache.health().eviction.is_some(),
        )
        .await;
        let eviction = cache.health().eviction.unwrap();
        assert_eq!(eviction.evicts_markers, evicts, "{args:?}: {eviction:?}");
        if let Some(policy) = args.get(3) {
            assert_eq!(&eviction.policy, policy);
        }
    }
}

/// A version key lives as long as the entries that can read it, not for
/// good: bumped and never read, it expires after the marker lifetime; read
/// and filled, it lives as long as the longest entry stamped with it.
#[tokio::test]
async fn version_keys_live_as_long_as_their_entries() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("ver")
        .jitter(0.0)
        .fill_window(Duration::from_secs(2))
        .timeout(Duration::from_millis(200))
        .apply_events(false)
        .build()
        .unwrap();
    let mut conn = server.conn();
    let pttl = |conn: &mut redis::Connection, key: &str| -> i64 {
        redis::cmd("PTTL").arg(key).query(conn).unwrap()
    };
    cache.invalidate().bump("lonely").await.unwrap();
    let left = pttl(&mut conn, "ver#ver:lonely");
    assert!(
        (0..=2_400).contains(&left),
        "a bumped version nobody read lives the marker lifetime, not for good: {left} ms"
    );

    struct Profiles {
        cache: Cache,
    }
    impl Profiles {
        #[cache_runtime::cached(cache = self.cache, key = "profile:{id}", ttl = "10m", version = "user:{id}")]
        async fn get(&self, id: u64) -> u64 {
            id
        }
    }
    let profiles = Profiles {
        cache: cache.clone(),
    };
    assert_eq!(profiles.get(1).await, 1);
    let left = pttl(&mut conn, "ver#ver:user:1");
    assert!(
        (590_000..=600_000).contains(&left),
        "kept as long as the entry stamped with it: {left} ms"
    );
    cache.invalidate().bump("user:1").await.unwrap();
    let left = pttl(&mut conn, "ver#ver:user:1");
    assert!(left > 590_000, "a bump keeps it: {left} ms");
}

#[tokio::test]
async fn postcard_entries_are_compact_and_a_codec_change_reads_older_entries() {
    let server = RedisServer::start();
    let with = |codec| {
        Cache::builder()
            .redis_url(server.url())
            .namespace("codec")
            .codec(codec)
            .build()
            .unwrap()
    };
    let (json, compact) = (
        with(cache_runtime::Codec::Json),
        with(cache_runtime::Codec::Postcard),
    );
    let post = |id| Post {
        id,
        author_id: 7,
        title: "a title of some length".into(),
    };
    let opts = cache_runtime::CacheOptions::new("codec");
    let load = async |cache: &Cache, key: &str, id: u64| -> Result<Post, String> {
        cache
            .get_or_load(key, &opts, || async move { Ok(post(id)) })
            .await
    };
    load(&json, "json", 1).await.unwrap();
    load(&compact, "compact", 2).await.unwrap();
    let size = |key: &str| -> usize {
        redis::cmd("STRLEN")
            .arg(format!("codec:{key}"))
            .query(&mut server.conn())
            .unwrap()
    };
    // Both behind the envelope's 24-byte header.
    assert!(
        (size("compact") - 24) * 2 < size("json") - 24,
        "postcard {} bytes, JSON {} bytes",
        size("compact"),
        size("json")
    );
    // Each entry names its codec: either cache reads both.
    let hits = compact.stats().hits;
    assert_eq!(load(&compact, "json", 99).await.unwrap(), post(1));
    assert_eq!(load(&json, "compact", 99).await.unwrap(), post(2));
    assert_eq!(compact.stats().hits, hits + 1);
    assert_eq!(json.stats().hits, 1);
}

/// The README's "When does the cache listen?": `build()` never waits for
/// Redis; `ready(wait)` is true once the subscription is live, so an event
/// another service publishes from then on is heard (here: `PUBLISH` counts
/// one receiver, and the entry goes); a cache that needs no subscription is
/// ready at once; one whose Redis cannot be reached is not, by the bound.
#[tokio::test]
async fn ready_means_an_event_published_from_then_on_is_heard() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("ready")
        .build()
        .unwrap();
    let repo = Repo::new(cache.clone());
    repo.get(1).await.unwrap();
    assert!(cache.ready(Duration::from_secs(5)).await);
    assert!(cache.listening() && cache.health().listening);
    let receivers: u32 = redis::cmd("PUBLISH")
        .arg("ready:post:updated")
        .arg(r#"{"v":1,"namespace":"ready","event":"post:updated","keys":["post:1"]}"#)
        .query(&mut server.conn())
        .unwrap();
    assert_eq!(receivers, 1, "the cache is subscribed once ready");
    wait_until(
        "the foreign event applied",
        Duration::from_secs(5),
        async || cache.get::<Post>("post:1").await.is_none(),
    )
    .await;

    // Nothing to listen for: neither a tier nor foreign events.
    let quiet = Cache::builder()
        .redis_url(server.url())
        .namespace("ready-quiet")
        .apply_events(false)
        .build()
        .unwrap();
    assert!(quiet.ready(Duration::from_millis(1)).await);
    assert!(!quiet.listening(), "no subscription was needed");
    let memory = Cache::in_memory();
    assert!(memory.ready(Duration::from_millis(1)).await && !memory.listening());

    // A Redis that cannot be reached: not ready, by the bound.
    let down = Cache::builder()
        .redis_url(format!("redis://127.0.0.1:{}/", closed_port()))
        .namespace("ready-down")
        .build()
        .unwrap();
    assert!(!down.ready(Duration::from_millis(300)).await);
    assert!(!down.listening());
}

/// Reads in flight together share the connection's writes on a one-worker
/// runtime (`store/redis/coalesce.rs`): a write held back for company is
/// sent when the scheduler next looks for I/O, or at once when the third
/// request is queued. There (where the connection is made coalesced), and
/// on the current thread and two workers (where `redis` makes it as
/// before), 64 tasks reading 64 keys in turn, each starting on its own, 50
/// times, all get their own value, every read a hit, within the bound: none
/// is lost, or answered with another's reply. (That a held write is
/// released by the scheduler is shown by `coalesce::tests`, with a stand-in
/// driver on each kind of runtime: here the replies of the requests in
/// flight wake the driver too.)
#[test]
fn reads_that_share_writes_each_get_their_own_value() {
    const TASKS: u64 = 64;
    const READS: u64 = 50;
    let server = RedisServer::start();
    for (namespace, workers) in [("shared-current", 0), ("shared-one", 1), ("shared-two", 2)] {
        let rt = if workers == 0 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        .enable_all()
        .build()
        .unwrap();
        rt.block_on(async {
            let coalesced = cache_runtime::__private::hooks::coalesced_connections();
            let cache = Cache::builder()
                .redis_url(server.url())
                .namespace(namespace)
                .build()
                .unwrap();
            // Subscribing forgets the epoch: the reads counted start after.
            assert!(cache.ready(Duration::from_secs(10)).await, "subscribed");
            let repo = std::sync::Arc::new(Repo::new(cache));
            for id in 1..=TASKS {
                repo.rows.lock().unwrap().insert(
                    id,
                    Post {
                        id,
                        author_id: 7,
                        title: format!("post {id}"),
                    },
                );
                repo.get(id).await.unwrap();
            }
            let warm = repo.loads();
            let tasks: Vec<_> = (0..TASKS)
                .map(|task| {
                    let repo = repo.clone();
                    tokio::spawn(async move {
                        for read in 0..READS {
                            // Every task starts on a key of its own.
                            let id = (task + read) % TASKS + 1;
                            let post = repo.get(id).await.unwrap();
                            assert_eq!((post.id, post.title), (id, format!("post {id}")));
                        }
                    })
                })
                .collect();
            tokio::time::timeout(Duration::from_secs(20), async {
                for task in tasks {
                    task.await.unwrap();
                }
            })
            .await
            .expect("every read returned");
            assert_eq!(repo.loads(), warm, "every read was a hit ({namespace})");
            if workers == 1 {
                assert!(
                    cache_runtime::__private::hooks::coalesced_connections() > coalesced,
                    "the connection was made coalesced"
                );
            }
            let stats = repo.cache.stats();
            assert_eq!(stats.store_errors, 0, "{namespace}");
            assert!(stats.hits >= TASKS * READS, "{namespace}: {stats:?}");
        });
    }
}

/// The connection `coalesce` makes (one worker) goes down and comes back as
/// `redis`'s does: cut by the network, reads fall back to the loader and
/// hit again once it is restored; across a server restart (empty), they
/// load once and hit again.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_coalesced_connection_comes_back_after_a_cut_and_a_restart() {
    let mut server = RedisServer::start();
    let proxy = CountingProxy::start(server.port()).await;
    let coalesced = cache_runtime::__private::hooks::coalesced_connections();
    let cache = Cache::builder()
        .redis_url(proxy.url())
        .namespace("coalesced-back")
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(cache.ready(Duration::from_secs(10)).await, "subscribed");
    let repo = Repo::new(cache.clone());
    repo.get(1).await.unwrap();
    assert!(
        cache_runtime::__private::hooks::coalesced_connections() > coalesced,
        "the connection was made coalesced"
    );
    let hits_again = async |what: &str| {
        wait_until(what, Duration::from_secs(10), async || {
            let loads = repo.loads();
            let post = repo.get(1).await.unwrap();
            assert_eq!(post.id, 1);
            repo.loads() == loads
        })
        .await;
    };
    hits_again("a warm read hits").await;

    proxy.sever();
    let loads = repo.loads();
    assert_eq!(repo.get(1).await.unwrap().id, 1, "the loader answers");
    assert_eq!(repo.loads(), loads + 1, "cut off: the read loaded");
    proxy.restore();
    hits_again("reads hit again once the network is back").await;

    let before_restart = cache_runtime::__private::hooks::coalesced_connections();
    server.restart();
    hits_again("reads hit again after the restart").await;
    assert!(
        cache_runtime::__private::hooks::coalesced_connections() > before_restart,
        "made coalesced again"
    );
    assert!(cache.stats().store_errors > 0, "the faults were seen");
}
