//! Users (register, login, current user) and profiles (get, follow, unfollow).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{hash_password, sign_token, verify_password};
use crate::http::AppError;
use crate::http::extract::{AuthUser, Body, MaybeUser};
use crate::http::views::{self, UserView};
use crate::repo::{UserChanges, unique_violation};

#[derive(Debug, Deserialize)]
pub struct UserBody<T> {
    pub user: T,
}

#[derive(Debug, Deserialize)]
pub struct NewUser {
    pub username: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Login {
    pub email: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct UpdateUser {
    pub username: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    pub bio: Option<String>,
    pub image: Option<String>,
}

/// The value of a required field, 422 when missing or blank.
pub fn required(field: &str, value: Option<String>) -> Result<String, AppError> {
    match value.map(|v| v.trim().to_string()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(AppError::invalid(field, "can't be blank")),
    }
}

fn taken(error: sqlx::Error) -> AppError {
    match unique_violation(&error) {
        Some(column) if column.ends_with("email") => {
            AppError::invalid("email", "has already been taken")
        }
        Some(column) if column.ends_with("username") => {
            AppError::invalid("username", "has already been taken")
        }
        _ => error.into(),
    }
}

fn user_json(view: UserView) -> Json<Value> {
    Json(json!({ "user": view }))
}

pub async fn register(
    State(state): State<AppState>,
    Body(body): Body<UserBody<NewUser>>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let username = required("username", body.user.username)?;
    let email = required("email", body.user.email)?;
    let password = body
        .user
        .password
        .filter(|p| !p.is_empty())
        .ok_or_else(|| AppError::invalid("password", "can't be blank"))?;
    let account = state
        .users
        .create(&username, &email, &hash_password(&password))
        .await
        .map_err(taken)?;
    let token = sign_token(&state.jwt_secret, account.id);
    Ok((
        StatusCode::CREATED,
        user_json(UserView::new(account, token)),
    ))
}

pub async fn login(
    State(state): State<AppState>,
    Body(body): Body<UserBody<Login>>,
) -> Result<Json<Value>, AppError> {
    let email = required("email", body.user.email)?;
    let password = required("password", body.user.password)?;
    let account = state.users.account_by_email(&email).await?;
    match account {
        Some(account) if verify_password(&password, &account.password_hash) => {
            let token = sign_token(&state.jwt_secret, account.id);
            Ok(user_json(UserView::new(account, token)))
        }
        _ => Err(AppError::Unauthorized),
    }
}

pub async fn current(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<Value>, AppError> {
    let account = state
        .users
        .account_by_id(user.id)
        .await?
        .ok_or(AppError::Unauthorized)?;
    Ok(user_json(UserView::new(account, user.token)))
}

pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Body(body): Body<UserBody<UpdateUser>>,
) -> Result<Json<Value>, AppError> {
    let account = state
        .users
        .account_by_id(user.id)
        .await?
        .ok_or(AppError::Unauthorized)?;
    let body = body.user;
    if body.username.is_none()
        && body.email.is_none()
        && body.password.is_none()
        && body.bio.is_none()
        && body.image.is_none()
    {
        return Err(AppError::invalid("user", "at least one field is required"));
    }
    let blank = |field: &'static str, value: &Option<String>| match value {
        Some(v) if v.trim().is_empty() => Err(AppError::invalid(field, "can't be blank")),
        _ => Ok(()),
    };
    blank("username", &body.username)?;
    blank("email", &body.email)?;
    blank("password", &body.password)?;
    let changes = UserChanges {
        username: body.username.map(|v| v.trim().to_string()),
        email: body.email.map(|v| v.trim().to_string()),
        password_hash: body.password.as_deref().map(hash_password),
        bio: body.bio,
        image: body.image,
    };
    let updated = state
        .users
        .update(user.id, &account.username, &changes)
        .await
        .map_err(taken)?;
    Ok(user_json(UserView::new(updated, user.token)))
}

async fn profile_of(state: &AppState, username: &str) -> Result<crate::repo::ProfileRow, AppError> {
    state
        .users
        .profile_by_username(username)
        .await?
        .ok_or(AppError::NotFound("profile"))
}

pub async fn profile(
    State(state): State<AppState>,
    viewer: MaybeUser,
    Path(username): Path<String>,
) -> Result<Json<Value>, AppError> {
    let row = profile_of(&state, &username).await?;
    let view = views::profile(&state, viewer.id(), row).await?;
    Ok(Json(json!({ "profile": view })))
}

pub async fn follow(
    State(state): State<AppState>,
    user: AuthUser,
    Path(username): Path<String>,
) -> Result<Json<Value>, AppError> {
    let row = profile_of(&state, &username).await?;
    state.users.follow(user.id, row.id).await?;
    let view = views::profile(&state, Some(user.id), row).await?;
    Ok(Json(json!({ "profile": view })))
}

pub async fn unfollow(
    State(state): State<AppState>,
    user: AuthUser,
    Path(username): Path<String>,
) -> Result<Json<Value>, AppError> {
    let row = profile_of(&state, &username).await?;
    state.users.unfollow(user.id, row.id).await?;
    let view = views::profile(&state, Some(user.id), row).await?;
    Ok(Json(json!({ "profile": view })))
}
