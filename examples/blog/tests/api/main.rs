//! The Conduit API over real HTTP: each test starts the application on a
//! free loopback port with its own database, and talks to it with a small
//! hyper client. The last tests run two instances on one database and one
//! `redis-server`.
//!
//! Every scenario runs twice: in `sqlite::` on a SQLite file of its own, and
//! in `postgres::` in a schema of its own (created, then dropped with
//! `CASCADE`) on the PostgreSQL server `DATABASE_URL` names; without one the
//! `postgres::` tests print a notice and pass.
//!
//! The scenarios, by theme: `accounts` (users and profiles), `articles`
//! (articles, favorites, comments), `caching` (hits, two instances, a failed
//! commit). The harness is here: the databases, the client, the helpers.

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

mod accounts;
mod articles;
mod caching;

use accounts::*;
use articles::*;
use caching::*;

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

/// Each scenario (`accounts`, `articles`, `caching`) as a test on SQLite
/// (`sqlite::`) and on PostgreSQL (`postgres::`, when `DATABASE_URL` names a
/// server).
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
