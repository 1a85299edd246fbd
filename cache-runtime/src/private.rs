//! What the macros expand to. Not a public API: it may change in any release.

use std::future::Future;

use serde::{Serialize, de::DeserializeOwned};

pub use crate::cache::Cache;
pub use crate::key::{KeyBuilder, render_part};
pub use crate::options::CacheOptions;
pub use crate::shape::{Always, OnOk, Opt, Outcome, Plain, Res, ResOpt, Shape};

/// The cache named by `cache = <expr>`.
#[inline]
pub fn cache_ref<C: AsRef<Cache> + ?Sized>(cache: &C) -> Option<&Cache> {
    Some(cache.as_ref())
}

/// An owned handle to the cache named by `cache = <expr>`, for bodies that
/// take `self` by value or mutably.
#[inline]
pub fn cache_owned<C: AsRef<Cache> + ?Sized>(cache: &C) -> Option<Cache> {
    Some(cache.as_ref().clone())
}

/// The process-wide default cache (reported once when there is none).
#[inline]
pub fn default_cache() -> Option<&'static Cache> {
    crate::global::default_or_warn()
}

/// Fails to compile, at the return type, when the cached value cannot be
/// stored.
#[inline(always)]
pub fn assert_cacheable<T: Serialize + DeserializeOwned>() {}

/// The body of a `#[cached]` function.
#[inline]
pub async fn cached<S, R, Fut, G>(
    cache: Option<&Cache>,
    options: &CacheOptions,
    key: String,
    tags: G,
    load: Fut,
) -> R
where
    S: Shape<R>,
    Fut: Future<Output = R>,
    G: FnOnce(Option<&S::Inner>) -> Vec<String>,
{
    match cache {
        Some(cache) => {
            cache
                .read_through::<S, R, Fut, G>(&key, options, tags, load)
                .await
        }
        None => load.await,
    }
}

/// The invalidation of an `#[invalidates]` function, after its body
/// succeeded.
pub async fn invalidate(
    cache: Option<&Cache>,
    keys: Vec<String>,
    tags: Vec<String>,
    patterns: Vec<String>,
    publish: Option<&'static str>,
) {
    let Some(cache) = cache else { return };
    let mut inv = cache.invalidate().keys(keys).tags(tags).patterns(patterns);
    if let Some(event) = publish {
        inv = inv.publish(event);
    }
    inv.run_reported().await;
}
