//! Dependency cascades: invalidating an entry removes the entries that
//! depend on it, transitively, without looping on cycles, and a dependent
//! that read before its dependency was invalidated is never stored.

use std::sync::atomic::{AtomicU32, Ordering};

use cache_runtime::{Cache, CacheOptions, Links, cached, invalidates};
use tokio::sync::oneshot;

use crate::common::Fixture;

crate::common::on_every_store!(
    a_dependent_goes_with_its_dependency,
    cascades_are_transitive,
    a_cycle_ends,
    a_tag_invalidation_cascades,
    a_big_tag_invalidation_cascades,
    a_pattern_delete_cascades,
    a_dependent_that_read_before_the_invalidation_is_not_stored,
    a_dependent_two_levels_down_is_not_stored_either,
    a_dependent_of_an_entry_its_tag_removed_is_not_stored,
    a_chain_holds_when_its_middle_expired,
    a_value_built_from_a_refused_fill_is_refused,
);

const OPTS: CacheOptions = CacheOptions::new("cascade");

/// Caches `value` under `key`, depending on `deps`.
async fn put(cache: &Cache, key: &str, deps: &[&str], value: u32) {
    let links = deps
        .iter()
        .fold(Links::new(), |links, dep| links.depends_on(*dep));
    let got: u32 = cache
        .get_or_load_tagged(key, &OPTS, |_| links, || async { value })
        .await;
    assert_eq!(got, value);
    assert_eq!(cache.get::<u32>(key).await, Some(value), "{key} is cached");
}

async fn cached_keys(cache: &Cache, keys: &[&str]) -> Vec<String> {
    let mut present = Vec::new();
    for key in keys {
        if cache.get::<u32>(key).await.is_some() {
            present.push((*key).to_owned());
        }
    }
    present
}

/// An author, and a profile page built from the author (annotated the way a
/// repository would be).
struct Profiles {
    cache: Cache,
    loads: AtomicU32,
}

impl Profiles {
    #[cached(cache = self.cache, key = "author:{id}", ttl = 60)]
    async fn author(&self, id: u64) -> String {
        self.loads.fetch_add(1, Ordering::SeqCst);
        format!("author {id}")
    }

    #[cached(cache = self.cache, key = "profile:{id}", ttl = 60, depends_on = ["author:{id}"])]
    async fn profile(&self, id: u64) -> String {
        self.loads.fetch_add(1, Ordering::SeqCst);
        format!("profile of {}", self.author(id).await)
    }

    #[invalidates(cache = self.cache, keys = ["author:{id}"])]
    async fn rename(&self, id: u64) -> Result<(), String> {
        let _ = id;
        Ok(())
    }
}

async fn a_dependent_goes_with_its_dependency(fx: Fixture) {
    let repo = Profiles {
        cache: fx.cache.clone(),
        loads: AtomicU32::new(0),
    };
    assert_eq!(repo.profile(7).await, "profile of author 7");
    assert_eq!(repo.profile(8).await, "profile of author 8");
    assert_eq!(repo.loads.load(Ordering::SeqCst), 4);
    repo.profile(7).await;
    assert_eq!(repo.loads.load(Ordering::SeqCst), 4, "a hit");

    repo.rename(7).await.unwrap();
    repo.profile(7).await;
    assert_eq!(
        repo.loads.load(Ordering::SeqCst),
        6,
        "the profile went with the author it depends on, and both reloaded"
    );
    repo.profile(8).await;
    assert_eq!(
        repo.loads.load(Ordering::SeqCst),
        6,
        "another author's profile stays"
    );
}

