//! The invalidation event published on `#[invalidates(publish = "...")]`.
//!
//! It is plain JSON so services in any language can publish and consume it:
//!
//! ```json
//! {"v":1,"namespace":"blog","event":"post:updated","entity":"post",
//!  "keys":["post:42"],"tags":["author:7"],"patterns":[],"bumps":[],
//!  "ts":1795000000000,"instance":"web-1-5f3a","id":"web-1-5f3a:1795000000000:7",
//!  "applied":true}
//! ```
//!
//! It is published on the Redis channel `<namespace>:<event>`
//! (`blog:post:updated` above). Keys, tags and patterns are as written in the
//! attribute, without the namespace prefix.

use serde::{Deserialize, Serialize};

/// The version of the event schema this crate writes.
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// An invalidation that happened, as published on pub/sub.
///
/// The schema may gain fields (with defaults, so older events still read);
/// build one with [`new`](InvalidationEvent::new) and set what it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InvalidationEvent {
    /// Schema version (currently 1).
    pub v: u32,
    /// The namespace the keys and tags belong to.
    pub namespace: String,
    /// The event name as given to `publish` (for example `post:updated`).
    pub event: String,
    /// What the event is about: the event name up to its first `:` (`post`).
    #[serde(default)]
    pub entity: String,
    /// Keys deleted.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Tags invalidated.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Key patterns deleted.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Versions incremented.
    #[serde(default)]
    pub bumps: Vec<String>,
    /// When, in Unix milliseconds.
    #[serde(default)]
    pub ts: u64,
    /// Which cache instance (or service) sent it.
    #[serde(default)]
    pub instance: String,
    /// Identifies this event, for deduplication: the instances that hear an
    /// event with an id apply it once between them (the id is claimed for
    /// 60 s), and a second delivery of the same id within that time is
    /// skipped. An event without an id is applied every time it is heard,
    /// by every instance: two identical events sent for two writes both
    /// apply. Give one when a producer may deliver an event twice (a retry
    /// after a lost reply); a UUID or the producer's outbox row id will do.
    /// This crate sets one on the events it publishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Whether the sender already removed the entries from the shared store
    /// (`true` for every event this crate publishes). Caches that hear an
    /// event without it (published by another service) apply it: keys,
    /// tags, patterns and bumps, once for all instances.
    #[serde(default)]
    pub applied: bool,
}

impl InvalidationEvent {
    /// An event `event` of `namespace`, sent now, naming nothing yet (push
    /// onto `keys`, `tags`, `patterns` and `bumps`), not applied by its
    /// sender, without an id.
    ///
    /// ```
    /// let mut event = cache_runtime::InvalidationEvent::new("blog", "post:updated");
    /// event.keys.push("post:42".into());
    /// event.id = Some("outbox-row-981".into());
    /// assert_eq!(event.entity, "post");
    /// assert_eq!(event.channel(), "blog:post:updated");
    /// ```
    pub fn new(namespace: impl Into<String>, event: impl Into<String>) -> Self {
        let event = event.into();
        InvalidationEvent {
            v: EVENT_SCHEMA_VERSION,
            namespace: namespace.into(),
            entity: entity_of(&event).to_owned(),
            event,
            keys: Vec::new(),
            tags: Vec::new(),
            patterns: Vec::new(),
            bumps: Vec::new(),
            ts: now_ms(),
            instance: String::new(),
            id: None,
            applied: false,
        }
    }

    /// The channel this event is published on.
    pub fn channel(&self) -> String {
        format!("{}:{}", self.namespace, self.event)
    }
}

pub(crate) fn entity_of(event: &str) -> &str {
    event.split(':').next().unwrap_or(event)
}

/// A unique id for an event this instance publishes: the instance, the
/// time and a counter of this process.
pub(crate) fn event_id(instance: &str, ts: u64) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{instance}:{ts}:{n}")
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
