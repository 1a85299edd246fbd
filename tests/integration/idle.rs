//! Time-to-idle (`idle = "..."`): an entry nobody reads expires after
//! `idle`; each hit extends it, in the same round trip as the read, but
//! never past its TTL. On every store; the round trip and the expiry Redis
//! holds are checked on a real `redis-server`.
//!
//! These cases are about time passing, so they sleep: each sleep is what
//! the case measures (an idle period, the spacing of hits), never a wait
//! for something else to finish.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheOptions, cache_put, cached};
use integration_tests::{RedisServer, wait_until};

use crate::common::Fixture;

struct Sessions {
    cache: Cache,
    loads: AtomicU32,
}

impl Sessions {
    fn new(cache: Cache) -> Sessions {
        Sessions {
            cache,
            loads: AtomicU32::new(0),
        }
    }

    fn loads(&self) -> u32 {
        self.loads.load(Ordering::SeqCst)
    }

    /// Dropped after 300 ms without a read.
    #[cached(cache = self.cache, key = "short:{id}", ttl = 60, idle = "300ms")]
    async fn short(&self, id: u64) -> u64 {
        self.loads.fetch_add(1, Ordering::SeqCst);
        id
    }

    /// Filed under a tag, and kept only while read.
    #[cached(cache = self.cache, key = "tagged:{id}", ttl = 60, idle = "300ms", tags = ["group:{id}"])]
    async fn tagged(&self, id: u64) -> u64 {
        self.loads.fetch_add(1, Ordering::SeqCst);
        id
    }

    /// Written through with the same idle as `short` reads it with.
    #[cache_put(cache = self.cache, key = "short:{id}", ttl = 60, idle = "300ms")]
    async fn save(&self, id: u64) -> Result<u64, String> {
        Ok(id)
    }

    /// Kept while read at least once a second, but never past 3 s.
    #[cached(cache = self.cache, key = "bounded:{id}", ttl = 3, jitter = 0.0, idle = "1s")]
    async fn bounded(&self, id: u64) -> u64 {
        self.loads.fetch_add(1, Ordering::SeqCst);
        id
    }
}

crate::common::on_every_store!(
    an_entry_nobody_reads_expires_after_idle,
    hits_keep_an_entry_alive_until_its_ttl,
    an_entry_kept_alive_by_hits_is_still_invalidated_by_its_tag,
    a_put_with_idle_expires_when_nobody_reads_it,
);

/// Hits extend the entry past `idle`; its tag must still reach it (the tag's
/// set lives as long as the entry can).
async fn an_entry_kept_alive_by_hits_is_still_invalidated_by_its_tag(fx: Fixture) {
    let sessions = Sessions::new(fx.cache.clone());
    sessions.tagged(1).await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await; // hits, spaced
        sessions.tagged(1).await;
    }
    assert_eq!(sessions.loads(), 1, "kept alive for 900 ms by hits");
    fx.cache.invalidate().tag("group:1").await.unwrap();
    sessions.tagged(1).await;
    assert_eq!(sessions.loads(), 2, "the tag removed it");
}

async fn a_put_with_idle_expires_when_nobody_reads_it(fx: Fixture) {
    let sessions = Sessions::new(fx.cache.clone());
    sessions.save(4).await.unwrap();
    sessions.short(4).await;
    assert_eq!(sessions.loads(), 0, "the put's value");
    tokio::time::sleep(Duration::from_millis(700)).await; // idle
    sessions.short(4).await;
    assert_eq!(sessions.loads(), 1, "expired after 300 ms without a read");
}

