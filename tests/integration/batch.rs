//! Batch reads (`#[cached(batch, key = "user:{id}")]`): each id is its own
//! entry (shared with single reads of the same key); the body is called
//! with only the missing ids; absent ids are left out (and cached with
//! `cache_none`); each value's tags reach its entry; overlapping concurrent
//! batches load each id once. On the in-process store, Redis, and Redis
//! with a tier; the round trips on a real `redis-server` behind a counting
//! proxy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, CacheStatus, cached, invalidates, with_cache_status};
use serde::{Deserialize, Serialize};

use crate::common::Fixture;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    team: String,
}

/// Users 1 to 50 exist; team "a" holds the odd ids.
struct Users {
    cache: Cache,
    /// The ids each call of a batch body was given.
    calls: Mutex<Vec<Vec<u64>>>,
    failing: AtomicBool,
    /// A write to this user commits (and invalidates) while a body loads.
    written_while_loading: Option<u64>,
    /// When set, each batch body waits here (for two batches to meet).
    meet: Option<tokio::sync::Barrier>,
}

fn row(id: u64) -> Option<User> {
    (1..=50).contains(&id).then(|| User {
        id,
        team: if id % 2 == 1 { "a" } else { "b" }.to_owned(),
    })
}

impl Users {
    fn new(cache: Cache) -> Users {
        Users {
            cache,
            calls: Mutex::new(Vec::new()),
            failing: AtomicBool::new(false),
            written_while_loading: None,
            meet: None,
        }
    }

    fn calls(&self) -> Vec<Vec<u64>> {
        self.calls.lock().unwrap().clone()
    }

    async fn query(&self, ids: &[u64]) -> Result<Vec<User>, String> {
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        self.calls.lock().unwrap().push(sorted);
        if let Some(meet) = &self.meet {
            tokio::time::timeout(Duration::from_secs(10), meet.wait())
                .await
                .expect("the other batch loads too");
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err("database down".to_owned());
        }
        if let Some(id) = self.written_while_loading {
            // The rows were read before this write: what is returned is old.
            self.cache
                .invalidate()
                .key(format!("user:{id}"))
                .await
                .unwrap();
        }
        Ok(ids.iter().filter_map(|&id| row(id)).collect())
    }

    #[cached(batch, cache = self.cache, key = "user:{id}", ttl = 60, tags = ["team:{ret.team}"])]
    async fn users(&self, ids: &[u64]) -> Result<HashMap<u64, User>, String> {
        let rows = self.query(ids).await?;
        Ok(rows.into_iter().map(|u| (u.id, u)).collect())
    }

    /// The same entries, as an ordered list, remembering absent ids.
    #[cached(batch = ids, cache = self.cache, key = "user:{id}", ttl = 60, cache_none = 60)]
    async fn users_in_order(&self, ids: Vec<u64>) -> Result<Vec<(u64, User)>, String> {
        let rows = self.query(&ids).await?;
        Ok(rows.into_iter().map(|u| (u.id, u)).collect())
    }

    /// A single read of the same key.
    #[cached(cache = self.cache, key = "user:{id}", ttl = 60)]
    async fn user(&self, id: u64) -> Result<User, String> {
        self.calls.lock().unwrap().push(vec![id]);
        row(id).ok_or_else(|| "no such user".to_owned())
    }

    #[invalidates(cache = self.cache, keys = ["user:{id}"])]
    async fn rename(&self, id: u64) -> Result<(), String> {
        Ok(())
    }
}

crate::common::on_memory_redis_and_tier!(
    only_the_missing_ids_reach_the_body,
    single_reads_and_batches_share_entries,
    absent_ids_are_left_out_and_cached_with_cache_none,
    an_error_is_returned_and_nothing_is_stored,
    each_value_is_filed_under_its_own_tags,
    a_value_invalidated_while_loading_is_not_stored,
    overlapping_batches_load_each_id_once,
);

async fn only_the_missing_ids_reach_the_body(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    let (first, status) = with_cache_status(users.users(&[1, 2])).await;
    let first = first.unwrap();
    assert_eq!((first.len(), status), (2, Some(CacheStatus::Miss)));
    assert_eq!(first[&2], row(2).unwrap());
    let second = users.users(&[2, 3, 1, 3]).await.unwrap();
    assert_eq!(second.len(), 3, "each id once");
    assert_eq!(second[&3], row(3).unwrap());
    assert_eq!(
        users.calls(),
        vec![vec![1, 2], vec![3]],
        "1 and 2 were cached"
    );
    let (third, status) = with_cache_status(users.users(&[1, 2, 3])).await;
    assert_eq!((third.unwrap().len(), status), (3, Some(CacheStatus::Hit)));
    assert_eq!(users.calls().len(), 2, "all hits: the body did not run");
    let stats = fx.cache.stats();
    assert_eq!((stats.hits, stats.misses), (5, 3));
}

