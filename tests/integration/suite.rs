//! The behaviour suite: every case runs against the in-process store, a
//! real `redis-server` and a three-master Redis Cluster, and must behave the
//! same on all three.

use std::time::Duration;

use cache_runtime::{Cache, CacheOptions, Links};
use integration_tests::wait_until;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::common::{Fixture, Post};

crate::common::on_every_store!(
    a_hit_does_not_run_the_body,
    errors_are_returned_and_not_cached,
    none_is_cached_only_when_asked,
    an_update_invalidates_keys_and_tags_after_ok,
    an_error_invalidates_nothing,
    tags_computed_from_the_returned_value_invalidate,
    an_invalidation_from_the_returned_value,
    pattern_delete_removes_only_what_matches,
    hostile_values_cannot_widen_a_pattern,
    hostile_values_cannot_collide_two_keys,
    entries_expire_after_their_ttl,
    a_fill_that_read_before_an_invalidation_is_refused,
    a_fill_without_the_tag_is_refused_when_the_tag_removed_its_entry,
    a_fill_that_read_before_a_matching_pattern_delete_is_refused,
    a_waiter_that_saw_an_invalidation_does_not_take_an_older_value,
    a_waiter_that_saw_an_invalidation_does_not_take_an_older_error,
    a_refresh_that_loaded_before_an_invalidation_is_not_stored,
    a_value_that_does_not_decode_is_a_miss_and_is_replaced,
    the_plain_api_matches_the_macros,
    published_events_follow_the_schema,
    long_keys_and_tags_are_bounded_and_stay_apart,
);

async fn a_hit_does_not_run_the_body(fx: Fixture) {
    let repo = fx.repo();
    let first = repo.get(1).await.unwrap();
    let second = repo.get(1).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(repo.loads(), 1, "the second call must be a hit");
    let stats = fx.cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.fills), (1, 1, 1));
    repo.get(2).await.unwrap();
    assert_eq!(repo.loads(), 2, "another key is another entry");
}

async fn errors_are_returned_and_not_cached(fx: Fixture) {
    let repo = fx.repo();
    assert_eq!(repo.get(404).await, Err("no post 404".to_string()));
    assert_eq!(repo.get(404).await, Err("no post 404".to_string()));
    assert_eq!(repo.loads(), 2, "an Err must not be cached");
    assert_eq!(fx.cache.stats().fills, 0);
}

async fn none_is_cached_only_when_asked(fx: Fixture) {
    let repo = fx.repo();
    assert_eq!(repo.find(404).await, None);
    assert_eq!(repo.find(404).await, None);
    assert_eq!(repo.loads(), 2, "None is not cached by default");
    assert_eq!(repo.find(1).await.map(|p| p.id), Some(1));
    assert_eq!(repo.find(1).await.map(|p| p.id), Some(1));
    assert_eq!(repo.loads(), 3, "Some is cached");

    assert_eq!(repo.find_remembering_none(404).await, None);
    assert_eq!(repo.find_remembering_none(404).await, None);
    assert_eq!(repo.loads(), 4, "cache_none caches None");
    // Tags without `ret` apply to a cached None too, so it can be invalidated.
    repo.touch(404).await;
    assert_eq!(repo.find_remembering_none(404).await, None);
    assert_eq!(repo.loads(), 5);
}

async fn an_update_invalidates_keys_and_tags_after_ok(fx: Fixture) {
    let repo = fx.repo();
    repo.get(1).await.unwrap();
    repo.find(1).await.unwrap();
    repo.by_author(7).await;
    repo.by_author(8).await;
    let loads = repo.loads();
    repo.update(Post {
        id: 1,
        author_id: 7,
        title: "edited".into(),
    })
    .await
    .unwrap();
    assert_eq!(repo.get(1).await.unwrap().title, "edited");
    assert_eq!(repo.find(1).await.unwrap().title, "edited");
    assert_eq!(repo.by_author(7).await[0].title, "edited");
    assert_eq!(
        repo.loads(),
        loads + 3,
        "post:1, find:1 and author:7's list reload"
    );
    repo.by_author(8).await;
    assert_eq!(repo.loads(), loads + 3, "author:8's list was not touched");
    assert!(fx.cache.stats().entries_removed >= 3);
}

