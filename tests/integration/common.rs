//! A repository annotated the way users annotate theirs, over either store.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use cache_runtime::{Cache, cache_put, cached, invalidates};
use integration_tests::{CountingProxy, RedisCluster, RedisServer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Post {
    pub id: u64,
    pub author_id: u64,
    pub title: String,
}

/// `mod cluster` with one test that runs every `async fn case(fx: Fixture)`,
/// one after another, on one three-master cluster (each case in its own
/// namespace): starting a cluster per case would cost more than the cases.
macro_rules! on_one_cluster {
    ($($case:ident),* $(,)?) => {
        mod cluster {
            #[tokio::test]
            async fn every_case() {
                let cluster = integration_tests::RedisCluster::start();
                $(
                    eprintln!("cluster case: {}", stringify!($case));
                    super::$case(crate::common::Fixture::cluster(&cluster, stringify!($case))).await;
                )*
            }
        }
    };
}
pub(crate) use on_one_cluster;

/// Runs every `async fn case(fx: Fixture)` on the in-process store, on a
/// `redis-server` of its own (a test per case), and on one cluster.
macro_rules! on_every_store {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $case() { super::$case(crate::common::Fixture::memory()).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $case() { super::$case(crate::common::Fixture::redis().ready().await).await })*
        }
        crate::common::on_one_cluster!($($case),*);
    };
}
pub(crate) use on_every_store;

/// Runs every `async fn case(fx: Fixture)` on the in-process store, on a
/// `redis-server` of its own, and on one with an in-process tier in front
/// (`Fixture::tiered`): for features whose tier behaviour matters more than
/// the cluster's routing.
macro_rules! on_memory_redis_and_tier {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $case() { super::$case(crate::common::Fixture::memory()).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $case() { super::$case(crate::common::Fixture::redis().ready().await).await })*
        }
        mod tiered {
            $(#[tokio::test] async fn $case() { super::$case(crate::common::Fixture::tiered().await).await })*
        }
    };
}
pub(crate) use on_memory_redis_and_tier;

/// The store timeout of the suites' caches. The suites test what a cache
/// does, not its timeouts (those are `faults.rs` and `reliability.rs`, with
/// caches of their own): their crowd cases send 2,000 requests at once from
/// one thread of a debug build, and on a loaded 2-core machine the default
/// 500 ms turned queueing into faults.
const FIXTURE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Which store a test runs on; the server lives as long as the fixture.
pub struct Fixture {
    pub cache: Cache,
    /// Keeps the test's redis-server alive as long as the fixture.
    pub _server: Option<RedisServer>,
    /// The node URLs when the store is a Redis Cluster (which the test owns).
    pub cluster: Option<Vec<String>>,
}

impl Fixture {
    pub fn memory() -> Fixture {
        Fixture {
            cache: Cache::builder()
                .namespace("test")
                .jitter(0.0)
                .build()
                .unwrap(),
            _server: None,
            cluster: None,
        }
    }

    pub fn redis() -> Fixture {
        let server = RedisServer::start();
        let cache = Cache::builder()
            .redis_url(server.url())
            .namespace("test")
            .jitter(0.0)
            .timeout(FIXTURE_TIMEOUT)
            .build()
            .unwrap();
        Fixture {
            cache,
            _server: Some(server),
            cluster: None,
        }
    }

    /// Once the cache listens to pub/sub: subscribing forgets the server's
    /// epoch (it may have changed unseen), so a read in flight then takes a
    /// cached entry for another epoch's and loads it again; a case that
    /// counts hits and loads starts after that.
    pub async fn ready(self) -> Fixture {
        assert!(
            self.cache.ready(std::time::Duration::from_secs(10)).await,
            "the cache subscribes"
        );
        self
    }

    /// Redis with an in-process tier, subscribed.
    pub async fn tiered() -> Fixture {
        let server = RedisServer::start();
        let cache = Cache::builder()
            .redis_url(server.url())
            .namespace("test")
            .jitter(0.0)
            .timeout(FIXTURE_TIMEOUT)
            .local_ttl(std::time::Duration::from_secs(30))
            .build()
            .unwrap();
        integration_tests::wait_until(
            "the tier subscribes",
            std::time::Duration::from_secs(5),
            async || cache.listening(),
        )
        .await;
        Fixture {
            cache,
            _server: Some(server),
            cluster: None,
        }
    }

    /// A cache in its own `namespace` on a three-master cluster that the
    /// caller keeps alive (one cluster serves a whole list of cases).
    pub fn cluster(cluster: &RedisCluster, namespace: &str) -> Fixture {
        let cache = Cache::builder()
            .redis_cluster(cluster.urls())
            .namespace(namespace)
            .jitter(0.0)
            .timeout(FIXTURE_TIMEOUT)
            .build()
            .unwrap();
        Fixture {
            cache,
            _server: None,
            cluster: Some(cluster.urls()),
        }
    }

    pub fn repo(&self) -> Repo {
        Repo::new(self.cache.clone())
    }
}

/// A cache whose round trips to Redis are counted: a `redis-server` of its
/// own behind a counting proxy. No subscriber (its pings would be counted
/// too), and a generous timeout: counted here are calls, not time, and a
/// loaded machine must not turn a slow call into a timeout and a retry.
pub struct Counted {
    pub server: RedisServer,
    pub proxy: CountingProxy,
    pub cache: Cache,
}

impl Counted {
    pub async fn start(namespace: &str) -> Counted {
        let server = RedisServer::start();
        let proxy = CountingProxy::start(server.port()).await;
        let cache = Cache::builder()
            .redis_url(proxy.url())
            .namespace(namespace)
            .timeout(std::time::Duration::from_secs(4))
            .apply_events(false)
            .build()
            .unwrap();
        // The start-up read of the server's settings, out of every window
        // a test counts.
        integration_tests::wait_until(
            "the cache read the server's settings",
            std::time::Duration::from_secs(10),
            async || cache.health().eviction.is_some(),
        )
        .await;
        Counted {
            server,
            proxy,
            cache,
        }
    }
}

