//! The RealWorld "Conduit" API on axum and sqlx (SQLite or PostgreSQL), with its
//! repositories cached by `cache-runtime`: see `repo/` for what is cached
//! and what each write invalidates.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use cache_runtime::Cache;
use sqlx::AnyPool;

pub mod auth;
pub mod db;
pub mod http;
pub mod repo;

use repo::{Articles, Comments, Users};

/// What handlers share: the repositories (each holding the pool and the
/// cache) and the token secret.
#[derive(Clone, Debug)]
pub struct AppState {
    pub cache: Cache,
    pub pool: AnyPool,
    pub users: Users,
    pub articles: Articles,
    pub comments: Comments,
    pub jwt_secret: Arc<[u8]>,
}

impl AppState {
    pub fn new(pool: AnyPool, cache: Cache, jwt_secret: &[u8]) -> AppState {
        AppState {
            users: Users {
                cache: cache.clone(),
                pool: pool.clone(),
            },
            articles: Articles {
                cache: cache.clone(),
                pool: pool.clone(),
            },
            comments: Comments {
                cache: cache.clone(),
                pool: pool.clone(),
            },
            cache,
            pool,
            jwt_secret: jwt_secret.into(),
        }
    }
}

/// Where the application's settings come from: the environment, with
/// defaults for a local run.
#[derive(Clone, Debug)]
pub struct Config {
    /// `DATABASE_URL` (`postgres://...` or `postgresql://...`: PostgreSQL;
    /// `sqlite://...`: SQLite), else `sqlite://$BLOG_DB` (`blog.db` in the
    /// working directory), created on first run.
    pub database_url: String,
    /// `REDIS_URL`: Redis with an in-process tier; unset, the in-process store.
    pub redis_url: Option<String>,
    /// `BLOG_LOCAL_TTL` (seconds, default 30): how long the in-process tier
    /// in front of Redis keeps entries; `0` turns the tier off. Other
    /// instances' tiers drop an entry when Redis pub/sub tells them, so
    /// with a tier a write on one instance reaches the others' reads a
    /// message's delivery later, not at once.
    pub local_ttl: Duration,
    /// `JWT_SECRET` (instances sharing users must share it).
    pub jwt_secret: String,
    /// `BLOG_ADDR`, else `127.0.0.1:3000`.
    pub addr: String,
    /// Seed a few authors and articles into an empty database.
    pub seed: bool,
}

impl Config {
    pub fn from_env() -> Config {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Config {
            database_url: var("DATABASE_URL").unwrap_or_else(|| {
                format!(
                    "sqlite://{}",
                    var("BLOG_DB").unwrap_or_else(|| "blog.db".into())
                )
            }),
            redis_url: var("REDIS_URL"),
            local_ttl: Duration::from_secs(
                var("BLOG_LOCAL_TTL")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(30),
            ),
            jwt_secret: var("JWT_SECRET").unwrap_or_else(|| "conduit-development-secret".into()),
            addr: var("BLOG_ADDR").unwrap_or_else(|| "127.0.0.1:3000".into()),
            seed: true,
        }
    }
}

/// The cache this configuration asks for.
pub fn cache_for(config: &Config) -> Result<Cache, cache_runtime::Error> {
    match &config.redis_url {
        Some(url) if config.local_ttl.is_zero() => Cache::builder()
            .redis_url(url.clone())
            .namespace("blog")
            .build(),
        Some(url) => Cache::builder()
            .redis_url(url.clone())
            .namespace("blog")
            .local_ttl(config.local_ttl)
            .build(),
        None => Cache::builder().namespace("blog").build(),
    }
}

/// Connects, migrates, builds the cache and seeds an empty database.
pub async fn start(config: &Config) -> Result<AppState, Box<dyn std::error::Error + Send + Sync>> {
    // Before any cache records anything.
    metrics();
    let pool = db::connect(&config.database_url).await?;
    db::migrate(&pool).await?;
    let state = AppState::new(pool, cache_for(config)?, config.jwt_secret.as_bytes());
    if config.seed {
        db::seed(&state).await?;
    }
    Ok(state)
}

/// The API's routes.
pub fn app(state: AppState) -> Router {
    http::routes().with_state(state)
}

/// The process's Prometheus recorder (installed on first use), whose text
/// `GET /metrics` serves: the cache's counters and histograms by function.
/// If another recorder was installed first, this one is not global and
/// stays empty.
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = metrics_exporter_prometheus::PrometheusBuilder::new;
        builder()
            .install_recorder()
            .unwrap_or_else(|_| builder().build_recorder().handle())
    })
}
