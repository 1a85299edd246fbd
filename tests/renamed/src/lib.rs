//! This crate reaches the runtime only as `kv`: nothing named
//! `cache_runtime` exists here, so the expansion must use `crate = kv`.

/// `x + 1`, cached under `renamed:{x}`.
#[kv::cached(crate = kv, cache = cache, key = "renamed:{x}")]
pub async fn increment(cache: &kv::Cache, x: u32) -> u32 {
    x + 1
}

/// Invalidates `renamed:{x}`.
#[kv::invalidates(crate = kv, cache = cache, keys = ["renamed:{x}"])]
pub async fn forget(cache: &kv::Cache, x: u32) {
    let _ = x;
}
