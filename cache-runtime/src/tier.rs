//! The in-process tier in front of Redis: most hits never leave the process.
//!
//! It is an in-process store (bounded, per-entry expiry) holding the
//! same envelopes as Redis, under the same entry names, for at most the
//! tier's TTL and never past the entry's own freshness. It is kept coherent
//! by the cache's subscriber:
//!
//! - every invalidation on Redis publishes the names of the entries it removed
//!   (keys, tag members, cascades, pattern matches), the versions it bumped,
//!   and its sequence number on `ns#inv`; every instance removes them from
//!   its tier (the instance that invalidated does so from the script's
//!   reply, and ignores its own echo unless the reply was lost or its
//!   caller gave up on it);
//! - a fill of the tier is refused when an invalidation of that entry arrived
//!   after the Redis read it came from (the same token-and-marker rule as the
//!   stores), so a message that overtakes a slow read still wins;
//! - it answers only within `local_grace` of the last proof that its
//!   subscriber hears everything: the last message or pong (pings go every
//!   quarter of the grace). A link that closes, or stays open but goes
//!   silent, stops the tier within the grace of its last sign of life, not
//!   of its detection. On reconnect the tier is cleared, since messages may
//!   have been lost;
//! - messages lost while the link stays up (between the nodes of a
//!   cluster) are noticed from the sequence numbers: a message whose number
//!   skips one, a number of another epoch, or a check (every second, from
//!   the cache's watch) that finds the namespace's number past what was
//!   heard a check earlier, clears the tier.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::memory::{MemoryStore, Shared};
use crate::store::{AnyValue, FillRequest, InvalidationPlan};

pub(crate) struct LocalTier {
    store: MemoryStore,
    ttl: Duration,
    grace_ms: u64,
    /// The current value of version names, as last seen on Redis or in a
    /// bump message; bounded like the tier, kept at most the tier's TTL (a
    /// name it forgot is read from Redis again), and read under its shard's
    /// read lock only.
    versions: quick_cache::sync::Cache<String, Arc<Known>>,
    /// How long a version value is known (the tier's TTL, in ms).
    versions_ms: u64,
    connected: AtomicBool,
    /// The last proof that the subscriber hears everything (a message, or
    /// the moment a ping was sent that was then answered), in ms since
    /// `epoch` plus one (0: none yet).
    alive_at: AtomicU64,
    epoch: Instant,
    marker_ttl: Duration,
    /// This instance's invalidations in flight (nonce -> the echo, if it
    /// came first), and those whose reply was lost or whose caller gave up
    /// (nonce -> when): their echo is applied instead of ignored.
    echoes: Mutex<Echoes>,
    /// The sequence numbers heard, to notice lost messages.
    heard: Mutex<Heard>,
}

impl std::fmt::Debug for LocalTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTier")
            .field("entries", &self.store)
            .field("trusted", &self.trusted())
            .finish_non_exhaustive()
    }
}

/// What the subscriber heard of the namespace's sequence numbers since it
/// (re)connected.
#[derive(Debug, Default)]
struct Heard {
    /// The greatest number heard or checked (0: none yet).
    last: u64,
    /// The number the previous check read: by the next check, its message
    /// must have been heard.
    checked: u64,
}

/// How long an echo is still awaited for an invalidation whose reply was
/// lost.
const LOST_FOR: Duration = Duration::from_secs(60);

/// A version value the tier knows, and until when (ms since its epoch).
#[derive(Debug)]
struct Known {
    value: AtomicU64,
    until: u64,
}

/// What an invalidation removed: entry names, and bumped versions.
type Removed = (Vec<String>, Vec<(String, u64)>);

#[derive(Debug, Default)]
struct Echoes {
    pending: HashMap<String, Option<Removed>>,
    lost: HashMap<String, Instant>,
}

impl Echoes {
    /// Forgets lost replies whose echo never came (their invalidation never
    /// ran): what is kept stays bounded by `LOST_FOR`.
    fn prune(&mut self, now: Instant) {
        self.lost.retain(|_, at| now.duration_since(*at) < LOST_FOR);
    }
}

