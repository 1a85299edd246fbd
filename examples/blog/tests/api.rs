//! The Conduit API over real HTTP: each test starts the application on a
//! free loopback port with its own database, and talks to it with a small
//! hyper client. The last tests run two instances on one database and one
//! `redis-server`.
//!
//! Every scenario runs twice: in `sqlite::` on a SQLite file of its own, and
//! in `postgres::` in a schema of its own (created, then dropped with
//! `CASCADE`) on the PostgreSQL server `DATABASE_URL` names; without one the
//! `postgres::` tests print a notice and pass.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, Request, header};
use blog::db::Backend;
use blog::{AppState, Config};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

static FILES: AtomicU64 = AtomicU64::new(0);

/// `DATABASE_URL` when it names a PostgreSQL server.
fn postgres_url() -> Option<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| Backend::of_url(url) == Backend::Postgres)
}

/// A fresh database: a new SQLite file, or a new schema on the PostgreSQL
/// server (the URL sets it as the connections' `search_path`).
async fn temp_db(backend: Backend) -> String {
    let n = FILES.fetch_add(1, Ordering::Relaxed);
    match backend {
        Backend::Sqlite => {
            let path = std::env::temp_dir().join(format!("blog-api-{}-{n}.db", std::process::id()));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            format!("sqlite://{}", path.display())
        }
        Backend::Postgres => {
            use sqlx::Connection;
            let server = postgres_url().expect("DATABASE_URL names a PostgreSQL server");
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let schema = format!("blog_test_{}_{n}_{nanos}", std::process::id());
            let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
            let separator = if server.contains('?') { '&' } else { '?' };
            format!("{server}{separator}options=-c%20search_path%3D{schema}")
        }
    }
}

/// Removes a database made by [`temp_db`]: the SQLite files (unlinking open
/// files is fine on Unix), or the schema with everything in it.
fn drop_db(database: &str) {
    if let Some(path) = database.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    } else if let Some((_, schema)) = database.rsplit_once("search_path%3D") {
        let statement = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
        let server = postgres_url().expect("DATABASE_URL names a PostgreSQL server");
        // Drop runs inside the test's runtime: block a thread of our own.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    use sqlx::Connection;
                    let mut conn = sqlx::PgConnection::connect(&server).await?;
                    sqlx::query(&statement).execute(&mut conn).await?;
                    conn.close().await
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the schema {schema}: {dropped:?}");
        }
    }
}

fn config(database_url: String, redis_url: Option<String>) -> Config {
    Config {
        database_url,
        redis_url,
        local_ttl: Duration::from_secs(30),
        jwt_secret: "test-secret".into(),
        addr: "127.0.0.1:0".into(),
        seed: false,
    }
}

