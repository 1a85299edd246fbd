//! Turning caching off (`Cache::set_enabled`), the per-call force-refresh
//! scope (`refreshing`), and asking a call whether its value came from the
//! cache (`with_cache_status`), on the in-process store, a `redis-server`
//! and a Redis Cluster. The process-wide switch has its own test binary
//! (`tests/process_switch.rs`): flipping it here would disturb every other
//! test running in this process.

use std::time::Duration;

use cache_runtime::{CacheOptions, CacheStatus, refreshing, with_cache_status};

use crate::common::{Fixture, Post};

crate::common::on_every_store!(
    a_disabled_cache_runs_the_body_and_reads_and_stores_nothing,
    writes_while_disabled_still_invalidate,
    the_plain_api_follows_the_switch,
    refreshing_reloads_and_stores_whatever_is_cached,
    refreshing_an_absent_value_removes_the_entry,
    the_status_says_whether_the_value_came_from_the_cache,
    the_status_of_a_stale_value_is_stale,
    a_refresh_keeps_the_stale_window_and_the_size_limit,
);

fn edit(fx_rows: &std::sync::Mutex<std::collections::HashMap<u64, Post>>, id: u64, title: &str) {
    // Straight into the "database", behind the cache's back.
    fx_rows.lock().unwrap().get_mut(&id).unwrap().title = title.into();
}

async fn a_disabled_cache_runs_the_body_and_reads_and_stores_nothing(fx: Fixture) {
    let repo = fx.repo();
    repo.get(1).await.unwrap();
    assert!(fx.cache.enabled());
    fx.cache.set_enabled(false);
    assert!(!fx.cache.enabled());
    edit(&repo.rows, 1, "changed behind the cache");
    assert_eq!(repo.get(1).await.unwrap().title, "changed behind the cache");
    assert_eq!(repo.get(2).await.unwrap().id, 2);
    assert_eq!(repo.loads(), 3, "every call ran its body");
    let stats = fx.cache.stats();
    assert_eq!((stats.hits, stats.fills, stats.bypassed), (0, 1, 2));
    assert_eq!(
        fx.cache.get::<Post>("post:2").await,
        None,
        "a read while off stores nothing"
    );
    fx.cache.set_enabled(true);
    assert_eq!(
        repo.get(1).await.unwrap().title,
        "post 1",
        "back on, the entry cached before is served again (the cache was only bypassed)"
    );
    assert_eq!(repo.loads(), 3);
}

async fn writes_while_disabled_still_invalidate(fx: Fixture) {
    let repo = fx.repo();
    repo.get(1).await.unwrap();
    repo.by_author(7).await;
    fx.cache.set_enabled(false);
    repo.update(Post {
        id: 1,
        author_id: 7,
        title: "written while off".into(),
    })
    .await
    .unwrap();
    assert_eq!(fx.cache.get::<Post>("post:1").await, None);
    fx.cache.set_enabled(true);
    assert_eq!(
        repo.get(1).await.unwrap().title,
        "written while off",
        "a write while off must not leave the old entry to be served when turned back on"
    );
    assert_eq!(repo.by_author(7).await[0].title, "written while off");
    assert_eq!(repo.loads(), 4);
}

async fn the_plain_api_follows_the_switch(fx: Fixture) {
    const N: CacheOptions = CacheOptions::new("n");
    let load = |v: u32| move || async move { Ok::<u32, String>(v) };
    assert_eq!(fx.cache.get_or_load("n", &N, load(1)).await, Ok(1));
    fx.cache.set_enabled(false);
    assert_eq!(fx.cache.get_or_load("n", &N, load(2)).await, Ok(2));
    let (v, status) = with_cache_status(fx.cache.get_or_load("n", &N, load(3))).await;
    assert_eq!((v, status), (Ok(3), Some(CacheStatus::Bypass)));
    fx.cache.set_enabled(true);
    assert_eq!(fx.cache.get_or_load("n", &N, load(4)).await, Ok(1));
    // A forced refresh through the plain API.
    assert_eq!(
        refreshing(fx.cache.get_or_load("n", &N, load(5))).await,
        Ok(5)
    );
    assert_eq!(fx.cache.get_or_load("n", &N, load(6)).await, Ok(5));
}

async fn refreshing_reloads_and_stores_whatever_is_cached(fx: Fixture) {
    let repo = fx.repo();
    repo.get(1).await.unwrap();
    edit(&repo.rows, 1, "new title");
    assert_eq!(repo.get(1).await.unwrap().title, "post 1", "a hit");
    let (post, status) = with_cache_status(refreshing(repo.get(1))).await;
    assert_eq!(post.unwrap().title, "new title");
    assert_eq!(status, Some(CacheStatus::Refresh));
    assert_eq!(repo.loads(), 2);
    let (post, status) = with_cache_status(repo.get(1)).await;
    assert_eq!(
        post.unwrap().title,
        "new title",
        "the refreshed value was stored"
    );
    assert_eq!(status, Some(CacheStatus::Hit));
    assert_eq!(repo.loads(), 2);
    assert_eq!(fx.cache.stats().forced_refreshes, 1);
    // The refreshed entry keeps its tags.
    fx.cache.invalidate().tag("author:7").await.unwrap();
    assert_eq!(fx.cache.get::<Post>("post:1").await, None);
    // An error while refreshing leaves what is cached.
    repo.get(1).await.unwrap();
    repo.rows.lock().unwrap().remove(&1);
    assert!(refreshing(repo.get(1)).await.is_err());
    assert_eq!(repo.get(1).await.unwrap().title, "new title");
}

