//! Shared pieces of the benchmarks: a typical cached row, and repositories
//! annotated the way users annotate theirs.

use cache_runtime::{Cache, cached};
use serde::{Deserialize, Serialize};

/// Whether a bench target was asked to measure: `cargo test` runs bench
/// targets too, without `--bench`, and they then return at once.
pub fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A multi-thread runtime of `workers` worker threads, with I/O and timers.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}

/// A row of a typical size: a few numbers and short strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Post {
    pub id: u64,
    pub author_id: u64,
    pub title: String,
    pub slug: String,
    pub tags: Vec<String>,
}

impl Post {
    pub fn sample(id: u64) -> Post {
        Post {
            id,
            author_id: id % 97,
            title: format!("How to cache post number {id} without going stale"),
            slug: format!("how-to-cache-post-{id}"),
            tags: vec!["rust".into(), "redis".into(), "caching".into()],
        }
    }
}

/// A repository whose read is cached by the macro.
#[derive(Debug)]
pub struct Posts {
    pub cache: Cache,
}

impl Posts {
    #[cached(cache = self.cache, key = "post:{id}", ttl = "10m", tags = ["author:{ret.author_id}"])]
    pub async fn get(&self, id: u64) -> Result<Post, std::io::Error> {
        Ok(Post::sample(id))
    }

    /// The same, handing out the shared value (`Arc<Post>`): an in-process
    /// hit clones a pointer, not the post.
    #[cached(cache = self.cache, key = "shared:{id}", ttl = "10m", tags = ["author:{ret.author_id}"])]
    pub async fn shared(&self, id: u64) -> Result<std::sync::Arc<Post>, std::io::Error> {
        Ok(std::sync::Arc::new(Post::sample(id)))
    }
}
