//! HTTP: routes, handlers, extractors, errors and response shapes.

use axum::Router;
use axum::routing::{delete, get, post};

use crate::AppState;

pub mod articles;
pub mod comments;
pub mod error;
pub mod extract;
pub mod users;
pub mod views;

pub use error::AppError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/users", post(users::register))
        .route("/api/users/login", post(users::login))
        .route("/api/user", get(users::current).put(users::update))
        .route("/api/profiles/{username}", get(users::profile))
        .route(
            "/api/profiles/{username}/follow",
            post(users::follow).delete(users::unfollow),
        )
        .route("/api/articles", get(articles::list).post(articles::create))
        .route("/api/articles/feed", get(articles::feed))
        .route(
            "/api/articles/{slug}",
            get(articles::get)
                .put(articles::update)
                .delete(articles::delete),
        )
        .route(
            "/api/articles/{slug}/favorite",
            post(articles::favorite).delete(articles::unfavorite),
        )
        .route(
            "/api/articles/{slug}/comments",
            get(comments::list).post(comments::add),
        )
        .route(
            "/api/articles/{slug}/comments/{id}",
            delete(comments::delete),
        )
        .route("/api/tags", get(articles::tags))
        .route("/api/_cache/stats", get(cache_stats))
        .route("/metrics", get(prometheus))
        .route("/health", get(health))
}

/// The cache's links right now (`Cache::health`): whether it listens to
/// pub/sub, when it last heard from Redis, whether its in-process tier
/// answers, what waits in its outbox, and its circuit breaker. Always 200:
/// the API answers from the database whatever the cache's state.
async fn health(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::Json<cache_runtime::Health> {
    axum::Json(state.cache.health())
}

/// The cache's metrics in Prometheus's text format (`cache_hits_total`,
/// `cache_load_seconds`, ... labelled by cache and function).
async fn prometheus() -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics().render(),
    )
}

/// The cache's counters and its invalidations by key and tag family: what
/// an operator looks at to see whether the cache helps.
async fn cache_stats(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "stats": state.cache.stats(),
        "invalidations": state.cache.invalidation_counts(),
    }))
}
