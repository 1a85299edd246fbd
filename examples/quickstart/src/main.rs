//! The quick start: a repository whose reads are cached with `#[cached]` and
//! whose writes invalidate with `#[invalidates]`, on the in-process store.
//! Set `REDIS_URL` to run the same code against Redis.
//!
//! Run it with `cargo run -p quickstart`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use cache_runtime::{Cache, cached, invalidates};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Post {
    id: u64,
    author_id: u64,
    title: String,
}

#[derive(Debug)]
struct NotFound(u64);

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "post {} not found", self.0)
    }
}

impl std::error::Error for NotFound {}

/// A stand-in for a database table, counting the queries it answers.
struct Posts {
    cache: Cache,
    rows: Mutex<HashMap<u64, Post>>,
    queries: AtomicU32,
}

impl Posts {
    #[cached(cache = self.cache, key = "post:{id}", ttl = "5m", tags = ["author:{ret.author_id}"])]
    async fn get(&self, id: u64) -> Result<Post, NotFound> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.rows
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .ok_or(NotFound(id))
    }

    #[cached(cache = self.cache, key = "posts:by-author:<author_id>", ttl = 60, tags = ["author:<author_id>"])]
    async fn by_author(&self, author_id: u64) -> Vec<Post> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let rows = self.rows.lock().unwrap();
        let mut posts: Vec<Post> = rows
            .values()
            .filter(|p| p.author_id == author_id)
            .cloned()
            .collect();
        posts.sort_by_key(|p| p.id);
        posts
    }

    #[invalidates(cache = self.cache, keys = ["post:{post.id}"], tags = ["author:{post.author_id}"], publish = "post:updated")]
    async fn save(&self, post: Post) -> Result<(), NotFound> {
        self.rows.lock().unwrap().insert(post.id, post);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cache = match std::env::var("REDIS_URL") {
        Ok(url) => Cache::builder()
            .redis_url(url)
            .namespace("quickstart")
            .build()?,
        Err(_) => Cache::builder().namespace("quickstart").build()?,
    };
    let mut events = cache.local_events();
    let posts = Posts {
        cache: cache.clone(),
        rows: Mutex::new(HashMap::new()),
        queries: AtomicU32::new(0),
    };
    posts
        .save(Post {
            id: 1,
            author_id: 7,
            title: "Hello".into(),
        })
        .await?;
    posts
        .save(Post {
            id: 2,
            author_id: 7,
            title: "Second".into(),
        })
        .await?;
    let _ = events.try_recv();
    let _ = events.try_recv();

    let step = |what: &str| {
        let s = cache.stats();
        println!(
            "{what:<44} queries={} hits={} misses={} invalidations={}",
            posts.queries.load(Ordering::Relaxed),
            s.hits,
            s.misses,
            s.invalidations
        );
    };

    posts.get(1).await?;
    step("get(1): miss, the body runs");
    posts.get(1).await?;
    step("get(1): hit, the body does not run");
    posts.by_author(7).await;
    posts.by_author(7).await;
    step("by_author(7) twice: one miss, one hit");

    posts
        .save(Post {
            id: 1,
            author_id: 7,
            title: "Hello, edited".into(),
        })
        .await?;
    step("save(post 1): invalidates post:1 and author:7");
    if let Ok(event) = events.try_recv() {
        println!(
            "  published on {}: keys={:?} tags={:?}",
            event.channel(),
            event.keys,
            event.tags
        );
    }

    let post = posts.get(1).await?;
    step("get(1): miss again, fresh value");
    println!("  title is now {:?}", post.title);
    let listed = posts.by_author(7).await;
    step("by_author(7): miss again, fresh list");
    println!(
        "  titles: {:?}",
        listed.iter().map(|p| p.title.as_str()).collect::<Vec<_>>()
    );

    match posts.get(99).await {
        Err(NotFound(id)) => println!("get(99): NotFound({id}) is returned and not cached"),
        Ok(_) => unreachable!("post 99 does not exist"),
    }
    Ok(())
}
