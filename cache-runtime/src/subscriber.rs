//! One pub/sub connection per cache, on its own task, listening to:
//!
//! - `ns#landed`: entries that a distributed-lock holder stored; forwarded to
//!   the callers waiting on it (see `lock`);
//! - `ns#inv`: the entries every invalidation removed and the versions it
//!   bumped, for the in-process tier (see `tier`);
//! - `ns:*`: invalidation events, including those published by other
//!   services, which the cache applies (see `Cache::apply_event`).
//!
//! It reconnects by itself (backoff 50 ms to 2 s) and pings every interval,
//! so a server that stops answering (not only one that closes the
//! connection) counts as a disconnection. Every message, and every answered
//! ping (as of when it was sent), is a proof of life reported to the hooks:
//! the tier trusts what it heard for a grace after the last one. What a
//! connection or its loss means is up to the cache's [`Hooks`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::events::InvalidationEvent;

/// What the cache does with what the subscriber hears.
pub(crate) trait Hooks: Send + Sync + 'static {
    /// Subscribed (again): messages from now on will be heard.
    fn connected(&self);
    /// The connection is lost or stopped answering.
    fn disconnected(&self);
    /// Everything published before `at` has been heard (a message arrived
    /// then, or a ping sent then was answered).
    fn alive(&self, at: Instant);
    /// A coherence message from an instance other than this one.
    fn coherence(&self, message: Coherence);
    /// This instance's own coherence message, back from Redis.
    fn echo(&self, message: Coherence);
    /// A message on an event channel (`Err`: it is not a valid event).
    fn event(&self, channel: &str, event: Result<InvalidationEvent, serde_json::Error>);
}

/// What one invalidation removed, as published on `ns#inv` by the
/// invalidation script (Lua `cjson`, which writes an empty list as `{}`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Coherence {
    /// The instance that made the invalidation.
    #[serde(rename = "i")]
    pub(crate) instance: String,
    /// Entry names removed, in full.
    #[serde(rename = "k", default, deserialize_with = "list")]
    pub(crate) entries: Vec<String>,
    /// Version names bumped, and their new values.
    #[serde(rename = "vn", default, deserialize_with = "list")]
    pub(crate) version_names: Vec<String>,
    #[serde(rename = "vv", default, deserialize_with = "list")]
    pub(crate) version_values: Vec<u64>,
    /// Key patterns deleted (full names): tiers drop what matches, cached
    /// or not on Redis any more.
    #[serde(rename = "p", default, deserialize_with = "list")]
    pub(crate) patterns: Vec<String>,
    /// Names one invalidation, for its own instance.
    #[serde(rename = "n", default)]
    pub(crate) nonce: String,
    /// The invalidation's sequence number (0: none given), written as a
    /// string (Lua's `cjson` would round a number this large).
    #[serde(rename = "s", default, deserialize_with = "number")]
    pub(crate) seq: u64,
}

/// A `u64` written as a string or a number.
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Text(String),
        Int(u64),
    }
    match Number::deserialize(d)? {
        Number::Int(n) => Ok(n),
        Number::Text(t) => t.parse().map_err(serde::de::Error::custom),
    }
}

/// A list, or `{}` for an empty one.
fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrEmpty<T> {
        List(Vec<T>),
        Empty(#[allow(dead_code)] std::collections::HashMap<String, serde::de::IgnoredAny>),
    }
    Ok(match ListOrEmpty::deserialize(d)? {
        ListOrEmpty::List(v) => v,
        ListOrEmpty::Empty(_) => Vec::new(),
    })
}

/// The channels of one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Channels {
    pub(crate) landed: String,
    pub(crate) coherence: String,
    /// A pattern (`ns:*`).
    pub(crate) events: String,
}

#[derive(Debug)]
pub(crate) struct Subscriber {
    landings: broadcast::Sender<String>,
    ready: watch::Receiver<bool>,
    heard: Arc<LastHeard>,
    task: JoinHandle<()>,
}

/// When the server was last heard from.
#[derive(Debug)]
struct LastHeard {
    start: Instant,
    /// ms since `start`, plus one (0: never).
    at: AtomicU64,
}