async fn cascades_are_transitive(fx: Fixture) {
    let cache = &fx.cache;
    put(cache, "a", &[], 1).await;
    put(cache, "b", &["a"], 2).await;
    put(cache, "c", &["b"], 3).await;
    put(cache, "d", &["c"], 4).await;
    put(cache, "other", &["x"], 5).await;
    let report = cache.invalidate().key("a").await.unwrap();
    assert_eq!(report.removed, 4, "a, and b, c, d through the chain");
    assert_eq!(
        cached_keys(cache, &["a", "b", "c", "d", "other"]).await,
        ["other"]
    );

    // Invalidating the middle of a chain leaves what is above it.
    put(cache, "a", &[], 1).await;
    put(cache, "b", &["a"], 2).await;
    put(cache, "c", &["b"], 3).await;
    cache.invalidate().key("b").await.unwrap();
    assert_eq!(cached_keys(cache, &["a", "b", "c"]).await, ["a"]);
}

async fn a_cycle_ends(fx: Fixture) {
    let cache = &fx.cache;
    put(cache, "x", &["z"], 1).await;
    put(cache, "y", &["x"], 2).await;
    put(cache, "z", &["y"], 3).await;
    put(cache, "self", &["self"], 4).await;
    let report = cache.invalidate().key("y").await.unwrap();
    assert_eq!(report.removed, 3, "each member of the cycle once");
    assert!(cached_keys(cache, &["x", "y", "z"]).await.is_empty());
    let report = cache.invalidate().key("self").await.unwrap();
    assert_eq!(report.removed, 1);
}

async fn a_tag_invalidation_cascades(fx: Fixture) {
    let cache = &fx.cache;
    let team: u32 = cache
        .get_or_load_tagged(
            "team-page:1",
            &OPTS,
            |_| vec!["team:1".to_owned()],
            || async { 1 },
        )
        .await;
    assert_eq!(team, 1);
    put(cache, "dashboard:1", &["team-page:1"], 2).await;
    put(cache, "home", &["dashboard:1"], 3).await;
    let report = cache.invalidate().tag("team:1").await.unwrap();
    assert_eq!(report.removed, 3);
    assert!(
        cached_keys(cache, &["team-page:1", "dashboard:1", "home"])
            .await
            .is_empty()
    );
}

/// Caches `row` in the tag `rows`, big enough to be removed whole (on
/// Redis, as a tombstone).
async fn row_in_a_big_tag(cache: &Cache) {
    crate::common::fill_tag(cache, "rows", crate::common::BIG_TAG).await;
    let row: u32 = cache
        .get_or_load_tagged("row", &OPTS, |_| Links::new().tag("rows"), || async { 1 })
        .await;
    assert_eq!(row, 1);
}

/// A tag big enough to be removed whole (on Redis, as a tombstone) still
/// walks the dependents of its members, in a namespace that had none until
/// the last fills (on Redis, the first fill with a dependency clears the
/// namespace's "no dependents" flag).
async fn a_big_tag_invalidation_cascades(fx: Fixture) {
    let cache = &fx.cache;
    row_in_a_big_tag(cache).await;
    put(cache, "summary", &["row"], 2).await;
    put(cache, "page", &["summary"], 3).await;
    let report = cache.invalidate().tag("rows").await.unwrap();
    assert_eq!(report.removed, crate::common::BIG_TAG as u64 + 3);
    assert!(
        cached_keys(cache, &["row", "summary", "page"])
            .await
            .is_empty()
    );
}

