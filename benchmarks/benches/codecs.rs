//! JSON against postcard: bytes stored and the time of a Redis hit (one
//! round trip plus decoding) for a value of about 1 KB, in one run.
//! Run: `cargo bench -p benchmarks --bench codecs`.

use std::hint::black_box;

use cache_runtime::{Cache, CacheOptions, Codec};
use criterion::{Criterion, criterion_group, criterion_main};
use integration_tests::RedisServer;
use serde::{Deserialize, Serialize};

/// An article as a blog caches it: numbers, short strings, a body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Article {
    id: u64,
    slug: String,
    title: String,
    description: String,
    body: String,
    tags: Vec<String>,
    author: String,
    favorites: u32,
    created_ms: u64,
    updated_ms: u64,
}

fn article() -> Article {
    Article {
        id: 4711,
        slug: "how-to-keep-a-cache-fresh".into(),
        title: "How to keep a cache fresh".into(),
        description: "Invalidation after commit, race-free fills, tags.".into(),
        body: "Cache-aside is simple until a write races a read. ".repeat(15),
        tags: vec!["rust".into(), "redis".into(), "caching".into()],
        author: "jake".into(),
        favorites: 42,
        created_ms: 1_763_900_000_000,
        updated_ms: 1_763_900_100_000,
    }
}

const OPTS: CacheOptions = CacheOptions::new("codecs");

fn codecs(c: &mut Criterion) {
    let rt = benchmarks::runtime(1);
    let server = RedisServer::start();
    let cache = |codec, ns: &str| {
        let _guard = rt.enter();
        Cache::builder()
            .redis_url(server.url())
            .namespace(ns)
            .codec(codec)
            .apply_events(false)
            .build()
            .unwrap()
    };
    let caches = [
        ("JSON", cache(Codec::Json, "json")),
        ("postcard", cache(Codec::Postcard, "postcard")),
    ];
    let mut conn = server.conn();
    for (name, cache) in &caches {
        let value: Result<Article, String> =
            rt.block_on(cache.get_or_load("a", &OPTS, || async { Ok(article()) }));
        assert_eq!(value.unwrap(), article());
        let bytes: usize = redis::cmd("STRLEN")
            .arg(format!("{}:a", cache.namespace()))
            .query(&mut conn)
            .unwrap();
        println!("{name}: {bytes} bytes stored (24 of them the envelope header)");
    }
    // What each codec runs (`Codec::encode_into` / `decode` call exactly
    // these), without the network.
    let value = article();
    let json = serde_json::to_vec(&value).unwrap();
    let compact = postcard::to_stdvec(&value).unwrap();
    let mut group = c.benchmark_group("codec only, 1 KB article");
    group.bench_function("JSON encode", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&value)).unwrap()))
    });
    group.bench_function("postcard encode", |b| {
        b.iter(|| black_box(postcard::to_stdvec(black_box(&value)).unwrap()))
    });
    // `Codec::decode` checks the bytes as UTF-8 once and parses text; the
    // plain `from_slice` (checking each string as it goes) is the reference.
    group.bench_function("JSON decode", |b| {
        b.iter(|| {
            let text = std::str::from_utf8(black_box(&json)).unwrap();
            black_box(serde_json::from_str::<Article>(text).unwrap())
        })
    });
    group.bench_function("JSON decode with from_slice", |b| {
        b.iter(|| black_box(serde_json::from_slice::<Article>(black_box(&json)).unwrap()))
    });
    group.bench_function("postcard decode", |b| {
        b.iter(|| black_box(postcard::from_bytes::<Article>(black_box(&compact)).unwrap()))
    });
    group.finish();

    let mut group = c.benchmark_group("redis hit, 1 KB article");
    for (name, cache) in &caches {
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| async {
                let v: Result<Article, String> = cache
                    .get_or_load("a", &OPTS, || async { Err("a hit".into()) })
                    .await;
                black_box(v.unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);