impl LastHeard {
    fn note(&self, at: Instant) {
        let ms = crate::ttl::millis(at.saturating_duration_since(self.start));
        self.at.fetch_max(ms + 1, Ordering::AcqRel);
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Run {
    /// The server, or the nodes of a cluster, tried in turn.
    clients: Vec<redis::Client>,
    channels: Channels,
    instance: String,
    hooks: Arc<dyn Hooks>,
    landings: broadcast::Sender<String>,
    ready: watch::Sender<bool>,
    heard: Arc<LastHeard>,
    timeout: Duration,
    ping: Duration,
}

impl Subscriber {
    /// Starts listening (on the current Tokio runtime).
    pub(crate) fn start(
        clients: Vec<redis::Client>,
        channels: Channels,
        instance: String,
        hooks: Arc<dyn Hooks>,
        timeout: Duration,
        ping: Duration,
    ) -> Subscriber {
        let (landings, _) = broadcast::channel(1024);
        let (ready_tx, ready) = watch::channel(false);
        let heard = Arc::new(LastHeard {
            start: Instant::now(),
            at: AtomicU64::new(0),
        });
        let run = Run {
            clients,
            channels,
            instance,
            hooks,
            landings: landings.clone(),
            ready: ready_tx,
            heard: heard.clone(),
            timeout,
            ping,
        };
        let task = tokio::spawn(run.forever());
        Subscriber {
            landings,
            ready,
            heard,
            task,
        }
    }

    /// A receiver of landed entry names. It does not wait for the
    /// subscriber to be listening: a waiter that misses an announcement
    /// falls back on re-reading.
    pub(crate) fn landings(&self) -> broadcast::Receiver<String> {
        self.landings.subscribe()
    }

    /// Whether it is subscribed right now.
    pub(crate) fn is_listening(&self) -> bool {
        *self.ready.borrow()
    }

    /// How long ago the server was last heard from (a message, or an
    /// answered ping as of when it was sent); `None` before the first time.
    pub(crate) fn last_heard(&self) -> Option<Duration> {
        let at = self.heard.at.load(Ordering::Acquire);
        (at != 0).then(|| {
            self.heard
                .start
                .elapsed()
                .saturating_sub(Duration::from_millis(at - 1))
        })
    }

    /// Waits until it is subscribed, at most `wait`; whether it is.
    pub(crate) async fn wait_listening(&self, wait: Duration) -> bool {
        let mut ready = self.ready.clone();
        tokio::time::timeout(wait, ready.wait_for(|on| *on))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Reports the subscriber down when dropped.
struct Down<'a>(&'a Run);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        /// Clears the flag after the hook, even if the hook panics.
        struct Flag<'a>(&'a Run);
        impl Drop for Flag<'_> {
            fn drop(&mut self) {
                self.0.ready.send_replace(false);
            }
        }
        let _flag = Flag(self.0);
        self.0.hooks.disconnected();
    }
}

