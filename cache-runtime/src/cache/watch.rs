//! What a Redis cache checks about its server on its own:
//!
//! - its eviction settings, at build and after each (re)subscription
//!   (`INFO memory`, retried until answered): a `maxmemory` with a policy
//!   that may evict the markers is logged at `warn` and shown in
//!   `Cache::health()` (see [`Eviction`](crate::Eviction));
//! - with an in-process tier, every `CHECK_EVERY` and at once after each
//!   (re)subscription, the namespace's sequence number, so that the tier
//!   notices coherence messages it missed while its link stayed up (a
//!   message lost between the nodes of a cluster): see `tier`. The same
//!   read teaches the instance the server's epoch (see `epoch`).
//!
//! Each runs on a task of its own, holding the cache weakly: it ends with
//! the cache.

use std::time::Duration;

use crate::cache::{Cache, WeakCache};

/// How often the watch checks.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(1);

impl Cache {
    /// Reads the server's eviction settings, retrying until it answers.
    pub(crate) fn start_eviction_check(&self) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(check_eviction(self.downgrade()));
        }
    }

    /// Starts the watch (on the current runtime).
    pub(crate) fn start_watch(&self) {
        tokio::spawn(run(self.downgrade()));
    }

    /// One check: the sequence number, against what the tier heard.
    pub(crate) async fn check_server(&self) {
        let Some(token) = self.read_token().await else {
            return;
        };
        if let Some(tier) = self.tier()
            && tier.checked(token.seq)
        {
            self.lost_messages();
        }
    }
}

async fn check_eviction(cache: WeakCache) {
    let mut pause = Duration::from_millis(100);
    loop {
        let Some(cache) = cache.upgrade() else {
            return;
        };
        let Some(store) = cache.redis_store() else {
            return;
        };
        let slot = cache.layout().seq();
        match cache
            .bounded("eviction settings", store.memory_policy(&slot))
            .await
        {
            Ok((maxmemory, policy)) => {
                let eviction = crate::health::Eviction::new(maxmemory, policy);
                if eviction.evicts_markers {
                    tracing::warn!(target: "cache_runtime", namespace = cache.namespace(), maxmemory, policy = %eviction.policy, "the Redis server may evict the markers that refuse stale fills (maxmemory with an evicting policy): race-free fills need maxmemory 0 or maxmemory-policy noeviction");
                }
                *cache
                    .inner_eviction()
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(eviction);
                return;
            }
            // Not allowed (an ACL without `+info`): nothing to learn.
            Err(e) if e.kind() == crate::ErrorKind::Store => {
                tracing::info!(target: "cache_runtime", namespace = cache.namespace(), error = %e, "cannot read the server's eviction settings");
                return;
            }
            Err(_) => {}
        }
        drop(cache);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

async fn run(cache: WeakCache) {
    let mut every = tokio::time::interval(CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        cache.check_server().await;
    }
}