async fn single_reads_and_batches_share_entries(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    assert_eq!(users.user(4).await.unwrap(), row(4).unwrap());
    let batch = users.users(&[4, 5]).await.unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(
        users.calls(),
        vec![vec![4], vec![5]],
        "4 was cached by the single read"
    );
    assert_eq!(users.user(5).await.unwrap(), row(5).unwrap());
    assert_eq!(users.calls().len(), 2, "5 was cached by the batch");
    users.rename(4).await.unwrap();
    users.users(&[4, 5]).await.unwrap();
    assert_eq!(
        users.calls()[2],
        vec![4],
        "the invalidation removed 4 alone"
    );
}

async fn absent_ids_are_left_out_and_cached_with_cache_none(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    let found = users.users(&[6, 99]).await.unwrap();
    assert_eq!(found.keys().copied().collect::<Vec<_>>(), vec![6]);
    users.users(&[6, 99]).await.unwrap();
    assert_eq!(
        users.calls(),
        vec![vec![6, 99], vec![99]],
        "without cache_none an absent id is asked again"
    );
    let ordered = users.users_in_order(vec![98, 7, 6]).await.unwrap();
    assert_eq!(
        ordered.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![7, 6],
        "in the order asked, the absent one left out"
    );
    assert_eq!(users.calls()[2], vec![7, 98]);
    users.users_in_order(vec![98, 7, 6]).await.unwrap();
    assert_eq!(users.calls().len(), 3, "98's absence was cached");
}

async fn an_error_is_returned_and_nothing_is_stored(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    users.failing.store(true, Ordering::SeqCst);
    assert_eq!(users.users(&[8, 9]).await, Err("database down".to_owned()));
    users.failing.store(false, Ordering::SeqCst);
    assert_eq!(users.users(&[8, 9]).await.unwrap().len(), 2);
    assert_eq!(
        users.calls(),
        vec![vec![8, 9], vec![8, 9]],
        "the error was not cached"
    );
}

async fn each_value_is_filed_under_its_own_tags(fx: Fixture) {
    let users = Users::new(fx.cache.clone());
    users.users(&[10, 11, 12, 13]).await.unwrap();
    fx.cache.invalidate().tag("team:a").await.unwrap();
    users.users(&[10, 11, 12, 13]).await.unwrap();
    assert_eq!(
        users.calls()[1],
        vec![11, 13],
        "team a's users (odd ids) went"
    );
}

/// The race-free fill, per id: the batch's fill token is read before its
/// body, so a write that commits while the body runs refuses that id's fill
/// (and no other).
async fn a_value_invalidated_while_loading_is_not_stored(fx: Fixture) {
    let users = Users {
        written_while_loading: Some(30),
        ..Users::new(fx.cache.clone())
    };
    users.users(&[30, 31]).await.unwrap();
    assert_eq!(fx.cache.stats().fills_rejected, 1);
    let again = Users::new(fx.cache.clone());
    again.users(&[30, 31]).await.unwrap();
    assert_eq!(again.calls(), vec![vec![30]], "30 was not stored, 31 was");
}

/// Two batches that overlap, both loading at once (each waits for the
/// other in its body): the ids they share are loaded by one of them.
async fn overlapping_batches_load_each_id_once(fx: Fixture) {
    let users = std::sync::Arc::new(Users {
        meet: Some(tokio::sync::Barrier::new(2)),
        ..Users::new(fx.cache.clone())
    });
    let (a, b) = (users.clone(), users.clone());
    let first = tokio::spawn(async move { a.users(&[20, 21, 22]).await });
    let second = tokio::spawn(async move { b.users(&[21, 22, 23]).await });
    let (first, second) = (
        first.await.unwrap().unwrap(),
        second.await.unwrap().unwrap(),
    );
    assert_eq!((first.len(), second.len()), (3, 3));
    assert_eq!(first[&22], second[&22]);
    let mut loaded: Vec<u64> = users.calls().concat();
    loaded.sort_unstable();
    assert_eq!(loaded, vec![20, 21, 22, 23], "each id loaded once");
}

/// On Redis a batch that hits is one `MGET`; one that misses adds the fill
/// token before the body and a fill per missing id after it, sent together
/// (three round trips in all).
#[tokio::test]
async fn a_batch_hit_is_one_round_trip() {
    let counted = crate::common::Counted::start("batch").await;
    let users = Users::new(counted.cache.clone());
    users.users(&[40]).await.unwrap(); // the scripts loaded, the epoch learnt
    let before = counted.proxy.requests();
    users.users(&[1, 2, 3]).await.unwrap();
    // The fills are sent together on the one connection: one burst as a
    // rule, but the proxy counts what the socket delivers, which a loaded
    // machine may split.
    let sent = counted.proxy.requests() - before;
    assert!(
        (3..=5).contains(&sent),
        "MGET, the fill token, three fills sent together: {sent} requests"
    );
    let before = counted.proxy.requests();
    let hit = users.users(&[1, 2, 3]).await.unwrap();
    assert_eq!(hit.len(), 3);
    assert_eq!(
        counted.proxy.requests() - before,
        1,
        "one MGET for three ids"
    );
}
