//! The soft timeout (`soft_timeout = "100ms"`): a caller that holds a copy
//! (a stale entry, one due for an early refresh, or a fail-safe copy) waits
//! at most this long for the loader; then the copy answers and the loader
//! goes on to fill, as every fill does (refused if an invalidation came
//! after the read).
//!
//! The loader outlives the call, so it cannot borrow from it: such a read
//! makes its in-process check and the store's lookup in the caller's task,
//! and goes on past a miss (or a stale entry) on a task of its own, which
//! owns the loader, and hands the caller either its outcome or, at the
//! soft timeout, the copy (`Answer`). A hit, in process or in the store,
//! never spawns and makes no loader.

use std::future::Future;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::{oneshot, watch};

use crate::flight::{self, Landed, Sharer};
use crate::shape::{Res, Shape};
use crate::status::CacheStatus;
use crate::store::Typed;
use crate::switch::Mode;

use super::fail_safe::{Failure, HardTimeout};
use super::read::Read;
use super::*;

/// What the caller of a read on its own task gets early: the copy, and
/// the status its read reports.
type Early<R> = (R, CacheStatus);

/// A read's soft timeout, and the way to answer its caller early.
#[derive(Debug)]
pub(crate) struct Soft<R> {
    after: Duration,
    answer: Option<oneshot::Sender<Early<R>>>,
}

/// Answers the caller of a read before the read ends.
pub(crate) struct Answer<R>(oneshot::Sender<Early<R>>);

impl<R> Answer<R> {
    /// The caller may be gone (dropped): the read goes on regardless.
    pub(crate) fn send(self, early: Early<R>) {
        let _ = self.0.send(early);
    }
}

impl<R> Soft<R> {
    /// The timeout and the answer, once.
    pub(crate) fn take(&mut self) -> Option<(Duration, Answer<R>)> {
        Some((self.after, Answer(self.answer.take()?)))
    }

    /// Waits for another caller's load of the same key, at most the soft
    /// timeout (`None` past it).
    pub(crate) async fn wait(&self, rx: watch::Receiver<Option<Landed>>) -> Option<Landed> {
        tokio::time::timeout(self.after, flight::wait(rx))
            .await
            .ok()
    }
}

/// What a read owns (all but its options): moved onto the read's task and
/// made a [`Read`] again there.
pub(crate) struct Owned<R, T> {
    pub(crate) key: crate::key::Key,
    pub(crate) version: Option<String>,
    pub(crate) share: Option<Sharer<R>>,
    pub(crate) typed: Option<Typed<T>>,
    pub(crate) hard_timeout: Option<HardTimeout<R>>,
}

impl<R, T> Owned<R, T> {
    fn read(self, options: &CacheOptions) -> Read<'_, R, T> {
        let mut read = Read::new(self.key, options);
        read.version = self.version;
        read.share = self.share;
        read.typed = self.typed;
        read.hard_timeout = self.hard_timeout;
        read
    }
}

impl<R, T> Read<'_, R, T> {
    fn owned(self) -> Owned<R, T> {
        Owned {
            key: self.key,
            version: self.version,
            share: self.share,
            typed: self.typed,
            hard_timeout: self.hard_timeout,
        }
    }
}

impl Cache {
    /// [`get_or_load`](Self::get_or_load) with a soft timeout: when the
    /// cached value is past its TTL but still at hand (within the options'
    /// [`stale`](CacheOptions::stale) or [`fail_safe`](CacheOptions::fail_safe)
    /// window, or due for an [`early`](CacheOptions::early) refresh) and
    /// the loader takes longer than `soft_timeout`, that value is returned
    /// and the loader goes on in the background, storing its value when it
    /// ends. The loader owns what it uses (`'static`): it outlives the call.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use cache_runtime::{Cache, CacheOptions};
    /// let cache = Cache::in_memory();
    /// let opts = CacheOptions::new("slow").ttl(Duration::from_millis(1)).fail_safe(Duration::from_secs(60));
    /// let fast = || async { Ok::<u32, String>(1) };
    /// assert_eq!(cache.get_or_load_soft("n", &opts, Duration::from_millis(10), fast).await, Ok(1));
    /// tokio::time::sleep(Duration::from_millis(5)).await; // past the TTL
    /// let slow = || async {
    ///     tokio::time::sleep(Duration::from_secs(60)).await;
    ///     Ok::<u32, String>(2)
    /// };
    /// let soon = cache.get_or_load_soft("n", &opts, Duration::from_millis(10), slow).await;
    /// assert_eq!(soon, Ok(1), "the copy answers; the loader goes on");
    /// # }
    /// ```
    pub async fn get_or_load_soft<T, E, F, Fut>(
        &self,
        key: &str,
        options: &CacheOptions,
        soft_timeout: Duration,
        load: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let read = Owned {
            key: crate::key::Key::from(key),
            version: None,
            share: None,
            typed: None,
            hard_timeout: None,
        };
        self.read_soft::<Res, _, _, _, _, _>(
            read,
            *options,
            soft_timeout,
            |_| Links::new(),
            || load,
        )
        .await
    }

