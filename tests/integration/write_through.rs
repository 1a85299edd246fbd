//! Write-through (`#[cache_put]`): the value a write returns is stored under
//! its key after the body succeeds, and no fill that read before it can
//! overwrite it. Both stores.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use cache_runtime::{Cache, cache_put, cached, in_transaction};
use tokio::sync::oneshot;

use crate::common::{Fixture, Post};

macro_rules! put_suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $case() { super::$case(crate::common::Fixture::memory()).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $case() { super::$case(crate::common::Fixture::redis().ready().await).await })*
        }
    };
}

put_suite!(
    a_put_overtaken_by_a_concurrent_write_is_not_stored,
    a_put_whose_key_a_big_tag_removed_stays_refused_past_the_marker_limit,
    a_successful_write_stores_its_value,
    a_failed_write_stores_nothing,
    an_older_fill_cannot_overwrite_a_put,
    a_put_inside_a_transaction_waits_for_the_commit,
);

#[derive(Default)]
struct Posts {
    cache: Option<Cache>,
    rows: Mutex<HashMap<u64, Post>>,
    loads: AtomicU32,
    /// When set, the next load reports it has read, then waits.
    hold: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

impl Posts {
    fn new(cache: Cache) -> Arc<Posts> {
        let posts = Posts {
            cache: Some(cache),
            ..Default::default()
        };
        posts.rows.lock().unwrap().insert(
            1,
            Post {
                id: 1,
                author_id: 7,
                title: "v1".into(),
            },
        );
        Arc::new(posts)
    }

    fn cache(&self) -> &Cache {
        self.cache.as_ref().unwrap()
    }

    #[cached(cache = self.cache(), key = "post:{id}", ttl = 60, tags = ["author:{ret.author_id}"])]
    async fn get(&self, id: u64) -> Result<Post, String> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let row = self.rows.lock().unwrap().get(&id).cloned();
        let hold = self.hold.lock().unwrap().take();
        if let Some((read, go)) = hold {
            read.send(()).unwrap();
            go.await.unwrap();
        }
        row.ok_or_else(|| format!("no post {id}"))
    }

    /// `save`, whose body reports its commit and then waits before
    /// returning (a slow write).
    #[cache_put(cache = self.cache(), key = "post:{ret.id}", ttl = 60, tags = ["author:{ret.author_id}"])]
    async fn save_then_wait(
        &self,
        post: Post,
        committed: oneshot::Sender<()>,
        may_return: oneshot::Receiver<()>,
    ) -> Result<Post, String> {
        self.rows.lock().unwrap().insert(post.id, post.clone());
        committed.send(()).unwrap();
        may_return.await.unwrap();
        Ok(post)
    }

    #[cache_put(cache = self.cache(), key = "post:{ret.id}", ttl = 60, tags = ["author:{ret.author_id}"])]
    async fn save(&self, post: Post) -> Result<Post, String> {
        if post.title.is_empty() {
            return Err("a title is required".into());
        }
        self.rows.lock().unwrap().insert(post.id, post.clone());
        Ok(post)
    }

    fn loads(&self) -> u32 {
        self.loads.load(Ordering::SeqCst)
    }
}

fn post(title: &str) -> Post {
    Post {
        id: 1,
        author_id: 7,
        title: title.into(),
    }
}

async fn a_successful_write_stores_its_value(fx: Fixture) {
    let posts = Posts::new(fx.cache.clone());
    assert_eq!(posts.get(1).await.unwrap().title, "v1");
    posts.save(post("v2")).await.unwrap();
    assert_eq!(posts.get(1).await.unwrap().title, "v2", "the put value");
    assert_eq!(posts.loads(), 1, "served from the cache, not loaded");
    assert_eq!(fx.cache.stats().puts, 1);
    // Filed under its tags like a fill.
    fx.cache.invalidate().tag("author:7").await.unwrap();
    assert_eq!(posts.get(1).await.unwrap().title, "v2");
    assert_eq!(posts.loads(), 2);
}

async fn a_failed_write_stores_nothing(fx: Fixture) {
    let posts = Posts::new(fx.cache.clone());
    posts.get(1).await.unwrap();
    assert!(posts.save(post("")).await.is_err());
    assert_eq!(posts.get(1).await.unwrap().title, "v1");
    assert_eq!(fx.cache.stats().puts, 0);
}

