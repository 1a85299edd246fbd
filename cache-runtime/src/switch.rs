//! Turning caching off without touching code: a switch per [`Cache`](crate::Cache)
//! ([`Cache::set_enabled`](crate::Cache::set_enabled)), one for the whole process ([`set_enabled`]),
//! and a per-call scope that reloads and stores ([`refreshing`]).
//!
//! Off, a read-through call runs its loader directly: nothing is read and
//! nothing is stored (counted as `bypassed`). Invalidations and puts still
//! run, so a cache turned back on never serves an entry that a write made
//! stale while it was off.
//!
//! The hit path pays relaxed loads of the cache's switch and of [`STATE`]
//! (the process switch and the count of live scopes; read again when the
//! outcome is recorded for `with_cache_status`); the task-locals are only
//! looked at while some scope is alive.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

/// Bit 0: caching is off process-wide. The rest: twice the number of live
/// [`refreshing`] and [`with_cache_status`](crate::with_cache_status) scopes.
static STATE: AtomicUsize = AtomicUsize::new(0);
const OFF: usize = 1;
const SCOPE: usize = 2;

tokio::task_local! {
    static REFRESH: ();
}

/// What a read does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Through the cache.
    Normal,
    /// The loader alone: the cache is off.
    Bypass,
    /// The loader, and its value stored whatever was cached.
    Refresh,
}

/// The mode of a read on a cache whose own switch is `enabled`.
#[inline(always)]
pub(crate) fn mode(enabled: &AtomicBool) -> Mode {
    let state = STATE.load(Relaxed);
    if enabled.load(Relaxed) && state == 0 {
        return Mode::Normal;
    }
    slow_mode(enabled.load(Relaxed), state)
}

#[cold]
#[inline(never)]
fn slow_mode(enabled: bool, state: usize) -> Mode {
    if !enabled || state & OFF != 0 {
        Mode::Bypass
    } else if REFRESH.try_with(|_| ()).is_ok() {
        Mode::Refresh
    } else {
        Mode::Normal
    }
}

/// Whether some scope is alive in the process (so task-locals are worth
/// looking at).
#[inline(always)]
pub(crate) fn scopes_alive() -> bool {
    STATE.load(Relaxed) >= SCOPE
}

/// Counts a scope as alive while it lives.
pub(crate) struct ScopeGuard(());

impl ScopeGuard {
    pub(crate) fn enter() -> ScopeGuard {
        STATE.fetch_add(SCOPE, Relaxed);
        ScopeGuard(())
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        STATE.fetch_sub(SCOPE, Relaxed);
    }
}

/// Turns caching on or off for every [`Cache`](crate::Cache) of the process (each cache
/// also has its own switch, [`Cache::set_enabled`](crate::Cache::set_enabled); a read uses the cache
/// only when both are on). Off, annotated functions run their bodies
/// directly; invalidations and puts still run.
///
/// (A doctest of its own process: the switch would disturb the others.)
///
/// ```standalone_crate
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use cache_runtime::{Cache, cached};
/// #[cached(cache = cache, key = "n")]
/// async fn n(cache: &Cache) -> u32 { 7 }
/// let cache = Cache::in_memory();
/// cache_runtime::set_enabled(false); // e.g. from a CACHE_ENABLED=false setting
/// n(&cache).await;
/// n(&cache).await;
/// assert_eq!(cache.stats().hits, 0);
/// cache_runtime::set_enabled(true);
/// # }
/// ```
pub fn set_enabled(on: bool) {
    if on {
        STATE.fetch_and(!OFF, Relaxed);
    } else {
        STATE.fetch_or(OFF, Relaxed);
    }
}

/// Whether caching is on process-wide (see [`set_enabled`]).
pub fn enabled() -> bool {
    STATE.load(Relaxed) & OFF == 0
}

/// Runs `work` with every cached read inside it (the `#[cached]` functions
/// and `get_or_load*` calls it makes, at any depth) reloading its value and
/// storing it, whatever is cached: a force-refresh for one call, as
/// `cashews`' `invalidate_further` or a `Cache-Control: no-cache` request
/// would ask for. The store is a write-through (as [`Cache::put`](crate::Cache::put)): a fill
/// that read the old value before it cannot overwrite it. A value that is
/// not stored (an `Err`) leaves the entry as it was; a `None` removes it.
///
/// The scope is a Tokio task-local: it covers this future, not tasks it
/// spawns.
///
/// The value is stored as a put, with the read's `ttl`, `stale` window and
/// tags; a value over `max_size` is not stored and removes the entry. One
/// limit: the put does not record the read's `version`, so a versioned read
/// loads once more after a refresh.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use cache_runtime::{Cache, cached, refreshing};
/// static LOADS: AtomicU32 = AtomicU32::new(0);
/// #[cached(cache = cache, key = "n")]
/// async fn n(cache: &Cache) -> u32 { LOADS.fetch_add(1, Ordering::SeqCst) }
/// let cache = Cache::in_memory();
/// assert_eq!(n(&cache).await, 0);
/// assert_eq!(n(&cache).await, 0);              // a hit
/// assert_eq!(refreshing(n(&cache)).await, 1);  // reloaded and stored
/// assert_eq!(n(&cache).await, 1);              // a hit of the new value
/// # }
/// ```
pub async fn refreshing<F: Future>(work: F) -> F::Output {
    let _alive = ScopeGuard::enter();
    REFRESH.scope((), work).await
}