async fn refreshing_an_absent_value_removes_the_entry(fx: Fixture) {
    let repo = fx.repo();
    assert!(repo.find(1).await.is_some());
    repo.rows.lock().unwrap().remove(&1);
    assert!(repo.find(1).await.is_some(), "still cached");
    assert_eq!(refreshing(repo.find(1)).await, None);
    assert_eq!(fx.cache.get::<Option<Post>>("find:1").await, None);
    assert_eq!(repo.find(1).await, None);
    assert_eq!(repo.loads(), 3);
}

async fn the_status_says_whether_the_value_came_from_the_cache(fx: Fixture) {
    let repo = fx.repo();
    let (post, status) = with_cache_status(repo.get(1)).await;
    assert_eq!((post.unwrap().id, status), (1, Some(CacheStatus::Miss)));
    let (_, status) = with_cache_status(repo.get(1)).await;
    assert_eq!(status, Some(CacheStatus::Hit));
    assert!(status.unwrap().from_cache());
    assert_eq!(status.unwrap().to_string(), "hit");
    // An error is a miss (the body ran).
    let (post, status) = with_cache_status(repo.get(404)).await;
    assert!(post.is_err());
    assert_eq!(status, Some(CacheStatus::Miss));
    // No cached read inside: no status.
    let ((), status) = with_cache_status(async {}).await;
    assert_eq!(status, None);
    // Several reads: the last one counts; a nested scope sees its own.
    let ((inner, _), outer) = with_cache_status(async {
        repo.get(1).await.unwrap();
        let inner = with_cache_status(repo.get(2)).await;
        (inner, repo.get(3).await)
    })
    .await;
    assert_eq!(inner.1, Some(CacheStatus::Miss));
    assert_eq!(outer, Some(CacheStatus::Miss), "post 3 was the last read");
    let ((), status) = with_cache_status(async {
        repo.get(3).await.unwrap();
        repo.get(2).await.unwrap();
    })
    .await;
    assert_eq!(status, Some(CacheStatus::Hit));
    // Outside any scope nothing is recorded (and nothing breaks).
    repo.get(1).await.unwrap();
    fx.cache.set_enabled(false);
    let (_, status) = with_cache_status(repo.get(1)).await;
    assert_eq!(status, Some(CacheStatus::Bypass));
    fx.cache.set_enabled(true);
}

async fn the_status_of_a_stale_value_is_stale(fx: Fixture) {
    const STALE: CacheOptions = CacheOptions::new("stale")
        .ttl(Duration::from_millis(200))
        .jitter(0.0)
        .stale(Duration::from_secs(60));
    let (v, status) = with_cache_status(
        fx.cache
            .get_or_load("s", &STALE, || async { Ok::<u32, String>(1) }),
    )
    .await;
    assert_eq!((v, status), (Ok(1), Some(CacheStatus::Miss)));
    // Past the TTL (an expiry, not a race: nothing else runs), the refresh
    // fails, and the stale value answers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (v, status) = with_cache_status(
        fx.cache
            .get_or_load("s", &STALE, || async { Err::<u32, String>("down".into()) }),
    )
    .await;
    assert_eq!((v, status), (Ok(1), Some(CacheStatus::Stale)));
    assert!(!CacheStatus::Miss.from_cache() && CacheStatus::Stale.from_cache());
}

async fn a_refresh_keeps_the_stale_window_and_the_size_limit(fx: Fixture) {
    const SMALL: CacheOptions = CacheOptions::new("small").max_size(64);
    let load = |v: String| move || async move { Ok::<String, String>(v) };
    assert_eq!(
        fx.cache
            .get_or_load("small", &SMALL, load("a".into()))
            .await,
        Ok("a".into())
    );
    let big = "b".repeat(200);
    assert_eq!(
        refreshing(fx.cache.get_or_load("small", &SMALL, load(big.clone()))).await,
        Ok(big)
    );
    assert_eq!(
        fx.cache.get::<String>("small").await,
        None,
        "over max_size: removed, not stored"
    );
    assert_eq!(fx.cache.stats().oversized, 1);

    const STALE: CacheOptions = CacheOptions::new("stale")
        .ttl(Duration::from_millis(200))
        .jitter(0.0)
        .stale(Duration::from_secs(60));
    let refreshed = refreshing(fx.cache.get_or_load("s", &STALE, load("fresh".into()))).await;
    assert_eq!(refreshed, Ok("fresh".into()));
    // Past the TTL, the refreshed entry is still there for the stale window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (v, status) = with_cache_status(fx.cache.get_or_load("s", &STALE, || async {
        Err::<String, String>("down".into())
    }))
    .await;
    assert_eq!((v, status), (Ok("fresh".into()), Some(CacheStatus::Stale)));
}