impl Run {
    async fn forever(self) {
        // However this task ends (cancelled with its runtime, a panic), the
        // cache must stop trusting what it heard.
        let _down = Down(&self);
        let mut backoff = Duration::from_millis(50);
        let mut node = 0;
        loop {
            let client = &self.clients[node % self.clients.len()];
            match tokio::time::timeout(self.timeout.saturating_mul(2), self.connect(client)).await {
                Ok(Ok((sink, stream))) => {
                    backoff = Duration::from_millis(50);
                    self.heard.note(Instant::now());
                    // The cache takes the connection in (its tier cleared,
                    // the epoch forgotten) before it reads as listening, and
                    // reads as not listening only once it took the loss in:
                    // whoever waits on the flag finds that done.
                    self.hooks.connected();
                    self.ready.send_replace(true);
                    self.listen(sink, stream).await;
                    self.hooks.disconnected();
                    self.ready.send_replace(false);
                }
                Ok(Err(e)) => {
                    tracing::debug!(target: "cache_runtime", error = %e, "subscriber connection failed")
                }
                Err(_) => {
                    tracing::debug!(target: "cache_runtime", "subscriber connection timed out")
                }
            }
            // The next node of a cluster may answer where this one did not.
            node += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn connect(
        &self,
        client: &redis::Client,
    ) -> redis::RedisResult<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
        let pubsub = client.get_async_pubsub().await?;
        let (mut sink, stream) = pubsub.split();
        sink.subscribe(&[&self.channels.landed, &self.channels.coherence])
            .await?;
        sink.psubscribe(&self.channels.events).await?;
        Ok((sink, stream))
    }

    /// Handles messages until the connection is lost or a ping goes
    /// unanswered.
    async fn listen(&self, mut sink: redis::aio::PubSubSink, mut stream: redis::aio::PubSubStream) {
        let mut ping = tokio::time::interval(self.ping);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => {
                        self.alive(Instant::now());
                        self.handle(&msg);
                    }
                    None => return,
                },
                _ = ping.tick() => {
                    // Messages published before the server answers the
                    // ping reach this connection before the answer: once
                    // it comes, everything up to the sending was heard.
                    let sent = Instant::now();
                    let answered = tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(answered, Ok(Ok(_))) {
                        tracing::warn!(target: "cache_runtime", "subscriber ping unanswered; reconnecting");
                        return;
                    }
                    self.alive(sent);
                }
            }
        }
    }

    fn alive(&self, at: Instant) {
        self.heard.note(at);
        self.hooks.alive(at);
    }

    fn handle(&self, msg: &redis::Msg) {
        let channel = msg.get_channel_name();
        let payload = msg.get_payload_bytes();
        if channel == self.channels.landed {
            if let Ok(entry) = std::str::from_utf8(payload) {
                // No receiver: nobody is waiting right now.
                let _ = self.landings.send(entry.to_owned());
            }
        } else if channel == self.channels.coherence {
            match serde_json::from_slice::<Coherence>(payload) {
                Ok(message) if message.instance == self.instance => self.hooks.echo(message),
                Ok(message) => self.hooks.coherence(message),
                Err(e) => {
                    tracing::warn!(target: "cache_runtime", error = %e, "malformed coherence message ignored")
                }
            }
        } else {
            self.hooks.event(
                channel,
                serde_json::from_slice::<InvalidationEvent>(payload),
            );
        }
    }
}

