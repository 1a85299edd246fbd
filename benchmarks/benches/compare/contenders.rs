//! The contenders: the value, the "database", the ways to read it through
//! Redis, and what each stores.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, cached};
use cached::macros::concurrent_cached;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

/// How long the "database" takes to load a row.
const LOAD_TIME: Duration = Duration::from_millis(20);

/// A row whose JSON is about 1 KB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Article {
    pub(crate) id: u64,
    pub(crate) author_id: u64,
    pub(crate) title: String,
    pub(crate) slug: String,
    pub(crate) description: String,
    pub(crate) body: String,
    pub(crate) tags: Vec<String>,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    pub(crate) favorites_count: u32,
}

/// Bytes of the article body that make the JSON 1,024 bytes long.
const BODY_LEN: usize = 684;

impl Article {
    pub(crate) fn sample(id: u64) -> Article {
        let text = "Caching a read is easy; keeping it right after a write is the hard part. ";
        Article {
            id,
            author_id: id % 97,
            title: format!("How to cache article number {id} without going stale"),
            slug: format!("how-to-cache-article-{id}"),
            description: "Cache-aside reads, post-commit invalidation, and what goes wrong".into(),
            body: text.repeat(BODY_LEN / text.len() + 1)[..BODY_LEN].to_owned(),
            tags: vec!["rust".into(), "redis".into(), "caching".into()],
            created_at: "2026-11-23T10:00:00.000Z".into(),
            updated_at: "2026-11-23T11:30:00.000Z".into(),
            favorites_count: 42,
        }
    }
}

/// Loader invocations (one counter: the stampedes run one after another).
pub(crate) static LOADS: AtomicU64 = AtomicU64::new(0);

/// The "database": counts its calls, takes [`LOAD_TIME`].
async fn load(id: u64) -> Result<Article, io::Error> {
    LOADS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(LOAD_TIME).await;
    Ok(Article::sample(id))
}

/// The bench's server, for the `cached` crate's store (its macro builds the
/// store in a `static`, the first time the function is called).
pub(crate) static URL: OnceLock<String> = OnceLock::new();

/// The `cached` crate's Redis-backed macro, as its documentation shows it
/// (`ty` and `create` only to give it this run's server and a TTL).
#[concurrent_cached(
    redis = true,
    ty = "cached::AsyncRedisCache<u64, Article>",
    create = {
        cached::AsyncRedisCache::builder("cmp-cached")
            .ttl(Duration::from_secs(600))
            .connection_string(URL.get().expect("set before the first call"))
            .build()
            .await
            .expect("the cached crate's store")
    },
    map_error = |e| io::Error::other(format!("{e:?}"))
)]
async fn cached_crate_article(id: u64) -> Result<Article, io::Error> {
    load(id).await
}

/// This crate's macro, on a repository method.
#[derive(Debug)]
pub(crate) struct Articles {
    pub(crate) cache: Cache,
}

impl Articles {
    #[cached(cache = self.cache, key = "article:{id}", ttl = "10m")]
    pub(crate) async fn get(&self, id: u64) -> Result<Article, io::Error> {
        load(id).await
    }
}

/// Cache-aside written by hand over the same client: a fault of the cache
/// is a miss, a failed store is ignored.
async fn hand_written(redis: &MultiplexedConnection, id: u64) -> Result<Article, io::Error> {
    let mut conn = redis.clone();
    let key = format!("hand:article:{id}");
    if let Ok(Some(bytes)) = conn.get::<_, Option<Vec<u8>>>(&key).await
        && let Ok(article) = serde_json::from_slice(&bytes)
    {
        return Ok(article);
    }
    let article = load(id).await?;
    if let Ok(json) = serde_json::to_vec(&article) {
        let _: redis::RedisResult<()> = conn.set_ex(&key, json, 600).await;
    }
    Ok(article)
}

