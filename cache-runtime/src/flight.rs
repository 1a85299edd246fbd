//! Single-flight: concurrent misses of one key in one process run the loader
//! once; the others wait for its outcome.
//!
//! The first caller to miss becomes the *leader*: it loads, fills the store,
//! then *lands* the outcome on a `watch` channel. Waiters decode the landed
//! bytes (so no `Clone` bound is needed on the value). An outcome that is not
//! stored (an `Err`) is handed over when the return type can be shared
//! (`Clone + Send + Sync + 'static`, detected where the macro expands);
//! otherwise waiters retry, one new leader at a time. A leader that is
//! cancelled (its future dropped) lands `Retry` from its drop guard, so it
//! never strands the waiters.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

/// What a leader left for its waiters.
#[derive(Clone)]
pub(crate) enum Landed {
    /// The stored form (an envelope), to decode, and the fill token of the
    /// leader's read: a waiter whose own read saw a later invalidation
    /// (a greater token) does not take it.
    Value { bytes: Bytes, token: u64 },
    /// The whole return value, for types that can be shared.
    Shared(Arc<dyn Any + Send + Sync>),
    /// Nothing to share: load again.
    Retry,
}

type Slot = Arc<watch::Sender<Option<Landed>>>;

#[derive(Default)]
pub(crate) struct Flights {
    inflight: Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for Flights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights").finish_non_exhaustive()
    }
}

pub(crate) enum Role<'a> {
    Leader(Leader<'a>),
    Waiter(watch::Receiver<Option<Landed>>),
}

/// The leader of a flight; lands `Retry` if dropped before landing.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: String,
    slot: Slot,
    landed: bool,
}

impl Flights {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leads the flight for `key`, or waits on the one in the air.
    pub(crate) fn join(&self, key: &str) -> Role<'_> {
        let mut map = self.map();
        if let Some(slot) = map.get(key) {
            return Role::Waiter(slot.subscribe());
        }
        let slot: Slot = Arc::new(watch::channel(None).0);
        map.insert(key.to_owned(), slot.clone());
        Role::Leader(Leader {
            flights: self,
            key: key.to_owned(),
            slot,
            landed: false,
        })
    }

    #[cfg(test)]
    pub(crate) fn in_air(&self) -> usize {
        self.map().len()
    }
}

impl Leader<'_> {
    pub(crate) fn land(mut self, landed: Landed) {
        self.finish(landed);
    }

    fn finish(&mut self, landed: Landed) {
        if self.landed {
            return;
        }
        self.landed = true;
        {
            let mut map = self.flights.map();
            if map
                .get(&self.key)
                .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
            {
                map.remove(&self.key);
            }
        }
        self.slot.send_replace(Some(landed));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.finish(Landed::Retry);
    }
}

/// Waits for the leader's outcome (`Retry` if it vanished).
pub(crate) async fn wait(mut rx: watch::Receiver<Option<Landed>>) -> Landed {
    match rx.wait_for(Option::is_some).await {
        Ok(landed) => landed.clone().unwrap_or(Landed::Retry),
        Err(_) => Landed::Retry,
    }
}

/// Hands whole return values between tasks, for types that allow it.
pub struct Sharer<R> {
    pub(crate) pack: fn(&R) -> Arc<dyn Any + Send + Sync>,
    pub(crate) unpack: fn(&(dyn Any + Send + Sync)) -> Option<R>,
}

impl<R> std::fmt::Debug for Sharer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sharer")
    }
}

impl<R: Clone + Send + Sync + 'static> Sharer<R> {
    /// A sharer that clones.
    pub fn cloning() -> Self {
        Sharer {
            pack: |r| Arc::new(r.clone()),
            unpack: |any| any.downcast_ref::<R>().cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_get_what_the_leader_lands() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!("first caller leads")
        };
        let Role::Waiter(rx) = flights.join("k") else {
            panic!("second caller waits")
        };
        assert_eq!(flights.in_air(), 1);
        leader.land(Landed::Value {
            bytes: Bytes::from_static(b"v"),
            token: 7,
        });
        assert_eq!(flights.in_air(), 0, "a landed flight leaves the map");
        match wait(rx).await {
            Landed::Value { bytes, token } => assert_eq!((&bytes[..], token), (&b"v"[..], 7)),
            _ => panic!("expected the value"),
        }
        assert!(
            matches!(flights.join("k"), Role::Leader(_)),
            "the next miss leads a new flight"
        );
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_waiters() {
        let flights = Flights::default();
        let leader = flights.join("k");
        let Role::Waiter(rx) = flights.join("k") else {
            panic!("second caller waits")
        };
        drop(leader); // the leader's future was cancelled
        assert!(matches!(wait(rx).await, Landed::Retry));
        assert_eq!(flights.in_air(), 0);
    }
}
