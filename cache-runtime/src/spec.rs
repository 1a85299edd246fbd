//! One invalidation as written (an `#[invalidates]` attribute, the lists of
//! an `Invalidation`, a kept invalidation of the outbox, an event from
//! another service): the names it invalidates and the event it publishes.

/// One invalidation as written: an `#[invalidates]` attribute, or the
/// lists of an [`Invalidation`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Spec {
    pub(crate) keys: Vec<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) patterns: Vec<String>,
    pub(crate) bumps: Vec<String>,
    pub(crate) publish: Option<String>,
}

impl Spec {
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.tags.is_empty()
            && self.patterns.is_empty()
            && self.bumps.is_empty()
            && self.publish.is_none()
    }
}

impl Spec {
    /// Whether it can be retried together with others: the script applies
    /// any number of keys, tags, versions and events at once, but patterns
    /// take scans of their own.
    pub(crate) fn merges(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Adds what `other` names (each name once).
    pub(crate) fn absorb(&mut self, other: &Spec) {
        for (mine, theirs) in [
            (&mut self.keys, &other.keys),
            (&mut self.tags, &other.tags),
            (&mut self.bumps, &other.bumps),
        ] {
            for name in theirs {
                if !mine.contains(name) {
                    mine.push(name.clone());
                }
            }
        }
    }
}