async fn an_older_fill_cannot_overwrite_a_put(fx: Fixture) {
    let posts = Posts::new(fx.cache.clone());
    let (read_tx, read_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel();
    *posts.hold.lock().unwrap() = Some((read_tx, go_rx));
    // A reader misses and reads v1 ...
    let reader = tokio::spawn({
        let posts = posts.clone();
        async move { posts.get(1).await.unwrap() }
    });
    read_rx.await.unwrap();
    // ... a writer saves v2 and puts it ...
    posts.save(post("v2")).await.unwrap();
    // ... then the reader tries to store v1.
    go_tx.send(()).unwrap();
    assert_eq!(
        reader.await.unwrap().title,
        "v1",
        "its caller gets what it read"
    );
    assert_eq!(
        fx.cache
            .get::<Post>("post:1")
            .await
            .map(|p| p.title)
            .as_deref(),
        Some("v2"),
        "the older fill did not overwrite the put"
    );
    assert_eq!(fx.cache.stats().fills_rejected, 1);
}

async fn a_put_inside_a_transaction_waits_for_the_commit(fx: Fixture) {
    let posts = Posts::new(fx.cache.clone());
    posts.get(1).await.unwrap();
    let rolled_back: Result<(), String> = in_transaction(async {
        posts.save(post("v2")).await?;
        Err("rolled back".into())
    })
    .await;
    assert!(rolled_back.is_err());
    assert_eq!(
        fx.cache
            .get::<Post>("post:1")
            .await
            .map(|p| p.title)
            .as_deref(),
        Some("v1"),
        "nothing stored for a rolled-back write"
    );
    in_transaction(async {
        posts.save(post("v3")).await?;
        assert_eq!(fx.cache.stats().puts, 0, "held until the commit");
        Ok::<_, String>(())
    })
    .await
    .unwrap();
    assert_eq!(
        fx.cache
            .get::<Post>("post:1")
            .await
            .map(|p| p.title)
            .as_deref(),
        Some("v3")
    );
}

/// A put whose key a big tag invalidation removed since its ticket is not
/// stored, even after 1,000 pattern deletes pushed that invalidation's
/// record (on Redis, its tombstone's entry among the pattern markers) out
/// of the newest 1,000: the floor left in its place counts as a conflict
/// (before, the put's check looked at tombstones only, and stored it).
async fn a_put_whose_key_a_big_tag_removed_stays_refused_past_the_marker_limit(fx: Fixture) {
    let cache = fx.cache.clone();
    let options = cache_runtime::CacheOptions::new("posts");
    crate::common::fill_tag(&cache, "editor:4", crate::common::BIG_TAG).await;
    cache
        .set("post:4", &"v0", None, &["editor:4"])
        .await
        .unwrap();
    let ticket = cache.ticket().await;
    cache.invalidate().tag("editor:4").await.unwrap();
    for i in 0..1_000 {
        cache
            .delete_pattern(&format!("nothing:{i}:*"))
            .await
            .unwrap();
    }
    cache
        .put_after(
            &ticket,
            "post:4",
            &"older",
            &options,
            cache_runtime::Links::new(),
        )
        .await
        .unwrap();
    assert_eq!(cache.get::<String>("post:4").await, None);
}

/// Two writers of one row: A's write begins (its ticket), B commits a newer
/// row and invalidates, then A's put lands. A's value is older than B's
/// commit: it must not be stored (the key is still invalidated), through
/// the attribute and the plain API alike. (Before, the put was ordered
/// only after the invalidations that came before its own marking, and the
/// older value stayed cached until its TTL. The model test found it.)
async fn a_put_overtaken_by_a_concurrent_write_is_not_stored(fx: Fixture) {
    let posts = Posts::new(fx.cache.clone());
    let cache = fx.cache.clone();
    let options = cache_runtime::CacheOptions::new("posts");
    // The attribute: A's body commits, then waits; B's write runs meanwhile.
    let (committed, a_committed) = oneshot::channel();
    let (go, may_return) = oneshot::channel::<()>();
    let a = tokio::spawn({
        let posts = posts.clone();
        async move {
            posts
                .save_then_wait(
                    Post {
                        id: 1,
                        author_id: 7,
                        title: "A".into(),
                    },
                    committed,
                    may_return,
                )
                .await
        }
    });
    a_committed.await.unwrap();
    posts.rows.lock().unwrap().insert(
        1,
        Post {
            id: 1,
            author_id: 7,
            title: "B".into(),
        },
    );
    cache.invalidate().key("post:1").await.unwrap(); // B returns
    go.send(()).unwrap();
    assert_eq!(a.await.unwrap().unwrap().title, "A");
    assert_eq!(
        posts.get(1).await.unwrap().title,
        "B",
        "A's older value was stored over B's write"
    );
    assert_eq!(cache.stats().fills_rejected, 1, "A's put was refused");

    // The plain API, the same way.
    let ticket = cache.ticket().await;
    cache.invalidate().key("post:2").await.unwrap();
    cache
        .put_after(
            &ticket,
            "post:2",
            &"older",
            &options,
            cache_runtime::Links::new(),
        )
        .await
        .unwrap();
    assert_eq!(cache.get::<String>("post:2").await, None);
    // A tag invalidation that removed the key since the ticket counts too
    // (a big tag: on Redis its members get no marker each).
    crate::common::fill_tag(&cache, "editor:3", crate::common::BIG_TAG).await;
    cache
        .set("post:3", &"v0", None, &["editor:3"])
        .await
        .unwrap();
    let ticket = cache.ticket().await;
    let report = cache.invalidate().tag("editor:3").await.unwrap();
    assert_eq!(report.removed, crate::common::BIG_TAG as u64 + 1);
    cache
        .put_after(
            &ticket,
            "post:3",
            &"older",
            &options,
            cache_runtime::Links::new(),
        )
        .await
        .unwrap();
    assert_eq!(cache.get::<String>("post:3").await, None);
    let ticket = cache.ticket().await;
    cache
        .put_after(
            &ticket,
            "post:2",
            &"newest",
            &options,
            cache_runtime::Links::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        cache.get::<String>("post:2").await.as_deref(),
        Some("newest")
    );
}
