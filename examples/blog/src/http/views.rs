//! Response shapes, composed per request from the viewer-independent
//! cached rows and the viewer's flags.

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

#[derive(Debug, Serialize)]
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

/// A page of articles as `viewer` sees it (an article deleted since the
/// page was read is left out). The articles are composed concurrently, so a
/// page costs the latency of one article's lookups, not of twenty.
pub async fn articles(
    state: &AppState,
    viewer: Option<i64>,
    page: Page,
) -> Result<ArticlesView, AppError> {
    let articles = try_join_all(page.slugs.iter().map(|slug| async move {
        match state.articles.by_slug(slug).await? {
            Some(row) => article(state, viewer, row).await.map(Some),
            None => Ok(None),
        }
    }))
    .await?;
    Ok(ArticlesView {
        articles: articles.into_iter().flatten().collect(),
        articles_count: page.total,
    })
}

pub async fn comment(
    state: &AppState,
    viewer: Option<i64>,
    row: CommentRow,
) -> Result<CommentView, AppError> {
    Ok(CommentView {
        id: row.id,
        created_at: row.created_at,
        updated_at: row.updated_at,
        body: row.body,
        author: profile_by_id(state, viewer, row.author_id).await?,
    })
}
