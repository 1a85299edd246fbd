//! Attribute macros of [`cache-runtime`](https://docs.rs/cache-runtime):
//! `#[cached]`, `#[invalidates]` and `#[cache_put]`. Depend on `cache-runtime`, which
//! re-exports them; the attribute reference is in its README.

mod args;
mod expand;
mod func;
mod template;

use proc_macro::TokenStream;

/// Cache-aside on an `async fn`: look the key up; on a hit return the cached
/// value without running the body; on a miss run the body and store its
/// value.
///
/// `#[cached(key = "post:{id}", ttl = "5m", tags = ["author:{ret.author_id}"], cache = self.cache)]`
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::entry(expand::Kind::Cached, args.into(), item.into()).into()
}

/// Invalidation after success: once the body has returned `Ok` (or returned,
/// for a function that does not return `Result`), delete keys, invalidate
/// tags, delete patterns and publish an event.
///
/// `#[invalidates(keys = ["post:{id}"], tags = ["author:{ret.author_id}"], publish = "post:updated")]`
#[proc_macro_attribute]
pub fn invalidates(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::entry(expand::Kind::Invalidates, args.into(), item.into()).into()
}

/// Write-through: once the body has returned `Ok` (or returned, for a
/// function that does not return `Result`), store its value under the key,
/// refusing any fill that read before it.
///
/// `#[cache_put(key = "post:{ret.id}", ttl = "5m", tags = ["author:{ret.author_id}"])]`
#[proc_macro_attribute]
pub fn cache_put(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::entry(expand::Kind::Put, args.into(), item.into()).into()
}