/// An invalidation of this instance in flight: settled by its reply (its
/// echo is then ignored), or by its loss, which its drop also means (the
/// caller gave up at an await point: the echo, if it comes, is applied).
pub(crate) struct Pending<'a> {
    tier: &'a LocalTier,
    nonce: String,
    settled: bool,
    /// When it was about to be sent.
    sent: Instant,
}

impl Pending<'_> {
    /// The reply was applied: its echo will be ignored.
    ///
    /// If an invalidation of this instance lost its reply before this one
    /// was sent, and its echo has not come (the subscriber may be down,
    /// unnoticed, within the grace), what that one removed is unknown, and
    /// this reply cannot name it: a cascade or a tag it drained is gone from
    /// Redis by now, so this one removed nothing more there. Given up before
    /// this one was sent, it ran before this one or never will, so the tier
    /// starts over here, before this invalidation returns, and its echo is
    /// no longer awaited. One lost since this was sent may run after it: its
    /// echo is still awaited.
    pub(crate) fn replied(mut self) {
        self.settled = true;
        let unknown = {
            let mut echoes = self.tier.echoes();
            echoes.pending.remove(&self.nonce);
            let unknown = echoes.lost.values().any(|at| *at <= self.sent);
            echoes.lost.retain(|_, at| *at > self.sent);
            unknown
        };
        if unknown {
            self.tier.clear();
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.tier.reply_lost(&self.nonce);
        }
    }
}

impl LocalTier {
    pub(crate) fn new(
        capacity: u64,
        ttl: Duration,
        grace: Duration,
        marker_ttl: Duration,
    ) -> LocalTier {
        LocalTier {
            store: MemoryStore::new(capacity),
            ttl,
            grace_ms: crate::ttl::millis(grace),
            versions: crate::store::memory::bounded(capacity.max(1)),
            // Forgotten after the tier's TTL: a version key that expired on
            // Redis starts over lower, and the tier must learn that too.
            versions_ms: crate::ttl::millis(ttl).max(1),
            connected: AtomicBool::new(false),
            alive_at: AtomicU64::new(0),
            epoch: Instant::now(),
            marker_ttl,
            echoes: Mutex::new(Echoes::default()),
            heard: Mutex::new(Heard::default()),
        }
    }

    /// Whether hits may be served: within the grace of the last proof of
    /// life of the subscriber (never before its first connection).
    pub(crate) fn trusted(&self) -> bool {
        let at = self.alive_at.load(Ordering::Acquire);
        at != 0 && self.since_epoch().saturating_sub(at - 1) < self.grace_ms
    }

