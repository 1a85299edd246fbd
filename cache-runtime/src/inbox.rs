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
use std::sync::atomic::AtomicBool;

use crate::events::InvalidationEvent;

/// The most events kept apart; past it they are merged.
const BOUND: usize = 10_000;
/// The most events applied in one invalidation.
const BATCH: usize = 256;

#[derive(Debug, Default)]
pub(crate) struct Inbox {
    queue: Mutex<VecDeque<InvalidationEvent>>,
    /// Whether a task is applying what waits.
    pub(crate) working: AtomicBool,
}

impl Inbox {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<InvalidationEvent>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(&self, event: InvalidationEvent) {
        let mut queue = self.queue();
        let full = queue.len() >= BOUND;
        match queue.back_mut() {
            Some(last) if full => merge(last, event),
            _ => queue.push_back(event),
        }
    }

    pub(crate) fn take(&self) -> Vec<InvalidationEvent> {
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
