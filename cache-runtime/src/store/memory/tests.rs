//! The in-process store's own tests: capacity, expiry, the sweep, and the
//! fill checks, against the store directly.

use super::*;
use crate::store::TagNames;

fn fill(store: &MemoryStore, entry: &str, tags: &[&str], token: u64) -> bool {
    store.fill_now(FillRequest {
        tags: tags
            .iter()
            .map(|t| TagNames {
                set: format!("s:{t}"),
                marker: format!("m:{t}"),
            })
            .collect(),
        ..FillRequest::new(entry.into(), format!("m:{entry}"), b"v".to_vec(), token)
    })
}

#[test]
fn the_tag_index_forgets_entries_that_are_gone() {
    let store = MemoryStore::new(100_000);
    for i in 0..10 {
        assert!(fill(&store, &format!("e{i}"), &["t"], 0));
    }
    assert_eq!(store.tag_members("s:t"), 10);
    // Removed by key: the tag index still lists them until a sweep.
    let plan = InvalidationPlan {
        keys: (0..10)
            .map(|i| (format!("e{i}"), format!("m:e{i}")))
            .collect(),
        marker_ttl: Duration::from_secs(30),
        ..Default::default()
    };
    assert_eq!(store.invalidate(&plan), 10);
    assert_eq!(store.tag_members("s:t"), 10);
    for i in 0..SWEEP_EVERY {
        fill(&store, &format!("other{i}"), &[], 1);
    }
    assert_eq!(
        store.tag_members("s:t"),
        0,
        "the sweep dropped members whose entries are gone"
    );
}

