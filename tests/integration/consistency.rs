//! The randomized consistency check: concurrent readers and writers on a
//! real SQLite table through cached and invalidating repository methods,
//! for a bounded time. After each write returns, no read that starts later
//! may return an older value. Run on the in-process store, on Redis, and on
//! Redis with an in-process tier.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached, invalidates};
use integration_tests::RedisServer;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Pool, Sqlite};

const ROWS: i64 = 8;
const WRITERS: usize = 2;
const READERS: usize = 6;
const RUN_FOR: Duration = Duration::from_millis(1500);

struct Rows {
    cache: Cache,
    pool: Pool<Sqlite>,
}

impl Rows {
    #[cached(cache = self.cache, key = "row:{id}", ttl = 60)]
    async fn version(&self, id: i64) -> Result<i64, String> {
        let version = sqlx::query_scalar("SELECT version FROM rows WHERE id = ?")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        // Widen the window between reading the row and storing it.
        tokio::task::yield_now().await;
        Ok(version)
    }

    #[invalidates(cache = self.cache, keys = ["row:{id}"])]
    async fn bump(&self, id: i64) -> Result<i64, String> {
        sqlx::query_scalar("UPDATE rows SET version = version + 1 WHERE id = ? RETURNING version")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| e.to_string())
    }
}

async fn table() -> (Pool<Sqlite>, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!(
        "cache-consistency-{}-{}.db",
        std::process::id(),
        fastrand::u64(..)
    ));
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE rows (id INTEGER PRIMARY KEY, version INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    for id in 0..ROWS {
        sqlx::query("INSERT INTO rows (id, version) VALUES (?, 0)")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
    }
    (pool, path)
}

/// Counts of one run.
#[derive(Debug, Default)]
struct Checked {
    reads: AtomicU64,
    writes: AtomicU64,
    stale: AtomicU64,
}

async fn run(name: &str, cache: Cache) {
    let _alone = crate::common::one_load_at_a_time().await;
    let (pool, path) = table().await;
    let rows = Arc::new(Rows { cache, pool });
    // The newest version whose write has returned, per row.
    let floor: Arc<Vec<AtomicI64>> = Arc::new((0..ROWS).map(|_| AtomicI64::new(0)).collect());
    let checked = Arc::new(Checked::default());
    let until = Instant::now() + RUN_FOR;
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let (rows, floor, checked) = (rows.clone(), floor.clone(), checked.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let id = fastrand::i64(0..ROWS);
                let version = rows.bump(id).await.unwrap();
                floor[id as usize].fetch_max(version, Ordering::SeqCst);
                checked.writes.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }));
    }
    for _ in 0..READERS {
        let (rows, floor, checked) = (rows.clone(), floor.clone(), checked.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let id = fastrand::i64(0..ROWS);
                let at_least = floor[id as usize].load(Ordering::SeqCst);
                let seen = rows.version(id).await.unwrap();
                checked.reads.fetch_add(1, Ordering::Relaxed);
                if seen < at_least {
                    checked.stale.fetch_add(1, Ordering::Relaxed);
                }
                // A hit never yields on its own: let the writers run.
                tokio::task::yield_now().await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stats = rows.cache.stats();
    let (reads, writes, stale) = (
        checked.reads.load(Ordering::Relaxed),
        checked.writes.load(Ordering::Relaxed),
        checked.stale.load(Ordering::Relaxed),
    );
    println!(
        "{name}: {reads} reads and {writes} writes checked, {stale} stale reads; \
         cache: {} hits, {} misses, {} fills refused",
        stats.hits, stats.misses, stats.fills_rejected
    );
    rows.pool.close().await;
    let _ = std::fs::remove_file(&path);
    assert!(reads > 1000 && writes > 100, "the run checked too little");
    assert!(stats.hits > 0, "the cache served reads");
    assert_eq!(
        stale, 0,
        "{name}: a read returned a value older than a write that had returned before it started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_is_older_than_a_returned_write_in_process() {
    run(
        "in-process store",
        Cache::builder().namespace("consistency").build().unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_is_older_than_a_returned_write_on_redis() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("consistency")
        .build()
        .unwrap();
    run("redis", cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_is_older_than_a_returned_write_with_two_tiers() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("consistency")
        .local_ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    integration_tests::wait_until("subscribed", Duration::from_secs(5), async || {
        cache.listening()
    })
    .await;
    run("redis with an in-process tier", cache).await;
}