/// The floor: one `GET` of the JSON and its decoding.
async fn floor(conn: &mut MultiplexedConnection, key: &str) -> Article {
    let bytes: Vec<u8> = conn.get(key).await.expect("GET");
    serde_json::from_slice(&bytes).expect("JSON")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contender {
    Floor,
    /// The floor again (the control: its ratio to `Floor` is noise).
    FloorAgain,
    Hand,
    CachedCrate,
    Ours,
    TwoTiers,
}

pub(crate) const CONTENDERS: [Contender; 6] = [
    Contender::Floor,
    Contender::FloorAgain,
    Contender::Hand,
    Contender::CachedCrate,
    Contender::Ours,
    Contender::TwoTiers,
];

impl Contender {
    /// The name `COMPARE_ONLY` takes.
    pub(crate) fn short(self) -> &'static str {
        match self {
            Contender::Floor => "floor",
            Contender::FloorAgain => "floor-again",
            Contender::Hand => "hand",
            Contender::CachedCrate => "cached",
            Contender::Ours => "ours",
            Contender::TwoTiers => "two-tiers",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Contender::Floor => "raw `GET` + decode (floor)",
            Contender::FloorAgain => "(control: the floor again; its ratio is the run's noise)",
            Contender::Hand => "hand-written cache-aside",
            Contender::CachedCrate => "`cached` 4.1 `#[concurrent_cached(redis = true)]`",
            Contender::Ours => "`#[cached]`, Redis",
            Contender::TwoTiers => "`#[cached]`, two tiers (`local_ttl`)",
        }
    }
}

/// What every contender reads through.
#[derive(Debug)]
pub(crate) struct Bench {
    pub(crate) redis: MultiplexedConnection,
    pub(crate) ours: Articles,
    pub(crate) two_tiers: Articles,
}

pub(crate) const FLOOR_KEY: &str = "floor:article:1";
pub(crate) const WARM_ID: u64 = 1;

impl Bench {
    /// A connection and the two caches of this crate, on the current
    /// runtime (each connection's driver task is spawned there).
    pub(crate) async fn connect(url: &str) -> Bench {
        Bench {
            redis: redis::Client::open(url)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
            ours: Articles {
                cache: redis_cache(url, "ours", None).await,
            },
            two_tiers: Articles {
                cache: redis_cache(url, "two", Some(Duration::from_secs(600))).await,
            },
        }
    }

    /// One read of the warm key (or of `id`), through `who`; `conn` is the
    /// calling task's own connection handle, for the floor.
    pub(crate) async fn read(
        &self,
        who: Contender,
        conn: &mut MultiplexedConnection,
        id: u64,
    ) -> Article {
        match who {
            Contender::Floor | Contender::FloorAgain => floor(conn, FLOOR_KEY).await,
            Contender::Hand => hand_written(&self.redis, id).await.unwrap(),
            Contender::CachedCrate => cached_crate_article(id).await.unwrap(),
            Contender::Ours => self.ours.get(id).await.unwrap(),
            Contender::TwoTiers => self.two_tiers.get(id).await.unwrap(),
        }
    }
}

pub(crate) async fn redis_cache(url: &str, namespace: &str, local_ttl: Option<Duration>) -> Cache {
    let mut builder = Cache::builder().redis_url(url).namespace(namespace);
    if let Some(ttl) = local_ttl {
        builder = builder.local_ttl(ttl);
    }
    let cache = builder.build().unwrap();
    if local_ttl.is_some() {
        while !cache.listening() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    cache
}

pub(crate) async fn value_sizes(conn: &mut MultiplexedConnection) -> Vec<(String, usize)> {
    let mut sizes = Vec::new();
    let (_, names): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(1000)
        .query_async(conn)
        .await
        .unwrap();
    let mut names = names;
    names.sort();
    for name in names {
        if name.contains('#') {
            continue;
        }
        let len: usize = conn.strlen(&name).await.unwrap();
        sizes.push((name, len));
    }
    sizes
}
