//! What the macros expand to. Not a public API: it may change in any release.

use std::future::Future;

pub use crate::cache::fail_safe::HardTimeout;
pub use crate::cache::read::Begun;
pub use crate::cache::{Cache, Links, Put};
pub use crate::key::{DisplayPart, IntegerPart, Key, KeyBuilder, Part, render_part};
pub use crate::options::CacheOptions;
pub use crate::shape::{Always, Batch, OnOk, Opt, Outcome, Pairs, Plain, Res, ResOpt, Shape};

/// Pause points for this workspace's tests (feature `test-hooks`).
#[cfg(feature = "test-hooks")]
pub mod hooks {
    pub use crate::hooks::{Hold, coalesced_connections, hold};
}

/// The cache named by `cache = <expr>`.
#[inline]
pub fn cache_ref<C: AsRef<Cache> + ?Sized>(cache: &C) -> Option<&Cache> {
    Some(cache.as_ref())
}

/// What `cache = <expr>` must give: anything `AsRef<Cache>`. Called as a
/// method, so that `self.cache()` returning `&Cache` borrows from `self`.
pub trait CacheHandle {
    /// The cache.
    fn cache_handle(&self) -> &Cache;
}

impl<T: AsRef<Cache> + ?Sized> CacheHandle for T {
    #[inline(always)]
    fn cache_handle(&self) -> &Cache {
        self.as_ref()
    }
}

/// `condition = <expr>` of `#[cached]`: the cache when the condition
/// holds; otherwise none, and the read is counted as bypassed.
#[inline]
pub fn when(cache: Option<&Cache>, condition: bool) -> Option<&Cache> {
    if condition {
        return cache;
    }
    if let Some(cache) = cache {
        crate::stats::Stats::add(&cache.stats_ref().bypassed, 1);
    }
    None
}

/// `unless = <closure>` of `#[cached]`, called with the loaded value (the
/// closure's argument type is inferred from here).
#[inline(always)]
pub fn unless<T: ?Sized, F: FnOnce(&T) -> bool>(value: &T, unless: F) -> bool {
    unless(value)
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
pub fn assert_cacheable<S: Shape<R>, R>(_shape: &S, _ret: ::core::marker::PhantomData<R>) {}

/// Picks the [`Shape`] of a return type by its type, not its spelling, so
/// aliases such as `type AppResult<T> = Result<T, AppError>` are handled:
/// `(&&&ShapeProbe::<R>::new()).shape()` resolves to `ResOpt`, `Res`, `Opt`
/// or `Plain` (autoref specialisation; the most specific impl is found
/// first).
#[derive(Debug)]
pub struct ShapeProbe<R>(::core::marker::PhantomData<R>);

impl<R> Default for ShapeProbe<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> ShapeProbe<R> {
    /// A probe for `R`.
    #[inline(always)]
    pub const fn new() -> Self {
        ShapeProbe(::core::marker::PhantomData)
    }
}

/// `Result<Option<T>, E>`.
pub trait PickResOpt {
    /// The shape.
    fn shape(&self) -> ResOpt;
}
impl<T, E> PickResOpt for &&ShapeProbe<Result<Option<T>, E>> {
    #[inline(always)]
    fn shape(&self) -> ResOpt {
        ResOpt
    }
}

/// `Result<T, E>`.
pub trait PickRes {
    /// The shape.
    fn shape(&self) -> Res;
}
impl<T, E> PickRes for &ShapeProbe<Result<T, E>> {
    #[inline(always)]
    fn shape(&self) -> Res {
        Res
    }
}

/// `Option<T>`.
pub trait PickOpt {
    /// The shape.
    fn shape(&self) -> Opt;
}
impl<T> PickOpt for &ShapeProbe<Option<T>> {
    #[inline(always)]
    fn shape(&self) -> Opt {
        Opt
    }
}

/// Anything else.
pub trait PickPlain {
    /// The shape.
    fn shape(&self) -> Plain;
}
impl<R> PickPlain for ShapeProbe<R> {
    #[inline(always)]
    fn shape(&self) -> Plain {
        Plain
    }
}

/// Whether an `#[invalidates]` function succeeded, by the type of its
/// result: `(&OutcomeProbe(&result)).success()` is `Ok`'s value for a
/// `Result` (or an alias of one), and the value itself otherwise.
#[derive(Debug)]
pub struct OutcomeProbe<'a, R>(pub &'a R);

/// A `Result` succeeded when it is `Ok`.
pub trait OutcomeOfResult<'a, T> {
    /// The `Ok` value, if any.
    fn success(&self) -> Option<&'a T>;
}
impl<'a, T, E> OutcomeOfResult<'a, T> for OutcomeProbe<'a, Result<T, E>> {
    #[inline(always)]
    fn success(&self) -> Option<&'a T> {
        self.0.as_ref().ok()
    }
}