async fn an_error_invalidates_nothing(fx: Fixture) {
    let repo = fx.repo();
    repo.get(1).await.unwrap();
    repo.by_author(7).await;
    assert!(repo.failing_update(1).await.is_err());
    repo.get(1).await.unwrap();
    repo.by_author(7).await;
    assert_eq!(repo.loads(), 2, "an Err must leave the cache as it was");
    assert_eq!(fx.cache.stats().invalidations, 0);
}

async fn tags_computed_from_the_returned_value_invalidate(fx: Fixture) {
    let repo = fx.repo();
    repo.get(1).await.unwrap(); // tagged author:7 through ret.author_id
    repo.get(3).await.unwrap(); // tagged author:8
    let report = fx.cache.invalidate().tag("author:7").await.unwrap();
    assert_eq!(report.removed, 1);
    repo.get(1).await.unwrap();
    repo.get(3).await.unwrap();
    assert_eq!(repo.loads(), 3, "only author 7's post reloads");
}

async fn an_invalidation_from_the_returned_value(fx: Fixture) {
    let repo = fx.repo();
    assert_eq!(repo.by_author(8).await.len(), 1);
    let created = repo.create(8, "new").await.unwrap();
    assert_eq!(created.author_id, 8);
    assert_eq!(
        repo.by_author(8).await.len(),
        2,
        "create invalidated author:{{ret.author_id}}"
    );
}

async fn pattern_delete_removes_only_what_matches(fx: Fixture) {
    let repo = fx.repo();
    repo.search("rust", 1).await;
    repo.search("rust", 2).await;
    repo.search("rusty", 1).await;
    repo.search("go", 1).await;
    assert_eq!(repo.loads(), 4);
    repo.forget_search("rust").await.unwrap();
    repo.search("rust", 1).await;
    repo.search("rust", 2).await;
    assert_eq!(repo.loads(), 6, "both pages of `rust` were deleted");
    repo.search("rusty", 1).await;
    repo.search("go", 1).await;
    assert_eq!(
        repo.loads(),
        6,
        "`rusty` and `go` survive the `search:rust:*` pattern"
    );
}

async fn hostile_values_cannot_widen_a_pattern(fx: Fixture) {
    let repo = fx.repo();
    let long_stars = "*".repeat(10_000);
    let long_mix = "*?[\\\n".repeat(2_000);
    let long_plain = "a".repeat(10_000);
    // Terms a hostile pattern would reach if its value were not escaped.
    let others = [
        "rust",
        "go",
        "a:b",
        "x",
        "x\nz",
        "\n\n",
        long_plain.as_str(),
    ];
    let hostile = [
        "*",
        "?",
        "[a-z]",
        "\\",
        "\\*",
        "*:*",
        "x*",
        "\n",
        "x\ny",
        "\r\n*",
        long_stars.as_str(),
        long_mix.as_str(),
    ];
    for term in others.iter().chain(&hostile) {
        repo.search(term, 1).await;
    }
    let loaded = repo.loads();
    assert_eq!(loaded as usize, others.len() + hostile.len());
    for term in hostile {
        repo.forget_search(term).await.unwrap();
    }
    for term in others {
        repo.search(term, 1).await;
    }
    assert_eq!(
        repo.loads(),
        loaded,
        "a hostile term deleted entries of other terms"
    );
    for term in hostile {
        repo.search(term, 1).await;
    }
    assert_eq!(
        repo.loads() as usize,
        loaded as usize + hostile.len(),
        "each hostile term deleted its own entries"
    );
}

