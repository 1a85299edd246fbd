//! Whether a cached value answers a read, by refresh policy: its TTL
//! (`Fresh`), stale-while-revalidate (`stale`: past the TTL, within the stale
//! window), early refresh (`early`: XFetch), time-to-idle (`idle`: how long
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
pub(crate) enum Freshness {
    Fresh,
    /// Past its TTL, within the stale window.
    Stale,
    /// Fresh, but picked for an early refresh.
    RefreshEarly,
}

pub(crate) fn check(meta: &Meta, options: &CacheOptions) -> Freshness {
    // Without a refresh policy the store expires the entry at its TTL (and
    // the tier never keeps it past that): no clock needed.
    if meta.fresh_until_ms == 0
        || (options.stale_window().is_none() && options.early_beta().is_none())
    {
        return Freshness::Fresh;
    }
    let now = now_ms();
    if now >= meta.fresh_until_ms {
        // Without a stale window the store expires the entry at its TTL; a
        // value read a moment after is still the one the TTL allowed.
        return if options.stale_window().is_some() {
            Freshness::Stale
        } else {
            Freshness::Fresh
        };
    }
    if let Some(beta) = options.early_beta() {
        // XFetch: refresh when now - cost * beta * ln(U) >= expiry, U in (0, 1].
        let u = 1.0 - fastrand::f64();
        let ahead = -(f64::from(meta.cost_ms.max(1)) * f64::from(beta) * u.ln());
        if now as f64 + ahead >= meta.fresh_until_ms as f64 {
            return Freshness::RefreshEarly;
        }
    }
    Freshness::Fresh
}

/// How much longer an entry is fresh (`None`: it does not expire).
pub(crate) fn fresh_for(meta: &Meta) -> Option<Duration> {
    (meta.fresh_until_ms != 0)
        .then(|| Duration::from_millis(meta.fresh_until_ms.saturating_sub(now_ms())))
}

/// How long the in-process tier may keep an entry: while it is fresh, and
/// no longer than the read's `local_ttl` (the tier caps it at its own) or
/// half its time-to-idle (the Redis entry lives `idle` from the read that
/// filled the tier, so a hot entry is read from Redis again, and extended
/// there, before it expires).
pub(crate) fn local_for(meta: &Meta, options: &CacheOptions) -> Option<Duration> {
    [
        options.local_ttl_choice(),
        options.idle_choice().map(|i| i / 2),
    ]
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
