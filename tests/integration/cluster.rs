//! Redis Cluster: what the behaviour, strategy and cascade suites (their
//! `cluster` modules) do not show. Every name of a namespace lives in one
//! slot; a distributed lock, in-process tiers and foreign events work across
//! instances; a master going down degrades to the body like a single server.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheOptions, Links};
use integration_tests::{RedisCluster, wait_until};

fn cluster_cache(cluster: &RedisCluster, namespace: &str) -> cache_runtime::CacheBuilder {
    Cache::builder()
        .redis_cluster(cluster.urls())
        .namespace(namespace)
        .jitter(0.0)
        .timeout(Duration::from_millis(500))
}

/// Every name in the server, on each node.
fn names_per_node(cluster: &RedisCluster) -> Vec<BTreeSet<String>> {
    cluster
        .nodes()
        .iter()
        .map(|node| {
            let mut conn = node.conn();
            let mut names = BTreeSet::new();
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut conn)
                    .expect("SCAN a node");
                names.extend(batch);
                if next == 0 {
                    break names;
                }
                cursor = next;
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_name_of_a_namespace_lives_in_one_slot_of_one_master() {
    let cluster = RedisCluster::start();
    let cache = cluster_cache(&cluster, "slots").build().unwrap();
    let opts = CacheOptions::new("slots");
    // Entries with tags and dependencies, a version, a marker, a user lock:
    // names of every kind the store writes.
    for id in 0..50u32 {
        let key = format!("post:{id}");
        let links = Links::new()
            .tag(format!("author:{}", id % 5))
            .depends_on(format!("author:{}", id % 5));
        let v: u32 = cache
            .get_or_load_tagged(&key, &opts, |_| links, || async move { id })
            .await;
        assert_eq!(v, id);
    }
    cache
        .invalidate()
        .key("post:1")
        .bump("posts")
        .await
        .unwrap();
    let lock = cache
        .try_lock("report", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the lock is free");

    let per_node = names_per_node(&cluster);
    let holding: Vec<usize> = (0..per_node.len())
        .filter(|&i| !per_node[i].is_empty())
        .collect();
    assert_eq!(
        holding.len(),
        1,
        "all names on one node, found on nodes {holding:?}: {per_node:?}"
    );
    let names = &per_node[holding[0]];
    assert!(names.len() > 100, "entries, tag sets, markers: {names:?}");
    let slot = |name: &str| -> i64 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(name)
            .query(&mut cluster.nodes()[0].conn())
            .expect("CLUSTER KEYSLOT")
    };
    let first = slot("{slots}");
    for name in names {
        assert!(name.starts_with("{slots}"), "{name}");
        assert_eq!(slot(name), first, "{name}");
    }
    assert!(lock.release().await.unwrap(), "released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_lock_runs_one_loader_across_instances() {
    let cluster = RedisCluster::start();
    let caches: Vec<Cache> = (0..3)
        .map(|i| {
            cluster_cache(&cluster, "locked")
                .instance(format!("i{i}"))
                .build()
                .unwrap()
        })
        .collect();
    const OPTS: CacheOptions = CacheOptions::new("locked").distributed_lock();
    let runs = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(tokio::sync::Barrier::new(caches.len() * 5));
    let mut calls = Vec::new();
    for cache in &caches {
        for _ in 0..5 {
            let (cache, runs, gate) = (cache.clone(), runs.clone(), gate.clone());
            calls.push(tokio::spawn(async move {
                gate.wait().await;
                let v: Result<u32, String> = cache
                    .get_or_load("report:1", &OPTS, || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Ok(42)
                    })
                    .await;
                v
            }));
        }
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), Ok(42));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one loader for 3 instances");
    let landed: u64 = caches.iter().map(|c| c.stats().lock_landed).sum();
    assert_eq!(landed, 2, "the two other instances took the landed value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_and_foreign_events_reach_every_instance() {
    let cluster = RedisCluster::start();
    let tiered = |name: &str| {
        cluster_cache(&cluster, "tiers")
            .local_ttl(Duration::from_secs(60))
            .instance(name)
            .build()
            .unwrap()
    };
    let (a, b) = (tiered("a"), tiered("b"));
    for cache in [&a, &b] {
        wait_until("subscribed", Duration::from_secs(10), async || {
            cache.listening()
        })
        .await;
    }
    const OPTS: CacheOptions = CacheOptions::new("tiers");
    let load = |cache: &Cache, key: &'static str, tag: &'static str| {
        let cache = cache.clone();
        async move {
            let v: u32 = cache
                .get_or_load_tagged(key, &OPTS, |_| Links::new().tag(tag), || async { 1 })
                .await;
            v
        }
    };
    for key in ["post:1", "post:2", "post:3"] {
        load(&b, key, "author:7").await;
        assert!(b.in_local_tier(key), "{key} in B's tier");
    }
    // A key and a tag invalidated on A leave B's tier.
    a.invalidate().key("post:1").await.unwrap();
    wait_until(
        "post:1 leaves B's tier",
        Duration::from_secs(5),
        async || !b.in_local_tier("post:1"),
    )
    .await;
    a.invalidate().tag("author:7").await.unwrap();
    wait_until(
        "the tag leaves B's tier",
        Duration::from_secs(5),
        async || !b.in_local_tier("post:2") && !b.in_local_tier("post:3"),
    )
    .await;

    // Another service publishes on any node: both instances hear it, it is
    // applied once (it has an id), and both tiers drop the entry.
    load(&a, "post:9", "t").await;
    load(&b, "post:9", "t").await;
    assert!(a.in_local_tier("post:9") && b.in_local_tier("post:9"));
    let event = r#"{"v":1,"namespace":"tiers","event":"post:updated","keys":["post:9"],"tags":[],"ts":1,"id":"e1"}"#;
    let node = &cluster.nodes()[2];
    let heard: i64 = redis::cmd("PUBLISH")
        .arg("tiers:post:updated")
        .arg(event)
        .query(&mut node.conn())
        .unwrap();
    assert!(heard >= 0);
    wait_until(
        "the event reaches both tiers",
        Duration::from_secs(5),
        async || !a.in_local_tier("post:9") && !b.in_local_tier("post:9"),
    )
    .await;
    wait_until("the event is applied", Duration::from_secs(5), async || {
        a.stats().events_applied + b.stats().events_applied == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_dies_degrades_to_the_body() {
    let mut cluster = RedisCluster::start();
    let cache = cluster_cache(&cluster, "down")
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    const OPTS: CacheOptions = CacheOptions::new("down");
    let runs = AtomicU32::new(0);
    let get = async || -> Result<u32, String> {
        cache
            .get_or_load("k", &OPTS, || async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(7)
            })
            .await
    };
    assert_eq!(get().await, Ok(7));
    assert_eq!(get().await, Ok(7));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the second call was a hit");

    cluster.kill_owner_of("{down}");
    for _ in 0..10 {
        let started = Instant::now();
        assert_eq!(get().await, Ok(7), "the body's value, never an error");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a call took {:?} with the slot's master down",
            started.elapsed()
        );
    }
    assert!(
        runs.load(Ordering::SeqCst) >= 2,
        "reads fell back to the body"
    );
    assert!(cache.stats().store_errors > 0);
}