/// Calls of `command` the server has counted.
fn calls(server: &integration_tests::RedisServer, command: &str) -> u64 {
    let stats: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.conn())
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// On Redis, a namespace no entry was filled with dependencies in (in this
/// epoch) is not walked for dependents: a big tag's invalidation checks no
/// dependents set (`EXISTS`), a key's pops none (`ZPOPMIN`). Once an entry
/// is filled with a dependency, both walk again.
#[tokio::test]
async fn a_namespace_without_dependencies_is_not_walked_for_them() {
    let server = integration_tests::RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .namespace("nodeps")
        .build()
        .unwrap();
    let invalidate_tag = async |cache: &Cache| {
        crate::common::fill_tag(cache, "rows", crate::common::BIG_TAG).await;
        let before = calls(&server, "exists");
        let report = cache.invalidate().tag("rows").await.unwrap();
        assert_eq!(report.removed, crate::common::BIG_TAG as u64);
        calls(&server, "exists") - before
    };
    let invalidate_key = async |cache: &Cache| {
        put(cache, "row", &[], 1).await;
        let before = calls(&server, "zpopmin");
        cache.invalidate().key("row").await.unwrap();
        calls(&server, "zpopmin") - before
    };
    assert_eq!(invalidate_tag(&cache).await, 0, "no dependents set checked");
    assert_eq!(invalidate_key(&cache).await, 0, "no dependents set popped");

    put(&cache, "other", &[], 1).await;
    put(&cache, "summary", &["other"], 2).await;
    assert!(
        invalidate_tag(&cache).await > 0,
        "the dependents sets are checked"
    );
    assert!(
        invalidate_key(&cache).await > 0,
        "the dependents set is popped"
    );
}

async fn a_pattern_delete_cascades(fx: Fixture) {
    let cache = &fx.cache;
    put(cache, "author:1", &[], 1).await;
    put(cache, "author:2", &[], 2).await;
    put(cache, "feed:1", &["author:1"], 3).await;
    put(cache, "feed:2", &["author:2"], 4).await;
    put(cache, "stats", &[], 5).await;
    let removed = cache.delete_pattern("author:*").await.unwrap();
    assert_eq!(removed, 4, "two authors and the feeds depending on them");
    assert_eq!(
        cached_keys(
            cache,
            &["author:1", "author:2", "feed:1", "feed:2", "stats"]
        )
        .await,
        ["stats"]
    );
}

/// Reads `key` (depending on `deps`) with a loader that waits for `go`,
/// returning the old value it read before waiting.
async fn start_slow_read(
    cache: &Cache,
    key: &'static str,
    deps: &'static [&'static str],
) -> (
    oneshot::Sender<()>,
    oneshot::Receiver<()>,
    tokio::task::JoinHandle<u32>,
) {
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (read_tx, read_rx) = oneshot::channel::<()>();
    let cache = cache.clone();
    let task = tokio::spawn(async move {
        let links = deps
            .iter()
            .fold(Links::new(), |links, dep| links.depends_on(*dep));
        cache
            .get_or_load_tagged(
                key,
                &OPTS,
                |_| links,
                || async move {
                    // The loader has read the old row.
                    read_tx.send(()).unwrap();
                    go_rx.await.unwrap();
                    1
                },
            )
            .await
    });
    (go_tx, read_rx, task)
}

async fn a_dependent_that_read_before_the_invalidation_is_not_stored(fx: Fixture) {
    let cache = &fx.cache;
    let (go, read, task) = start_slow_read(cache, "page", &["row"]).await;
    read.await.unwrap();
    // The row changes and is invalidated while the page's loader holds the
    // old row. The row itself was never cached.
    cache.invalidate().key("row").await.unwrap();
    go.send(()).unwrap();
    assert_eq!(task.await.unwrap(), 1, "the caller gets what it loaded");
    assert_eq!(
        cache.get::<u32>("page").await,
        None,
        "but the stale page is not stored"
    );
    assert_eq!(cache.stats().fills_rejected, 1);
}

/// A dependent whose dependency is removed by a tag invalidation while the
/// dependent loads (it read the old dependency) is not stored: on Redis the
/// dependency gets no marker of its own, and the fill finds it in the tag's
/// tombstone.
async fn a_dependent_of_an_entry_its_tag_removed_is_not_stored(fx: Fixture) {
    let cache = &fx.cache;
    row_in_a_big_tag(cache).await;
    let (go, read, task) = start_slow_read(cache, "summary", &["row"]).await;
    read.await.unwrap();
    let report = cache.invalidate().tag("rows").await.unwrap();
    assert_eq!(report.removed, crate::common::BIG_TAG as u64 + 1);
    go.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(cache.get::<u32>("summary").await, None);

    // Read after the invalidation, it is stored.
    put(cache, "summary", &["row"], 2).await;
}