async fn hostile_values_cannot_collide_two_keys(fx: Fixture) {
    let repo = fx.repo();
    let long = "x".repeat(10_000);
    // Pairs whose keys would be the same if values were not escaped
    // (`pair:{a}:{b}`), or if the escaping were not reversible.
    let pairs: Vec<(String, String)> = [
        ("a:b", "c"),
        ("a", "b:c"),
        ("a:", "b"),
        ("a", ":b"),
        ("%3A", "x"),
        (":", "x"),
        ("a\n", "b"),
        ("a", "\nb"),
        ("a\\", ":b"),
        ("a\\:", "b"),
        ("*", "x"),
        ("?", "x"),
        ("[*]", "x"),
        ("", "x"),
        ("x", ""),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .chain([
        (format!("{long}:y"), "z".to_owned()),
        (long.clone(), "y:z".to_owned()),
        (format!("{long}\n"), "y".to_owned()),
        (long.clone(), "\ny".to_owned()),
    ])
    .collect();
    for (a, b) in &pairs {
        assert_eq!(repo.pair(a, b).await, format!("{a}|{b}"), "{a:?} {b:?}");
    }
    assert_eq!(
        repo.loads() as usize,
        pairs.len(),
        "every pair is a key of its own"
    );
    for (a, b) in &pairs {
        assert_eq!(repo.pair(a, b).await, format!("{a}|{b}"), "{a:?} {b:?}");
    }
    assert_eq!(repo.loads() as usize, pairs.len(), "and each is a hit");
}

async fn entries_expire_after_their_ttl(fx: Fixture) {
    let repo = fx.repo();
    repo.title_briefly(1).await;
    repo.title_briefly(1).await;
    assert_eq!(repo.loads(), 1);
    wait_until(
        "the 300ms entry expires",
        Duration::from_secs(5),
        async || fx.cache.get::<Option<String>>("title:1").await.is_none(),
    )
    .await;
    repo.title_briefly(1).await;
    assert_eq!(repo.loads(), 2, "an expired entry is a miss");
}

/// Starts a read of `key` whose loader has "read the database" (returning
/// `"old"`) but does not return until the sender fires; returns once the
/// loader has read.
async fn read_held_open(
    cache: &Cache,
    key: &'static str,
    tags: Vec<String>,
) -> (JoinHandle<String>, oneshot::Sender<()>) {
    read_held_open_with(cache, key, Links::from(tags), false).await
}

/// A read of `key` whose loader reads "old" from the database, reports it
/// has, then waits for the sender before returning it (filed with `links`;
/// inside `refreshing` with `refresh`).
async fn read_held_open_with(
    cache: &Cache,
    key: &'static str,
    links: Links,
    refresh: bool,
) -> (JoinHandle<String>, oneshot::Sender<()>) {
    let (read_done, read_done_rx) = oneshot::channel::<()>();
    let (go_on, go_on_rx) = oneshot::channel::<()>();
    let cache = cache.clone();
    let reader = tokio::spawn(async move {
        let read = cache.get_or_load_tagged(
            key,
            &RACE,
            |_| links,
            || async move {
                let old = "old".to_string(); // read from the database before the write
                read_done.send(()).unwrap();
                go_on_rx.await.unwrap();
                old
            },
        );
        if refresh {
            cache_runtime::refreshing(read).await
        } else {
            read.await
        }
    });
    read_done_rx.await.unwrap();
    (reader, go_on)
}

/// The options of the race cases.
const RACE: CacheOptions = CacheOptions::new("race").ttl(Duration::from_secs(60));

/// The cache-aside race: a reader misses and reads the old row, a writer
/// commits and invalidates, then the reader stores what it read. The fill
/// must be refused (the model test, `model.rs`, shows the race is real:
/// without the refusal it finds stale reads).
async fn a_fill_that_read_before_an_invalidation_is_refused(fx: Fixture) {
    let cache = fx.cache.clone();
    let (reader, go_on) = read_held_open(&cache, "row:1", vec![]).await;
    // The writer commits "new" and invalidates, while the reader holds "old".
    cache.invalidate().key("row:1").await.unwrap();
    go_on.send(()).unwrap();
    assert_eq!(reader.await.unwrap(), "old");
    assert_eq!(
        cache.get::<String>("row:1").await,
        None,
        "the stale value must not be stored"
    );
    assert_eq!(cache.stats().fills_rejected, 1);

    // Tags are covered too: a value whose tag was invalidated meanwhile.
    let (reader, go_on) = read_held_open(&cache, "row:3", vec!["table:rows".to_string()]).await;
    cache.invalidate().tag("table:rows").await.unwrap();
    go_on.send(()).unwrap();
    reader.await.unwrap();
    assert_eq!(cache.get::<String>("row:3").await, None);
    assert_eq!(cache.stats().fills_rejected, 2);

    // Without an invalidation in between, the same held-open read fills.
    let (reader, go_on) = read_held_open(&cache, "row:4", vec!["table:rows".to_string()]).await;
    go_on.send(()).unwrap();
    reader.await.unwrap();
    assert_eq!(cache.get::<String>("row:4").await.as_deref(), Some("old"));
}

/// An entry removed by a tag invalidation refuses every fill whose read
/// came before it, even a fill that does not carry the tag (another caller
/// filing the same key under other tags). On Redis a tag that fits in one
/// step is not marked entry by entry: its set is kept as a tombstone, which
/// fills check (see `INVALIDATE` in `store/redis/scripts.rs`).
async fn a_fill_without_the_tag_is_refused_when_the_tag_removed_its_entry(fx: Fixture) {
    let cache = fx.cache.clone();
    crate::common::fill_tag(&cache, "table:rows", crate::common::BIG_TAG).await;
    let (reader, go_on) = read_held_open(&cache, "row:7", vec![]).await;
    // Meanwhile the key is cached under the tag, and the tag invalidated.
    cache
        .set(
            "row:7",
            &"tagged",
            Some(Duration::from_secs(60)),
            &["table:rows"],
        )
        .await
        .unwrap();
    let report = cache.invalidate().tag("table:rows").await.unwrap();
    assert_eq!(report.removed, crate::common::BIG_TAG as u64 + 1);
    go_on.send(()).unwrap();
    assert_eq!(reader.await.unwrap(), "old");
    assert_eq!(
        cache.get::<String>("row:7").await,
        None,
        "the value read before the tag's invalidation must not be stored"
    );
    assert_eq!(cache.stats().fills_rejected, 1);

    // A read after the invalidation fills, under no tag.
    let (reader, go_on) = read_held_open(&cache, "row:7", vec![]).await;
    go_on.send(()).unwrap();
    reader.await.unwrap();
    assert_eq!(cache.get::<String>("row:7").await.as_deref(), Some("old"));
}

/// A value loading for a key that is not cached yet, read before a pattern
/// delete that matches its key, is refused too: a pattern delete leaves a
/// marker of its own, which every fill checks (before, a pattern marked only
/// the entries `SCAN` found, and this value was stored after the delete).
/// A fill the pattern does not match is stored. Redis's glob: `*`, `?`,
/// classes with ranges and `^`, and values rendered into keys.
async fn a_fill_that_read_before_a_matching_pattern_delete_is_refused(fx: Fixture) {
    let cache = fx.cache.clone();
    let hostile = cache_runtime::render_part("a*[b]?\\c");
    let hostile_key: &'static str = Box::leak(format!("term:{hostile}:1").into_boxed_str());
    let hostile_pattern = format!("term:{}:*", cache_runtime::glob_escape(&hostile));
    for (key, pattern, matches) in [
        ("row:1", "row:*".to_owned(), true),
        ("row:2", "row:?".to_owned(), true),
        ("row:3", "row:[0-4]".to_owned(), true),
        ("row:5", "row:[^5]".to_owned(), false),
        ("row:6", "other:*".to_owned(), false),
        (hostile_key, hostile_pattern, true),
        (hostile_key, "term:a:*".to_owned(), false),
    ] {
        let (reader, go_on) = read_held_open(&cache, key, vec![]).await;
        cache.delete_pattern(&pattern).await.unwrap();
        go_on.send(()).unwrap();
        assert_eq!(reader.await.unwrap(), "old");
        assert_eq!(
            cache.get::<String>(key).await.is_none(),
            matches,
            "{key} read before a delete of {pattern}"
        );
        cache.invalidate().key(key).await.unwrap();
    }
}

/// A reader that starts after an invalidation and finds a load of the key
/// in flight, begun before the invalidation, must not take that load's
/// value. The leader's value is not stored here (`store(false)`), so no
/// refused fill hides the race. On the in-process store the interleaving is
/// exact: a current-thread runtime runs the second reader up to its wait
/// before the leader is released.
async fn a_waiter_that_saw_an_invalidation_does_not_take_an_older_value(fx: Fixture) {
    let cache = fx.cache.clone();
    let (leader, go_on) =
        read_held_open_with(&cache, "row:9", Links::new().store(false), false).await;
    // The writer commits "new" and invalidates; then a reader starts.
    cache.invalidate().key("row:9").await.unwrap();
    let reader = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get_or_load_tagged(
                    "row:9",
                    &RACE,
                    |_| Links::new(),
                    || async { "new".to_string() },
                )
                .await
        }
    });
    for _ in 0..16 {
        tokio::task::yield_now().await; // the reader reaches the flight
    }
    go_on.send(()).unwrap();
    assert_eq!(leader.await.unwrap(), "old");
    assert_eq!(
        reader.await.unwrap(),
        "new",
        "the reader started after the invalidation: the older load is not its answer"
    );
}

