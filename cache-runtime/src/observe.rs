//! What a cache does, for operators: counters and histograms through the
//! [`metrics`](https://docs.rs/metrics) facade (feature `metrics`), beside
//! the `tracing` spans the read and invalidation paths open at debug level.
//!
//! Every metric carries `cache` (the namespace); those of a cached function
//! carry `name` too (the function's name, or `name = "..."` of its
//! attribute). Without the feature, or without a recorder installed, the
//! calls here cost nothing worth measuring.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `cache_hits_total` | counter | cache, name, source (`process` or `redis`) |
//! | `cache_misses_total` | counter | cache, name |
//! | `cache_stale_served_total` | counter | cache, name |
//! | `cache_fail_safe_served_total` | counter | cache, name |
//! | `cache_refreshes_total` | counter | cache, name |
//! | `cache_load_seconds` | histogram | cache, name (every loader run) |
//! | `cache_fills_rejected_total` | counter | cache |
//! | `cache_invalidations_total` | counter | cache |
//! | `cache_invalidation_seconds` | histogram | cache |
//! | `cache_entries_removed_total` | counter | cache |
//! | `cache_store_errors_total` | counter | cache, op |
//! | `cache_circuit_open` | gauge (0 or 1) | cache |

use std::time::Duration;

/// The labels and handles of one cache, made once at build.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    cache: metrics::SharedString,
}

/// Where a hit was answered from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    /// The in-process store or tier.
    Process,
    /// Redis.
    Redis,
}

#[cfg(feature = "metrics")]
impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Process => "process",
            Source::Redis => "redis",
        }
    }
}

#[cfg(feature = "metrics")]
impl Metrics {
    pub(crate) fn new(namespace: &str) -> Self {
        let cache: std::sync::Arc<str> = namespace.into();
        Metrics {
            cache: metrics::SharedString::from_shared(cache),
        }
    }

    fn of_fn(&self, metric: &'static str, name: &'static str) -> metrics::Counter {
        metrics::counter!(metric, "cache" => self.cache.clone(), "name" => name)
    }

    pub(crate) fn hit(&self, name: &'static str, source: Source) {
        metrics::counter!("cache_hits_total", "cache" => self.cache.clone(), "name" => name, "source" => source.label())
            .increment(1);
    }

    pub(crate) fn miss(&self, name: &'static str) {
        self.of_fn("cache_misses_total", name).increment(1);
    }

    pub(crate) fn stale_served(&self, name: &'static str) {
        self.of_fn("cache_stale_served_total", name).increment(1);
    }

    pub(crate) fn fail_safe_served(&self, name: &'static str) {
        self.of_fn("cache_fail_safe_served_total", name)
            .increment(1);
    }

    pub(crate) fn refresh(&self, name: &'static str) {
        self.of_fn("cache_refreshes_total", name).increment(1);
    }

    pub(crate) fn load(&self, name: &'static str, took: Duration) {
        metrics::histogram!("cache_load_seconds", "cache" => self.cache.clone(), "name" => name)
            .record(took.as_secs_f64());
    }

    pub(crate) fn fill_rejected(&self) {
        metrics::counter!("cache_fills_rejected_total", "cache" => self.cache.clone()).increment(1);
    }

    pub(crate) fn invalidation(&self, removed: u64, took: Duration) {
        metrics::counter!("cache_invalidations_total", "cache" => self.cache.clone()).increment(1);
        metrics::counter!("cache_entries_removed_total", "cache" => self.cache.clone())
            .increment(removed);
        metrics::histogram!("cache_invalidation_seconds", "cache" => self.cache.clone())
            .record(took.as_secs_f64());
    }

    pub(crate) fn store_error(&self, op: &str) {
        metrics::counter!("cache_store_errors_total", "cache" => self.cache.clone(), "op" => op.to_owned())
            .increment(1);
    }

    pub(crate) fn circuit(&self, open: bool) {
        metrics::gauge!("cache_circuit_open", "cache" => self.cache.clone()).set(if open {
            1.0
        } else {
            0.0
        });
    }
}

/// Without the feature: nothing to record.
#[cfg(not(feature = "metrics"))]
#[allow(clippy::unused_self)]
impl Metrics {
    pub(crate) fn new(_namespace: &str) -> Self {
        Metrics {}
    }
    #[inline]
    pub(crate) fn hit(&self, _name: &'static str, _source: Source) {}
    #[inline]
    pub(crate) fn miss(&self, _name: &'static str) {}
    #[inline]
    pub(crate) fn stale_served(&self, _name: &'static str) {}
    #[inline]
    pub(crate) fn fail_safe_served(&self, _name: &'static str) {}
    #[inline]
    pub(crate) fn refresh(&self, _name: &'static str) {}
    #[inline]
    pub(crate) fn load(&self, _name: &'static str, _took: Duration) {}
    #[inline]
    pub(crate) fn fill_rejected(&self) {}
    #[inline]
    pub(crate) fn invalidation(&self, _removed: u64, _took: Duration) {}
    #[inline]
    pub(crate) fn store_error(&self, _op: &str) {}
    #[inline]
    pub(crate) fn circuit(&self, _open: bool) {}
}
