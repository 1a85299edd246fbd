//! Invalidation events from other services, waiting to be applied.
//!
//! The subscriber hands every valid event of this namespace to the inbox;
//! one task at a time per cache takes what is waiting and applies it in one
//! invalidation (one step on Redis for any number of events, plus a `SCAN`
//! per pattern), so a burst of events costs neither a task each nor a round
//! trip each. The task holds the cache weakly and ends when the inbox is
//! empty; the next event starts another.
//!
//! An event with an `id` is claimed first (`SET ns#evt:<id> NX PX 60000`),
//! so that of the instances that hear it, one applies it, and a second
//! delivery of the same id is skipped. An event without an id is applied
//! every time it is heard, by every instance (applying twice is harmless;
//! not applying a real second write is not).
//!
//! Past `BOUND` waiting events, a new one is merged into the last (each
//! name once, and without an id, since a claim would then cover more than
//! its own event): what waits grows with the distinct names, not with the
//! number of events, and nothing is dropped.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cache::{Cache, WeakCache};
use crate::events::InvalidationEvent;
use crate::invalidation::Spec;
use crate::stats::Stats;

/// The most events kept apart; past it they are merged.
const BOUND: usize = 10_000;
/// The most events applied in one invalidation.
const BATCH: usize = 256;

#[derive(Debug, Default)]
pub(crate) struct Inbox {
    queue: Mutex<VecDeque<InvalidationEvent>>,
    /// Whether a task is applying what waits.
    working: AtomicBool,
}

impl Inbox {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<InvalidationEvent>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, event: InvalidationEvent) {
        let mut queue = self.queue();
        let full = queue.len() >= BOUND;
        match queue.back_mut() {
            Some(last) if full => merge(last, event),
            _ => queue.push_back(event),
        }
    }

    fn take(&self) -> Vec<InvalidationEvent> {
        let mut queue = self.queue();
        let n = queue.len().min(BATCH);
        queue.drain(..n).collect()
    }

    /// How many events wait.
    pub(crate) fn len(&self) -> usize {
        self.queue().len()
    }
}

/// Adds what `event` names to `into` (each name once); the result has no
/// id.
fn merge(into: &mut InvalidationEvent, event: InvalidationEvent) {
    into.id = None;
    for (mine, theirs) in [
        (&mut into.keys, event.keys),
        (&mut into.tags, event.tags),
        (&mut into.patterns, event.patterns),
        (&mut into.bumps, event.bumps),
    ] {
        for name in theirs {
            if !mine.contains(&name) {
                mine.push(name);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, id: Option<&str>) -> InvalidationEvent {
        InvalidationEvent {
            v: 1,
            namespace: "ns".into(),
            event: "e".into(),
            entity: String::new(),
            keys: vec![key.into()],
            tags: Vec::new(),
            patterns: Vec::new(),
            bumps: Vec::new(),
            ts: 0,
            instance: String::new(),
            id: id.map(str::to_owned),
            applied: false,
        }
    }

    #[test]
    fn past_the_bound_events_merge_and_lose_their_id() {
        let inbox = Inbox::default();
        for i in 0..BOUND + 50 {
            inbox.push(event(&format!("k{}", i % (BOUND + 10)), Some("id")));
        }
        assert_eq!(inbox.len(), BOUND, "nothing past the bound is kept apart");
        let queue = inbox.queue();
        let last = queue.back().unwrap();
        assert_eq!(last.id, None, "a merged event is applied without a claim");
        // k9999, then k10000..k10009 and k0..k39 merged in.
        assert_eq!(last.keys.len(), 51, "each name once, none dropped");
        assert_eq!(queue.front().unwrap().id.as_deref(), Some("id"));
    }
}