/// Anything else succeeded when it returned.
pub trait OutcomeOfValue<'a, R> {
    /// The value.
    fn success(&self) -> Option<&'a R>;
}
impl<'a, R> OutcomeOfValue<'a, R> for &OutcomeProbe<'a, R> {
    #[inline(always)]
    fn success(&self) -> Option<&'a R> {
        Some(self.0)
    }
}

/// A short, stable tag of a type, for default keys: two functions that
/// differ only in their types never share a key.
pub fn type_tag(names: &[&str]) -> String {
    // FNV-1a, 32 bits.
    let mut hash: u32 = 0x811c_9dc5;
    for name in names {
        for b in name.bytes().chain([0]) {
            hash ^= u32::from(b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    format!("@{hash:08x}")
}

pub use crate::flight::Sharer;

/// Picks how a `#[cached]` function's whole return value is handed to
/// coalesced callers: by clone where the type allows it (autoref
/// specialisation at the expansion site), else not at all.
#[derive(Debug)]
pub struct ShareProbe<R>(pub ::core::marker::PhantomData<R>);

/// The clone-based choice (preferred when `R` qualifies).
pub trait ShareByClone<R> {
    /// A sharer that clones.
    fn sharer(&self) -> Option<Sharer<R>>;
}

impl<R: Clone + Send + Sync + 'static> ShareByClone<R> for ShareProbe<R> {
    #[inline]
    fn sharer(&self) -> Option<Sharer<R>> {
        Some(Sharer::cloning())
    }
}

/// The fallback: nothing is shared.
pub trait ShareNot<R> {
    /// No sharer.
    fn sharer(&self) -> Option<Sharer<R>>;
}

impl<R> ShareNot<R> for &ShareProbe<R> {
    #[inline]
    fn sharer(&self) -> Option<Sharer<R>> {
        None
    }
}

pub use crate::store::Typed;

/// Picks [`Typed`] for the stored part of a return type:
/// `(&&&&TypedProbe::<R>(PhantomData)).typed()` (autoref specialisation,
/// in the same order as [`ShapeProbe`]; `None` when the stored part is not
/// `Clone + Send + Sync + 'static`).
#[derive(Debug)]
pub struct TypedProbe<R>(pub ::core::marker::PhantomData<R>);

/// `Result<Option<T>, E>`: stores `Option<T>`.
pub trait TypedResOpt<T> {
    /// The choice.
    fn typed(&self) -> Option<Typed<Option<T>>>;
}
impl<T: Clone + Send + Sync + 'static, E> TypedResOpt<T> for &&&TypedProbe<Result<Option<T>, E>> {
    #[inline]
    fn typed(&self) -> Option<Typed<Option<T>>> {
        Some(Typed::cloning())
    }
}

/// `Result<T, E>`: stores `T`.
pub trait TypedRes<T> {
    /// The choice.
    fn typed(&self) -> Option<Typed<T>>;
}
impl<T: Clone + Send + Sync + 'static, E> TypedRes<T> for &&TypedProbe<Result<T, E>> {
    #[inline]
    fn typed(&self) -> Option<Typed<T>> {
        Some(Typed::cloning())
    }
}

/// `Option<T>`: stores `Option<T>`.
pub trait TypedOpt<T> {
    /// The choice.
    fn typed(&self) -> Option<Typed<Option<T>>>;
}
impl<T: Clone + Send + Sync + 'static> TypedOpt<T> for &&TypedProbe<Option<T>> {
    #[inline]
    fn typed(&self) -> Option<Typed<Option<T>>> {
        Some(Typed::cloning())
    }
}

/// Anything else: stores `R`.
pub trait TypedPlain<R> {
    /// The choice.
    fn typed(&self) -> Option<Typed<R>>;
}
impl<R: Clone + Send + Sync + 'static> TypedPlain<R> for &TypedProbe<R> {
    #[inline]
    fn typed(&self) -> Option<Typed<R>> {
        Some(Typed::cloning())
    }
}

/// Not clonable: decode on every hit.
pub trait TypedNot {
    /// No choice.
    fn typed<X>(&self) -> Option<Typed<X>>;
}
impl<R> TypedNot for TypedProbe<R> {
    #[inline]
    fn typed<X>(&self) -> Option<Typed<X>> {
        None
    }
}

