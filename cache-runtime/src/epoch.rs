//! What this instance knows of its Redis server's epoch.
//!
//! A namespace's sequence number carries an epoch in its high 32 bits,
//! drawn anew whenever the server's data may have been lost or rolled back:
//! the server has no number (it started empty, lost its data, was flushed),
//! or the number was written by another server process (the scripts keep
//! the server's `run_id` beside the number: a restart from an RDB or AOF
//! snapshot, or a failover to a replica that is behind, brings the number
//! back from the past under another `run_id`). Markers written since are
//! gone then, so:
//!
//! - a fill whose token is of another epoch is refused (the fill script
//!   checks, and draws the new epoch if it is the first to see the server
//!   changed);
//! - every entry carries the epoch it was filled in (its envelope), and a
//!   hit is served only in the epoch this instance knows: an entry the
//!   server brought back from an older life is a miss, and is replaced.
//!
//! The instance learns the epoch from every token read and invalidation
//! (their scripts check the server), and forgets it whenever it may have
//! changed unseen: a connection error or timeout (a restart always breaks
//! the connection), and each (re)subscription. While it is unknown, a read
//! first reads the token (one more round trip) to learn it. A reply to a
//! request sent before the epoch was forgotten does not teach it back (a
//! generation counts the forgettings).

use std::sync::atomic::{AtomicU64, Ordering};

/// The epoch of a sequence number.
pub(crate) fn of(seq: u64) -> u32 {
    (seq >> 32) as u32
}

/// The last epoch learnt (low 32 bits; 0: none yet), whether it is still
/// known (bit 32: not forgotten since), and how many times it was forgotten
/// (the bits above).
#[derive(Debug, Default)]
pub(crate) struct Known(AtomicU64);

const KNOWN: u64 = 1 << 32;

impl Known {
    /// An epoch known from the start and for good: the in-process store's,
    /// which loses its data only with the process.
    pub(crate) fn fixed(epoch: u32) -> Self {
        Known(AtomicU64::new(KNOWN | u64::from(epoch)))
    }

    /// The current generation, to learn with once a reply comes back.
    pub(crate) fn generation(&self) -> u32 {
        (self.0.load(Ordering::Acquire) >> 33) as u32
    }

    /// The epoch, if known.
    pub(crate) fn get(&self) -> Option<u32> {
        let state = self.0.load(Ordering::Acquire);
        (state & KNOWN != 0).then_some(state as u32)
    }

    /// Learns `epoch` from a reply to a request sent in `generation`:
    /// ignored if it was forgotten since. Whether it differs from the last
    /// one learnt, forgotten or not (what the instance cached in process
    /// from the older one must go).
    pub(crate) fn learn(&self, generation: u32, epoch: u32) -> bool {
        let mut changed = false;
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                if (state >> 33) as u32 != generation || epoch == 0 {
                    return None;
                }
                let last = state as u32;
                changed = last != 0 && last != epoch;
                Some((state & !(KNOWN | u64::from(u32::MAX))) | KNOWN | u64::from(epoch))
            });
        changed
    }

    /// The epoch may have changed unseen: unknown until learnt again (the
    /// last one is kept, to tell a change).
    pub(crate) fn forget(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                let generation = ((state >> 33) as u32).wrapping_add(1) & (u32::MAX >> 1);
                Some((u64::from(generation) << 33) | (state & u64::from(u32::MAX)))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_sent_before_a_forgetting_teaches_nothing() {
        let known = Known::default();
        assert_eq!(known.get(), None);
        let before = known.generation();
        assert!(!known.learn(before, 7), "first learnt: nothing changed");
        assert_eq!(known.get(), Some(7));
        known.forget();
        assert_eq!(known.get(), None);
        assert!(
            !known.learn(before, 7),
            "a late reply of the old connection"
        );
        assert_eq!(known.get(), None, "still unknown");
        let now = known.generation();
        known.learn(now, 9);
        assert_eq!(known.get(), Some(9));
        assert!(
            known.learn(now, 11),
            "another epoch, learnt over a known one"
        );
    }
}