/// The bookkeeping is swept in bounded steps that go on where the last
/// one stopped: no write does a pass over all of it (with nothing added
/// since, a step drops at most `STEP_VISITS` tag members), and the steps
/// together reach everything.
#[test]
fn the_bookkeeping_is_swept_in_bounded_steps_that_cover_it() {
    let store = MemoryStore::new(100_000);
    let n = 4 * STEP_VISITS + 100;
    for i in 0..n {
        assert!(fill(&store, &format!("e{i}"), &["t"], 0));
    }
    // Removed by key, with markers that outlive them only briefly.
    let marker_ttl = Duration::from_millis(20);
    let plan = InvalidationPlan {
        keys: (0..n)
            .map(|i| (format!("e{i}"), format!("m:e{i}")))
            .collect(),
        marker_ttl,
        ..Default::default()
    };
    assert_eq!(store.invalidate(&plan), n as u64);
    // The markers' lives started inside the call.
    let expired = Instant::now() + marker_ttl;
    assert_eq!(store.tag_members("s:t"), n);
    assert_eq!(store.markers_kept(), n);
    while Instant::now() <= expired {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut steps = 0;
    let mut written = 0;
    while store.tag_members("s:t") > 0 || store.markers_kept() > 0 {
        // Two more than the members need: a step may stop at the end
        // of a round and the first may start in the middle of one.
        assert!(
            steps <= n.div_ceil(STEP_VISITS) + 2,
            "{steps} steps did not reach every member and marker"
        );
        let members = store.tag_members("s:t");
        // Up to and including the next step.
        loop {
            fill(
                &store,
                &format!("other{written}"),
                &[],
                store.current_token().seq,
            );
            written += 1;
            if store.state().writes_since_sweep.is_multiple_of(STEP_EVERY) {
                break;
            }
        }
        // The first step may also visit twice the members the last
        // fills of `e…` added after the step before it.
        let bound = if steps == 0 {
            visits(STEP_EVERY)
        } else {
            STEP_VISITS
        };
        steps += 1;
        let dropped = members - store.tag_members("s:t");
        assert!(dropped <= bound, "one step dropped {dropped} members");
    }
}

/// Steps outpace what writes add: writes that each leave 16 expired
/// markers (twice what fixed steps of `STEP_VISITS` every `STEP_EVERY`
/// writes would visit) do not pile them up.
#[test]
fn the_sweep_keeps_up_with_what_writes_add() {
    let store = MemoryStore::new(100_000);
    let per_write = 2 * STEP_VISITS / STEP_EVERY;
    for w in 0..2_000 {
        let plan = InvalidationPlan {
            keys: (0..per_write)
                .map(|i| (format!("e{w}.{i}"), format!("m:e{w}.{i}")))
                .collect(),
            // Past their window at once: the next step may drop them.
            marker_ttl: Duration::ZERO,
            ..Default::default()
        };
        store.invalidate(&plan);
    }
    let kept = store.markers_kept();
    assert!(
        kept <= 2 * per_write * STEP_EVERY,
        "{kept} markers kept after 2,000 writes of {per_write}"
    );
}

/// It never holds more entries than its capacity (the map's shares
/// per shard are rounded down, not up), and uses nearly all of it.
#[test]
fn it_holds_at_most_its_capacity() {
    for capacity in [1, 100, 1_000, 1_001, 1_023] {
        let store = MemoryStore::new(capacity);
        for i in 0..capacity * 3 {
            fill(&store, &format!("e{i}"), &[], store.current_token().seq);
        }
        let held = store.entries.len() as u64;
        let shards = store.entries.num_shards() as u64;
        assert!(held <= capacity, "{held} held, capacity {capacity}");
        assert!(held + shards > capacity, "{held} held, capacity {capacity}");
    }
}

/// Expiry is checked on read: an expired entry is never served, does
/// not count as removed, and is dropped by the sweep if nobody reads it.
#[test]
fn expired_entries_are_not_served_counted_or_kept() {
    let store = MemoryStore::new(100_000);
    let short = |entry: String| FillRequest {
        ttl: Some(Duration::from_millis(100)),
        ..FillRequest::new(entry.clone(), format!("m:{entry}"), b"v".to_vec(), 0)
    };
    for i in 0..100 {
        assert!(store.fill_now(short(format!("e{i}"))));
    }
    // Filled last, so expired last.
    assert!(store.fill_now(short("last".into())));
    assert!(store.entry("last").is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.entry("last").is_some() {
        assert!(Instant::now() < deadline, "served past its TTL");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(store.read("e1", None).value, None);
    let plan = InvalidationPlan {
        keys: vec![("e2".into(), "m:e2".into())],
        patterns: vec!["e1*".into()],
        marker_ttl: Duration::from_secs(30),
        ..Default::default()
    };
    assert_eq!(store.invalidate(&plan), 0, "nothing live was removed");
    assert!(store.entries.len() > 50, "unread, not yet dropped");
    for i in 0..SWEEP_EVERY {
        fill(&store, &format!("other{i}"), &[], store.current_token().seq);
    }
    assert_eq!(
        store.entries.len(),
        SWEEP_EVERY,
        "the sweep dropped the expired entries"
    );
}

/// Version names live as long as the entries stamped with them: bumped
/// and never read, a name is dropped by the sweep after the marker
/// lifetime (before, every name ever bumped was kept for good).
#[test]
fn versions_nobody_reads_are_swept() {
    let store = MemoryStore::new(100_000);
    let bump = |name: String| InvalidationPlan {
        bumps: vec![name],
        marker_ttl: Duration::from_millis(1),
        ..Default::default()
    };
    for i in 0..1_000 {
        store.invalidate(&bump(format!("v{i}")));
    }
    assert_eq!(store.version("v7"), 1);
    std::thread::sleep(Duration::from_millis(5));
    for i in 0..SWEEP_EVERY {
        fill(&store, &format!("other{i}"), &[], store.current_token().seq);
    }
    assert_eq!(store.versions_kept(), 0, "bumped, never read, swept");
    // A read-and-filled version lives as long as its entry.
    let versioned = |ttl| FillRequest {
        ttl,
        version: Some(("kept".into(), 0)),
        ..FillRequest::new(
            "e".into(),
            "m:e".into(),
            b"v".to_vec(),
            store.current_token().seq,
        )
    };
    let req = versioned(Some(Duration::from_secs(60)));
    assert!(store.fill_now(req));
    store.invalidate(&bump("kept".into()));
    for i in 0..SWEEP_EVERY {
        fill(&store, &format!("more{i}"), &[], store.current_token().seq);
    }
    assert_eq!(store.version("kept"), 1, "kept while its entry may be read");
    let req = versioned(None);
    assert!(
        !store.fill_now(req),
        "read under an older version: not stored"
    );
}

#[test]
fn a_fill_older_than_an_invalidation_is_refused() {
    let store = MemoryStore::new(100);
    let token = store.read("e", None).token.expect("read in process").seq;
    let plan = InvalidationPlan {
        tags: vec![TagNames {
            set: "s:t".into(),
            marker: "m:t".into(),
        }],
        marker_ttl: Duration::from_secs(30),
        ..Default::default()
    };
    store.invalidate(&plan);
    assert!(
        !fill(&store, "e", &["t"], token),
        "tag invalidated after the read"
    );
    assert!(
        fill(&store, "f", &["u"], token),
        "another tag is unaffected"
    );
    assert!(
        !fill(&store, "e", &["u"], token),
        "the refused fill marked its entry: the same stale read cannot store it under other tags"
    );
    assert!(
        fill(&store, "e", &["t"], store.current_token().seq),
        "a read after the invalidation may fill"
    );
}