/// The routing of raw pub/sub messages, fuzzed (see `fuzz_tests` for the
/// payload parsers on their own).
#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use proptest::collection::vec;
    use proptest::prelude::*;
    use redis::Value;

    use super::*;
    use crate::fuzz_tests::{config, mutate, mutation, redis_value, short_hostile};

    /// What the hooks were told.
    #[derive(Debug, Default)]
    struct Heard {
        /// (echo, instance) of each coherence message.
        coherence: Vec<(bool, String)>,
        /// (channel, parsed) of each event.
        events: Vec<(String, bool)>,
        connections: usize,
    }

    #[derive(Default)]
    struct Recorder(Mutex<Heard>);

    impl Recorder {
        fn heard(&self) -> std::sync::MutexGuard<'_, Heard> {
            self.0.lock().unwrap()
        }
    }

    impl Hooks for Recorder {
        fn connected(&self) {
            self.heard().connections += 1;
        }
        fn disconnected(&self) {
            self.heard().connections += 1;
        }
        fn alive(&self, _: Instant) {}
        fn coherence(&self, message: Coherence) {
            self.heard().coherence.push((false, message.instance));
        }
        fn echo(&self, message: Coherence) {
            self.heard().coherence.push((true, message.instance));
        }
        fn event(&self, channel: &str, event: Result<InvalidationEvent, serde_json::Error>) {
            self.heard()
                .events
                .push((channel.to_owned(), event.is_ok()));
        }
    }

    fn run(hooks: Arc<Recorder>) -> (Run, broadcast::Receiver<String>) {
        let (landings, heard) = broadcast::channel(16);
        let run = Run {
            clients: vec![redis::Client::open("redis://127.0.0.1:1/").unwrap()],
            channels: Channels {
                landed: "ns#landed".into(),
                coherence: "ns#inv".into(),
                events: "ns:*".into(),
            },
            instance: "me".into(),
            hooks,
            landings,
            ready: watch::channel(false).0,
            heard: Arc::new(LastHeard {
                start: Instant::now(),
                at: AtomicU64::new(0),
            }),
            timeout: Duration::from_secs(1),
            ping: Duration::from_secs(1),
        };
        (run, heard)
    }

    fn bulk(bytes: impl Into<Vec<u8>>) -> Value {
        Value::BulkString(bytes.into())
    }

    /// A payload: valid coherence or event JSON (damaged or not), any
    /// bytes, or a reply that is not a string at all.
    fn payload() -> impl Strategy<Value = Value> {
        let coherence = (
            prop_oneof![Just("me".to_owned()), short_hostile()],
            vec(short_hostile(), 0..3),
        )
            .prop_map(|(i, k)| {
                serde_json::to_vec(
                    &serde_json::json!({"i": i, "n": "1", "k": k, "vn": {}, "vv": {}}),
                )
                .unwrap()
            });
        let event = (short_hostile(), any::<bool>()).prop_map(|(key, applied)| {
            serde_json::to_vec(&serde_json::json!({
                "v": 1, "namespace": "ns", "event": "post:updated",
                "keys": [key], "applied": applied,
            }))
            .unwrap()
        });
        prop_oneof![
            3 => (prop_oneof![coherence, event], vec(mutation(), 0..3))
                .prop_map(|(bytes, m)| bulk(mutate(bytes, &m))),
            2 => vec(any::<u8>(), 0..32).prop_map(bulk),
            1 => short_hostile().prop_map(bulk),
            1 => redis_value(),
        ]
    }

    fn channel() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(bulk("ns#landed")),
            Just(bulk("ns#inv")),
            Just(bulk("ns:post:updated")),
            short_hostile().prop_map(|s| bulk(format!("ns:{s}"))),
            vec(any::<u8>(), 0..12).prop_map(bulk),
            redis_value(),
        ]
    }

    /// A message as redis-rs hands it over (RESP2 array or RESP3 push), or
    /// any reply at all.
    fn message() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => (channel(), payload()).prop_map(|(c, p)| Value::Array(vec![bulk("message"), c, p])),
            2 => (channel(), payload()).prop_map(|(c, p)| {
                Value::Array(vec![bulk("pmessage"), bulk("ns:*"), c, p])
            }),
            1 => (channel(), payload()).prop_map(|(c, p)| Value::Push {
                kind: redis::PushKind::Message,
                data: vec![c, p],
            }),
            1 => redis_value(),
        ]
    }

    proptest! {
        #![proptest_config(config(2000))]

        /// Whatever arrives, each message goes to exactly one place, parsed
        /// as the parsers alone parse it, and nothing panics.
        #[test]
        fn every_message_is_routed_or_dropped(value in message()) {
            let Some(msg) = redis::Msg::from_value(&value) else {
                return Ok(());
            };
            let hooks = Arc::new(Recorder::default());
            let (run, mut landings) = run(hooks.clone());
            run.handle(&msg);
            let channel = msg.get_channel_name();
            let payload = msg.get_payload_bytes();
            let heard = hooks.heard();
            let landed = landings.try_recv().ok();
            prop_assert_eq!(heard.connections, 0);
            match channel {
                "ns#landed" => {
                    prop_assert_eq!(landed, std::str::from_utf8(payload).ok().map(str::to_owned));
                    prop_assert!(heard.coherence.is_empty() && heard.events.is_empty());
                }
                "ns#inv" => {
                    prop_assert_eq!(landed, None);
                    prop_assert!(heard.events.is_empty());
                    let want = serde_json::from_slice::<Coherence>(payload)
                        .ok()
                        .map(|c| (c.instance == "me", c.instance));
                    prop_assert_eq!(heard.coherence.first().cloned(), want);
                    prop_assert!(heard.coherence.len() <= 1);
                }
                _ => {
                    prop_assert_eq!(landed, None);
                    prop_assert!(heard.coherence.is_empty());
                    let parsed = serde_json::from_slice::<InvalidationEvent>(payload).is_ok();
                    prop_assert_eq!(&heard.events[..], &[(channel.to_owned(), parsed)][..]);
                }
            }
        }
    }
}
