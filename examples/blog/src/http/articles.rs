//! Articles (list, feed, get, create, update, delete), favorites and tags.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, StatusCode};
use cache_runtime::CacheStatus;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::http::AppError;
use crate::http::extract::{AuthUser, Body, MaybeUser};
use crate::http::users::required;
use crate::http::views;
use crate::repo::articles::{CACHED_GLOBAL_OFFSETS, Filter};
use crate::repo::{ArticleRow, NewArticle, Page};

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

#[derive(Debug, Deserialize)]
pub struct ListParams {
    pub tag: Option<String>,
    pub author: Option<String>,
    pub favorited: Option<String>,
    pub limit: Option<String>,
    pub offset: Option<String>,
}

fn number(field: &str, value: Option<&str>, default: i64, min: i64) -> Result<i64, AppError> {
    match value {
        None | Some("") => Ok(default),
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(AppError::invalid(
                field,
                format!("must be an integer of at least {min}"),
            )),
        },
    }
}

fn paging(limit: Option<&str>, offset: Option<&str>) -> Result<(i64, i64), AppError> {
    let limit = number("limit", limit, DEFAULT_LIMIT, 1)?.min(MAX_LIMIT);
    let offset = number("offset", offset, 0, 0)?;
    Ok((limit, offset))
}

#[derive(Debug, Deserialize)]
pub struct ArticleBody<T> {
    pub article: T,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateArticle {
    pub title: Option<String>,
    pub description: Option<String>,
    pub body: Option<String>,
    pub tag_list: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub struct UpdateArticle {
    pub title: Option<String>,
    pub description: Option<String>,
    pub body: Option<String>,
}

fn empty() -> Page {
    Page {
        slugs: Vec::new(),
        total: 0,
    }
}

pub async fn list(
    State(state): State<AppState>,
    viewer: MaybeUser,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, AppError> {
    let (limit, offset) = paging(params.limit.as_deref(), params.offset.as_deref())?;
    let author_id = match &params.author {
        Some(name) => match state.users.profile_by_username(name).await? {
            Some(profile) => Some(profile.id),
            None => return respond(&state, viewer.id(), empty()).await,
        },
        None => None,
    };
    let favorited_by = match &params.favorited {
        Some(name) => match state.users.profile_by_username(name).await? {
            Some(profile) => Some(profile.id),
            None => return respond(&state, viewer.id(), empty()).await,
        },
        None => None,
    };
    let articles = &state.articles;
    let page = match (&params.tag, author_id, favorited_by) {
        (None, None, None) if offset < CACHED_GLOBAL_OFFSETS => {
            articles.list_all(limit, offset).await?
        }
        (Some(tag), None, None) => articles.list_by_tag(tag, limit, offset).await?,
        (None, Some(author), None) => articles.list_by_author(author, limit, offset).await?,
        (None, None, Some(user)) => articles.list_favorited_by(user, limit, offset).await?,
        // Combined filters and deep pages of the global list: uncached.
        (tag, author_id, favorited_by) => {
            let filter = Filter {
                tag: tag.clone(),
                author_id,
                favorited_by,
                feed_of: None,
            };
            articles.query_page(&filter, limit, offset).await?
        }
    };
    respond(&state, viewer.id(), page).await
}

async fn respond(
    state: &AppState,
    viewer: Option<i64>,
    page: Page,
) -> Result<Json<Value>, AppError> {
    Ok(Json(json!(views::articles(state, viewer, page).await?)))
}

#[derive(Debug, Deserialize)]
pub struct FeedParams {
    pub limit: Option<String>,
    pub offset: Option<String>,
}

pub async fn feed(
    State(state): State<AppState>,
    user: AuthUser,
    Query(params): Query<FeedParams>,
) -> Result<Json<Value>, AppError> {
    let (limit, offset) = paging(params.limit.as_deref(), params.offset.as_deref())?;
    let page = state.articles.feed(user.id, limit, offset).await?;
    respond(&state, Some(user.id), page).await
}

async fn find(state: &AppState, slug: &str) -> Result<ArticleRow, AppError> {
    state
        .articles
        .by_slug(slug)
        .await?
        .ok_or(AppError::NotFound("article"))
}

async fn single(
    state: &AppState,
    viewer: Option<i64>,
    row: ArticleRow,
) -> Result<Json<Value>, AppError> {
    let view = views::article(state, viewer, row).await?;
    Ok(Json(json!({ "article": view })))
}

/// `X-Cache: hit` when the article's row came from the cache (`stale` when
/// served within its stale window), `miss` when it was read from the
/// database, `bypass` when the cache was not used.
pub async fn get(
    State(state): State<AppState>,
    viewer: MaybeUser,
    Path(slug): Path<String>,
) -> Result<([(HeaderName, &'static str); 1], Json<Value>), AppError> {
    let (row, status) = cache_runtime::with_cache_status(find(&state, &slug)).await;
    let x_cache = status.map_or("bypass", CacheStatus::as_str);
    let body = single(&state, viewer.id(), row?).await?;
    Ok(([(HeaderName::from_static("x-cache"), x_cache)], body))
}

pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Body(body): Body<ArticleBody<CreateArticle>>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let body = body.article;
    let mut tag_list: Vec<String> = body
        .tag_list
        .unwrap_or_default()
        .into_iter()
        .map(|tag| tag.trim().to_string())
        .filter(|tag| !tag.is_empty())
        .collect();
    tag_list.sort();
    tag_list.dedup();
    let new = NewArticle {
        title: required("title", body.title)?,
        description: required("description", body.description)?,
        body: required("body", body.body)?,
        tag_list,
    };
    let created = state.articles.create(user.id, &new).await?;
    Ok((
        StatusCode::CREATED,
        single(&state, Some(user.id), created).await?,
    ))
}

/// The article, if `user` wrote it (404, 403 otherwise).
async fn own(state: &AppState, user: &AuthUser, slug: &str) -> Result<ArticleRow, AppError> {
    let row = find(state, slug).await?;
    if row.author_id != user.id {
        return Err(AppError::Forbidden);
    }
    Ok(row)
}

pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(slug): Path<String>,
    Body(body): Body<ArticleBody<UpdateArticle>>,
) -> Result<Json<Value>, AppError> {
    let row = own(&state, &user, &slug).await?;
    let body = body.article;
    for (field, value) in [
        ("title", &body.title),
        ("description", &body.description),
        ("body", &body.body),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(AppError::invalid(field, "can't be blank"));
        }
    }
    state
        .articles
        .update(
            &row.slug,
            body.title.as_deref(),
            body.description.as_deref(),
            body.body.as_deref(),
        )
        .await?;
    let row = find(&state, &slug).await?;
    single(&state, Some(user.id), row).await
}

pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    Path(slug): Path<String>,
) -> Result<StatusCode, AppError> {
    let row = own(&state, &user, &slug).await?;
    state.articles.delete(&row).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn favorite(
    State(state): State<AppState>,
    user: AuthUser,
    Path(slug): Path<String>,
) -> Result<Json<Value>, AppError> {
    let row = find(&state, &slug).await?;
    state.articles.favorite(user.id, row.id).await?;
    single(&state, Some(user.id), row).await
}

pub async fn unfavorite(
    State(state): State<AppState>,
    user: AuthUser,
    Path(slug): Path<String>,
) -> Result<Json<Value>, AppError> {
    let row = find(&state, &slug).await?;
    state.articles.unfavorite(user.id, row.id).await?;
    single(&state, Some(user.id), row).await
}

pub async fn tags(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    Ok(Json(json!({ "tags": state.articles.tags().await? })))
}