/// What a `#[cached]` function with `hard_timeout` returns when its loader
/// ran past it and no fail-safe copy answers: `Err(E::from(timeout))`.
#[diagnostic::on_unimplemented(
    message = "`hard_timeout` returns an error when the loader is abandoned, but `{Self}` is not a `Result`",
    label = "`hard_timeout` needs a `Result<_, E>` return type whose `E: From<cache_runtime::Timeout>`"
)]
pub trait TimedOut {
    /// The outcome.
    fn timed_out(timeout: crate::Timeout) -> Self;
}

impl<T, E: From<crate::Timeout>> TimedOut for Result<T, E> {
    #[inline]
    fn timed_out(timeout: crate::Timeout) -> Self {
        Err(E::from(timeout))
    }
}

/// `hard_timeout`'s outcome for the return type `R` (spanned at the
/// argument, so a type that cannot carry it is reported there).
#[inline]
pub fn timed_out<R: TimedOut>() -> fn(crate::Timeout) -> R {
    R::timed_out
}

/// The body of a `#[cached]` function, begun: the value of an in-process
/// hit, or the rest of the read (a small future). The macro matches on it,
/// so that the function's own future holds neither the value nor a future
/// of its size.
#[inline]
#[allow(clippy::too_many_arguments)]
pub fn cached<'a, S, R, L, Fut, G>(
    _shape: S,
    cache: Option<&'a Cache>,
    options: &'a CacheOptions,
    key: Key,
    version: Option<String>,
    share: Option<Sharer<R>>,
    typed: Option<Typed<S::Stored>>,
    tags: G,
    hard_timeout: Option<HardTimeout<R>>,
    load: L,
) -> Begun<R, Cached<impl Future<Output = R> + Unpin + 'a, impl Future<Output = R> + 'a>>
where
    S: Shape<R> + 'a,
    R: 'a,
    L: FnOnce() -> Fut + 'a,
    Fut: Future<Output = R> + 'a,
    G: FnOnce(Option<&S::Inner>) -> Links + 'a,
{
    match cache {
        Some(cache) => {
            let read = crate::cache::read::Read {
                key,
                options,
                version,
                share,
                typed,
                hard_timeout,
                soft: None,
            };
            match cache.read_through::<S, R, L, Fut, G>(read, tags, load) {
                Begun::Ready(value) => Begun::Ready(value),
                Begun::Pending(rest) => Begun::Pending(Cached::Read(rest)),
            }
        }
        None => {
            crate::status::record(crate::status::CacheStatus::Bypass);
            Begun::Pending(Cached::Uncached(Box::pin(crate::adaptive::ignored(load()))))
        }
    }
}

/// [`cached`] with `soft_timeout`: the read past the in-process check runs
/// on a task of its own, with the loader `own` makes (owning what it uses)
/// after that check missed.
#[allow(clippy::too_many_arguments)]
pub async fn cached_soft<S, R, O, L, Fut, G>(
    _shape: S,
    cache: Option<&Cache>,
    options: &CacheOptions,
    key: Key,
    version: Option<String>,
    share: Option<Sharer<R>>,
    typed: Option<Typed<S::Stored>>,
    tags: G,
    hard_timeout: Option<HardTimeout<R>>,
    soft_timeout: ::core::time::Duration,
    own: O,
) -> R
where
    O: FnOnce() -> L,
    S: Shape<R> + Send + 'static,
    S::Stored: Send,
    R: Send + Sync + 'static,
    L: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
    G: FnOnce(Option<&S::Inner>) -> Links + Send + 'static,
{
    match cache {
        Some(cache) => {
            let read = crate::cache::soft::Owned {
                key,
                version,
                share,
                typed,
                hard_timeout,
            };
            cache
                .read_soft::<S, R, O, L, Fut, G>(read, *options, soft_timeout, tags, own)
                .await
        }
        None => {
            crate::status::record(crate::status::CacheStatus::Bypass);
            crate::adaptive::ignored(own()()).await
        }
    }
}

/// Fails to compile, at the return type, when a batch read's return type
/// holds no pairs of id and value.
#[inline(always)]
pub fn assert_batch<R: Batch>() {}