/// A table of posts behind cached and invalidating methods, counting the
/// queries that reach it.
pub struct Repo {
    pub cache: Cache,
    pub rows: Mutex<HashMap<u64, Post>>,
    pub loads: AtomicU32,
}

impl Repo {
    pub fn new(cache: Cache) -> Repo {
        let rows = (1..=3)
            .map(|id| {
                (
                    id,
                    Post {
                        id,
                        author_id: if id < 3 { 7 } else { 8 },
                        title: format!("post {id}"),
                    },
                )
            })
            .collect();
        Repo {
            cache,
            rows: Mutex::new(rows),
            loads: AtomicU32::new(0),
        }
    }

    pub fn loads(&self) -> u32 {
        self.loads.load(Ordering::SeqCst)
    }

    fn row(&self, id: u64) -> Option<Post> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.rows.lock().unwrap().get(&id).cloned()
    }

    #[cached(cache = self.cache, key = "post:{id}", ttl = 60, tags = ["author:{ret.author_id}"])]
    pub async fn get(&self, id: u64) -> Result<Post, String> {
        self.row(id).ok_or_else(|| format!("no post {id}"))
    }

    #[cached(cache = self.cache, key = "find:<id>", ttl = "1m")]
    pub async fn find(&self, id: u64) -> Option<Post> {
        self.row(id)
    }

    #[cached(cache = self.cache, key = "find-neg:{id}", ttl = "1m", cache_none = "1m", tags = ["post:{id}"])]
    pub async fn find_remembering_none(&self, id: u64) -> Option<Post> {
        self.row(id)
    }

    #[cached(cache = self.cache, key = "by-author:{author_id}", tags = ["author:{author_id}"])]
    pub async fn by_author(&self, author_id: u64) -> Vec<Post> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let mut posts: Vec<Post> = self
            .rows
            .lock()
            .unwrap()
            .values()
            .filter(|p| p.author_id == author_id)
            .cloned()
            .collect();
        posts.sort_by_key(|p| p.id);
        posts
    }

    #[cached(cache = self.cache, key = "title:{id}", ttl = "300ms", jitter = 0.0)]
    pub async fn title_briefly(&self, id: u64) -> Option<String> {
        self.row(id).map(|p| p.title)
    }

    #[cached(cache = self.cache, key = "search:{term}:{page}", ttl = 60)]
    pub async fn search(&self, term: &str, page: u32) -> Vec<u64> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        vec![u64::from(page), term.len() as u64]
    }

    #[cached(cache = self.cache, key = "pair:{a}:{b}", ttl = 60)]
    pub async fn pair(&self, a: &str, b: &str) -> String {
        self.loads.fetch_add(1, Ordering::SeqCst);
        format!("{a}|{b}")
    }

    #[invalidates(cache = self.cache, keys = ["post:{post.id}", "find:{post.id}"], tags = ["author:{post.author_id}"])]
    pub async fn update(&self, post: Post) -> Result<(), String> {
        self.rows.lock().unwrap().insert(post.id, post);
        Ok(())
    }

    /// Write-through: the saved post is stored under its key.
    #[cache_put(cache = self.cache, key = "post:{ret.id}", ttl = 60, tags = ["author:{ret.author_id}"])]
    pub async fn save(&self, post: Post) -> Result<Post, String> {
        self.rows.lock().unwrap().insert(post.id, post.clone());
        Ok(post)
    }

    #[invalidates(cache = self.cache, keys = ["post:{id}"], tags = ["author:7"])]
    pub async fn failing_update(&self, id: u64) -> Result<(), String> {
        Err(format!("constraint violated on {id}"))
    }

    #[invalidates(cache = self.cache, tags = ["author:{ret.author_id}"], publish = "post:created")]
    pub async fn create(&self, author_id: u64, title: &str) -> Result<Post, String> {
        let mut rows = self.rows.lock().unwrap();
        let id = rows.len() as u64 + 1;
        let post = Post {
            id,
            author_id,
            title: title.to_owned(),
        };
        rows.insert(id, post.clone());
        Ok(post)
    }

    #[invalidates(cache = self.cache, patterns = ["search:{term}:*"])]
    pub async fn forget_search(&self, term: &str) -> Result<(), String> {
        Ok(())
    }

    #[invalidates(cache = self.cache, tags = ["post:{id}"])]
    pub async fn touch(&self, id: u64) {
        let _ = id;
    }
}

/// Load tests (the consistency checks, the reliability run) count what they
/// got done in a given time, or bound latencies, on a machine they share with
/// the rest of the suite: they hold this so that at least two of them never
/// run at the same time.
pub async fn one_load_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    LOAD.lock().await
}

/// The same, for a test that runs its own runtime (outside any).
pub fn one_load_at_a_time_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    LOAD.blocking_lock()
}

static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Files `count` other entries under `tag`, so that invalidating it takes
/// the big-tag path (on Redis, a tag of 256 members or more is removed as a
/// tombstone rather than with a marker per member: `TOMBSTONE_FROM` in
/// `store/redis/mod.rs`).
pub async fn fill_tag(cache: &cache_runtime::Cache, tag: &str, count: usize) {
    for i in 0..count {
        cache
            .set(
                &format!("filler:{tag}:{i}"),
                &i,
                Some(std::time::Duration::from_secs(60)),
                &[tag],
            )
            .await
            .unwrap();
    }
}

/// Enough members for the big-tag path (see `fill_tag`).
pub const BIG_TAG: usize = 300;
