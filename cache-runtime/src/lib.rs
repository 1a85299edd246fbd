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
//! The attribute reference is the documentation of [`cached`],
//! [`invalidates`] and [`cache_put`]; the design, with the cost of each
//! operation in round trips, is in `docs/ARCHITECTURE.md`.
#![deny(missing_docs)]
// Without Redis (`default-features = false`), the names, channels and
// prefixes that only the Redis store reads go unused.
#![cfg_attr(not(feature = "redis"), allow(dead_code, unused_imports))]

mod adaptive;
mod breaker;
mod cache;
mod codec;
mod duration;
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
mod shape;
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

pub use adaptive::{Adapt, Decided, adapt};
pub use cache::invalidation::Invalidation;
pub use cache::{Cache, CacheBuilder, InvalidationReport, Links, LockGuard, Ticket};
pub use codec::Codec;
pub use error::{Error, ErrorKind, Result, Timeout};
pub use events::InvalidationEvent;
pub use global::{default_cache, install_default};
pub use health::{BreakerState, Eviction, Health};
pub use key::{MAX_KEY_LEN, MAX_PART_LEN, glob_escape, render_part};
pub use options::{CacheOptions, Ttl};
pub use stats::{InvalidationCounts, StatsSnapshot};
pub use status::{CacheStatus, with_cache_status};
pub use switch::{enabled, refreshing, set_enabled};
pub use transaction::in_transaction;
pub use ttl::parse_duration;
#[cfg(feature = "redis")]
pub use write_behind::{FlushReport, Worker, Write, WriteBehind};

/// The `redis` crate this one is built on: [`CacheBuilder::redis_client`]
/// takes its `Client` (for TLS, ACL users, or a `Client` configured
/// elsewhere), so this is the version to build it with.
#[cfg(feature = "redis")]
pub use redis;

#[cfg(feature = "macros")]
#[doc(inline)]
pub use cache_macros::{cache_put, cached, invalidates};

/// The README's examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// The attribute reference's examples (the macros' documentation), which
/// need this crate to run.
#[cfg(doctest)]
#[doc = include_str!("../../cache-macros/docs/cached.md")]
struct CachedDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../cache-macros/docs/invalidates.md")]
struct InvalidatesDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../cache-macros/docs/cache_put.md")]
struct CachePutDoctests;
