//! Whether a call's value came from the cache: [`with_cache_status`] runs a
//! future and says what its last cached read did, so a handler can answer
//! with an `X-Cache: hit` header.

use std::cell::Cell;
use std::future::Future;

use crate::switch::{ScopeGuard, scopes_alive};

tokio::task_local! {
    static STATUS: Cell<Option<CacheStatus>>;
}

/// What a cached read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheStatus {
    /// Served from the cache (in process or from the store), the body did
    /// not run (an early-refresh hit that another caller refreshes is a hit).
    Hit,
    /// Served from the cache past its TTL, within the `stale` window (also
    /// when the refresh failed and the stale value answered).
    Stale,
    /// The loader failed (an `Err`, a panic, the hard timeout), or was held
    /// off after failing a moment ago, and an expired copy answered
    /// (`fail_safe`).
    FailSafe,
    /// Loaded: the body ran, or this caller waited for another caller's
    /// load of the same key (single-flight). Stale refreshes are misses too.
    Miss,
    /// The cache was not read: switched off, a `condition` was false, no
    /// cache is configured, or invalidations are waiting to be retried.
    Bypass,
    /// Reloaded and stored inside [`refreshing`](crate::refreshing).
    Refresh,
}

impl CacheStatus {
    /// `"hit"`, `"stale"`, `"fail-safe"`, `"miss"`, `"bypass"` or `"refresh"`: the usual
    /// values of an `X-Cache` header.
    pub const fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Stale => "stale",
            CacheStatus::FailSafe => "fail-safe",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
            CacheStatus::Refresh => "refresh",
        }
    }

    /// Whether the value came from the cache (`Hit`, `Stale` or `FailSafe`).
    pub const fn from_cache(self) -> bool {
        matches!(
            self,
            CacheStatus::Hit | CacheStatus::Stale | CacheStatus::FailSafe
        )
    }
}

impl std::fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Runs `work` and returns its output with the status of the last cached
/// read it made (`None` if it made none). Works through any function shape
/// (`&self` methods, trait impls, `#[async_trait]`), since nothing about the
/// function changes: the read reports to the scope of the task that runs it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use cache_runtime::{Cache, CacheStatus, cached, with_cache_status};
/// #[cached(cache = cache, key = "n")]
/// async fn n(cache: &Cache) -> u32 { 7 }
/// let cache = Cache::in_memory();
/// assert_eq!(with_cache_status(n(&cache)).await, (7, Some(CacheStatus::Miss)));
/// let (_, status) = with_cache_status(n(&cache)).await;
/// assert_eq!(status.map(CacheStatus::as_str), Some("hit"));
/// # }
/// ```
///
/// The scope is a Tokio task-local: reads in tasks `work` spawns are not
/// seen. Nested scopes each see the reads made inside them.
pub async fn with_cache_status<F: Future>(work: F) -> (F::Output, Option<CacheStatus>) {
    let _alive = ScopeGuard::enter();
    STATUS
        .scope(Cell::new(None), async move {
            let out = work.await;
            (out, STATUS.with(Cell::get))
        })
        .await
}

/// Records what a read did, for the innermost status scope, if any.
#[inline(always)]
pub(crate) fn record(status: CacheStatus) {
    if scopes_alive() {
        record_in_scope(status);
    }
}

// Out of line, so the task-local access is not inlined at every outcome
// point of the read path (see the hit_path figures in the branch's report).
#[cold]
#[inline(never)]
fn record_in_scope(status: CacheStatus) {
    let _ = STATUS.try_with(|cell| cell.set(Some(status)));
}
