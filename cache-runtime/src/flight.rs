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
//!
//! A caller whose read missed just before a leader landed, but who reaches
//! the table just after the leader left it, would lead a second flight and
//! load again. So landed values stay findable for a moment (`RECENT`): such
//! a caller takes one if its own read saw no invalidation the leader's read
//! did not (the same token rule as for waiters).

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

/// What a leader left for its waiters.
#[derive(Clone)]
pub(crate) enum Landed {
    /// The stored form (an envelope), to decode, and the fill token of the
    /// leader's read: a waiter whose own read saw a later invalidation
    /// (a greater token) does not take it.
    /// `stored`: the store holds it too (only such a value is offered to
    /// callers that come after the landing).
    Value {
        bytes: Bytes,
        token: u64,
        stored: bool,
    },
    /// The whole return value, for types that can be shared, and the
    /// leader's fill token (the same rule applies).
    Shared(Arc<dyn Any + Send + Sync>, u64),
    /// Nothing to share: load again.
    Retry,
}

type Slot = Arc<watch::Sender<Option<Landed>>>;

/// How long a landed value can still be joined.
const RECENT: Duration = Duration::from_millis(200);
/// Past this many, landed values older than `RECENT` are swept on landing.
const SWEEP_AT: usize = 256;

#[derive(Default)]
pub(crate) struct Flights {
    inflight: Mutex<HashMap<String, Slot>>,
    /// Values landed lately: their slot, the token of their read, when.
    recent: Mutex<HashMap<String, (Slot, u64, Instant)>>,
}

impl std::fmt::Debug for Flights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights").finish_non_exhaustive()
    }
}

pub(crate) enum Role<'a> {
    Leader(Leader<'a>),
    Waiter(watch::Receiver<Option<Landed>>),
    /// A value landed a moment ago (the receiver already holds it).
    Landed(watch::Receiver<Option<Landed>>),
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

    fn recent(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Slot, u64, Instant)>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leads the flight for `key`, or waits on the one in the air, or takes
    /// a value landed a moment ago by a leader whose read was not older
    /// than the caller's (`token`: the caller's read's; `None`, its read
    /// failed).
    pub(crate) fn join(&self, key: &str, token: Option<u64>) -> Role<'_> {
        let mut map = self.map();
        if let Some(slot) = map.get(key) {
            return Role::Waiter(slot.subscribe());
        }
        if let Some(token) = token
            && let Some((slot, landed, at)) = self.recent().get(key)
            && fresh_enough(*landed, token)
            && at.elapsed() < RECENT
        {
            return Role::Landed(slot.subscribe());
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
        // Sent before leaving the table, so whoever finds the slot (in the
        // table or among the recent ones) finds the value in it.
        let token = match &landed {
            Landed::Value {
                token,
                stored: true,
                ..
            } => Some(*token),
            _ => None,
        };
        self.slot.send_replace(Some(landed));
        let mut map = self.flights.map();
        if map
            .get(&self.key)
            .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            map.remove(&self.key);
        }
        let mut recent = self.flights.recent();
        match token {
            Some(token) => {
                if recent.len() >= SWEEP_AT {
                    recent.retain(|_, (_, _, at)| at.elapsed() < RECENT);
                }
                recent.insert(self.key.clone(), (self.slot.clone(), token, Instant::now()));
            }
            // Nothing to take (not stored: the next caller loads): an older
            // landing must not be taken either.
            None => {
                recent.remove(&self.key);
            }
        }
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.finish(Landed::Retry);
    }
}

/// Whether a value loaded after reading fill token `landed` may answer a
/// caller whose own token (read after its own read) is `mine`: no
/// invalidation came between the two. Tokens of two epochs (Redis lost its
/// data between them) are never comparable.
pub(crate) fn fresh_enough(landed: u64, mine: u64) -> bool {
    landed >> 32 == mine >> 32 && landed >= mine
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
        let Role::Leader(leader) = flights.join("k", Some(0)) else {
            panic!("first caller leads")
        };
        let Role::Waiter(rx) = flights.join("k", Some(0)) else {
            panic!("second caller waits")
        };
        assert_eq!(flights.in_air(), 1);
        leader.land(Landed::Value {
            bytes: Bytes::from_static(b"v"),
            token: 7,
            stored: true,
        });
        assert_eq!(flights.in_air(), 0, "a landed flight leaves the map");
        match wait(rx).await {
            Landed::Value { bytes, token, .. } => assert_eq!((&bytes[..], token), (&b"v"[..], 7)),
            _ => panic!("expected the value"),
        }
        assert!(
            matches!(flights.join("k", Some(8)), Role::Leader(_)),
            "the next miss that saw a later invalidation leads a new flight"
        );
    }

    fn value(token: u64) -> Landed {
        Landed::Value {
            bytes: Bytes::from_static(b"v"),
            token,
            stored: true,
        }
    }

    #[tokio::test]
    async fn a_caller_that_read_before_a_landing_takes_it() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join("k", Some(7)) else {
            panic!("first caller leads")
        };
        leader.land(value(7));
        // Read (and missed) before the landing, joins after it.
        let Role::Landed(rx) = flights.join("k", Some(7)) else {
            panic!("the landed value is taken, not loaded again")
        };
        assert!(matches!(wait(rx).await, Landed::Value { token: 7, .. }));
        assert!(
            matches!(flights.join("k", Some(8)), Role::Leader(_)),
            "a caller that saw a later invalidation loads"
        );
        assert!(
            matches!(flights.join("k", None), Role::Leader(_)),
            "so does one whose read failed"
        );
    }

    #[test]
    fn tokens_of_two_epochs_are_never_comparable() {
        let (old, new) = (7 << 32, 3 << 32);
        assert!(fresh_enough(old + 5, old + 5));
        assert!(
            !fresh_enough(old + 5, old + 6),
            "an invalidation came between"
        );
        assert!(
            !fresh_enough(old + 5, new + 1),
            "Redis lost its data between the two: a lower epoch is not older"
        );
        assert!(!fresh_enough(old + 5, 0), "no number at all: data lost");
        assert!(fresh_enough(0, 0));
        assert!(fresh_enough(4, 3), "the in-process store's plain numbers");
    }

    #[tokio::test]
    async fn only_a_recent_value_is_taken() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join("k", Some(1)) else {
            panic!("first caller leads")
        };
        leader.land(value(1));
        let Role::Leader(leader) = flights.join("other", Some(1)) else {
            panic!("another key leads")
        };
        leader.land(Landed::Retry);
        assert!(
            matches!(flights.join("other", Some(1)), Role::Leader(_)),
            "nothing to take after a Retry"
        );
        let Role::Leader(leader) = flights.join("unstored", Some(1)) else {
            panic!("leads")
        };
        leader.land(Landed::Value {
            bytes: Bytes::from_static(b"v"),
            token: 1,
            stored: false,
        });
        assert!(
            matches!(flights.join("unstored", Some(1)), Role::Leader(_)),
            "a value the store does not hold is loaded again by the next caller"
        );
        std::thread::sleep(RECENT + Duration::from_millis(50)); // the landing ages
        assert!(matches!(flights.join("k", Some(1)), Role::Leader(_)));
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_waiters() {
        let flights = Flights::default();
        let leader = flights.join("k", Some(0));
        let Role::Waiter(rx) = flights.join("k", Some(0)) else {
            panic!("second caller waits")
        };
        drop(leader); // the leader's future was cancelled
        assert!(matches!(wait(rx).await, Landed::Retry));
        assert_eq!(flights.in_air(), 0);
    }
}
