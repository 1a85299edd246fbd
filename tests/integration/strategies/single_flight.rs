//! Single-flight: one loader per key, its error shared or retried one
//! leader at a time, waiters that outlive a cancelled leader.

use super::*;

const CROWD: usize = 1000;

pub(super) async fn a_thousand_concurrent_misses_run_the_loader_once(fx: Fixture) {
    let lab = Lab::new(fx.cache.clone());
    lab.expect_crowd(&fx, CROWD);
    let callers = spawn_crowd(&lab, CROWD, |lab| async move { lab.slow(1).await });
    let results = join_all(callers).await;
    assert_eq!(lab.runs(), 1, "the loader ran once for {CROWD} callers");
    assert!(
        results.iter().all(|r| r.as_deref() == Ok("value 1")),
        "every caller gets the leader's value"
    );
    let stats = fx.cache.stats();
    assert_eq!(
        (stats.misses, stats.coalesced, stats.hits, stats.fills),
        (1, CROWD as u64 - 1, 0, 1),
        "one miss leads, the {} others are coalesced onto it: {stats:?}",
        CROWD - 1
    );
    assert_eq!(lab.slow(1).await.as_deref(), Ok("value 1"));
    assert_eq!(lab.runs(), 1, "and the value was stored");
    assert_eq!(fx.cache.stats().hits, 1);
}

pub(super) async fn an_error_is_shared_with_waiters_and_not_cached(fx: Fixture) {
    let lab = Lab::new(fx.cache.clone());
    lab.expect_crowd(&fx, CROWD);
    let callers = spawn_crowd(&lab, CROWD, |lab| async move { lab.slow(0).await });
    let results = join_all(callers).await;
    assert_eq!(
        lab.runs(),
        1,
        "the failing loader ran once for {CROWD} callers"
    );
    assert!(
        results
            .iter()
            .all(|r| r.as_deref() == Err(&"failure 1".to_string())),
        "every caller gets the leader's error"
    );
    let stats = fx.cache.stats();
    assert_eq!((stats.misses, stats.coalesced), (1, CROWD as u64 - 1));
    assert_eq!(stats.fills, 0, "an Err is not stored");
    assert_eq!(fx.cache.get::<String>("slow:0").await, None);
    assert_eq!(
        lab.slow(0).await,
        Err("failure 2".to_string()),
        "the next call runs the body again"
    );
    assert_eq!(lab.runs(), 2);
}

pub(super) async fn an_error_that_cannot_be_shared_is_retried_one_leader_at_a_time(fx: Fixture) {
    const CALLERS: usize = 4;
    let lab = Lab::new(fx.cache.clone());
    lab.expect_crowd(&fx, CALLERS);
    let callers = spawn_crowd(&lab, CALLERS, |lab| async move { lab.opaque(5).await });
    let results = join_all(callers).await;
    // Nothing can be handed over, so each caller ends up loading for itself,
    // but never two at once.
    assert_eq!(lab.runs(), CALLERS as u32);
    let runs: BTreeSet<u32> = results
        .into_iter()
        .map(|r| match r {
            Err(Opaque(5, run)) => run,
            other => panic!("expected this caller's own error, got {other:?}"),
        })
        .collect();
    assert_eq!(
        runs,
        (1..=CALLERS as u32).collect(),
        "each caller got the error of its own load"
    );
    assert_eq!(
        lab.max_active.load(Ordering::SeqCst),
        1,
        "retries lead one at a time"
    );
    let stats = fx.cache.stats();
    assert_eq!((stats.coalesced, stats.fills), (0, 0));
}

pub(super) async fn waiters_of_a_cancelled_leader_take_over_and_do_not_hang(fx: Fixture) {
    const WAITERS: usize = 20;
    let lab = Lab::new(fx.cache.clone());
    let leader = {
        let lab = lab.clone();
        tokio::spawn(async move { lab.held(1).await })
    };
    timeout(CALLERS_BOUND, lab.started.notified())
        .await
        .expect("the leader's loader starts");
    let gets = GetCounter::of(&fx).map(|c| {
        let target = c.get_blocking() + LOOKUP_GETS * WAITERS as u64;
        (c, target)
    });
    let waiters = spawn_crowd(&lab, WAITERS, |lab| async move { lab.held(1).await });
    wait_until(
        "every waiter has looked the key up",
        Duration::from_secs(5),
        async || {
            lab.entered.load(Ordering::SeqCst) == WAITERS
                && match &gets {
                    Some((c, target)) => c.get().await >= *target,
                    None => true,
                }
        },
    )
    .await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "waiters wait for the leader"
    );
    assert_eq!(lab.runs(), 1);

    leader.abort();
    let cancelled = timeout(CALLERS_BOUND, leader)
        .await
        .expect("the aborted leader ends");
    assert!(cancelled.unwrap_err().is_cancelled());
    wait_until(
        "one waiter takes the load over",
        Duration::from_secs(5),
        async || lab.runs() == 2,
    )
    .await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "the others wait for the new leader"
    );
    lab.gate.add_permits(1); // releases the new leader only
    let results = join_all(waiters).await;
    assert!(
        results.iter().all(|v| v == "value 2 of 1"),
        "every waiter gets the new leader's value: {results:?}"
    );
    assert_eq!(lab.runs(), 2, "the loader ran at most twice");
    let stats = fx.cache.stats();
    // A waiter that re-reads after the new leader stored the value hits
    // instead of coalescing: both mean it did not load.
    assert_eq!(
        (stats.misses, stats.coalesced + stats.hits, stats.fills),
        (2, WAITERS as u64 - 1, 1),
        "{stats:?}"
    );
}

pub(super) async fn without_single_flight_every_concurrent_miss_runs_the_loader(fx: Fixture) {
    let lab = Lab::new(fx.cache.clone());
    // Each load waits at a barrier for all the others: with single-flight
    // this would never complete.
    let callers = spawn_crowd(&lab, UNSHARED_CALLERS, |lab| async move {
        lab.unshared(1).await
    });
    let results = join_all(callers).await;
    assert_eq!(lab.runs(), UNSHARED_CALLERS as u32);
    let distinct: BTreeSet<&String> = results.iter().collect();
    assert_eq!(
        distinct.len(),
        UNSHARED_CALLERS,
        "each caller got its own load"
    );
    let stats = fx.cache.stats();
    assert_eq!(
        (stats.misses, stats.coalesced),
        (UNSHARED_CALLERS as u64, 0)
    );
    let cached = lab.unshared(1).await;
    assert!(results.contains(&cached));
    assert_eq!(
        lab.runs(),
        UNSHARED_CALLERS as u32,
        "one of the loads is cached"
    );
}
