//! Propagation of invalidations between instances, on loopback: the time
//! from an invalidation returning on instance A to the entry being gone from
//! instance B's in-process tier (this crate's pub/sub coherence), beside the
//! time from a `DEL` returning to the invalidation push of Redis's own
//! server-assisted client-side caching (`CLIENT TRACKING`, RESP3) arriving.
//!
//! Run: `cargo bench -p benchmarks --bench propagation` (prints p50, p99 and
//! max over 2,000 rounds each; the figures are in docs/BENCHMARKS.md).

use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheOptions};
use integration_tests::RedisServer;

const ROUNDS: usize = 2_000;

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{name:<58} p50 {:>7.1} µs   p99 {:>7.1} µs   max {:>8.1} µs   (n = {})",
        at(0.50).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        samples[samples.len() - 1].as_secs_f64() * 1e6,
        samples.len()
    );
}

async fn two_tier(url: &str) -> Cache {
    let cache = Cache::builder()
        .redis_url(url)
        .namespace("prop")
        .local_ttl(Duration::from_secs(600))
        .build()
        .unwrap();
    while !cache.listening() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cache
}

/// This crate: A invalidates a key that B holds in its tier.
async fn pubsub_coherence(url: &str) -> Vec<Duration> {
    const OPTS: CacheOptions = CacheOptions::new("prop");
    let a = two_tier(url).await;
    let b = two_tier(url).await;
    let mut samples = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS + 100 {
        let key = format!("post:{}", i % 50);
        let _: u64 = b
            .get_or_load_tagged(&key, &OPTS, |_| Vec::new(), || async { 1 })
            .await;
        let _: u64 = b
            .get_or_load_tagged(&key, &OPTS, |_| Vec::new(), || async { 1 })
            .await;
        assert!(b.in_local_tier(&key), "B holds it in process");
        a.invalidate().key(key.as_str()).await.unwrap();
        let returned = Instant::now();
        while b.in_local_tier(&key) {
            tokio::task::yield_now().await;
            assert!(
                returned.elapsed() < Duration::from_secs(5),
                "never propagated"
            );
        }
        if i >= 100 {
            samples.push(returned.elapsed());
        }
    }
    samples
}

/// Redis's own: B's RESP3 connection tracks the keys it read; A deletes.
async fn client_tracking(url: &str) -> Vec<Duration> {
    use redis::AsyncCommands;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let b_client = redis::Client::open(format!("{url}?protocol=resp3")).unwrap();
    let config = redis::AsyncConnectionConfig::new().set_push_sender(tx);
    let mut b = b_client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .query_async(&mut b)
        .await
        .unwrap();
    let mut a = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut samples = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS + 100 {
        let key = format!("prop:post:{}", i % 50);
        let _: () = a.set(&key, 1).await.unwrap();
        let _: Option<u64> = b.get(&key).await.unwrap(); // now tracked
        while rx.try_recv().is_ok() {} // pushes of earlier rounds
        let _: () = a.del(&key).await.unwrap();
        let returned = Instant::now();
        loop {
            let push = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("never invalidated")
                .expect("push channel open");
            if push.kind == redis::PushKind::Invalidate {
                break;
            }
        }
        if i >= 100 {
            samples.push(returned.elapsed());
        }
    }
    samples
}

fn main() {
    if !benchmarks::measuring() {
        return;
    }
    let rt = benchmarks::runtime(2);
    let server = RedisServer::start();
    let url = server.url();
    rt.block_on(async {
        summary(
            "pub/sub coherence: invalidation returned -> gone from B's tier",
            pubsub_coherence(&url).await,
        );
        summary(
            "CLIENT TRACKING: DEL returned -> invalidate push at B",
            client_tracking(&url).await,
        );
    });
}
