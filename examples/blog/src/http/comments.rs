//! Comments (list, add, delete).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::http::AppError;
use crate::http::extract::{AuthUser, Body, MaybeUser};
use crate::http::users::required;
use crate::http::views;
use crate::repo::ArticleRow;

#[derive(Debug, Deserialize)]
pub struct CommentBody {
    pub comment: NewComment,
}

#[derive(Debug, Deserialize)]
pub struct NewComment {
    pub body: Option<String>,
}

async fn article(state: &AppState, slug: &str) -> Result<ArticleRow, AppError> {
    state
        .articles
        .by_slug(slug)
        .await?
        .ok_or(AppError::NotFound("article"))
}

pub async fn list(
    State(state): State<AppState>,
    viewer: MaybeUser,
    Path(slug): Path<String>,
) -> Result<Json<Value>, AppError> {
    let article = article(&state, &slug).await?;
    let rows = state.comments.list(article.id).await?;
    let comments = views::comments(&state, viewer.id(), rows).await?;
    Ok(Json(json!({ "comments": comments })))
}

pub async fn add(
    State(state): State<AppState>,
    user: AuthUser,
    Path(slug): Path<String>,
    Body(body): Body<CommentBody>,
) -> Result<Json<Value>, AppError> {
    let article = article(&state, &slug).await?;
    let text = required("body", body.comment.body)?;
    let row = state.comments.add(article.id, user.id, &text).await?;
    let view = views::comment(&state, Some(user.id), row).await?;
    Ok(Json(json!({ "comment": view })))
}

pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    Path((slug, id)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    let article = article(&state, &slug).await?;
    let id: i64 = id.parse().map_err(|_| AppError::NotFound("comment"))?;
    let comment = state
        .comments
        .by_id(id)
        .await?
        .filter(|c| c.article_id == article.id)
        .ok_or(AppError::NotFound("comment"))?;
    if comment.author_id != user.id {
        return Err(AppError::Forbidden);
    }
    state.comments.delete(article.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
