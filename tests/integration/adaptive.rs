//! Adaptive entries (`cache_runtime::adapt`): a loader decides, from what it
//! loaded, its entry's TTL, more tags, or that it is not stored. Through
//! `#[cached]`, the plain API, batch reads and `refreshing`; on the
//! in-process store, on Redis, and on Redis with an in-process tier.
//!
//! The sleeps here are what the cases measure (an entry's TTL passing),
//! never a wait for something else to finish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, CacheOptions, CacheStatus, Links, adapt, cached, with_cache_status};

use crate::common::Fixture;

/// What an upstream answers: a value and its `max-age`, or a draft.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct Doc {
    id: u64,
    draft: bool,
}

struct Docs {
    cache: Cache,
    loads: AtomicU32,
}

impl Docs {
    fn new(cache: Cache) -> Docs {
        Docs {
            cache,
            loads: AtomicU32::new(0),
        }
    }

    fn loads(&self) -> u32 {
        self.loads.load(Ordering::SeqCst)
    }

    /// An hour by the attribute; 300 ms when the upstream says so.
    #[cached(cache = self.cache, key = "doc:{id}", ttl = "1h")]
    async fn doc(&self, id: u64, max_age: Option<u64>) -> Result<Doc, String> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        if let Some(ms) = max_age {
            assert!(
                adapt(|a| a.ttl(Duration::from_millis(ms))),
                "inside a loader"
            );
        }
        Ok(Doc { id, draft: false })
    }

    /// Drafts are returned, not stored; published documents are filed
    /// under their section as well as under `docs`.
    #[cached(cache = self.cache, key = "post:{id}", ttl = "1h", tags = ["docs"])]
    async fn post(&self, id: u64, draft: bool) -> Option<Doc> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let doc = Doc { id, draft };
        adapt(|a| {
            if doc.draft {
                a.skip()
            } else {
                a.tag(format!("section:{}", id % 2))
            }
        });
        Some(doc)
    }

    /// Calls `post` (which adapts its own entry) inside its own loader.
    #[cached(cache = self.cache, key = "front:{id}", ttl = "1h")]
    async fn front(&self, id: u64) -> Vec<Doc> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.post(id, true).await.into_iter().collect()
    }

    /// A draft read without the cache (`condition` false): its `skip` is
    /// its own, and there is no entry of its own to skip.
    #[cached(cache = self.cache, key = "bypassed:{id}", condition = false)]
    async fn bypassed(&self, id: u64) -> Doc {
        adapt(|a| a.skip());
        Doc { id, draft: true }
    }

    /// Calls `bypassed` inside its own loader.
    #[cached(cache = self.cache, key = "outer:{id}", ttl = "1h")]
    async fn outer(&self, id: u64) -> Doc {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.bypassed(id).await
    }

    #[cached(batch, cache = self.cache, key = "item:{id}", ttl = "1h")]
    async fn items(&self, ids: &[u64]) -> HashMap<u64, Doc> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        adapt(|a| a.tag("items"));
        ids.iter()
            .map(|&id| (id, Doc { id, draft: false }))
            .collect()
    }
}

crate::common::on_memory_redis_and_tier!(
    the_loader_sets_the_ttl,
    the_loader_adds_tags,
    the_loader_skips_storing,
    a_nested_loader_decides_for_its_own_entry_only,
    a_bypassed_inner_call_decides_nothing_for_the_outer_entry,
    the_plain_api_adapts_too,
    a_batch_load_adapts_every_id_it_loaded,
    a_forced_refresh_adapts_too,
);

async fn the_loader_sets_the_ttl(fx: Fixture) {
    let docs = Docs::new(fx.cache.clone());
    assert!(docs.doc(1, Some(300)).await.is_ok());
    assert!(docs.doc(2, None).await.is_ok());
    let (_, status) = with_cache_status(docs.doc(1, Some(300))).await;
    assert_eq!(status, Some(CacheStatus::Hit), "stored");
    tokio::time::sleep(Duration::from_millis(450)).await; // the adapted TTL passes
    assert!(docs.doc(2, None).await.is_ok());
    assert_eq!(docs.loads(), 2, "the attribute's hour holds for the other");
    let (_, status) = with_cache_status(docs.doc(1, Some(300))).await;
    assert_eq!(
        status,
        Some(CacheStatus::Miss),
        "expired at the loader's TTL"
    );
    assert_eq!(docs.loads(), 3);
}

async fn the_loader_adds_tags(fx: Fixture) {
    let docs = Docs::new(fx.cache.clone());
    for id in [1, 2, 3] {
        assert!(docs.post(id, false).await.is_some());
    }
    fx.cache.invalidate().tag("section:1").await.unwrap();
    assert_eq!(
        fx.cache
            .get::<Option<Doc>>("post:2")
            .await
            .flatten()
            .map(|d| d.id),
        Some(2)
    );
    assert_eq!(
        fx.cache.get::<Option<Doc>>("post:1").await,
        None,
        "filed under the loader's tag"
    );
    assert_eq!(fx.cache.get::<Option<Doc>>("post:3").await, None);
    fx.cache.invalidate().tag("docs").await.unwrap();
    assert_eq!(
        fx.cache.get::<Option<Doc>>("post:2").await,
        None,
        "and still under the attribute's"
    );
}

