//! The watch of a cache with an in-process tier on what its subscriber
//! cannot tell it: every `CHECK_EVERY`, and at once after each
//! (re)subscription, it reads the namespace's sequence number, so that the
//! tier notices coherence messages it missed while its link stayed up (a
//! message lost between the nodes of a cluster): see `tier`.
//!
//! It runs on a task of its own, holding the cache weakly: it ends with the
//! cache.

use std::time::Duration;

use crate::cache::{Cache, WeakCache};

/// How often the watch checks.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(1);

impl Cache {
    /// Starts the watch (on the current runtime).
    pub(crate) fn start_watch(&self) {
        tokio::spawn(run(self.downgrade()));
    }

    /// One check: the sequence number, against what the tier heard.
    pub(crate) async fn check_server(&self) {
        let Some(seq) = self.read_token().await else {
            return;
        };
        if let Some(tier) = self.tier()
            && tier.checked(seq)
        {
            self.lost_messages();
        }
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
