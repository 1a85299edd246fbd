//! What pub/sub messages do to a cache (`CacheHooks`, the subscriber's
//! hooks): proofs of life and coherence messages for the in-process tier,
//! lost messages, events from other services (applied through the inbox).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::InvalidationEvent;
use crate::stats::Stats;
use crate::store::Store;

use super::*;
use crate::spec::Spec;
use std::sync::atomic::Ordering;

/// How long an applied foreign event is remembered (so that the other
/// instances, which heard it too, skip it).
#[cfg(feature = "redis")]
const EVENT_CLAIM_TTL: Duration = Duration::from_secs(60);

/// How often the subscriber checks that its connection still answers.
#[cfg(feature = "redis")]
const SUBSCRIBER_PING: Duration = Duration::from_secs(1);

/// What the subscriber's messages do to a cache (held weakly: the
/// subscriber does not keep a dropped cache alive).
#[cfg(feature = "redis")]
struct CacheHooks {
    cache: WeakCache,
}

#[cfg(feature = "redis")]
impl crate::subscriber::Hooks for CacheHooks {
    fn connected(&self) {
        let Some(cache) = self.cache.upgrade() else {
            return;
        };
        // The server may have changed while the link was down: its epoch,
        // and its settings.
        cache.inner.store.epoch().forget();
        cache.start_eviction_check();
        if let Some(tier) = cache.tier() {
            tier.connected();
            // Where the numbers start, before a second can pass.
            let check = cache.clone();
            tokio::spawn(async move { check.check_server().await });
        }
        Stats::add(&cache.inner.stats.subscriber_connects, 1);
        tracing::debug!(target: "cache_runtime", namespace = cache.namespace(), "subscribed");
    }

    fn disconnected(&self) {
        if let Some(cache) = self.cache.upgrade() {
            cache.inner.store.epoch().forget();
            if let Some(tier) = cache.tier() {
                tier.disconnected();
            }
            tracing::warn!(target: "cache_runtime", namespace = cache.namespace(), "pub/sub connection lost; the in-process tier stops answering within its grace");
        }
    }

    fn alive(&self, at: Instant) {
        if let Some(cache) = self.cache.upgrade()
            && let Some(tier) = cache.tier()
        {
            tier.alive(at);
        }
    }

    fn coherence(&self, message: crate::subscriber::Coherence) {
        if let Some(cache) = self.cache.upgrade()
            && let Some(tier) = cache.tier()
        {
            if tier.heard_seq(message.seq) {
                cache.lost_messages();
            }
            for pattern in &message.patterns {
                tier.apply_pattern(pattern);
            }
            let versions: Vec<(String, u64)> = message
                .version_names
                .into_iter()
                .zip(message.version_values)
                .collect();
            tier.apply(&message.entries, &versions);
            Stats::add(&cache.inner.stats.coherence_applied, 1);
        }
    }

    fn echo(&self, message: crate::subscriber::Coherence) {
        if let Some(cache) = self.cache.upgrade()
            && let Some(tier) = cache.tier()
        {
            if tier.heard_seq(message.seq) {
                cache.lost_messages();
            }
            if message.nonce.is_empty() {
                return;
            }
            let versions = message
                .version_names
                .into_iter()
                .zip(message.version_values)
                .collect();
            tier.echo(&message.nonce, message.entries, versions);
        }
    }

    fn event(&self, channel: &str, event: Result<InvalidationEvent, serde_json::Error>) {
        let Some(cache) = self.cache.upgrade() else {
            return;
        };
        let event = event.map_err(|e| e.to_string()).and_then(|e| {
            if e.v == crate::events::EVENT_SCHEMA_VERSION {
                Ok(e)
            } else {
                Err(format!("unknown schema version {}", e.v))
            }
        });
        match event {
            Err(e) => {
                Stats::add(&cache.inner.stats.events_rejected, 1);
                tracing::warn!(target: "cache_runtime", channel, error = %e, "malformed invalidation event ignored");
            }
            // Already applied by the instance that published it; tiers hear
            // what it removed on the coherence channel.
            Ok(event) if event.applied => {}
            Ok(event) if cache.inner.apply_events => cache.receive_event(event),
            Ok(_) => {}
        }
    }
}