    /// How long after the last proof of life it still answers.
    pub(crate) fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms)
    }

    /// The subscriber heard from the server at `at` (a message arrived, or
    /// a ping sent then was answered).
    pub(crate) fn alive(&self, at: Instant) {
        let ms = crate::ttl::millis(at.saturating_duration_since(self.epoch));
        self.alive_at.fetch_max(ms + 1, Ordering::AcqRel);
    }

    /// The envelope under `entry` (and its decoded value, if kept), when
    /// the tier may serve it.
    pub(crate) fn get(&self, entry: &str) -> Option<Shared> {
        if !self.trusted() {
            return None;
        }
        self.store.entry(entry)
    }

    /// The token to fill with after a Redis read that starts now.
    pub(crate) fn token(&self) -> u64 {
        self.store.current_token().seq
    }

    /// The known current value of a version name.
    pub(crate) fn version(&self, name: &str) -> Option<u64> {
        self.known(name).map(|v| v.value.load(Ordering::Acquire))
    }

    /// What is known of a version name, unless it is past its time (then
    /// it is forgotten).
    fn known(&self, name: &str) -> Option<Arc<Known>> {
        let found = self.versions.get(name)?;
        if found.until > self.since_epoch() {
            return Some(found);
        }
        self.versions.remove_if(name, |k| Arc::ptr_eq(k, &found));
        None
    }

    /// Records a version value seen on Redis (versions only grow).
    pub(crate) fn saw_version(&self, name: &str, value: u64) {
        let known = self.known(name).unwrap_or_else(|| {
            let fresh = || {
                Ok::<_, std::convert::Infallible>(Arc::new(Known {
                    value: AtomicU64::new(value),
                    until: self.since_epoch().saturating_add(self.versions_ms),
                }))
            };
            // Two first sightings at once share one.
            let Ok(known) = self.versions.get_or_insert_with(name, fresh);
            known
        });
        known.value.fetch_max(value, Ordering::AcqRel);
    }

    /// Keeps `bytes` under `entry` for at most `ttl` (and the tier's TTL),
    /// unless an invalidation of it arrived after the read behind `token`.
    pub(crate) fn fill(
        &self,
        entry: &str,
        bytes: &[u8],
        typed: Option<AnyValue>,
        ttl: Option<Duration>,
        token: u64,
    ) {
        if !self.connected.load(Ordering::Acquire) {
            return;
        }
        let ttl = ttl.map_or(self.ttl, |t| t.min(self.ttl));
        if ttl.is_zero() {
            return;
        }
        self.store.fill_now(FillRequest {
            typed,
            ttl: Some(ttl),
            window: self.marker_ttl,
            marker_ttl: self.marker_ttl,
            ..FillRequest::new(entry.to_owned(), entry.to_owned(), bytes.to_vec(), token)
        });
    }

    /// Removes entries (named in full) and records bumped versions.
    pub(crate) fn apply(&self, entries: &[String], versions: &[(String, u64)]) {
        for (name, value) in versions {
            self.saw_version(name, *value);
        }
        if entries.is_empty() {
            return;
        }
        self.store.invalidate(&InvalidationPlan {
            keys: entries.iter().map(|e| (e.clone(), e.clone())).collect(),
            marker_ttl: self.marker_ttl,
            ..InvalidationPlan::default()
        });
    }

    fn since_epoch(&self) -> u64 {
        crate::ttl::millis(self.epoch.elapsed())
    }

    fn echoes(&self) -> std::sync::MutexGuard<'_, Echoes> {
        self.echoes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An invalidation of this instance is about to be sent under `nonce`:
    /// settle it with [`Pending::replied`], or drop it (reply lost).
    pub(crate) fn sending(&self, nonce: &str) -> Pending<'_> {
        let mut echoes = self.echoes();
        echoes.prune(Instant::now());
        echoes.pending.insert(nonce.to_owned(), None);
        Pending {
            tier: self,
            nonce: nonce.to_owned(),
            settled: false,
            sent: Instant::now(),
        }
    }

    /// Its reply was lost (timeout, or the caller gave up): apply the echo
    /// if it came already, else when it comes.
    fn reply_lost(&self, nonce: &str) {
        let stashed = {
            let mut echoes = self.echoes();
            let stashed = echoes.pending.remove(nonce).flatten();
            if stashed.is_none() {
                let now = Instant::now();
                echoes.prune(now);
                echoes.lost.insert(nonce.to_owned(), now);
            }
            stashed
        };
        if let Some((entries, versions)) = stashed {
            self.apply(&entries, &versions);
        }
    }

    /// How many invalidations wait for their reply or echo (for tests).
    #[cfg(test)]
    pub(crate) fn echoes_kept(&self) -> usize {
        let echoes = self.echoes();
        echoes.pending.len() + echoes.lost.len()
    }

    /// This instance's own message came back.
    pub(crate) fn echo(&self, nonce: &str, entries: Vec<String>, versions: Vec<(String, u64)>) {
        let apply = {
            let mut echoes = self.echoes();
            if let Some(slot) = echoes.pending.get_mut(nonce) {
                // The reply is still to come: keep it in case it is lost.
                *slot = Some((entries, versions));
                None
            } else if echoes.lost.remove(nonce).is_some() {
                Some((entries, versions))
            } else {
                None
            }
        };
        if let Some((entries, versions)) = apply {
            self.apply(&entries, &versions);
        }
    }

    /// Drops every entry whose name matches the glob `pattern`, and refuses
    /// a fill from a Redis read older than this that matches it.
    pub(crate) fn apply_pattern(&self, pattern: &str) {
        self.store.invalidate(&InvalidationPlan {
            patterns: vec![pattern.to_owned()],
            marker_ttl: self.marker_ttl,
            ..InvalidationPlan::default()
        });
    }

    /// Drops everything (a message may have been lost, or the server's
    /// epoch changed).
    pub(crate) fn clear(&self) {
        self.store.clear();
        self.versions.clear();
    }

    pub(crate) fn connected(&self) {
        // Messages may have been missed while away: start empty.
        self.clear();
        *self.heard() = Heard::default();
        self.connected.store(true, Ordering::Release);
        self.alive(Instant::now());
    }

    /// The link is lost: no more fills. Hits stop by themselves, `grace`
    /// after the last proof of life.
    pub(crate) fn disconnected(&self) {
        self.connected.store(false, Ordering::Release);
    }

    fn heard(&self) -> std::sync::MutexGuard<'_, Heard> {
        self.heard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A coherence message numbered `seq` arrived (its own instance's too).
    /// Whether one was lost before it (the tier is then cleared).
    pub(crate) fn heard_seq(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        let mut heard = self.heard();
        let lost =
            heard.last != 0 && (epoch_of(seq) != epoch_of(heard.last) || seq > heard.last + 1);
        heard.last = if epoch_of(seq) == epoch_of(heard.last) {
            heard.last.max(seq)
        } else {
            seq
        };
        drop(heard);
        if lost {
            self.clear();
        }
        lost
    }

    /// A check read the namespace's current number `seq`. Whether a
    /// message was lost: the previous check's number was not heard since
    /// (every invalidation publishes one message, and a check interval is
    /// long enough for it to arrive), or the epoch changed. The first check
    /// after a (re)connect sets where the numbers start.
    pub(crate) fn checked(&self, seq: u64) -> bool {
        let mut heard = self.heard();
        let same_epoch = heard.last != 0 && epoch_of(seq) == epoch_of(heard.last);
        let lost =
            heard.last != 0 && (!same_epoch || (heard.checked != 0 && heard.last < heard.checked));
        if lost || heard.last == 0 {
            heard.last = seq;
        }
        heard.checked = seq;
        drop(heard);
        if lost {
            self.clear();
        }
        lost
    }
}

