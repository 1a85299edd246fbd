//! Transaction-aware invalidation: inside `in_transaction`, `#[invalidates]`
//! is held until the work returns `Ok` (after its commit); a rollback, a
//! panic or a cancelled future discards what was held. Both stores.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use cache_runtime::{Cache, cached, in_transaction, invalidates};
use tokio::sync::oneshot;

use crate::common::Fixture;

macro_rules! transaction_suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $case() { super::$case(crate::common::Fixture::memory()).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $case() { super::$case(crate::common::Fixture::redis().ready().await).await })*
        }
    };
}

transaction_suite!(
    a_commit_applies_what_was_held_and_only_then,
    a_rollback_discards_what_was_held,
    a_cancelled_transaction_discards_what_was_held,
    nested_scopes_apply_once_after_the_outermost,
    outside_a_scope_nothing_changes,
);

/// Rows with a staging area, as a database transaction has: writes become
/// visible at commit.
struct Accounts {
    cache: Cache,
    committed: Mutex<HashMap<u64, i64>>,
    staged: Mutex<HashMap<u64, i64>>,
    loads: AtomicU32,
}

impl Accounts {
    fn new(cache: Cache) -> Accounts {
        Accounts {
            cache,
            committed: Mutex::new(HashMap::from([(1, 100), (2, 50)])),
            staged: Mutex::new(HashMap::new()),
            loads: AtomicU32::new(0),
        }
    }

    #[cached(cache = self.cache, key = "balance:{id}", ttl = 60)]
    async fn balance(&self, id: u64) -> i64 {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.committed.lock().unwrap()[&id]
    }

    /// A write inside the open transaction.
    #[invalidates(cache = self.cache, keys = ["balance:{id}"])]
    async fn set_balance(&self, id: u64, value: i64) -> Result<(), String> {
        self.staged.lock().unwrap().insert(id, value);
        Ok(())
    }

    fn commit(&self) {
        let staged = std::mem::take(&mut *self.staged.lock().unwrap());
        self.committed.lock().unwrap().extend(staged);
    }

    fn rollback(&self) {
        self.staged.lock().unwrap().clear();
    }

    fn loads(&self) -> u32 {
        self.loads.load(Ordering::SeqCst)
    }
}

async fn a_commit_applies_what_was_held_and_only_then(fx: Fixture) {
    let db = Accounts::new(fx.cache.clone());
    assert_eq!(db.balance(1).await, 100);
    let done: Result<(), String> = in_transaction(async {
        db.set_balance(1, 70).await?;
        db.set_balance(2, 80).await?;
        // Still inside: the cache has not been touched (readers see the
        // committed balance, as the database shows them).
        assert_eq!(db.balance(1).await, 100);
        assert_eq!(db.loads(), 1, "held: the entry is still cached");
        db.commit();
        Ok(())
    })
    .await;
    done.unwrap();
    assert_eq!(db.balance(1).await, 70, "applied after the commit");
    assert_eq!(db.balance(2).await, 80);
    assert_eq!(
        fx.cache.stats().invalidations,
        1,
        "the two held invalidations ran as one"
    );
}

async fn a_rollback_discards_what_was_held(fx: Fixture) {
    let db = Accounts::new(fx.cache.clone());
    db.balance(1).await;
    let failed: Result<(), String> = in_transaction(async {
        db.set_balance(1, 0).await?;
        db.rollback();
        Err("insufficient funds".to_string())
    })
    .await;
    assert!(failed.is_err());
    assert_eq!(db.balance(1).await, 100);
    assert_eq!(db.loads(), 1, "nothing was invalidated");
    assert_eq!(fx.cache.stats().invalidations, 0);
}

async fn a_cancelled_transaction_discards_what_was_held(fx: Fixture) {
    let db = std::sync::Arc::new(Accounts::new(fx.cache.clone()));
    db.balance(1).await;
    let (held_tx, held_rx) = oneshot::channel();
    let task = tokio::spawn({
        let db = db.clone();
        async move {
            in_transaction(async {
                db.set_balance(1, 0).await?;
                held_tx.send(()).unwrap();
                std::future::pending::<()>().await; // never commits
                Ok::<_, String>(())
            })
            .await
        }
    });
    held_rx.await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(db.balance(1).await, 100);
    assert_eq!(fx.cache.stats().invalidations, 0);
}

async fn nested_scopes_apply_once_after_the_outermost(fx: Fixture) {
    let db = Accounts::new(fx.cache.clone());
    db.balance(1).await;
    let done: Result<(), String> = in_transaction(async {
        in_transaction(async { db.set_balance(1, 10).await }).await?;
        assert_eq!(
            fx.cache.stats().invalidations,
            0,
            "the inner scope does not apply on its own"
        );
        db.commit();
        Ok(())
    })
    .await;
    done.unwrap();
    assert_eq!(db.balance(1).await, 10);
    assert_eq!(fx.cache.stats().invalidations, 1);
}

async fn outside_a_scope_nothing_changes(fx: Fixture) {
    let db = Accounts::new(fx.cache.clone());
    db.balance(1).await;
    db.set_balance(1, 5).await.unwrap();
    db.commit();
    assert_eq!(db.balance(1).await, 5, "invalidated at once, as always");
}

/// With a real `sqlx` transaction on SQLite: the invalidation of a method
/// that writes through the transaction is applied after `commit`, and not
/// at all after a rollback.
#[tokio::test]
async fn with_a_sqlx_transaction() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use sqlx::{Sqlite, Transaction};

    struct Titles {
        cache: Cache,
        pool: sqlx::Pool<Sqlite>,
    }

    impl Titles {
        #[cached(cache = self.cache, key = "title:{id}", ttl = 60)]
        async fn title(&self, id: i64) -> Result<String, String> {
            sqlx::query_scalar("SELECT title FROM posts WHERE id = ?")
                .bind(id)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| e.to_string())
        }

        #[invalidates(cache = self.cache, keys = ["title:{id}"])]
        async fn rename(
            &self,
            tx: &mut Transaction<'static, Sqlite>,
            id: i64,
            title: &str,
        ) -> Result<(), String> {
            sqlx::query("UPDATE posts SET title = ? WHERE id = ?")
                .bind(title)
                .bind(id)
                .execute(&mut **tx)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }

    let path = std::env::temp_dir().join(format!(
        "cache-tx-{}-{}.db",
        std::process::id(),
        fastrand::u64(..)
    ));
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
    sqlx::query("CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO posts (id, title) VALUES (1, 'first')")
        .execute(&pool)
        .await
        .unwrap();
    let titles = Titles {
        cache: Cache::in_memory(),
        pool: pool.clone(),
    };
    assert_eq!(titles.title(1).await.unwrap(), "first");

    let rolled_back: Result<(), String> = in_transaction(async {
        let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
        titles.rename(&mut tx, 1, "never").await?;
        tx.rollback().await.map_err(|e| e.to_string())?;
        Err("the request failed after the update".to_string())
    })
    .await;
    assert!(rolled_back.is_err());
    assert_eq!(titles.title(1).await.unwrap(), "first");
    assert_eq!(titles.cache.stats().invalidations, 0);

    in_transaction(async {
        let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
        titles.rename(&mut tx, 1, "second").await?;
        // Not committed yet: the cache still answers with the committed row.
        assert_eq!(titles.title(1).await?, "first");
        tx.commit().await.map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    assert_eq!(titles.title(1).await.unwrap(), "second");
    pool.close().await;
    let _ = std::fs::remove_file(&path);
}