/// The same race with an error the leader shares (it was loaded before the
/// row existed): a reader that started after the insert's invalidation gets
/// the row, not the older error.
async fn a_waiter_that_saw_an_invalidation_does_not_take_an_older_error(fx: Fixture) {
    struct Rows {
        cache: Cache,
        calls: std::sync::atomic::AtomicU32,
        read_done: tokio::sync::Notify,
        go_on: tokio::sync::Notify,
    }
    impl Rows {
        #[cache_runtime::cached(cache = self.cache, key = "row")]
        async fn row(&self) -> Result<String, String> {
            use std::sync::atomic::Ordering::SeqCst;
            if self.calls.fetch_add(1, SeqCst) == 0 {
                self.read_done.notify_one();
                self.go_on.notified().await;
                return Err("not found".to_string()); // read before the insert
            }
            Ok("new".to_string())
        }
    }
    let rows = std::sync::Arc::new(Rows {
        cache: fx.cache.clone(),
        calls: Default::default(),
        read_done: Default::default(),
        go_on: Default::default(),
    });
    let leader = tokio::spawn({
        let rows = rows.clone();
        async move { rows.row().await }
    });
    rows.read_done.notified().await;
    fx.cache.invalidate().key("row").await.unwrap(); // the insert's
    let reader = tokio::spawn({
        let rows = rows.clone();
        async move { rows.row().await }
    });
    for _ in 0..16 {
        tokio::task::yield_now().await; // the reader reaches the flight
    }
    rows.go_on.notify_one();
    assert_eq!(leader.await.unwrap(), Err("not found".to_string()));
    assert_eq!(reader.await.unwrap(), Ok("new".to_string()));
}

