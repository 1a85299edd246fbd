//! The hit path: ns per hit of the macro-generated path (in-process store,
//! and the in-process tier of a two-tier cache) beside a bare `moka` get of
//! the same value (and a bare `quick_cache` get, the map the in-process
//! store is built on), in one run. Run: `cargo bench -p benchmarks --bench hit_path`.
//!
//! A hit never waits on anything, so the cached future is polled once with a
//! no-op waker: what is measured is the cache, not an executor.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use benchmarks::{Post, Posts};
use cache_runtime::Cache;
use criterion::{Criterion, criterion_group, criterion_main};
use integration_tests::RedisServer;

/// Polls a future that must complete at once (a hit).
fn now<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a hit must not wait"),
    }
}

fn hit_path(c: &mut Criterion) {
    let rt = benchmarks::runtime(1);
    let mut group = c.benchmark_group("hit");

    let moka: moka::sync::Cache<String, Post> = moka::sync::Cache::new(10_000);
    moka.insert("post:1".to_owned(), Post::sample(1));
    let key = "post:1".to_owned();
    group.bench_function("bare moka get, key built once", |b| {
        b.iter(|| black_box(moka.get(black_box(&key))))
    });
    group.bench_function("bare moka get, key formatted per call", |b| {
        b.iter(|| black_box(moka.get(&format!("post:{}", black_box(1)))))
    });
    // The same for a shared value: what an `Arc<Post>` return compares with.
    let moka_arc: moka::sync::Cache<String, std::sync::Arc<Post>> = moka::sync::Cache::new(10_000);
    moka_arc.insert("post:1".to_owned(), std::sync::Arc::new(Post::sample(1)));
    group.bench_function(
        "bare moka get of an Arc<Post>, key formatted per call",
        |b| b.iter(|| black_box(moka_arc.get(&format!("post:{}", black_box(1))))),
    );
    // Configured as the in-process store is: a per-entry expiry (`Expiry`)
    // and the namespaced entry name.
    struct PerEntry;
    impl moka::Expiry<String, std::sync::Arc<Post>> for PerEntry {
        fn expire_after_create(
            &self,
            _: &String,
            _: &std::sync::Arc<Post>,
            _: std::time::Instant,
        ) -> Option<Duration> {
            Some(Duration::from_secs(600))
        }
    }
    let moka_store: moka::sync::Cache<String, std::sync::Arc<Post>> = moka::sync::Cache::builder()
        .max_capacity(10_000)
        .expire_after(PerEntry)
        .build();
    moka_store.insert(
        "cache:post:1".to_owned(),
        std::sync::Arc::new(Post::sample(1)),
    );
    group.bench_function(
        "bare moka get of an Arc<Post>, per-entry expiry, namespaced key formatted per call",
        |b| b.iter(|| black_box(moka_store.get(&format!("cache:post:{}", black_box(1))))),
    );
    // The map the in-process store is built on (`quick_cache`), bare: the
    // floor of its hit.
    let quick: quick_cache::sync::Cache<String, std::sync::Arc<Post>> =
        quick_cache::sync::Cache::new(10_000);
    quick.insert("post:1".to_owned(), std::sync::Arc::new(Post::sample(1)));
    group.bench_function(
        "bare quick_cache get of an Arc<Post>, key formatted per call",
        |b| b.iter(|| black_box(quick.get(&format!("post:{}", black_box(1))))),
    );
    // What a hand-written cache would be: entries expire.
    let moka_ttl: moka::sync::Cache<String, Post> = moka::sync::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(600))
        .build();
    moka_ttl.insert("post:1".to_owned(), Post::sample(1));
    group.bench_function("bare moka get with a TTL, key formatted per call", |b| {
        b.iter(|| black_box(moka_ttl.get(&format!("post:{}", black_box(1)))))
    });

    let memory = Posts {
        cache: Cache::in_memory(),
    };
    rt.block_on(memory.get(1)).unwrap();
    group.bench_function("#[cached], in-process store", |b| {
        b.iter(|| black_box(now(memory.get(black_box(1)))))
    });
    rt.block_on(memory.shared(1)).unwrap();
    group.bench_function("#[cached], in-process store, Arc<Post> return", |b| {
        b.iter(|| black_box(now(memory.shared(black_box(1)))))
    });

    let server = RedisServer::start();
    let two_tier = rt.block_on(async {
        let cache = Cache::builder()
            .redis_url(server.url())
            .namespace("bench")
            .local_ttl(Duration::from_secs(600))
            .build()
            .unwrap();
        while !cache.listening() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let posts = Posts { cache };
        posts.get(1).await.unwrap();
        posts
    });
    assert_eq!(two_tier.cache.stats().fills, 1);
    now(two_tier.get(1)).unwrap();
    assert_eq!(two_tier.cache.stats().local_hits, 1, "the tier answers");
    group.bench_function("#[cached], two tiers, in-process hit", |b| {
        b.iter(|| black_box(now(two_tier.get(black_box(1)))))
    });
    rt.block_on(two_tier.shared(1)).unwrap();
    now(two_tier.shared(1)).unwrap();
    group.bench_function(
        "#[cached], two tiers, in-process hit, Arc<Post> return",
        |b| b.iter(|| black_box(now(two_tier.shared(black_box(1))))),
    );
    group.finish();
}

/// Building keys as the macro does (`KeyBuilder`: literal parts, escaped
/// values) beside `format!`, for a plain id, a slug that needs escaping, and
/// a long value (bounded to a prefix and a hash).
fn key_building(c: &mut Criterion) {
    use cache_runtime::__private::KeyBuilder;
    let mut group = c.benchmark_group("key");
    group.bench_function("format! post:{id}", |b| {
        b.iter(|| black_box(format!("post:{}", black_box(4711u64))))
    });
    group.bench_function("KeyBuilder post:{id}", |b| {
        b.iter(|| {
            let mut key = KeyBuilder::with_capacity(16);
            key.lit("post:").part(&black_box(4711u64));
            black_box(key.finish())
        })
    });
    let hostile = "how to: cache * fast? [really]";
    group.bench_function("KeyBuilder, a value to escape", |b| {
        b.iter(|| {
            let mut key = KeyBuilder::with_capacity(64);
            key.lit("search:").part(black_box(hostile));
            black_box(key.finish())
        })
    });
    let long = "x".repeat(1000);
    group.bench_function("KeyBuilder, a 1,000-byte value (hashed)", |b| {
        b.iter(|| {
            let mut key = KeyBuilder::with_capacity(64);
            key.lit("search:").part(black_box(long.as_str()));
            black_box(key.finish())
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = hit_path, key_building
}
criterion_main!(benches);
