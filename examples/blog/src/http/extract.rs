//! Extractors: the authenticated user (`Authorization: Token <jwt>`), an
//! optional one, and JSON bodies whose errors are 422s.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::auth::verify_token;
use crate::http::AppError;

/// A request with a valid token (401 otherwise).
#[derive(Clone, Debug)]
pub struct AuthUser {
    pub id: i64,
    pub token: String,
}

/// A request with a valid token or none (a bad token is still a 401).
#[derive(Clone, Debug)]
pub struct MaybeUser(pub Option<AuthUser>);

impl MaybeUser {
    pub fn id(&self) -> Option<i64> {
        self.0.as_ref().map(|user| user.id)
    }
}

fn token(parts: &Parts, state: &AppState) -> Result<Option<AuthUser>, AppError> {
    let Some(header) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let header = header.to_str().map_err(|_| AppError::Unauthorized)?;
    let token = header
        .strip_prefix("Token ")
        .ok_or(AppError::Unauthorized)?
        .trim();
    let id = verify_token(&state.jwt_secret, token).ok_or(AppError::Unauthorized)?;
    Ok(Some(AuthUser {
        id,
        token: token.to_string(),
    }))
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        token(parts, state)?.ok_or(AppError::Unauthorized)
    }
}

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        Ok(MaybeUser(token(parts, state)?))
    }
}

/// A JSON body; a malformed one is a 422 on `body`.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(AppError::invalid("body", rejection.body_text())),
        }
    }
}
