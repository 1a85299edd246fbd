//! Transaction-aware invalidation: inside [`in_transaction`], the
//! invalidations of `#[invalidates]` functions and the stores of
//! `#[cache_put]` functions are held, and applied only when the
//! transaction's work returns `Ok` (after its commit); an `Err`, a panic or
//! a cancelled future discards them.
//!
//! The scope is a Tokio task-local: it covers the future passed in, not
//! tasks that future spawns. Nested scopes join the outermost one, so
//! everything is applied once, after the outermost work succeeds.

use std::future::Future;
use std::sync::Mutex;

use crate::cache::{Cache, Put};
use crate::spec::Spec;

tokio::task_local! {
    static SCOPE: Deferred;
}

/// Invalidations held by a scope.
#[derive(Default)]
struct Deferred {
    held: Mutex<Vec<Held>>,
}

/// The changes of one `#[invalidates]`/`#[cache_put]` function on one
/// cache, applied together (see [`Cache::change`]).
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) cache: Cache,
    pub(crate) specs: Vec<Spec>,
    pub(crate) puts: Vec<Put>,
}

impl Held {
    /// Runs it (a failure is reported, not returned: the work succeeded).
    pub(crate) async fn apply(self) {
        let op = if self.specs.is_empty() {
            "put"
        } else {
            "invalidate"
        };
        if let Err(e) = self.cache.change(self.specs, self.puts, true).await {
            self.cache.report(op, &e);
        }
    }
}

/// Merges consecutive changes of one cache into one (one step on Redis
/// instead of one each), unless that would reorder them: a change applies
/// its invalidations before its puts, so one with puts is not merged with
/// a later one that invalidates.
fn merge(held: Vec<Held>) -> Vec<Held> {
    let mut merged: Vec<Held> = Vec::with_capacity(held.len());
    for next in held {
        if let Some(last) = merged.last_mut()
            && last.cache.same_as(&next.cache)
            && (last.puts.is_empty() || next.specs.is_empty())
        {
            last.specs.extend(next.specs);
            last.puts.extend(next.puts);
            continue;
        }
        merged.push(next);
    }
    merged
}

/// Holds `held` in the current transaction scope; gives it back when there
/// is none.
// The `Err` hands the value back to the caller, which applies it: boxing it
// would cost an allocation per invalidation outside transactions.
#[allow(clippy::result_large_err)]
pub(crate) fn hold(held: Held) -> Result<(), Held> {
    let mut slot = Some(held);
    let in_scope = SCOPE
        .try_with(|scope| {
            if let Some(held) = slot.take() {
                scope
                    .held
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(held);
            }
        })
        .is_ok();
    match slot {
        Some(held) if !in_scope => Err(held),
        _ => Ok(()),
    }
}

/// Runs `work` with the invalidations of `#[invalidates]` functions called
/// inside it held back, and applies them only if it returns `Ok`: put the
/// database transaction's begin and commit inside `work`, and the cache
/// changes after the commit, never for a rolled-back write.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use cache_runtime::{Cache, cached, in_transaction, invalidates};
/// struct Posts { cache: Cache }
/// impl Posts {
///     #[cached(cache = self.cache, key = "post:{id}")]
///     async fn title(&self, id: u64) -> String { format!("post {id}") }
///
///     #[invalidates(cache = self.cache, keys = ["post:{id}"])]
///     async fn rename(&self, id: u64) -> Result<(), String> { Ok(()) }
/// }
/// let posts = Posts { cache: Cache::in_memory() };
/// posts.title(1).await;
/// let rolled_back: Result<(), String> = in_transaction(async {
///     posts.rename(1).await?;              // held
///     Err("constraint violated".to_string()) // the transaction rolls back
/// })
/// .await;
/// assert!(rolled_back.is_err());
/// assert!(posts.cache.get::<String>("post:1").await.is_some(), "nothing was invalidated");
///
/// in_transaction(async {
///     posts.rename(1).await?; // held
///     Ok::<_, String>(())     // committed: applied now
/// })
/// .await
/// .unwrap();
/// assert!(posts.cache.get::<String>("post:1").await.is_none());
/// # }
/// ```
pub async fn in_transaction<F, T, E>(work: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    // Nested: the outermost scope holds everything.
    if SCOPE.try_with(|_| ()).is_ok() {
        return work.await;
    }
    let (result, held) = SCOPE
        .scope(Deferred::default(), async {
            let result = work.await;
            let held = SCOPE.with(|scope| {
                std::mem::take(&mut *scope.held.lock().unwrap_or_else(|p| p.into_inner()))
            });
            (result, held)
        })
        .await;
    if result.is_ok() {
        // As outside a scope: the commit has happened.
        apply_detached(merge(held)).await;
    }
    result
}

/// Applies changes in order on a task of their own (when there is a
/// runtime), and waits for them: a caller that gives up after the write
/// committed (a request timeout dropping its future) must not cancel them.
/// A panic inside the task is already reported by tokio; the caller's own
/// result stands.
pub(crate) async fn apply_detached(held: Vec<Held>) {
    if held.is_empty() {
        return;
    }
    let apply = async move {
        for held in held {
            held.apply().await;
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn(apply).await),
        Err(_) => apply.await,
    }
}