/// With an in-process tier, hits are answered in process; the tier keeps
/// its copy for at most half the idle, so Redis is read (and extends the
/// entry) before the entry would expire there: a hot entry is loaded once.
#[tokio::test]
async fn a_hot_entry_behind_a_tier_stays_in_redis() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("idle-tier")
        .local_ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    wait_until("the tier subscribes", Duration::from_secs(5), async || {
        cache.listening()
    })
    .await;
    let sessions = Sessions::new(cache.clone());
    sessions.short(9).await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await; // hits, spaced
        sessions.short(9).await;
    }
    assert_eq!(sessions.loads(), 1, "1 s of hits, one load");
    assert!(cache.stats().local_hits > 0, "the tier answered some hits");
}

async fn an_entry_nobody_reads_expires_after_idle(fx: Fixture) {
    let sessions = Sessions::new(fx.cache.clone());
    sessions.short(1).await;
    sessions.short(1).await;
    assert_eq!(sessions.loads(), 1, "a hit right after the fill");
    tokio::time::sleep(Duration::from_millis(700)).await; // idle
    sessions.short(1).await;
    assert_eq!(sessions.loads(), 2, "expired after 300 ms without a read");
}

/// Read every 100 ms: the entry outlives its 1 s idle (each hit extends
/// it), and is reloaded once its 3 s TTL is up (the hits do not extend it
/// past that).
async fn hits_keep_an_entry_alive_until_its_ttl(fx: Fixture) {
    let sessions = Sessions::new(fx.cache.clone());
    let filled = Instant::now();
    sessions.bounded(1).await;
    let reloaded = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sessions.bounded(1).await;
        if sessions.loads() > 1 {
            break filled.elapsed();
        }
        assert!(
            filled.elapsed() < Duration::from_secs(6),
            "still cached after 6 s: hits extended it past its TTL"
        );
    };
    assert!(
        reloaded >= Duration::from_millis(2_500),
        "reloaded after {reloaded:?}: the hits did not extend it past its 1 s idle"
    );
}

/// On Redis an idle hit is one round trip (the read script extends the key
/// as it reads it), and the key's expiry is `idle` from the hit, or the
/// time left to its TTL when that is shorter.
#[tokio::test]
async fn an_idle_hit_is_one_round_trip_and_moves_the_expiry() {
    let crate::common::Counted {
        server,
        proxy,
        cache,
    } = crate::common::Counted::start("idle").await;
    let pttl = |key: &str| -> i64 {
        ::redis::cmd("PTTL")
            .arg(format!("idle:{key}"))
            .query(&mut server.conn())
            .unwrap()
    };
    let loads = AtomicU32::new(0);
    let read = |key: &'static str, options: CacheOptions| {
        let (cache, loads) = (&cache, &loads);
        async move {
            cache
                .get_or_load(key, &options, || async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(7u64)
                })
                .await
                .unwrap()
        }
    };
    let sliding = CacheOptions::new("sliding")
        .ttl(Duration::from_secs(60))
        .jitter(0.0)
        .idle(Duration::from_secs(10));
    read("sliding", sliding).await; // a miss, and the scripts load
    let stored = pttl("sliding");
    assert!(
        (1..=10_000).contains(&stored),
        "stored for idle, not the TTL: {stored}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // idle time passes
    let before = proxy.requests();
    let waited = pttl("sliding");
    read("sliding", sliding).await;
    assert_eq!(proxy.requests() - before, 1, "a hit is one round trip");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let extended = pttl("sliding");
    assert!(
        extended > waited,
        "the hit moved the expiry: {waited} ms left before it, {extended} after"
    );

    // Past half its TTL, a hit extends it to its TTL only.
    let bounded = CacheOptions::new("bounded")
        .ttl(Duration::from_secs(2))
        .jitter(0.0)
        .idle(Duration::from_millis(1_500));
    read("bounded", bounded).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await; // half the TTL
    read("bounded", bounded).await;
    assert_eq!(loads.load(Ordering::SeqCst), 2, "a hit");
    let left = pttl("bounded");
    assert!(
        (1..=1_000).contains(&left),
        "extended to what is left of the TTL (at most 1,000 ms), not by idle: {left}"
    );
}