/// The body of a `#[cached(batch, ...)]` function: `keys[i]` is the key of
/// `ids[i]`; `load` is called with the missing ids (once, and again only
/// for ids another caller was loading and did not store).
pub async fn cached_batch<R, L, Fut, G>(
    cache: Option<&Cache>,
    options: &CacheOptions,
    ids: Vec<R::Key>,
    keys: Vec<String>,
    links: G,
    mut load: L,
) -> R
where
    R: Batch,
    R::Key: Clone + Eq + ::core::hash::Hash,
    R::Value: ::serde::Serialize + ::serde::de::DeserializeOwned,
    L: FnMut(Vec<R::Key>) -> Fut,
    Fut: Future<Output = R>,
    G: Fn(&R::Key, &R::Value) -> Links,
{
    // The body is never asked for nothing (an empty `IN ()` is often a
    // syntax error).
    if ids.is_empty() {
        return R::from_pairs(Ok(Vec::new()));
    }
    let Some(cache) = cache else {
        crate::status::record(crate::status::CacheStatus::Bypass);
        return crate::adaptive::ignored(load(ids)).await;
    };
    R::from_pairs(
        cache
            .read_batch(options, ids, keys, links, |missing| {
                let loading = load(missing);
                async move { loading.await.into_pairs() }
            })
            .await,
    )
}

/// The rest of a read [`cached`] began.
#[derive(Debug)]
pub enum Cached<A, B> {
    /// Through the cache.
    Read(A),
    /// No cache configured: the body alone.
    Uncached(::core::pin::Pin<Box<B>>),
}

impl<A: Future + Unpin, B: Future<Output = A::Output>> Future for Cached<A, B> {
    type Output = A::Output;

    #[inline]
    fn poll(
        self: ::core::pin::Pin<&mut Self>,
        cx: &mut ::core::task::Context<'_>,
    ) -> ::core::task::Poll<A::Output> {
        match self.get_mut() {
            Cached::Read(read) => ::core::pin::Pin::new(read).poll(cx),
            Cached::Uncached(load) => load.as_mut().poll(cx),
        }
    }
}

/// What an `#[invalidates]`/`#[cache_put]` function changes once its body
/// has succeeded: its invalidations and puts, grouped by cache, each group
/// applied in one step (see `Cache::change`: invalidations, then puts).
#[derive(Debug, Default)]
pub struct Changes {
    held: Vec<crate::transaction::Held>,
}

impl Changes {
    pub fn new() -> Self {
        Changes::default()
    }

    fn on(&mut self, cache: &Cache) -> &mut crate::transaction::Held {
        let at = match self.held.iter().position(|h| h.cache.same_as(cache)) {
            Some(at) => at,
            None => {
                self.held.push(crate::transaction::Held {
                    cache: cache.clone(),
                    specs: Vec::new(),
                    puts: Vec::new(),
                });
                self.held.len() - 1
            }
        };
        &mut self.held[at]
    }

    /// One `#[invalidates]`.
    pub fn invalidate(
        &mut self,
        cache: Option<&Cache>,
        keys: Vec<String>,
        tags: Vec<String>,
        patterns: Vec<String>,
        bumps: Vec<String>,
        publish: Option<&'static str>,
    ) {
        let Some(cache) = cache else { return };
        self.on(cache).specs.push(crate::spec::Spec {
            keys,
            tags,
            patterns,
            bumps,
            publish: publish.map(str::to_owned),
        });
    }

    /// One `#[cache_put]`, as [`encode_put`] encoded it.
    pub fn put(&mut self, cache: Option<&Cache>, put: Option<crate::cache::Put>) {
        if let (Some(cache), Some(put)) = (cache, put) {
            self.on(cache).puts.push(put);
        }
    }

    /// Applies them, cache by cache, on a task of their own, so a caller
    /// that gives up (a request timeout dropping the future) cannot cancel
    /// changes whose write has already committed; the caller still waits.
    /// Inside `in_transaction`, held until the commit.
    pub async fn apply(self) {
        let now = self
            .held
            .into_iter()
            .filter_map(|held| crate::transaction::hold(held).err())
            .collect();
        crate::transaction::apply_detached(now).await;
    }
}

/// The ticket of a `#[cache_put]` function, taken before its body runs
/// (see [`Ticket`](crate::Ticket)).
pub async fn ticket(cache: Option<&Cache>) -> Option<crate::Ticket> {
    Some(cache?.ticket().await)
}

/// The store of a `#[cache_put]` function, encoded from its value (a value
/// that does not encode is reported and not stored, but its key is still
/// marked: the value it held is stale), after its `ticket`.
pub fn encode_put<T: ::serde::Serialize + ?Sized>(
    cache: Option<&Cache>,
    ticket: &Option<crate::Ticket>,
    key: String,
    value: &T,
    options: &CacheOptions,
    links: Links,
) -> Option<crate::cache::Put> {
    let cache = cache?;
    let put = match cache.encode_put(key.clone(), value, options, links) {
        Ok(put) => put,
        Err(e) => {
            cache.report("put", &e);
            crate::cache::Put::unencodable(key)
        }
    };
    Some(match ticket {
        Some(ticket) => put.after(ticket),
        None => put,
    })
}
