//! Memory per cached entry: the resident set a process grows by when it
//! caches `N` posts, for the in-process store through `#[cached]` (what it
//! keeps: the encoded envelope, the decoded value, the tag index), beside a
//! bare moka and a bare `quick_cache` map holding the same `Post`s. Run:
//! `cargo bench -p benchmarks --bench memory`.
//!
//! Each contender runs in a process of its own (this binary again, with
//! `MEMORY_ONLY` set), so that none reuses memory another freed; growth is
//! read from `/proc/self/statm` (resident pages), so it includes the
//! allocator's own overhead, as a service's would.

use std::time::Duration;

use benchmarks::{Post, Posts};
use cache_runtime::Cache;

/// Entries cached per contender (below the store's default capacity).
const N: u64 = 50_000;

const CONTENDERS: [(&str, &str); 4] = [
    ("moka", "bare moka `Cache<String, Post>`, 10-minute TTL"),
    ("quick_cache", "bare `quick_cache` `Cache<String, Post>`"),
    (
        "cached",
        "`#[cached]`, in-process store (`Posts::get`: a tag per post)",
    ),
    (
        "cached-arc",
        "`#[cached]`, in-process store, `Arc<Post>` return",
    ),
];

/// The resident set, in bytes.
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// Caches `N` posts in the contender `who`; the bytes the process grew by
/// per entry, read while the cache is alive.
fn grow(who: &str) -> f64 {
    // Made before the first reading, so that it is not counted.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = |id: u64| format!("post:{id}");
    let before = resident();
    // What was cached, kept alive until the resident set is read, and how
    // many entries it holds.
    let (kept, held): (Box<dyn std::any::Any>, u64) = match who {
        "moka" => {
            let map = moka::sync::Cache::builder()
                .max_capacity(N * 2)
                .time_to_live(Duration::from_secs(600))
                .build();
            for id in 0..N {
                map.insert(key(id), Post::sample(id));
            }
            map.run_pending_tasks();
            let held = map.entry_count();
            (Box::new(map), held)
        }
        "quick_cache" => {
            let map = quick_cache::sync::Cache::new(usize::try_from(N * 2).unwrap());
            for id in 0..N {
                map.insert(key(id), Post::sample(id));
            }
            let held = map.len() as u64;
            (Box::new(map), held)
        }
        "cached" | "cached-arc" => {
            let posts = Posts {
                cache: Cache::in_memory(),
            };
            rt.block_on(async {
                for id in 0..N {
                    if who == "cached" {
                        posts.get(id).await.unwrap();
                    } else {
                        posts.shared(id).await.unwrap();
                    }
                }
            });
            let held = posts.cache.stats().fills;
            (Box::new(posts), held)
        }
        other => panic!("MEMORY_ONLY is one of {CONTENDERS:?}, not {other}"),
    };
    let grown = resident() - before;
    drop(kept);
    assert_eq!(held, N, "every entry is held");
    grown as f64 / held as f64
}

fn main() {
    if !benchmarks::measuring() {
        return;
    }
    if let Ok(who) = std::env::var("MEMORY_ONLY") {
        println!("{:.0}", grow(&who));
        return;
    }
    let sample = Post::sample(N / 2);
    println!(
        "{N} posts; one post is {} bytes inline, {} bytes of strings on the heap",
        std::mem::size_of::<Post>(),
        sample.title.len() + sample.slug.len() + sample.tags.iter().map(String::len).sum::<usize>()
    );
    println!();
    println!("| contender | resident bytes per entry |");
    println!("|---|---|");
    for (who, name) in CONTENDERS {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--bench")
            .env("MEMORY_ONLY", who)
            .output()
            .expect("the contender's process");
        assert!(out.status.success(), "{who}: {out:?}");
        let bytes = String::from_utf8(out.stdout).unwrap();
        println!("| {name} | {} |", bytes.trim());
    }
}