impl Cache {
    /// The cache's pub/sub connection (Redis only), started on first use.
    #[cfg(feature = "redis")]
    pub(crate) fn subscriber(&self) -> Option<&crate::subscriber::Subscriber> {
        let r = self.redis_store()?;
        Some(self.inner.subscriber.get_or_init(|| {
            if self.inner.tier.is_some() {
                self.start_watch();
            }
            let layout = &self.inner.layout;
            crate::subscriber::Subscriber::start(
                r.pubsub_clients().to_vec(),
                crate::subscriber::Channels {
                    landed: layout.landed_channel(),
                    coherence: layout.coherence_channel(),
                    events: layout.events_pattern(),
                },
                self.inner.coherence_id.clone(),
                Arc::new(CacheHooks {
                    cache: self.downgrade(),
                }),
                self.inner.timeout,
                self.inner.tier.as_ref().map_or(SUBSCRIBER_PING, |tier| {
                    // Often enough that a live link keeps the tier trusted.
                    (tier.grace() / 4).clamp(Duration::from_millis(10), SUBSCRIBER_PING)
                }),
            )
        }))
    }

    /// Claims the event `id` for this instance: whether it is the first to
    /// (on Redis, `SET NX` for `EVENT_CLAIM_TTL`, shared by every instance;
    /// in process there is nobody to share with). When the store does not
    /// answer, the event is applied anyway: twice is harmless, never is not.
    pub(crate) async fn claim_event(&self, id: &str) -> bool {
        let claim = self.inner.layout.event_claim(id);
        match self.inner.store.claim(&claim, EVENT_CLAIM_TTL).await {
            Ok(first) => first,
            Err(e) => {
                self.report("event claim", &e);
                true
            }
        }
    }
}

impl Cache {
    /// Keeps an event from another service to apply, and starts the task
    /// that applies it if none is running.
    pub(crate) fn receive_event(&self, event: InvalidationEvent) {
        if event.namespace != self.namespace() {
            return;
        }
        let inbox = self.inbox();
        inbox.push(event);
        if !inbox.working.swap(true, Ordering::AcqRel) {
            let weak = self.downgrade();
            tokio::spawn(apply_waiting(weak));
        }
    }

    /// Applies a batch of events: claims those with an id (skipping those
    /// another instance, or an earlier delivery, claimed), then one
    /// invalidation for the rest. A failure keeps it in the outbox.
    async fn apply_events(&self, events: Vec<InvalidationEvent>) {
        let mut specs = Vec::with_capacity(events.len());
        for event in events {
            if let Some(id) = &event.id
                && !self.claim_event(id).await
            {
                continue;
            }
            specs.push(Spec {
                keys: event.keys,
                tags: event.tags,
                patterns: event.patterns,
                bumps: event.bumps,
                publish: None,
            });
        }
        let applied = specs.len() as u64;
        if applied == 0 {
            return;
        }
        match self.change(specs, Vec::new(), true).await {
            Ok(_) => Stats::add(&self.stats_ref().events_applied, applied),
            Err(e) => self.report("event", &e),
        }
    }
}

/// Applies what waits in the inbox, batch after batch, until it is empty or
/// the cache is gone.
async fn apply_waiting(weak: WeakCache) {
    loop {
        let Some(cache) = weak.upgrade() else {
            return;
        };
        let batch = cache.inbox().take();
        if batch.is_empty() {
            let inbox = cache.inbox();
            inbox.working.store(false, Ordering::Release);
            // An event may have come after the last look but before the
            // flag was cleared: take the work back if so.
            if inbox.len() == 0 || inbox.working.swap(true, Ordering::AcqRel) {
                return;
            }
            continue;
        }
        cache.apply_events(batch).await;
    }
}
