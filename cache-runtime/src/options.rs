//! Per-call options of a cached read, buildable in `const` context so the
//! macros can keep them in a `const` next to each function.

use std::time::Duration;

/// How long an entry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The cache's default TTL (see [`CacheBuilder::default_ttl`](crate::CacheBuilder::default_ttl)).
    Default,
    /// This long (before jitter).
    For(Duration),
    /// No expiry. Only when asked for explicitly.
    Forever,
}

/// Options of one cached read: TTL, jitter, negative caching, and the name it
/// is reported under.
///
/// ```
/// use std::time::Duration;
/// use cache_runtime::CacheOptions;
/// const POSTS: CacheOptions = CacheOptions::new("posts").ttl(Duration::from_secs(300)).jitter(0.2);
/// assert_eq!(POSTS.name(), "posts");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub struct CacheOptions {
    name: &'static str,
    ttl: Ttl,
    jitter: Option<f32>,
    cache_none: Option<Duration>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions::new("")
    }
}

impl CacheOptions {
    /// Options with the cache's defaults, reported under `name`.
    pub const fn new(name: &'static str) -> Self {
        CacheOptions {
            name,
            ttl: Ttl::Default,
            jitter: None,
            cache_none: None,
        }
    }

    /// Entries live for `ttl`, shortened by jitter.
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Ttl::For(ttl);
        self
    }

    /// Entries never expire (they still go when invalidated or evicted).
    pub const fn forever(mut self) -> Self {
        self.ttl = Ttl::Forever;
        self
    }

    /// Shorten each TTL by a random fraction of at most `jitter` (0.0 to
    /// 1.0) instead of the cache's default jitter.
    pub const fn jitter(mut self, jitter: f32) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// Also cache an absent value (`None`) for `ttl`.
    pub const fn cache_none(mut self, ttl: Duration) -> Self {
        self.cache_none = Some(ttl);
        self
    }

    /// The name statistics and traces report this read under.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) fn ttl_choice(&self) -> Ttl {
        self.ttl
    }

    pub(crate) fn jitter_choice(&self) -> Option<f32> {
        self.jitter
    }

    pub(crate) fn none_ttl(&self) -> Option<Duration> {
        self.cache_none
    }
}
