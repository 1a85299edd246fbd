//! Stale-while-revalidate and early refresh (XFetch): a cached value
//! served while one caller refreshes it, or refreshed before it expires.

use super::*;

pub(super) async fn a_stale_entry_is_served_while_one_caller_refreshes(fx: Fixture) {
    const READERS: usize = 50;
    let lab = Lab::new(fx.cache.clone());
    assert_eq!(lab.swr(1).await, "value 1 of 1");
    let filled_ms = now_ms();
    assert_eq!(lab.swr(1).await, "value 1 of 1");
    assert_eq!(lab.runs(), 1);
    wait_past("the 1 s TTL passes", filled_ms + 1000).await;

    // The refresh is held at the gate: the other readers can only return if
    // they do not wait for it. The refreshing reader loads inline (as
    // documented on `CacheOptions::stale`) and returns what it loaded.
    // The refreshing reader reads the fill token (a round trip) before it
    // loads: the others may all have returned before its load starts.
    let readers = spawn_crowd(&lab, READERS, |lab| async move { lab.swr(1).await });
    wait_until(
        "every reader but the refreshing one returns, and that one loads",
        Duration::from_secs(5),
        async || {
            readers.iter().filter(|r| r.is_finished()).count() >= READERS - 1 && lab.runs() >= 2
        },
    )
    .await;
    assert_eq!(lab.runs(), 2, "exactly one reader refreshes");
    assert_eq!(
        readers.iter().filter(|r| !r.is_finished()).count(),
        1,
        "the refreshing reader is still loading"
    );
    let stats = fx.cache.stats();
    assert_eq!(stats.refreshes, 1, "{stats:?}");
    assert_eq!(stats.stale_served, READERS as u64 - 1, "{stats:?}");

    lab.gate.add_permits(1);
    let results = join_all(readers).await;
    assert_eq!(
        results.iter().filter(|v| *v == "value 1 of 1").count(),
        READERS - 1,
        "the others got the old value: {results:?}"
    );
    assert_eq!(
        results.iter().filter(|v| *v == "value 2 of 1").count(),
        1,
        "the refreshing reader returns what it loaded"
    );
    assert_eq!(lab.swr(1).await, "value 2 of 1", "the new value is served");
    assert_eq!(lab.runs(), 2, "and it is fresh");
    let stats = fx.cache.stats();
    assert_eq!(
        (stats.refreshes, stats.stale_served),
        (1, READERS as u64 - 1)
    );
}

/// Stale-if-error: the refresh of a stale entry fails, and the caller gets
/// the cached value instead of the error; the entry stays, and the next
/// stale read tries again.
pub(super) async fn a_failed_refresh_serves_the_cached_value(fx: Fixture) {
    let lab = Lab::new(fx.cache.clone());
    assert_eq!(lab.swr_failing(1).await.unwrap(), "value 1 of 1");
    let filled_ms = now_ms();
    wait_past("the 300 ms TTL passes", filled_ms + 300).await;
    assert_eq!(lab.swr_failing(1).await.unwrap(), "value 1 of 1");
    assert_eq!(lab.swr_failing(1).await.unwrap(), "value 1 of 1");
    assert_eq!(lab.runs(), 3, "each stale read tried a refresh");
    let stats = fx.cache.stats();
    assert_eq!(
        (stats.refreshes, stats.refresh_failures, stats.misses),
        (2, 2, 1),
        "refreshes are not misses"
    );
    assert_eq!(stats.stale_served, 2);
}

pub(super) async fn past_the_stale_window_an_entry_is_a_plain_miss(fx: Fixture) {
    // A TTL long enough for the second read to come within it on a loaded
    // machine (at 300 ms it once came after, on the cluster, and refreshed).
    const OPTS: CacheOptions = CacheOptions::new("short")
        .ttl(Duration::from_secs(1))
        .jitter(0.0)
        .stale(Duration::from_millis(500));
    let lab = Lab::new(fx.cache.clone());
    let load = || async { Ok::<_, Infallible>(format!("value {}", lab.run())) };
    let started = std::time::Instant::now();
    assert_eq!(
        fx.cache.get_or_load("short:1", &OPTS, load).await,
        Ok("value 1".into())
    );
    assert_eq!(
        fx.cache.get_or_load("short:1", &OPTS, load).await,
        Ok("value 1".into())
    );
    wait_until(
        "the entry is gone after TTL + stale window",
        Duration::from_secs(5),
        async || fx.cache.get::<String>("short:1").await.is_none(),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(1_450),
        "the entry was kept for the stale window too ({:?})",
        started.elapsed()
    );
    assert_eq!(
        fx.cache.get_or_load("short:1", &OPTS, load).await,
        Ok("value 2".into()),
        "past the window the loader runs and its value is returned"
    );
    let stats = fx.cache.stats();
    assert_eq!(
        (stats.stale_served, stats.refreshes, stats.misses),
        (0, 0, 2),
        "{stats:?}"
    );
}

