//! Distributed locks: one loader per key across every process sharing the
//! store, and the plain lock API they are built on.
//!
//! A lock is a key `ns#lock:<name>` set with `SET NX PX` to a random token.
//! It is released by a compare-and-delete script, so a holder whose lease ran
//! out never deletes the lock of the caller that took it next; a holder that
//! dies simply lets the lease run out. While a `#[cached(lock =
//! "distributed")]` loader runs, its lease is renewed (compare-and-extend)
//! every third of the lease, so a slow loader keeps its lock and a crashed
//! one loses it within one lease.
//!
//! Waiting: a caller that finds the lock taken waits for the value to land.
//! The holder's fill (or its release, when nothing is stored) publishes the
//! entry's name on `ns#landed` in the same script; each cache keeps one
//! subscriber connection that forwards those names to its waiters. Waiters
//! also re-read at a slow interval (a quarter of the wait bound), in case a
//! message was lost, and run the loader themselves when the bound passes.

use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::error::Error;
use crate::options::CacheOptions;
use crate::stats::Stats;
use crate::store::Store;

use super::*;

/// A caller's wait for another process's loader, across re-reads.
#[derive(Default)]
pub(crate) struct LockWait {
    deadline: Option<Instant>,
    #[cfg(feature = "redis")]
    landings: Option<broadcast::Receiver<String>>,
    waited: bool,
}

/// What the distributed lock says a flight leader does next.
pub(crate) enum Step {
    /// Load: with the lock, or without it (the store failed or the wait
    /// reached its bound).
    Load(Option<LockGuard>),
    /// Read again: the entry landed, or may have.
    ReadAgain,
}

impl Cache {
    /// One step of the distributed lock for the leader of a flight: take the
    /// lock, or wait (bounded) for the holder's value to land. A caller with
    /// a stale value does not wait: it serves that value.
    pub(crate) async fn distributed_step(
        &self,
        key: &str,
        entry_key: &str,
        options: &CacheOptions,
        check_entry: bool,
        has_stale: bool,
        waiting: &mut LockWait,
    ) -> Step {
        let inner = &*self.inner;
        let now = Instant::now();
        // A caller that waited past half the fill window could load a value
        // too late to store: wait at most that long.
        let bound = options.lock_wait_bound().min(inner.fill_window / 2);
        let deadline = *waiting
            .deadline
            .get_or_insert(crate::ttl::after(now, bound));
        // Listen before trying, so a landing right after the try is heard.
        #[cfg(feature = "redis")]
        if !has_stale
            && waiting.landings.is_none()
            && let Some(subscriber) = self.subscriber()
        {
            waiting.landings = Some(subscriber.landings());
        }
        // Ask whether the entry is there only once: a value that does not
        // decode must not send this caller round in circles.
        let unless_exists = check_entry.then_some(entry_key);
        let announce = Some((inner.layout.landed_channel(), entry_key.to_owned()));
        let attempt = self
            .lock_named(
                inner.layout.lock(key),
                inner.lock_lease,
                unless_exists,
                announce,
            )
            .await;
        match attempt {
            Ok(Attempt::Held(guard)) => Step::Load(Some(guard)),
            Ok(Attempt::Landed) => Step::ReadAgain,
            Err(e) => {
                self.report("lock", &e);
                Step::Load(None)
            }
            Ok(Attempt::Busy) if has_stale => Step::ReadAgain,
            Ok(Attempt::Busy) => {
                let now = Instant::now();
                if now >= deadline {
                    Stats::add(&inner.stats.lock_timeouts, 1);
                    tracing::warn!(target: "cache_runtime", key, "gave up waiting for another process's loader; loading here");
                    return Step::Load(None);
                }
                if !std::mem::replace(&mut waiting.waited, true) {
                    Stats::add(&inner.stats.lock_waits, 1);
                }
                // Re-read at a slow interval in case an announcement is lost.
                let poll = (bound / 4).max(Duration::from_millis(10));
                let slice = poll.min(deadline - now);
                #[cfg(feature = "redis")]
                let woken = match waiting.landings.as_mut() {
                    Some(rx) => crate::cache::lock::wait_for_landing(rx, entry_key, slice).await,
                    None => {
                        tokio::time::sleep(slice).await;
                        false
                    }
                };
                #[cfg(not(feature = "redis"))]
                let woken = {
                    tokio::time::sleep(slice).await;
                    false
                };
                if woken {
                    Stats::add(&inner.stats.lock_woken, 1);
                }
                Step::ReadAgain
            }
        }
    }
}

/// A held lock. Release it with [`release`](Self::release); dropping it
/// releases it in the background (when a Tokio runtime is running), and a
/// process that dies lets its lease run out.
#[derive(Debug)]
#[must_use = "a lock is released when dropped"]
pub struct LockGuard {
    cache: Cache,
    name: String,
    token: String,
    lease: Duration,
    /// (channel, entry) to announce on release: a loader's landing.
    announce: Option<(String, String)>,
    released: bool,
}

impl LockGuard {
    /// The random token this lock is held with.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Extends the lease by its full length, if the lock is still held with
    /// this guard's token. `Ok(false)`: the lease ran out and the lock is
    /// gone or someone else's.
    pub async fn renew(&self) -> Result<bool, Error> {
        self.cache
            .store()
            .renew(&self.name, &self.token, self.lease)
            .await
    }