/// A running instance and a client for it.
struct Api {
    base: String,
    database: String,
    state: AppState,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Removes the test's database.
impl Drop for Api {
    fn drop(&mut self) {
        drop_db(&self.database);
    }
}

impl Api {
    async fn start(config: Config) -> Api {
        let state = blog::start(&config).await.expect("the application starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = blog::app(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Api {
            base: format!("http://{addr}/api"),
            database: config.database_url.clone(),
            state,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn new(backend: Backend) -> Api {
        Api::start(config(temp_db(backend).await, None)).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, _, value) = self.call_with_headers(method, path, token, body).await;
        (status, value)
    }

    async fn call_with_headers(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, axum::http::HeaderMap, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Token {token}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let response = self
            .client
            .request(request.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, headers, value)
    }

    /// A page outside `/api`, as text.
    async fn text(&self, path: &str) -> String {
        let uri = format!("{}{path}", self.base.trim_end_matches("/api"));
        let response = self
            .client
            .request(Request::get(uri).body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call(Method::PUT, path, token, Some(body)).await
    }

    async fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(Method::DELETE, path, token, None).await
    }

    /// Registers `name` (password `secret-<name>`) and returns the token.
    async fn register(&self, name: &str) -> String {
        let (status, body) = self
            .post(
                "/users",
                None,
                json!({"user": {"username": name, "email": format!("{name}@example.com"), "password": format!("secret-{name}")}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["user"]["token"].as_str().unwrap().to_string()
    }

    async fn create_article(&self, token: &str, title: &str, tags: &[&str]) -> Value {
        let (status, body) = self
            .post(
                "/articles",
                Some(token),
                json!({"article": {"title": title, "description": format!("about {title}"), "body": format!("all of {title}"), "tagList": tags}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["article"].clone()
    }
}

fn slugs(body: &Value) -> Vec<String> {
    body["articles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["slug"].as_str().unwrap().to_string())
        .collect()
}

fn is_iso_datetime(text: &str) -> bool {
    let b = text.as_bytes();
    text.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && text.ends_with('Z')
}

async fn register_login_and_the_current_user(backend: Backend) {
    let api = Api::new(backend).await;
    let token = api.register("ada").await;

    let (status, body) = api.get("/user", Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"]["username"], "ada");
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["user"]["token"], token.as_str());
    assert_eq!(api.get("/user", None).await.0, 401);
    assert_eq!(api.get("/user", Some("not.a.token")).await.0, 401);
    let (status, _) = api.call(Method::GET, "/user", None, None).await;
    assert_eq!(status, 401);

    // Taken names and addresses, blank fields, malformed bodies: 422.
    let (status, body) = api
        .post(
            "/users",
            None,
            json!({"user": {"username": "ada", "email": "other@example.com", "password": "x"}}),
        )
        .await;
    assert_eq!(
        (status, body["errors"]["username"][0].as_str()),
        (422, Some("has already been taken"))
    );
    let (status, body) = api
        .post(
            "/users",
            None,
            json!({"user": {"username": "other", "email": "ada@example.com", "password": "x"}}),
        )
        .await;
    assert_eq!(
        (status, body["errors"]["email"][0].as_str()),
        (422, Some("has already been taken"))
    );
    let (status, body) = api
        .post(
            "/users",
            None,
            json!({"user": {"username": "", "email": "e@example.com", "password": "x"}}),
        )
        .await;
    assert_eq!(
        (status, body["errors"]["username"][0].as_str()),
        (422, Some("can't be blank"))
    );
    let (status, body) = api.post("/users", None, json!({"nothing": 1})).await;
    assert_eq!(status, 422);
    assert!(body["errors"]["body"].is_array(), "{body}");

    // Login.
    let (status, body) = api
        .post(
            "/users/login",
            None,
            json!({"user": {"email": "ada@example.com", "password": "secret-ada"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let login_token = body["user"]["token"].as_str().unwrap().to_string();
    assert_eq!(api.get("/user", Some(&login_token)).await.0, 200);
    let (status, _) = api
        .post(
            "/users/login",
            None,
            json!({"user": {"email": "ada@example.com", "password": "wrong"}}),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = api
        .post(
            "/users/login",
            None,
            json!({"user": {"email": "nobody@example.com", "password": "x"}}),
        )
        .await;
    assert_eq!(status, 401);

    // Update: the profile under the old name goes, the new one appears.
    assert_eq!(api.get("/profiles/ada", None).await.0, 200);
    assert_eq!(api.get("/profiles/lovelace", None).await.0, 404); // cached as None
    let (status, body) = api
        .put(
            "/user",
            Some(&token),
            json!({"user": {"username": "lovelace", "bio": "Notes on notes", "image": "https://example.com/a.png", "password": "new-secret"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["username"], "lovelace");
    assert_eq!(body["user"]["bio"], "Notes on notes");
    assert_eq!(api.get("/profiles/ada", None).await.0, 404);
    let (status, body) = api.get("/profiles/lovelace", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["profile"]["bio"], "Notes on notes");
    assert_eq!(body["profile"]["image"], "https://example.com/a.png");
    assert_eq!(body["profile"]["following"], false);
    let (status, _) = api
        .post(
            "/users/login",
            None,
            json!({"user": {"email": "ada@example.com", "password": "new-secret"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        api.put("/user", None, json!({"user": {"bio": "x"}}))
            .await
            .0,
        401
    );
    let (status, body) = api.put("/user", Some(&token), json!({"user": {}})).await;
    assert_eq!(status, 422, "{body}");
    api.register("grace").await;
    let (status, body) = api
        .put(
            "/user",
            Some(&token),
            json!({"user": {"username": "grace"}}),
        )
        .await;
    assert_eq!(
        (status, body["errors"]["username"][0].as_str()),
        (422, Some("has already been taken"))
    );
}

async fn articles_create_get_list_filter_page_update_delete(backend: Backend) {
    let api = Api::new(backend).await;
    let ada = api.register("ada").await;
    let grace = api.register("grace").await;

    let first = api
        .create_article(&ada, "First Steps", &["rust", "beginners"])
        .await;
    assert_eq!(first["slug"], "first-steps");
    assert_eq!(
        first["tagList"],
        json!(["beginners", "rust"]),
        "tagList is sorted"
    );
    assert_eq!(first["author"]["username"], "ada");
    assert_eq!(first["favorited"], false);
    assert_eq!(first["favoritesCount"], 0);
    assert!(
        is_iso_datetime(first["createdAt"].as_str().unwrap()),
        "{first}"
    );
    assert!(
        is_iso_datetime(first["updatedAt"].as_str().unwrap()),
        "{first}"
    );
    let second = api
        .create_article(&grace, "Second Thoughts", &["rust"])
        .await;
    let third = api.create_article(&ada, "Third Time", &["caching"]).await;
    let again = api.create_article(&grace, "First Steps", &[]).await;
    assert_ne!(again["slug"], first["slug"], "slugs are unique");

    // Get.
    let (status, body) = api.get("/articles/first-steps", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["article"]["title"], "First Steps");
    assert_eq!(body["article"]["body"], "all of First Steps");
    assert_eq!(api.get("/articles/no-such-article", None).await.0, 404);

    // The global list: newest first, total before paging.
    let (status, body) = api.get("/articles", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["articlesCount"], 4);
    let newest_first = vec![
        again["slug"].as_str().unwrap().to_string(),
        "third-time".to_string(),
        "second-thoughts".to_string(),
        "first-steps".to_string(),
    ];
    assert_eq!(slugs(&body), newest_first);
    let (_, body) = api.get("/articles?limit=2&offset=1", None).await;
    assert_eq!(body["articlesCount"], 4);
    assert_eq!(slugs(&body), newest_first[1..3]);
    let (_, body) = api.get("/articles?limit=2&offset=10", None).await;
    assert_eq!(
        (body["articlesCount"].as_i64(), slugs(&body).len()),
        (Some(4), 0)
    );
    assert_eq!(api.get("/articles?limit=0", None).await.0, 422);
    assert_eq!(api.get("/articles?offset=-1", None).await.0, 422);

    // Filters.
    let (_, body) = api.get("/articles?tag=rust", None).await;
    assert_eq!(slugs(&body), ["second-thoughts", "first-steps"]);
    assert_eq!(body["articlesCount"], 2);
    let (_, body) = api.get("/articles?author=ada", None).await;
    assert_eq!(slugs(&body), ["third-time", "first-steps"]);
    let (_, body) = api.get("/articles?author=ada&tag=rust", None).await;
    assert_eq!(slugs(&body), ["first-steps"]);
    let (_, body) = api.get("/articles?author=nobody", None).await;
    assert_eq!(
        (body["articlesCount"].as_i64(), slugs(&body).len()),
        (Some(0), 0)
    );
    let (_, body) = api.get("/articles?tag=nothing", None).await;
    assert_eq!(body["articlesCount"], 0);

    // Tags.
    let (status, body) = api.get("/tags", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["tags"], json!(["beginners", "caching", "rust"]));

    // A new article shows up in the cached lists at once.
    api.create_article(&ada, "Fourth Wall", &["rust", "zen"])
        .await;
    let (_, body) = api.get("/articles?tag=rust", None).await;
    assert_eq!(
        slugs(&body),
        ["fourth-wall", "second-thoughts", "first-steps"]
    );
    let (_, body) = api.get("/articles?author=ada", None).await;
    assert_eq!(body["articlesCount"], 3);
    let (_, body) = api.get("/articles", None).await;
    assert_eq!(body["articlesCount"], 5);
    assert_eq!(
        api.get("/tags", None).await.1["tags"],
        json!(["beginners", "caching", "rust", "zen"])
    );

    // Create: auth and validation.
    let new = json!({"article": {"title": "T", "description": "D", "body": "B"}});
    assert_eq!(api.post("/articles", None, new.clone()).await.0, 401);
    let (status, body) = api
        .post(
            "/articles",
            Some(&ada),
            json!({"article": {"title": " ", "description": "D", "body": "B"}}),
        )
        .await;
    assert_eq!(
        (status, body["errors"]["title"][0].as_str()),
        (422, Some("can't be blank"))
    );
    let (status, body) = api
        .post("/articles", Some(&ada), json!({"article": {"title": "T"}}))
        .await;
    assert_eq!(
        (status, body["errors"]["description"][0].as_str()),
        (422, Some("can't be blank"))
    );

    // Update: the author only; readers see the change at once.
    let change = json!({"article": {"body": "rewritten", "title": "First Steps, Revised"}});
    assert_eq!(
        api.put("/articles/first-steps", None, change.clone())
            .await
            .0,
        401
    );
    assert_eq!(
        api.put("/articles/first-steps", Some(&grace), change.clone())
            .await
            .0,
        403
    );
    assert_eq!(
        api.put("/articles/no-such-article", Some(&ada), change.clone())
            .await
            .0,
        404
    );
    let (status, body) = api.put("/articles/first-steps", Some(&ada), change).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["article"]["body"], "rewritten");
    assert_eq!(body["article"]["title"], "First Steps, Revised");
    assert_eq!(
        api.get("/articles/first-steps", None).await.1["article"]["body"],
        "rewritten"
    );
    let (_, body) = api.get("/articles?tag=rust", None).await;
    assert_eq!(body["articles"][2]["title"], "First Steps, Revised");

    // Delete: the author only; gone from the article, the lists and the tags.
    assert_eq!(api.delete("/articles/third-time", None).await.0, 401);
    assert_eq!(
        api.delete("/articles/third-time", Some(&grace)).await.0,
        403
    );
    let (status, _) = api.delete("/articles/third-time", Some(&ada)).await;
    assert_eq!(status, 204);
    assert_eq!(api.get("/articles/third-time", None).await.0, 404);
    assert_eq!(api.delete("/articles/third-time", Some(&ada)).await.0, 404);
    let (_, body) = api.get("/articles?author=ada", None).await;
    assert_eq!(slugs(&body), ["fourth-wall", "first-steps"]);
    assert_eq!(api.get("/articles", None).await.1["articlesCount"], 4);
    assert_eq!(
        api.get("/articles?tag=caching", None).await.1["articlesCount"],
        0
    );
    assert_eq!(
        api.get("/tags", None).await.1["tags"],
        json!(["beginners", "rust", "zen"])
    );
    let _ = (second, third);
}

async fn favorites_are_per_viewer_and_counted(backend: Backend) {
    let api = Api::new(backend).await;
    let ada = api.register("ada").await;
    let grace = api.register("grace").await;
    let linus = api.register("linus").await;
    api.create_article(&ada, "Popular", &["hits"]).await;
    api.create_article(&ada, "Quiet", &[]).await;

    assert_eq!(
        api.post("/articles/popular/favorite", None, json!({}))
            .await
            .0,
        401
    );
    assert_eq!(
        api.post("/articles/nothing/favorite", Some(&grace), json!({}))
            .await
            .0,
        404
    );
    let (status, body) = api
        .post("/articles/popular/favorite", Some(&grace), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["article"]["favorited"].as_bool(),
            body["article"]["favoritesCount"].as_i64()
        ),
        (Some(true), Some(1))
    );
    api.post("/articles/popular/favorite", Some(&linus), json!({}))
        .await;
    // Favoriting twice counts once.
    api.post("/articles/popular/favorite", Some(&linus), json!({}))
        .await;

    // The viewer's flag; the shared count.
    let (_, body) = api.get("/articles/popular", Some(&grace)).await;
    assert_eq!(
        (
            body["article"]["favorited"].as_bool(),
            body["article"]["favoritesCount"].as_i64()
        ),
        (Some(true), Some(2))
    );
    let (_, body) = api.get("/articles/popular", None).await;
    assert_eq!(
        (
            body["article"]["favorited"].as_bool(),
            body["article"]["favoritesCount"].as_i64()
        ),
        (Some(false), Some(2))
    );
    let (_, body) = api.get("/articles/popular", Some(&ada)).await;
    assert_eq!(body["article"]["favorited"], false);
    let (_, body) = api.get("/articles", Some(&grace)).await;
    assert_eq!(body["articles"][1]["favorited"], true);
    assert_eq!(body["articles"][0]["favorited"], false);
    let (_, body) = api.get("/articles", None).await;
    assert_eq!(body["articles"][1]["favorited"], false);

    // Filter by who favorited.
    let (_, body) = api.get("/articles?favorited=grace", None).await;
    assert_eq!(slugs(&body), ["popular"]);
    let (_, body) = api.get("/articles?favorited=ada", None).await;
    assert_eq!(body["articlesCount"], 0);
    api.post("/articles/quiet/favorite", Some(&grace), json!({}))
        .await;
    let (_, body) = api.get("/articles?favorited=grace", None).await;
    assert_eq!(slugs(&body), ["quiet", "popular"]);

    // Unfavorite.
    let (status, body) = api.delete("/articles/popular/favorite", Some(&grace)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            body["article"]["favorited"].as_bool(),
            body["article"]["favoritesCount"].as_i64()
        ),
        (Some(false), Some(1))
    );
    let (_, body) = api.get("/articles?favorited=grace", None).await;
    assert_eq!(slugs(&body), ["quiet"]);
    assert_eq!(api.delete("/articles/popular/favorite", None).await.0, 401);

    // Deleting an article drops it from its favoriters' lists.
    api.delete("/articles/quiet", Some(&ada)).await;
    let (_, body) = api.get("/articles?favorited=grace", None).await;
    assert_eq!(body["articlesCount"], 0);
}

async fn profiles_follow_and_the_feed(backend: Backend) {
    let api = Api::new(backend).await;
    let ada = api.register("ada").await;
    let grace = api.register("grace").await;
    api.create_article(&ada, "By Ada", &[]).await;
    api.create_article(&grace, "By Grace", &[]).await;

    let (status, body) = api.get("/profiles/ada", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["profile"],
        json!({"username": "ada", "bio": "", "image": "", "following": false})
    );
    assert_eq!(api.get("/profiles/nobody", None).await.0, 404);

    // The feed is empty until grace follows someone.
    assert_eq!(api.get("/articles/feed", None).await.0, 401);
    let (status, body) = api.get("/articles/feed", Some(&grace)).await;
    assert_eq!(status, 200);
    assert_eq!(body["articlesCount"], 0);

    assert_eq!(
        api.post("/profiles/ada/follow", None, json!({})).await.0,
        401
    );
    assert_eq!(
        api.post("/profiles/nobody/follow", Some(&grace), json!({}))
            .await
            .0,
        404
    );
    let (status, body) = api
        .post("/profiles/ada/follow", Some(&grace), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["profile"]["following"], true);
    assert_eq!(
        api.get("/profiles/ada", Some(&grace)).await.1["profile"]["following"],
        true
    );
    assert_eq!(
        api.get("/profiles/ada", None).await.1["profile"]["following"],
        false
    );
    assert_eq!(
        api.get("/profiles/ada", Some(&ada)).await.1["profile"]["following"],
        false
    );
    let (_, body) = api.get("/articles/by-ada", Some(&grace)).await;
    assert_eq!(body["article"]["author"]["following"], true);
    let (_, body) = api.get("/articles/by-ada", None).await;
    assert_eq!(body["article"]["author"]["following"], false);

    let (_, body) = api.get("/articles/feed", Some(&grace)).await;
    assert_eq!(slugs(&body), ["by-ada"]);
    assert_eq!(body["articles"][0]["author"]["following"], true);
    // A followed author's new article is in the feed at once; so is its deletion.
    api.create_article(&ada, "Ada Again", &[]).await;
    let (_, body) = api.get("/articles/feed", Some(&grace)).await;
    assert_eq!(slugs(&body), ["ada-again", "by-ada"]);
    let (_, body) = api.get("/articles/feed?limit=1", Some(&grace)).await;
    assert_eq!(
        (slugs(&body), body["articlesCount"].as_i64()),
        (vec!["ada-again".to_string()], Some(2))
    );
    api.delete("/articles/ada-again", Some(&ada)).await;
    let (_, body) = api.get("/articles/feed", Some(&grace)).await;
    assert_eq!(slugs(&body), ["by-ada"]);

    let (status, body) = api.delete("/profiles/ada/follow", Some(&grace)).await;
    assert_eq!(status, 200);
    assert_eq!(body["profile"]["following"], false);
    assert_eq!(
        api.get("/profiles/ada", Some(&grace)).await.1["profile"]["following"],
        false
    );
    assert_eq!(
        api.get("/articles/feed", Some(&grace)).await.1["articlesCount"],
        0
    );
    assert_eq!(api.delete("/profiles/ada/follow", None).await.0, 401);
}

async fn comments_add_list_delete(backend: Backend) {
    let api = Api::new(backend).await;
    let ada = api.register("ada").await;
    let grace = api.register("grace").await;
    api.create_article(&ada, "Talk", &[]).await;

    let (status, body) = api.get("/articles/talk/comments", None).await;
    assert_eq!((status, body), (200, json!({"comments": []})));
    assert_eq!(api.get("/articles/nothing/comments", None).await.0, 404);

    let comment = json!({"comment": {"body": "Nice one"}});
    assert_eq!(
        api.post("/articles/talk/comments", None, comment.clone())
            .await
            .0,
        401
    );
    assert_eq!(
        api.post("/articles/nothing/comments", Some(&grace), comment.clone())
            .await
            .0,
        404
    );
    let (status, body) = api
        .post(
            "/articles/talk/comments",
            Some(&grace),
            json!({"comment": {"body": ""}}),
        )
        .await;
    assert_eq!(
        (status, body["errors"]["body"][0].as_str()),
        (422, Some("can't be blank"))
    );
    let (status, body) = api
        .post("/articles/talk/comments", Some(&grace), comment)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["comment"]["body"], "Nice one");
    assert_eq!(body["comment"]["author"]["username"], "grace");
    assert!(is_iso_datetime(
        body["comment"]["createdAt"].as_str().unwrap()
    ));
    let first_id = body["comment"]["id"].as_i64().unwrap();
    let (_, body) = api
        .post(
            "/articles/talk/comments",
            Some(&ada),
            json!({"comment": {"body": "Thanks"}}),
        )
        .await;
    let second_id = body["comment"]["id"].as_i64().unwrap();

    let (_, body) = api.get("/articles/talk/comments", Some(&ada)).await;
    let bodies: Vec<&str> = body["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["Thanks", "Nice one"]);

    // Only the comment's author deletes it.
    let path = format!("/articles/talk/comments/{first_id}");
    assert_eq!(api.delete(&path, None).await.0, 401);
    assert_eq!(api.delete(&path, Some(&ada)).await.0, 403);
    assert_eq!(
        api.delete("/articles/talk/comments/999999", Some(&grace))
            .await
            .0,
        404
    );
    assert_eq!(
        api.delete("/articles/talk/comments/abc", Some(&grace))
            .await
            .0,
        404
    );
    assert_eq!(api.delete(&path, Some(&grace)).await.0, 204);
    assert_eq!(api.delete(&path, Some(&grace)).await.0, 404);
    let (_, body) = api.get("/articles/talk/comments", None).await;
    assert_eq!(body["comments"].as_array().unwrap().len(), 1);
    assert_eq!(body["comments"][0]["id"], second_id);
}

async fn a_second_read_is_a_cache_hit(backend: Backend) {
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

async fn the_seeded_database_serves_the_api(backend: Backend) {
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
async fn two_instances_on_redis_read_each_others_writes_at_once(backend: Backend) {
    two_instances(backend, Duration::ZERO).await;
}

/// With in-process tiers (as `REDIS_URL` configures the application), the
/// second read is answered from the tier, and another instance's write
/// reaches it through pub/sub.
async fn two_instances_with_tiers_share_redis_and_the_database(backend: Backend) {
    two_instances(backend, Duration::from_secs(30)).await;
}

/// A write whose transaction fails at the commit invalidates nothing: the
/// invalidations of `Articles::create` are held by `in_transaction` until
/// the commit, and dropped with the rollback. (The articles table's foreign
/// key to its author is made deferred here, so the insert succeeds and the
/// commit fails.)
async fn a_failed_commit_invalidates_nothing(backend: Backend) {
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

/// Each scenario above as a test on SQLite (`sqlite::`) and on PostgreSQL
/// (`postgres::`, when `DATABASE_URL` names a server).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if super::postgres_url().is_none() {
                        eprintln!(
                            "skipped: DATABASE_URL names no PostgreSQL server (postgres://...)"
                        );
                        return;
                    }
                    super::$name(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

on_both_backends!(
    register_login_and_the_current_user,
    articles_create_get_list_filter_page_update_delete,
    favorites_are_per_viewer_and_counted,
    profiles_follow_and_the_feed,
    comments_add_list_delete,
    a_second_read_is_a_cache_hit,
    the_seeded_database_serves_the_api,
    two_instances_on_redis_read_each_others_writes_at_once,
    two_instances_with_tiers_share_redis_and_the_database,
    a_failed_commit_invalidates_nothing,
);
