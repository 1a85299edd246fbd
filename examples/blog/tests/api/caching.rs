//! The cache in the application: a second read is a hit, the seeded
//! database, two instances on one database and one `redis-server`, and a
//! commit that fails.

use super::*;

pub(super) async fn a_second_read_is_a_cache_hit(backend: Backend) {
    let api = Api::new(backend).await;
    let ada = api.register("ada").await;
    api.create_article(&ada, "Hot", &["x"]).await;

    let x_cache = async || {
        let (status, headers, _) = api
            .call_with_headers(Method::GET, "/articles/hot", None, None)
            .await;
        assert_eq!(status, 200);
        headers["x-cache"].to_str().unwrap().to_owned()
    };
    assert_eq!(x_cache().await, "miss", "the first read warms the entries");
    let before = api.state.cache.stats();
    assert_eq!(x_cache().await, "hit");
    let after = api.state.cache.stats();
    // article, author profile, favorites count: all hits, no database read.
    assert_eq!(after.misses, before.misses, "{before:?} -> {after:?}");
    assert!(after.hits >= before.hits + 3, "{before:?} -> {after:?}");

    api.get("/articles", None).await;
    let before = api.state.cache.stats();
    api.get("/articles", None).await;
    let after = api.state.cache.stats();
    assert_eq!(after.misses, before.misses, "{before:?} -> {after:?}");

    // The statistics page shows the same counters, and the creation's
    // invalidations by family.
    let (status, page) = api.get("/_cache/stats", None).await;
    assert_eq!(status, 200);
    assert!(page["stats"]["hits"].as_u64().unwrap() >= after.hits);
    assert!(page["stats"]["misses"].as_u64().unwrap() >= after.misses);
    assert!(
        page["invalidations"]["tags"]["list"].as_u64().unwrap() >= 2,
        "list:all and list:author:<id> at least: {page}"
    );
    assert!(
        page["invalidations"]["keys"]["article"].as_u64().unwrap() >= 1,
        "{page}"
    );

    // The cache's links at /health.
    let health: Value = serde_json::from_str(&api.text("/health").await).unwrap();
    assert!(health["store"].is_string(), "{health}");
    assert_eq!(health["outbox"], 0, "{health}");
    assert_eq!(health["breaker"], "closed", "{health}");

    // Prometheus text at /metrics, by function (other tests of this process
    // count into the same recorder, so only growth is asserted).
    let hits = async || -> f64 {
        let text = api.text("/metrics").await;
        text.lines()
            .filter(|l| l.starts_with("cache_hits_total{") && l.contains(r#"name="by_slug""#))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let before = hits().await;
    api.get("/articles/hot", None).await;
    assert!(hits().await > before, "{}", api.text("/metrics").await);
    let text = api.text("/metrics").await;
    assert!(text.contains("# TYPE cache_load_seconds summary"), "{text}");
    assert!(text.contains("cache_invalidations_total{"), "{text}");
}

pub(super) async fn the_seeded_database_serves_the_api(backend: Backend) {
    let mut config = config(temp_db(backend).await, None);
    config.seed = true;
    let api = Api::start(config).await;
    let (status, body) = api.get("/articles", None).await;
    assert_eq!(status, 200);
    assert!(body["articlesCount"].as_i64().unwrap() >= 3, "{body}");
    let (status, _) = api
        .post(
            "/users/login",
            None,
            json!({"user": {"email": "ada@example.com", "password": "password"}}),
        )
        .await;
    assert_eq!(status, 200);
    // A second start on the same file does not seed again.
    assert!(!blog::db::seed(&api.state).await.unwrap());
}

/// Asserts `check`: at once when the instances have no in-process tier (a
/// write's invalidation is in Redis before the write returns); with tiers,
/// within a bounded wait, since another instance's tier drops its copy when
/// the pub/sub message arrives, a moment after the write returned.
async fn visible(tiered: bool, what: &str, mut check: impl AsyncFnMut() -> bool) {
    if tiered {
        integration_tests::wait_until(what, Duration::from_secs(3), check).await;
    } else {
        assert!(
            check().await,
            "not visible right after the write returned: {what}"
        );
    }
}

/// Two instances on one database and one `redis-server`.
async fn two_instances(backend: Backend, local_ttl: Duration) {
    let tiered = !local_ttl.is_zero();
    let redis = integration_tests::RedisServer::start();
    let database = temp_db(backend).await;
    let mut shared = config(database, Some(redis.url()));
    shared.local_ttl = local_ttl;
    let a = Api::start(shared.clone()).await;
    let b = Api::start(shared).await;
    integration_tests::wait_until(
        "both subscribers listen",
        Duration::from_secs(5),
        async || a.state.cache.listening() && b.state.cache.listening(),
    )
    .await;

    let ada = a.register("ada").await;
    a.create_article(&ada, "Shared", &["both"]).await;
    // B reads (and caches) what A wrote.
    let (status, body) = b.get("/articles/shared", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["article"]["body"], "all of Shared");
    assert_eq!(
        b.get("/articles?tag=both", None).await.1["articlesCount"],
        1
    );

    // A second read on B is a hit: no database read.
    let before = b.state.cache.stats();
    b.get("/articles/shared", None).await;
    let after = b.state.cache.stats();
    assert_eq!(after.misses, before.misses, "{before:?} -> {after:?}");
    assert!(after.hits >= before.hits + 3, "{before:?} -> {after:?}");
    if tiered {
        assert!(
            after.local_hits > before.local_hits,
            "{before:?} -> {after:?}"
        );
    }

    // A writes; B sees it.
    let (status, _) = a
        .put(
            "/articles/shared",
            Some(&ada),
            json!({"article": {"body": "changed on A"}}),
        )
        .await;
    assert_eq!(status, 200);
    visible(tiered, "the article's new body on B", async || {
        b.get("/articles/shared", None).await.1["article"]["body"] == "changed on A"
    })
    .await;

    a.create_article(&ada, "Shared Too", &["both"]).await;
    visible(tiered, "the new article in B's tag list", async || {
        slugs(&b.get("/articles?tag=both", None).await.1) == ["shared-too", "shared"]
    })
    .await;

    let grace = b.register("grace").await;
    a.get("/articles/shared", None).await; // cached on A with no favorites
    b.post("/articles/shared/favorite", Some(&grace), json!({}))
        .await;
    visible(tiered, "B's favorite counted on A", async || {
        a.get("/articles/shared", None).await.1["article"]["favoritesCount"] == 1
    })
    .await;

    // A profile changed on B is seen on A, which had it cached.
    assert_eq!(a.get("/profiles/grace", None).await.1["profile"]["bio"], "");
    b.put("/user", Some(&grace), json!({"user": {"bio": "from B"}}))
        .await;
    visible(tiered, "B's new bio on A", async || {
        a.get("/profiles/grace", None).await.1["profile"]["bio"] == "from B"
    })
    .await;

    // Unfavorite on A, seen in B's count and B's favorited list.
    assert_eq!(
        b.get("/articles?favorited=grace", None).await.1["articlesCount"],
        1
    );
    a.delete("/articles/shared/favorite", Some(&grace)).await;
    visible(tiered, "A's unfavorite on B", async || {
        b.get("/articles/shared", None).await.1["article"]["favoritesCount"] == 0
            && b.get("/articles?favorited=grace", None).await.1["articlesCount"] == 0
    })
    .await;

    // Follow on A: B's profile view (for grace) and grace's feed on B.
    assert_eq!(
        b.get("/profiles/ada", Some(&grace)).await.1["profile"]["following"],
        false
    );
    assert_eq!(
        b.get("/articles/feed", Some(&grace)).await.1["articlesCount"],
        0
    );
    a.post("/profiles/ada/follow", Some(&grace), json!({}))
        .await;
    visible(tiered, "A's follow on B", async || {
        b.get("/profiles/ada", Some(&grace)).await.1["profile"]["following"] == true
            && b.get("/articles/feed", Some(&grace)).await.1["articlesCount"] == 2
    })
    .await;
    a.delete("/profiles/ada/follow", Some(&grace)).await;
    visible(tiered, "A's unfollow on B", async || {
        b.get("/profiles/ada", Some(&grace)).await.1["profile"]["following"] == false
            && b.get("/articles/feed", Some(&grace)).await.1["articlesCount"] == 0
    })
    .await;

    // Comments added and deleted on A, seen in B's comment list.
    assert_eq!(
        b.get("/articles/shared/comments", None).await.1["comments"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let (status, comment) = a
        .post(
            "/articles/shared/comments",
            Some(&grace),
            json!({"comment": {"body": "from A"}}),
        )
        .await;
    assert_eq!(status, 200);
    visible(tiered, "A's comment on B", async || {
        b.get("/articles/shared/comments", None).await.1["comments"][0]["body"] == "from A"
    })
    .await;
    let id = comment["comment"]["id"].clone();
    a.delete(&format!("/articles/shared/comments/{id}"), Some(&grace))
        .await;
    visible(tiered, "A's comment deletion on B", async || {
        b.get("/articles/shared/comments", None).await.1["comments"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })
    .await;

    a.delete("/articles/shared", Some(&ada)).await;
    visible(tiered, "the deletion on B", async || {
        b.get("/articles/shared", None).await.0 == 404
            && b.get("/articles?tag=both", None).await.1["articlesCount"] == 1
    })
    .await;
}

/// Without in-process tiers, a write on one instance is visible on the
/// other as soon as it returned.
pub(super) async fn two_instances_on_redis_read_each_others_writes_at_once(backend: Backend) {
    two_instances(backend, Duration::ZERO).await;
}

/// With in-process tiers (as `REDIS_URL` configures the application), the
/// second read is answered from the tier, and another instance's write
/// reaches it through pub/sub.
pub(super) async fn two_instances_with_tiers_share_redis_and_the_database(backend: Backend) {
    two_instances(backend, Duration::from_secs(30)).await;
}

/// A write whose transaction fails at the commit invalidates nothing: the
/// invalidations of `Articles::create` are held by `in_transaction` until
/// the commit, and dropped with the rollback. (The articles table's foreign
/// key to its author is made deferred here, so the insert succeeds and the
/// commit fails.)
pub(super) async fn a_failed_commit_invalidates_nothing(backend: Backend) {
    let database = temp_db(backend).await;
    let pool = blog::db::connect(&database).await.unwrap();
    match backend {
        Backend::Sqlite => {
            sqlx::query(
                "CREATE TABLE articles (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    slug TEXT NOT NULL UNIQUE,
                    title TEXT NOT NULL,
                    description TEXT NOT NULL,
                    body TEXT NOT NULL,
                    author_id INTEGER NOT NULL REFERENCES users(id) DEFERRABLE INITIALLY DEFERRED,
                    created_at TEXT NOT NULL,
                    updated_at TEXT NOT NULL
                )",
            )
            .execute(&pool)
            .await
            .unwrap();
        }
        Backend::Postgres => {
            blog::db::migrate(&pool).await.unwrap();
            sqlx::query(
                "ALTER TABLE articles ALTER CONSTRAINT articles_author_id_fkey \
                 DEFERRABLE INITIALLY DEFERRED",
            )
            .execute(&pool)
            .await
            .unwrap();
        }
    }
    pool.close().await;
    let api = Api::start(config(database, None)).await;
    let ada = api.register("ada").await;
    api.create_article(&ada, "Kept", &["t"]).await;
    assert_eq!(api.get("/articles", None).await.1["articlesCount"], 1); // cached now
    let cached_page = async || {
        api.state
            .cache
            .get::<blog::repo::Page>("articles:all:20:0")
            .await
    };
    assert!(cached_page().await.is_some());

    let before = api.state.cache.stats();
    let new = blog::repo::NewArticle {
        title: "Orphan".into(),
        description: "no such author".into(),
        body: "fails at the commit".into(),
        tag_list: vec!["t".into()],
    };
    let failed = api.state.articles.create(999_999, &new).await;
    assert!(failed.is_err(), "the commit fails: {failed:?}");
    let after = api.state.cache.stats();
    assert_eq!(
        after.invalidations, before.invalidations,
        "nothing was invalidated"
    );
    assert!(
        cached_page().await.is_some(),
        "the list page is still cached"
    );
    assert_eq!(api.get("/articles", None).await.1["articlesCount"], 1);
    assert_eq!(api.get("/articles/orphan", None).await.0, 404);

    // The same create for a real author commits and invalidates.
    let (_, me) = api.get("/user", Some(&ada)).await;
    assert_eq!(me["user"]["username"], "ada");
    let ada_id = api
        .state
        .users
        .profile_by_username("ada")
        .await
        .unwrap()
        .unwrap()
        .id;
    api.state.articles.create(ada_id, &new).await.unwrap();
    assert!(cached_page().await.is_none());
    assert_eq!(api.get("/articles", None).await.1["articlesCount"], 2);
}