/// `refreshing` loads and stores over what is cached; a load that read the
/// row before a write's invalidation must not be stored after it.
async fn a_refresh_that_loaded_before_an_invalidation_is_not_stored(fx: Fixture) {
    let cache = fx.cache.clone();
    let load = |value: &'static str| async move { value.to_string() };
    cache
        .get_or_load_tagged("row:8", &RACE, |_| Links::new(), || load("v0"))
        .await;
    let (refresh, go_on) = read_held_open_with(&cache, "row:8", Links::new(), true).await;
    cache.invalidate().key("row:8").await.unwrap(); // the writer returns
    go_on.send(()).unwrap();
    assert_eq!(refresh.await.unwrap(), "old");
    let after = cache
        .get_or_load_tagged("row:8", &RACE, |_| Links::new(), || load("new"))
        .await;
    assert_eq!(after, "new", "the refresh's older value was not stored");
    assert_eq!(cache.stats().fills_rejected, 1);
}

async fn a_value_that_does_not_decode_is_a_miss_and_is_replaced(fx: Fixture) {
    #[derive(serde::Serialize)]
    struct OldPost {
        id: u64,
    }
    let repo = fx.repo();
    // An older version of the type, without the fields the reader needs.
    fx.cache
        .set(
            "post:1",
            &OldPost { id: 1 },
            Some(Duration::from_secs(60)),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(repo.get(1).await.unwrap().title, "post 1");
    assert_eq!(fx.cache.stats().decode_errors, 1);
    assert_eq!(repo.get(1).await.unwrap().title, "post 1");
    assert_eq!(
        repo.loads(),
        1,
        "the undecodable value was replaced by the fill"
    );
}

async fn the_plain_api_matches_the_macros(fx: Fixture) {
    let repo = fx.repo();
    repo.get(1).await.unwrap();
    // The macro stored under the same key the plain API reads.
    let cached: Post = fx.cache.get("post:1").await.expect("the macro's entry");
    assert_eq!(cached.id, 1);
    fx.cache.invalidate().key("post:1").await.unwrap();
    assert_eq!(fx.cache.get::<Post>("post:1").await, None);
    let opts = CacheOptions::new("plain");
    let v: Result<u32, String> = fx.cache.get_or_load("n", &opts, || async { Ok(1) }).await;
    let w: Result<u32, String> = fx.cache.get_or_load("n", &opts, || async { Ok(2) }).await;
    assert_eq!((v, w), (Ok(1), Ok(1)));
    assert_eq!(fx.cache.delete_pattern("n*").await.unwrap(), 1);
}

async fn published_events_follow_the_schema(fx: Fixture) {
    let repo = fx.repo();
    let mut events = fx.cache.local_events();
    let post = repo.create(7, "hello").await.unwrap();
    let event = events.recv().await.unwrap();
    assert_eq!(event.v, 1);
    assert_eq!(event.namespace, fx.cache.namespace());
    assert_eq!(event.event, "post:created");
    assert_eq!(event.entity, "post");
    assert_eq!(event.tags, vec![format!("author:{}", post.author_id)]);
    assert_eq!(event.instance, fx.cache.instance());
    assert!(event.ts > 1_700_000_000_000);
    let json = serde_json::to_value(&event).unwrap();
    for field in [
        "v",
        "namespace",
        "event",
        "entity",
        "keys",
        "tags",
        "patterns",
        "ts",
        "instance",
    ] {
        assert!(json.get(field).is_some(), "missing {field} in {json}");
    }
}

async fn long_keys_and_tags_are_bounded_and_stay_apart(fx: Fixture) {
    let opts = CacheOptions::new("long");
    let body = "x".repeat(10_000);
    // Two keys that differ only past the kept prefix, and a short one.
    let (a, b) = (format!("search:{body}a"), format!("search:{body}b"));
    let tag = format!("query:{body}");
    let load = async |key: &str, value: u32| -> u32 {
        fx.cache
            .get_or_load_tagged(
                key,
                &opts,
                |_| Links::new().tag(tag.clone()),
                || async move { value },
            )
            .await
    };
    assert_eq!(load(&a, 1).await, 1);
    assert_eq!(load(&b, 2).await, 2);
    assert_eq!(load(&a, 99).await, 1, "a hit, and not b's value");
    assert_eq!(load(&b, 99).await, 2, "a hit, and not a's value");
    assert_eq!(fx.cache.stats().hits, 2);

    fx.cache.invalidate().key(a.clone()).await.unwrap();
    assert_eq!(
        fx.cache.get::<u32>(&a).await,
        None,
        "invalidated by its key"
    );
    assert_eq!(fx.cache.get::<u32>(&b).await, Some(2), "b stays");

    assert_eq!(load(&a, 3).await, 3);
    fx.cache.invalidate().tag(tag.clone()).await.unwrap();
    assert_eq!(
        fx.cache.get::<u32>(&a).await,
        None,
        "invalidated by its tag"
    );
    assert_eq!(
        fx.cache.get::<u32>(&b).await,
        None,
        "invalidated by its tag"
    );

    // A pattern on the start of the key still matches a bounded key.
    assert_eq!(load(&a, 4).await, 4);
    assert_eq!(fx.cache.delete_pattern("search:xxx*").await.unwrap(), 1);
    assert_eq!(fx.cache.get::<u32>(&a).await, None);

    // What Redis holds: no name longer than the namespace and the bound.
    if let Some(server) = &fx._server {
        let mut conn = server.conn();
        let names: Vec<String> = ::redis::Commands::scan::<String>(&mut conn)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!names.is_empty());
        for name in names {
            assert!(name.len() < 250, "{} bytes: {name:.80}", name.len());
        }
    }
}
