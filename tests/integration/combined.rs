//! Several write attributes on one function: `#[invalidates]` more than
//! once, with `#[cache_put]`. Everything is applied after the body
//! succeeds, in one step per cache (every invalidation, then every put),
//! each event naming what its own attribute invalidates. On every store,
//! and counted in round trips on Redis.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, CacheOptions, Links, cache_put, cached, in_transaction, invalidates};

use crate::common::{Fixture, Post};

struct Blog {
    cache: Cache,
    rows: Mutex<HashMap<u64, Post>>,
    loads: AtomicU32,
}

impl Blog {
    fn new(cache: Cache) -> Blog {
        let post = Post {
            id: 1,
            author_id: 7,
            title: "v1".into(),
        };
        Blog {
            cache,
            rows: Mutex::new(HashMap::from([(1, post)])),
            loads: AtomicU32::new(0),
        }
    }

    fn loads(&self) -> u32 {
        self.loads.load(Ordering::SeqCst)
    }

    fn load(&self) {
        self.loads.fetch_add(1, Ordering::SeqCst);
    }

    #[cached(cache = self.cache, key = "post:{id}", ttl = 60)]
    async fn post(&self, id: u64) -> Result<Post, String> {
        self.load();
        self.rows
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("no post {id}"))
    }

    #[cached(cache = self.cache, key = "by-author:{author_id}", ttl = 60, tags = ["author:{author_id}"])]
    async fn by_author(&self, author_id: u64) -> Vec<u64> {
        self.load();
        let rows = self.rows.lock().unwrap();
        let mut ids: Vec<u64> = rows
            .values()
            .filter(|p| p.author_id == author_id)
            .map(|p| p.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    #[cached(cache = self.cache, key = "feed", ttl = 60)]
    async fn feed(&self) -> Vec<String> {
        self.load();
        self.rows
            .lock()
            .unwrap()
            .values()
            .map(|p| p.title.clone())
            .collect()
    }

    /// Stores the saved post under its key, and invalidates its author's
    /// lists and the feed, each with an event.
    #[cache_put(cache = self.cache, key = "post:{ret.id}", ttl = 60)]
    #[invalidates(cache = self.cache, tags = ["author:{ret.author_id}"], publish = "post:updated")]
    #[invalidates(cache = self.cache, keys = ["feed"], publish = "feed:changed")]
    async fn save(&self, post: Post, fail: bool) -> Result<Post, String> {
        if fail {
            return Err("constraint violated".into());
        }
        self.rows.lock().unwrap().insert(post.id, post.clone());
        Ok(post)
    }

    /// Invalidates the key its put stores: the put is applied after the
    /// invalidations, so it stays.
    #[invalidates(cache = self.cache, keys = ["post:{id}"])]
    #[cache_put(cache = self.cache, key = "post:{id}", ttl = 60)]
    async fn retitle(&self, id: u64, title: &str) -> Result<Post, String> {
        let mut rows = self.rows.lock().unwrap();
        let post = rows.get_mut(&id).ok_or("no post")?;
        post.title = title.to_owned();
        Ok(post.clone())
    }

    #[invalidates(cache = self.cache, keys = ["post:{id}"])]
    async fn remove(&self, id: u64) -> Result<(), String> {
        self.rows.lock().unwrap().remove(&id);
        Ok(())
    }
}

crate::common::on_every_store!(
    every_write_is_applied_after_success,
    a_failed_body_applies_nothing,
    a_put_outlives_the_invalidation_of_its_own_key,
    a_transaction_keeps_a_put_before_a_later_invalidation,
    the_plain_api_puts_and_invalidates_in_one_step,
    a_put_over_the_size_limit_removes_the_old_value,
);

fn v2() -> Post {
    Post {
        id: 1,
        author_id: 7,
        title: "v2".into(),
    }
}

async fn warm(blog: &Blog) {
    blog.post(1).await.unwrap();
    blog.by_author(7).await;
    blog.feed().await;
    assert_eq!(blog.loads(), 3);
    blog.post(1).await.unwrap();
    blog.by_author(7).await;
    blog.feed().await;
    assert_eq!(blog.loads(), 3, "all three cached");
}

async fn every_write_is_applied_after_success(fx: Fixture) {
    let blog = Blog::new(fx.cache.clone());
    warm(&blog).await;
    let mut events = fx.cache.local_events();

    assert_eq!(blog.save(v2(), false).await, Ok(v2()));
    assert_eq!(blog.post(1).await.unwrap().title, "v2", "the put");
    assert_eq!(blog.loads(), 3, "served from the put, not loaded");
    blog.by_author(7).await;
    assert_eq!(blog.loads(), 4, "the author's lists were invalidated");
    assert_eq!(blog.feed().await, ["v2"]);
    assert_eq!(blog.loads(), 5, "the feed was invalidated");
    assert_eq!(fx.cache.stats().puts, 1);
    assert_eq!(
        fx.cache.stats().invalidations,
        1,
        "one step for the whole call"
    );

    // One event per attribute, in the order written, each naming its own.
    let first = events.try_recv().expect("post:updated");
    assert_eq!(first.event, "post:updated");
    assert_eq!(
        (first.tags, first.keys),
        (vec!["author:7".to_owned()], vec![])
    );
    let second = events.try_recv().expect("feed:changed");
    assert_eq!(second.event, "feed:changed");
    assert_eq!(
        (second.keys, second.tags),
        (vec!["feed".to_owned()], vec![])
    );
    assert!(events.try_recv().is_err(), "two events");
}

async fn a_failed_body_applies_nothing(fx: Fixture) {
    let blog = Blog::new(fx.cache.clone());
    warm(&blog).await;
    let mut events = fx.cache.local_events();
    assert!(blog.save(v2(), true).await.is_err());
    assert_eq!(blog.post(1).await.unwrap().title, "v1", "nothing put");
    blog.by_author(7).await;
    blog.feed().await;
    assert_eq!(blog.loads(), 3, "nothing invalidated");
    assert!(events.try_recv().is_err(), "nothing published");
    assert_eq!(fx.cache.stats().invalidations, 0);
}

async fn a_put_outlives_the_invalidation_of_its_own_key(fx: Fixture) {
    let blog = Blog::new(fx.cache.clone());
    blog.post(1).await.unwrap();
    blog.retitle(1, "v3").await.unwrap();
    assert_eq!(blog.post(1).await.unwrap().title, "v3");
    assert_eq!(blog.loads(), 1, "stored by the put, after the invalidation");
}

/// Held changes of one cache are merged into one step only where that keeps
/// their order: a put followed by an invalidation of its key must end with
/// the key gone.
async fn a_transaction_keeps_a_put_before_a_later_invalidation(fx: Fixture) {
    let blog = Blog::new(fx.cache.clone());
    warm(&blog).await;
    in_transaction(async {
        blog.save(v2(), false).await?;
        blog.remove(1).await
    })
    .await
    .unwrap();
    assert!(
        blog.post(1).await.is_err(),
        "removed after it was put: the row is gone, so is the entry"
    );
    assert_eq!(blog.loads(), 4);
}

async fn the_plain_api_puts_and_invalidates_in_one_step(fx: Fixture) {
    let blog = Blog::new(fx.cache.clone());
    warm(&blog).await;
    let mut events = fx.cache.local_events();
    let options = CacheOptions::new("posts").ttl(Duration::from_secs(60));
    fx.cache
        .invalidate()
        .keys(["feed", "post:1"])
        .put("post:1", &v2(), &options, Links::new())
        .publish("post:updated")
        .await
        .unwrap();
    assert_eq!(blog.post(1).await.unwrap().title, "v2", "the put survives");
    blog.feed().await;
    assert_eq!(blog.loads(), 4, "only the feed was reloaded");
    assert_eq!(events.try_recv().unwrap().keys, ["feed", "post:1"]);
    let stats = fx.cache.stats();
    assert_eq!((stats.invalidations, stats.puts), (1, 1));
}

async fn a_put_over_the_size_limit_removes_the_old_value(fx: Fixture) {
    let blog = Blog::new(fx.cache.clone());
    warm(&blog).await;
    let options = CacheOptions::new("posts").max_size(16);
    let big = Post {
        title: "x".repeat(64),
        ..v2()
    };
    fx.cache
        .put("post:1", &big, &options, Links::new())
        .await
        .unwrap();
    assert_eq!(fx.cache.stats().oversized, 1);
    assert_eq!(fx.cache.stats().puts, 0, "not stored");
    assert_eq!(blog.post(1).await.unwrap().title, "v1");
    assert_eq!(blog.loads(), 4, "the old entry is gone: loaded again");
}

/// The three attributes of `save` cost three round trips: the put's ticket
/// (before the body: see `Ticket`), one step (the tag, the key, the put's
/// marking and check, both events), then the put's fill.
#[tokio::test]
async fn one_call_s_writes_take_three_round_trips() {
    let crate::common::Counted {
        server: _server,
        proxy,
        cache,
    } = crate::common::Counted::start("combined").await;
    let blog = Blog::new(cache.clone());
    // Loads the scripts.
    blog.save(v2(), false).await.unwrap();

    let before = proxy.requests();
    blog.save(v2(), false).await.unwrap();
    assert_eq!(proxy.requests() - before, 3);
    assert_eq!(cache.stats().store_errors, 0);
    assert_eq!(cache.stats().puts, 2);
    assert_eq!(blog.post(1).await.unwrap().title, "v2");
    assert_eq!(blog.loads(), 0, "the put landed");
}
