//! The reads that skip the cache's answer: the bypass (the loader alone)
//! and the forced refresh inside [`refreshing`](crate::refreshing) (the
//! loader, then its value stored over what is cached).

use std::future::Future;

use crate::shape::{Fill, Shape};
use crate::stats::Stats;
use crate::status::CacheStatus;

use super::*;

impl Cache {
    /// A read in bypass mode: the loader alone.
    pub(crate) async fn bypass<R, L, Fut>(&self, load: L) -> R
    where
        L: FnOnce() -> Fut,
        Fut: Future<Output = R>,
    {
        Stats::add(&self.stats_ref().bypassed, 1);
        crate::status::record(CacheStatus::Bypass);
        tracing::Span::current().record("outcome", "bypass");
        crate::adaptive::ignored(load()).await
    }

    /// A read inside [`refreshing`]: the fill token is read, then the loader
    /// runs, and its value is stored over whatever is cached unless an
    /// invalidation came since the token (`Cache::store_refreshed`: then
    /// the key is marked and its dependents go, as for a put). An absent
    /// value, or one not to be stored, removes the entry; an error leaves
    /// it as it was.
    pub(crate) async fn reload<S, R, L, Fut, G>(
        &self,
        key: &str,
        options: &CacheOptions,
        tags: G,
        load: L,
    ) -> R
    where
        S: Shape<R>,
        L: FnOnce() -> Fut,
        Fut: Future<Output = R>,
        G: FnOnce(Option<&S::Inner>) -> Links,
    {
        Stats::add(&self.stats_ref().forced_refreshes, 1);
        crate::status::record(CacheStatus::Refresh);
        tracing::Span::current().record("outcome", "forced");
        // Read before the loader starts (see `ensure_token`).
        let token = self.read_token().await;
        let (value, adapt) = crate::adaptive::collect(load()).await;
        match S::split(&value) {
            Fill::Value { stored, inner } => {
                let mut links = tags(Some(inner));
                links.tags.extend(adapt.tags);
                if links.not_stored || adapt.skip {
                    // Not to be cached: what was cached is stale now.
                    self.invalidate().key(key).run_reported().await;
                    return value;
                }
                let Some(token) = token else {
                    // The store did not answer: what it holds is stale now.
                    self.invalidate().key(key).run_reported().await;
                    return value;
                };
                let options = match adapt.ttl {
                    Some(ttl) => options.ttl(ttl).jitter(0.0),
                    None => *options,
                };
                match self.encode_put(key.to_owned(), stored, &options, links) {
                    Ok(put) => {
                        if let Err(e) = self.store_refreshed(put, token).await {
                            self.report("refresh", &e);
                        }
                    }
                    Err(e) => self.report("refresh", &e),
                }
            }
            Fill::Absent(_) => {
                self.invalidate().key(key).run_reported().await;
            }
            Fill::Skip => {}
        }
        value
    }
}
