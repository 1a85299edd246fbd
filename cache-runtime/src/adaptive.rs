//! Adaptive entries: a loader decides, from what it loaded, the entry's TTL,
//! more tags, or that it is not to be stored ([`adapt`]). The decision is
//! kept in a task-local scope around the loader, read when its value is
//! filled.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

tokio::task_local! {
    static ADAPT: RefCell<Adapt>;
}

/// What a loader decided about the entry it is loading; built in the
/// closure given to [`adapt`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use = "an `Adapt` decides nothing until the closure given to `adapt` returns it"]
pub struct Adapt {
    pub(crate) ttl: Option<Duration>,
    pub(crate) tags: Vec<String>,
    pub(crate) skip: bool,
}

impl Adapt {
    /// Store the entry for `ttl` instead of the function's TTL (used as
    /// given, without jitter; a `stale` or `fail_safe` window is still
    /// added). For freshness known only after loading: an upstream
    /// `Cache-Control: max-age`, a token's expiry.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Also file the entry under `tag` (beside the function's tags).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Do not store the value: it is returned, and handed to callers
    /// coalesced on this load, as with `unless`.
    pub fn skip(mut self) -> Self {
        self.skip = true;
        self
    }
}

/// Adapts the entry being loaded, from inside its loader (the body of a
/// `#[cached]` function, or the loader of `get_or_load` and its kin):
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use cache_runtime::{Cache, adapt, cached};
///
/// #[cached(cache = cache, key = "quote:{symbol}", ttl = "1m")]
/// async fn quote(cache: &Cache, symbol: &str) -> Result<u64, String> {
///     let (price, max_age) = (42, 5); // as an upstream answered
///     adapt(|a| a.ttl(Duration::from_secs(max_age)).tag("quotes"));
///     Ok(price)
/// }
///
/// let cache = Cache::in_memory();
/// assert_eq!(quote(&cache, "ACME").await, Ok(42));
/// cache.invalidate().tag("quotes").await.unwrap();
/// assert_eq!(cache.get::<u64>("quote:ACME").await, None, "filed under the tag it added");
/// # }
/// ```
///
/// Returns whether a loader was running to take the decision: outside one
/// (a function that is not cached, a hit, a task the loader spawned) the
/// closure is not called and nothing changes. Each call adds to what the
/// loader decided before (the last TTL wins). With a batch read, the
/// decision covers every id of the load that made it.
pub fn adapt<D: Decided>(decide: impl FnOnce(Adapt) -> D) -> bool {
    ADAPT
        .try_with(|cell| {
            // Taken out while the closure runs, which may call `adapt`.
            let before = cell.take();
            let decided = decide(Adapt::default()).into_adapt();
            let nested = cell.replace(before);
            let mut all = cell.borrow_mut();
            all.merge(nested);
            all.merge(decided);
        })
        .is_ok()
}

/// What the closure given to [`adapt`] returns: the [`Adapt`] it was
/// given, with its decisions.
#[diagnostic::on_unimplemented(
    message = "the closure given to `adapt` must return the `Adapt` it was given",
    label = "this is not an `Adapt`",
    note = "return the decisions: `adapt(|a| a.ttl(max_age))`, `adapt(|a| if draft {{ a.skip() }} else {{ a }})`"
)]
pub trait Decided {
    #[doc(hidden)]
    fn into_adapt(self) -> Adapt;
}

impl Decided for Adapt {
    fn into_adapt(self) -> Adapt {
        self
    }
}

impl Adapt {
    /// Adds what `later` decided.
    fn merge(&mut self, later: Adapt) {
        if later.ttl.is_some() {
            self.ttl = later.ttl;
        }
        self.tags.extend(later.tags);
        self.skip |= later.skip;
    }
}

/// Runs a loader whose decisions go nowhere (a read that bypasses the
/// cache): they must not reach the scope of a loader around it.
pub(crate) async fn ignored<F: Future>(load: F) -> F::Output {
    collect(load).await.0
}

/// Runs a loader with a fresh decision, and returns its output with what
/// it decided.
pub(crate) async fn collect<F: Future>(load: F) -> (F::Output, Adapt) {
    let mut scoped = std::pin::pin!(ADAPT.scope(RefCell::new(Adapt::default()), load));
    let value = scoped.as_mut().await;
    let adapt = scoped.as_mut().take_value().map(RefCell::into_inner);
    (value, adapt.unwrap_or_default())
}
