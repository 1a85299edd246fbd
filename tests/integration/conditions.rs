//! `condition` and `unless` on `#[cached]`, `condition` on `#[invalidates]`
//! (over the arguments, or the returned value), and `Links::store(false)`
//! in the plain API, on the in-process store, a `redis-server` and a Redis
//! Cluster.

use std::sync::atomic::{AtomicU32, Ordering};

use cache_runtime::{
    Cache, CacheOptions, CacheStatus, Links, cached, invalidates, with_cache_status,
};
use serde::{Deserialize, Serialize};

use crate::common::Fixture;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    pub id: u64,
    pub draft: bool,
}

struct Docs {
    cache: Cache,
    loads: AtomicU32,
}

impl Docs {
    fn load(&self, id: u64) -> Doc {
        self.loads.fetch_add(1, Ordering::SeqCst);
        Doc {
            id,
            draft: id.is_multiple_of(2),
        }
    }

    fn loads(&self) -> u32 {
        self.loads.load(Ordering::SeqCst)
    }

    /// Only small ids are cached; drafts (even ids) are never stored.
    #[cached(cache = self.cache, key = "doc:{id}", condition = id < 100, unless = |doc: &Doc| doc.draft)]
    async fn get(&self, id: u64) -> Result<Doc, String> {
        Ok(self.load(id))
    }

    /// `unless` as an expression over `ret`, on an `Option`.
    #[cached(cache = self.cache, key = "find:{id}", unless = ret.draft)]
    async fn find(&self, id: u64) -> Option<Doc> {
        Some(self.load(id))
    }

    /// Invalidates only when the saved document is published.
    #[invalidates(cache = self.cache, keys = ["doc:{id}", "find:{id}"], condition = !ret.draft)]
    async fn save(&self, id: u64, draft: bool) -> Result<Doc, String> {
        Ok(Doc { id, draft })
    }

    /// Invalidates only when asked to (a condition over an argument).
    #[invalidates(cache = self.cache, keys = ["doc:{id}"], condition = notify)]
    async fn touch(&self, id: u64, notify: bool) {
        let _ = (id, notify);
    }
}

crate::common::on_every_store!(
    a_false_condition_reads_and_stores_nothing,
    unless_keeps_a_value_out_of_the_cache,
    an_invalidation_condition_can_read_ret_and_the_arguments,
    the_plain_api_can_refuse_to_store,
);

fn docs(fx: &Fixture) -> Docs {
    Docs {
        cache: fx.cache.clone(),
        loads: AtomicU32::new(0),
    }
}

async fn a_false_condition_reads_and_stores_nothing(fx: Fixture) {
    let docs = docs(&fx);
    docs.get(1).await.unwrap();
    docs.get(1).await.unwrap();
    assert_eq!(docs.loads(), 1, "condition true: cached");
    // An entry under the key of a large id, put there by hand: a false
    // condition must not read it.
    fx.cache
        .set(
            "doc:101",
            &Doc {
                id: 0,
                draft: false,
            },
            None,
            &[],
        )
        .await
        .unwrap();
    let (doc, status) = with_cache_status(docs.get(101)).await;
    assert_eq!(doc.unwrap().id, 101, "not read from the cache");
    assert_eq!(status, Some(CacheStatus::Bypass));
    docs.get(103).await.unwrap();
    docs.get(103).await.unwrap();
    assert_eq!(docs.loads(), 4, "101 once, 103 twice: never cached");
    assert_eq!(fx.cache.get::<Doc>("doc:103").await, None, "nor stored");
    assert_eq!(fx.cache.stats().bypassed, 3);
}

async fn unless_keeps_a_value_out_of_the_cache(fx: Fixture) {
    let docs = docs(&fx);
    docs.get(2).await.unwrap();
    let (_, status) = with_cache_status(docs.get(2)).await;
    assert_eq!(status, Some(CacheStatus::Miss), "a draft is not stored");
    assert_eq!(docs.loads(), 2);
    assert_eq!(fx.cache.get::<Doc>("doc:2").await, None);
    docs.find(4).await.unwrap();
    docs.find(4).await.unwrap();
    assert_eq!(docs.loads(), 4, "unless over ret, on an Option");
    docs.find(3).await.unwrap();
    docs.find(3).await.unwrap();
    assert_eq!(docs.loads(), 5, "a published document is stored");
    assert_eq!(fx.cache.stats().fills, 1);
}

async fn an_invalidation_condition_can_read_ret_and_the_arguments(fx: Fixture) {
    let docs = docs(&fx);
    docs.get(1).await.unwrap();
    docs.find(1).await.unwrap();
    docs.save(1, true).await.unwrap();
    assert!(
        fx.cache.get::<Doc>("doc:1").await.is_some(),
        "saved as a draft: kept"
    );
    docs.touch(1, false).await;
    assert!(
        fx.cache.get::<Doc>("doc:1").await.is_some(),
        "touch without notify: kept"
    );
    assert_eq!(fx.cache.stats().invalidations, 0);
    docs.save(1, false).await.unwrap();
    assert_eq!(
        fx.cache.get::<Doc>("doc:1").await,
        None,
        "published: invalidated"
    );
    assert_eq!(fx.cache.get::<Option<Doc>>("find:1").await, None);
    docs.get(1).await.unwrap();
    docs.touch(1, true).await;
    assert_eq!(fx.cache.get::<Doc>("doc:1").await, None);
}

async fn the_plain_api_can_refuse_to_store(fx: Fixture) {
    const DOCS: CacheOptions = CacheOptions::new("docs");
    for _ in 0..2 {
        let doc = fx
            .cache
            .get_or_load_tagged(
                "plain:2",
                &DOCS,
                |doc: Option<&Doc>| Links::new().store(!doc.is_some_and(|d| d.draft)),
                || async { Doc { id: 2, draft: true } },
            )
            .await;
        assert!(doc.draft);
    }
    assert_eq!(fx.cache.stats().misses, 2);
    assert_eq!(fx.cache.get::<Doc>("plain:2").await, None);
}
