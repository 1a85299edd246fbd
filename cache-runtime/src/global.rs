//! The process-wide default cache, used by annotated functions that do not
//! name one with `cache = ...`.

use std::sync::{Once, OnceLock};

use crate::cache::Cache;

static DEFAULT: OnceLock<Cache> = OnceLock::new();
static WARNED: Once = Once::new();

/// Installs the process-wide default cache, once, at start-up. Returns the
/// cache back if one was installed already.
///
/// ```
/// let cache = cache_runtime::Cache::in_memory();
/// assert!(cache_runtime::install_default(cache.clone()).is_ok());
/// assert!(cache_runtime::install_default(cache).is_err());
/// ```
pub fn install_default(cache: Cache) -> Result<(), Cache> {
    DEFAULT.set(cache)
}

/// The process-wide default cache, if one was installed.
pub fn default_cache() -> Option<&'static Cache> {
    DEFAULT.get()
}

/// The default cache for an annotated function; without one, reports the
/// problem once and lets the function run uncached.
pub(crate) fn default_or_warn() -> Option<&'static Cache> {
    let cache = DEFAULT.get();
    if cache.is_none() {
        WARNED.call_once(|| {
            tracing::warn!(
                target: "cache_runtime",
                "no default cache is installed, so annotated functions run uncached; call \
                 cache_runtime::install_default(...) at start-up or give the attribute `cache = ...`"
            );
        });
    }
    cache
}