/// The epoch of a sequence number (its high 32 bits).
pub(crate) fn epoch_of(seq: u64) -> u64 {
    seq >> 32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tier of 100 entries with this TTL and grace, not yet connected.
    fn unconnected(ttl: Duration, grace: Duration) -> LocalTier {
        LocalTier::new(100, ttl, grace, Duration::from_secs(30))
    }

    fn tier() -> LocalTier {
        let tier = unconnected(Duration::from_secs(60), Duration::from_secs(60));
        tier.connected();
        tier
    }

    fn holds(tier: &LocalTier, entry: &str) -> bool {
        tier.get(entry).is_some()
    }

    #[test]
    fn an_invalidation_given_up_at_its_await_applies_its_echo() {
        let tier = tier();
        tier.fill("e", b"v", None, None, tier.token());
        // The caller drops the invalidation while the store call is
        // pending: the guard goes with it.
        drop(tier.sending("n1"));
        assert!(holds(&tier, "e"), "nothing is known to have run yet");
        tier.echo("n1", vec!["e".into()], Vec::new());
        assert!(!holds(&tier, "e"), "the echo names what ran: applied");
        assert_eq!(tier.echoes_kept(), 0, "nothing left behind");

        // The echo came first, then the caller gave up: applied at the drop.
        tier.fill("e", b"v", None, None, tier.token());
        let pending = tier.sending("n2");
        tier.echo("n2", vec!["e".into()], Vec::new());
        assert!(holds(&tier, "e"), "kept until the reply is known lost");
        drop(pending);
        assert!(!holds(&tier, "e"));
        assert_eq!(tier.echoes_kept(), 0);
    }

    /// The hole the model test found (`model::on_redis_with_a_tier`, about
    /// one run of 1,000 programs in two): an invalidation given up after it
    /// ran, its echo lost with the subscriber, then a second invalidation of
    /// the same row returns, whose reply cannot name the dependent the first
    /// one removed from Redis; the tier served that dependent after the
    /// second returned.
    #[test]
    fn an_invalidation_returning_after_one_whose_outcome_is_unknown_leaves_nothing_stale() {
        let tier = tier();
        tier.fill("page", b"v", None, None, tier.token());
        drop(tier.sending("given-up"));
        assert!(holds(&tier, "page"), "nothing is known to have run yet");
        let returned = tier.sending("returned");
        tier.apply(&["row".to_owned()], &[]);
        returned.replied();
        assert!(!holds(&tier, "page"), "the tier starts over");
        assert_eq!(tier.echoes_kept(), 0, "the lost echo is not awaited");

        // The lost echo, if it comes late, removes nothing cached since.
        tier.fill("page", b"v2", None, None, tier.token());
        tier.echo("given-up", vec!["page".to_owned()], Vec::new());
        assert!(holds(&tier, "page"));

        // Without a lost reply, a reply leaves the rest of the tier alone.
        tier.sending("plain").replied();
        assert!(holds(&tier, "page"));

        // One given up after this was sent may run after it: the reply
        // leaves the tier alone, and that echo is still applied.
        let returned = tier.sending("returned-2");
        drop(tier.sending("given-up-2"));
        returned.replied();
        assert!(holds(&tier, "page"));
        assert_eq!(tier.echoes_kept(), 1, "its echo is awaited");
        tier.echo("given-up-2", vec!["page".to_owned()], Vec::new());
        assert!(!holds(&tier, "page"), "and applied");
    }

    #[test]
    fn a_settled_invalidation_ignores_its_echo_and_keeps_nothing() {
        let tier = tier();
        tier.sending("n").replied();
        tier.fill("e", b"v", None, None, tier.token());
        tier.echo("n", vec!["e".into()], Vec::new());
        assert!(holds(&tier, "e"), "what was cached since the reply stays");
        assert_eq!(tier.echoes_kept(), 0);
    }

    #[test]
    fn the_versions_it_knows_are_bounded() {
        let tier = unconnected(Duration::from_secs(60), Duration::from_secs(60));
        for i in 0..10_000 {
            tier.saw_version(&format!("v{i}"), i);
        }
        assert!(tier.versions.len() <= 100, "{}", tier.versions.len());
    }

    #[test]
    fn a_version_is_known_only_for_the_tiers_ttl_and_only_grows() {
        let tier = unconnected(Duration::from_millis(50), Duration::from_secs(60));
        tier.saw_version("v", 7);
        tier.saw_version("v", 3);
        assert_eq!(tier.version("v"), Some(7), "versions only grow");
        // The version key may have expired on Redis and started over lower:
        // after the tier's TTL the value is forgotten, and learnt again.
        let deadline = Instant::now() + Duration::from_secs(5);
        while tier.version("v").is_some() {
            assert!(Instant::now() < deadline, "still known past the TTL");
            std::thread::sleep(Duration::from_millis(1));
        }
        tier.saw_version("v", 2);
        assert_eq!(tier.version("v"), Some(2));
    }

    #[test]
    fn skipped_numbers_and_unheard_checks_clear_the_tier() {
        let tier = tier();
        let epoch = 5 << 32;
        tier.fill("e", b"v", None, None, tier.token());
        assert!(!tier.heard_seq(epoch + 1));
        assert!(!tier.heard_seq(epoch + 2));
        assert!(!tier.heard_seq(epoch + 2), "later steps repeat a number");
        assert!(holds(&tier, "e"));
        assert!(tier.heard_seq(epoch + 4), "3 was never heard");
        assert!(!holds(&tier, "e"));

        tier.fill("e", b"v", None, None, tier.token());
        assert!(!tier.checked(epoch + 4), "everything up to 4 was heard");
        assert!(!tier.checked(epoch + 6), "5 and 6 may still be on the way");
        assert!(holds(&tier, "e"));
        assert!(tier.checked(epoch + 6), "a check later, 6 was never heard");
        assert!(!holds(&tier, "e"));

        tier.fill("e", b"v", None, None, tier.token());
        assert!(tier.heard_seq((7 << 32) + 1), "another epoch");
        assert!(!holds(&tier, "e"));
    }

    #[test]
    fn it_answers_only_within_the_grace_of_the_last_proof_of_life() {
        let tier = unconnected(Duration::from_secs(60), Duration::from_millis(50));
        assert!(!tier.trusted(), "never before the first connection");
        tier.connected();
        // Connected, but nothing heard since: trust ends with the grace,
        // whether or not a disconnection was noticed.
        let deadline = Instant::now() + Duration::from_secs(5);
        while tier.trusted() {
            assert!(
                Instant::now() < deadline,
                "still trusted without a proof of life"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        tier.alive(Instant::now());
        assert!(tier.trusted(), "a new proof of life");
    }
}