async fn the_loader_skips_storing(fx: Fixture) {
    let docs = Docs::new(fx.cache.clone());
    assert_eq!(docs.post(5, true).await, Some(Doc { id: 5, draft: true }));
    let (draft, status) = with_cache_status(docs.post(5, true)).await;
    assert_eq!(draft.map(|d| d.draft), Some(true));
    assert_eq!(status, Some(CacheStatus::Miss), "a draft is not stored");
    assert_eq!(docs.loads(), 2);
    assert!(docs.post(6, false).await.is_some());
    let (_, status) = with_cache_status(docs.post(6, false)).await;
    assert_eq!(status, Some(CacheStatus::Hit), "a published one is");
}

async fn a_nested_loader_decides_for_its_own_entry_only(fx: Fixture) {
    let docs = Docs::new(fx.cache.clone());
    assert_eq!(docs.front(7).await.len(), 1);
    assert_eq!(docs.loads(), 2, "front and the draft it holds");
    let (_, status) = with_cache_status(docs.front(7)).await;
    assert_eq!(
        status,
        Some(CacheStatus::Hit),
        "the inner draft's skip is not the outer entry's"
    );
    assert_eq!(
        fx.cache.get::<Option<Doc>>("post:7").await,
        None,
        "the draft was not stored"
    );
    assert!(!adapt(|a| a.skip()), "outside a loader nothing is decided");
}

async fn the_plain_api_adapts_too(fx: Fixture) {
    let options = CacheOptions::new("plain").ttl(Duration::from_secs(3600));
    let load = |ttl: u64| async move {
        adapt(|a| a.ttl(Duration::from_millis(ttl)).tag("plain"));
        Ok::<u32, String>(1)
    };
    let loaded: Result<u32, String> = fx.cache.get_or_load("short", &options, || load(300)).await;
    assert_eq!(loaded, Ok(1));
    let skipped = fx
        .cache
        .get_or_load_tagged(
            "skipped",
            &options,
            |_| Links::new(),
            || async {
                adapt(|a| a.skip());
                2u32
            },
        )
        .await;
    assert_eq!(skipped, 2);
    assert_eq!(fx.cache.get::<u32>("skipped").await, None, "not stored");
    assert_eq!(fx.cache.get::<u32>("short").await, Some(1));
    tokio::time::sleep(Duration::from_millis(450)).await; // the adapted TTL passes
    assert_eq!(
        fx.cache.get::<u32>("short").await,
        None,
        "gone at the loader's TTL"
    );
    let _: Result<u32, String> = fx
        .cache
        .get_or_load("tagged", &options, || load(60_000))
        .await;
    fx.cache.invalidate().tag("plain").await.unwrap();
    assert_eq!(
        fx.cache.get::<u32>("tagged").await,
        None,
        "filed under the loader's tag"
    );
}

async fn a_batch_load_adapts_every_id_it_loaded(fx: Fixture) {
    let docs = Docs::new(fx.cache.clone());
    assert_eq!(docs.items(&[1, 2, 3]).await.len(), 3);
    assert_eq!(docs.items(&[1, 2, 3]).await.len(), 3);
    assert_eq!(docs.loads(), 1, "stored");
    fx.cache.invalidate().tag("items").await.unwrap();
    for id in [1, 2, 3] {
        assert_eq!(
            fx.cache.get::<Doc>(&format!("item:{id}")).await,
            None,
            "item {id}"
        );
    }
    assert_eq!(docs.items(&[1, 2, 3]).await.len(), 3);
    assert_eq!(docs.loads(), 2);
}

async fn a_forced_refresh_adapts_too(fx: Fixture) {
    let docs = Docs::new(fx.cache.clone());
    assert!(docs.post(9, false).await.is_some());
    // Reloaded as a draft inside `refreshing`: what was cached goes.
    let reloaded = cache_runtime::refreshing(docs.post(9, true)).await;
    assert_eq!(reloaded.map(|d| d.draft), Some(true));
    assert_eq!(
        fx.cache.get::<Option<Doc>>("post:9").await,
        None,
        "skipped: removed"
    );
    let reloaded = cache_runtime::refreshing(docs.post(9, false)).await;
    assert_eq!(reloaded.map(|d| d.draft), Some(false));
    fx.cache.invalidate().tag("section:1").await.unwrap();
    assert_eq!(
        fx.cache.get::<Option<Doc>>("post:9").await,
        None,
        "stored under the loader's tag"
    );
}

async fn a_bypassed_inner_call_decides_nothing_for_the_outer_entry(fx: Fixture) {
    let docs = Docs::new(fx.cache.clone());
    assert_eq!(docs.outer(4).await.id, 4);
    let (_, status) = with_cache_status(docs.outer(4)).await;
    assert_eq!(
        status,
        Some(CacheStatus::Hit),
        "the inner skip did not reach the outer entry"
    );
    assert_eq!(docs.loads(), 1);
}
