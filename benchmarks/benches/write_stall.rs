//! How long a write waits behind the in-process store's bookkeeping: the
//! time of each fill through `Cache::put` (a tag per entry) after 100,000
//! entries spread over 97 tags, a tenth of them then removed by key (their
//! tag members are left for the sweep). Prints the median, the 99th and
//! 99.9th percentiles and the longest fill of 12,288 (three rounds of the store's
//! 4,096-write cadence). Run: `cargo bench -p benchmarks --bench write_stall`.

use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheOptions, Links};

const ENTRIES: u64 = 100_000;
const TAGS: u64 = 97;
const FILLS: u64 = 3 * 4_096;

fn links(i: u64) -> Links {
    Links::new().tag(format!("group:{}", i % TAGS))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cache = Cache::builder()
        .in_memory()
        .memory_capacity(2 * ENTRIES)
        .build()
        .expect("an in-process cache");
    let options = CacheOptions::new("stall");
    for i in 0..ENTRIES {
        cache
            .put(&format!("e{i}"), &i, &options, links(i))
            .await
            .expect("put");
    }
    for i in (0..ENTRIES).step_by(10) {
        cache
            .invalidate()
            .key(format!("e{i}"))
            .await
            .expect("invalidate");
    }
    let mut times: Vec<Duration> = Vec::new();
    for i in ENTRIES..ENTRIES + FILLS {
        let start = Instant::now();
        cache
            .put(&format!("e{i}"), &i, &options, links(i))
            .await
            .expect("put");
        times.push(start.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "fills after {ENTRIES} tagged entries: p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        at(0.999),
        times[times.len() - 1]
    );
}
