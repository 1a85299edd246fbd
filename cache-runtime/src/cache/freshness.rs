//! Whether a cached value answers a read, by refresh policy: its TTL
//! (`Fresh`), stale-while-revalidate (`stale`: past the TTL, within the stale
//! window), early refresh (`early`: XFetch), fail-safe (`fail_safe`: past
//! the TTL, what answers when the loader fails), time-to-idle (`idle`: how long
//! the tier may keep it), and versions (`version`: checked where the entry is
//! read).

use std::time::Duration;

use crate::entry::Meta;
use crate::events::now_ms;
use crate::observe::Source;
use crate::options::CacheOptions;
use crate::shape::Shape;
use crate::stats::Stats;
use crate::status::CacheStatus;

use super::*;

/// Whether a cached value may be returned as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    Fresh,
    /// Past its TTL, within the stale window.
    Stale,
    /// Fresh, but picked for an early refresh.
    RefreshEarly,
    /// Past its TTL (and stale window), within the fail-safe window: not
    /// an answer, but what answers if the loader fails.
    FailSafe,
    /// Past every window: a miss.
    Expired,
}

/// What a read does with a value of the current version: the TTL, then
/// `stale` past it (stale-while-revalidate: the store keeps the entry its
/// stale window past its TTL, [`kept_for`], and a read in that window
/// serves it while one caller refreshes it), then `fail_safe` (the copy
/// answers only if the loader fails), or `early` before it.
pub(crate) fn check(meta: &Meta, options: &CacheOptions) -> Freshness {
    // Without a refresh policy the store expires the entry at its TTL (and
    // the tier never keeps it past that): no clock needed.
    if meta.fresh_until_ms == 0
        || (options.stale_window().is_none()
            && options.early_beta().is_none()
            && options.fail_safe_window().is_none())
    {
        return Freshness::Fresh;
    }
    let now = now_ms();
    if now >= meta.fresh_until_ms {
        let past = now - meta.fresh_until_ms;
        return match (options.stale_window(), options.fail_safe_window()) {
            // Without a fail-safe window the store expires the entry at the
            // end of the stale window, or at its TTL; a value read a moment
            // after is still the one they allowed.
            (Some(_), None) => Freshness::Stale,
            (None, None) => Freshness::Fresh,
            (Some(stale), Some(_)) if u128::from(past) < stale.as_millis() => Freshness::Stale,
            (_, Some(fail_safe)) if u128::from(past) < fail_safe.as_millis() => Freshness::FailSafe,
            (_, Some(_)) => Freshness::Expired,
        };
    }
    if early(meta, options, now) {
        return Freshness::RefreshEarly;
    }
    Freshness::Fresh
}

/// How long the store keeps an entry fresh for `ttl` (`None`: for good):
/// the TTL, plus the longer of the stale and fail-safe windows.
pub(crate) fn kept_for(ttl: Option<Duration>, options: &CacheOptions) -> Option<Duration> {
    let past = options
        .stale_window()
        .unwrap_or_default()
        .max(options.fail_safe_window().unwrap_or_default());
    ttl.map(|ttl| ttl.saturating_add(past))
}

/// Early refresh (`early = 1.0`, XFetch): a read of a fresh value refreshes
/// it with a probability that grows as the expiry nears, faster for values
/// that took long to load (`cost_ms`), so that the hottest keys are
/// reloaded before they expire instead of by a crowd after.
pub(crate) fn early(meta: &Meta, options: &CacheOptions, now: u64) -> bool {
    let Some(beta) = options.early_beta() else {
        return false;
    };
    // Refresh when now - cost * beta * ln(U) >= expiry, U in (0, 1].
    let u = 1.0 - fastrand::f64();
    let ahead = -(f64::from(meta.cost_ms.max(1)) * f64::from(beta) * u.ln());
    now as f64 + ahead >= meta.fresh_until_ms as f64
}

/// Versions (`version = "user:{id}"`): an entry answers only while the
/// version it was written under is the current one (`current`: as read
/// with it from the store, or last heard by the tier; `None`: not known).
/// `bump` makes every entry written under the old version a miss at once.
pub(crate) fn version(meta: &Meta, current: Option<u64>) -> bool {
    current == Some(meta.version)
}

/// Time-to-idle (`idle = "10m"`): the store extends the entry's life on
/// each read (the Redis read script, the in-process store's expiry). The
/// tier, which does not see other instances' reads, keeps a copy at most
/// half of it, so that a hot entry is read from Redis, and extended there,
/// before it expires.
pub(crate) fn idle(options: &CacheOptions) -> Option<Duration> {
    options.idle_choice().map(|i| i / 2)
}

/// How much longer an entry is fresh (`None`: it does not expire).
pub(crate) fn fresh_for(meta: &Meta) -> Option<Duration> {
    (meta.fresh_until_ms != 0)
        .then(|| Duration::from_millis(meta.fresh_until_ms.saturating_sub(now_ms())))
}

/// How long the in-process tier may keep an entry: while it is fresh, and
/// no longer than the read's `local_ttl` (the tier caps it at its own) or
/// what `idle` allows.
pub(crate) fn local_for(meta: &Meta, options: &CacheOptions) -> Option<Duration> {
    [options.local_ttl_choice(), idle(options)]
        .into_iter()
        .flatten()
        .fold(fresh_for(meta), |bound, d| {
            Some(bound.map_or(d, |b| b.min(d)))
        })
}

impl Cache {
    pub(crate) fn serve_stale<S: Shape<R>, R>(
        &self,
        name: &'static str,
        stored: S::Stored,
        past_ttl: bool,
    ) -> R {
        Stats::add(&self.inner.stats.hits, 1);
        self.inner.metrics.hit(name, Source::Redis);
        if past_ttl {
            Stats::add(&self.inner.stats.stale_served, 1);
            self.inner.metrics.stale_served(name);
        }
        crate::status::record(if past_ttl {
            CacheStatus::Stale
        } else {
            CacheStatus::Hit
        });
        tracing::Span::current().record("outcome", if past_ttl { "stale" } else { "early" });
        S::join(stored)
    }
}