async fn a_dependent_two_levels_down_is_not_stored_either(fx: Fixture) {
    let cache = &fx.cache;
    put(cache, "row", &[], 1).await;
    put(cache, "summary", &["row"], 2).await;
    let (go, read, task) = start_slow_read(cache, "page", &["summary"]).await;
    read.await.unwrap();
    // Invalidating the row removes the summary by cascade: the page, which
    // depends on the summary, read before that and must not be stored.
    cache.invalidate().key("row").await.unwrap();
    go.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(cache.get::<u32>("page").await, None);
    assert_eq!(cache.get::<u32>("summary").await, None);
    assert_eq!(cache.stats().fills_rejected, 1);
}

#[tokio::test]
async fn a_cascade_is_one_round_trip_on_redis() {
    let crate::common::Counted {
        server: _server,
        proxy,
        cache,
    } = crate::common::Counted::start("cascade-rt").await;
    // Warm up: connection and script loading.
    put(&cache, "warm", &[], 0).await;
    cache.invalidate().key("warm").await.unwrap();

    put(&cache, "a", &[], 1).await;
    for i in 0..20 {
        let key: &'static str = Box::leak(format!("b{i}").into_boxed_str());
        put(&cache, key, &["a"], i).await;
        let leaf: &'static str = Box::leak(format!("c{i}").into_boxed_str());
        put(&cache, leaf, &[key], i).await;
    }
    let before = proxy.requests();
    let report = cache.invalidate().key("a").await.unwrap();
    assert_eq!(report.removed, 41);
    assert_eq!(
        proxy.requests() - before,
        1,
        "a two-level cascade of 40 dependents is one round trip"
    );
}

async fn a_chain_holds_when_its_middle_expired(fx: Fixture) {
    const SHORT: CacheOptions = CacheOptions::new("short")
        .ttl(std::time::Duration::from_millis(300))
        .jitter(0.0);
    let cache = &fx.cache;
    put(cache, "row", &[], 1).await;
    let summary: u32 = cache
        .get_or_load_tagged(
            "summary",
            &SHORT,
            |_| Links::new().depends_on("row"),
            || async { 2 },
        )
        .await;
    assert_eq!(summary, 2);
    put(cache, "page", &["summary"], 3).await;
    integration_tests::wait_until(
        "the summary expires",
        std::time::Duration::from_secs(5),
        async || cache.get::<u32>("summary").await.is_none(),
    )
    .await;
    cache.invalidate().key("row").await.unwrap();
    assert_eq!(
        cache.get::<u32>("page").await,
        None,
        "the page depends on the row through the expired summary"
    );
}

async fn a_value_built_from_a_refused_fill_is_refused(fx: Fixture) {
    let cache = fx.cache.clone();
    let (read_tx, read_rx) = oneshot::channel::<()>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let page = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get_or_load_tagged(
                    "page",
                    &OPTS,
                    |_| Links::new().depends_on("summary"),
                    || async {
                        // The page is built from the summary, loaded here.
                        let summary: u32 = cache
                            .get_or_load_tagged(
                                "summary",
                                &OPTS,
                                |_| Links::new().depends_on("row"),
                                || async {
                                    read_tx.send(()).unwrap();
                                    go_rx.await.unwrap();
                                    10
                                },
                            )
                            .await;
                        summary + 1
                    },
                )
                .await
        }
    });
    read_rx.await.unwrap();
    // The row changes while both loaders hold its old value.
    cache.invalidate().key("row").await.unwrap();
    go_tx.send(()).unwrap();
    assert_eq!(page.await.unwrap(), 11);
    assert_eq!(
        cache.get::<u32>("summary").await,
        None,
        "the summary is refused"
    );
    assert_eq!(
        cache.get::<u32>("page").await,
        None,
        "and so is the page built from it"
    );
    assert_eq!(cache.stats().fills_rejected, 2);
}
