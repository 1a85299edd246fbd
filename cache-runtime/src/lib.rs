//! Cache-aside reads and post-commit invalidation for async Rust, over Redis
//! or an in-process store, driven by two attributes.
//!
//! ```
//! use cache_runtime::{cached, invalidates, Cache};
//! # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct Post { id: i64, author_id: i64, title: String }
//! # #[derive(Debug)] struct DbError;
//!
//! struct Posts { cache: Cache }
//!
//! impl Posts {
//!     #[cached(cache = self.cache, key = "post:{id}", ttl = "5m", tags = ["author:{ret.author_id}"])]
//!     async fn get(&self, id: i64) -> Result<Post, DbError> {
//!         Ok(Post { id, author_id: 7, title: "from the database".into() })
//!     }
//!
//!     #[invalidates(cache = self.cache, keys = ["post:{post.id}"], tags = ["author:{post.author_id}"])]
//!     async fn update(&self, post: &Post) -> Result<(), DbError> {
//!         Ok(()) // write to the database; the invalidation runs only after Ok
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let posts = Posts { cache: Cache::in_memory() };
//! let post = posts.get(1).await.unwrap(); // miss: the body runs
//! posts.get(1).await.unwrap();            // hit
//! posts.update(&post).await.unwrap();     // deletes post:1 and author:7's entries
//! assert_eq!(posts.cache.stats().hits, 1);
//! # }
//! ```
//!
//! The attribute reference is in the README; the design, with the cost of
//! each operation in round trips, is in `docs/ARCHITECTURE.md`.
#![warn(missing_docs)]
// Without Redis (`default-features = false`), the names, channels and
// prefixes that only the Redis store reads go unused.
#![cfg_attr(not(feature = "redis"), allow(dead_code, unused_imports))]

mod breaker;
mod cache;
mod codec;
mod entry;
mod epoch;
mod error;
pub mod events;
mod flight;
#[cfg(test)]
mod fuzz_tests;
mod global;
mod health;
mod hooks;
mod inbox;
mod key;
mod observe;
mod options;
mod outbox;
pub mod shape;
mod spec;
mod stats;
mod status;
mod store;
#[cfg(feature = "redis")]
mod subscriber;
mod switch;
mod tier;
mod transaction;
mod ttl;
#[cfg(feature = "redis")]
mod write_behind;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use cache::invalidation::Invalidation;
pub use cache::{Cache, CacheBuilder, InvalidationReport, Links, LockGuard, Ticket};
pub use codec::Codec;
pub use error::{Error, ErrorKind, Result};
pub use events::InvalidationEvent;
pub use global::{default_cache, install_default};
pub use health::{BreakerState, Eviction, Health};
pub use key::{
    KeyBuilder, MAX_KEY_LEN, MAX_PART_LEN, bound_key, escape_part_into, glob_escape, glob_match,
    render_part,
};
pub use options::{CacheOptions, Ttl};
pub use stats::{InvalidationCounts, StatsSnapshot};
pub use status::{CacheStatus, with_cache_status};
pub use switch::{enabled, refreshing, set_enabled};
pub use transaction::in_transaction;
pub use ttl::parse_duration;
#[cfg(feature = "redis")]
pub use write_behind::{FlushReport, Worker, Write, WriteBehind};

#[cfg(feature = "macros")]
#[doc(inline)]
pub use cache_macros::{cache_put, cached, invalidates};

/// The README's examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