    /// Releases the lock if it is still held with this guard's token (never
    /// someone else's). `Ok(false)`: the lease had run out.
    pub async fn release(mut self) -> Result<bool, Error> {
        let released = unlock(&self.cache, &self.name, &self.token, self.announce.as_ref()).await;
        // Only once it answered: if this future is dropped first, or the
        // release fails, the drop releases it again.
        if released.is_ok() {
            self.released = true;
        }
        released
    }

    /// Marks the lock as released by another step (a fill that released it
    /// in the same script).
    pub(crate) fn released_elsewhere(mut self) {
        self.released = true;
    }

    pub(crate) fn release_parts(&self) -> crate::store::Release {
        crate::store::Release {
            lock: self.name.clone(),
            token: self.token.clone(),
            channel: self
                .announce
                .as_ref()
                .map(|(c, _)| c.clone())
                .unwrap_or_default(),
        }
    }

    /// Renews the lease every third of its length, for as long as it is
    /// polled (alongside a loader).
    pub(crate) async fn keep_alive(&self) {
        loop {
            tokio::time::sleep(self.lease / 3).await;
            match self.renew().await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(target: "cache_runtime", lock = %self.name, "lock lease ran out while loading; another process may load too");
                    std::future::pending::<()>().await;
                }
                Err(e) => self.cache.report("lock renewal", &e),
            }
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (cache, name, token) = (
                self.cache.clone(),
                std::mem::take(&mut self.name),
                std::mem::take(&mut self.token),
            );
            let announce = self.announce.take();
            handle.spawn(async move {
                if let Err(e) = unlock(&cache, &name, &token, announce.as_ref()).await {
                    cache.report("lock release", &e);
                }
            });
        }
    }
}

async fn unlock(
    cache: &Cache,
    name: &str,
    token: &str,
    announce: Option<&(String, String)>,
) -> Result<bool, Error> {
    let (channel, entry) = announce.map_or(("", ""), |(c, e)| (c.as_str(), e.as_str()));
    cache.store().unlock(name, token, channel, entry).await
}

impl Cache {
    /// Takes the lock `name` for `lease` unless another caller (in any
    /// process sharing the store) holds it: `Ok(None)`. The lock is a
    /// `SET NX PX` with a random token, released by compare-and-delete.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), cache_runtime::Error> {
    /// use std::time::Duration;
    /// let cache = cache_runtime::Cache::in_memory();
    /// let lock = cache.try_lock("report:daily", Duration::from_secs(30)).await?.expect("free");
    /// assert!(cache.try_lock("report:daily", Duration::from_secs(30)).await?.is_none());
    /// assert!(lock.release().await?);
    /// assert!(cache.try_lock("report:daily", Duration::from_secs(30)).await?.is_some());
    /// # Ok(()) }
    /// ```
    pub async fn try_lock(&self, name: &str, lease: Duration) -> Result<Option<LockGuard>, Error> {
        match self
            .lock_named(self.user_lock_name(name), lease, None, None)
            .await?
        {
            Attempt::Held(guard) => Ok(Some(guard)),
            Attempt::Busy | Attempt::Landed => Ok(None),
        }
    }

    /// Takes the lock `name`, unless it is held or (on Redis) the entry
    /// `unless_exists` is there. The guard announces `announce` on release.
    pub(crate) async fn lock_named(
        &self,
        name: String,
        lease: Duration,
        unless_exists: Option<&str>,
        announce: Option<(String, String)>,
    ) -> Result<Attempt, Error> {
        // The guard exists before the request is sent: if the reply is lost
        // (a timeout) or the caller is cancelled while waiting, the lock may
        // be held by this token, and dropping the guard releases it
        // (compare-and-delete, so it is harmless when it was not taken).
        let guard = LockGuard {
            cache: self.clone(),
            name,
            token: format!("{}/{:016x}", self.instance(), fastrand::u64(..)),
            lease,
            announce,
            released: false,
        };
        let taken = self
            .store()
            .try_lock(&guard.name, &guard.token, lease, unless_exists)
            .await?;
        Ok(match taken {
            1 => Attempt::Held(guard),
            2 => {
                guard.released_elsewhere();
                Attempt::Landed
            }
            _ => {
                guard.released_elsewhere();
                Attempt::Busy
            }
        })
    }
}

/// What an attempt at a loader's lock found.
pub(crate) enum Attempt {
    Held(LockGuard),
    /// Someone else holds it.
    Busy,
    /// The entry is there now (it landed since the read).
    Landed,
}

#[cfg(feature = "redis")]
/// Waits until `entry` lands (a message names it), or `bound` passes.
/// `true` when a landing woke the caller.
pub(crate) async fn wait_for_landing(
    rx: &mut broadcast::Receiver<String>,
    entry: &str,
    bound: Duration,
) -> bool {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(name) if name == entry => return true,
                Ok(_) => {}
                // Missed messages may include ours: re-read.
                Err(broadcast::error::RecvError::Lagged(_)) => return true,
                Err(broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    tokio::time::timeout(bound, wait).await.unwrap_or(false)
}
