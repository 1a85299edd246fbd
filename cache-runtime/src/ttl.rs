//! Time-to-live values: parsing `"5m"`-style durations and spreading expiries
//! with jitter.

use std::time::{Duration, Instant};

/// Parses a duration written as a number followed by a unit, or several such
/// parts: `"500ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"2d"`. A bare number means
/// seconds.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(cache_runtime::parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
/// assert_eq!(cache_runtime::parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert!(cache_runtime::parse_duration("5x").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text)
}

/// Shortens `ttl` by a random fraction of at most `jitter` (0.0 to 1.0), so
/// that entries written together do not all expire together.
pub(crate) fn with_jitter(ttl: Duration, jitter: f32) -> Duration {
    if jitter <= 0.0 || ttl.is_zero() {
        return ttl;
    }
    let cut = ttl.as_secs_f64() * f64::from(jitter.min(1.0)) * fastrand::f64();
    let cut = Duration::try_from_secs_f64(cut).unwrap_or(Duration::ZERO);
    ttl.saturating_sub(cut).max(Duration::from_millis(1))
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `from + d`, or a moment far enough away to mean "never" when that does
/// not fit an `Instant` (a configured duration may be `Duration::MAX`).
pub(crate) fn after(from: Instant, d: Duration) -> Instant {
    from.checked_add(d)
        .or_else(|| from.checked_add(FAR))
        .unwrap_or(from)
}

/// About a century: what "never" means for deadlines.
pub(crate) const FAR: Duration = Duration::from_secs(100 * 365 * 86_400);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1d2h"), Ok(Duration::from_secs(93_600)));
        assert_eq!(parse_duration(" 10s "), Ok(Duration::from_secs(10)));
        assert!(parse_duration("m5").is_err());
        assert!(parse_duration("5").is_ok());
        assert!(parse_duration("5 m").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn jitter_only_shortens_and_stays_within_bound() {
        let ttl = Duration::from_secs(100);
        let mut seen_short = false;
        for _ in 0..1000 {
            let j = with_jitter(ttl, 0.1);
            assert!(j <= ttl && j >= Duration::from_secs(90), "{j:?}");
            seen_short |= j < Duration::from_secs(99);
        }
        assert!(seen_short, "jitter never moved the expiry");
        assert_eq!(with_jitter(ttl, 0.0), ttl);
    }

    #[test]
    fn huge_durations_saturate() {
        for _ in 0..1000 {
            assert!(with_jitter(Duration::MAX, 1.0) <= Duration::MAX);
        }
        let now = Instant::now();
        assert!(after(now, Duration::MAX) >= after(now, FAR));
        assert_eq!(
            after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}
