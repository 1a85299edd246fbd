//! Attribute macros of [`cache-runtime`](https://docs.rs/cache-runtime):
//! `#[cached]`, `#[invalidates]` and `#[cache_put]`. Depend on `cache-runtime`, which
//! re-exports them; each attribute's reference is its documentation here.
#![deny(missing_docs)]

mod args;
/// The runtime's duration parser, shared as a file.
#[path = "../../cache-runtime/src/duration.rs"]
mod duration;
mod expand;
mod func;
mod owned;
mod template;
mod validate;

use proc_macro::TokenStream;

#[doc = include_str!("../docs/cached.md")]
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::entry(expand::Kind::Cached, args.into(), item.into()).into()
}

#[doc = include_str!("../docs/invalidates.md")]
#[proc_macro_attribute]
pub fn invalidates(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::entry(expand::Kind::Invalidates, args.into(), item.into()).into()
}

#[doc = include_str!("../docs/cache_put.md")]
#[proc_macro_attribute]
pub fn cache_put(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::entry(expand::Kind::Put, args.into(), item.into()).into()
}