pub(super) async fn early_refresh_happens_before_expiry_and_rarely(fx: Fixture) {
    let lab = Lab::new(fx.cache.clone());
    assert_eq!(lab.xfetch(1).await, "value 1 of 1");
    let filled_ms = now_ms();
    // Hits, about one a millisecond, until one of them refreshes; the entry
    // is fresh until at most `filled_ms + 1000`.
    let mut refresh_started_ms = None;
    while now_ms() < filled_ms + 1500 {
        let call_ms = now_ms();
        let value = lab.xfetch(1).await;
        if lab.runs() > 1 {
            assert_eq!(value, "value 2 of 1", "the refreshing caller loads inline");
            refresh_started_ms = Some(call_ms);
            break;
        }
        assert_eq!(value, "value 1 of 1");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let refresh_started_ms =
        refresh_started_ms.expect("no refresh within 1.5 s of a fill with a 1 s TTL");
    let stats = fx.cache.stats();
    assert!(
        refresh_started_ms < filled_ms + 1000,
        "the refresh started {} ms after the fill, past the TTL",
        refresh_started_ms - filled_ms
    );
    assert_eq!(
        stats.refreshes, 1,
        "one early refresh, not an expiry: {stats:?}"
    );
    assert!(
        stats.hits >= 20 * stats.refreshes,
        "early refreshes are rare among hits (< 5%): {stats:?}"
    );
    // The refreshed entry is fresh again: no more refreshes right away.
    for _ in 0..20 {
        assert_eq!(lab.xfetch(1).await, "value 2 of 1");
    }
    assert_eq!((lab.runs(), fx.cache.stats().refreshes), (2, 1));
}

/// The XFetch decision itself, measured on raw entries whose header sets the
/// time left before expiry and the load cost (the layout is documented in
/// `entry.rs`): a hit refreshes with probability `exp(-left / (cost * beta))`.
#[tokio::test]
async fn early_refresh_probability_follows_xfetch() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("xs")
        .build()
        .unwrap();
    // Subscribing forgets the server's epoch (it may have changed while
    // unsubscribed), and a read then takes the raw entries for another
    // epoch's: counted as a miss, not a refresh. Measure once subscribed.
    assert!(cache.ready(Duration::from_secs(10)).await, "subscribed");
    let mut conn = server.conn();
    // A cost so large that the test's own duration does not move the odds.
    let cost = f64::from(XS_COST_MS);
    let half = cost * std::f64::consts::LN_2; // exp(-half / cost) = 1/2

    // Counts are binomial over XS_TRIALS = 300; bounds are >= 5 sigma wide.
    let p_half = xfetch_refreshes(&cache, &mut conn, half, 1.0).await;
    assert!((100..=200).contains(&p_half), "p = 1/2: {p_half} of 300");
    let p_one = xfetch_refreshes(&cache, &mut conn, cost / 100.0, 1.0).await;
    assert!(p_one >= 285, "p = 0.99: {p_one} of 300");
    let p_zero = xfetch_refreshes(&cache, &mut conn, cost * 10.0, 1.0).await;
    assert!(p_zero <= 2, "p = 4.5e-5: {p_zero} of 300");
    // beta stretches the horizon: 4 * half ahead is 1/16 with beta 1, 1/2
    // with beta 4.
    let p_16th = xfetch_refreshes(&cache, &mut conn, 4.0 * half, 1.0).await;
    assert!((3..=45).contains(&p_16th), "p = 1/16: {p_16th} of 300");
    let p_beta4 = xfetch_refreshes(&cache, &mut conn, 4.0 * half, 4.0).await;
    assert!(
        (100..=200).contains(&p_beta4),
        "beta 4, p = 1/2: {p_beta4} of 300"
    );
    // Past its fresh-until time (no stale window) the value is served as it
    // is until the store expires it; no refresh.
    let past = xfetch_refreshes(&cache, &mut conn, -1000.0, 1.0).await;
    assert_eq!(past, 0);
}

const XS_COST_MS: u32 = 1_000_000;
const XS_TRIALS: usize = 300;

/// Writes an entry fresh for `left_ms` more and loaded at `XS_COST_MS`, reads
/// it through an `early = beta` read, and counts the reads that refreshed,
/// `XS_TRIALS` times.
async fn xfetch_refreshes(
    cache: &Cache,
    conn: &mut ::redis::Connection,
    left_ms: f64,
    beta: f32,
) -> usize {
    let opts = CacheOptions::new("xs")
        .ttl(Duration::from_secs(3600))
        .early(beta);
    let before = cache.stats().refreshes;
    // Written as the cache would in the server's current epoch (the high 32
    // bits of the sequence number; an entry of another epoch is a miss).
    cache.invalidate().key("epoch").await.unwrap();
    let seq: u64 = ::redis::cmd("GET").arg("xs#seq").query(conn).unwrap();
    let epoch = (seq >> 32) as u32;
    let mut refreshed = 0;
    for _ in 0..XS_TRIALS {
        let fresh_until = (now_ms() as f64 + left_ms) as u64;
        let mut entry = vec![0xCA, 2, 1, 0];
        entry.extend_from_slice(&fresh_until.to_le_bytes());
        entry.extend_from_slice(&0u64.to_le_bytes()); // version
        entry.extend_from_slice(&XS_COST_MS.to_le_bytes());
        entry.extend_from_slice(&epoch.to_le_bytes());
        entry.extend_from_slice(br#""cached""#);
        let _: () = ::redis::cmd("SET")
            .arg("xs:x:1")
            .arg(entry)
            .arg("PX")
            .arg(3_600_000)
            .query(conn)
            .unwrap();
        let got: Result<String, Infallible> = cache
            .get_or_load("x:1", &opts, || async { Ok("loaded".to_string()) })
            .await;
        match got.unwrap().as_str() {
            "loaded" => refreshed += 1,
            "cached" => {}
            other => panic!("unexpected value {other}"),
        }
    }
    let stats = cache.stats();
    assert_eq!(stats.refreshes - before, refreshed as u64, "{stats:?}");
    assert_eq!(stats.decode_errors, 0, "the raw entries decode");
    refreshed
}
