//! The process-wide switch (`cache_runtime::set_enabled`), in its own test
//! binary: it turns off every cache of the process, so it must not run next
//! to the other tests.

use std::sync::atomic::{AtomicU32, Ordering};

use cache_runtime::{Cache, CacheStatus, cached, invalidates, with_cache_status};
use integration_tests::RedisServer;

struct Repo {
    cache: Cache,
    loads: AtomicU32,
}

impl Repo {
    #[cached(cache = self.cache, key = "n:{id}")]
    async fn get(&self, id: u32) -> u32 {
        self.loads.fetch_add(1, Ordering::SeqCst) + id
    }

    #[invalidates(cache = self.cache, keys = ["n:{id}"])]
    async fn write(&self, id: u32) {
        let _ = id;
    }
}

#[tokio::test]
async fn the_process_switch_turns_every_cache_off_and_keeps_invalidating() {
    let server = RedisServer::start();
    let redis = Cache::builder()
        .redis_url(server.url())
        .namespace("switch")
        .build()
        .unwrap();
    for cache in [Cache::in_memory(), redis] {
        let repo = Repo {
            cache: cache.clone(),
            loads: AtomicU32::new(0),
        };
        assert_eq!(repo.get(1).await, 1);
        cache_runtime::set_enabled(false);
        assert!(!cache_runtime::enabled());
        assert!(cache.enabled(), "the cache's own switch is untouched");
        assert_eq!(repo.get(1).await, 2, "off: the body runs");
        assert_eq!(
            with_cache_status(repo.get(1)).await,
            (3, Some(CacheStatus::Bypass))
        );
        repo.write(1).await;
        cache_runtime::set_enabled(true);
        assert!(cache_runtime::enabled());
        assert_eq!(
            repo.get(1).await,
            4,
            "the write while off removed the old entry"
        );
        assert_eq!(repo.get(1).await, 4, "back on: a hit");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.bypassed, stats.fills), (1, 2, 2));
    }
}
