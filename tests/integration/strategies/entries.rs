//! What is stored and for how long: `None` for its own TTL, values over
//! the size limit, and versions.

use super::*;

pub(super) async fn none_is_cached_for_its_own_ttl(fx: Fixture) {
    let lab = Lab::new(fx.cache.clone());
    let started = std::time::Instant::now();
    assert_eq!(lab.find(404).await, None);
    assert_eq!(lab.find(404).await, None);
    assert_eq!(lab.runs(), 1, "None is cached");
    assert_eq!(lab.find(1).await.as_deref(), Some("row 1"));
    assert_eq!(lab.find(1).await.as_deref(), Some("row 1"));
    assert_eq!(lab.runs(), 2, "Some is cached");
    wait_until(
        "the cached None expires",
        Duration::from_secs(5),
        async || fx.cache.get::<Option<String>>("neg:404").await.is_none(),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "None was kept for its 300 ms ({:?})",
        started.elapsed()
    );
    assert_eq!(lab.find(404).await, None);
    assert_eq!(lab.runs(), 3, "an expired None is a miss");
    assert_eq!(lab.find(1).await.as_deref(), Some("row 1"));
    assert_eq!(lab.runs(), 3, "Some lives for the normal TTL");
}

pub(super) async fn values_over_the_size_limit_are_returned_but_not_stored(fx: Fixture) {
    let lab = Lab::new(fx.cache.clone());
    assert_eq!(lab.blob(1000).await.len(), 1000);
    assert_eq!(lab.blob(1000).await.len(), 1000);
    assert_eq!(lab.runs(), 2, "the big value was not stored");
    assert_eq!(fx.cache.get::<String>("blob:1000").await, None);
    let stats = fx.cache.stats();
    assert_eq!((stats.oversized, stats.fills), (2, 0), "{stats:?}");
    assert_eq!(lab.blob(10).await, "x".repeat(10));
    assert_eq!(lab.blob(10).await, "x".repeat(10));
    assert_eq!(lab.runs(), 3, "a small value is stored");
    let stats = fx.cache.stats();
    assert_eq!((stats.oversized, stats.fills), (2, 1), "{stats:?}");

    // The cache's own limit, and an option that replaces it.
    let small = same_store(&fx, |b| b.max_value_size(128));
    let big = "y".repeat(1000);
    let load = || async { Ok::<_, Infallible>(big.clone()) };
    let default_opts = CacheOptions::new("big");
    let roomy_opts = CacheOptions::new("roomy").max_size(4096);
    for _ in 0..2 {
        assert_eq!(
            small.get_or_load("big", &default_opts, load).await.unwrap(),
            big
        );
    }
    let stats = small.stats();
    assert_eq!((stats.misses, stats.oversized), (2, 2), "{stats:?}");
    for _ in 0..2 {
        assert_eq!(
            small.get_or_load("roomy", &roomy_opts, load).await.unwrap(),
            big
        );
    }
    let stats = small.stats();
    assert_eq!(
        (stats.misses, stats.oversized, stats.hits),
        (3, 2, 1),
        "max_size on the options replaces the cache's limit: {stats:?}"
    );
}

pub(super) async fn a_version_bump_orphans_only_the_entries_of_that_version(fx: Fixture) {
    let lab = Lab::new(fx.cache.clone());
    for _ in 0..2 {
        assert_eq!(lab.profile(1).await, "profile of 1, run 1");
        assert_eq!(lab.settings(1).await, "settings of 1, run 2");
        assert_eq!(lab.profile(2).await, "profile of 2, run 3");
    }
    assert_eq!(lab.runs(), 3, "versioned entries hit");

    lab.rename(1).await.unwrap();
    assert_eq!(lab.profile(1).await, "profile of 1, run 4");
    assert_eq!(lab.settings(1).await, "settings of 1, run 5");
    assert_eq!(
        lab.profile(2).await,
        "profile of 2, run 3",
        "user:2 is another version"
    );
    assert_eq!(lab.profile(1).await, "profile of 1, run 4");
    assert_eq!(lab.runs(), 5, "refilled under the new version");

    assert!(lab.failing_rename(2).await.is_err());
    assert_eq!(
        lab.profile(2).await,
        "profile of 2, run 3",
        "an Err bumps nothing"
    );

    fx.cache.invalidate().bump("user:2").await.unwrap();
    assert_eq!(lab.profile(2).await, "profile of 2, run 6");
    assert_eq!(lab.profile(1).await, "profile of 1, run 4");
    assert_eq!(lab.runs(), 6);
}

#[tokio::test]
async fn a_versioned_hit_is_one_round_trip() {
    let crate::common::Counted {
        server: _server,
        proxy,
        cache,
    } = crate::common::Counted::start("ver").await;
    let lab = Lab::new(cache.clone());
    // Warm up: the connection handshake and loading the scripts.
    lab.profile(9).await;
    lab.rename(9).await.unwrap();
    lab.profile(9).await;

    let before = proxy.requests();
    lab.profile(1).await;
    assert_eq!(
        proxy.requests() - before,
        3,
        "a miss is the lookup (entry and version together), the fill token and the fill"
    );
    let before = proxy.requests();
    assert_eq!(lab.profile(1).await, "profile of 1, run 3");
    assert_eq!(
        proxy.requests() - before,
        1,
        "a versioned hit is one round trip"
    );
    let before = proxy.requests();
    lab.rename(1).await.unwrap();
    assert_eq!(proxy.requests() - before, 1, "a bump is one round trip");
    let before = proxy.requests();
    assert_eq!(lab.profile(1).await, "profile of 1, run 4");
    assert_eq!(proxy.requests() - before, 3, "the orphaned entry is a miss");
    let before = proxy.requests();
    lab.profile(1).await;
    assert_eq!(proxy.requests() - before, 1);
    assert_eq!(lab.runs(), 4);
}
