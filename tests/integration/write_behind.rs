//! Write-behind on a real `redis-server` (a stream and a consumer group),
//! flushing to a real SQLite table: writes are cached at once and flushed in
//! batches; a worker killed mid-batch loses nothing; a write that keeps
//! failing lands in the dead-letter stream.

use std::sync::Arc;
use std::time::Duration;

use cache_runtime::{Cache, CacheOptions, Links, Write, WriteBehind};
use integration_tests::{RedisServer, wait_until};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Pool, Sqlite};
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row {
    id: i64,
    title: String,
}

const OPTS: CacheOptions = CacheOptions::new("rows");

async fn setup() -> (RedisServer, Cache, Pool<Sqlite>) {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("wb")
        .build()
        .unwrap();
    let options = SqliteConnectOptions::new()
        .filename(std::env::temp_dir().join(format!(
            "cache-wb-{}-{}.db",
            std::process::id(),
            fastrand::u64(..)
        )))
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE rows (id INTEGER PRIMARY KEY, title TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    (server, cache, pool)
}

/// Upserts a batch in one transaction (idempotent, as at-least-once
/// delivery wants).
async fn upsert(pool: &Pool<Sqlite>, batch: &[Write<Row>]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for write in batch {
        sqlx::query("INSERT INTO rows (id, title) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET title = excluded.title")
            .bind(write.value.id)
            .bind(&write.value.title)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

async fn rows_in_db(pool: &Pool<Sqlite>) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM rows")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn stream_len(server: &RedisServer, stream: &str) -> i64 {
    redis::cmd("XLEN")
        .arg(stream)
        .query(&mut server.conn())
        .unwrap()
}

async fn write_rows(queue: &WriteBehind<Row>, n: i64) {
    for id in 0..n {
        let row = Row {
            id,
            title: format!("row {id}"),
        };
        queue
            .write(&format!("row:{id}"), &row, &OPTS, Links::new())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn writes_are_cached_at_once_and_flushed_in_batches() {
    let (server, cache, pool) = setup().await;
    let queue = WriteBehind::<Row>::new(&cache, "rows").await.unwrap();
    write_rows(&queue, 250).await;
    assert_eq!(
        cache.get::<Row>("row:42").await.map(|r| r.title).as_deref(),
        Some("row 42"),
        "readable from the cache at once"
    );
    assert_eq!(rows_in_db(&pool).await, 0, "not flushed yet");
    assert_eq!(stream_len(&server, "wb#wb:rows"), 250);

    let mut sizes = Vec::new();
    let mut worker = queue
        .worker("w1", |batch: Vec<Write<Row>>| {
            sizes.push(batch.len());
            let pool = pool.clone();
            async move { upsert(&pool, &batch).await }
        })
        .batch(100);
    let mut flushed = 0;
    loop {
        let report = worker.run_once().await.unwrap();
        if report.flushed == 0 {
            break;
        }
        flushed += report.flushed;
    }
    drop(worker);
    assert_eq!(flushed, 250);
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(rows_in_db(&pool).await, 250);
    assert_eq!(
        stream_len(&server, "wb#wb:rows"),
        0,
        "acknowledged and deleted"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_batch_loses_nothing() {
    let (server, cache, pool) = setup().await;
    let queue = WriteBehind::<Row>::new(&cache, "rows").await.unwrap();
    write_rows(&queue, 50).await;

    // Worker A takes the batch, writes half of it inside its transaction,
    // and is killed before committing.
    let mid_batch = Arc::new(Notify::new());
    let a = tokio::spawn({
        let (queue, pool, mid_batch) = (queue.clone(), pool.clone(), mid_batch.clone());
        async move {
            let mut worker = queue.worker("a", |batch: Vec<Write<Row>>| {
                let (pool, mid_batch) = (pool.clone(), mid_batch.clone());
                async move {
                    let mut tx = pool.begin().await?;
                    for write in &batch[..batch.len() / 2] {
                        sqlx::query("INSERT INTO rows (id, title) VALUES (?, ?)")
                            .bind(write.value.id)
                            .bind(&write.value.title)
                            .execute(&mut *tx)
                            .await?;
                    }
                    mid_batch.notify_one();
                    std::future::pending::<()>().await;
                    tx.commit().await
                }
            });
            worker.run_once().await
        }
    });
    mid_batch.notified().await;
    a.abort();
    assert!(a.await.unwrap_err().is_cancelled());
    assert_eq!(
        rows_in_db(&pool).await,
        0,
        "its transaction never committed"
    );

    // Worker B takes the batch over once it has been idle long enough.
    let mut b = queue
        .worker("b", |batch: Vec<Write<Row>>| {
            let pool = pool.clone();
            async move { upsert(&pool, &batch).await }
        })
        .claim_idle(Duration::from_millis(200));
    let mut claimed = 0;
    wait_until(
        "B flushes the abandoned batch",
        Duration::from_secs(10),
        async || {
            let report = b.run_once().await.unwrap();
            claimed += report.claimed;
            rows_in_db(&pool).await == 50
        },
    )
    .await;
    assert_eq!(claimed, 50, "claimed from the dead worker");
    assert_eq!(stream_len(&server, "wb#wb:rows"), 0);
}

#[tokio::test]
async fn a_write_that_keeps_failing_is_dead_lettered() {
    let (server, cache, pool) = setup().await;
    let queue = WriteBehind::<Row>::new(&cache, "rows").await.unwrap();
    write_rows(&queue, 4).await;
    let poison = Row {
        id: 99,
        title: "poison".into(),
    };
    queue
        .write("row:99", &poison, &OPTS, Links::new())
        .await
        .unwrap();

    let mut worker = queue
        .worker("w", |batch: Vec<Write<Row>>| {
            let pool = pool.clone();
            async move {
                if batch.iter().any(|w| w.value.title == "poison") {
                    return Err("the database refuses row 99".to_string());
                }
                upsert(&pool, &batch).await.map_err(|e| e.to_string())
            }
        })
        .max_tries(3);
    let first = worker.run_once().await.unwrap();
    assert_eq!(
        (first.flushed, first.failed, first.dead),
        (4, 1, 0),
        "the good writes are not held back"
    );
    assert_eq!(rows_in_db(&pool).await, 4);
    let second = worker.run_once().await.unwrap();
    assert_eq!((second.flushed, second.failed, second.dead), (0, 1, 0));
    let third = worker.run_once().await.unwrap();
    assert_eq!((third.flushed, third.failed, third.dead), (0, 0, 1));
    let dead = queue.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0.value, poison);
    assert_eq!(dead[0].1, "the database refuses row 99");
    assert_eq!(
        stream_len(&server, "wb#wb:rows"),
        0,
        "nothing left to retry"
    );
    assert_eq!(worker.run_once().await.unwrap(), Default::default());
}

#[tokio::test]
async fn write_behind_needs_redis() {
    let err = WriteBehind::<Row>::new(&Cache::in_memory(), "rows")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), cache_runtime::ErrorKind::Config);
}

/// A row loaded from the database while its write was still queued (the
/// cache entry was evicted) is older than the write: once the write is
/// flushed, the cache entry is invalidated so the older row does not stay.
#[tokio::test]
async fn a_flush_settles_what_readers_cached_meanwhile() {
    let (_server, cache, pool) = setup().await;
    sqlx::query("INSERT INTO rows (id, title) VALUES (1, 'old')")
        .execute(&pool)
        .await
        .unwrap();
    let queue = WriteBehind::<Row>::new(&cache, "rows").await.unwrap();
    let new = Row {
        id: 1,
        title: "new".into(),
    };
    queue
        .write("row:1", &new, &OPTS, Links::new())
        .await
        .unwrap();
    // Evicted before the flush; a reader loads the old row and caches it.
    cache.invalidate().key("row:1").await.unwrap();
    let loaded: Row = cache
        .get_or_load_tagged(
            "row:1",
            &OPTS,
            |_| Vec::new(),
            || async {
                sqlx::query_as::<_, (i64, String)>("SELECT id, title FROM rows WHERE id = 1")
                    .fetch_one(&pool)
                    .await
                    .map(|(id, title)| Row { id, title })
                    .unwrap()
            },
        )
        .await;
    assert_eq!(loaded.title, "old");
    let mut worker = queue.worker("w", |batch: Vec<Write<Row>>| {
        let pool = pool.clone();
        async move { upsert(&pool, &batch).await }
    });
    assert_eq!(worker.run_once().await.unwrap().flushed, 1);
    assert_eq!(
        cache.get::<Row>("row:1").await,
        None,
        "the older row cached meanwhile is gone"
    );
}
