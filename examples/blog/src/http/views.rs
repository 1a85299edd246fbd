//! Response shapes, composed per request from the viewer-independent
//! cached rows and the viewer's flags.

use std::collections::HashMap;

use futures_util::future::try_join_all;
use serde::Serialize;

use crate::AppState;
use crate::http::AppError;
use crate::repo::{Account, ArticleRow, CommentRow, Page, ProfileRow};

#[derive(Debug, Serialize)]
pub struct UserView {
    pub email: String,
    pub token: String,
    pub username: String,
    pub bio: String,
    pub image: String,
}

impl UserView {
    pub fn new(account: Account, token: String) -> UserView {
        UserView {
            email: account.email,
            token,
            username: account.username,
            bio: account.bio,
            image: account.image,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProfileView {
    pub username: String,
    pub bio: String,
    pub image: String,
    pub following: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArticleView {
    pub slug: String,
    pub title: String,
    pub description: String,
    pub body: String,
    pub tag_list: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub favorited: bool,
    pub favorites_count: i64,
    pub author: ProfileView,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArticlesView {
    pub articles: Vec<ArticleView>,
    pub articles_count: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommentView {
    pub id: i64,
    pub created_at: String,
    pub updated_at: String,
    pub body: String,
    pub author: ProfileView,
}

/// A profile as `viewer` sees it.
pub async fn profile(
    state: &AppState,
    viewer: Option<i64>,
    profile: ProfileRow,
) -> Result<ProfileView, AppError> {
    let following = match viewer {
        Some(viewer) => state.users.is_following(viewer, profile.id).await?,
        None => false,
    };
    Ok(ProfileView {
        username: profile.username,
        bio: profile.bio,
        image: profile.image,
        following,
    })
}

/// The profile of user `id` as `viewer` sees it.
pub async fn profile_by_id(
    state: &AppState,
    viewer: Option<i64>,
    id: i64,
) -> Result<ProfileView, AppError> {
    let row = state
        .users
        .profile_by_id(id)
        .await?
        .ok_or_else(|| AppError::Internal(format!("user {id} is missing")))?;
    profile(state, viewer, row).await
}

/// An article as `viewer` sees it.
pub async fn article(
    state: &AppState,
    viewer: Option<i64>,
    row: ArticleRow,
) -> Result<ArticleView, AppError> {
    let author = profile_by_id(state, viewer, row.author_id).await?;
    article_by(state, viewer, row, author).await
}

/// An article as `viewer` sees it, its author's profile already made.
async fn article_by(
    state: &AppState,
    viewer: Option<i64>,
    row: ArticleRow,
    author: ProfileView,
) -> Result<ArticleView, AppError> {
    let favorited = match viewer {
        Some(viewer) => state.articles.is_favorited(viewer, row.id).await?,
        None => false,
    };
    let favorites_count = state.articles.favorites_count(row.id).await?;
    Ok(ArticleView {
        slug: row.slug,
        title: row.title,
        description: row.description,
        body: row.body,
        tag_list: row.tag_list,
        created_at: row.created_at,
        updated_at: row.updated_at,
        favorited,
        favorites_count,
        author,
    })
}

/// The profiles of users `ids` as `viewer` sees them: one batch read of
/// the rows (`Users::profiles_by_id`), the viewer's flags concurrently.
async fn profiles(
    state: &AppState,
    viewer: Option<i64>,
    ids: &[i64],
) -> Result<HashMap<i64, ProfileView>, AppError> {
    let mut rows = state.users.profiles_by_id(ids).await?;
    let views = try_join_all(ids.iter().map(|id| {
        let row = rows.remove(id);
        async move {
            match row {
                Some(row) => Ok(Some((*id, profile(state, viewer, row).await?))),
                None => Ok::<_, AppError>(None),
            }
        }
    }))
    .await?;
    Ok(views.into_iter().flatten().collect())
}

/// A page of articles as `viewer` sees it (an article deleted since the
/// page was read is left out). The rows are read concurrently, their
/// authors in one batch read, and the articles composed concurrently, so a
/// page costs the latency of a few lookups, not of twenty.
pub async fn articles(
    state: &AppState,
    viewer: Option<i64>,
    page: Page,
) -> Result<ArticlesView, AppError> {
    let rows = try_join_all(page.slugs.iter().map(|slug| state.articles.by_slug(slug))).await?;
    let rows: Vec<ArticleRow> = rows.into_iter().flatten().collect();
    let author_ids: Vec<i64> = rows.iter().map(|row| row.author_id).collect();
    let authors = profiles(state, viewer, &author_ids).await?;
    let articles = try_join_all(rows.into_iter().map(|row| {
        let author = authors.get(&row.author_id).cloned();
        async move {
            let author = author
                .ok_or_else(|| AppError::Internal(format!("user {} is missing", row.author_id)))?;
            article_by(state, viewer, row, author).await
        }
    }))
    .await?;
    Ok(ArticlesView {
        articles,
        articles_count: page.total,
    })
}

pub async fn comment(
    state: &AppState,
    viewer: Option<i64>,
    row: CommentRow,
) -> Result<CommentView, AppError> {
    let author = profile_by_id(state, viewer, row.author_id).await?;
    Ok(comment_by(row, author))
}

fn comment_by(row: CommentRow, author: ProfileView) -> CommentView {
    CommentView {
        id: row.id,
        created_at: row.created_at,
        updated_at: row.updated_at,
        body: row.body,
        author,
    }
}

/// A thread of comments as `viewer` sees it: the authors in one batch read.
pub async fn comments(
    state: &AppState,
    viewer: Option<i64>,
    rows: Vec<CommentRow>,
) -> Result<Vec<CommentView>, AppError> {
    let author_ids: Vec<i64> = rows.iter().map(|row| row.author_id).collect();
    let authors = profiles(state, viewer, &author_ids).await?;
    rows.into_iter()
        .map(|row| match authors.get(&row.author_id) {
            Some(author) => Ok(comment_by(row, author.clone())),
            None => Err(AppError::Internal(format!(
                "user {} is missing",
                row.author_id
            ))),
        })
        .collect()
}