    /// A read with a soft timeout: the in-process check and the store's
    /// lookup here, the rest on a task of its own (see the module's notes),
    /// with the loader `own` makes (only past a miss: a hit clones
    /// nothing).
    /// Without a runtime to spawn on, the read runs here, without the soft
    /// timeout. A caller dropped meanwhile does not stop the read: its
    /// loader runs to the end and fills.
    pub(crate) async fn read_soft<S, R, O, L, Fut, G>(
        &self,
        read: Owned<R, S::Stored>,
        options: CacheOptions,
        soft_timeout: Duration,
        tags: G,
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
        use tracing::Instrument as _;
        let inner = &*self.inner;
        let mode = crate::switch::mode(&inner.enabled);
        let read = read.read(&options);
        let version_key = read.version.as_deref().map(|v| inner.layout.version(v));
        if let Some(hit) = self.in_process_read::<S, R>(&read, version_key.as_deref(), mode) {
            return hit;
        }
        // Bypassed, refreshed, or distrusted while invalidations wait: no
        // copy answers early, so the read stays in the caller's task (and
        // its scopes: `refreshing` reaches reads inside the loader).
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(runtime) if mode == Mode::Normal && inner.outbox.is_empty() => runtime,
            _ => {
                return self
                    .read_remote::<S, R, L, Fut, G>(read, version_key, tags, own(), mode)
                    .await;
            }
        };
        // The store's lookup here: a fresh hit spawns nothing and makes no
        // loader.
        let span = self.read_span(&options, &read.key);
        let first = match self
            .first_step::<S, R>(&read, version_key.as_deref())
            .instrument(span.clone())
            .await
        {
            Ok(hit) => return hit,
            Err(first) => first,
        };
        // Past it: the loader takes what it uses.
        let load = own();
        let (tx, rx) = oneshot::channel();
        let owned = read.owned();
        let cache = self.clone();
        let task = async move {
            let mut read = owned.read(&options);
            read.soft = Some(Soft {
                after: soft_timeout,
                answer: Some(tx),
            });
            cache
                .read_network::<S, R, L, Fut, G>(read, version_key, tags, load, mode, Some(first))
                .await
        };
        let mut task = runtime.spawn(crate::status::with_cache_status(task.instrument(span)));
        tokio::select! {
            biased;
            Ok((value, status)) = rx => {
                crate::status::record(status);
                value
            }
            joined = &mut task => match joined {
                Ok((value, status)) => {
                    if let Some(status) = status {
                        crate::status::record(status);
                    }
                    value
                }
                Err(e) => match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(_) => panic!("the runtime shut down during a cached read"),
                },
            },
        }
    }

    /// The copy that answers a caller at the soft timeout, counted as the
    /// answer it is (fail-safe, stale, or an early refresh's hit).
    pub(crate) fn answer_early<S: Shape<R>, R>(
        &self,
        entry_key: &str,
        options: &CacheOptions,
        fallback: Option<S::Stored>,
        refreshing: Option<(S::Stored, bool)>,
    ) -> Early<R> {
        match (fallback, refreshing) {
            (Some(stored), _) => (
                self.serve_fail_safe::<S, R>(entry_key, options, stored, Failure::Slow),
                CacheStatus::FailSafe,
            ),
            (None, Some((stored, past_ttl))) => (
                self.serve_stale::<S, R>(options.name(), stored, past_ttl),
                if past_ttl {
                    CacheStatus::Stale
                } else {
                    CacheStatus::Hit
                },
            ),
            (None, None) => unreachable!("answered early only with a copy"),
        }
    }

    /// The loader a copy answered for at the soft timeout ended. Failed (an
    /// `Err`, a panic, the hard timeout), it is counted as a failed refresh
    /// and, after a fail-safe copy, holds the loader off for the throttle,
    /// as a failure seen in time does; otherwise nothing is held.
    pub(crate) fn after_soft_timeout(
        &self,
        entry_key: &str,
        options: &CacheOptions,
        fail_safe: bool,
        failed: bool,
    ) {
        let inner = &*self.inner;
        if failed {
            crate::stats::Stats::add(&inner.stats.refresh_failures, 1);
            if fail_safe {
                inner
                    .fail_safe
                    .hold(entry_key, options.fail_safe_throttle_choice());
            }
            tracing::warn!(target: "cache_runtime", name = options.name(), entry_key, "loader failed after its soft timeout; the copy answered");
        } else if fail_safe {
            inner.fail_safe.release(entry_key);
        }
    }
}
